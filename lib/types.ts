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
  /** What capturing the stack cost the blocked thread, in milliseconds (fractional); null without a stack. */
  sampleCostMs: number | null;
  /** The blocking code's stack, innermost frame first; null when none could be captured. */
  frames: StackFrame[] | null;
  /** Why there is no stack (for example: blocked inside native code), or null. */
  missingStack: string | null;
  /**
   * Where the thread was when this warning went out without a stack (Linux): the kind of
   * synchronous work and its system call (e.g. `the thread is waiting for I/O in a nested event
   * loop (a synchronous child process: execSync, spawnSync): system call epoll_pwait`), or that it
   * was running (native code, a garbage collection, or JavaScript between interrupt checks). It
   * stays when the stack arrives later, while the block lasts (it says where the thread was at the
   * warning). Null when the warning had its stack, or where the thread's state cannot be read.
   */
  threadState: string | null;
  /**
   * The Node.js synchronous API the thread was inside, e.g. `fs.readFileSync`,
   * `crypto.pbkdf2Sync`, `child_process.execSync`, `zlib.gzipSync`, `Atomics.wait` (with
   * `nameSyncCalls`, the default): read when the warning went out without a stack, or when its
   * stack was sampled inside the call (`Atomics.wait`) or as the call returned (the caller's
   * frames). Calls of functions taken before the detector started are named by what they call
   * (`fs.readSync` for a `readFileSync` taken early), `execSync`/`execFileSync` as
   * `child_process.spawnSync`. Null otherwise.
   */
  syncApi: string | null;
  /**
   * The kind of garbage collection the thread was in when the warning went out without a stack
   * (`'scavenge'`, `'minor mark-sweep'`, `'mark-compact'`, `'incremental marking start'`,
   * `'weak callbacks'`), from V8's GC callbacks (`capabilities().gcState`); null otherwise.
   */
  gc: string | null;
  /** How long that garbage collection had been running at the warning, in milliseconds; null without `gc`. */
  gcMs: number | null;
  /**
   * The system call the thread was in when the warning went out without a stack, e.g. `read`,
   * `openat`, `wait4`, `futex` (Linux; null when running, elsewhere, or with a stack).
   */
  syscall: string | null;
  /**
   * The file that system call works on: the path of its file descriptor (`pipe:[…]`,
   * `socket:[…]` for those) or its path argument (Linux); null when there is none.
   */
  syscallFile: string | null;
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

/**
 * A whole block, delivered once the loop turns again (or when the detector stops during it).
 *
 * Plain data: `JSON.parse(JSON.stringify(event))` deep-equals it. `timeout` is in seconds (as the
 * option); every other duration is in milliseconds and says so in its name.
 */
export interface BlockEvent {
  /** `worker_threads.threadId` of the blocked thread (0: the main thread). */
  threadId: number;
  /** The detector's timeout, in seconds. */
  timeout: number;
  /** When the block started (milliseconds since the epoch): the moment the loop last came back from waiting for I/O. */
  startTime: number;
  /**
   * The same moment on the `process.hrtime()` clock, in milliseconds (fractional):
   * `Number(process.hrtime.bigint()) / 1e6` at the start. A number rather than a BigInt so that
   * the event survives `JSON.stringify`, log pipelines and OpenTelemetry attributes; a double
   * keeps this clock's milliseconds to better than a microsecond for over a century of uptime.
   */
  startHrtimeMs: number;
  /** How long the loop was blocked, in milliseconds (until its next turn). */
  durationMs: number;
  /** False when the detector was stopped before the loop turned; `durationMs` then ends at stop(). */
  ended: boolean;
  /**
   * CPU time the blocked thread used during the block, in milliseconds (counted from the
   * detector's first look at the blocked turn, within a sampling step of its start). Close to
   * `durationMs` for code that computes; much less for a synchronous call that sleeps (`execSync`,
   * `Atomics.wait`) or a thread kept off the CPU. Null where the thread's CPU time cannot be read,
   * and for a block that began in the parent of `fork()` and ended in the child (both fields).
   */
  cpuMs: number | null;
  /**
   * Of the block, how long the thread was ready to run but waited for a CPU, in milliseconds:
   * the machine, not the code, held the loop that long (other processes or threads took the
   * CPUs). Read from the scheduler's accounting (`/proc/.../schedstat`): Linux only, null
   * elsewhere.
   */
  cpuWaitMs: number | null;
  /**
   * A stable name for the code that blocked: 16 hex digits, a hash of the function names and
   * files (relative to the working directory, or from `node_modules/` on) of the innermost
   * application frames of the block's first stack sample, source-mapped where the native layer
   * had the map. Equal for blocks in the same code, in this process and in the next one, on this
   * machine or another. Null when no sample of the block has a stack. It is the fingerprint the
   * JSON log lines of this block carry (see docs/detector.md, Fingerprints).
   */
  fingerprint: string | null;
  /**
   * True when the report budget (`logRepeatsAfterMs`) kept this block out of the log: the same
   * fingerprint was logged less than that long ago. The event is emitted all the same.
   */
  logSuppressed: boolean;
  /**
   * Blocks with this fingerprint that the report budget kept out of the log since its last logged
   * block; this one included when it was kept out too. 0 without a budget.
   */
  suppressedSinceLastLog: number;
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
  /**
   * With `enableOpenTelemetry()` (`loop-helpers/otel`) only, when a span was active in the blocked
   * code (read natively while it blocked; see docs/opentelemetry.md): its trace id, 32 hex digits.
   * Absent otherwise.
   */
  traceId?: string;
  /** With `enableOpenTelemetry()` only: the id of the span active in the blocked code, 16 hex digits. */
  spanId?: string;
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
  /** Warnings without a stack can say that the thread is in a garbage collection (V8's GC callbacks were found). */
  gcState: boolean;
  /**
   * Warnings can name the Node.js synchronous API a block is inside (`nameSyncCalls`): the
   * JavaScript layer marks its calls in native memory (external ArrayBuffers are allowed).
   */
  syncCallNames: boolean;
  /**
   * `asyncContext`: the blocked code's AsyncLocalStorage stores can be read, from an
   * AsyncContextFrame or from Node's async_wrap binding (async_hooks-based AsyncLocalStorage), as
   * a self-test read showed once.
   */
  asyncContext: boolean;
  /** Why each capability that is false is missing. */
  reasons: {
    stackCapture?: string;
    interrupt?: string;
    interruptUnguarded?: string;
    fork?: string;
    asyncContext?: string;
    gcState?: string;
    syncCallNames?: string;
  };
  /**
   * Internal errors of the native layer that it recovered from, since the process started (live:
   * read at each call, unlike the fields above). A panic in the Rust code never crosses into
   * Node.js: in a function JavaScript called, it becomes an `ERR_LOOP_HELPERS_PANIC` exception;
   * in a callback or the monitor thread, the work is dropped (the monitor tries its cycle again
   * 10 ms later). Either way it is counted here. Both counts are 0 unless loop-helpers has a bug,
   * which is worth reporting with `last`.
   */
  panics: {
    /** Panics caught. */
    count: number;
    /** `"<where>: <message>"` of the last one, or null. */
    last: string | null;
    /**
     * Locks that a panic left poisoned and that were used anyway, their data being consistent at
     * any point a panic can happen.
     */
    poisonedLocks: number;
    /** Where the last poisoned lock was, or null. */
    lastPoisonedLock: string | null;
  };
}
