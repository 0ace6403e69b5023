import type { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { type JsonValue, type ResolvedAsyncContext, usesAsyncContextFrame } from './async-context';
import { restoreLevel, saveLevel } from './async-id-stack';
import { probedCapabilities } from './capabilities';
import { channelMessage } from './channel-message';
import { AlarmInterrupt, argError, describe } from './errors';
import { restoreStores, saveStores } from './guard-context';
import { cutRecords, hookStorages, recordsDepth } from './hooks-store';

import {
  type InterruptInfo,
  interruptError,
  interruptRecord,
  isInterruptMarker,
  LOST_CONTINUATIONS,
} from './interrupt';
import { forgetInterruptedLoads, installRequireRepair, loadDepth } from './modules';
import { type NativeLogMode, native, threadId, type UndeliveredRecords } from './native';
import { blockingWarningsSilenced, emitBlockingWarning } from './node-warnings';
import {
  type BlockingDetectorOptions,
  type InterruptScope,
  type LogOption,
  type RaiseExc,
  resolveOptions,
} from './options';
import { mapFrames, syncSourceMaps } from './sourcemaps';
import {
  acquireSyncMarker,
  OWN_CODE_DIR,
  patchLoadedModules,
  releaseSyncMarker,
  resetAfterTermination,
  type SyncMarkerBinding,
} from './sync-api-hooks';
import type { BlockEvent, BlockSample } from './types';
import { acquireInterrupts, releaseInterrupts } from './unguarded';

function logMode(log: LogOption): NativeLogMode {
  if (typeof log === 'function') return 'deferred';
  if (log === 'json') return 'json';
  // Node's conventions: --no-warnings, NODE_NO_WARNINGS=1, --disable-warning=BlockingWarning.
  return log === false || blockingWarningsSilenced() ? 'silent' : 'text';
}

interface NativeWarning extends BlockSample {
  text?: string;
}

/** A block as the native layer hands it over (crates/core/src/report.rs, `block_json`). */
interface NativeRecord extends Omit<BlockEvent, 'samples'> {
  warnings: NativeWarning[];
  /** The closing line, for a `log` function. */
  endText?: string;
}

/** This package's directory: its frames (guards) are not the blocking code in fingerprints. */
const ownDir = `${dirname(__dirname)}/`;

/**
 * `diagnostics_channel` channels, for APM and OpenTelemetry bridges that must not depend on this
 * package: `loop-helpers:blocked` gets `{ event, detector }` for every block,
 * `loop-helpers:interrupt` gets `{ interrupt, error, detector }` for every interrupt (`interrupt`:
 * the error's name, message and fields as plain data). `detector` and `error` are non-enumerable:
 * `JSON.parse(JSON.stringify(message))` deep-equals the message.
 */
export const BLOCKED_CHANNEL = 'loop-helpers:blocked';
export const INTERRUPT_CHANNEL = 'loop-helpers:interrupt';
type Channel = import('node:diagnostics_channel').Channel;
// Created when first used: node:diagnostics_channel is not loaded for nothing.
let channels: { blocked: Channel; interrupt: Channel } | undefined;
function publishChannels(): { blocked: Channel; interrupt: Channel } {
  if (!channels) {
    const { channel } = require('node:diagnostics_channel') as typeof import('node:diagnostics_channel');
    channels = { blocked: channel(BLOCKED_CHANNEL), interrupt: channel(INTERRUPT_CHANNEL) };
  }
  return channels;
}

/** Running detectors of this thread by native watch id (to turn an interrupt into its error). */
const byId = new Map<number, BlockingDetector>();

/**
 * Recently stopped detectors by watch id: an interrupt resolved just before `stop()` (for example
 * `stop()` called from `onBlocked`) is still delivered to its detector. Bounded, oldest out.
 */
const retired = new Map<number, BlockingDetector>();
const RETIRED_KEPT = 64;

function retire(id: number, d: BlockingDetector): void {
  retired.set(id, d);
  if (retired.size > RETIRED_KEPT) retired.delete(retired.keys().next().value as number);
}

const detectorOf = (watchId: number): BlockingDetector | undefined => byId.get(watchId) ?? retired.get(watchId);

/** Running detectors of this thread, flushed when the loop is done (no next turn will end a block). */
const running = new Set<BlockingDetector>();

function flushAll(): void {
  for (const d of running) d.flush();
}

function track(d: BlockingDetector, on: boolean): void {
  if (on) {
    if (running.size === 0) {
      process.on('beforeExit', flushAll);
      process.on('exit', flushAll);
    }
    running.add(d);
  } else if (running.delete(d) && running.size === 0) {
    process.off('beforeExit', flushAll);
    process.off('exit', flushAll);
  }
}

export interface BlockingDetectorEvents {
  blocked: [event: BlockEvent];
  interrupt: [error: Error];
}

/** A listener's exception must not vanish inside a native callback: rethrow it from a tick. */
function rethrowLater(e: unknown): void {
  process.nextTick(() => {
    throw e;
  });
}

/**
 * `setImmediate`/`setTimeout` as Node.js defined them when this module loaded: test runners' fake
 * timers (Jest, Vitest, @sinonjs/fake-timers, which also patches `node:timers`) would stall
 * `drain()`. `node:timers` is loaded by Node's bootstrap anyway.
 */
const realTimers = (({ setImmediate, setTimeout }: typeof import('node:timers')) => ({ setImmediate, setTimeout }))(
  require('node:timers') as typeof import('node:timers'),
);

/** Whether the interrupted code was an ES module's top level (evaluated by Node's ModuleJob). */
function interruptedEsmTopLevel(info: InterruptInfo): boolean {
  const frames = info.frames ?? [];
  const i = frames.findIndex(
    (f) => f.fileName === 'node:internal/modules/esm/module_job' && /(^|\.)run$/.test(f.functionName),
  );
  return i > 0 && frames[i - 1]?.functionName === '' && !frames[i - 1]?.fileName.startsWith('node:');
}

/**
 * Node 20 only: an ES module entry's loader registers `handleProcessExit` on `'exit'` and removes it
 * once the entry's evaluation settles; left behind, it sets exit code 13 ("unfinished top-level
 * await"). When an interrupted promise reaction made V8 drop the rest of its microtask checkpoint,
 * the loader's own continuation can be among the dropped ones, and then the entry never settles
 * although it ran. Removes that listener; returns whether there was one.
 */
function forgetDroppedEsmEntry(): boolean {
  const stale = process.listeners('exit').filter((f) => f.name === 'handleProcessExit');
  for (const f of stale) process.off('exit', f as (code: number) => void);
  return stale.length > 0;
}

/** An interrupt's record as the native layer delivers it (see `onInterruptDelivered`). */
function interruptInfo(json: string): InterruptInfo {
  return JSON.parse(json) as InterruptInfo;
}

/** An interrupt of code outside run()/wrap(), delivered by the native layer. */
function onInterruptDelivered(json: string): void {
  resetAfterTermination();
  const info = interruptInfo(json);
  const owner = detectorOf(info.watchId);
  if (owner) owner[kInterrupted](info);
  // No detector of this thread ever had that id (cannot happen): the error still surfaces.
  else rethrowLater(interruptError(AlarmInterrupt, Number.NaN, info));
}

const kInterrupted = Symbol('interrupted');

/**
 * An internal reader of a block (`loop-helpers/otel`): its store, if any, is read natively with
 * the detector's own `asyncContext` stores, and `onBlock` sees each event before any listener.
 * @internal
 */
export interface BlockTap {
  /**
   * A store to read with each block: `path` (strings and symbols: Map entries found by identity,
   * or own data properties, followed natively from the store; see crates/node/src/async_context.rs)
   * leads to an object, which is written with `keys` only (and the objects under them with
   * `innerKeys` only, if given), and handed back to `onBlock` in `anchors` (strong references,
   * kept natively until the next delivery takes them).
   */
  context?: {
    storage: AsyncLocalStorage<unknown>;
    path: readonly (string | symbol)[];
    keys: readonly string[];
    innerKeys?: readonly string[];
  };
  /**
   * Before the `'blocked'` listeners. `read`: with `context`, what was read for this block
   * (`value` null when the path led nowhere; `missing` why nothing could be read); undefined when
   * the store is not read on this Node.js. `anchors`: the objects the paths led to since the
   * last delivery, oldest first.
   */
  onBlock(event: BlockEvent, read: { value: JsonValue; missing: string | null } | undefined, anchors: object[]): void;
}

/** A native watch of a detector: its id, and the taps whose stores it reads (after the user's own). */
interface Watch {
  id: number;
  taps: BlockTap[];
  /** Stops recording the storages' `run()`/`enterWith()` (lib/hooks-store.ts), where it started. */
  release?: () => void;
}

/** `detector[kAddTap](tap)`: adds a {@link BlockTap}; returns the function that removes it. @internal */
export const kAddTap = Symbol('loop-helpers.addTap');

/** The `loop-helpers:interrupt` message: plain data, with the error and the detector non-enumerable. */
function interruptMessage(error: Error, detector: BlockingDetector): object {
  return channelMessage({ interrupt: interruptRecord(error) ?? null }, { error, detector });
}

/** This thread's sync-call marker cells (the same for the environment's lifetime), once asked for. */
let markerCells: Int32Array | undefined;

/** The native side of the sync-call marker (`nameSyncCalls`). */
function markerBinding(): SyncMarkerBinding {
  const n = native();
  return {
    cells() {
      markerCells ??= new Int32Array(n.syncMarker(OWN_CODE_DIR));
      return markerCells;
    },
    setNames(names) {
      n.setSyncApiNames(names);
    },
    // The native function itself: no JavaScript function is entered on the way, so no V8
    // interrupt check runs there (an interrupt pending for the block lands where it would have
    // without the wrapper).
    sample: n.sampleAtSyncReturn,
  };
}

/** The guards-only fallback was announced (once per thread). */
let warnedGuardsOnly = false;

/** A listener of one of the detector's events (`'blocked'`, `'interrupt'`). */
type DetectorListener<E extends keyof BlockingDetectorEvents> = (...args: BlockingDetectorEvents[E]) => void;

/**
 * The listener methods, typed by event name: a misspelt name (`on('blockd', ...)`) is reported as
 * "not assignable to parameter of type 'keyof BlockingDetectorEvents'" rather than as a listener
 * of type `never`. Declarations only (merged into the class); EventEmitter implements them.
 */
export interface BlockingDetector {
  on<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  once<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  off<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  addListener<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  removeListener<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  prependListener<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
  prependOnceListener<E extends keyof BlockingDetectorEvents>(event: E, listener: DetectorListener<E>): this;
}

/**
 * Notices when this thread's event loop has not turned for `timeout` seconds, and reports the stack
 * of the code that is blocking it, while it blocks.
 *
 * A Rust monitor thread, woken by SIGALRM from a timer directed at that thread alone (Linux; an
 * interval timer on macOS), watches a heartbeat the loop publishes each turn. When the loop is blocked it asks V8 for the blocking code's stack and
 * writes a warning to stderr during the block. Once the loop turns again, the whole block is
 * emitted as a `'blocked'` event.
 *
 * A detector watches the loop of the thread that starts it: the main thread, or a Worker.
 *
 * @example
 * ```ts
 * import { BlockingDetector } from 'loop-helpers';
 * const detector = new BlockingDetector({ timeout: 0.2, raiseExc: false }).start();
 * detector.on('blocked', (e) => console.log(`blocked ${e.durationMs} ms`, e.samples[0]?.frames?.[0]));
 * ```
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface declares EventEmitter's own listener methods, typed; no property.
export class BlockingDetector extends EventEmitter<BlockingDetectorEvents> {
  /** Seconds the loop may stay blocked before it is reported. */
  readonly timeout: number;
  /** What blocking code is interrupted with (see {@link BlockingDetectorOptions.raiseExc}). */
  readonly raiseExc: RaiseExc;
  /** One warning per elapsed timeout (true) or per block (false). */
  readonly aggressive: boolean;
  /** Where warnings go. */
  readonly log: LogOption;

  /** Where `raiseExc` is thrown (see {@link BlockingDetectorOptions.interrupt}). */
  readonly interrupt: InterruptScope;

  /** Timeouts a promise reaction may block before it is interrupted, or false (never). */
  readonly microtaskInterruptAfter: number | false;

  /** The report budget (see {@link BlockingDetectorOptions.logRepeatsAfterMs}); 0: none. */
  readonly logRepeatsAfterMs: number;

  /** Whether blocks inside Node.js's synchronous APIs are named (see {@link BlockingDetectorOptions.nameSyncCalls}). */
  readonly nameSyncCalls: boolean;

  #id: number | undefined;
  #interrupting = false;
  /** This detector holds the sync-call marker. */
  #marking = false;
  readonly #onBlocked: ((event: BlockEvent) => void) | undefined;
  readonly #onInterrupt: ((error: Error) => void) | undefined;
  readonly #asyncContext: ResolvedAsyncContext | undefined;
  /** Why the stores cannot be read here (`asyncContext` set, capability missing). */
  #contextMissing: string | undefined;
  /** Internal readers of each block (`loop-helpers/otel`). */
  #taps: BlockTap[] = [];
  /** The taps whose stores the running native watch reads (after the user's own). */
  /** The running native watch, and the taps whose stores it reads. */
  #watch: Watch | undefined;

  /** @param options See {@link BlockingDetectorOptions}. */
  constructor(options?: BlockingDetectorOptions);
  /** The positional form of gevent-helpers: `BlockingDetector(timeout=1, raise_exc=AlarmInterrupt, aggressive=True)`. */
  constructor(timeout?: number, raiseExc?: RaiseExc, aggressive?: boolean);
  constructor(...args: unknown[]) {
    super();
    const o = resolveOptions(args, AlarmInterrupt);
    this.timeout = o.timeout;
    this.raiseExc = o.raiseExc;
    this.interrupt = o.interrupt;
    this.aggressive = o.aggressive;
    this.log = o.log;
    this.microtaskInterruptAfter = o.microtaskInterruptAfter;
    this.logRepeatsAfterMs = o.logRepeatsAfterMs;
    this.nameSyncCalls = o.nameSyncCalls;
    this.#onBlocked = o.onBlocked;
    this.#onInterrupt = o.onInterrupt;
    this.#asyncContext = o.asyncContext;
  }

  /** Whether the detector is watching the loop. */
  get running(): boolean {
    return this.#id !== undefined;
  }

  /** Starts watching this thread's loop. Starting a running detector does nothing. */
  start(): this {
    if (this.#id !== undefined) return this;
    const caps = probedCapabilities();
    const interrupting = this.#interrupts(caps);
    const ctx = this.#asyncContext;
    this.#contextMissing = ctx && !caps.asyncContext ? caps.reasons.asyncContext : undefined;
    if (this.nameSyncCalls && caps.syncCallNames) {
      // Before the watch starts: installing the wrappers (the first time on a thread, 5-30 ms)
      // is not a block of the application's.
      acquireSyncMarker(markerBinding());
      this.#marking = true;
    }
    try {
      this.#startNative(caps);
    } catch (e) {
      if (this.#marking) {
        this.#marking = false;
        releaseSyncMarker();
      }
      throw e;
    }
    track(this, true);
    syncSourceMaps('on');
    if (interrupting) installRequireRepair();
    if (interrupting && this.interrupt === 'everywhere') {
      // Unguarded interrupts need the stack sample (to recognise contexts that cannot recover).
      const reason = acquireInterrupts(onInterruptDelivered, caps.stackCapture);
      this.#interrupting = true;
      if (reason !== undefined && this.log !== false && !warnedGuardsOnly) {
        warnedGuardsOnly = true;
        process.emitWarning(
          `blocking code outside detector.run()/wrap() and outside timer, immediate, nextTick and queueMicrotask callbacks cannot be interrupted on this Node.js (${reason}); it is only reported`,
          { type: 'BlockingWarning', code: 'LOOP_HELPERS_GUARDS_ONLY' },
        );
      }
    }
    return this;
  }

  /** The native watch, with the user's `asyncContext` stores and the taps' stores. */
  #startNative(caps: ReturnType<typeof probedCapabilities>): void {
    const interrupting = this.#interrupts(caps);
    const grace = this.microtaskInterruptAfter === false ? -1 : this.microtaskInterruptAfter * this.timeout;
    const ctx = this.#asyncContext;
    const readContext = ctx !== undefined && this.#contextMissing === undefined;
    const taps = caps.asyncContext ? this.#taps.filter((t) => t.context !== undefined) : [];
    const reads = taps.flatMap((t) => (t.context === undefined ? [] : [t.context]));
    const watch: Watch = { id: -1, taps };
    let storages = readContext ? ctx.storages : undefined;
    let keys: (readonly string[] | null)[] | undefined = ctx?.keys;
    let single = ctx?.single;
    let paths: (readonly (string | symbol)[] | null)[] | undefined;
    let innerKeys: (readonly string[] | null)[] | undefined;
    if (taps.length > 0) {
      const own = readContext ? ctx.storages.length : 0;
      storages = [...(readContext ? ctx.storages : []), ...reads.map((r) => r.storage)];
      keys = [...(readContext ? ctx.keys : []), ...reads.map((r) => r.keys)];
      // Fresh arrays, never handed out: the native side reads their elements while code blocks.
      paths = [...Array.from({ length: own }, () => null), ...reads.map((r) => [...r.path])];
      innerKeys = [
        ...Array.from({ length: own }, () => null),
        ...reads.map((r) => (r.innerKeys ? [...r.innerKeys] : null)),
      ];
      single = false;
    }
    // Where stores hang off async resources, the storages' run()/enterWith() are recorded for the
    // levels native code entered (lib/hooks-store.ts).
    const hooked = storages !== undefined && !usesAsyncContextFrame() ? hookStorages(storages) : undefined;
    let id: number;
    try {
      id = native().start(
        {
          timeoutSeconds: this.timeout,
          timeoutLabel: String(this.timeout),
          aggressive: this.aggressive,
          logMode: logMode(this.log),
          threadId: threadId(),
          captureStacks: caps.stackCapture,
          interrupt: !interrupting ? 'none' : this.interrupt === 'everywhere' ? 'everywhere' : 'guarded',
          microtaskGraceSeconds: grace,
          asyncContext:
            storages === undefined
              ? undefined
              : { storages, keys: keys ?? [], single: single ?? false, paths, innerKeys, hooks: hooked?.hooks },
        },
        (json) => this.#deliver(json, watch),
      );
    } catch (e) {
      hooked?.release();
      throw e;
    }
    this.#id = id;
    watch.id = id;
    if (hooked) watch.release = hooked.release;
    this.#watch = watch;
    byId.set(this.#id, this);
    native().setReportPaths(process.cwd(), ownDir);
    if (this.logRepeatsAfterMs > 0) native().setLogRepeatsAfter(this.#id, this.logRepeatsAfterMs);
  }

  /**
   * Adds an internal reader of each block. When it reads a store and the detector is running,
   * the native watch is replaced by one that also reads it (a block already warned about is then
   * emitted with `ended: false`, as by `stop()`). Returns the function that removes it.
   * @internal
   */
  [kAddTap](tap: BlockTap): () => void {
    this.#taps = [...this.#taps, tap];
    if (tap.context !== undefined) this.#restartNative();
    return () => {
      if (!this.#taps.includes(tap)) return;
      this.#taps = this.#taps.filter((t) => t !== tap);
      if (this.#watch?.taps.includes(tap)) this.#restartNative();
    };
  }

  /** A running detector's native watch, replaced (the set of stores it reads changed). */
  #restartNative(): void {
    const id = this.#id;
    if (id === undefined) return;
    const caps = probedCapabilities();
    if (!caps.asyncContext) return;
    byId.delete(id);
    retire(id, this);
    const watch = this.#watch;
    const undelivered = native().stop(id);
    this.#startNative(caps);
    watch?.release?.();
    if (undelivered !== undefined) process.nextTick(() => this.#deliverUndelivered(undelivered, watch));
  }

  /** Whether this detector interrupts blocking code on this Node.js. */
  #interrupts(caps: ReturnType<typeof probedCapabilities>): boolean {
    return this.raiseExc !== false && this.raiseExc !== null && caps.interrupt;
  }

  /**
   * Stops watching. What the detector had not emitted yet is emitted on the next tick, in one
   * `process.nextTick` callback: blocks that ended but whose `'blocked'` event had not been
   * emitted, the block in progress if it was already warned about (with `ended: false`), and the
   * `'interrupt'` of code it had already stopped. After that callback nothing more of this detector
   * appears: no event, no channel message, no warning on stderr. (An event whose emission was
   * under way when `stop()` was called, from one of its own listeners, still reaches the listeners
   * after that one, as with any `EventEmitter`.) Stopping a stopped detector does nothing.
   */
  stop(): void {
    const id = this.#id;
    if (id === undefined) return;
    this.#id = undefined;
    byId.delete(id);
    retire(id, this);
    track(this, false);
    syncSourceMaps('off');
    if (this.#marking) {
      this.#marking = false;
      releaseSyncMarker();
    }
    if (this.#interrupting) {
      this.#interrupting = false;
      releaseInterrupts();
    }
    const watch = this.#watch;
    const undelivered = native().stop(id);
    watch?.release?.();
    if (undelivered !== undefined) process.nextTick(() => this.#deliverUndelivered(undelivered, watch));
  }

  /** What a stopped watch had not delivered: its interrupts, then its blocks, oldest first. */
  #deliverUndelivered(undelivered: UndeliveredRecords, watch: Watch | undefined): void {
    for (const json of undelivered.interrupts) this[kInterrupted](interruptInfo(json));
    for (const json of undelivered.blocks) this.#deliver(json, watch);
  }

  /**
   * Emits the block in progress now, if one was warned about, as ended. Called automatically on
   * `'beforeExit'` and `'exit'`, when no further turn of the loop will end it.
   * @internal
   */
  flush(): void {
    if (this.#id === undefined) return;
    const record = native().flush(this.#id);
    if (record !== undefined) this.#deliver(record, this.#watch);
  }

  /**
   * Calls `fn(...args)` under a guard: if the loop stays blocked past a detector's deadline while
   * `fn` runs, `fn` is stopped (no `catch` or `finally` inside it runs) and `run` throws the
   * detector's `raiseExc` error as an ordinary exception, carrying the blocking stack. If `fn`
   * blocked past the deadline inside a native call (which cannot be interrupted), `run` throws when
   * that call returns. Otherwise it returns what `fn` returns, or throws what `fn` throws.
   *
   * Only the synchronous part of an async `fn` is guarded: code after its first `await` is not.
   *
   * @example
   * ```ts
   * try {
   *   detector.run(() => renderReport(rows));
   * } catch (e) {
   *   if (e instanceof AlarmInterrupt) return reply503();
   *   throw e;
   * }
   * ```
   */
  run<A extends unknown[], R>(fn: (...args: A) => R, ...args: A): R {
    return this.#guard(fn, undefined, args);
  }

  /**
   * Returns `fn` wrapped so that every call runs as in {@link BlockingDetector.run}, with the
   * same `this` and arguments. For example an HTTP handler that should answer 503 instead of
   * hanging the server.
   */
  wrap<T, A extends unknown[], R>(fn: (this: T, ...args: A) => R): (this: T, ...args: A) => R {
    if (typeof fn !== 'function') {
      throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "fn" argument must be a function. Received ${describe(fn)}`);
    }
    const guard = (self: T, args: A) => this.#guard(fn, self, args);
    const wrapped = function (this: T, ...args: A): R {
      return guard(this, args);
    };
    Object.defineProperty(wrapped, 'name', { value: fn.name, configurable: true });
    Object.defineProperty(wrapped, 'length', { value: fn.length, configurable: true });
    return wrapped;
  }

  #guard<T, A extends unknown[], R>(fn: (this: T, ...args: A) => R, self: T, args: A): R {
    if (typeof fn !== 'function') {
      throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "fn" argument must be a function. Received ${describe(fn)}`);
    }
    if (this.#id === undefined) {
      const e = new Error(
        'BlockingDetector.run()/wrap(): the detector is not running, so it would guard nothing; call start() first',
      );
      (e as Error & { code: string }).code = 'ERR_LOOP_HELPERS_NOT_RUNNING';
      throw e;
    }
    const depth = loadDepth();
    const level = saveLevel();
    const stores = saveStores();
    const records = recordsDepth();
    try {
      return native().guardCall(fn, self, args) as R;
    } catch (e) {
      if (!isInterruptMarker(e)) throw e;
      resetAfterTermination();
      // A require() inside fn was interrupted: drop its half-evaluated module from the cache.
      forgetInterruptedLoads(depth);
      const info = JSON.parse(e.interrupt) as InterruptInfo;
      // Terminated (not late: then fn's own `finally` blocks ran): the async scopes it entered
      // were never left (lib/async-id-stack.ts), and its AsyncLocalStorage.run() calls never put
      // their callers' stores back (lib/guard-context.ts). Never in place of the interrupt should
      // that fail.
      if (!info.late) {
        try {
          restoreLevel(level);
          cutRecords(records);
          if (stores) restoreStores(stores);
        } catch {
          // A resource that refuses its own properties (a Proxy): left as the stopped code left it.
        }
      }
      const owner = detectorOf(info.watchId) ?? this;
      const raise = owner.raiseExc === false || owner.raiseExc === null ? AlarmInterrupt : owner.raiseExc;
      const error = interruptError(raise, owner.timeout, info, (e as { cause?: unknown }).cause);
      const { interrupt } = publishChannels();
      if (interrupt.hasSubscribers) interrupt.publish(interruptMessage(error, owner));
      throw error;
    }
  }

  /**
   * Waits until every block that ended before this call, and the block the calling code is part of
   * (the current turn of the loop), has been emitted as a `'blocked'` event. A block is delivered
   * once the loop turns again, on a later turn than the one that blocked, so a test that asserts
   * right after the code under test ran would check too early: await `drain()` first.
   *
   * It lets the loop turn twice (the current turn ends, and the turn after it has begun, which ends
   * any block), waits until the monitor thread has looked at the loop since (about one idle
   * quantum: 2 ms for timeouts up to 100 ms, timeout/50 above, at most 100 ms), then lets the
   * pending deliveries run. On a detector that is not running it only waits for a stopped
   * detector's last delivery (`stop()` emits what it had not emitted yet on the next tick).
   *
   * @example
   * ```ts
   * const blocks: BlockEvent[] = [];
   * detector.on('blocked', (e) => blocks.push(e));
   * await handler(request);
   * await detector.drain();
   * assert.equal(blocks.length, 0);
   * ```
   */
  async drain(): Promise<void> {
    const { setImmediate: immediate, setTimeout: timeout } = realTimers;
    const nextTurn = () => new Promise<void>((resolve) => immediate(resolve));
    // Two hops: a setImmediate queued from an I/O callback runs in the same turn (check phase);
    // one queued from a check-phase callback runs only after the next turn's prepare (heartbeat).
    await nextTurn();
    await nextTurn();
    if (this.#id === undefined) return;
    // The heartbeat of this turn woke the monitor if a block was open. A full monitor cycle that
    // began after that heartbeat has ended (and queued its deliveries) once the wake counter moved
    // twice from here: the first wake began such a cycle, the second began after it.
    const wakes = () => (JSON.parse(native().nativeInfo()) as { monitorWakes: number }).monitorWakes;
    const first = wakes();
    const limit = Date.now() + Math.max(1000, 4 * this.timeout * 1000);
    while (wakes() < first + 2 && Date.now() < limit && this.#id !== undefined) {
      await new Promise<void>((resolve) => timeout(resolve, 1));
    }
    // Deliveries queued before this point run in this turn's poll phase, before its check phase.
    await nextTurn();
  }

  /** Stops the detector (for `using detector = new BlockingDetector().start()`). */
  [Symbol.dispose](): void {
    this.stop();
  }

  #deliver(json: string, watch: Watch | undefined): void {
    // Modules loaded since the marker was installed get their calls named from now on.
    if (this.#marking) patchLoadedModules();
    const raw = JSON.parse(json) as NativeRecord;
    const tapsRead = watch?.taps ?? [];
    const tapReads = tapsRead.length > 0 ? this.#splitContext(raw, tapsRead.length) : undefined;
    const samples: BlockSample[] = [];
    for (const w of raw.warnings) {
      if (typeof this.log === 'function' && w.text !== undefined) this.log(w.text);
      const { text: _text, ...sample } = w;
      sample.frames = mapFrames(sample.frames);
      samples.push(sample);
    }
    if (typeof this.log === 'function' && raw.endText !== undefined) this.log(raw.endText);
    const event: BlockEvent = {
      threadId: raw.threadId,
      timeout: raw.timeout,
      startTime: raw.startTime,
      startHrtimeMs: raw.startHrtimeMs,
      durationMs: raw.durationMs,
      ended: raw.ended,
      cpuMs: raw.cpuMs,
      cpuWaitMs: raw.cpuWaitMs,
      fingerprint: raw.fingerprint,
      logSuppressed: raw.logSuppressed,
      suppressedSinceLastLog: raw.suppressedSinceLastLog,
      samples,
    };
    this.#addContext(raw, event);
    if (this.#taps.length > 0) this.#runTaps(event, watch, tapReads);
    try {
      this.#onBlocked?.(event);
      this.emit('blocked', event);
      const { blocked } = publishChannels();
      if (blocked.hasSubscribers) blocked.publish(channelMessage({ event }, { detector: this }));
    } catch (e) {
      rethrowLater(e);
    }
    // process.on('warning') listeners, as Node's own warnings reach them: unless log is false or
    // the report budget kept this block out of the log.
    if (this.log !== false && !event.logSuppressed) for (const e of emitBlockingWarning(event)) rethrowLater(e);
  }

  /**
   * With taps reading stores: takes their part out of the record's `context` (an array, the user's
   * stores first), leaving the user's own as the native layer would have given it (or none).
   */
  #splitContext(raw: NativeRecord, count: number): ({ value: JsonValue; missing: string | null } | undefined)[] {
    const own = this.#asyncContext;
    const ownCount = own !== undefined && this.#contextMissing === undefined ? own.storages.length : 0;
    const reads: ({ value: JsonValue; missing: string | null } | undefined)[] = [];
    const split = (holder: { context?: JsonValue; contextMissing?: string | null }, collect: boolean) => {
      if (holder.contextMissing === undefined) return;
      const value = holder.context;
      const missing = holder.contextMissing;
      const parts = Array.isArray(value) ? value : undefined;
      if (collect) {
        for (let i = 0; i < count; i++) reads.push({ value: parts?.[ownCount + i] ?? null, missing });
      }
      if (ownCount === 0) {
        delete holder.context;
        delete holder.contextMissing;
      } else if (parts !== undefined) {
        const mine = parts.slice(0, ownCount);
        holder.context = own?.single ? (mine[0] ?? null) : mine;
      }
    };
    split(raw, true);
    for (const w of raw.warnings) split(w, false);
    return reads.length > 0 ? reads : Array.from({ length: count }, () => undefined);
  }

  /** Hands the event to the internal readers, before any listener sees it. */
  #runTaps(
    event: BlockEvent,
    watch: Watch | undefined,
    reads: ({ value: JsonValue; missing: string | null } | undefined)[] | undefined,
  ): void {
    const tapsRead = watch?.taps ?? [];
    // A stopped watch released its anchors: takeContextAnchors finds nothing for it.
    const anchors = tapsRead.length > 0 && watch !== undefined ? native().takeContextAnchors(watch.id) : [];
    for (const tap of this.#taps) {
      const i = tapsRead.indexOf(tap);
      try {
        tap.onBlock(event, i >= 0 ? reads?.[i] : undefined, anchors);
      } catch (e) {
        rethrowLater(e);
      }
    }
  }

  /** `asyncContext`: the stores the native record carries, or why they could not be read. */
  #addContext(raw: NativeRecord, event: BlockEvent): void {
    if (raw.contextMissing !== undefined) {
      event.context = raw.context ?? null;
      event.contextMissing = raw.contextMissing;
    } else if (this.#contextMissing !== undefined) {
      const missing = this.#contextMissing;
      for (const s of [event, ...event.samples]) {
        s.context = null;
        s.contextMissing = missing;
      }
    }
  }

  /** @internal */
  [kInterrupted](info: InterruptInfo): void {
    const raise = this.raiseExc === false || this.raiseExc === null ? AlarmInterrupt : this.raiseExc;
    const err = interruptError(raise, this.timeout, info);
    if (info.microtask) this.#note(`${LOST_CONTINUATIONS} (blocked for ${(info.blockedMs / 1000).toFixed(3)} s)`);
    const handled = this.#onInterrupt !== undefined || this.listenerCount('interrupt') > 0;
    try {
      const { interrupt } = publishChannels();
      if (interrupt.hasSubscribers) interrupt.publish(interruptMessage(err, this));
      this.#onInterrupt?.(err);
      this.emit('interrupt', err);
    } catch (e) {
      rethrowLater(e);
    }
    // Nobody listens: Node's ordinary uncaught-exception path, as for any uncaught error.
    if (!handled) rethrowLater(err);
    // An interrupted ES module top level never settles its evaluation promise, which Node 20
    // reports as exit code 13. The error was handled: let the process end normally.
    else if (info.kind === 'unguarded' && interruptedEsmTopLevel(info) && process.exitCode === undefined) {
      process.exitCode = 0;
    } else if (info.kind === 'unguarded' && info.microtask && forgetDroppedEsmEntry()) {
      this.#note(
        'the ES module entry was still pending when a promise continuation was interrupted; its exit code 13 (unfinished top-level await) no longer applies',
      );
    }
  }

  /** Writes a note where this detector's warnings go. */
  #note(text: string): void {
    const line = `(node:${process.pid}) BlockingWarning: ${text}`;
    if (typeof this.log === 'function') this.log(`${line}\n`);
    else if (this.log === 'json')
      writeSync(
        2,
        `${JSON.stringify({ type: 'BlockingInterrupt', pid: process.pid, threadId: threadId(), message: text })}\n`,
      );
    else if (this.log !== false && !blockingWarningsSilenced()) writeSync(2, `${line}\n`);
  }
}
