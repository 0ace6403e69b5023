// `asyncContext` where AsyncLocalStorage is built on async_hooks (Node.js 22 by default, 20): what
// the sampling interrupt needs to find the blocked code's store without running JavaScript
// (crates/node/src/hooks_store.rs).
//
// There, `getStore()` is `executionAsyncResource()[kResourceStore]`: an own symbol property of the
// current async resource. The resource is the last of Node's `execution_async_resources` (its
// async_wrap binding) when JavaScript entered that level: timers, immediates, nextTicks, promise
// reactions and `await` continuations, `AsyncResource` scopes, and native callbacks once an
// AsyncLocalStorage is in use (Node's JavaScript trampoline). The native read takes it from there.
// A level that native code entered itself, an HTTP server's request callback for one, is held only
// in C++, where nothing can read it without calling into JavaScript. For those levels, the `run()`
// and `enterWith()` calls of the storages a detector reads are recorded here while it runs
// (wrapped on AsyncLocalStorage's prototype, so the instances keep their shape; the wrapper is
// one more frame in stack traces through them): (storage, level, execution async id, store). A
// record answers at such a level when its level and async id are the current ones; a record whose
// callback ended can then never match, and is dropped at the next record. Where the records cannot
// tell (none, the cap reached), the read says the store is unknown rather than guess.
//
// A termination skips `run()`'s `finally` (ours and Node's alike). The guards and the unguarded
// repair therefore cut the records back ({@link recordsDepth}, {@link cutRecords}).

import type { AsyncLocalStorage } from 'node:async_hooks';
import { type AsyncWrapBinding, asyncWrapBinding } from './async-id-stack';

/** What the native read takes (`NativeAsyncContext.hooks`). */
export interface NativeHooks {
  /** Node's async-hook fields; `[stackLength]` is the number of levels. */
  fields: Uint32Array;
  stackLength: number;
  /** Node's async ids; `[executionAsyncId]` is the current one. */
  ids: Float64Array;
  executionAsyncId: number;
  /** Node's `execution_async_resources`. */
  resources: unknown[];
  /** `['enabled', resource_symbol]`: an instance's flag, and where Node keeps a public resource. */
  names: [string, symbol];
  /** Per storage, its `kResourceStore` symbol (undefined: not a key the read can use). */
  symbols: (symbol | string | undefined)[];
  /** The records, flat: storage, level, async id, store (see the module comment). */
  records: unknown[];
  /** `[0]`: how many slots of `records` are in use (a multiple of 4). */
  recordsTop: Uint32Array;
}

const STRIDE = 4;
/** Records kept at most (nested `run()` calls on one stack, and live `enterWith()` calls). */
const MAX_RECORDS = 256;

/**
 * The flat records (see the module comment), in a fixed array: setting an array's length is a
 * slow path in V8, and run() would do it twice per call. Never handed to users.
 */
const records: unknown[] = new Array(MAX_RECORDS * STRIDE).fill(undefined);
/**
 * How many slots of `records` are in use. On an ArrayBuffer of its own: a small typed array made
 * without one lives on V8's heap, and the native side's first look at its data would move it.
 */
const top = new Uint32Array(new ArrayBuffer(4));

/**
 * In a record's storage slot: the cap was reached, so what was entered at or above that record's
 * level is not known (the native read then says so rather than answer with an older record).
 */
const OVERFLOW = null;

/** Drops the records from slot `depth` up (their stores are not kept alive). */
function cut(depth: number): void {
  for (let i = depth; i < (top[0] as number); i += STRIDE) {
    records[i] = undefined;
    records[i + 3] = undefined;
  }
  top[0] = depth;
}

interface Base {
  binding: AsyncWrapBinding;
  fields: Uint32Array;
  ids: Float64Array;
  resources: unknown[];
  stackLength: number;
  executionAsyncId: number;
  resourceSymbol: symbol;
}

let base: Base | string | undefined;

/**
 * Node's `resource_symbol`, under which a native resource (an HTTP parser) keeps the resource
 * `executionAsyncResource()` returns: found on a parser of `_http_common`, given a marker object.
 */
function findResourceSymbol(): symbol | undefined {
  try {
    const { HTTPParser } = require('node:_http_common') as {
      HTTPParser: new () => { initialize(type: number, resource: object): void; free?(): void };
    } & { HTTPParser: { RESPONSE: number } };
    const parser = new HTTPParser();
    const marker = {};
    parser.initialize(HTTPParser.RESPONSE, marker);
    const s = Object.getOwnPropertySymbols(parser).find(
      (k) => (parser as unknown as Record<symbol, unknown>)[k] === marker,
    );
    parser.free?.();
    return s;
  } catch {
    return undefined;
  }
}

function resolveBase(): Base | string {
  const binding = asyncWrapBinding();
  const fields = binding?.async_hook_fields;
  const ids = binding?.async_id_fields;
  const resources = binding?.execution_async_resources;
  if (!binding || !(fields instanceof Uint32Array) || !(ids instanceof Float64Array) || !Array.isArray(resources)) {
    return "Node.js's async_wrap binding, where the current async resource is kept, is not available (Node.js 24+ with --no-async-context-frame)";
  }
  const resourceSymbol = findResourceSymbol();
  if (resourceSymbol === undefined) return "Node.js's resource_symbol was not found on an HTTP parser";
  const { kStackLength: stackLength, kExecutionAsyncId: executionAsyncId } = binding.constants;
  return { binding, fields, ids, resources, stackLength, executionAsyncId, resourceSymbol };
}

/** The binding's parts, or why the stores cannot be found on this Node.js. */
export function hooksBase(): Base | string {
  base ??= resolveBase();
  return base;
}

/** Per storage read: by how many detectors (and probes). */
const hooked = new Map<object, number>();

/** Notes a store entered at the current level, after dropping the records of ended callbacks. */
function record(b: Base, storage: object, store: unknown): number {
  const level = b.fields[b.stackLength] as number;
  const id = b.ids[b.executionAsyncId] as number;
  const depth = top[0] as number;
  let n = depth;
  while (n > 0) {
    const l = records[n - 3] as number;
    if (l > level || (l === level && records[n - 2] !== id)) n -= STRIDE;
    else break;
  }
  if (n !== depth) cut(n);
  if (n >= MAX_RECORDS * STRIDE) {
    // Full: the newest record becomes a marker that nothing at or above its level is known (it
    // takes the lower of the two levels, the record it replaces may be an outer one). It stays
    // until the callbacks it covers end or the run() calls around it return; this call's own
    // end cuts nothing.
    const last = n - STRIDE;
    records[last] = OVERFLOW;
    records[last + 1] = Math.min(records[last + 1] as number, level);
    records[last + 3] = undefined;
    return n;
  }
  records[n] = storage;
  records[n + 1] = level;
  records[n + 2] = id;
  records[n + 3] = store;
  top[0] = n + STRIDE;
  return n;
}

/**
 * After `storage.run()` returned (its record is at `depth`): Node put back that storage's store,
 * so its records since go; another storage's `enterWith()` made meanwhile at this level stays, as
 * it does on Node's resource.
 */
function endRun(b: Base, storage: object, depth: number): void {
  const end = top[0] as number;
  if (end <= depth) return;
  if (end === depth + STRIDE) {
    cut(depth);
    return;
  }
  const level = b.fields[b.stackLength] as number;
  const id = b.ids[b.executionAsyncId] as number;
  let kept = depth;
  for (let i = depth + STRIDE; i < end; i += STRIDE) {
    if (records[i] === storage || records[i + 1] !== level || records[i + 2] !== id) continue;
    for (let k = 0; k < STRIDE; k++) records[kept + k] = records[i + k];
    kept += STRIDE;
  }
  cut(kept);
}

/** A method of the class's prototype that a wrapper of ours replaces while storages are read. */
interface Wrapped {
  /** Its own descriptor before (put back when nothing is read any more). */
  original: PropertyDescriptor;
  wrapper: unknown;
}

/**
 * The wrapper that records, per method; none when nothing is read. An older one of ours, left
 * under another library's wrapper, only passes calls through.
 */
const installed: { run?: Wrapped | undefined; enterWith?: Wrapped | undefined } = {};
/** Every wrapper of ours ever installed (so that none is wrapped again). */
const ours = new WeakSet<object>();

/** The wrapper of `name` around `real`. */
function wrapperOf(b: Base, name: 'run' | 'enterWith', real: (...args: unknown[]) => unknown): unknown {
  if (name === 'enterWith') {
    const wrapper = function enterWith(this: object, store: unknown) {
      if (installed.enterWith?.wrapper === wrapper && hooked.has(this)) record(b, this, store);
      return Reflect.apply(real, this, [store]);
    };
    return wrapper;
  }
  const wrapper = function run(this: object, store: unknown, callback: unknown, ...args: unknown[]) {
    if (installed.run?.wrapper !== wrapper || !hooked.has(this)) {
      return Reflect.apply(real, this, [store, callback, ...args]);
    }
    const depth = record(b, this, store);
    try {
      return Reflect.apply(real, this, [store, callback, ...args]);
    } finally {
      endRun(b, this, depth);
    }
  };
  return wrapper;
}

/**
 * Wraps `run()` and `enterWith()` on the class's prototype, unless the wrapper there is ours: the
 * instances themselves are left as they are (their shape, their own keys).
 */
function wrapPrototype(b: Base, proto: object): void {
  for (const name of ['run', 'enterWith'] as const) {
    const original = Object.getOwnPropertyDescriptor(proto, name);
    if (typeof original?.value !== 'function' || ours.has(original.value)) continue;
    const wrapper = wrapperOf(b, name, original.value as (...args: unknown[]) => unknown) as object;
    Object.defineProperty(proto, name, { ...original, value: wrapper });
    ours.add(wrapper);
    installed[name] = { original, wrapper };
  }
}

/**
 * Puts the class's own methods back. One that another library wrapped since (its wrapper calls
 * ours) stays as it is: ours then only passes calls through.
 */
function unwrapPrototype(proto: object): void {
  for (const name of ['run', 'enterWith'] as const) {
    const w = installed[name];
    if (w && Object.getOwnPropertyDescriptor(proto, name)?.value === w.wrapper) {
      Object.defineProperty(proto, name, w.original);
    }
    installed[name] = undefined;
  }
}

/** The class's own prototype, whatever subclass a storage is of (super.run() comes here too). */
function alsPrototype(): object {
  return (require('node:async_hooks') as typeof import('node:async_hooks')).AsyncLocalStorage.prototype;
}

function hook(b: Base, storage: AsyncLocalStorage<unknown>): void {
  hooked.set(storage, (hooked.get(storage) ?? 0) + 1);
  wrapPrototype(b, alsPrototype());
}

function unhook(storage: object): void {
  const users = (hooked.get(storage) ?? 0) - 1;
  if (users > 0) {
    hooked.set(storage, users);
    return;
  }
  hooked.delete(storage);
  if (hooked.size === 0) {
    // Nothing is read any more: no store kept for nothing, and the class's own methods back.
    cut(0);
    unwrapPrototype(alsPrototype());
    return;
  }
  // Its records would answer for it later, though what it enters meanwhile is not recorded.
  for (let i = 0; i < (top[0] as number); i += STRIDE) {
    if (records[i] === storage) {
      records[i] = undefined;
      records[i + 3] = undefined;
    }
  }
}

/** A storage's `kResourceStore`, when it is a property key the native read can look up. */
function storeKey(storage: object): symbol | string | undefined {
  const k = (storage as { kResourceStore?: unknown }).kResourceStore;
  return typeof k === 'symbol' || typeof k === 'string' ? k : undefined;
}

/** The native read's part for `storages`, with their `run()`/`enterWith()` recorded until `release()`. */
export function hookStorages(storages: readonly AsyncLocalStorage<unknown>[]): {
  hooks: NativeHooks;
  release: () => void;
} {
  const b = hooksBase();
  if (typeof b === 'string') throw new Error(`asyncContext: ${b}`);
  for (const s of storages) hook(b, s);
  let released = false;
  return {
    hooks: {
      fields: b.fields,
      stackLength: b.stackLength,
      ids: b.ids,
      executionAsyncId: b.executionAsyncId,
      resources: b.resources,
      names: ['enabled', b.resourceSymbol],
      symbols: storages.map(storeKey),
      records,
      recordsTop: top,
    },
    release() {
      if (released) return;
      released = true;
      for (const s of storages) unhook(s);
    },
  };
}

/** How many records there are (a guard's entry). */
export function recordsDepth(): number {
  return top[0] as number;
}

/** After a termination: the records made since `depth` belong to code that was cut short. */
export function cutRecords(depth = 0): void {
  if ((top[0] as number) > depth) cut(depth);
}
