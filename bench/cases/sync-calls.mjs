// What a SyncCallDetector adds to each synchronous call. Prints one JSON object.
//
//   node bench/cases/sync-calls.mjs [rounds=7] [calls=100000]
//
// For each operation, ns per call, median of `rounds` alternating rounds:
// - off:      no detector (nothing is patched: the originals);
// - quiet:    a running detector that does not report the call (scope: 'run', called outside run()):
//             the cost every sync call pays while a detector runs, without a stack;
// - stack:    a running detector that reports the call: the caller's stack is taken (here the
//             report is then merged with the previous one of the same call site in this tick, so
//             this is the stack's cost, not the warning's);
// - report:   one full report (stack, source-map lookup, channel publish to one subscriber), timed
//             one call per turn of the loop;
// - marker:   no SyncCallDetector, a BlockingDetector running (`nameSyncCalls`, its default): the
//             wrappers mark each call for its warnings (issue 11, native blocks).
// Operations: Atomics.wait on a value that differs (returns at once: the wrapper alone),
// fs.existsSync('') through the module (export layer) and taken before start() (binding layer), and
// crypto.randomFillSync of 16 bytes taken before start() (a crypto job's run() before Node 26; on
// Node 26 the binding function its random module keeps, replaced through the inspector).
import crypto from 'node:crypto';
import { subscribe } from 'node:diagnostics_channel';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { median, round, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const { BlockingDetector, SyncCallDetector, SYNC_CALL_CHANNEL } = require('../../dist/index.js');

const rounds = Number(process.argv[2] ?? 7);
const calls = Number(process.argv[3] ?? 100_000);

const i32 = new Int32Array(new SharedArrayBuffer(4));
const existsSyncEarly = fs.existsSync; // the original, taken before any start()
const randomFillSyncEarly = crypto.randomFillSync;
const bytes = new Uint8Array(16);
const ops = {
  'Atomics.wait (export)': () => Atomics.wait(i32, 0, 1, 0),
  'fs.existsSync (export)': () => fs.existsSync(''),
  'fs.existsSync taken before start() (binding)': () => existsSyncEarly(''),
  'crypto.randomFillSync taken before start() (job, or binding on Node 26)': () => randomFillSyncEarly(bytes),
};

function time(op, n) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) op();
  return Number(process.hrtime.bigint() - t) / n;
}

const quiet = new SyncCallDetector({ scope: 'run', log: false });
const marking = new BlockingDetector({ timeout: 1, raiseExc: false, log: false });
const loud = new SyncCallDetector({ log: false });
let published = 0;
subscribe(SYNC_CALL_CHANNEL, () => published++);

await sleep(5); // past the start-up grace
const samples = {};
for (const name of Object.keys(ops)) samples[name] = { off: [], quiet: [], stack: [], report: [], marker: [] };

for (let r = 0; r < rounds; r++) {
  for (const [name, op] of Object.entries(ops)) {
    time(op, calls / 10); // warm-up
    samples[name].off.push(time(op, calls));
    quiet.start();
    time(op, calls / 10);
    samples[name].quiet.push(time(op, calls));
    quiet.stop();
    marking.start();
    time(op, calls / 10);
    samples[name].marker.push(time(op, calls));
    marking.stop();
    loud.start();
    samples[name].stack.push(time(op, calls / 20));
    loud.stop();
  }
}

// Full reports: one call per turn, so that no report is merged with the previous one.
loud.start();
for (const [name, op] of Object.entries(ops)) {
  for (let i = 0; i < 200; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    const t = process.hrtime.bigint();
    op();
    samples[name].report.push(Number(process.hrtime.bigint() - t));
  }
}
loud.stop();

const result = { node: process.version, rounds, calls, published, ns: {} };
for (const [name, s] of Object.entries(samples)) {
  const off = median(s.off);
  result.ns[name] = {
    off: round(off, 1),
    quiet: round(median(s.quiet), 1),
    quietAdded: round(median(s.quiet) - off, 1),
    stack: round(median(s.stack), 0),
    stackAdded: round(median(s.stack) - off, 0),
    report: round(median(s.report), 0),
    marker: round(median(s.marker), 1),
    markerAdded: round(median(s.marker) - off, 1),
  };
}
// First start() on a thread: patching, and finding the crypto job classes (done once).
const { spawnSync } = await import('node:child_process');
const first = spawnSync(
  process.execPath,
  [
    '-e',
    `require('node:crypto'); require('node:zlib'); require('node:child_process');
     const { SyncCallDetector } = require(${JSON.stringify(require.resolve('../../dist/index.js'))});
     const t0 = process.hrtime.bigint(); const d = new SyncCallDetector().start();
     const t1 = process.hrtime.bigint(); d.stop(); const t2 = process.hrtime.bigint(); d.start();
     const t3 = process.hrtime.bigint(); d.stop();
     console.log(JSON.stringify({ firstStartMs: Number(t1 - t0) / 1e6, stopMs: Number(t2 - t1) / 1e6, laterStartMs: Number(t3 - t2) / 1e6 }));`,
  ],
  { encoding: 'utf8' },
);
try {
  const s = JSON.parse(first.stdout.trim());
  result.startStop = {
    firstStartMs: round(s.firstStartMs),
    stopMs: round(s.stopMs),
    laterStartMs: round(s.laterStartMs),
  };
} catch {
  result.startStop = null;
}
// A BlockingDetector's first start() on a thread, with and without the sync-call marker (its
// wrappers patch the modules already loaded: fs always, here also crypto, zlib, child_process).
const blockingStart = (nameSyncCalls) =>
  spawnSync(
    process.execPath,
    [
      '-e',
      `require('node:crypto'); require('node:zlib'); require('node:child_process');
       const { BlockingDetector } = require(${JSON.stringify(require.resolve('../../dist/index.js'))});
       new BlockingDetector({ timeout: 5, log: false, nameSyncCalls: false }).start().stop(); // capabilities probed
       const t0 = process.hrtime.bigint();
       const d = new BlockingDetector({ timeout: 5, log: false, raiseExc: false, nameSyncCalls: ${nameSyncCalls} }).start();
       const t1 = process.hrtime.bigint(); d.stop();
       console.log(Number(t1 - t0) / 1e6);`,
    ],
    { encoding: 'utf8' },
  );
const starts = { on: [], off: [] };
for (let i = 0; i < 5; i++) {
  for (const k of ['off', 'on']) starts[k].push(Number(blockingStart(k === 'on').stdout.trim()));
}
result.blockingDetectorFirstStartMs = {
  nameSyncCallsOff: round(median(starts.off)),
  nameSyncCallsOn: round(median(starts.on)),
};
console.log(JSON.stringify(result));
