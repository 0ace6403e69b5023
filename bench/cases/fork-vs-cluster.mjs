// fork() against cluster, side by side, as a new user would try them: N workers that each hold the
// same preloaded data set (a Map of objects) and serve HTTP. Under prefork() (fork()) the parent
// loads the data once and the workers share its pages; under cluster.fork() every worker starts
// a new Node.js and loads its own copy. Measured: total PSS of the whole process tree right after
// start and after a load phase (autocannon on loopback), PSS over time (an SVG), and start times.
// Benchmarks report; they do not assert.
//
//   node bench/cases/fork-vs-cluster.mjs [--quick]       the comparison (prints the results JSON)
//   node bench/cases/fork-vs-cluster.mjs --sharing       what keeps pages shared (fork() variants)
//   node bench/cases/fork-vs-cluster.mjs --serve <json>  one server under test (started by the above)
//
// Memory: cluster holds N copies of the data set (8 × ~500 MiB); runs are strictly sequential,
// and every process of a run is killed at its end, on error too, and when this process exits.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { killAll, processTree, treeMemory, treeThreads } from '../lib/pss.mjs';
import { median, mulberry32, round, sleep } from '../lib/stats.mjs';
import { timelineSvg } from '../lib/timeline-svg.mjs';

const require = createRequire(import.meta.url);
const FILE = fileURLToPath(import.meta.url);
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// ---- The server under test (child mode).

const WORDS = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa'.split(
  ' ',
);
/** Heap bytes per entry of the data set (measured on Node 20-26: 430-450). */
const BYTES_PER_ENTRY = 440;

/**
 * The preloaded data set: a Map of `entries` objects, parsed from JSON as if read from a file or a
 * database (so its strings are flat, as loaded data is).
 */
function buildDataSet(entries) {
  // Seeded, so that every cluster worker builds the same data set.
  const rnd = mulberry32(42);
  const w = () => WORDS[(rnd() * WORDS.length) | 0];
  const map = new Map();
  const CHUNK = 20_000;
  for (let base = 0; base < entries; base += CHUNK) {
    const parts = [];
    for (let i = base; i < Math.min(entries, base + CHUNK); i++) {
      parts.push(
        JSON.stringify({
          id: i,
          name: `${w()} ${w()} ${i}`,
          email: `${w()}.${i}@example.com`,
          score: rnd() * 1000,
          active: rnd() < 0.5,
          tags: [w(), w(), w()],
          address: {
            city: w(),
            zip: String(10000 + ((rnd() * 89999) | 0)),
            line: `${(rnd() * 999) | 0} ${w()} street`,
          },
        }),
      );
    }
    for (const o of JSON.parse(`[${parts.join(',')}]`)) map.set(`user:${o.id}`, o);
  }
  return map;
}

/** Writes one JSON line on stdout (shared by every process of the tree; one write each). */
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

/**
 * The request handler: 20 lookups in the data set, a JSON answer of about 2.5 KB, and a bounded
 * cache of recent answers (old-generation churn, as a real cache makes). Reads the data set only.
 */
function makeHandler(data, entries) {
  const stats = { requests: 0 };
  const cache = new Map();
  const handler = (_req, res) => {
    stats.requests++;
    const items = [];
    for (let k = 0; k < 20; k++) {
      const o = data.get(`user:${(Math.random() * entries) | 0}`);
      items.push({
        id: o.id,
        name: o.name,
        email: o.email,
        score: Math.round(o.score),
        city: o.address.city,
        tags: o.tags.join(','),
      });
    }
    const body = JSON.stringify({ pid: process.pid, items });
    cache.set(stats.requests, body);
    if (cache.size > 5_000) cache.delete(cache.keys().next().value);
    res.setHeader('content-type', 'application/json');
    res.end(body);
  };
  return { handler, stats };
}

/**
 * SIGUSR2: the worker says how much it served, how big its heap is, and which garbage collections
 * it ran since it was ready (counted from then on: each GC's main-thread pause, by kind).
 */
function reportOnSignal(stats) {
  const { PerformanceObserver, constants } = require('node:perf_hooks');
  const gc = { minor: 0, major: 0, pauseMs: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
      else if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
      gc.pauseMs += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('SIGUSR2', () => {
    const m = process.memoryUsage();
    say({
      type: 'stats',
      pid: process.pid,
      requests: stats.requests,
      heapUsedMiB: round(m.heapUsed / 1048576, 1),
      heapTotalMiB: round(m.heapTotal / 1048576, 1),
      gc: { ...gc, pauseMs: round(gc.pauseMs, 1) },
    });
  });
}

async function serve(config) {
  const http = require('node:http');
  const entries = Math.round((config.dataMB * 1048576) / BYTES_PER_ENTRY);
  // The server process ends with its driver (stdin closes), whatever happens to the driver.
  const onDriverGone = (stop) => {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  };

  if (config.mode === 'cluster') {
    const cluster = require('node:cluster');
    if (cluster.isPrimary) {
      const forkedAt = new Map();
      const t0 = nowMs();
      cluster.on('listening', (worker, address) => {
        say({
          type: 'ready',
          pid: worker.process.pid,
          port: address.port,
          forkToReadyMs: round(nowMs() - forkedAt.get(worker.id), 1),
          sinceFirstForkMs: round(nowMs() - t0, 1),
        });
      });
      cluster.on('exit', (worker, code, signal) => say({ type: 'exit', pid: worker.process.pid, code, signal }));
      for (let i = 0; i < config.workers; i++) {
        const w = cluster.fork();
        forkedAt.set(w.id, nowMs());
      }
      say({ type: 'primary', pid: process.pid });
      onDriverGone(() => {
        for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
        process.exit(0);
      });
      return;
    }
    // A cluster worker: loads its own copy of the data set, then listens (port 0 is the same port
    // for every worker of a cluster).
    const data = buildDataSet(entries);
    const { handler, stats } = makeHandler(data, entries);
    reportOnSignal(stats);
    http.createServer(handler).listen(0, '127.0.0.1');
    return;
  }

  const lh = require('../../dist/index.js');
  const t0 = nowMs();
  const data = buildDataSet(entries);
  const loadMs = nowMs() - t0;
  const { handler, stats } = makeHandler(data, entries);
  const server = http.createServer(handler);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  // V8 flags changed at run time before forking (and before `compact`'s GC, which applies them).
  for (const flag of config.runtimeFlags ?? []) require('node:v8').setFlagsFromString(flag);
  say({
    type: 'loaded',
    pid: process.pid,
    loadMs: round(loadMs, 0),
    heapUsedMiB: round(process.memoryUsage().heapUsed / 1048576, 1),
  });

  if (config.mode === 'refork') {
    // One worker first; once it is warm (the driver loaded it), it forks its siblings itself.
    const pid = lh.fork({ compact: config.compact });
    if (pid === 0) {
      reportOnSignal(stats);
      setImmediate(() => say({ type: 'ready', pid: process.pid, port: server.address().port }));
      process.on('SIGUSR1', async () => {
        for (let i = 1; i < config.workers; i++) {
          let child;
          for (;;) {
            try {
              child = lh.fork();
              break;
            } catch (e) {
              if (e.code !== 'ERR_FORK_REQUESTS_IN_FLIGHT') throw e;
              await new Promise((r) => setImmediate(r));
            }
          }
          if (child === 0) {
            process.removeAllListeners('SIGUSR1');
            setImmediate(() => say({ type: 'ready', pid: process.pid, port: server.address().port, reforked: true }));
            return;
          }
        }
      });
      return;
    }
    server.close();
    say({ type: 'parent', pid: process.pid });
    onDriverGone(() => process.exit(0));
    return;
  }

  const t1 = nowMs();
  const pool = lh.prefork({
    workers: config.workers,
    compact: config.compact,
    fixedYoungGeneration: config.fixedYoungGeneration,
    // undefined: prefork()'s default (32 MiB).
    ...(config.maxYoungGenerationMiB === undefined ? {} : { maxYoungGenerationMiB: config.maxYoungGenerationMiB }),
    main({ forkedAt }) {
      reportOnSignal(stats);
      // Ready: the worker's event loop turns, with the inherited listening socket in it.
      setImmediate(() =>
        say({
          type: 'ready',
          pid: process.pid,
          port: server.address().port,
          forkToReadyMs: round(Number(process.hrtime.bigint() - forkedAt) / 1e6, 2),
          // The worker's own page faults from its fork to here (a child's counts start at 0).
          faultsToReady: process.resourceUsage().minorPageFault,
          sinceFirstForkMs: round(nowMs() - t1, 1),
        }),
      );
    },
  });
  if (pool.isChild) return;
  say({ type: 'parent', pid: process.pid, template: pool.templatePid, preforkMs: round(nowMs() - t1, 1) });
  onDriverGone(() => pool.stop({ timeout: 2_000 }).then(() => process.exit(0)));
}

// ---- The driver.

/** Every process any run started: killed when this process exits, whatever the reason. */
const everStarted = new Set();
process.on('exit', () => {
  for (const pid of everStarted) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
});

/** Reads the server's JSON lines as they come. */
function lineReader(stream, onLine) {
  let buf = '';
  stream.on('data', (d) => {
    buf += d;
    let i = buf.indexOf('\n');
    while (i !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('{')) {
        try {
          onLine(JSON.parse(line));
        } catch {
          // Not ours.
        }
      }
      i = buf.indexOf('\n');
    }
  });
}

function waitFor(pred, ms, what) {
  return new Promise((resolve, reject) => {
    const end = Date.now() + ms;
    const tick = () => {
      const v = pred();
      if (v) return resolve(v);
      if (Date.now() > end) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

/** Runs autocannon against `port` for `seconds`, or until it made `amount` requests. */
function load(port, seconds, connections, amount = 0) {
  const autocannon = require('autocannon');
  const until = amount ? { amount } : { duration: seconds };
  return new Promise((resolve, reject) => {
    autocannon({ url: `http://127.0.0.1:${port}/`, connections, timeout: 10, ...until }, (err, r) =>
      err ? reject(err) : resolve(r),
    );
  });
}

/**
 * The CPU time and minor faults of each thread between two `treeThreads` readings, summed by role:
 * the workers' main threads (tid = pid), their other threads, and every other process of the tree.
 * A thread that started in between counts from zero.
 */
function cpuDuring(before, after, workerPids) {
  const was = new Map(before.map((t) => [t.tid, t]));
  const workers = new Set(workerPids);
  const sum = { totalMs: 0, workerMainMs: 0, workerHelpersMs: 0, restMs: 0, workerMinorFaults: 0 };
  for (const t of after) {
    const ms = t.cpuMs - (was.get(t.tid)?.cpuMs ?? 0);
    sum.totalMs += ms;
    if (!workers.has(t.pid)) {
      sum.restMs += ms;
      continue;
    }
    if (t.tid === t.pid) sum.workerMainMs += ms;
    else sum.workerHelpersMs += ms;
    sum.workerMinorFaults += t.minorFaults - (was.get(t.tid)?.minorFaults ?? 0);
  }
  return sum;
}

/**
 * One server under test: start it, wait until every worker serves, sample the tree's PSS, load it,
 * sample again; always kill the whole tree at the end.
 */
async function runOne({
  mode,
  workers,
  dataMB,
  loadSec,
  sampleMs,
  connections,
  compact = false,
  fixedYoungGeneration = false,
  maxYoungGenerationMiB,
  nodeArgs = [],
  runtimeFlags = [],
  warmSec = 0,
  amount = 0,
}) {
  const config = { mode, workers, dataMB, compact, fixedYoungGeneration, maxYoungGenerationMiB, runtimeFlags };
  const t0 = nowMs();
  const child = spawn(process.execPath, [...nodeArgs, FILE, '--serve', JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  everStarted.add(child.pid);
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const ready = [];
  const stats = [];
  const info = {};
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  lineReader(child.stdout, (m) => {
    if (m.pid) everStarted.add(m.pid);
    if (m.template) everStarted.add(m.template);
    if (m.type === 'ready') ready.push({ ...m, at: nowMs() - t0 });
    else if (m.type === 'stats') stats.push(m);
    else
      Object.assign(
        info,
        m.type === 'loaded' ? { loadMs: m.loadMs, parentHeapMiB: m.heapUsedMiB } : {},
        m.type === 'parent' ? { preforkMs: m.preforkMs } : {},
      );
  });
  const samples = [];
  const sample = (phase) => {
    const pids = processTree(child.pid);
    for (const p of pids) everStarted.add(p);
    const m = treeMemory(pids);
    samples.push({
      t: round((nowMs() - t0) / 1000, 2),
      phase,
      pssMiB: m.pssMiB,
      ussMiB: m.ussMiB,
      processes: pids.length,
    });
    return m;
  };
  // Start-up too: how the memory of each setup builds up until its workers serve.
  let startup = setInterval(() => sample('start-up'), sampleMs);
  try {
    const first = mode === 'refork' ? 1 : workers;
    await waitFor(() => ready.length >= first || exited, 180_000, `${first} workers ready`);
    if (exited) throw new Error(`server ended (${JSON.stringify(exited)}): ${stderr}`);
    if (mode === 'refork') {
      // Warm the first worker up, then have it fork its siblings.
      await load(ready[0].port, warmSec, connections);
      process.kill(ready[0].pid, 'SIGUSR1');
      await waitFor(() => ready.length >= workers || exited, 60_000, `${workers} workers ready`);
    }
    const allReadyMs = ready.at(-1).at;
    const port = ready[0].port;
    await sleep(500);
    clearInterval(startup);
    startup = undefined;
    const atStart = sample('start');
    // The whole tree's CPU during the load (cluster's primary passes connections to its workers;
    // prefork's parent and template idle): the cost per request of each setup's options, and where
    // it goes (each thread's CPU and minor faults).
    const threadsAtStart = treeThreads(processTree(child.pid));
    const timer = setInterval(() => sample('load'), sampleMs);
    let bench;
    try {
      bench = await load(port, loadSec, connections, amount);
    } finally {
      clearInterval(timer);
    }
    const afterLoad = sample('after load');
    const workerPids = ready.map((r) => r.pid);
    const cpu = cpuDuring(threadsAtStart, treeThreads(processTree(child.pid)), workerPids);
    const perRequest = (x, digits = 1) => (bench.requests.total ? round(x / bench.requests.total, digits) : null);
    for (const pid of workerPids) {
      try {
        process.kill(pid, 'SIGUSR2');
      } catch {
        // Gone.
      }
    }
    await waitFor(() => stats.length >= workerPids.length, 5_000, 'worker stats').catch(() => {});
    const perWorker = workerPids.map((pid) => {
      const s = stats.find((x) => x.pid === pid);
      const mem = afterLoad.processes.find((p) => p.pid === pid);
      return {
        pid,
        requests: s?.requests ?? null,
        gc: s?.gc ?? null,
        heapUsedMiB: s?.heapUsedMiB ?? null,
        pssMiB: mem?.pssMiB ?? null,
        ussMiB: mem?.ussMiB ?? null,
      };
    });
    const forkToReady = ready.map((r) => r.forkToReadyMs).filter((v) => v !== undefined);
    const faultsToReady = ready.map((r) => r.faultsToReady).filter((v) => v !== undefined);
    return {
      mode,
      workers,
      dataMB,
      compact,
      fixedYoungGeneration,
      maxYoungGenerationMiB,
      nodeArgs,
      runtimeFlags,
      startPssMiB: atStart.pssMiB,
      afterLoadPssMiB: afterLoad.pssMiB,
      startUssMiB: atStart.ussMiB,
      afterLoadUssMiB: afterLoad.ussMiB,
      allReadyMs: round(allReadyMs, 0),
      loadMs: info.loadMs ?? null,
      preforkMs: info.preforkMs ?? null,
      forkToReadyMs: forkToReady.length
        ? { p50: round(median(forkToReady), 2), max: round(Math.max(...forkToReady), 2) }
        : null,
      faultsToReady: faultsToReady.length ? median(faultsToReady) : null,
      requests: bench.requests.total,
      loadSec: round(bench.duration, 1),
      requestsPerSec: round(bench.requests.average, 0),
      cpuUsPerRequest: perRequest(cpu.totalMs * 1000),
      // Where that CPU went, per request: the workers' main threads, their other threads (V8's
      // GC and compiler helpers), the rest of the tree; the workers' minor page faults.
      cpuSplitUsPerRequest: {
        workerMain: perRequest(cpu.workerMainMs * 1000),
        workerHelpers: perRequest(cpu.workerHelpersMs * 1000),
        rest: perRequest(cpu.restMs * 1000),
      },
      workerMinorFaultsPerRequest: perRequest(cpu.workerMinorFaults, 2),
      errors: bench.errors + bench.non2xx,
      perWorker,
      processes: afterLoad.processes,
      samples,
    };
  } finally {
    if (startup) clearInterval(startup);
    try {
      child.stdin.end();
    } catch {
      // Closed.
    }
    await waitFor(() => exited, 3_000, 'server exit').catch(() => {});
    await killAll([...everStarted], { root: child.pid });
  }
}

/** A run's setup: what runs the workers, with its options and V8 flags. */
const setupLabel = (r) => {
  const base =
    r.mode === 'cluster'
      ? 'cluster'
      : r.mode === 'refork'
        ? `fork() from a warm worker${r.compact ? ', compact' : ''}`
        : r.fixedYoungGeneration
          ? 'prefork({ fixedYoungGeneration: true })'
          : r.maxYoungGenerationMiB !== undefined
            ? `prefork({ maxYoungGenerationMiB: ${r.maxYoungGenerationMiB} })`
            : r.compact
              ? 'prefork()'
              : 'prefork({ compact: false })';
  return `${base}${[...r.nodeArgs, ...r.runtimeFlags].map((f) => ` ${f}`).join('')}`;
};
const label = (r) => `${setupLabel(r)}, ${r.workers} workers`;

/**
 * The comparison: prefork() and cluster at N = 4 and 8 (quick: 4), the same data set and load.
 * Writes bench/results/fork-vs-cluster.svg. With `sharing`, the fork() variants that may keep more
 * pages shared instead (N = 4).
 */
/**
 * What one page fault costs on this machine (µs, p50 of 5 runs): first touches of fresh anonymous
 * memory, timed in a child, 20,000 pages each. A forked child pays this for every page it writes
 * first (copy on write, which copies a page besides) until it is ready.
 */
function pageFaultCostUs() {
  const code = `const f0 = process.resourceUsage().minorPageFault;
    const t0 = process.hrtime.bigint();
    const b = Buffer.allocUnsafeSlow(20000 * 4096);
    for (let i = 0; i < 20000; i++) b[i * 4096] = 1;
    const ns = Number(process.hrtime.bigint() - t0);
    console.log(ns / 1e3 / (process.resourceUsage().minorPageFault - f0));`;
  const runs = [];
  for (let i = 0; i < 5; i++) {
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
    const us = Number(r.stdout.trim());
    if (r.status === 0 && Number.isFinite(us)) runs.push(us);
  }
  return runs.length ? round(median(runs), 2) : null;
}

export async function runForkVsCluster({ quick = false, sharing = false, resultsDir = 'bench/results' } = {}) {
  if (process.platform !== 'linux') return { skipped: `fork() is Linux-only (this is ${process.platform})` };
  const dataMB = quick ? 200 : 300;
  const loadSec = quick ? 8 : 60;
  const sampleMs = quick ? 1_000 : 2_000;
  const plans = [];
  if (sharing) {
    // The same work for every variant (a loaded machine serves at different rates): 10,000
    // requests per worker (quick: 2,500).
    const base = { workers: 4, dataMB, loadSec, sampleMs, amount: (quick ? 2_500 : 10_000) * 4 };
    plans.push(
      { ...base, mode: 'cluster' },
      { ...base, mode: 'fork', compact: false },
      { ...base, mode: 'fork', compact: true },
      { ...base, mode: 'fork', compact: true, maxYoungGenerationMiB: null },
      { ...base, mode: 'fork', compact: true, nodeArgs: ['--no-compact'] },
      { ...base, mode: 'fork', compact: true, runtimeFlags: ['--heap-growing-percent=10'] },
      { ...base, mode: 'fork', compact: true, fixedYoungGeneration: true },
      { ...base, mode: 'fork', compact: true, nodeArgs: ['--max-semi-space-size=8'] },
      { ...base, mode: 'cluster', nodeArgs: ['--max-semi-space-size=8'] },
      { ...base, mode: 'refork', compact: true, warmSec: 5 },
    );
  } else {
    for (const workers of quick ? [4] : [4, 8]) {
      plans.push({ mode: 'fork', workers, dataMB, loadSec, sampleMs, compact: true });
      plans.push({ mode: 'fork', workers, dataMB, loadSec, sampleMs, compact: true, maxYoungGenerationMiB: null });
      plans.push({ mode: 'fork', workers, dataMB, loadSec, sampleMs, compact: true, fixedYoungGeneration: true });
      plans.push({ mode: 'cluster', workers, dataMB, loadSec, sampleMs });
    }
  }
  const pageFaultUs = pageFaultCostUs();
  const runs = [];
  for (const plan of plans) {
    console.error(`[fork-vs-cluster] ${label({ nodeArgs: [], runtimeFlags: [], ...plan })}`);
    runs.push(await runOne({ connections: 4 * plan.workers, ...plan }));
  }
  const comparisons = [];
  for (const workers of [...new Set(runs.map((r) => r.workers))]) {
    // prefork() as it comes, and with each option that changes memory (no V8 flags on the command line).
    const forks = runs.filter(
      (r) =>
        r.mode === 'fork' &&
        r.compact &&
        r.workers === workers &&
        r.nodeArgs.length === 0 &&
        r.runtimeFlags.length === 0,
    );
    const c = runs.find((r) => r.mode === 'cluster' && r.workers === workers && r.nodeArgs.length === 0);
    for (const f of c ? forks : []) {
      comparisons.push({
        workers,
        setup: setupLabel(f),
        startRatio: round(f.startPssMiB / c.startPssMiB, 2),
        afterLoadRatio: round(f.afterLoadPssMiB / c.afterLoadPssMiB, 2),
        allReadyForkMs: f.allReadyMs,
        allReadyClusterMs: c.allReadyMs,
      });
    }
  }
  for (const r of runs) {
    const clusters = runs.filter((x) => x.mode === 'cluster' && x.workers === r.workers);
    const same = (x) => x.nodeArgs.join(' ') === r.nodeArgs.join(' ');
    const c = clusters.find(same) ?? clusters.find((x) => x.nodeArgs.length === 0);
    if (c && r !== c) {
      r.startVsCluster = round(r.startPssMiB / c.startPssMiB, 2);
      r.afterLoadVsCluster = round(r.afterLoadPssMiB / c.afterLoadPssMiB, 2);
    }
  }
  const targets = comparisons.map((c) => ({
    target: `total PSS after load <= 0.40 of cluster's (N=${c.workers}, ${c.setup})`,
    value: c.afterLoadRatio,
    met: c.afterLoadRatio <= 0.4,
  }));
  for (const r of runs.filter((x) => x.mode === 'fork' && x.forkToReadyMs)) {
    const faults =
      r.faultsToReady === null
        ? ''
        : `; ${r.faultsToReady.toLocaleString('en-US')} page faults until ready (p50)${pageFaultUs === null ? '' : `, ${round((r.faultsToReady * pageFaultUs) / 1000, 1)} ms at this machine's ${pageFaultUs} µs per fault`}`;
    targets.push({
      target: `each child ready <= 10 ms after fork() (${label(r)})`,
      value: `max ${r.forkToReadyMs.max} ms (p50 ${r.forkToReadyMs.p50})${faults}`,
      met: r.forkToReadyMs.max <= 10,
    });
  }
  const name = sharing ? 'fork-sharing' : 'fork-vs-cluster';
  const svg = forkVsClusterSvg({ dataMB, sharing, runs });
  const dir = new URL(`../../${resultsDir}/`, import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL(`${name}.svg`, dir), svg);
  return {
    quick,
    sharing,
    node: process.version,
    dataMB,
    loadSec,
    svg: `${resultsDir}/${name}.svg`,
    pageFaultUs,
    comparisons,
    targets,
    runs,
  };
}

/** The PSS-over-time chart of a result (`runs` with their samples). */
export function forkVsClusterSvg({ dataMB, sharing, runs }) {
  return timelineSvg({
    title: `Total PSS of the process tree, ${dataMB} MB data set${sharing ? ': fork() sharing options' : ''}`,
    xLabel: 'seconds since the server process started (start-up, then the load; a sample every 1-2 s)',
    yLabel: 'MiB (sum of PSS)',
    series: runs.map((r) => ({
      label: label(r),
      dashed: r.mode === 'cluster',
      points: r.samples.map((s) => [s.t, s.pssMiB]),
    })),
  });
}

/** The results as Markdown tables (for bench/results/latest.md). */
export function forkVsClusterMarkdown(r) {
  if (r.skipped) return [`fork() against cluster: skipped (${r.skipped}).`, ''];
  const md = [];
  const table = (head, rows) => {
    md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
    for (const row of rows) md.push(`| ${row.map((v) => (v === null || v === undefined ? '–' : v)).join(' | ')} |`);
    md.push('');
  };
  md.push(
    `${[...new Set(r.runs.map((x) => x.workers))].join(' and ')} workers, each holding the same ${r.dataMB} MB data set (a Map of objects), ` +
      `HTTP load with autocannon on loopback (${r.sharing ? 'the same number of requests per variant' : `${r.loadSec} s`}). ` +
      'PSS summed over the whole process tree (parent, template, workers / primary, workers); server CPU per request: ' +
      "the whole tree's CPU time during the load (every thread) over the requests served." +
      (r.pageFaultUs
        ? ` A worker's page faults are counted from its fork to when its loop first turns; a page fault takes ${r.pageFaultUs} µs on this machine (first touches of fresh memory, timed), so each thousand of them is ${round(r.pageFaultUs, 0)} ms of a worker's start, besides the fork(2) call itself (which copies the page tables: it grows with the heap).`
        : ''),
    '',
  );
  table(
    [
      'setup',
      'PSS at start',
      'PSS after load',
      'vs cluster',
      'all workers ready',
      'each worker ready after its fork',
      'requests',
      'server CPU per request',
    ],
    r.runs.map((x) => [
      label(x),
      `${Math.round(x.startPssMiB).toLocaleString('en-US')} MiB`,
      `${Math.round(x.afterLoadPssMiB).toLocaleString('en-US')} MiB`,
      x.afterLoadVsCluster === undefined ? '–' : `${x.startVsCluster} / ${x.afterLoadVsCluster}`,
      `${(x.allReadyMs / 1000).toFixed(1)} s`,
      x.forkToReadyMs
        ? `${x.forkToReadyMs.p50} ms (max ${x.forkToReadyMs.max})${x.faultsToReady === null ? '' : `, ${x.faultsToReady.toLocaleString('en-US')} page faults`}`
        : '–',
      `${x.requests.toLocaleString('en-US')} (${x.perWorker.map((w) => w.requests ?? '?').join('/')})`,
      x.cpuUsPerRequest === undefined || x.cpuUsPerRequest === null ? '–' : `${x.cpuUsPerRequest} µs`,
    ]),
  );
  const splits = r.runs.filter((x) => x.cpuSplitUsPerRequest);
  if (splits.length) {
    md.push(
      "Where the servers' CPU went during the load, per request: the workers' main threads, their other threads " +
        "(V8's GC and compiler helpers), the rest of the tree (parent and template / primary); the workers' minor " +
        'page faults (copy-on-write breaks and first touches of new memory); and the garbage collections each ' +
        'worker ran from when it was ready (mean per worker; pause: main-thread time of all of them, per request).',
      '',
    );
    /** The workers' GC counts or pause summed over those that reported them, and how many did. */
    const gcSum = (x, key) => {
      const gcs = x.perWorker.map((w) => w.gc).filter(Boolean);
      return { sum: gcs.reduce((s, g) => s + g[key], 0), n: gcs.length };
    };
    const gcMean = (x, key) => {
      const { sum, n } = gcSum(x, key);
      return n ? round(sum / n, 0) : null;
    };
    const pausePerRequest = (x) => {
      const { sum, n } = gcSum(x, 'pauseMs');
      return n ? `${round((sum * 1000) / x.requests, 1)} µs` : null;
    };
    table(
      ['setup', 'main threads', 'helper threads', 'rest', 'minor faults', 'scavenges', 'full GCs', 'GC pause'],
      splits.map((x) => [
        label(x),
        `${x.cpuSplitUsPerRequest.workerMain} µs`,
        `${x.cpuSplitUsPerRequest.workerHelpers} µs`,
        `${x.cpuSplitUsPerRequest.rest} µs`,
        x.workerMinorFaultsPerRequest,
        gcMean(x, 'minor'),
        gcMean(x, 'major'),
        pausePerRequest(x),
      ]),
    );
  }
  table(
    ['target', 'measured', 'met'],
    r.targets.map((t) => [t.target, t.value, t.met ? 'yes' : '**no**']),
  );
  md.push(`![PSS over time](${r.svg.split('/').pop()})`, '');
  return md;
}

if (process.argv[2] === '--serve') {
  await serve(JSON.parse(process.argv[3]));
} else if (process.argv[1] === FILE) {
  const stop = async (signal) => {
    await killAll([...everStarted]);
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const results = await runForkVsCluster({
    quick: process.argv.includes('--quick'),
    sharing: process.argv.includes('--sharing'),
  });
  console.error(forkVsClusterMarkdown(results).join('\n'));
  console.log(JSON.stringify(results, null, 2));
}
