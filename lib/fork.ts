// fork(): the port of gevent-helpers' fork(), for the cases where a Node.js process can be forked
// safely, with clear refusals for the rest. The native side (crates/node/src/fork.rs) prepares the
// parent and repairs the child's libuv, V8 platform and exit path; this file refuses what cannot
// work, and fixes up the child's JavaScript-visible state.

// node:v8 and node:os are required where needed: loading them costs every process ~0.7 MiB.
import { subscribe } from 'node:diagnostics_channel';
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { argError, describe, validateBoolean } from './errors';
import { native } from './native';
import { capYoungGeneration, fixYoungGeneration, validateYoungGenerationMiB } from './young-generation';

/** The stable codes of {@link ForkError}. */
export type ForkErrorCode =
  /** Not Linux (fork() is implemented and tested on Linux only). */
  | 'ERR_FORK_UNSUPPORTED_PLATFORM'
  /** This Node.js lacks an entry point fork() needs (see `capabilities().reasons.fork`). */
  | 'ERR_FORK_UNSUPPORTED'
  /** Called from a Worker thread. */
  | 'ERR_FORK_WORKER_THREAD'
  /** A Worker thread is alive. */
  | 'ERR_FORK_WORKERS_ALIVE'
  /** Threadpool work (fs, dns.lookup, crypto, zlib, addons) or a stream write is in flight. */
  | 'ERR_FORK_REQUESTS_IN_FLIGHT'
  /** A process started with `node:child_process` is alive (unref'd or not). */
  | 'ERR_FORK_CHILD_PROCESS_ALIVE'
  /** The inspector is active. */
  | 'ERR_FORK_INSPECTOR_ACTIVE'
  /** TLS connections are open and this Node.js does not let fork() cut the child's copies of them. */
  | 'ERR_FORK_TLS_SOCKETS_OPEN'
  /** A DNS query of `dns.resolve*()` / `dns.Resolver` is waiting for its answer (its socket is open). */
  | 'ERR_FORK_DNS_IN_FLIGHT'
  /** A CPU profile or trace is being recorded (`Profiler.start`, `--cpu-prof`, `--prof`, trace events). */
  | 'ERR_FORK_PROFILER_ACTIVE'
  /** A thread runs that neither Node.js nor loop-helpers started (a native addon's). */
  | 'ERR_FORK_UNKNOWN_THREADS'
  /** V8's background threads did not become free in time (e.g. a GC of a huge heap). Retry. */
  | 'ERR_FORK_PLATFORM_BUSY'
  /** The fork(2) system call or a preparation step failed (e.g. EAGAIN, ENOMEM). */
  | 'ERR_FORK_FAILED'
  /** `waitpid()`: the pid is not a child of this process, or it was already waited for. */
  | 'ERR_FORK_NO_SUCH_CHILD'
  /** `prefork()`: a BlockingDetector is running (its copy in the pool's template would report the template's wait). */
  | 'ERR_PREFORK_DETECTOR_RUNNING';

/** Why {@link fork} refused or failed, or why {@link waitpid} cannot wait. */
export class ForkError extends Error {
  /** Stable, machine-readable reason. */
  readonly code: ForkErrorCode;
  constructor(code: ForkErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = 'ForkError';
  }
}
ForkError.prototype.name = 'ForkError';

/** How a child ended, as in `child_process`' 'exit' event: one of the two is null. */
export interface ExitStatus {
  /** The exit code, or null when a signal ended the child. */
  code: number | null;
  /** The signal's name (e.g. `'SIGKILL'`), or null when the child exited. */
  signal: NodeJS.Signals | null;
}

/** Options of {@link fork}. */
export interface ForkOptions {
  /**
   * Before forking, collect garbage and compact the heap, the way V8 does when memory runs out
   * (`gc({ flavor: 'last-resort' })`): garbage freed, fragmented pages evacuated, the young
   * generation emptied and shrunk, free pages given back. The child then starts from a dense
   * heap it shares page for page, instead of first copying the parent's young generation and the
   * pages it fills up, and the parent's own later collections find little to move. Costs the
   * parent a few full collections (about 1 s for a 300 MB heap on a loaded 2-core machine):
   * worth it before forking several children from the same state. Default false.
   */
  compact?: boolean;
  /**
   * In the child, V8's young generation keeps the size it had at the fork instead of growing
   * under load. The parent's heap stays shared either way (its pages are rarely written); what
   * makes a forked worker's memory its own is mostly what it allocates, and V8 grows a busy
   * worker's young generation many times over (to 128 MiB on Node.js 24 in the measurement
   * below). Measured per child serving 60,000 HTTP requests with a 300 MB data set inherited from
   * the parent: 1.5-2.8x less private memory (Node.js 24: 97-132 against 267-272 MiB; 22: 131-139
   * against 207-220; 26: 86-106 against 189-204), for more CPU: many more minor collections (V8's
   * smallest young generation after `compact`: about 35 a second under load), and a sooner-full old
   * generation. Over a minute of HTTP load, 1.3-2.3x the CPU per request of the default in
   * `npm run bench`'s fork-vs-cluster case (docs/fork.md).
   *
   * It sets V8's `--semi-space-growth-factor=1` in the child only (flags are per process, so it
   * holds for Workers the child starts, and for its own forks). Default false.
   */
  fixedYoungGeneration?: boolean;
  /**
   * In the child, V8's young generation grows as usual up to this many MiB (its size as
   * `v8.getHeapSpaceStatistics()` reports `new_space`), then keeps its size: most of the memory
   * `fixedYoungGeneration` saves, for little of its CPU. A worker whose young generation has
   * reached a few tens of MiB collects it a few times a second under load, not dozens of times.
   * Measured in `npm run bench`'s fork-vs-cluster case (prefork(), 300 MB data set, 60 s of HTTP
   * load, Node.js 24): total memory 0.34-0.37 of cluster's at 32 MiB with 4 workers and 0.36 with 8
   * (0.54 and 0.43 without a limit); CPU per request within the spread between runs of no limit
   * (152 against 142 µs in one run, 138 against 186 in another; docs/fork.md).
   *
   * Checked after each garbage collection, when the event loop next turns: one synchronous burst of
   * allocation can take the young generation a step past the limit before the check. Ignored when
   * `fixedYoungGeneration` is true. A whole number from 1 to 65,536, or null (no limit, the
   * default; prefork() uses 32).
   */
  maxYoungGenerationMiB?: number | null;
}

/** What the last successful {@link fork} cost the parent, in milliseconds. */
export interface ForkTiming {
  /** The parent's total stall: from the call to the return of fork(). */
  totalMs: number;
  /** The garbage collection of `compact: true` (0 without it). */
  compactMs: number;
  /** Waiting for V8's platform workers to park. */
  parkMs: number;
  /** Clearing V8's `MADV_DONTFORK` mark: `MADV_DOFORK` on every mapping of /proc/self/maps. */
  memoryMs: number;
  /** The fork(2) system call (copying page tables: grows with the heap). */
  forkMs: number;
  /** Memory mappings a child inherits (`MADV_DOFORK` given, to V8's heap among them). */
  mappings: number;
  /** V8 platform workers parked. */
  workers: number;
}

/** Whether Node has loaded one of its own modules (process.moduleLoadList, undocumented: absent
 * means unknown, taken as loaded). */
function loadedBuiltin(id: string): boolean {
  const list = (process as { moduleLoadList?: string[] }).moduleLoadList;
  return list ? list.includes(`NativeModule ${id}`) : true;
}

// ---- Workers: tracked from their constructor, which publishes on 'worker_threads' synchronously.

const liveWorkers = new Set<object>();
/** Whether `Worker` was loaded before this module, so Workers may exist that were never seen. */
const workersMayPredate = loadedBuiltin('internal/worker');

// The Worker constructor publishes on 'worker_threads' synchronously (process 'worker' comes a
// tick later: too late for a fork() right after `new Worker`).
subscribe('worker_threads', (message) => {
  const worker = (message as { worker?: NodeJS.EventEmitter }).worker;
  if (!worker || typeof worker.once !== 'function') return;
  liveWorkers.add(worker);
  worker.once('exit', () => liveWorkers.delete(worker));
});

/** Live Worker threads. Exact for Workers created after loop-helpers was loaded; earlier ones are
 * counted through a diagnostic report (a few ms) when the Worker class was loaded before us. */
function liveWorkerCount(): number {
  if (liveWorkers.size > 0 || !workersMayPredate) return liveWorkers.size;
  const report = process.report?.getReport() as { workers?: unknown[] } | undefined;
  return report?.workers?.length ?? 0;
}

// ---- Refusals.

function refuse(code: ForkErrorCode, message: string): never {
  throw new ForkError(code, message);
}

const REQUEST_TYPE = /Req|WriteWrap|ShutdownWrap|ConnectWrap/;

/** What does not depend on the loop's state: the platform, this Node.js, the calling thread. */
function checkForkable(): void {
  if (process.platform === 'win32') {
    refuse('ERR_FORK_UNSUPPORTED_PLATFORM', 'fork() needs a POSIX system; Windows has no fork(2).');
  }
  if (process.platform !== 'linux') {
    refuse(
      'ERR_FORK_UNSUPPORTED_PLATFORM',
      `fork() is implemented and tested on Linux only (this is ${process.platform}). ` +
        'Use child_process or cluster to start workers here.',
    );
  }
  const unsupported = native().forkSupport();
  if (unsupported !== null) {
    refuse('ERR_FORK_UNSUPPORTED', `fork() cannot work on this Node.js ${process.version}: ${unsupported}.`);
  }
  if (!native().isMainThread()) {
    refuse('ERR_FORK_WORKER_THREAD', 'fork() was called from a Worker thread; call it from the main thread.');
  }
}

/**
 * The open TLS connections JavaScript can see: a `TLSSocket` owns its TCP handle (client side), or
 * a server's accepted socket carries TLS when the server is a `tls.Server` (https, http2). A socket
 * upgraded with `new tls.TLSSocket(socket)` is not seen here (the native probe finds it).
 */
function tlsConnectionsSeen(): number {
  const active = (process as { _getActiveHandles?: () => unknown[] })._getActiveHandles;
  if (!loadedBuiltin('tls') || typeof active !== 'function') return 0;
  const { Server } = require('node:tls') as typeof import('node:tls');
  let n = 0;
  for (const h of active.call(process)) {
    const s = h as { encrypted?: unknown; server?: unknown; destroyed?: unknown } | null;
    if (s && s.destroyed !== true && (s.encrypted === true || s.server instanceof Server)) n++;
  }
  return n;
}

/**
 * What depends on the loop's state. The native fork() runs this while every handle of the loop is
 * ref'd, so that `process.getActiveResourcesInfo()` lists the unref'd handles too (an unref'd child
 * process is alive all the same), with the number of TLS streams it found (the child's copies of
 * those are cut). A refusal thrown here is fork()'s.
 */
function checkLoop(nativeTls: number): void {
  const workers = liveWorkerCount();
  if (workers > 0) {
    refuse(
      'ERR_FORK_WORKERS_ALIVE',
      `fork() refused: ${workers} Worker thread(s) alive. A Worker does not exist in the child (it ` +
        'would be a dead object there). Fork before starting Workers, or terminate them and wait for ' +
        "their 'exit' event.",
    );
  }
  const resources = process.getActiveResourcesInfo();
  const children = resources.filter((r) => r === 'ProcessWrap').length;
  if (children > 0) {
    refuse(
      'ERR_FORK_CHILD_PROCESS_ALIVE',
      `fork() refused: ${children} child process(es) started with node:child_process are alive ` +
        "(unref'd ones count too). The forked child would inherit their handles, never learn of their " +
        'exit, and never end. Wait for their exit (or kill them) first.',
    );
  }
  if (process.features.inspector) {
    const url = (require('node:inspector') as typeof import('node:inspector')).url();
    if (url) {
      refuse(
        'ERR_FORK_INSPECTOR_ACTIVE',
        `fork() refused: the inspector is active (${url}); its thread and session do not survive a ` +
          'fork. Close it with inspector.close() first.',
      );
    }
  }
  // The child's copies of TLS connections are cut natively, by recognising Node's stream objects.
  // Should that fail on some Node.js (fewer found than JavaScript sees), refuse rather than let both
  // processes encrypt with the same keys and sequence numbers.
  const tls = tlsConnectionsSeen();
  if (tls > nativeTls) {
    refuse(
      'ERR_FORK_TLS_SOCKETS_OPEN',
      `fork() refused: ${tls} TLS connection(s) are open, and fork() cannot cut the child's copies of ` +
        `them on this Node.js ${process.version} (found ${nativeTls}). Parent and child would encrypt with ` +
        'the same keys and sequence numbers (repeated AES-GCM nonces let an observer decrypt and forge ' +
        'traffic). Close them before forking (e.g. agent.destroy() for pooled HTTPS connections).',
    );
  }
  const requests = native().activeRequests();
  if (requests > 0) {
    const named = [...new Set(resources.filter((r) => REQUEST_TYPE.test(r)))];
    refuse(
      'ERR_FORK_REQUESTS_IN_FLIGHT',
      `fork() refused: ${requests} libuv request(s) in flight` +
        (named.length ? ` (${named.join(', ')})` : ' (threadpool work such as crypto, zlib or an addon)') +
        '. Threadpool work and stream writes in flight would never complete in the child. Fork when ' +
        'they have completed, e.g. after awaiting them.',
    );
  }
}

// ---- fork().

let lastTiming: ForkTiming | undefined;

const FORK_OPTIONS = ['compact', 'fixedYoungGeneration', 'maxYoungGenerationMiB'] as const;
const BOOLEAN_FORK_OPTIONS = ['compact', 'fixedYoungGeneration'] as const;

function resolveForkOptions(options: unknown): Required<ForkOptions> {
  const resolved: Required<ForkOptions> = { compact: false, fixedYoungGeneration: false, maxYoungGenerationMiB: null };
  if (options === undefined) return resolved;
  if (typeof options !== 'object' || options === null) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument of fork() must be an object. Received ${describe(options)}`,
    );
  }
  for (const key of Object.keys(options)) {
    if (!(FORK_OPTIONS as readonly string[]).includes(key)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `Unknown fork() option "${key}". Known options: ${FORK_OPTIONS.join(', ')}`,
      );
    }
  }
  for (const key of BOOLEAN_FORK_OPTIONS) {
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) resolved[key] = validateBoolean(key, value, 'fork()');
  }
  resolved.maxYoungGenerationMiB = validateYoungGenerationMiB(
    (options as Record<string, unknown>).maxYoungGenerationMiB,
    'fork()',
  );
  return resolved;
}

let collectGarbage: ((options?: object) => void) | undefined;

/** `compact`: V8's last-resort full GC (a plain full GC on a V8 that ignores the options). */
function compactHeap(): void {
  if (!collectGarbage) {
    const exposed = (globalThis as { gc?: (options?: object) => void }).gc;
    if (typeof exposed === 'function') {
      collectGarbage = exposed;
    } else {
      // --expose-gc at run time, and gc() from a fresh context (the main one was set up without it).
      (require('node:v8') as typeof import('node:v8')).setFlagsFromString('--expose-gc');
      collectGarbage = (require('node:vm') as typeof import('node:vm')).runInNewContext('gc') as (o?: object) => void;
    }
  }
  collectGarbage({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

/** The native fork(): `check` runs first with every handle visible; see crates/node/src/fork_exports.rs. */
type NativeFork = (check: (nativeTls: number) => void) => number[];

/**
 * Forks this process, like POSIX fork(2): returns the child's pid in the parent and 0 in the child.
 *
 * The child is a copy of the parent at the moment of the call: every timer, socket, server and
 * pending promise exists in both (a listening server accepts in both: a prefork server), except
 * TLS connections, whose copies in the child are cut (they end there; the parent's go on). It runs
 * with its own pid, re-armed blocking detectors, fresh randomness (Node's randomInt and randomUUID
 * caches refilled), and an exit path that runs 'exit' listeners and flushes stdout and stderr. See
 * docs/fork.md.
 *
 * @param options `compact: true` collects garbage and compacts the heap first; `fixedYoungGeneration:
 *   true` keeps the child's young generation from growing (see {@link ForkOptions}).
 * @returns the child's pid in the parent, 0 in the child.
 * @throws {ForkError} when forking is refused or fails; `code` says why.
 */
export function fork(options?: ForkOptions): number {
  const { compact, fixedYoungGeneration, maxYoungGenerationMiB } = resolveForkOptions(options);
  checkForkable();
  const start = process.hrtime.bigint();
  let compactMs = 0;
  if (compact) {
    compactHeap();
    compactMs = Number(process.hrtime.bigint() - start) / 1e6;
  }
  warmReseed();
  warmStdio();
  let r: number[];
  try {
    r = (native().fork as unknown as NativeFork)(checkLoop);
  } catch (e) {
    if (e instanceof ForkError) throw e;
    const err = e as Error & { code?: string };
    if (err.code?.startsWith('ERR_FORK_')) {
      throw new ForkError(
        err.code as ForkErrorCode,
        `fork() ${err.code === 'ERR_FORK_FAILED' ? 'failed' : 'refused'}: ${err.message}`,
      );
    }
    throw e;
  }
  if (r[0] === 0) {
    try {
      afterForkInChild(r[1] as number, r[2] as number, r[3] === 1);
      if (fixedYoungGeneration) fixYoungGeneration();
      else if (maxYoungGenerationMiB !== null) capYoungGeneration(maxYoungGenerationMiB);
    } catch (e) {
      // Never throw here: the caller would take the child for a parent whose fork failed, and two
      // processes would go on as the parent. End this child instead, saying why.
      const why = e instanceof Error ? (e.stack ?? e.message) : String(e);
      native().childAbort(`loop-helpers: fork() child setup failed, the child ends (status 70): ${why}\n`);
    }
    return 0;
  }
  lastTiming = {
    totalMs: Number(process.hrtime.bigint() - start) / 1e6,
    compactMs,
    parkMs: r[1] as number,
    memoryMs: r[2] as number,
    forkMs: r[3] as number,
    mappings: r[4] as number,
    workers: r[5] as number,
  };
  return r[0] as number;
}

/** What the last successful {@link fork} in this process cost the parent (undefined before one). */
export function lastForkTiming(): ForkTiming | undefined {
  return lastTiming && { ...lastTiming };
}

const childHooks: Array<() => void> = [];

/** @internal Registers `hook` to run in every child of {@link fork}, before fork() returns 0 there
 * (prefork() drops the parent's pool bookkeeping with it). A hook that throws ends the child. */
export function onForkChild(hook: () => void): void {
  childHooks.push(hook);
}

/** In the child, before fork() returns 0 to it. */
function afterForkInChild(pid: number, ppid: number, workersRestored: boolean): void {
  Object.defineProperty(process, 'pid', { value: pid, writable: true, configurable: true, enumerable: true });
  Object.defineProperty(process, 'ppid', { value: ppid, writable: true, configurable: true, enumerable: true });
  if (!workersRestored) {
    // V8's background tasks have no threads in this child: at least compile what gets hot during
    // on-stack replacement on the main thread. Only these two are safe to flip here: flags that
    // change how the GC runs its phases crash V8 mid-cycle (fixYoungGeneration's is only a size).
    const { setFlagsFromString } = require('node:v8') as typeof import('node:v8');
    for (const flag of ['--no-concurrent-recompilation', '--no-concurrent-osr']) {
      try {
        setFlagsFromString(flag);
      } catch {
        // A Node.js with frozen flags: code still runs, hot functions just stay unoptimized.
      }
    }
  }
  blockingStdio();
  reseedRandomness();
  forgetParentsWaits();
  lastTiming = undefined;
  for (const hook of childHooks) hook();
  native().childExitGuard(
    () => process.emit('beforeExit', Number(process.exitCode ?? 0)),
    () => process.exit(),
  );
}

/**
 * Makes the child's writes to stdout and stderr synchronous, so that nothing is still queued in
 * libuv when the child ends with _exit. A pipe (FIFO) got an open file description of its own on
 * the native side. A socket (what `child_process` gives for 'pipe' stdio) cannot: its description
 * stays shared, so making it blocking makes the parent's writes to it synchronous too, as they
 * already are for files and terminals.
 */
function blockingStdio(): void {
  for (const [fd, name] of STDIO) {
    if (!pipeOrSocket(fd)) continue;
    const handle = (process[name] as unknown as { _handle?: { setBlocking?: (on: boolean) => number } })._handle;
    handle?.setBlocking?.(true);
  }
}

const STDIO = [
  [1, 'stdout'],
  [2, 'stderr'],
] as const;

/** Whether `fd` is a pipe or a socket (the stdio that {@link blockingStdio} makes blocking). */
function pipeOrSocket(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}

/**
 * Creates `process.stdout` and `process.stderr` once in the parent, where {@link blockingStdio}
 * would otherwise create them in every child: Node builds them on first use (a socket over the
 * pipe, with its modules), which took 22-30 ms of each child's start on Node 24 when the parent
 * had never written to them. Creating them keeps nothing alive.
 */
function warmStdio(): void {
  for (const [fd, name] of STDIO) if (pipeOrSocket(fd)) void process[name];
}

/** The largest range `crypto.randomInt()` accepts: each call then takes exactly 6 bytes of its cache. */
const RANDOM_INT_RANGE = 2 ** 48 - 1;

let reseedWarmed = false;

/**
 * Runs, once in the parent, what each child's reseed runs: else every child compiles and warms
 * randomUUID and randomInt on its own (about 15 ms of each child's start, measured on Node 24).
 */
function warmReseed(): void {
  if (reseedWarmed || !loadedBuiltin('internal/crypto/random')) return;
  reseedWarmed = true;
  const { randomInt, randomUUID } = require('node:crypto') as typeof import('node:crypto');
  for (let i = 0; i < 128; i++) randomUUID();
  for (let i = 0; i < 1024; i++) randomInt(RANDOM_INT_RANGE);
}

/** The child must not repeat the parent's random values. */
function reseedRandomness(): void {
  // OpenSSL reseeds after fork by itself (crypto.randomBytes, randomFillSync, getRandomValues and
  // key generation differ), but two caches in Node's JavaScript hold bytes drawn in the parent, and
  // neither can be reached but through its own function:
  // - crypto.randomUUID() (and randomUUIDv7(), which shares the cache) serves from a batch of 128
  //   UUIDs: going once around it forces a refill;
  // - crypto.randomInt() serves 6 bytes per call from a 6 KiB cache: 1024 calls of the full range
  //   take 6 bytes each and reach its end wherever the parent left it, so every value after them
  //   comes from a refill in the child (about 0.3 ms warm, 1.5 ms cold).
  // Both live in internal/crypto/random: not loaded, no cache.
  if (loadedBuiltin('internal/crypto/random')) {
    const { randomInt, randomUUID } = require('node:crypto') as typeof import('node:crypto');
    for (let i = 0; i < 128; i++) randomUUID();
    for (let i = 0; i < 1024; i++) randomInt(RANDOM_INT_RANGE);
  }
  // V8's Math.random state lives in the context and cannot be reseeded through any API: replace it
  // with a xoshiro128** generator seeded from the OS (non-cryptographic, as Math.random is).
  try {
    Math.random = seededMathRandom();
  } catch {
    // A frozen Math (e.g. a hardened realm): say so rather than end the child for it. Written at
    // once (process.emitWarning waits for a tick the child may never reach).
    writeSync(
      2,
      `(node:${process.pid}) ForkWarning: Math.random could not be replaced in the forked child (Math is frozen): it repeats the parent's sequence\n`,
    );
  }
}

/** 16 bytes from the OS: /dev/urandom, read directly (loading node:crypto into a child whose
 * parent never used it would cost that child ~15 ms of its start), or crypto as a fallback. */
function osRandomSeed(): Uint32Array {
  const s = new Uint32Array(4);
  try {
    const fd = openSync('/dev/urandom', 'r');
    try {
      if (readSync(fd, s) === s.byteLength) return s;
    } finally {
      closeSync(fd);
    }
  } catch {
    // No /dev/urandom (a chroot): crypto below.
  }
  return (require('node:crypto') as typeof import('node:crypto')).randomFillSync(s);
}

function seededMathRandom(): () => number {
  const s = osRandomSeed();
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  const next = (): number => {
    const result = Math.imul(rotl(Math.imul(s[1] as number, 5), 7), 9) >>> 0;
    const t = (s[1] as number) << 9;
    s[2] = (s[2] as number) ^ (s[0] as number);
    s[3] = (s[3] as number) ^ (s[1] as number);
    s[1] = (s[1] as number) ^ (s[2] as number);
    s[0] = (s[0] as number) ^ (s[3] as number);
    s[2] = (s[2] as number) ^ t;
    s[3] = rotl(s[3] as number, 11);
    return result;
  };
  // 53 random bits, like V8's: 27 from one output, 26 from the next.
  return function random(): number {
    return ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---- Waiting for children.

interface Waiter {
  resolve: (status: ExitStatus) => void;
  reject: (err: Error) => void;
}

const waiters = new Map<number, Waiter[]>();
let backstop: NodeJS.Timeout | undefined;
/** How often pending waits are checked besides SIGCHLD (a signal can be merged with another). */
const BACKSTOP_MS = 100;

function signalName(n: number): NodeJS.Signals {
  const { constants } = require('node:os') as typeof import('node:os');
  for (const [name, value] of Object.entries(constants.signals)) {
    if (value === n) return name as NodeJS.Signals;
  }
  return `SIG${n}` as NodeJS.Signals;
}

function checkPid(pid: unknown, fn: string): asserts pid is number {
  if (typeof pid !== 'number') {
    throw argError('type', 'ERR_INVALID_ARG_TYPE', `${fn}(): pid must be a number, received ${describe(pid)}`);
  }
  if (!Number.isInteger(pid) || pid < 1 || pid > 0x7fffffff) {
    throw argError('range', 'ERR_OUT_OF_RANGE', `${fn}(): pid must be a positive integer, received ${describe(pid)}`);
  }
}

/** One non-blocking wait: the status once the child ended (reaping it), undefined while it runs. */
function poll(pid: number, fn: string): ExitStatus | undefined {
  let r: [number | null, number | null] | undefined;
  try {
    r = native().waitpid(pid, false);
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'ERR_FORK_NO_SUCH_CHILD' || err.code === 'ERR_FORK_FAILED') {
      throw new ForkError(err.code, `${fn}(${pid}): ${err.message}`);
    }
    throw e;
  }
  if (!r) return undefined;
  return { code: r[0], signal: r[1] === null ? null : signalName(r[1]) };
}

/** Settles the pending waits for `pid` with its status or error. */
function settle(pid: number, outcome: ExitStatus | Error): void {
  const list = waiters.get(pid);
  if (!list) return;
  waiters.delete(pid);
  for (const w of list) {
    if (outcome instanceof Error) w.reject(outcome);
    else w.resolve({ ...outcome });
  }
  if (waiters.size === 0) stopWatching();
}

function checkWaiters(): void {
  for (const pid of [...waiters.keys()]) {
    try {
      const status = poll(pid, 'waitpid');
      if (status) settle(pid, status);
    } catch (e) {
      settle(pid, e as Error);
    }
  }
}

function startWatching(): void {
  if (backstop) return;
  process.on('SIGCHLD', checkWaiters);
  // Ref'd: a process awaiting its child stays alive until the child ends.
  backstop = setInterval(checkWaiters, BACKSTOP_MS);
}

function stopWatching(): void {
  if (!backstop) return;
  clearInterval(backstop);
  backstop = undefined;
  process.removeListener('SIGCHLD', checkWaiters);
}

/** In the child: the parent's pending waits are for the child's siblings, not its children. Their
 * promises belong to the parent's logic and stay pending here. */
function forgetParentsWaits(): void {
  waiters.clear();
  stopWatching();
}

/**
 * Waits for a child made by {@link fork} to end, and reaps it (it does not stay a zombie).
 * Resolves promptly on SIGCHLD; keeps the process alive while waiting.
 *
 * @throws {ForkError} (rejects) with `ERR_FORK_NO_SUCH_CHILD` when `pid` is not an unreaped child.
 */
export function waitpid(pid: number): Promise<ExitStatus> {
  try {
    checkPid(pid, 'waitpid');
    const now = poll(pid, 'waitpid');
    if (now) return Promise.resolve(now);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise<ExitStatus>((resolve, reject) => {
    const list = waiters.get(pid) ?? [];
    list.push({ resolve, reject });
    waiters.set(pid, list);
    startWatching();
  });
}

/**
 * The non-blocking form of {@link waitpid}: the child's status if it has ended (reaping it), or
 * undefined while it still runs.
 *
 * @throws {ForkError} `ERR_FORK_NO_SUCH_CHILD` when `pid` is not an unreaped child.
 */
export function tryWaitpid(pid: number): ExitStatus | undefined {
  checkPid(pid, 'tryWaitpid');
  const status = poll(pid, 'tryWaitpid');
  // A pending waitpid() for the same child settles too.
  if (status) settle(pid, status);
  return status;
}
