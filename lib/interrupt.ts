// Turning a native interrupt into the detector's raiseExc error.

import { dirname } from 'node:path';

import { AlarmInterrupt } from './errors';
import type { RaiseExc } from './options';
import { mapFrames } from './sourcemaps';
import type { StackFrame } from './types';

type ErrorClassWithOptions = new (message?: string, options?: ErrorOptions) => Error;

/** What `guardCall` reports when it turned a termination into an exception (exports.rs). */
export interface InterruptInfo {
  watchId: number;
  /** The blocking code was native: the interrupt had not run when it returned (run() only). */
  late?: boolean;
  /** How long the loop had been blocked when the code was stopped, in ms. */
  blockedMs: number;
  frames: StackFrame[] | null;
  /** Delivered interrupts: a callback guard (nextTick, queueMicrotask) or none ('unguarded'). */
  kind?: 'callback' | 'unguarded';
  /** A promise reaction / await continuation was stopped: its checkpoint's other microtasks were dropped. */
  microtask?: boolean;
}

/** Extra properties of an error raised by a BlockingDetector. */
export interface InterruptFields {
  /** The detector's timeout, in seconds. */
  timeout: number;
  /** How long the loop had been blocked when the code was stopped, in milliseconds. */
  blockedMs: number;
  /** The stack of the code that was blocking, innermost first; null when none was captured. */
  blockingFrames: StackFrame[] | null;
  /**
   * True when the stopped code was a promise reaction or `await` continuation: V8 then drops the
   * other microtasks queued in the same checkpoint, so other pending `await`s may never resume.
   */
  lostContinuations: boolean;
}

/**
 * The `loop-helpers:interrupt` channel's plain data about an interrupt: the error's name and message
 * and its {@link InterruptFields} (also when the error could not be given them: a frozen instance).
 */
export interface InterruptRecord extends InterruptFields {
  name: string;
  message: string;
}

/** The fields each error got, by error (frozen instances included). */
const records = new WeakMap<Error, InterruptRecord>();

/** The plain data of an error {@link interruptError} returned. */
export function interruptRecord(err: Error): InterruptRecord | undefined {
  return records.get(err);
}

export const LOST_CONTINUATIONS =
  'a promise continuation was interrupted: the other promise continuations pending in the same microtask checkpoint were dropped and will never run';

/** This package's compiled files. */
const ownDir = `${dirname(__dirname)}/`;

export function isInterruptMarker(e: unknown): e is Error & { interrupt: string } {
  return (
    e instanceof Error &&
    (e as { code?: unknown }).code === 'ERR_LOOP_HELPERS_INTERRUPT' &&
    typeof (e as { interrupt?: unknown }).interrupt === 'string'
  );
}

export function framesText(frames: readonly StackFrame[]): string {
  return frames
    .map((f) => {
      const loc = f.fileName
        ? f.lineNumber
          ? `${f.fileName}:${f.lineNumber}:${f.columnNumber}`
          : f.fileName
        : '<anonymous>';
      return f.functionName ? `    at ${f.functionName} (${loc})` : `    at ${loc}`;
    })
    .join('\n');
}

/**
 * The error to raise: `new Cls("blocking detected after timeout=<t>")` for a class, the instance
 * itself for an instance. Its `.stack` becomes the blocking code's stack. Never throws: a class
 * whose constructor throws gives an {@link AlarmInterrupt} with that error as `cause`, and an
 * instance that cannot be changed (frozen, sealed) is raised as it is, undecorated.
 * `cause`: the guarded function's own exception, when it threw after blocking past the deadline.
 */
export function interruptError(
  raiseExc: Exclude<RaiseExc, false | null>,
  timeout: number,
  info: InterruptInfo,
  cause?: unknown,
): Error {
  const message = `blocking detected after timeout=${timeout}`;
  let err: Error;
  if (typeof raiseExc === 'function') {
    try {
      err = cause === undefined ? new raiseExc(message) : new (raiseExc as ErrorClassWithOptions)(message, { cause });
    } catch (e) {
      err = new AlarmInterrupt(message, { cause: e });
    }
    if (!(err instanceof Error)) err = new AlarmInterrupt(message, { cause: err });
  } else {
    err = raiseExc;
  }
  // The guard's own frames (this package) say nothing about the blocking code.
  const frames = mapFrames(info.frames?.filter((f) => !f.fileName.startsWith(ownDir)) ?? null);
  const lost = info.microtask === true;
  const fields: InterruptFields = {
    timeout,
    blockedMs: info.blockedMs,
    blockingFrames: frames,
    lostContinuations: lost,
  };
  records.set(err, { name: String(err.name), message: String(err.message), ...fields });
  if (!Object.isExtensible(err)) return err;
  if (cause !== undefined && !('cause' in err)) {
    Object.defineProperty(err, 'cause', { value: cause, writable: true, configurable: true });
  }
  const body = frames?.length
    ? framesText(frames)
    : info.late
      ? '    (no JavaScript stack: the code blocked inside a native call past the deadline)'
      : '    (no JavaScript stack captured)';
  const header = `${err.name}: ${err.message}`;
  const note = lost ? `\n    (${LOST_CONTINUATIONS})` : '';
  try {
    Object.defineProperty(err, 'stack', { value: `${header}\n${body}${note}`, writable: true, configurable: true });
    Object.assign(err, fields);
  } catch {
    // An instance with a locked-down property of its own: raised as it is, never lost.
  }
  return err;
}
