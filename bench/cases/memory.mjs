// Memory: RSS without and with a running detector, and after 10,000 detections (no growth).
// Child mode: `node --expose-gc memory.mjs --child <detections>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { round, runChild, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const mib = () => {
  globalThis.gc?.();
  return process.memoryUsage().rss / 1048576;
};

if (process.argv[2] === '--child') {
  const total = Number(process.argv[3]);
  await sleep(100);
  const before = mib();
  const { BlockingDetector } = require('../../dist/index.js');
  const d = new BlockingDetector({ timeout: 0.002, raiseExc: false, log: false, aggressive: false }).start();
  let events = 0;
  d.on('blocked', () => events++);
  await sleep(100);
  const running = mib();
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
  console.log(JSON.stringify({ before, running, at, events }));
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
    detections: r.events,
    checkpoints,
    growthMiB: round(checkpoints.at(-1).rssMiB - checkpoints[0].rssMiB, 2),
  };
}
