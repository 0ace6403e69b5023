// Validation of BlockingDetector's options. Every error names the option and the value.

import { type AsyncContextOption, type ResolvedAsyncContext, resolveAsyncContext } from './async-context';
import { argError, describe, validateBoolean, validateMs } from './errors';
import type { BlockEvent } from './types';

/** An Error subclass (or Error itself) that can be raised with a message. */
export type ErrorClass = new (message?: string) => Error;

/** What to interrupt blocking code with: a class to instantiate, an instance, or nothing. */
export type RaiseExc = ErrorClass | Error | false | null;

/**
 * Where blocking code is interrupted: `'everywhere'` (timers, promise reactions, I/O callbacks, top
 * level, and inside `run()`/`wrap()`), or `'guarded'` (only inside `run()`/`wrap()`).
 */
export type InterruptScope = 'everywhere' | 'guarded';

/** How warnings are written while the loop is blocked. */
export type LogOption = boolean | 'text' | 'json' | ((report: string) => void);

export interface BlockingDetectorOptions {
  /** Seconds the loop may stay blocked before it is reported: 0.001 to 86400. Default 1. */
  timeout?: number;
  /**
   * What blocking code is interrupted with: an Error class (instantiated with
   * `blocking detected after timeout=<timeout>`), an Error instance (thrown as is), or
   * `false`/`null` to only log. Default {@link AlarmInterrupt}. See docs/interrupts.md
   * for where blocking code can be interrupted.
   */
  raiseExc?: RaiseExc;
  /**
   * Where `raiseExc` is thrown, when it is set.
   * - `'everywhere'` (default): in whatever code blocks, as in gevent-helpers: timer, immediate,
   *   nextTick and queueMicrotask callbacks (through guards that cost ~50-100 ns per callback while
   *   the detector runs), promise reactions, I/O callbacks, top-level code, and `run()`/`wrap()`.
   * - `'guarded'`: only inside `run()`/`wrap()`; every other block is reported and left to finish.
   *   No per-callback cost beyond detection: the production recipe is to warn everywhere and
   *   guard the few risky calls (a regex on user input, a big `JSON.parse`).
   */
  interrupt?: InterruptScope;
  /**
   * `true`: a warning for every elapsed timeout while the block lasts, each with a fresh stack.
   * `false`: one warning per block. Default true.
   */
  aggressive?: boolean;
  /**
   * `true` or `'text'` (default): Node-style warnings on stderr, written while the loop is blocked,
   * and a line with the total when it ends; silenced by `--no-warnings`, `NODE_NO_WARNINGS=1` and
   * `--disable-warning=BlockingWarning`, as Node's own warnings are.
   * `'json'`: one JSON object per line on stderr, also during the block, and a closing record
   * (`"type":"BlockingEnded"`, with the final `durationMs` and the `fingerprint`) when it ends.
   * A function: receives each warning's text and the closing line once the loop turns again
   * (JavaScript cannot run during the block). `false`: nothing is written.
   */
  log?: LogOption;
  /** Called with each block once the loop turns again; same as `detector.on('blocked', ...)`. */
  onBlocked?: (event: BlockEvent) => void;
  /**
   * Receives the error of each interrupt of code outside `run()`/`wrap()` (timers, promise
   * reactions, I/O callbacks...); same as `detector.on('interrupt', ...)`. With neither, the error
   * goes through Node's uncaught-exception path.
   */
  onInterrupt?: (error: Error) => void;
  /**
   * Interrupting a promise reaction or `await` continuation makes V8 drop the other microtasks of
   * the same checkpoint: other `await`s may never resume. So such a block is only interrupted once
   * it lasts this many timeouts (a number from 1 to 1000; on Linux, time its thread waited for a
   * CPU does not count), or never (`false`: only warn; a block that never ends then wedges the
   * thread). Default 5.
   */
  microtaskInterruptAfter?: number | false;
  /**
   * The report budget: a block whose fingerprint (see {@link BlockEvent.fingerprint}) was logged
   * less than this many milliseconds ago is not written to the log (its live warnings, its closing
   * line, the `log` function, `'warning'` listeners); a new fingerprint is always logged at once.
   * Every block is still emitted as a `'blocked'` event, with `logSuppressed` and the count
   * `suppressedSinceLastLog`, which the next logged block of that fingerprint also carries. A
   * block without a stack has no fingerprint and is always logged. From 0 (every block is logged:
   * the default) to 86,400,000 (a day); for example 60000: each culprit at most once a minute.
   */
  logRepeatsAfterMs?: number;
  /**
   * Report which request blocked: the store of this AsyncLocalStorage (or of each of several) that
   * was active in the blocked code, as `event.context` and `sample.context`. Give an
   * AsyncLocalStorage, a `{ storage, keys }` entry (keep only those keys of its store), or an
   * array of either; with an array, `context` is an array in the same order.
   *
   * The store is read while the code is blocked, natively, in the same V8 interrupt that takes the
   * stack sample, running no JavaScript: plain values are copied (depth 4, 50 keys per object,
   * strings up to 1 KiB), everything else is summarised and never executed (getters, proxies,
   * `toJSON`; class instances as `{ "[class Name]": own fields }`, Map/Set entries, Date as
   * an ISO string, BigInt as a decimal string). Works on every supported Node.js (see
   * `capabilities().asyncContext`): from the AsyncContextFrame where Node keeps stores in one (24+,
   * 22 with `--experimental-async-context-frame`), else from the blocked code's async resource
   * (22, 20), where a level Node entered natively (an HTTP request callback) is read only if the
   * store was entered there with `run()`/`enterWith()` while the detector ran. Where the store
   * cannot be found, `context` is null and `contextMissing` says why. No cost when not set.
   *
   * @example
   * ```ts
   * const als = new AsyncLocalStorage<{ requestId: string }>();
   * new BlockingDetector({ asyncContext: als, asyncContextKeys: ['requestId'] }).start()
   *   .on('blocked', (e) => log.warn({ requestId: (e.context as { requestId?: string } | null)?.requestId }));
   * ```
   */
  asyncContext?: AsyncContextOption;
  /**
   * Keep only these top-level keys of each store (own data properties of an object store, or
   * string keys of a `Map` store), for the storages given without their own `keys`. At most 50.
   */
  asyncContextKeys?: readonly string[];
  /**
   * Name the Node.js synchronous API a block is inside: while the detector runs, `fs.*Sync`,
   * `zlib.*Sync`, the synchronous crypto functions (`pbkdf2Sync`, `scryptSync`,
   * `generateKeyPairSync`...), `child_process.execSync`/`execFileSync`/`spawnSync` and
   * `Atomics.wait` are wrapped (the wrappers of `SyncCallDetector`), and each call marks
   * itself in memory the monitor thread reads: a warning of a block inside one says so (`in
   * fs.readFileSync (native, a system call read on /data/big.json)`, `BlockSample.syncApi`),
   * and the caller's stack is sampled as the call returns. Costs ~0.1-0.3 µs per synchronous call,
   * nothing per loop turn (see docs/detector.md, Blocks outside JavaScript). `false`: nothing is
   * wrapped. Default true.
   */
  nameSyncCalls?: boolean;
}

export interface ResolvedOptions {
  timeout: number;
  raiseExc: RaiseExc;
  interrupt: InterruptScope;
  aggressive: boolean;
  log: LogOption;
  onBlocked: ((event: BlockEvent) => void) | undefined;
  onInterrupt: ((error: Error) => void) | undefined;
  microtaskInterruptAfter: number | false;
  logRepeatsAfterMs: number;
  asyncContext: ResolvedAsyncContext | undefined;
  nameSyncCalls: boolean;
}

const KNOWN = [
  'timeout',
  'raiseExc',
  'interrupt',
  'aggressive',
  'log',
  'onBlocked',
  'onInterrupt',
  'microtaskInterruptAfter',
  'logRepeatsAfterMs',
  'asyncContext',
  'asyncContextKeys',
  'nameSyncCalls',
] as const;
export const DEFAULT_MICROTASK_INTERRUPT_AFTER = 5;
export const MIN_TIMEOUT = 0.001;
export const MAX_TIMEOUT = 86400;

function isErrorClass(v: unknown): v is ErrorClass {
  return typeof v === 'function' && (v === Error || (v as { prototype?: unknown }).prototype instanceof Error);
}

export function validateTimeout(v: unknown): number {
  if (typeof v !== 'number') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "timeout" option must be a number of seconds. Received ${describe(v)}`,
    );
  }
  if (!(v >= MIN_TIMEOUT && v <= MAX_TIMEOUT)) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "timeout" option must be a number of seconds from ${MIN_TIMEOUT} to ${MAX_TIMEOUT}. Received ${describe(v)}`,
    );
  }
  return v;
}

export function validateRaiseExc(v: unknown): RaiseExc {
  if (v === false || v === null || v instanceof Error || isErrorClass(v)) return v;
  throw argError(
    'type',
    'ERR_INVALID_ARG_TYPE',
    `The "raiseExc" option must be an Error class, an Error instance, false or null. Received ${describe(v)}`,
  );
}

function validateInterruptScope(v: unknown): InterruptScope {
  if (v === 'everywhere' || v === 'guarded') return v;
  throw argError(
    'type',
    'ERR_INVALID_ARG_VALUE',
    `The "interrupt" option must be 'everywhere' or 'guarded'. Received ${describe(v)}`,
  );
}

function validateLog(v: unknown): LogOption {
  if (typeof v === 'boolean' || v === 'text' || v === 'json' || typeof v === 'function') return v as LogOption;
  throw argError(
    'type',
    'ERR_INVALID_ARG_TYPE',
    `The "log" option must be a boolean, 'text', 'json' or a function. Received ${describe(v)}`,
  );
}

function validateCallback<F>(name: string, v: unknown): F | undefined {
  if (v === undefined || typeof v === 'function') return v as F | undefined;
  throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "${name}" option must be a function. Received ${describe(v)}`);
}

function validateMicrotaskInterruptAfter(v: unknown): number | false {
  if (v === false) return false;
  if (typeof v !== 'number') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "microtaskInterruptAfter" option must be a number of timeouts or false. Received ${describe(v)}`,
    );
  }
  if (!(v >= 1 && v <= 1000)) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "microtaskInterruptAfter" option must be from 1 to 1000 (timeouts). Received ${describe(v)}`,
    );
  }
  return v;
}

export const MAX_LOG_REPEATS_AFTER_MS = 86_400_000;

/**
 * Accepts `(options?)` or the positional form `(timeout?, raiseExc?, aggressive?)` of
 * gevent-helpers.
 */
export function resolveOptions(args: readonly unknown[], defaultRaise: RaiseExc): ResolvedOptions {
  let opts: Record<string, unknown>;
  const [first] = args;
  if (args.length === 0 || first === undefined) {
    opts = args.length > 1 ? { raiseExc: args[1], aggressive: args[2] } : {};
  } else if (typeof first === 'object' && first !== null && !(first instanceof Error)) {
    if (args.length > 1) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        'BlockingDetector takes either one options object or (timeout, raiseExc, aggressive), not both',
      );
    }
    opts = first as Record<string, unknown>;
    for (const key of Object.keys(opts)) {
      if (!(KNOWN as readonly string[]).includes(key)) {
        throw argError(
          'type',
          'ERR_INVALID_ARG_VALUE',
          `Unknown BlockingDetector option "${key}". Known options: ${KNOWN.join(', ')}`,
        );
      }
    }
  } else {
    if (args.length > 3) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `BlockingDetector takes at most 3 positional arguments (timeout, raiseExc, aggressive). Received ${args.length}`,
      );
    }
    opts = { timeout: first, raiseExc: args[1], aggressive: args[2] };
  }
  return {
    timeout: opts.timeout === undefined ? 1 : validateTimeout(opts.timeout),
    raiseExc: opts.raiseExc === undefined ? defaultRaise : validateRaiseExc(opts.raiseExc),
    interrupt: opts.interrupt === undefined ? 'everywhere' : validateInterruptScope(opts.interrupt),
    aggressive: opts.aggressive === undefined ? true : validateBoolean('aggressive', opts.aggressive),
    log: opts.log === undefined ? true : validateLog(opts.log),
    onBlocked: validateCallback<(event: BlockEvent) => void>('onBlocked', opts.onBlocked),
    onInterrupt: validateCallback<(error: Error) => void>('onInterrupt', opts.onInterrupt),
    microtaskInterruptAfter:
      opts.microtaskInterruptAfter === undefined
        ? DEFAULT_MICROTASK_INTERRUPT_AFTER
        : validateMicrotaskInterruptAfter(opts.microtaskInterruptAfter),
    logRepeatsAfterMs:
      opts.logRepeatsAfterMs === undefined
        ? 0
        : validateMs('logRepeatsAfterMs', opts.logRepeatsAfterMs, MAX_LOG_REPEATS_AFTER_MS),
    asyncContext: resolveAsyncContext(opts.asyncContext, opts.asyncContextKeys),
    nameSyncCalls: opts.nameSyncCalls === undefined ? true : validateBoolean('nameSyncCalls', opts.nameSyncCalls),
  };
}
