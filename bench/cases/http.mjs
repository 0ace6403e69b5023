// HTTP throughput on loopback (autocannon, keep-alive) with and without a detector, alternated,
// and what each request costs the server: its process's CPU time over the requests served. On a
// 2-core machine where the load generator shares the CPUs, throughput swings by several percent
// from round to round, so: where `taskset` exists and this process may use two CPUs or more, the
// server runs on the last of them and this process (autocannon) on the others, so that neither takes the other's
// CPU; each round runs every configuration once, in an order rotated from round to round (no
// configuration always runs first, or right after another); and a configuration's ratio is the
// median over rounds of its throughput over that same round's run without a detector (the
// machine's slow minutes slow both sides of a ratio). The server's CPU per request is the other,
// steadier measure of what a detector adds. Child mode: `node http.mjs --child <peer|none> <T>`
// serves until killed, prints its port, takes a CPU baseline on SIGUSR2, and prints the CPU used
// since (µs) on SIGTERM.
import { execFileSync, spawn } from 'node:child_process';
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

/** Sets the CPUs this process and all its threads may run on (a `taskset` list); false if it cannot. */
function setAffinity(list) {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', list, String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Where `taskset` works and this process may use two CPUs or more: moves this process and its
 * threads off the last of them, and returns `{ server, restore }`: the CPU for the server, and the
 * list to give back afterwards (the one it had, which a container may have narrowed). Undefined
 * otherwise (nothing pinned).
 */
function pinning() {
  let allowed;
  try {
    const out = execFileSync('taskset', ['-c', '-p', String(process.pid)], { encoding: 'utf8' });
    allowed = out.slice(out.lastIndexOf(':') + 1).trim();
  } catch {
    return undefined;
  }
  const cpus = allowed.split(',').flatMap((part) => {
    const [a, b = a] = part.split('-').map(Number);
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
  if (cpus.length < 2 || !setAffinity(cpus.slice(0, -1).join(','))) return undefined;
  return { server: cpus.at(-1), restore: allowed };
}

async function measure(peer, T, seconds, serverCpu) {
  const args = [fileURLToPath(import.meta.url), '--child', peer, String(T)];
  const child =
    serverCpu === undefined
      ? spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn('taskset', ['-c', String(serverCpu), process.execPath, ...args], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
  const port = await new Promise((resolve) => {
    child.stdout.once('data', (d) => resolve(JSON.parse(String(d)).port));
  });
  const autocannon = require('autocannon');
  // Warm-up, not counted: a new server's first requests pay for compiling its code.
  await autocannon({ url: `http://127.0.0.1:${port}`, connections: 10, duration: 1 });
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
  const rounds = sized(opts, 9, 1);
  const seconds = sized(opts, 3, 2, 0.5);
  const configs = [
    ['none', 0],
    ['loop-helpers', 1],
    ['loop-helpers-interrupt', 1],
    ['loop-helpers-guarded', 1],
  ];
  const rps = new Map(configs.map(([p]) => [p, []]));
  const cpu = new Map(configs.map(([p]) => [p, []]));
  const pinned = pinning();
  const serverCpu = pinned?.server;
  try {
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < configs.length; k++) {
        const [p, T] = configs[(k + r) % configs.length];
        const m = await measure(p, T, seconds, serverCpu);
        rps.get(p).push(m.rps);
        cpu.get(p).push(m.cpuUsPerRequest);
      }
    }
  } finally {
    if (pinned) setAffinity(pinned.restore);
  }
  /** The median over rounds of `p`'s value over the same round's value without a detector. */
  const perRound = (values, p) => values.get(p).map((v, r) => v / values.get('none')[r]);
  const paired = (values, p) => median(perRound(values, p));
  return configs.map(([p, T]) => ({
    peer: p,
    label: p === 'none' ? 'no detector' : PEERS[p].label,
    timeoutMs: T * 1000,
    requestsPerSecond: round(median(rps.get(p)), 0),
    ratio: round(paired(rps, p), 3),
    serverCpuUsPerRequest: round(median(cpu.get(p)), 2),
    cpuRatio: round(paired(cpu, p), 3),
    rounds,
    pinned: serverCpu !== undefined,
    /** Each round's throughput ratio, in order: the spread behind the median. */
    roundRatios: perRound(rps, p).map((v) => round(v, 3)),
    /** Each round's server CPU per request ratio, in order. */
    cpuRoundRatios: perRound(cpu, p).map((v) => round(v, 3)),
  }));
}
