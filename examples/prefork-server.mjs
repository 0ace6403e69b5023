// A prefork HTTP server with loop-helpers' fork(): the parent opens the listening socket, forks
// children that all accept on it, sends them some requests, then stops them and reads their status.
// `npm run example:prefork`
import { createServer, request } from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { fork, waitpid } = require('../dist/index.js');

const CHILDREN = 3;
const server = createServer((_req, res) => {
  // Keep this child busy for a moment, so that the next connection goes to another child.
  const end = Date.now() + 100;
  while (Date.now() < end);
  res.end(`${process.pid}`);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();

const children = [];
for (let i = 0; i < CHILDREN; i++) {
  const pid = fork();
  if (pid === 0) {
    // The child: it serves until SIGTERM. Everything below belongs to the parent, so stop here.
    process.on('SIGTERM', () => server.close(() => process.exit(0)));
    await new Promise(() => {});
  }
  children.push(pid);
}
server.close(); // only the children accept from now on
console.log(`parent ${process.pid} forked children ${children.join(', ')}; port ${port}`);

const get = () =>
  new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(Number(body)));
    })
      .on('error', reject)
      .end();
  });
const served = [];
for (let i = 0; i < 9; i++) {
  served.push(get());
  await new Promise((r) => setTimeout(r, 40));
}
const counts = {};
for (const pid of await Promise.all(served)) counts[pid] = (counts[pid] ?? 0) + 1;
console.log('requests served per child:', counts);

for (const pid of children) process.kill(pid, 'SIGTERM');
for (const pid of children) console.log(`child ${pid} ended:`, await waitpid(pid));
