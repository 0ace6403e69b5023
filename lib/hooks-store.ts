// `asyncContext` where AsyncLocalStorage is built on async_hooks (Node.js 22 by default, 20): what
// the sampling interrupt needs to find the blocked code's store without running JavaScript
// (crates/node/src/async_context.rs, `Hooks`).
//
// There, `getStore()` is `executionAsyncResource()[kResourceStore]`: an own symbol property of the
// current async resource. The resource is the last of Node's `execution_async_resources` (its
// async_wrap binding) when JavaScript entered that level: timers, immediates, nextTicks, promise
// reactions and `await` continuations, `AsyncResource` scopes, and native callbacks once an
// AsyncLocalStorage is in use (Node's JavaScript trampoline). A level that native code entered
// itself, an HTTP server's request callback for one, is held only in C++, where nothing can read it
// without calling into JavaScript. For those levels, the `run()` and `enterWith()` calls of the
// storages a detector reads are recorded here while it runs: (storage, level, execution async id,
// store). A record answers for the blocked code when its level and async id are the current ones;
// a record whose callback ended can then never match, and is dropped at the next record.
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
  /** Per storage, its `kResourceStore` symbol. */
  symbols: symbol[];
  /** The records, flat: storage, level, async id, store (see the module comment). */
  records: unknown[];
}

const STRIDE = 4;
/** Records kept at most (nested `run()` calls on one stack, and live `enterWith()` calls). */
const MAX_RECORDS = 256;

/** The flat records (see the module comment). Never handed to users. */
const records: unknown[] = [];

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

interface Hooked {
  users: number;
  run: unknown;
  enterWith: unknown;
}

const hooked = new Map<object, Hooked>();

/** Notes a store entered at the current level, after dropping the records of ended callbacks. */
function record(b: Base, storage: object, store: unknown): number {
  const level = b.fields[b.stackLength] as number;
  const id = b.ids[b.executionAsyncId] as number;
  let n = records.length;
  while (n > 0) {
    const l = records[n - 3] as number;
    if (l > level || (l === level && records[n - 2] !== id)) n -= STRIDE;
    else break;
  }
  records.length = n;
  if (n < MAX_RECORDS * STRIDE) records.push(storage, level, id, store);
  return n;
}

/** Wraps `run()` and `enterWith()` of `storage` (own properties; the first user installs them). */
function hook(b: Base, storage: AsyncLocalStorage<unknown>): void {
  const h = hooked.get(storage);
  if (h) {
    h.users++;
    return;
  }
  const s = storage as unknown as Record<string, unknown>;
  const run = s.run as (store: unknown, cb: (...a: unknown[]) => unknown, ...a: unknown[]) => unknown;
  const enterWith = s.enterWith as (store: unknown) => void;
  hooked.set(storage, {
    users: 1,
    run: Object.hasOwn(s, 'run') ? run : undefined,
    enterWith: Object.hasOwn(s, 'enterWith') ? enterWith : undefined,
  });
  s.run = function run_(this: unknown, store: unknown, cb: (...a: unknown[]) => unknown, ...args: unknown[]) {
    const depth = record(b, storage, store);
    try {
      return run.call(this, store, cb, ...args);
    } finally {
      if (records.length > depth) records.length = depth;
    }
  };
  s.enterWith = function enterWith_(this: unknown, store: unknown) {
    record(b, storage, store);
    return enterWith.call(this, store);
  };
}

function unhook(storage: object): void {
  const h = hooked.get(storage);
  if (!h || --h.users > 0) return;
  hooked.delete(storage);
  const s = storage as Record<string, unknown>;
  for (const [name, own] of [
    ['run', h.run],
    ['enterWith', h.enterWith],
  ] as const) {
    if (own === undefined) delete s[name];
    else s[name] = own;
  }
  // Stale records of a storage no longer read are inert (the read matches its own storages) and
  // go with the next record; with no storage read at all, they hold stores for nothing.
  if (hooked.size === 0) records.length = 0;
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
      symbols: storages.map((s) => (s as unknown as { kResourceStore: symbol }).kResourceStore),
      records,
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
  return records.length;
}

/** After a termination: the records made since `depth` belong to code that was cut short. */
export function cutRecords(depth = 0): void {
  if (records.length > depth) records.length = depth;
}
