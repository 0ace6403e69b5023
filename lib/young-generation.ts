// How big V8's young generation may grow in a forked child: what makes a forked worker's memory its
// own is mostly what it allocates, and V8 grows a busy process's young generation many times over
// (to 128 MiB on Node.js 24 serving HTTP with a 300 MB heap). Both controls below change one V8
// flag, `--semi-space-growth-factor`, which V8 reads when a collection of the young generation ends
// and it decides whether to grow that generation. No other state depends on it, so it can change
// between two collections (unlike the flags that change how a collection runs); nothing else reads
// it while this JavaScript runs (collections stop the thread), and a forked child runs no other
// isolate (fork() refuses while a Worker lives). V8 raises values under 2 to 2 when it parses its
// flags at start-up, not at run time: the tests measure the young generation's size (Node.js 20,
// 22, 24 and 26).
import { argError, describe } from './errors';

/** The largest `maxYoungGenerationMiB` accepted (V8's own limit is far below it). */
const MAX_MIB = 65_536;

/** The growth factor V8 uses unless the command line set one (V8's default, Node.js 20-26). */
const V8_DEFAULT_GROWTH = 2;

const setFlags = (flags: string): void => (require('node:v8') as typeof import('node:v8')).setFlagsFromString(flags);

/** The young generation's size now (MiB), as `v8.getHeapSpaceStatistics()` reports `new_space`. */
function youngGenerationMiB(): number | undefined {
  const space = (require('node:v8') as typeof import('node:v8'))
    .getHeapSpaceStatistics()
    .find((s) => s.space_name === 'new_space');
  return space === undefined ? undefined : space.space_size / 1048576;
}

/** `fixedYoungGeneration`: the young generation keeps its size from now on. */
export function fixYoungGeneration(): void {
  setFlags('--semi-space-growth-factor=1');
}

/**
 * The growth factor this process started with: the last `--semi-space-growth-factor` of its
 * command line or NODE_OPTIONS, else V8's default.
 */
function startupGrowthFactor(): number {
  const args = [...(process.env.NODE_OPTIONS ?? '').split(/\s+/), ...process.execArgv];
  let factor = V8_DEFAULT_GROWTH;
  for (const a of args) {
    const m = /^--semi[-_]space[-_]growth[-_]factor=(\d+)$/.exec(a);
    if (m) factor = Number(m[1]);
  }
  return Math.max(factor, V8_DEFAULT_GROWTH);
}

/**
 * `maxYoungGenerationMiB`: the young generation grows as V8 decides while one more growth step
 * stays within `maxMiB`, and then keeps its size (growth factor 1); should V8 shrink it again, it
 * may grow again. Checked after every garbage collection, when the event loop next turns (a
 * PerformanceObserver of 'gc' entries): one synchronous burst of allocation can take it a step or
 * more past the limit before the check, and there it stays until V8 shrinks it.
 *
 * Runs in the forked child. In a prefork() template, which never turns its loop, it is inherited by
 * each worker forked from it, whose loop runs it.
 */
export function capYoungGeneration(maxMiB: number): void {
  const { PerformanceObserver } = require('node:perf_hooks') as typeof import('node:perf_hooks');
  const growth = startupGrowthFactor();
  let held = false;
  const check = (): void => {
    const size = youngGenerationMiB();
    if (size === undefined) return;
    // Held once one more growth step would pass the limit: V8 doubles the young generation when it
    // grows it (Node.js 20-24), and Node.js 26's V8 commits the grown size gradually after the
    // collection that decided it, so the size read here may not yet show the last step.
    const atLimit = size * growth > maxMiB;
    if (atLimit === held) return;
    setFlags(`--semi-space-growth-factor=${atLimit ? 1 : growth}`);
    held = atLimit;
  };
  new PerformanceObserver(check).observe({ entryTypes: ['gc'] });
  check();
}

/**
 * A `maxYoungGenerationMiB` option: null or undefined (no limit), or a whole number of MiB from 1
 * to 65,536; else an error naming the option (of `owner`) and the value.
 */
export function validateYoungGenerationMiB(v: unknown, owner?: string): number | null {
  if (v === undefined || v === null) return null;
  const name = `The "maxYoungGenerationMiB" option${owner ? ` of ${owner}` : ''}`;
  if (typeof v !== 'number') {
    throw argError('type', 'ERR_INVALID_ARG_TYPE', `${name} must be a number or null. Received ${describe(v)}`);
  }
  if (!Number.isInteger(v) || v < 1 || v > MAX_MIB) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `${name} must be a whole number of MiB from 1 to ${MAX_MIB}. Received ${String(v)}`,
    );
  }
  return v;
}
