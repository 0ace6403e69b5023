// loop-helpers/test: blocking as a test failure, for any test runner.
//
// assertNoBlocking(fn) runs fn under a BlockingDetector of its own and attributes each block to
// fn or not by async context: an async hook propagates an owner from fn's synchronous call to every
// async resource created under it (promise reactions after an await, timers, ticks, I/O callbacks),
// and records, on a timeline, when code of that owner starts and stops running. A block is fn's
// when fn's code ran for at least half the budget within it. The detector's stack samples are
// taken on the blocked thread at known monotonic times: the error shows one taken while fn's code
// ran.

import { createHook, executionAsyncResource } from 'node:async_hooks';
import { BlockingDetector } from './detector';
import { argError, describe } from './errors';
import { fingerprint } from './fingerprint';
import { native } from './native';
import { stackText } from './stack-text';
import type { BlockEvent, StackFrame } from './types';

/** Options of {@link assertNoBlocking}. */
export interface AssertNoBlockingOptions {
  /**
   * The longest the event loop may stay blocked, in milliseconds, while `fn` and its async
   * continuations run: from 1 to 86,400,000. Default 100. As with a detector's `timeout`, a block
   * of at least 1.05 x the budget always counts and one of at most 0.9 x never does.
   */
  budgetMs?: number;
  /** What to call `fn` in the error message. Default: `fn.name`, or `fn` for an anonymous one. */
  name?: string;
}

/** A block found by {@link assertNoBlocking}. */
export class BlockingError extends Error {
  /** Always `ERR_LOOP_HELPERS_BLOCKING`. */
  readonly code = 'ERR_LOOP_HELPERS_BLOCKING';
  /** How long the longest of the blocks lasted, in milliseconds. */
  readonly durationMs: number;
  /** The budget that was exceeded, in milliseconds. */
  readonly budgetMs: number;
  /**
   * A stable hash of the blocking code, computed as `BlockEvent.fingerprint` (function names and
   * machine-independent files of the innermost application frames; line numbers only for anonymous
   * functions): the same blocking code gives the same fingerprint from run to run and on every
   * machine, the one production logs give it. 16 hex digits; empty without a stack.
   */
  readonly fingerprint: string;
  /** The blocking code's stack, innermost frame first (source-mapped where Node.js maps stacks). */
  readonly frames: StackFrame[];
  /** Every block of `fn`, longest first: the detector's events. */
  readonly blocks: BlockEvent[];

  /** @internal */
  constructor(what: string, budgetMs: number, blocks: BlockEvent[], frames: StackFrame[]) {
    super(what);
    this.name = 'BlockingError';
    this.budgetMs = budgetMs;
    this.blocks = blocks;
    this.durationMs = blocks[0]?.durationMs ?? 0;
    this.frames = frames;
    this.fingerprint = fingerprint(frames) ?? '';
    // The stack is the blocking code's, not that of the code that noticed the block, from the
    // application's innermost frame (a sample often lands in Node's own code that it called,
    // such as performance.now(); `frames` keeps those). Formatted by the installed
    // Error.prepareStackTrace, so that a test runner's source maps apply; the message names the
    // innermost frame at the position that formatting gave it.
    const app = frames.findIndex(isApplicationFrame);
    const shown = app > 0 ? frames.slice(app) : frames;
    const body = stackText(this.name, '', shown).split('\n').slice(1);
    const top = /^ {4}at (?:(.*) \()?(.*?)\)?$/.exec(body[0] ?? '');
    const where = top
      ? ` by ${top[1] ?? '<anonymous>'} (${(top[2] ?? '').replace(/:\d+$/, '')})`
      : ' (no stack: blocked inside native code, or no stack capture on this Node.js)';
    const more = blocks.length > 1 ? `, and ${blocks.length - 1} more block${blocks.length > 2 ? 's' : ''}` : '';
    this.message = `the event loop was blocked for ${this.durationMs.toFixed(1)} ms (budget ${budgetMs} ms)${where}, while ${what} ran${more}`;
    this.stack = [`${this.name}: ${this.message}`, ...body].join('\n');
  }
}
BlockingError.prototype.name = 'BlockingError';

// ---------------------------------------------------------------------------------------------
// Async-context attribution.

/** One assertNoBlocking call; nested calls have a parent. */
interface Owner {
  readonly parent: Owner | undefined;
}

const hrtime = () => process.hrtime.bigint();

/** The owner of every async resource created while an owner's code ran. */
let owners = new WeakMap<object, Owner>();
/** The owner whose code runs now (undefined: code of no assertion). */
let current: Owner | undefined;
/** Owners to return to when the running callbacks end. */
let saved: (Owner | undefined)[] = [];

/**
 * When the running owner changed (monotonic ns), and to what. Entries before `head` are dropped.
 * Each change is read as: the clock (`ends`: the previous owner's stretch ends), the thread's CPU
 * wait (`waits`), the clock again (`times`: the next owner's stretch starts). The thread can be
 * paused between those reads, for long on a loaded machine (a thread at the lowest priority beside
 * a busy loop: hundreds of ms); that pause lies between the two clock readings, so it is in no
 * owner's stretch, and the wait around it only ever lowers a stretch's held time. (With one clock
 * read after the wait, a pause there was charged to the owner whose code had just finished.)
 */
let times: bigint[] = [];
let ends: bigint[] = [];
let whos: (Owner | undefined)[] = [];
/**
 * The thread's CPU wait at each change (ns since it started; -1: not known): on a loaded machine
 * the thread may wait for a CPU in the middle of an owner's code, and that time is not the owner's
 * blocking (a 5 ms callback kept off the CPU for 30 ms did not block for 35).
 */
let waits: number[] = [];
const cpuWait = (): number => native().threadCpuWaitNs();
let head = 0;
/** The owner before the first kept entry. */
let base: Owner | undefined;
/** Entries older than this are dropped (a block is delivered a few ms after it ended). */
const KEEP_NS = 30_000_000_000n;

function mark(next: Owner | undefined): void {
  if (next === current) return;
  current = next;
  ends.push(hrtime());
  waits.push(cpuWait());
  times.push(hrtime());
  whos.push(next);
  if (times.length - head > 65_536) prune();
}

function prune(): void {
  const cut = hrtime() - KEEP_NS;
  while (head < times.length - 1 && (times[head] as bigint) < cut) base = whos[head++];
  if (head > 32_768) {
    times = times.slice(head);
    ends = ends.slice(head);
    whos = whos.slice(head);
    waits = waits.slice(head);
    head = 0;
  }
}

/** Which owner's code ran at monotonic time `t`. */
function ownerAt(t: bigint): Owner | undefined {
  let lo = head;
  let hi = times.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if ((times[mid] as bigint) <= t) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found < 0 ? base : whos[found];
}

const within = (o: Owner | undefined, of: Owner): boolean => {
  for (let x = o; x !== undefined; x = x.parent) if (x === of) return true;
  return false;
};

/**
 * Nanoseconds during which `of`'s code held the thread between `from` and `to`: the time it ran,
 * less the time the thread waited for a CPU meanwhile (where that is known). The wait between two
 * owner changes is known as a whole; a part of such a stretch gets its share of it.
 */
function ownedNs(of: Owner, from: bigint, to: bigint): bigint {
  let total = 0;
  /** `of`'s part of stretch `i` (from change i - 1 to change i, or to now) within [from, to]. */
  const part = (i: number, a: bigint, b: bigint): void => {
    const start = i > head ? (times[i - 1] as bigint) : from;
    // The last stretch lasts until now (the wait is read now).
    const end = i < times.length ? (ends[i] as bigint) : hrtime();
    const lo = start > a ? start : a;
    const hi = end < b ? end : b;
    if (hi <= lo) return;
    const span = Number(hi - lo);
    let wait = 0;
    const w0 = waits[i - 1] ?? -1;
    const w1 = i < waits.length ? (waits[i] as number) : cpuWait();
    if (i > head && w0 >= 0 && w1 >= w0 && end > start) wait = ((w1 - w0) * span) / Number(end - start);
    total += Math.max(0, span - wait);
  };
  let who = ownerAt(from);
  let i = head;
  while (i < times.length && (times[i] as bigint) <= from) i++;
  for (; i < times.length; i++) {
    const at = times[i] as bigint;
    if (at >= to) break;
    if (within(who, of)) part(i, from, to);
    who = whos[i];
  }
  if (within(who, of)) part(i, from, to);
  return BigInt(Math.round(total));
}

const hook = createHook({
  init(_asyncId, _type, _trigger, resource) {
    if (current !== undefined) owners.set(resource, current);
  },
  before() {
    saved.push(current);
    mark(owners.get(executionAsyncResource()));
  },
  after() {
    mark(saved.pop());
  },
});

let users = 0;

function acquireTracking(): void {
  if (users++ > 0) return;
  ends = [hrtime()];
  waits = [cpuWait()];
  times = [hrtime()];
  whos = [undefined];
  head = 0;
  base = undefined;
  current = undefined;
  saved = [];
  hook.enable();
}

function releaseTracking(): void {
  if (--users > 0) return;
  hook.disable();
  // An uncaught exception can skip `after` hooks: start clean next time.
  owners = new WeakMap();
  saved = [];
  current = undefined;
  times = [];
  whos = [];
  waits = [];
  ends = [];
  head = 0;
}

/**
 * Whether a block of the detector's was `owner`'s: `owner`'s code ran for at least half the budget
 * within it (between `from` and `to`, while the assertion ran). Returns the frames of a stack
 * sample taken while `owner`'s code ran, `[]` when none was (a block inside one native call,
 * sampled after it; no stack capture here), or undefined when the block is not `owner`'s.
 */
function judge(event: BlockEvent, owner: Owner, budgetNs: bigint, from: bigint, to: bigint): StackFrame[] | undefined {
  const start = BigInt(Math.round(event.startHrtimeMs * 1e6));
  const end = start + BigInt(Math.round(event.durationMs * 1e6));
  const a = start > from ? start : from;
  const b = end < to ? end : to;
  if (b <= a || ownedNs(owner, a, b) * 2n < budgetNs) return undefined;
  let fallback: StackFrame[] | undefined;
  // The owner's samples that name application code, by their innermost application frame.
  const places = new Map<string, { frames: StackFrame[]; count: number }>();
  for (const s of event.samples) {
    if (s.sampleDelayMs === null || s.frames === null) continue;
    // Where the sample was taken: blockedMs after the start when the monitor asked, plus the delay
    // until V8 ran the sampler on the blocked thread.
    const at = start + BigInt(Math.round((s.blockedMs + s.sampleDelayMs) * 1e6));
    if (!within(ownerAt(at), owner)) continue;
    // A sample with none of the application's frames landed in Node's code between callbacks or
    // in this module's own hook (a thread paused while it marks a change of owner is sampled
    // there when it resumes): a later sample of the block names the code, if there is one.
    const top = s.frames.find(isApplicationFrame);
    if (top === undefined) {
      fallback ??= s.frames;
      continue;
    }
    // By function (a loop over several lines is one place); anonymous functions by line too.
    const key = `${top.fileName}:${top.functionName || top.lineNumber}`;
    const place = places.get(key);
    if (place) place.count++;
    else places.set(key, { frames: s.frames, count: 1 });
  }
  // The place most samples found (the first of equals): where the block spent its time. The first
  // sample alone can be of the code before it, where a loaded machine held the thread off the CPU
  // at the deadline (seen in CI: a handler's `await sleep(5)` named instead of its 150 ms spin).
  let best: { frames: StackFrame[]; count: number } | undefined;
  for (const place of places.values()) if (best === undefined || place.count > best.count) best = place;
  return best?.frames ?? fallback ?? [];
}

// ---------------------------------------------------------------------------------------------
// The assertion.

const KNOWN = ['budgetMs', 'name'] as const;
const DEFAULT_BUDGET_MS = 100;

function resolve(fn: unknown, options: unknown): { budgetMs: number; name: string } {
  if (typeof fn !== 'function') {
    throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "fn" argument must be a function. Received ${describe(fn)}`);
  }
  if (options === undefined) return { budgetMs: DEFAULT_BUDGET_MS, name: fn.name || 'fn' };
  if (typeof options !== 'object' || options === null) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument must be an object. Received ${describe(options)}`,
    );
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(KNOWN as readonly string[]).includes(key)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `Unknown assertNoBlocking option "${key}". Known options: ${KNOWN.join(', ')}`,
      );
    }
  }
  let budgetMs = DEFAULT_BUDGET_MS;
  if (o.budgetMs !== undefined) {
    if (typeof o.budgetMs !== 'number') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `The "budgetMs" option must be a number of milliseconds. Received ${describe(o.budgetMs)}`,
      );
    }
    if (!(o.budgetMs >= 1 && o.budgetMs <= 86_400_000)) {
      throw argError(
        'range',
        'ERR_OUT_OF_RANGE',
        `The "budgetMs" option must be from 1 to 86400000 (milliseconds). Received ${describe(o.budgetMs)}`,
      );
    }
    budgetMs = o.budgetMs;
  }
  let name = fn.name || 'fn';
  if (o.name !== undefined) {
    if (typeof o.name !== 'string') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `The "name" option must be a string. Received ${describe(o.name)}`,
      );
    }
    name = o.name;
  }
  return { budgetMs, name };
}

/**
 * Runs `fn` and checks that the event loop was never blocked for `budgetMs` or more by `fn` or
 * by its async continuations (code after an `await` in it, timers, ticks and callbacks it
 * started), until the promise it returned settled.
 *
 * Resolves with `fn`'s value; rejects with `fn`'s own error if it throws or rejects; otherwise,
 * if it blocked, rejects with a {@link BlockingError} whose `.stack` is the blocking code's stack.
 * Blocks of other code running at the same time (a neighbouring test's, the runner's) do not
 * count: each block is attributed by async context (see docs/testing.md). Works under any test runner
 * that awaits a returned promise: node:test, ava, Vitest, Jest, Mocha.
 *
 * @example
 * ```ts
 * import { assertNoBlocking } from 'loop-helpers/test';
 * test('the handler does not block', async () => {
 *   await assertNoBlocking(() => handler(request), { budgetMs: 50 });
 * });
 * ```
 */
export async function assertNoBlocking<T>(
  fn: () => T | PromiseLike<T>,
  options?: AssertNoBlockingOptions,
): Promise<Awaited<T>> {
  const { budgetMs, name } = resolve(fn, options);
  const owner: Owner = { parent: current };
  const mine: { event: BlockEvent; frames: StackFrame[] }[] = [];
  const budgetNs = BigInt(Math.round(budgetMs * 1e6));
  let from = 0n;
  let to: bigint | undefined;
  const detector = new BlockingDetector({
    timeout: budgetMs / 1000,
    raiseExc: false,
    log: false,
    // Judged at delivery, while the timeline around the block is surely still kept.
    onBlocked: (event) => {
      const frames = judge(event, owner, budgetNs, from, to ?? hrtime());
      if (frames) mine.push({ event, frames });
    },
  });
  acquireTracking();
  let value: Awaited<T>;
  try {
    detector.start();
    from = hrtime();
    let result: T | PromiseLike<T>;
    saved.push(current);
    mark(owner);
    try {
      result = fn();
    } finally {
      mark(saved.pop());
    }
    try {
      value = await result;
    } finally {
      to = hrtime();
    }
    await detector.drain();
  } finally {
    detector.stop();
    releaseTracking();
  }
  if (mine.length === 0) return value;
  mine.sort((a, b) => b.event.durationMs - a.event.durationMs);
  const [worst] = mine as [(typeof mine)[number], ...typeof mine];
  const { event } = worst;
  // A block inside one native call has no sample in fn's code: show the first sample taken after it.
  const frames = worst.frames.length > 0 ? worst.frames : (event.samples.find((s) => s.frames !== null)?.frames ?? []);
  throw new BlockingError(
    name,
    budgetMs,
    mine.map((m) => m.event),
    frames,
  );
}

// ---------------------------------------------------------------------------------------------
// Frames.

const ownDir = require('node:path').join(__dirname, '..') as string;

/** Not Node.js's own code and not this package's. */
function isApplicationFrame(f: StackFrame): boolean {
  return f.fileName !== '' && !f.fileName.startsWith('node:') && !f.fileName.startsWith(ownDir);
}
