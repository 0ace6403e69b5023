// Node's async-id stack, as the interrupt repairs need it: Node's internal binding where it exists
// (Node 20 and 22), the way Node empties the stack after a handled uncaught exception, and where a
// guard's caller stood.
import { executionAsyncId } from 'node:async_hooks';
import { native } from './native';

export interface AsyncWrapBinding {
  constants: {
    kStackLength: number;
    kExecutionAsyncId: number;
    kTriggerAsyncId: number;
    kUsesExecutionAsyncResource?: number;
  };
  /** Node's async-hook counters and flags, indexed by `constants` (`kStackLength`, ...). */
  async_hook_fields?: Uint32Array;
  /** The current async ids, indexed by `constants.kExecutionAsyncId` / `kTriggerAsyncId`. */
  async_id_fields?: Float64Array;
  /** (execution, trigger) id pairs of the levels below the current one (Node replaces it as it grows). */
  async_ids_stack?: Float64Array;
  /** The resources of the levels JavaScript pushed, in order. */
  execution_async_resources?: unknown[];
}

/**
 * Node's internal async_wrap binding (deprecated DEP0111, gone in Node 24), without the warning.
 * Where it exists, the repair after an unguarded interrupt pops exactly the levels the interrupted
 * JavaScript pushed; elsewhere {@link clearAsyncIdStack} empties the stack.
 */
export function asyncWrapBinding(): AsyncWrapBinding | null {
  const p = process as unknown as { binding?: (name: string) => unknown; noDeprecation: boolean | undefined };
  if (typeof p.binding !== 'function') return null;
  const before = p.noDeprecation;
  p.noDeprecation = true;
  try {
    const b = p.binding('async_wrap') as Partial<AsyncWrapBinding> | undefined;
    const c = b?.constants;
    const ok =
      c &&
      typeof c.kStackLength === 'number' &&
      typeof c.kExecutionAsyncId === 'number' &&
      typeof c.kTriggerAsyncId === 'number';
    return ok ? (b as AsyncWrapBinding) : null;
  } catch {
    return null;
  } finally {
    p.noDeprecation = before;
  }
}

/** What Node's uncaught-exception path receives from {@link clearAsyncIdStack}; nobody else sees it. */
const kClearSentinel = Object.freeze({ 'loop-helpers': 'clear async-id stack' });

/**
 * Empties Node's async-id stack the way Node does after an uncaught exception that a handler
 * caught (`clearAsyncIdStack()` in Node's `createOnGlobalUncaughtException`). Called right after
 * an unguarded termination was cancelled (by the native side), or an interrupt unwound to a
 * guard ({@link restoreLevel}), where `process.binding('async_wrap')` is gone (Node 24+)
 * and the levels the interrupted JavaScript pushed cannot be popped one by one.
 * `trigger` is `napi_fatal_exception`. A one-shot capture callback keeps the sentinel away from
 * `'uncaughtException'` listeners, and `'uncaughtExceptionMonitor'` listeners are skipped for it.
 * Returns false when another capture callback is set (a domain, or the application's own): then
 * the stack is left as it is.
 */
export function clearAsyncIdStack(trigger: (sentinel: unknown) => void): boolean {
  if (process.hasUncaughtExceptionCaptureCallback()) return false;
  const hadOwnEmit = Object.hasOwn(process, 'emit');
  const emit = process.emit;
  process.emit = function emitSkippingSentinel(this: NodeJS.Process, event: string | symbol, ...args: unknown[]) {
    if (event === 'uncaughtExceptionMonitor' && args[0] === kClearSentinel) return false;
    return (emit as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as NodeJS.Process['emit'];
  process.setUncaughtExceptionCaptureCallback(() => {});
  try {
    trigger(kClearSentinel);
  } finally {
    process.setUncaughtExceptionCaptureCallback(null);
    if (hadOwnEmit) process.emit = emit;
    else delete (process as { emit?: unknown }).emit;
  }
  return true;
}

// ---- Where a guard's caller stood.
//
// Code that entered an async scope of its own (`AsyncResource.runInAsyncScope()`, an
// `EventEmitterAsyncResource`'s listeners, `AsyncResource.bind()`) and was stopped there never left
// it: the termination skipped the `finally` that pops its level. The guard's caller would go on one
// level too deep, and Node aborts the process ("async hook stack has become corrupted") when the
// callback around it ends. So each guard (`run()`/`wrap()`, and the one around every queueMicrotask
// callback, ./unguarded.ts) notes where the stack stood and puts it back:
// - Node 20 and 22: through `process.binding('async_wrap')`, popping exactly the levels JavaScript
//   pushed since (what Node's own `popAsyncContext` does, and the repair after an unguarded
//   interrupt: {@link popJsLevels}); cost at entry, one typed-array read;
// - 24+, where that binding is gone: when the execution async id is not the one at entry, the
//   stack is emptied the way Node does after an uncaught exception that a handler caught
//   ({@link clearAsyncIdStack}). The rest of the caller's callback then runs at async id
//   0, as after such an exception; AsyncLocalStorage stores, which live in frames there, are not
//   affected. Cost at entry: `executionAsyncId()`.

/** Where Node's async-id stack stood at a guard's entry: its length, or the execution async id. */
export type SavedLevel = number;

interface LevelTools {
  save(): SavedLevel;
  restore(saved: SavedLevel): void;
  /** The precise pop down to `floor`, with the popped levels' resources (Node 20 and 22 only). */
  pop?: (floor: number) => unknown[];
}

let levelTools: LevelTools | undefined;

function makeLevelTools(): LevelTools {
  const b = asyncWrapBinding();
  const fields = b?.async_hook_fields;
  const ids = b?.async_id_fields;
  const resources = b?.execution_async_resources;
  if (b && fields && ids && resources && b.async_ids_stack) {
    const { kStackLength, kExecutionAsyncId, kTriggerAsyncId } = b.constants;
    // Pops down to `floor`; `into` (if given) receives the popped levels' resources, innermost
    // first. Node's state is complete before `into` is touched: an `Array.prototype` setter of
    // the application's may run there, and must find a consistent stack.
    const popTo = (floor: number, into?: unknown[]): void => {
      for (let n = fields[kStackLength] as number; n > floor; n = fields[kStackLength] as number) {
        const i = n - 1;
        // A level a native scope pushed has no resource here: that scope pops it itself.
        if (i >= resources.length || !(i in resources)) break;
        // Node replaces async_ids_stack when it grows: read it afresh.
        const stack = b.async_ids_stack as Float64Array;
        if (2 * i + 1 >= stack.length) break;
        const resource = resources[i];
        ids[kExecutionAsyncId] = stack[2 * i] as number;
        ids[kTriggerAsyncId] = stack[2 * i + 1] as number;
        resources.length = i;
        fields[kStackLength] = i;
        if (into) into[into.length] = resource;
      }
    };
    return {
      save: () => fields[kStackLength] as number,
      restore: (floor) => popTo(floor),
      pop(floor) {
        const popped: unknown[] = [];
        popTo(floor, popped);
        return popped;
      },
    };
  }
  return {
    save: () => executionAsyncId(),
    restore(id) {
      if (executionAsyncId() !== id) clearAsyncIdStack((sentinel) => native().triggerUncaught(sentinel));
    },
  };
}

/** Where Node's async-id stack stands now (at a guard's entry). */
export function saveLevel(): SavedLevel {
  levelTools ??= makeLevelTools();
  return levelTools.save();
}

/** After our interrupt unwound to the guard: Node's async-id stack back where it stood at entry. */
export function restoreLevel(saved: SavedLevel): void {
  levelTools?.restore(saved);
}

/** Whether {@link popJsLevels} can pop (Node 20 and 22: the async_wrap binding is there). */
export function canPopJsLevels(): boolean {
  levelTools ??= makeLevelTools();
  return levelTools.pop !== undefined;
}

/**
 * After an unguarded termination: pops every level JavaScript pushed and the termination never
 * popped, as Node's own `popAsyncContext` would have, stopping at the first level a native scope
 * owns. Returns the popped levels' resources, innermost first (the timer repair looks among them
 * for the Timeout or Immediate that was cut short); undefined where the binding is gone (24+).
 */
export function popJsLevels(): unknown[] | undefined {
  levelTools ??= makeLevelTools();
  return levelTools.pop?.(0);
}
