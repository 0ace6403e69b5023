// Small statistics and process helpers shared by the benchmark cases.
import { spawnSync } from 'node:child_process';

export const median = (xs) => percentile(xs, 50);

export function percentile(xs, p) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same sequence in [0, 1). */
export function mulberry32(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The 95% interval of the median of `xs` by the bootstrap (`resamples` resamplings with
 * replacement, from a fixed seed so that the same figures give the same interval): `[lo, hi]`, or
 * null for fewer than two values.
 */
export function medianInterval(xs, { resamples = 2000, seed = 1 } = {}) {
  if (xs.length < 2) return null;
  const random = mulberry32(seed);
  const medians = [];
  for (let i = 0; i < resamples; i++) {
    medians.push(median(Array.from(xs, () => xs[Math.floor(random() * xs.length)])));
  }
  return [percentile(medians, 2.5), percentile(medians, 97.5)];
}

/**
 * The mean of the fastest third of `xs` (at least one value), or null for none. What a loop cost
 * is judged by: on these VMs a run goes at one of two speeds whatever its configuration (Node 24
 * ping-pong: ~2.55 or ~3.6 µs per turn; the slow runs come in bursts of minutes), and the share of
 * slow runs differs between configurations by chance, which moves a median by up to 40%; the
 * fastest third is runs at the normal speed in every configuration that had at least a third.
 */
export function fastMean(xs) {
  if (xs.length === 0) return null;
  const k = Math.max(1, Math.ceil(xs.length / 3));
  return (
    [...xs]
      .sort((a, b) => a - b)
      .slice(0, k)
      .reduce((a, b) => a + b, 0) / k
  );
}

/**
 * `fastMean(a) / fastMean(b)` with its 95% interval by the bootstrap (both samples resampled
 * independently, from a fixed seed): `{ ratio, interval }`, interval null below two values each.
 */
export function fastRatio(a, b, { resamples = 2000, seed = 1 } = {}) {
  const ratio = fastMean(a) / fastMean(b);
  if (a.length < 2 || b.length < 2) return { ratio, interval: null };
  const random = mulberry32(seed);
  const pick = (xs) => Array.from(xs, () => xs[Math.floor(random() * xs.length)]);
  const ratios = [];
  for (let i = 0; i < resamples; i++) ratios.push(fastMean(pick(a)) / fastMean(pick(b)));
  return { ratio, interval: [percentile(ratios, 2.5), percentile(ratios, 97.5)] };
}

export const max = (xs) => (xs.length ? Math.max(...xs) : null);

export const round = (x, digits = 2) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));

/** Runs `node <file> ...args` and parses the last line of its stdout as JSON. */
export function runChild(file, args, { nodeArgs = [], timeout = 600_000 } = {}) {
  const r = spawnSync(process.execPath, [...nodeArgs, file, ...args], {
    encoding: 'utf8',
    timeout,
    maxBuffer: 64 << 20,
  });
  const last = r.stdout.trim().split('\n').pop();
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`${file} ${args.join(' ')} failed (status ${r.status}):\n${r.stderr.slice(-2000)}`);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * A case's setting for the size of the run: the full run's, `--quick`'s, or `--smoke`'s (every
 * case once at its smallest: it shows that the benchmark runs; its figures mean nothing).
 */
export const sized = ({ quick, smoke }, full, quickValue, smokeValue = quickValue) =>
  smoke ? smokeValue : quick ? quickValue : full;
