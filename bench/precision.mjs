// Precision of BlockingDetector on real blocks: detection rate by block length, false positives,
// start and duration error, and latency from the deadline to the warning.
//   node bench/precision.mjs [--quick]
// Each timeout runs in its own child process; blocks are spins timed on process.hrtime.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const timeouts = quick ? [0.05, 0.2] : [0.05, 0.2, 1];
const factors = [0.5, 0.9, 1.05, 1.5, 3];
const trials = quick ? 5 : 20;

if (process.argv[2] === '--child') {
  const { BlockingDetector } = await import('../dist/index.js').then((m) => m.default ?? m);
  const T = Number(process.argv[3]);
  const plan = JSON.parse(process.argv[4]);
  const events = [];
  const spins = [];
  const d = new BlockingDetector({ timeout: T, raiseExc: false, log: false, aggressive: false }).start();
  d.on('blocked', (e) =>
    events.push({
      start: e.startHrtime.toString(),
      duration: e.duration,
      detectedAt: e.samples[0]?.detectedAt,
      startTime: e.startTime,
      sampleDelayMs: e.samples[0]?.sampleDelayMs,
    }),
  );
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  for (const ms of plan) {
    await sleep(30 + Math.random() * 50);
    await new Promise((resolve) =>
      setTimeout(() => {
        const s = process.hrtime.bigint();
        const end = s + BigInt(Math.round(ms * 1e6));
        while (process.hrtime.bigint() < end);
        spins.push({ start: s.toString(), ms: Number(process.hrtime.bigint() - s) / 1e6 });
        setImmediate(resolve);
      }, 1),
    );
  }
  await sleep(50);
  d.stop();
  console.log(JSON.stringify({ events, spins }));
  process.exit(0);
}

const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const f = (x) => (Number.isFinite(x) ? x.toFixed(2) : '-');
const max = (xs) => (xs.length ? Math.max(...xs) : NaN);
const rows = [];
for (const T of timeouts) {
  const plan = [];
  for (let i = 0; i < trials; i++) for (const k of factors) plan.push(T * 1000 * k);
  plan.sort(() => Math.random() - 0.5);
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [self, '--child', String(T), JSON.stringify(plan)], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  const { events, spins } = JSON.parse(r.stdout.trim().split('\n').pop());
  for (const k of factors) {
    const nominal = T * 1000 * k;
    const these = spins.filter(
      (s) => Math.abs(s.ms - nominal) < nominal * 0.02 + 1 || (s.ms >= nominal && s.ms < nominal + 5),
    );
    const startErr = [];
    const durErr = [];
    const latency = [];
    let detected = 0;
    for (const s of these) {
      const gap = (ev) => Math.abs(Number(BigInt(ev.start) - BigInt(s.start)) / 1e6);
      const e = events.reduce((best, ev) => (!best || gap(ev) < gap(best) ? ev : best), undefined);
      if (!e || gap(e) >= s.ms / 2) continue;
      detected++;
      startErr.push(Math.abs(Number(BigInt(e.start) - BigInt(s.start)) / 1e6));
      durErr.push(Math.abs(e.duration - s.ms));
      latency.push(e.detectedAt + (e.sampleDelayMs ?? 0) - (e.startTime + T * 1000));
    }
    rows.push({ T, k, n: these.length, detected, startErr, durErr, latency });
  }
}
console.log(
  '| timeout | block | trials | reported | start err p50/max ms | duration err p50/max ms | deadline->warning p50/p99 ms |',
);
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.T * 1000} ms | ${r.k} x | ${r.n} | ${r.detected} | ${f(pct(r.startErr, 50))} / ${f(max(r.startErr))} | ${f(pct(r.durErr, 50))} / ${f(max(r.durErr))} | ${f(pct(r.latency, 50))} / ${f(pct(r.latency, 99))} |`,
  );
}
