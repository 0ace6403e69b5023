import { HOOKS_BASED_REASON, usesAsyncContextFrame } from './async-context';
import { hookStorages, hooksBase } from './hooks-store';
import { native } from './native';
import type { Capabilities } from './types';
import { unguardedProbe } from './unguarded';

interface NativeInfo {
  stackCapture: boolean;
  stackCaptureReason: string | null;
  terminate: boolean;
  terminateReason: string | null;
  afterTermination: boolean;
  afterTerminationReason: string | null;
  asyncContext: boolean;
  asyncContextReason: string | null;
  guardFrames: boolean;
  guardFramesReason: string | null;
  gcState: boolean;
  gcStateReason: string | null;
  syncCallNames: boolean;
  syncCallNamesReason: string | null;
  panics: Capabilities['panics'];
}

interface RawFrame {
  functionName: string;
  fileName: string;
  lineNumber: number;
}

// Named so that the self-test can recognise itself as the innermost frame.
function loopHelpersStackProbe(): RawFrame[] {
  return JSON.parse(native().captureStack(4)) as RawFrame[];
}

/**
 * Checks stack capture once by capturing a stack whose answer is known: a V8 whose entry points
 * exist but behave differently is caught here rather than trusted.
 */
function probeStackCapture(): string | undefined {
  const info = JSON.parse(native().nativeInfo()) as NativeInfo;
  if (!info.stackCapture) return info.stackCaptureReason ?? 'unavailable';
  const frames = loopHelpersStackProbe();
  const top = frames[0];
  if (top?.functionName !== 'loopHelpersStackProbe' || top.fileName !== __filename || !(top.lineNumber > 0)) {
    return `self-test failed: the captured stack did not name its caller (got ${JSON.stringify(top ?? null)})`;
  }
  return undefined;
}

/**
 * Checks `asyncContext` once: reads a store whose answer is known, the way the sampling interrupt
 * reads the blocked code's.
 */
function probeAsyncContext(info: NativeInfo, stackReason: string | undefined): string | undefined {
  if (!info.asyncContext) return info.asyncContextReason ?? 'unavailable';
  if (stackReason) return `needs stack capture (${stackReason})`;
  const frames = usesAsyncContextFrame();
  // The blocked code's frame is read with the entry points run()/wrap() put it back with.
  if (frames && !info.guardFrames) return info.guardFramesReason ?? 'unavailable';
  let flag: { fields: Uint32Array; index: number; before: number } | undefined;
  if (!frames) {
    const base = hooksBase();
    if (typeof base === 'string') return `${HOOKS_BASED_REASON}: ${base}`;
    // The probe's run() calls executionAsyncResource(), which sets this flag for good: from then
    // on Node would send every native callback through its JavaScript trampoline. Put back below.
    const index = base.binding.constants.kUsesExecutionAsyncResource;
    if (index !== undefined && index < base.fields.length) {
      flag = { fields: base.fields, index, before: base.fields[index] as number };
    }
  }
  const { AsyncLocalStorage, AsyncResource } = require('node:async_hooks') as typeof import('node:async_hooks');
  const probe = new AsyncLocalStorage<object>();
  const hooked = frames ? undefined : hookStorages([probe]);
  const spec = { storages: [probe], keys: [null], single: true, hooks: hooked?.hooks };
  try {
    // Where stores hang off async resources, both ways of finding one: the resource of a level
    // JavaScript entered, and the record of run() at a level it did not (this one).
    const got = probe.run({ probe: [1, 'a'] }, () => [
      native().readAsyncContext(spec),
      new AsyncResource('loop-helpers.probe').runInAsyncScope(() => native().readAsyncContext(spec)),
    ]);
    const want = '{"context":{"probe":[1,"a"]},"contextMissing":null}';
    const wrong = got.find((g) => g !== want);
    return wrong === undefined ? undefined : `self-test failed: the store read natively was ${wrong}`;
  } finally {
    hooked?.release();
    // Its async hooks (on 20/22) go with the last enabled storage, as if it had never run.
    probe.disable();
    if (flag) flag.fields[flag.index] = flag.before;
  }
}

let cached: Omit<Capabilities, 'panics'> | undefined;

/** What works on this Node.js, probed once (for this package's own use: not a copy). */
export function probedCapabilities(): Readonly<Omit<Capabilities, 'panics'>> {
  if (!cached) {
    const stackReason = probeStackCapture();
    const info = JSON.parse(native().nativeInfo()) as NativeInfo;
    const reasons: Capabilities['reasons'] = {};
    const forkReason =
      process.platform === 'linux'
        ? native().forkSupport()
        : `fork() is implemented for Linux only (this is ${process.platform})`;
    if (forkReason !== null) reasons.fork = forkReason;
    if (stackReason) reasons.stackCapture = stackReason;
    if (!info.terminate) reasons.interrupt = info.terminateReason ?? 'unavailable';
    const unguarded =
      (info.terminate ? undefined : reasons.interrupt) ??
      (info.afterTermination ? undefined : (info.afterTerminationReason ?? 'unavailable')) ??
      (stackReason ? `needs stack capture (${stackReason})` : undefined) ??
      unguardedProbe();
    if (unguarded)
      reasons.interruptUnguarded = `${unguarded}; timers, immediates, ticks and queueMicrotask callbacks are still interrupted`;
    const asyncContextReason = probeAsyncContext(info, stackReason);
    if (asyncContextReason) reasons.asyncContext = asyncContextReason;
    if (!info.gcState) reasons.gcState = info.gcStateReason ?? 'unavailable';
    if (!info.syncCallNames) reasons.syncCallNames = info.syncCallNamesReason ?? 'unavailable';
    cached = {
      stackCapture: stackReason === undefined,
      interrupt: info.terminate,
      interruptUnguarded: unguarded === undefined,
      fork: forkReason === null,
      asyncContext: asyncContextReason === undefined,
      gcState: info.gcState,
      syncCallNames: info.syncCallNames,
      reasons,
    };
  }
  return cached;
}

/**
 * What works on this Node.js: stack capture, interrupts, fork (probed once); and the panics the
 * native layer recovered from (read at each call).
 */
export function capabilities(): Capabilities {
  const probed = probedCapabilities();
  const { panics } = JSON.parse(native().nativeInfo()) as NativeInfo;
  return { ...probed, reasons: { ...probed.reasons }, panics };
}
