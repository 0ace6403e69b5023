// The `asyncContext` option: which AsyncLocalStorage stores a detector reports with each block.
// The stores are read natively, inside the V8 interrupt that samples the blocked code's stack
// (crates/node/src/async_context.rs); this file only validates the option and describes the result.

import type { AsyncLocalStorage } from 'node:async_hooks';
import { argError, describe } from './errors';

/** One AsyncLocalStorage to report, with the keys of its store to keep. */
export interface AsyncContextEntry {
  /** The AsyncLocalStorage whose store is reported. */
  storage: AsyncLocalStorage<unknown>;
  /**
   * Keep only these top-level keys of the store (own data properties of an object store, or
   * string keys of a `Map` store); the snapshot is then a plain object of those found. Overrides
   * {@link BlockingDetectorOptions.asyncContextKeys} for this storage. At most 50.
   */
  keys?: readonly string[];
}

/** An AsyncLocalStorage, a `{ storage, keys }` entry, or an array of either. */
export type AsyncContextOption =
  | AsyncLocalStorage<unknown>
  | AsyncContextEntry
  | ReadonlyArray<AsyncLocalStorage<unknown> | AsyncContextEntry>;

/** A JSON value: what `event.context` holds. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The validated option, in the form the native `start()` takes. */
export interface ResolvedAsyncContext {
  storages: AsyncLocalStorage<unknown>[];
  /** Per storage: the keys to keep, or null (the whole store). */
  keys: (string[] | null)[];
  /** One storage given alone: `context` is its snapshot, not an array of one. */
  single: boolean;
}

/** Keys kept per storage at most (the snapshot's limit of keys per object). */
export const MAX_CONTEXT_KEYS = 50;

/**
 * The start of why `context` is null where AsyncLocalStorage is not built on AsyncContextFrame
 * and the current async resource cannot be found here (lib/hooks-store.ts says why after it).
 */
export const HOOKS_BASED_REASON =
  'AsyncLocalStorage is async_hooks-based on this Node.js (Node.js < 24 without --experimental-async-context-frame, or --no-async-context-frame), and its store hangs off the current async resource, which cannot be found without running JavaScript';

function alsClass(): typeof AsyncLocalStorage {
  return (require('node:async_hooks') as typeof import('node:async_hooks')).AsyncLocalStorage;
}

let framesHoldStores: boolean | undefined;

/** Whether this Node.js keeps AsyncLocalStorage stores in AsyncContextFrames (fixed per process). */
export function usesAsyncContextFrame(): boolean {
  // The async_hooks-based class keeps its per-resource symbol as an own property; the frame-based
  // one has only private fields.
  framesHoldStores ??= !Object.hasOwn(new (alsClass())(), 'kResourceStore');
  return framesHoldStores;
}

function validateKeys(name: string, v: unknown): string[] {
  if (!Array.isArray(v) || !v.every((k) => typeof k === 'string' && k.length > 0)) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "${name}" option must be an array of non-empty strings. Received ${describe(v)}`,
    );
  }
  if (v.length > MAX_CONTEXT_KEYS) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "${name}" option must have at most ${MAX_CONTEXT_KEYS} keys. Received ${v.length}`,
    );
  }
  return [...v] as string[];
}

/** Validates `asyncContext` and `asyncContextKeys`; undefined when `asyncContext` is not given. */
export function resolveAsyncContext(option: unknown, defaultKeys: unknown): ResolvedAsyncContext | undefined {
  if (option === undefined) {
    if (defaultKeys !== undefined) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        'The "asyncContextKeys" option needs the "asyncContext" option (the AsyncLocalStorage to read)',
      );
    }
    return undefined;
  }
  const ALS = alsClass();
  const keys = defaultKeys === undefined ? null : validateKeys('asyncContextKeys', defaultKeys);
  const single = !Array.isArray(option);
  const items: unknown[] = single ? [option] : [...(option as unknown[])];
  if (items.length === 0) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_VALUE',
      'The "asyncContext" option must not be an empty array: give the AsyncLocalStorage to read',
    );
  }
  const out: ResolvedAsyncContext = { storages: [], keys: [], single };
  items.forEach((item, i) => {
    const name = single ? 'asyncContext' : `asyncContext[${i}]`;
    if (item instanceof ALS) {
      out.storages.push(item);
      out.keys.push(keys);
      return;
    }
    if (typeof item === 'object' && item !== null && !Array.isArray(item)) {
      for (const k of Object.keys(item)) {
        if (k !== 'storage' && k !== 'keys') {
          throw argError(
            'type',
            'ERR_INVALID_ARG_VALUE',
            `Unknown key "${k}" in the "${name}" option. Known keys: storage, keys`,
          );
        }
      }
      const { storage, keys: own } = item as { storage?: unknown; keys?: unknown };
      if (!(storage instanceof ALS)) {
        throw argError(
          'type',
          'ERR_INVALID_ARG_TYPE',
          `The "${name}.storage" option must be an AsyncLocalStorage. Received ${describe(storage)}`,
        );
      }
      out.storages.push(storage);
      out.keys.push(own === undefined ? keys : validateKeys(`${name}.keys`, own));
      return;
    }
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "${name}" option must be an AsyncLocalStorage or a { storage, keys } object${single ? ', or an array of them' : ''}. Received ${describe(item)}`,
    );
  });
  return out;
}
