// What a detector costs the loop thread, counted rather than timed: the instructions and system
// calls the loop thread (the main thread) executes per callback, under valgrind's callgrind
// (`--separate-threads=yes`: each thread counted apart, so the monitor thread's own work is not in
// the figure). Timed ratios on these VMs swing by ±5-15% between runs (see overhead.mjs and
// http.mjs); an instruction count repeats to within a few instructions per callback whatever else
// the machine is doing, so it shows costs of 0.1%.
//
// How: the same child as the timed case (overhead.mjs `--child` ping-pong, or this file's HTTP
// server),
// under callgrind with V8 made deterministic (`--predictable`, fixed hash and random seeds, no
// address randomisation), once with `small` callbacks and once with `large`; the difference
// divided by `large - small` is the cost per callback, start-up and the detector's start cancelled.
//
// Time under valgrind runs ~50x slower than natively, so every detector runs with its timeout
// scaled by SLOWDOWN: a callback then stands in the same proportion to the timeout as natively
// (no detector sees a block that it would not see natively, and interrupt mode stops nothing),
// and the peers' heartbeat timers (timeout/2) fire as often per callback as natively.
// perf_hooks.monitorEventLoopDelay is left out: its 1 ms sampling timer does not follow the
// timeout. The timed case's timer-heavy loop is left out too: which timers are due at each turn
// depends on the wall clock, so its count moved by +137 to +580 instructions per callback with
// nothing of any detector's on that path (an idle unref'd interval alone: +137), which is timing,
// not cost. HTTP keeps a little of that (how reads and writes fall into loop turns): two
// identical runs differed by ~400 instructions per request of ~119,000.
// What a count leaves out: cache misses and time in the kernel (the system calls are counted, so
// an added one shows; under valgrind a clock read is one, where natively the vDSO answers it).
// Child mode (HTTP): `node instructions.mjs --http-child <peer|none> <T> <requests>`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, createServer, get } from 'node:http';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { round, sized } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const self = fileURLToPath(import.meta.url);
const overheadChild = fileURLToPath(new URL('./overhead.mjs', import.meta.url));

if (process.argv[2] === '--http-child') {
  const [, , , peer, T, n] = process.argv;
  if (peer !== 'none') PEERS[peer].start(Number(T), () => {});
  const body = JSON.stringify({ ok: true, items: Array.from({ length: 20 }, (_, i) => i) });
  let served = 0;
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(body);
    // The process ends once the last response is written (callgrind writes its counts then).
    if (++served === Number(n)) res.on('finish', () => process.exit(0));
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
}

/** How much slower a callback runs under callgrind than natively (roughly; see the top). */
const SLOWDOWN = 50;

/** Node flags that make V8's work repeat exactly from run to run. */
const DETERMINISTIC = ['--predictable', '--hash-seed=1', '--random-seed=1'];

/** Whether valgrind can run here; the reason when it cannot. */
function valgrindMissing() {
  if (process.platform !== 'linux') return 'counted with valgrind on Linux only';
  const r = spawnSync('valgrind', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? null : 'valgrind is not installed (Debian: apt-get install valgrind)';
}

/**
 * Loaded in every run, with or without a detector: every configuration then runs with the same
 * code and a heap of the same shape, and differs only in the detector it starts. (Without this,
 * the run without a detector counted 130 instructions more per ping-pong turn than one that had
 * loaded this package: V8's heap and GC pacing differ with what was loaded, not a detector's cost.)
 */
const PRELOAD = ['../../dist/index.js', 'blocked', '@sentry-internal/node-native-stacktrace'].flatMap((m) => [
  '--require',
  m.startsWith('.') ? fileURLToPath(new URL(m, import.meta.url)) : require.resolve(m),
]);

let noAslr;

/** The command that runs `args` (a Node.js script and its arguments) under callgrind into `dir`. */
function callgrind(dir, args) {
  const vg = [
    'valgrind',
    '--tool=callgrind',
    '--separate-threads=yes',
    '--collect-systime=nsec',
    '--dump-instr=no',
    '--smc-check=all-non-file',
    `--callgrind-out-file=${join(dir, 'cg.%p')}`,
    process.execPath,
    ...DETERMINISTIC,
    ...PRELOAD,
    ...args,
  ];
  // No address randomisation where setarch exists: addresses feed V8's hash tables.
  noAslr ??= spawnSync('setarch', ['-R', 'true']).status === 0;
  return noAslr ? ['setarch', '-R', ...vg] : vg;
}

/** The main thread's `{ ir, syscalls }` from callgrind's output files in `dir`. */
function mainThreadCounts(dir) {
  const file = readdirSync(dir).find((f) => f.endsWith('-01'));
  if (!file) throw new Error(`callgrind wrote no output for thread 1 in ${dir}: ${readdirSync(dir).join(', ')}`);
  const text = readFileSync(join(dir, file), 'utf8');
  const events = /^events: (.*)$/m.exec(text)?.[1].split(' ');
  const summary = /^summary: (.*)$/m.exec(text)?.[1].split(' ').map(Number);
  if (!events || !summary) throw new Error(`${file}: no events or summary line`);
  return { ir: summary[events.indexOf('Ir')], syscalls: summary[events.indexOf('sysCount')] };
}

/** Runs `args` under callgrind in a fresh directory; resolves with the main thread's counts. */
async function counted(args, drive = async () => {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lh-callgrind-'));
  try {
    const [cmd, ...rest] = callgrind(dir, args);
    const child = spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-3000);
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const timer = setTimeout(() => child.kill('SIGKILL'), 900_000);
    try {
      await drive(child, exited);
      const code = await exited;
      if (code !== 0) throw new Error(`callgrind ${args.slice(1).join(' ')}: status ${code}\n${stderr}`);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return mainThreadCounts(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Counts of one ping-pong run (overhead.mjs's child) under callgrind. */
const countPingPong = ([peer, T], n) =>
  counted([overheadChild, '--child', peer, String(T * SLOWDOWN), 'ping-pong', String(n)]);

/** Counts of an HTTP server run under callgrind that serves `n` requests, sent one at a time. */
const countHttp = ([peer, T], n) =>
  counted([self, '--http-child', peer, String(T * SLOWDOWN), String(n)], async (child, exited) => {
    const port = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line).port);
      });
      exited.then((code) => reject(new Error(`HTTP server under callgrind exited (${code}) before listening`)));
    });
    // One keep-alive connection, one request at a time: every request takes the same path
    // through the server, whatever the timing.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < n; i++) {
      await new Promise((resolve, reject) => {
        get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        }).on('error', reject);
      });
    }
    agent.destroy();
  });

/** Runs the thunks in `jobs`, `width` at a time; their results in order. */
async function pool(jobs, width) {
  const out = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
  return out;
}

/** Per callback: the difference between a run of `large` and one of `small`, over their difference. */
const perCallback = (a, b, small, large) => ({
  ir: (b.ir - a.ir) / (large - small),
  syscalls: (b.syscalls - a.syscalls) / (large - small),
});

export async function runInstructions(opts) {
  const missing = valgrindMissing();
  if (missing) return { unavailable: missing };
  const sizes = {
    'ping-pong': sized(opts, [20_000, 100_000], [10_000, 40_000], [2_000, 6_000]),
    http: sized(opts, [500, 2_500], [300, 1_200], [50, 150]),
  };
  const configs = opts.smoke
    ? [
        ['none', 0],
        ['loop-helpers', 0.05],
      ]
    : [
        ['none', 0],
        ['loop-helpers', 0.05],
        ['loop-helpers', 1],
        ['loop-helpers-interrupt', 0.05],
        ['loop-helpers-interrupt', 1],
        ['loop-helpers-guarded', 0.05],
        ['blocked', 0.05],
        ['blocked', 1],
        ['sentry', 0.05],
        ['sentry', 1],
      ];
  const workloads = opts.smoke ? ['ping-pong'] : Object.keys(sizes);
  const count = (config, workload, n) => (workload === 'http' ? countHttp(config, n) : countPingPong(config, n));
  // Every run, and per workload one more of the baseline's small run: how far two identical runs
  // are apart (counts are of instructions, so runs go side by side, one per CPU). A smoke run
  // leaves that one out: its four runs then take two rounds (a run is mostly Node's start-up under
  // callgrind, 12-15 s), not three.
  const jobs = [];
  for (const workload of workloads) {
    const [small, large] = sizes[workload];
    for (const config of configs) {
      jobs.push({ workload, config, n: small }, { workload, config, n: large });
    }
    if (!opts.smoke) jobs.push({ workload, config: configs[0], n: small, again: true });
  }
  const width = Math.max(1, Math.min(2, availableParallelism()));
  const results = await pool(
    jobs.map((j) => () => count(j.config, j.workload, j.n)),
    width,
  );
  const at = (workload, config, n, again = false) =>
    results[jobs.findIndex((j) => j.workload === workload && j.config === config && j.n === n && !!j.again === again)];
  const rows = [];
  const repeatability = {};
  for (const workload of workloads) {
    const [small, large] = sizes[workload];
    const base = perCallback(at(workload, configs[0], small), at(workload, configs[0], large), small, large);
    // Two identical runs, as instructions per callback of the difference (0: exactly repeated).
    const again = at(workload, configs[0], small, true);
    repeatability[workload] = again
      ? round(Math.abs(again.ir - at(workload, configs[0], small).ir) / (large - small), 2)
      : null;
    for (const config of configs) {
      const per = perCallback(at(workload, config, small), at(workload, config, large), small, large);
      const [peer, T] = config;
      rows.push({
        workload,
        peer,
        label: peer === 'none' ? 'no detector (the same modules loaded)' : PEERS[peer].label,
        timeoutMs: T * 1000,
        instructionsPerCallback: round(per.ir, 1),
        addedInstructions: round(per.ir - base.ir, 1),
        ratio: round(per.ir / base.ir, 4),
        syscallsPerCallback: round(per.syscalls, 3),
        addedSyscalls: round(per.syscalls - base.syscalls, 3),
      });
    }
  }
  return { rows, sizes, repeatability, parallel: width };
}
