// HTTP throughput on loopback (autocannon, keep-alive) with and without a detector, alternated,
// and what each request costs the server: its process's CPU time over the requests served. On a
// 2-core machine where the load generator shares the CPUs, throughput swings by several percent
// from round to round; the server's CPU per request is the steadier measure of what a detector
// adds. Child mode: `node http.mjs --child <peer|none> <T>` serves until killed, prints its port,
// takes a CPU baseline on SIGUSR2, and prints the CPU used since (µs) on SIGTERM.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { median, round, sized } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);

if (process.argv[2] === '--child') {
  const [, , , peer, T] = process.argv;
  if (peer !== 'none') PEERS[peer].start(Number(T), () => {});
  const body = JSON.stringify({ ok: true, items: Array.from({ length: 20 }, (_, i) => i) });
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(body);
  });
  let base;
  process.on('SIGUSR2', () => {
    base = process.cpuUsage();
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
  process.on('SIGTERM', () => {
    const u = process.cpuUsage(base);
    process.stdout.write(`${JSON.stringify({ cpuUs: u.user + u.system })}\n`, () => process.exit(0));
  });
} else {
  // imported
}

async function measure(peer, T, seconds) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', peer, String(T)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve) => {
    child.stdout.once('data', (d) => resolve(JSON.parse(String(d)).port));
  });
  const autocannon = require('autocannon');
  child.kill('SIGUSR2');
  const result = await autocannon({ url: `http://127.0.0.1:${port}`, connections: 10, duration: seconds });
  const cpu = new Promise((resolve) => {
    child.stdout.once('data', (d) => resolve(JSON.parse(String(d)).cpuUs));
  });
  child.kill('SIGTERM');
  const cpuUs = await cpu;
  return { rps: result.requests.average, cpuUsPerRequest: cpuUs / Math.max(1, result.requests.total) };
}

export async function runHttp(opts) {
  const rounds = sized(opts, 5, 1);
  const seconds = sized(opts, 4, 2, 0.5);
  const configs = [
    ['none', 0],
    ['loop-helpers', 1],
    ['loop-helpers-interrupt', 1],
    ['loop-helpers-guarded', 1],
  ];
  const rps = new Map(configs.map(([p]) => [p, []]));
  const cpu = new Map(configs.map(([p]) => [p, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [p, T] of configs) {
      const m = await measure(p, T, seconds);
      rps.get(p).push(m.rps);
      cpu.get(p).push(m.cpuUsPerRequest);
    }
  }
  const base = median(rps.get('none'));
  const baseCpu = median(cpu.get('none'));
  return configs.map(([p, T]) => ({
    peer: p,
    label: p === 'none' ? 'no detector' : PEERS[p].label,
    timeoutMs: T * 1000,
    requestsPerSecond: round(median(rps.get(p)), 0),
    ratio: round(median(rps.get(p)) / base, 3),
    serverCpuUsPerRequest: round(median(cpu.get(p)), 2),
    cpuRatio: round(median(cpu.get(p)) / baseCpu, 3),
  }));
}
