// How often a live warning of a block outside JavaScript names where the thread is (issue 11,
// target >= 95%): the Node.js synchronous API (`syncApi`), or the garbage collection (`gc`). One
// child process per scenario runs several real blocks of 3+ timeouts, each called from a function
// named `callerOfTheBlock`, with the modules loaded before the detector starts (as an
// application's requires are); counted from the `log: 'json'` lines. Also counted: the events
// whose frames include the caller (the stack sampled as the call returns, or at the first interrupt
// check after it).
// Child mode: `node [--expose-gc] native-blocks.mjs --child <scenario> <trials>`.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { round, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const TIMEOUT_MS = 100;

/**
 * name -> [expected syncApi (or `gc:<kind>`), setup() -> { block, prepare? } (prepare: awaited
 * before each block, outside it), node flags].
 */
const scenarios = {
  'fs.readFileSync (FIFO, writer 0.4 s late)': [
    'fs.readFileSync',
    () => {
      const fs = require('node:fs');
      const fifo = join(tmpdir(), `lh-bench-fifo-${process.pid}`);
      fs.rmSync(fifo, { force: true });
      execFileSync('mkfifo', [fifo]);
      process.on('exit', () => fs.rmSync(fifo, { force: true }));
      return {
        prepare: () => spawn('sh', ['-c', `sleep 0.4; echo x > '${fifo}'`], { stdio: 'ignore' }),
        block: () => fs.readFileSync(fifo),
      };
    },
  ],
  'fs.readFileSync (256 MiB file, cold)': [
    'fs.readFileSync',
    () => {
      const fs = require('node:fs');
      const file = join(tmpdir(), `lh-bench-big-${process.pid}`);
      fs.writeFileSync(file, Buffer.alloc(256 << 20, 1));
      process.on('exit', () => fs.rmSync(file, { force: true }));
      return {
        // Out of the page cache first where the kernel lets it (else a warm read, which may take
        // less than the timeout: then there is no warning to count).
        prepare: () =>
          new Promise((resolve) =>
            spawn('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' }).on('close', resolve),
          ),
        block: () => fs.readFileSync(file),
      };
    },
  ],
  'crypto.pbkdf2Sync': [
    'crypto.pbkdf2Sync',
    () => {
      const crypto = require('node:crypto');
      return { block: () => crypto.pbkdf2Sync('secret', 'salt', 600_000, 64, 'sha512') };
    },
  ],
  'crypto.scryptSync': [
    'crypto.scryptSync',
    () => {
      const crypto = require('node:crypto');
      return { block: () => crypto.scryptSync('secret', 'salt', 64, { N: 2 ** 17, r: 8, p: 1, maxmem: 256 << 20 }) };
    },
  ],
  "child_process.execSync('sleep 0.3')": [
    'child_process.execSync',
    () => {
      const cp = require('node:child_process');
      return { block: () => cp.execSync('sleep 0.3') };
    },
  ],
  "child_process.spawnSync('sleep', ['0.3'])": [
    'child_process.spawnSync',
    () => {
      const cp = require('node:child_process');
      return { block: () => cp.spawnSync('sleep', ['0.3']) };
    },
  ],
  'zlib.gzipSync (12 MiB, level 9)': [
    'zlib.gzipSync',
    () => {
      const zlib = require('node:zlib');
      const data = require('node:crypto')
        .randomBytes(6 << 20)
        .toString('hex');
      return { block: () => zlib.gzipSync(data, { level: 9 }) };
    },
  ],
  'Atomics.wait (0.3 s)': [
    'Atomics.wait',
    () => {
      const cell = new Int32Array(new SharedArrayBuffer(4));
      return { block: () => Atomics.wait(cell, 0, 0, 300) };
    },
  ],
  'garbage collection (gc() on a ~200 MB heap)': [
    'gc:mark-compact',
    () => {
      const heap = [];
      for (let i = 0; i < 2_000_000; i++) heap.push({ i, a: [i] });
      return {
        block: () => {
          globalThis.gc();
          return heap.length;
        },
      };
    },
    ['--expose-gc'],
  ],
};

if (process.argv[2] === '--child') {
  const [, , , name, trials] = process.argv;
  const [, setup] = scenarios[name];
  const { block, prepare } = setup();
  const { BlockingDetector } = require('../../dist/index.js');
  const events = [];
  const d = new BlockingDetector({ timeout: TIMEOUT_MS / 1000, aggressive: false, raiseExc: false, log: 'json' });
  d.on('blocked', (e) => events.push(e));
  d.start();
  /** [start, end] of each block() call on the hrtime clock (ms): its warnings are the ones counted. */
  const windows = [];
  const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
  for (let i = 0; i < Number(trials); i++) {
    await prepare?.();
    await new Promise((resolve) =>
      setTimeout(function callerOfTheBlock() {
        const start = nowMs();
        block();
        windows.push([start, nowMs()]);
        resolve();
      }, 1),
    );
    await sleep(30);
  }
  await d.drain();
  d.stop();
  // The events of the scenario's own blocks: those whose turn contains a block() call.
  const mine = events.filter((e) =>
    windows.some(([a, b]) => e.startHrtimeMs <= b && e.startHrtimeMs + e.durationMs >= a),
  );
  const withCaller = mine.filter((e) =>
    e.samples.some((s) => (s.frames ?? []).some((f) => f.functionName === 'callerOfTheBlock')),
  ).length;
  process.stdout.write(`${JSON.stringify({ events: mine.length, withCaller, windows })}\n`);
  process.exit(0);
}

/** Per scenario: live warnings, how many name the call (or the GC), events with the caller's frames. */
export function runNativeBlocks(opts) {
  const trials = sized(opts, 10, 3, 1);
  const self = fileURLToPath(import.meta.url);
  const rows = [];
  for (const [name, [expected, , flags = []]] of Object.entries(scenarios)) {
    const r = spawnSync(process.execPath, [...flags, self, '--child', name, String(trials)], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    let child = { events: 0, withCaller: 0, windows: [] };
    try {
      child = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    } catch {
      // The child failed: its row says so through the counts.
    }
    const lines = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    // The warnings given during a block() call: their block began before the call ended, and the
    // moment of the warning (start + blockedMs) is not before the call began. Others (a
    // child_process.spawn that blocked the loop waiting for its child's exec, a collection
    // afterwards) are counted apart.
    const own = (w) => child.windows.some(([a, b]) => w.startHrtimeMs <= b && w.startHrtimeMs + w.blockedMs >= a);
    const all = lines.filter((l) => l.type === 'BlockingWarning');
    const warnings = all.filter(own);
    const names = (w) => (expected.startsWith('gc:') ? `gc:${w.gc}` === expected : w.syncApi === expected);
    const named = warnings.filter(names).length;
    rows.push({
      scenario: name,
      expected,
      trials,
      warnings: warnings.length,
      named,
      namedPercent: warnings.length ? round((100 * named) / warnings.length, 1) : null,
      events: child.events,
      eventsWithCaller: child.withCaller,
      other: [...new Set(warnings.filter((w) => !names(w)).map((w) => w.syncApi ?? w.gc ?? w.syscall ?? 'nothing'))],
      otherBlocks: all
        .filter((w) => !own(w))
        .map(
          (w) => w.syncApi ?? (w.gc ? `gc ${w.gc}` : null) ?? (w.syscall ? `system call ${w.syscall}` : 'JavaScript'),
        ),
    });
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(runNativeBlocks({ quick: process.argv.includes('--quick') }), null, 2));
}
