// What `run()`/`wrap()` put back when our interrupt unwinds to them and they throw it to their
// caller, who goes on: AsyncLocalStorage stores, where they hang off async resources (Node.js 20,
// 22 without --experimental-async-context-frame, and 24+ with --no-async-context-frame). (Where Node keeps them in AsyncContextFrames, the native
// guard saves and restores the frame: crates/node/src/context_frame.rs. Node's async-id stack is
// put back first: ./async-id-stack.ts.)
//
// A termination skips `finally` blocks, among them `AsyncLocalStorage.run()`'s, which puts the old
// store back on the current resource. Without this, the guard's caller, and everything it then
// schedules, would go on with the store the interrupted code had entered. So the guard saves the
// current resource's stores when it is entered, and, when our interrupt unwinds to it, puts them
// back as they were (a store entered in the interrupted code, with `run()` or `enterWith()`, is
// dropped). Only the stores are touched, never the resource's other properties (a Timeout's ref
// state, its async ids).
//
// Where the stores are, by Node.js version (its AsyncLocalStorage, async_hooks variant):
// - 20 and 22: on the resource, one property per AsyncLocalStorage, under its own symbol
//   (description `kResourceStore`);
// - 24+: one object on the resource (symbol `kAsyncLocalStorageContext`), which holds one property
//   per AsyncLocalStorage.
// The tests run the same interrupt on each version and in each mode (guard-context.test.mjs).
//
// Cost per guarded call (measured on Node.js 22, run() of an empty function, 96-102 ns before): next
// to nothing until an AsyncLocalStorage has been used in the thread; from then on about 0.4 µs to copy
// the current resource's stores (always on 24+ with --no-async-context-frame, where Node's flag
// cannot be read). Most of that is V8's `Object.getOwnPropertySymbols` of a Timeout (about 180 ns);
// no cheaper way finds the store symbols of AsyncLocalStorage instances made since the last guard.
import { executionAsyncResource } from 'node:async_hooks';
import { usesAsyncContextFrame } from './async-context';
import { asyncWrapBinding } from './async-id-stack';

type Holder = Record<symbol, unknown>;

/** One holder's store properties at the guard's entry: `keys[i]` held `values[i]`. */
interface HolderStores {
  holder: Holder;
  keys: symbol[];
  values: unknown[];
}

/** The current resource's stores at a guard's entry. */
interface ResourceStores {
  resource: Holder;
  /** Node 20/22: the resource's own store properties. */
  own: HolderStores;
  /** Node 24+: the resource's store object (under `sharedKey`) and what it held. */
  sharedKey: symbol | undefined;
  shared: HolderStores | undefined;
}

/**
 * At a guard's entry: no AsyncLocalStorage had ever read or written a store in this thread (Node
 * counts the first call of `executionAsyncResource()`, which each of them makes), so no resource
 * had one.
 */
const NO_STORE_ANYWHERE = Symbol('no store anywhere');

export type SavedStores = ResourceStores | typeof NO_STORE_ANYWHERE;

const PER_INSTANCE = 'kResourceStore';
const SHARED = 'kAsyncLocalStorageContext';

/** What each symbol seen on a resource is (a symbol's description is read once). */
const kinds = new Map<symbol, 'store' | 'shared' | 'other'>();

function kindOf(s: symbol): 'store' | 'shared' | 'other' {
  let k = kinds.get(s);
  if (k === undefined) {
    k = s.description === PER_INSTANCE ? 'store' : s.description === SHARED ? 'shared' : 'other';
    // Node's own symbols and one per AsyncLocalStorage: a few dozen at most.
    if (kinds.size < 1024) kinds.set(s, k);
  }
  return k;
}

/**
 * Whether a store may exist on some resource: null where Node keeps stores in frames (nothing to
 * do here); else whether `executionAsyncResource()` was ever called in this thread, read from
 * Node's own flag (`kUsesExecutionAsyncResource`, Node 20/22). Calling it here would set that flag
 * for good, and from then on Node would send every callback from native code through its
 * JavaScript trampoline. Where the flag cannot be read (24+ with --no-async-context-frame, where
 * the binding is gone), always. Undefined until first asked.
 */
let storesMayExist: (() => boolean) | null | undefined;

function whetherStoresMayExist(): (() => boolean) | null {
  if (usesAsyncContextFrame()) return null;
  const binding = asyncWrapBinding();
  const fields = binding?.async_hook_fields;
  const k = binding?.constants.kUsesExecutionAsyncResource;
  if (fields === undefined || k === undefined || k >= fields.length) return () => true;
  return () => fields[k] !== 0;
}

/** The stores of the current async resource, or undefined where Node keeps them in frames. */
export function saveStores(): SavedStores | undefined {
  if (storesMayExist === undefined) storesMayExist = whetherStoresMayExist();
  if (storesMayExist === null) return undefined;
  if (!storesMayExist()) return NO_STORE_ANYWHERE;
  const resource = executionAsyncResource() as Holder;
  const own: HolderStores = { holder: resource, keys: [], values: [] };
  let sharedKey: symbol | undefined;
  let shared: HolderStores | undefined;
  for (const s of Object.getOwnPropertySymbols(resource)) {
    const kind = kindOf(s);
    if (kind === 'store') {
      own.keys.push(s);
      own.values.push(resource[s]);
    } else if (kind === 'shared') {
      sharedKey = s;
      const holder = resource[s];
      if (typeof holder === 'object' && holder !== null) {
        const keys = Object.getOwnPropertySymbols(holder);
        shared = { holder: holder as Holder, keys, values: keys.map((k) => (holder as Holder)[k]) };
      }
    }
  }
  return { resource, own, sharedKey, shared };
}

/** Puts a holder's store properties (`isStore`) back as they were, dropping newer ones. */
function putBack(saved: HolderStores, isStore: (s: symbol) => boolean): void {
  const { holder, keys, values } = saved;
  for (const s of Object.getOwnPropertySymbols(holder)) {
    if (isStore(s) && !keys.includes(s)) delete holder[s];
  }
  for (let i = 0; i < keys.length; i++) holder[keys[i] as symbol] = values[i];
}

/**
 * After our interrupt unwound to the guard (and Node's async-id stack is back at the guard's
 * level): the stores as they were at its entry.
 */
export function restoreStores(saved: SavedStores): void {
  if (saved === NO_STORE_ANYWHERE) {
    // An AsyncLocalStorage first used in the guarded code: what it entered goes.
    if (storesMayExist?.() !== true) return;
    const resource = executionAsyncResource() as Holder;
    for (const s of Object.getOwnPropertySymbols(resource)) {
      if (kindOf(s) !== 'other') delete resource[s];
    }
    return;
  }
  const { resource } = saved;
  putBack(saved.own, (s) => kindOf(s) === 'store');
  if (saved.shared !== undefined && saved.sharedKey !== undefined) {
    resource[saved.sharedKey] = saved.shared.holder;
    putBack(saved.shared, () => true);
  } else {
    // A store object made by the interrupted code.
    for (const s of Object.getOwnPropertySymbols(resource)) {
      if (kindOf(s) === 'shared') delete resource[s];
    }
  }
}
