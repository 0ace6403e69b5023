// Precision: real blocks (spins in timer callbacks) of 0.5x to 3x the timeout, observed by every
// peer at once in the same process. Child mode: `node precision.mjs --child <T> <trials>`.
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { max, median, nowMs, percentile, round, runChild, sized, sleep } from '../lib/stats.mjs';

export const FACTORS = [0.5, 0.9, 1.05, 1.5, 3];
const detectors = Object.entries(PEERS).filter(([, p]) => !p.overheadOnly);

if (process.argv[2] === '--child') {
  const T = Number(process.argv[3]);
  const trials = Number(process.argv[4]);
  const reports = [];
  const stops = detectors.map(([name, p]) => p.start(T, (r) => reports.push({ peer: name, ...r })));
  await sleep(300);
  const plan = [];
  for (let i = 0; i < trials; i++) for (const k of FACTORS) plan.push(k);
  plan.sort(() => Math.random() - 0.5);
  const blocks = [];
  for (const k of plan) {
    const target = T * 1000 * k;
    // The spin should be the whole block, so the loop waits before it and after it. A block is
    // the time the loop goes without waiting: work that runs next to the spin with no wait in
    // between is part of it. With a 1 ms timer, the previous turn's tail (this loop's own
    // continuation, the peers' hooks) often ran past the timer's due time, libuv's next poll did
    // not wait, and loop-helpers rightly measured that tail too: traces showed its start 2.4-4.6
    // ms before the spin's, with libuv's idle counter frozen from then on. Other work can still
    // share a spin's busy period (a peer's timer falling due during it, a GC task), and the
    // duration error then counts it.
    const block = await new Promise((resolve) =>
      setTimeout(() => {
        const startMs = nowMs();
        while (nowMs() - startMs < target);
        const b = { k, startMs, durationMs: nowMs() - startMs };
        setTimeout(() => resolve(b), 5);
      }, 10),
    );
    // Let every peer see the loop turn and report, then read the metrics-only ones.
    await sleep(Math.max(2 * T * 1000, 120));
    for (const s of stops) s.poll?.();
    const windowEnd = nowMs();
    block.reports = reports.filter((r) => r.atMs >= block.startMs && r.atMs <= windowEnd);
    reports.length = 0;
    blocks.push(block);
    await sleep(Math.max(T * 1000, 60));
  }
  await Promise.all(stops.map((s) => s()));
  console.log(JSON.stringify({ T, blocks }));
  process.exit(0);
}

export function runPrecision(opts) {
  const plan = sized(
    opts,
    [
      [0.05, 20],
      [0.2, 20],
      [1, 5],
    ],
    [
      [0.05, 3],
      [0.2, 3],
    ],
    [[0.05, 1]],
  );
  const rows = [];
  for (const [T, trials] of plan) {
    const { blocks } = runChild(fileURLToPath(import.meta.url), ['--child', String(T), String(trials)]);
    for (const [peer, p] of detectors) {
      for (const k of FACTORS) {
        const these = blocks.filter((b) => b.k === k);
        const found = these.map((b) => ({ b, r: b.reports.find((r) => r.peer === peer) })).filter((x) => x.r);
        const durErr = found
          .filter((x) => x.r.durationMs !== null)
          .map((x) => Math.abs(x.r.durationMs - x.b.durationMs));
        const startErr = found.filter((x) => x.r.startMs !== null).map((x) => Math.abs(x.r.startMs - x.b.startMs));
        const latency = found.map((x) => x.r.atMs - (x.b.startMs + T * 1000));
        rows.push({
          peer,
          label: p.label,
          timeoutMs: T * 1000,
          factor: k,
          trials: these.length,
          reported: found.length,
          rate: these.length ? found.length / these.length : null,
          startErrMaxMs: round(max(startErr)),
          durationErrMedianMs: round(median(durErr)),
          durationErrMaxMs: round(max(durErr)),
          latencyP50Ms: round(percentile(latency, 50)),
          latencyP99Ms: round(percentile(latency, 99)),
        });
      }
    }
  }
  return rows;
}
