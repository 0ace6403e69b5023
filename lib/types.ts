import type { JsonValue } from './async-context';

/** One JavaScript stack frame of the blocking code. Line and column are 1-based (0: unknown). */
export interface StackFrame {
  /** The function's name; empty for anonymous functions and top-level code. */
  functionName: string;
  /** The script's file name or URL (`node:internal/...` for Node's own code). */
  fileName: string;
  lineNumber: number;
  columnNumber: number;
  /**
   * Where V8 ran it, when a source map moved this frame to its original source (the process runs
   * with `--enable-source-maps`): `fileName`, `lineNumber` and `columnNumber` above are then the
   * original ones, e.g. in a `.ts` file.
   */
  generated?: { fileName: string; lineNumber: number; columnNumber: number };
}

/** One warning given while the loop was blocked, with the stack sampled at that moment. */
export interface BlockSample {
  /** 0 for the first warning of the block, then 1, 2, ... (aggressive mode). */
  index: number;
  /** How long the loop had been blocked when the warning was given, in milliseconds. */
  blockedMs: number;
  /** When the warning was given (milliseconds since the epoch, like `Date.now()`). */
  detectedAt: number;
  /** From the detector's request to the stack capture, in milliseconds; null without a stack. */
  sampleDelayMs: number | null;
  /** What capturing the stack cost the blocked thread, in microseconds; null without a stack. */
  sampleCostUs: number | null;
  /** The blocking code's stack, innermost frame first; null when none could be captured. */
  frames: StackFrame[] | null;
  /** Why there is no stack (for example: blocked inside native code), or null. */
  missingStack: string | null;
  /**
   * With `asyncContext` only, on the sample that read the store (the store is read once per block,
   * at the first sample that finds the blocked JavaScript; later samples have neither field), or
   * on a warning whose sample never came (then null, and `contextMissing` says why): the
   * AsyncLocalStorage store that was active in the blocked code, as a JSON-safe snapshot (an
   * array, one per storage, when `asyncContext` was an array). null when no store was active.
   */
  context?: JsonValue;
  /** With `asyncContext` only: why `context` could not be read (no sample, old Node.js...), or null. */
  contextMissing?: string | null;
}

/** A whole block, delivered once the loop turns again (or when the detector stops during it). */
export interface BlockEvent {
  /** `worker_threads.threadId` of the blocked thread (0: the main thread). */
  threadId: number;
  /** The detector's timeout, in seconds. */
  timeout: number;
  /** When the block started: the moment the loop last came back from waiting for I/O. */
  startTime: number;
  /** The same moment on the `process.hrtime.bigint()` clock. */
  startHrtime: bigint;
  /** How long the loop was blocked, in milliseconds. */
  duration: number;
  /** False when the detector was stopped before the loop turned; `duration` then ends at stop(). */
  ended: boolean;
  /** Every warning of this block, with its stack sample. */
  samples: BlockSample[];
  /**
   * With `asyncContext` only (absent otherwise): the store that was active in the blocked code
   * when it was first sampled (the first sample that read one): the blocked request's store,
   * never a neighbour's. See {@link BlockSample.context}.
   */
  context?: JsonValue;
  /** With `asyncContext` only: why `context` could not be read, or null. */
  contextMissing?: string | null;
}

/** What this Node.js build and platform let loop-helpers do. */
export interface Capabilities {
  /** Stack samples of the blocking code (V8 entry points resolved and self-tested). */
  stackCapture: boolean;
  /** Interrupting blocking code inside `detector.run()` / `detector.wrap()` guards (`raiseExc`). */
  interrupt: boolean;
  /** Interrupting blocking code anywhere else (callbacks, promise reactions, top level). */
  interruptUnguarded: boolean;
  /** `fork()` can work here (Linux, and this Node.js has the V8 platform and exit-handler entry points it needs). */
  fork: boolean;
  /**
   * `asyncContext`: the blocked code's AsyncLocalStorage stores can be read (AsyncLocalStorage
   * uses AsyncContextFrame here, and the V8 entry points are there and self-tested).
   */
  asyncContext: boolean;
  /** Why each capability that is false is missing. */
  reasons: {
    stackCapture?: string;
    interrupt?: string;
    interruptUnguarded?: string;
    fork?: string;
    asyncContext?: string;
  };
}
