// fork(): the parent's stall per fork by heap size, and a stress run of fork/work/exit/wait cycles
// from a parent that keeps using the threadpool and allocating between forks.
// Child modes: `node fork.mjs --stall <heapMB> <forks>` and `node fork.mjs --stress <cycles>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { median, percentile, round, runChild, sized } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);

/** A heap of about `mb` MB: three quarters double arrays, one quarter small objects. */
function buildHeap(mb) {
  const keep = [];
  const doubles = (mb * 0.75 * 1048576) / 8;
  for (let n = 0; n < doubles; n += 131072) keep.push(new Float64Array(131072).fill(n));
  const objects = (mb * 0.25 * 1048576) / 56;
  const o = [];
  for (let i = 0; i < objects; i++) o.push({ i, s: i & 1 ? 'a' : 'b' });
  keep.push(o);
  return keep;
}

async function useThreadpool() {
  const fs = require('node:fs');
  const crypto = require('node:crypto');
  const dns = require('node:dns');
  await fs.promises.readFile(fileURLToPath(import.meta.url));
  await new Promise((r) => crypto.pbkdf2('pw', 'salt', 1000, 32, 'sha256', r));
  await new Promise((r) => dns.lookup('localhost', r));
}

if (process.argv[2] === '--stall') {
  const lh = require('../../dist/index.js');
  const mb = Number(process.argv[3]);
  const forks = Number(process.argv[4]);
  const heap = buildHeap(mb);
  const rssMiB = process.memoryUsage().rss / 1048576;
  const rows = [];
  for (let i = 0; i < forks; i++) {
    const pid = lh.fork();
    if (pid === 0) process.exit(heap.length > 0 ? 0 : 1);
    rows.push(lh.lastForkTiming());
    const s = await lh.waitpid(pid);
    if (s.code !== 0) throw new Error(`child ended with ${JSON.stringify(s)}`);
  }
  const pick = (k) => rows.map((r) => r[k]);
  console.log(
    JSON.stringify({
      heapMB: mb,
      rssMiB: round(rssMiB, 0),
      forks,
      totalMs: { p50: round(median(pick('totalMs')), 2), max: round(Math.max(...pick('totalMs')), 2) },
      parkMs: round(median(pick('parkMs')), 2),
      memoryMs: round(median(pick('memoryMs')), 2),
      forkMs: round(median(pick('forkMs')), 2),
      firstForkMs: round(rows[0].totalMs, 2),
      mappings: rows[0].mappings,
    }),
  );
  process.exit(0);
}

if (process.argv[2] === '--stress') {
  const lh = require('../../dist/index.js');
  const fs = require('node:fs');
  const crypto = require('node:crypto');
  const cycles = Number(process.argv[3]);
  const started = performance.now();
  const keep = [];
  const stall = [];
  const cycle = [];
  const failures = [];
  for (let i = 0; i < cycles; i++) {
    const t0 = performance.now();
    await useThreadpool();
    keep.push(new Array(50_000).fill(i)); // the parent keeps allocating
    if (keep.length > 40) keep.shift();
    const code = i % 100;
    const pid = lh.fork();
    if (pid === 0) {
      fs.promises.readFile(fileURLToPath(import.meta.url)).then(() =>
        crypto.pbkdf2('pw', 'salt', 500, 16, 'sha256', () => {
          const garbage = [];
          for (let k = 0; k < 200_000; k++) garbage.push({ k });
          if (i % 3 === 0) process.exit(code);
          process.exitCode = code; // natural end
        }),
      );
      // The parent's pending work (the loop above) must not run in the child: stop here.
      await new Promise(() => {});
    }
    stall.push(lh.lastForkTiming().totalMs);
    const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 20_000);
    const s = await lh.waitpid(pid);
    clearTimeout(timer);
    if (s.code !== code || s.signal !== null) failures.push({ i, status: s });
    cycle.push(performance.now() - t0);
  }
  console.log(
    JSON.stringify({
      cycles,
      ok: cycles - failures.length,
      failures: failures.slice(0, 5),
      wallS: round((performance.now() - started) / 1000, 1),
      cycleMs: { p50: round(median(cycle), 1), p99: round(percentile(cycle, 99), 1) },
      stallMs: {
        p50: round(median(stall), 2),
        p99: round(percentile(stall, 99), 2),
        max: round(Math.max(...stall), 2),
      },
    }),
  );
  process.exit(0);
}

export function runFork(opts) {
  if (process.platform !== 'linux') return { skipped: `fork() is Linux-only (this is ${process.platform})` };
  const file = fileURLToPath(import.meta.url);
  const sizes = sized(opts, [50, 500, 1000], [50]);
  const stall = sizes.map((mb) => runChild(file, ['--stall', String(mb), sized(opts, '7', '3', '1')]));
  const stress = runChild(file, ['--stress', sized(opts, '200', '20', '3')]);
  return { stall, stress };
}
