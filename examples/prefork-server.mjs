// A prefork HTTP server with loop-helpers' prefork(): the parent loads its data and opens the
// listening socket, then forks workers that all accept on it (sharing the data's memory pages). This
// demo sends it requests, kills a worker to show the respawn, and stops the pool.
// `npm run example:prefork` (Ctrl-C, or SIGTERM, also stops it gracefully).
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { prefork } = require('../dist/index.js');

// Loaded once, before forking: every worker shares these pages until it writes them.
const catalog = new Map(Array.from({ length: 100_000 }, (_, i) => [i, { id: i, name: `item ${i}` }]));

const server = createServer((req, res) => {
  // Keep this worker busy for a moment, so that the next connection goes to another one.
  const end = Date.now() + 50;
  while (Date.now() < end);
  const item = catalog.get(Number(req.url.slice(1)) || 0);
  res.end(`${process.pid} ${JSON.stringify(item)}`);
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address();

const pool = prefork({
  workers: 3,
  // Each worker's young generation keeps its size at the fork: about half of a worker's own
  // memory under load (docs/fork.md has the measurement).
  fixedYoungGeneration: true,
  main() {
    // In each worker: serve until SIGTERM (what pool.stop() sends), then finish the open requests.
    process.on('SIGTERM', () => server.close(() => process.exit(0)));
  },
});
if (pool.isChild) {
  // A worker: it serves from here on. What follows is the parent's business.
} else {
  pool.on('spawn', (pid, index) => console.log(`worker ${index} started: pid ${pid}`));
  pool.on('exit', (pid, status, index) => console.log(`worker ${index} (pid ${pid}) ended:`, status));
  console.log(`parent ${process.pid}: workers ${pool.pids.join(', ')} serve http://127.0.0.1:${port}`);

  const get = (path) =>
    new Promise((resolve, reject) => {
      request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      })
        .on('error', reject)
        .end();
    });
  const count = async () => {
    const counts = {};
    const bodies = await Promise.all(Array.from({ length: 9 }, (_, i) => get(`/${i}`)));
    for (const body of bodies) counts[body.split(' ')[0]] = (counts[body.split(' ')[0]] ?? 0) + 1;
    return counts;
  };
  console.log('requests served per worker:', await count());

  // A worker dies: the pool replaces it ('exit', then 'spawn').
  const replaced = once(pool, 'spawn');
  process.kill(pool.pids[0], 'SIGKILL');
  await replaced;
  console.log('after the respawn:', await count());

  await pool.stop(); // SIGTERM, up to 10 s, then SIGKILL; resolves once every worker was reaped
  console.log('pool stopped');
}
