// `npm run demo`: an HTTP server with a route that blocks the event loop, watched by a
// BlockingDetector. The demo sends its own requests, shows the detector's report, and exits.
import { createServer, get } from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { BlockingDetector } = require('../dist/index.js');

// A synchronous "report" that takes far too long: the kind of code that freezes a server.
function buildReport(rows) {
  let checksum = 0;
  for (let i = 0; i < rows; i++) checksum = (checksum * 31 + JSON.stringify({ i, v: Math.sqrt(i) }).length) | 0;
  return checksum;
}

const server = createServer((req, res) => {
  if (req.url === '/report') {
    res.end(`checksum ${buildReport(4_000_000)}\n`); // blocks the whole server for a second or so
  } else {
    res.end('ok\n');
  }
});

const detector = new BlockingDetector({ timeout: 0.25, raiseExc: false }).start();
detector.on('blocked', (event) => {
  const top = event.samples[0]?.frames?.find((f) => !f.fileName.startsWith('node:'));
  console.log(
    `\n[demo] 'blocked' event: the loop was blocked for ${event.durationMs.toFixed(0)} ms, ` +
      `${event.samples.length} stack sample(s); blocking code: ${top?.functionName} (${top?.fileName}:${top?.lineNumber})`,
  );
});

const fetchText = (path) =>
  new Promise((resolve, reject) => {
    const started = Date.now();
    get({ host: '127.0.0.1', port: server.address().port, path }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ body: body.trim(), ms: Date.now() - started }));
    }).on('error', reject);
  });

server.listen(0, '127.0.0.1', async () => {
  console.log(`[demo] server on http://127.0.0.1:${server.address().port}, detector timeout=0.25 s`);
  const fast = await fetchText('/');
  console.log(`[demo] GET /        -> ${fast.body} in ${fast.ms} ms`);
  console.log('[demo] GET /report  (this handler blocks the loop; the warnings below are written during the block)');
  const slow = await fetchText('/report');
  console.log(`[demo] GET /report  -> ${slow.body} in ${slow.ms} ms (every other request waited as long)`);
  await new Promise((r) => setTimeout(r, 50));
  detector.stop();
  server.close(() => console.log('[demo] done'));
});
