// Loop overhead of a running detector: an empty setImmediate ping-pong of N turns, with and without a
// detector, alternated (A B A B ...) in fresh child processes; medians and the ratio.
//   node bench/overhead.mjs [--quick]
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const turns = quick ? 200_000 : 1_000_000;
const rounds = quick ? 3 : 7;

if (process.argv[2] === '--child') {
  const mode = process.argv[3];
  if (mode !== 'none') {
    const { BlockingDetector } = await import('../dist/index.js').then((m) => m.default ?? m);
    new BlockingDetector({ timeout: Number(mode), raiseExc: false, log: false }).start();
  }
  const n = Number(process.argv[4]);
  await new Promise((r) => setTimeout(r, 20));
  const t0 = process.hrtime.bigint();
  let i = 0;
  await new Promise((resolve) => {
    const step = () => (++i < n ? setImmediate(step) : resolve());
    setImmediate(step);
  });
  console.log(Number(process.hrtime.bigint() - t0) / n);
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const run = (mode) =>
  Number(spawnSync(process.execPath, [self, '--child', mode, String(turns)], { encoding: 'utf8' }).stdout);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const modes = ['none', '0.05', '1'];
const times = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < rounds; r++) for (const m of modes) times[m].push(run(m));
const base = median(times.none);
console.log(`| configuration | ns per turn (median of ${rounds}) | ratio |`);
console.log('|---|---|---|');
for (const m of modes) {
  const label = m === 'none' ? 'no detector' : `detector, timeout ${m} s, raiseExc: false`;
  console.log(`| ${label} | ${median(times[m]).toFixed(0)} | ${(median(times[m]) / base).toFixed(3)} |`);
}
