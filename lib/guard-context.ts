// AsyncLocalStorage stores across an interrupt that `run()`/`wrap()` throw to their caller, where
// the stores hang off async resources: Node.js 20, 22 without --experimental-async-context-frame,
// and 24+ with --no-async-context-frame. (Where Node keeps them in AsyncContextFrames, the native
// guard saves and restores the frame: crates/node/src/context_frame.rs.)
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
// Cost per guarded call (measured on Node.js 22, run() of an empty function, 95 ns before): about
// 15 ns to read the current resource, and about 0.33 µs more to copy its stores while an async hook
// with an init callback is enabled (every async_hooks-based AsyncLocalStorage that has been used
// enables one), or where Node's count of them cannot be read (24+ with --no-async-context-frame).
// Most of that is V8's `Object.getOwnPropertySymbols` of a Timeout (about 180 ns); no cheaper way
// finds the store symbols of AsyncLocalStorage instances made since the last guard.
import { executionAsyncResource } from 'node:async_hooks';
import { usesAsyncContextFrame } from './async-context';
import { asyncWrapBinding } from './unguarded';

type Holder = Record<symbol, unknown>;

/** One holder's store properties at the guard's entry: `keys[i]` held `values[i]`. */
interface HolderStores {
  holder: Holder;
  keys: symbol[];
  values: unknown[];
}

/** The current resource's stores at a guard's entry. */
export interface SavedStores {
  /** Node 20/22: the resource's own store properties. */
  own: HolderStores;
  /** Node 24+: the resource's store object and what it held (undefined: it had none). */
  shared: HolderStores | undefined;
}

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
 * Whether stores may hang off resources now: null where Node keeps them in frames (nothing to do
 * here), else whether an async hook with an init callback is enabled (undefined until first asked).
 */
let storesMayExist: (() => boolean) | null | undefined;

function whetherStoresMayExist(): (() => boolean) | null {
  if (usesAsyncContextFrame()) return null;
  const binding = asyncWrapBinding();
  const fields = binding?.async_hook_fields;
  const kInit = binding?.constants.kInit;
  if (fields === undefined || kInit === undefined) return () => true;
  return () => fields[kInit] !== 0;
}

/** The stores of the current async resource, or undefined where Node keeps them in frames. */
export function saveStores(): SavedStores | undefined {
  if (storesMayExist === undefined) storesMayExist = whetherStoresMayExist();
  if (storesMayExist === null) return undefined;
  const resource = executionAsyncResource() as Holder;
  // No AsyncLocalStorage is enabled (each enables an init hook): none has a store here, and one
  // first used in the guarded code must not keep what it entered either.
  if (!storesMayExist()) return { own: { holder: resource, keys: [], values: [] }, shared: undefined };
  const own: HolderStores = { holder: resource, keys: [], values: [] };
  let shared: HolderStores | undefined;
  for (const s of Object.getOwnPropertySymbols(resource)) {
    const kind = kindOf(s);
    if (kind === 'store') {
      own.keys.push(s);
      own.values.push(resource[s]);
    } else if (kind === 'shared') {
      const holder = resource[s];
      if (typeof holder === 'object' && holder !== null) {
        const keys = Object.getOwnPropertySymbols(holder);
        shared = { holder: holder as Holder, keys, values: keys.map((k) => (holder as Holder)[k]) };
      }
    }
  }
  return { own, shared };
}

/** Puts a holder's store properties (`isStore`) back as they were, dropping newer ones. */
function putBack(saved: HolderStores, isStore: (s: symbol) => boolean): void {
  const { holder, keys, values } = saved;
  for (const s of Object.getOwnPropertySymbols(holder)) {
    if (isStore(s) && !keys.includes(s)) delete holder[s];
  }
  for (let i = 0; i < keys.length; i++) holder[keys[i] as symbol] = values[i];
}

/** After our interrupt unwound to the guard: the stores as they were at its entry. */
export function restoreStores(saved: SavedStores): void {
  const resource = saved.own.holder;
  putBack(saved.own, (s) => kindOf(s) === 'store');
  for (const s of Object.getOwnPropertySymbols(resource)) {
    if (kindOf(s) !== 'shared') continue;
    if (saved.shared === undefined) {
      // Made by the interrupted code.
      delete resource[s];
    } else {
      resource[s] = saved.shared.holder;
      putBack(saved.shared, () => true);
    }
  }
}
