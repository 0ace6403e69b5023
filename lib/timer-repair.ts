// Timer and Immediate callbacks run with no guard frame of ours: an interrupt terminates them like
// any other unguarded code, and this module puts Node's timer lists back in order afterwards.
//
// A termination skips `finally` blocks. Node's `listOnTimeout` and `processImmediate`
// (lib/internal/timers.js, unchanged in what follows from Node 20 to 26) run each callback in a
// `try { ... } finally { ... }` whose `finally` does their bookkeeping. Skipped, it leaves:
// - a Timeout taken off its list but neither destroyed nor re-armed: a setTimeout's still counts
//   as a ref (the process never exits), a setInterval's never fires again;
// - an Immediate marked destroyed while the batch's cursor (`outstandingQueue.head`) still points
//   at it: Node's check phase calls `processImmediate` again right away, which then reads
//   `prevImmediate._idleNext` of undefined (a TypeError at every turn). When it was the first of
//   its batch, the cursor was never set, and the rest of the batch is simply lost.
// The repair, run once the terminated JavaScript has unwound (before Node's C++ calls
// `processTimers`/`processImmediate` again), finishes what the `finally` would have done, with
// public API only:
// - Timeout: re-armed (`refresh()`) if it repeats, else `clearTimeout()`;
// - Immediate, first of its batch: the rest of the batch is spliced into Node's queue between two
//   immediates of ours, in order, so it runs in this same check phase;
// - Immediate after others: it runs once more as a no-op (the cursor is on it), which counts it
//   off Node's immediate count a second time; one immediate of ours is left off every list
//   uncounted, which gives that count back.
//
// Which Timeout or Immediate was cut short is found one of two ways ({@link TimerRepairMode}):
// - 'resources' (Node 20 and 22): the precise async-id repair (crates/node/src/unguarded.rs) pops
//   every level the interrupted JavaScript pushed, and hands over their async resources, innermost
//   first. Node pushes the Timeout or Immediate itself as the resource of its callback, so it is
//   among them, also under an AsyncResource scope entered inside the callback. Nothing runs per
//   callback, and every Immediate can be repaired, whenever it was made.
// - 'record' (Node 24+, where only the innermost resource is known): Node reads
//   `timer._timerArgs` / `immediate._onImmediate` right before it calls the callback, so an
//   accessor on the prototypes records which object's callback started. The cost while no
//   interrupt happens: one accessor call and two loads per callback, and one accessor call when it
//   is created. Counted with callgrind on Node 24, `interrupt: 'everywhere'` adds 78 instructions
//   per setImmediate ping-pong callback over detect-only, where it added 182 while the recorder
//   stored the Immediate into a module variable (see `immediateHolder`). On V8 11-12 (Node 20,
//   22) the accessor call itself is not inlined and costs ~130 instructions, which is why those
//   versions use 'resources'. A Timeout's recorder is on `_timerArgs`, not `_onTimeout`: Node
//   reads `_onTimeout` twice per run (a check, then the call) and clearTimeout() reads and writes
//   it, while `_timerArgs` is read once, right before the call, and written when the Timeout is
//   made. An Immediate made before the recorders were installed keeps its callback in an own
//   property, is never recorded, and so is never terminated (see {@link immediateRunningCell}).

const kTimerArgs = Symbol('loop-helpers:timerArgs');
const kOnImmediate = Symbol('loop-helpers:onImmediate');

/** Node's Timeout, as far as the repair reads and writes it. */
interface TimeoutLike {
  _idleNext: unknown;
  _idlePrev: unknown;
  _idleTimeout: number;
  _repeat: number | null;
  _destroyed: boolean;
  _onTimeout: unknown;
  [kTimerArgs]?: unknown;
  refresh(): unknown;
}

/** Node's Immediate, as far as the repair reads and writes it. */
interface ImmediateLike {
  _idleNext: ImmediateLike | null;
  _idlePrev: ImmediateLike | null;
  _destroyed: boolean;
  _argv: unknown;
  _onImmediate?: unknown;
  [kOnImmediate]?: unknown;
  unref(): unknown;
}

/** The functions the repair schedules and clears with: Node's own, never fake timers. */
export interface RepairTimers {
  setImmediate: (cb: () => void) => unknown;
  clearTimeout: (t: unknown) => void;
}

/**
 * How the repair finds the Timeout or Immediate whose callback was cut short (see the module
 * comment): `'resources'` among the async resources the precise async-id repair popped, which
 * hold it; `'record'` from accessors on the prototypes that see each callback start.
 */
export type TimerRepairMode = 'resources' | 'record';

/** The Timeout whose callback Node started last (see the module comment). */
let startedTimeout: TimeoutLike | undefined;
/**
 * Holds the Immediate whose callback Node started last. The holder is replaced by a fresh one every
 * {@link HOLDER_USES} callbacks so that it is almost always in V8's young generation, as the
 * Immediate is: storing a young object into an old one (a module variable's context, say) runs
 * V8's generational write barrier, about 65 of the recorder's instructions per callback (callgrind,
 * Node 24), where a young-to-young store costs next to nothing.
 */
let immediateHolder: { started: ImmediateLike | undefined } = { started: undefined };
let holderUses = 0;
const HOLDER_USES = 256;
let timers: RepairTimers | undefined;
/** Node's real Timeout prototype, when found. */
let timeoutProto: object | undefined;
let mode: TimerRepairMode = 'resources';
/**
 * 1 while the callback of `immediateHolder.started` runs, read by the native interrupt callback:
 * an Immediate created before the recorders were installed keeps its callback in an own property,
 * is never recorded, and so must never be terminated. Null when Immediates are not recorded.
 */
let immediateRunning: Int32Array | null = null;

const noop = (): void => {};

/** Where an Immediate's callback is: behind the recorder, once installed, or Node's own property. */
const immediateSlot = (): typeof kOnImmediate | '_onImmediate' => (immediateRunning ? kOnImmediate : '_onImmediate');

/**
 * Prepares the repair. With `'record'`, puts the recording accessors on Node's Timeout and
 * Immediate prototypes. Either prototype may be missing: then that kind is never repaired (and,
 * with `'record'`, an Immediate never terminated: see {@link immediateRunningCell}).
 */
export function installTimerRepair(
  TimeoutProto: object | undefined,
  ImmediateProto: object | undefined,
  nodeTimers: RepairTimers,
  how: TimerRepairMode,
): void {
  timers = nodeTimers;
  timeoutProto = TimeoutProto;
  mode = how;
  if (how === 'resources') return;
  if (TimeoutProto && !Object.getOwnPropertyDescriptor(TimeoutProto, '_timerArgs')) {
    Object.defineProperty(TimeoutProto, '_timerArgs', {
      configurable: true,
      get(this: TimeoutLike) {
        // listOnTimeout has just taken the timer off its list: it is about to run. Another reader
        // (Node's reuse of a fired internal timer) sees it destroyed and is not recorded.
        if (this._idleNext === null && !this._destroyed) startedTimeout = this;
        return this[kTimerArgs];
      },
      set(this: TimeoutLike, value: unknown) {
        this[kTimerArgs] = value;
      },
    });
  }
  if (ImmediateProto && !Object.getOwnPropertyDescriptor(ImmediateProto, '_onImmediate')) {
    const running = new Int32Array(new SharedArrayBuffer(4));
    Object.defineProperty(ImmediateProto, '_onImmediate', {
      configurable: true,
      get(this: ImmediateLike) {
        // processImmediate marks it destroyed right before it calls it.
        if (this._destroyed) {
          if (++holderUses === HOLDER_USES) {
            holderUses = 0;
            immediateHolder = { started: undefined };
          }
          immediateHolder.started = this;
          running[0] = 1;
        }
        return this[kOnImmediate];
      },
      set(this: ImmediateLike, value: unknown) {
        this[kOnImmediate] = value;
        // processImmediate's finally clears it once the callback returned or threw.
        if (value === null && this === immediateHolder.started) running[0] = 0;
      },
    });
    immediateRunning = running;
  }
}

/**
 * The flag the native side reads, with `'record'`, to tell whether the Immediate callback running
 * now can be repaired (null: no Immediate is recorded; with `'resources'`, every one can be).
 */
export function immediateRunningCell(): Int32Array | null {
  return immediateRunning;
}

/**
 * Called once terminated JavaScript has unwound: finishes the bookkeeping of a Timeout or
 * Immediate callback that the termination cut short, if any. `resources`: the async resources the
 * interrupted code had entered (innermost first): with `'resources'`, all of them; with
 * `'record'`, the innermost, where a Timeout created before the recorders were installed is found
 * (its arguments are an own property, which they never see read).
 */
export function repairInterruptedTimers(resources: readonly unknown[]): void {
  const t = startedTimeout;
  const recorded = immediateHolder.started;
  startedTimeout = undefined;
  immediateHolder.started = undefined;
  if (immediateRunning) immediateRunning[0] = 0;
  if (!timers) return;
  const cutShort = t && timeoutCutShort(t) ? t : resources.find(isCutShortTimeout);
  if (cutShort) repairTimeout(cutShort, timers);
  const im = mode === 'record' ? recorded : resources.find(isImmediate);
  if (im && immediateCutShort(im)) repairImmediate(im, timers);
}

/**
 * Whether an async resource is one of Node's Immediates, with mode `'resources'` (no accessor on
 * the prototype: the callback is an own property). By its shape, not by its prototype, which may
 * not have been found (fake timers installed before this module loaded): the native side counts
 * on every Immediate being found here.
 */
function isImmediate(r: unknown): r is ImmediateLike {
  return (
    typeof r === 'object' &&
    r !== null &&
    Object.hasOwn(r, '_onImmediate') &&
    typeof (r as ImmediateLike)._destroyed === 'boolean'
  );
}

function isCutShortTimeout(r: unknown): r is TimeoutLike {
  return (
    typeof r === 'object' &&
    r !== null &&
    Object.getPrototypeOf(r) === timeoutProto &&
    timeoutCutShort(r as TimeoutLike)
  );
}

/** Its callback started, and listOnTimeout's `finally` did not run (it would destroy or re-arm it). */
function timeoutCutShort(t: TimeoutLike): boolean {
  return typeof t._onTimeout === 'function' && !t._destroyed && t._idleNext === null && t._idlePrev === null;
}

function repairTimeout(t: TimeoutLike, nodeTimers: RepairTimers): void {
  if (t._repeat && t._idleTimeout !== -1) {
    // What listOnTimeout's finally does for an interval: arm it again.
    t._idleTimeout = t._repeat;
    t.refresh();
  } else {
    // Destroyed, unref'd and off Node's lists, as after a normal run.
    nodeTimers.clearTimeout(t);
  }
}

/** Its callback started, and processImmediate's `finally` did not run (it clears the callback). */
function immediateCutShort(im: ImmediateLike): boolean {
  return im._destroyed && typeof im[immediateSlot()] === 'function';
}

function repairImmediate(im: ImmediateLike, nodeTimers: RepairTimers): void {
  const schedule = (): ImmediateLike => nodeTimers.setImmediate(noop) as ImmediateLike;
  if (im._idlePrev === null) {
    // First of its batch: Node's cursor was never set, and the rest of the batch hangs off this
    // one alone. Splice it between two immediates of ours, so that it runs next, in order, and
    // anything appended later still goes after it.
    im[immediateSlot()] = null;
    const rest = im._idleNext;
    im._idleNext = null;
    if (rest === null) return;
    rest._idlePrev = null;
    let last = rest;
    while (last._idleNext !== null) last = last._idleNext;
    const before = schedule();
    const after = schedule();
    before._idleNext = rest;
    rest._idlePrev = before;
    last._idleNext = after;
    after._idlePrev = last;
    return;
  }
  // After others: Node's cursor is on it, and Node runs it again first. Let it, as a no-op.
  im._destroyed = false;
  im[immediateSlot()] = noop;
  im._argv = undefined;
  // That second run counts it off Node's immediate count once more. Give one back: an immediate
  // of ours, counted when created, unref'd, and taken off the list (between two others, so that
  // Node's list keeps its tail) without being counted off.
  const a = schedule();
  const spare = schedule();
  const b = schedule();
  spare.unref();
  a._idleNext = b;
  b._idlePrev = a;
  spare._idleNext = null;
  spare._idlePrev = null;
  spare._destroyed = true;
  spare[immediateSlot()] = null;
}
