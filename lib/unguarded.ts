// Interrupting code outside detector.run(): a guard around every queueMicrotask callback, and V8's
// after-termination callbacks (native, see crates/node/src/unguarded.rs) for everything else,
// timer, immediate and nextTick callbacks included (Node's timer lists are repaired afterwards:
// ./timer-repair.ts). Installed in a thread the first time an interrupting detector
// starts there; while none runs, the guards step aside.

// Node's own timers, never the globals: jest or sinon may have replaced those with fake timers.
import { executionAsyncResource } from 'node:async_hooks';
import * as nodeTimers from 'node:timers';
import { canPopJsLevels, clearAsyncIdStack, popJsLevels, restoreLevel, saveLevel } from './async-id-stack';
import { cutRecords, recordsDepth } from './hooks-store';
import { forgetInterruptedLoads, installRequireRepair, loadDepth } from './modules';
import { native } from './native';
import { immediateRunningCell, installTimerRepair, type RepairTimers, repairInterruptedTimers } from './timer-repair';

interface Installed {
  guardApply: (fn: (...args: unknown[]) => unknown, ...args: unknown[]) => unknown;
  /** Why unguarded code (promise reactions, I/O callbacks, top level) cannot be interrupted. */
  unguardedReason: string | undefined;
}

let installed: Installed | undefined;
/** Interrupting detectors running in this thread. */
let active = 0;

/**
 * Called by the native side right after it cancelled an unguarded termination (V8's
 * after-termination callbacks), before Node's C++ goes on. First Node's async-id stack: the levels
 * the interrupted JavaScript pushed are popped exactly where Node's async_wrap binding exists
 * (Node 20/22, {@link popJsLevels}); elsewhere the stack is emptied through Node's
 * uncaught-exception path (`trigger`, {@link clearAsyncIdStack}). Either way the interrupted code's
 * resources are known first, so that a Timeout whose callback was cut short before the recorders
 * saw it start (it was created before they were installed) is repaired too. The timer repair
 * comes last: it appends immediates, and must be the last to do so before Node runs its immediate
 * queue again.
 */
function afterTermination(trigger: (sentinel: unknown) => void): void {
  const popped = popJsLevels();
  const resources = popped ?? [executionAsyncResource()];
  // Node's uncaught-exception path, when taken, also queues an immediate (so that ticks queued
  // behind the interrupted one run soon); elsewhere one of ours does. Before the timer repair,
  // which must append last.
  const nodeQueuedImmediate = popped === undefined && clearAsyncIdStack(trigger);
  if (!nodeQueuedImmediate) timersAtLoad.setImmediate(noop);
  forgetInterruptedLoads(0);
  // Every record of a store entered (lib/hooks-store.ts) belonged to the JavaScript cut short.
  cutRecords(0);
  repairInterruptedTimers(resources);
}

const noop = (): void => {};

interface TimerSource {
  setTimeout: typeof nodeTimers.setTimeout;
  clearTimeout: typeof nodeTimers.clearTimeout;
  setImmediate: typeof nodeTimers.setImmediate;
  clearImmediate: typeof nodeTimers.clearImmediate;
}

/**
 * `node:timers`' functions as they were when this module loaded: jest's and sinon's fake timers,
 * installed later (typically in a test's setup), replace the globals and the module's exports.
 */
const timersAtLoad: TimerSource = {
  setTimeout: nodeTimers.setTimeout,
  clearTimeout: nodeTimers.clearTimeout,
  setImmediate: nodeTimers.setImmediate,
  clearImmediate: nodeTimers.clearImmediate,
};

/**
 * The prototypes of Node's real Timeout and Immediate objects. Taken from `node:timers` as it was
 * when this module loaded, then as it is now, then from the globals, and only where the object
 * looks like Node's own (`_onTimeout`/`_idleTimeout`, `_onImmediate`): fake timers' objects are
 * plain. Without a real one, those callbacks go unguarded; never is a guard put on
 * `Object.prototype`.
 */
function timerPrototypes(): { TimeoutProto: object | undefined; ImmediateProto: object | undefined } {
  let TimeoutProto: object | undefined;
  let ImmediateProto: object | undefined;
  for (const source of [timersAtLoad, nodeTimers, globalThis] as TimerSource[]) {
    try {
      if (!TimeoutProto) {
        const t = source.setTimeout(() => {}, 0) as unknown as Record<string, unknown>;
        source.clearTimeout(t as unknown as NodeJS.Timeout);
        const proto = Object.getPrototypeOf(t) as object | null;
        const real = typeof t._idleTimeout === 'number' && '_onTimeout' in t;
        if (real && proto && proto !== Object.prototype) TimeoutProto = proto;
      }
      if (!ImmediateProto) {
        const im = source.setImmediate(() => {}) as unknown as Record<string, unknown>;
        source.clearImmediate(im as unknown as NodeJS.Immediate);
        const proto = Object.getPrototypeOf(im) as object | null;
        const real = typeof im._onImmediate === 'function' || '_onImmediate' in im;
        if (real && proto && proto !== Object.prototype) ImmediateProto = proto;
      }
    } catch {
      // A fake that throws (for example a clearImmediate that rejects our object): next source.
    }
  }
  return { TimeoutProto, ImmediateProto };
}

function install(deliver: (json: string) => void): Installed {
  installRequireRepair();
  // First among the 'exit' listeners registered so far, so that none of them is interrupted.
  process.prependListener('exit', onExit);
  const precise = canPopJsLevels();
  const { TimeoutProto, ImmediateProto } = timerPrototypes();
  // With the precise async-id repair, the levels it pops name the Timeout or Immediate that was cut
  // short, and nothing needs to run per callback; elsewhere accessors record each one as it starts.
  installTimerRepair(TimeoutProto, ImmediateProto, timersAtLoad as RepairTimers, precise ? 'resources' : 'record');
  const [guardApply, reason] = native().installInterrupts(
    { preciseAsyncIds: precise, afterTermination, immediateRunning: immediateRunningCell() },
    deliver,
  );

  // queueMicrotask callbacks keep a guard: a termination in a microtask makes V8 drop every other
  // microtask of the checkpoint, which no repair can bring back. nextTick callbacks need none: the
  // ticks after an interrupted one stay queued and run at Node's next tick processing (an
  // immediate of ours makes sure there is one soon, see afterTermination).
  const apply = guardApply as (fn: () => unknown) => unknown;
  const qm = globalThis.queueMicrotask;
  globalThis.queueMicrotask = function queueMicrotask(callback: () => void) {
    if (active === 0 || typeof callback !== 'function') return qm(callback);
    return qm(() => {
      const depth = loadDepth();
      const level = saveLevel();
      const records = recordsDepth();
      apply(callback);
      if (loadDepth() !== depth) forgetInterruptedLoads(depth);
      cutRecords(records);
      // After an interrupt, the async scopes the callback had entered were never left; after a
      // normal return the level is where it was, and this does nothing.
      restoreLevel(level);
    });
  };
  return {
    guardApply: guardApply as Installed['guardApply'],
    unguardedReason: reason ?? undefined,
  };
}

/**
 * An interrupting detector starts in this thread. Returns why unguarded code cannot be interrupted
 * here (undefined when it can).
 */
export function acquireInterrupts(deliver: (json: string) => void, unguardedAllowed: boolean): string | undefined {
  installed ??= install(deliver);
  active++;
  native().setInterruptsActive(unguardedAllowed && !exiting);
  return installed.unguardedReason;
}

/**
 * The thread is exiting (`'exit'` listeners run): from now on unguarded code is only reported.
 * An interrupt there would skip the remaining `'exit'` listeners, and its error could never be
 * delivered (the loop does not turn again). `run()`/`wrap()` still throw: that needs no delivery.
 */
let exiting = false;
function onExit(): void {
  exiting = true;
  native().setInterruptsActive(false);
}

/** An interrupting detector stopped. */
export function releaseInterrupts(): void {
  if (active === 0) return;
  active--;
  if (active === 0) native().setInterruptsActive(false);
}

/** Why unguarded code cannot be interrupted in this thread, as far as known before installing. */
export function unguardedProbe(): string | undefined {
  if (installed) return installed.unguardedReason;
  return undefined;
}
