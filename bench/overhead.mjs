// Loop overhead of a running detector, alternated (A B A B ...) in fresh child processes; medians
// and ratios to no detector.
//   node bench/overhead.mjs [--quick]
// Workloads: an empty setImmediate ping-pong (one loop turn per callback: the heartbeat's worst
// case), N timers due at once (timer callbacks) and a process.nextTick chain (tick callbacks).
// Detect-only mode is `raiseExc: false`; interrupt mode (the default raiseExc) also guards every
// timer, immediate and tick callback.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const rounds = quick ? 3 : 7;
const N = {
  immediate: quick ? 200_000 : 1_000_000,
  timeout: quick ? 100_000 : 500_000,
  tick: quick ? 200_000 : 1_000_000,
};

if (process.argv[2] === '--child') {
  const [, , , mode, workload, n] = process.argv;
  if (mode !== 'none') {
    const { BlockingDetector } = await import('../dist/index.js').then((m) => m.default ?? m);
    const [kind, timeout] = mode.split(':');
    new BlockingDetector({
      timeout: Number(timeout),
      raiseExc: kind === 'detect' ? false : undefined,
      log: false,
    }).start();
  }
  await new Promise((r) => setTimeout(r, 20));
  const total = Number(n);
  const t0 = process.hrtime.bigint();
  let i = 0;
  await new Promise((resolve) => {
    if (workload === 'timeout') {
      // A timer-heavy loop: N timers due at the same time, each callback run by listOnTimeout.
      const cb = () => ++i === total && resolve();
      for (let k = 0; k < total; k++) setTimeout(cb, 1);
      return;
    }
    const schedule = { immediate: setImmediate, tick: process.nextTick }[workload];
    const step = () => (++i < total ? schedule(step) : resolve());
    schedule(step);
  });
  console.log(Number(process.hrtime.bigint() - t0) / total);
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const run = (mode, workload) =>
  Number(
    spawnSync(process.execPath, [self, '--child', mode, workload, String(N[workload])], { encoding: 'utf8' }).stdout,
  );
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const modes = [
  ['none', 'no detector'],
  ['detect:0.05', 'detect-only, timeout 0.05 s'],
  ['detect:1', 'detect-only, timeout 1 s'],
  ['interrupt:1', 'interrupt mode, timeout 1 s'],
];
console.log(`| workload | configuration | ns per callback (median of ${rounds}) | ratio | added ns |`);
console.log('|---|---|---|---|---|');
for (const workload of ['immediate', 'timeout', 'tick']) {
  const times = Object.fromEntries(modes.map(([m]) => [m, []]));
  for (let r = 0; r < rounds; r++) for (const [m] of modes) times[m].push(run(m, workload));
  const base = median(times.none);
  for (const [m, label] of modes) {
    const t = median(times[m]);
    console.log(`| ${workload} | ${label} | ${t.toFixed(0)} | ${(t / base).toFixed(3)} | ${(t - base).toFixed(0)} |`);
  }
}
