// Memory: RSS without and with a running detector, and after 10,000 detections (no growth). What
// the detector adds is split (Linux, /proc/self/status) into private anonymous memory (RssAnon:
// the V8 heap, malloc, stacks) and file-backed pages (RssFile): mostly Node's own executable, whose
// code paths that loading an addon and compiling the package's modules touch for the first time are
// paged in (clean, shared with every other Node.js process, reclaimable), and the addon's text.
// Child mode: `node --expose-gc memory.mjs --child <detections>`.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { round, runChild, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const mib = () => {
  globalThis.gc?.();
  return process.memoryUsage().rss / 1048576;
};
/** RssAnon and RssFile in MiB (Linux), or null. */
const split = () => {
  globalThis.gc?.();
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)[1]);
    return { anon: kib('RssAnon') / 1024, file: kib('RssFile') / 1024 };
  } catch {
    return null;
  }
};

if (process.argv[2] === '--child') {
  const total = Number(process.argv[3]);
  await sleep(100);
  const splitBefore = split();
  const before = mib();
  const { BlockingDetector } = require('../../dist/index.js');
  const d = new BlockingDetector({ timeout: 0.002, raiseExc: false, log: false, aggressive: false }).start();
  let events = 0;
  d.on('blocked', () => events++);
  await sleep(100);
  const running = mib();
  const splitRunning = split();
  const at = {};
  for (let i = 1; i <= total; i++) {
    await new Promise((r) =>
      setImmediate(() => {
        const t = process.hrtime.bigint();
        while (process.hrtime.bigint() - t < 3_000_000n);
        setImmediate(r);
      }),
    );
    if (i === Math.floor(total / 10) || i === Math.floor(total / 2) || i === total) at[i] = mib();
  }
  await sleep(100);
  d.stop();
  const added = splitBefore &&
    splitRunning && {
      anon: splitRunning.anon - splitBefore.anon,
      file: splitRunning.file - splitBefore.file,
    };
  console.log(JSON.stringify({ before, running, at, events, added }));
  process.exit(0);
}

export function runMemory(opts) {
  const total = sized(opts, 10_000, 1000, 100);
  const r = runChild(fileURLToPath(import.meta.url), ['--child', String(total)], { nodeArgs: ['--expose-gc'] });
  const checkpoints = Object.entries(r.at).map(([n, v]) => ({ detections: Number(n), rssMiB: round(v, 1) }));
  return {
    rssWithoutMiB: round(r.before, 1),
    rssRunningMiB: round(r.running, 1),
    addedMiB: round(r.running - r.before, 2),
    // null where /proc/self/status is not there (not Linux).
    addedAnonMiB: r.added ? round(r.added.anon, 2) : null,
    addedFileMiB: r.added ? round(r.added.file, 2) : null,
    detections: r.events,
    checkpoints,
    growthMiB: round(checkpoints.at(-1).rssMiB - checkpoints[0].rssMiB, 2),
  };
}
