// prefork(): a pool of forked workers that share the parent's listening sockets, with respawn,
// crash-loop backoff and a graceful stop: what `cluster` does, with fork() instead of new processes.
//
// How it is built. A respawned worker must inherit the listening sockets, so some process must
// keep them open for as long as the pool runs; but a process whose event loop runs and holds a
// listening socket accepts connections on it (Node.js cannot keep a socket without polling it, nor
// duplicate one). So the parent forks a *template* once: a copy of itself at the moment of
// prefork() that never returns to its event loop. The template forks every worker (each worker
// leaves prefork() from inside the template's wait, exactly as if prefork() had forked it), reaps
// them, and ignores the terminal's signals; the parent closes its copies of the servers, so that
// only workers accept, and drives the template through two unlinked files (commands one way,
// events the other, with a SIGCHLD to the parent for each event). Every worker is a copy of the
// same pristine state, shared page for page with the template.

import { EventEmitter } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { argError, describe, validateBoolean, validateMs } from './errors';
import { type ExitStatus, ForkError, type ForkErrorCode, fork, onForkChild, tryWaitpid, waitpid } from './fork';
import { native } from './native';
import { validateYoungGenerationMiB } from './young-generation';

/** What a worker's `main` is given. */
export interface PreforkWorkerInfo {
  /** The worker's slot, from 0 to `workers - 1`; a respawned worker takes the slot of the one it replaces. */
  index: number;
  /**
   * `process.hrtime.bigint()` just before the fork() that made this worker (the clock is the
   * same in every process): `process.hrtime.bigint() - forkedAt` is how long the worker took to start.
   */
  forkedAt: bigint;
}

export interface PreforkOptions {
  /** How many workers run at once: an integer from 1 to 1024. */
  workers: number;
  /**
   * Runs in each worker, inside its prefork() call, before prefork() returns `{ isChild: true }`
   * there. An error it throws (or a promise it returns that rejects) is rethrown on the next tick
   * as an uncaught exception: the worker ends, and is respawned.
   */
  main: (worker: PreforkWorkerInfo) => unknown;
  /** Replace a worker that ends (unless the pool is stopping). Default true. */
  respawn?: boolean;
  /**
   * Milliseconds `stop()` waits after SIGTERM before it sends SIGKILL to the workers still running
   * (0 to 2147483647). Default 10000.
   */
  stopTimeout?: number;
  /**
   * Milliseconds to wait before respawning a worker that lived less than `minUptime` (a crash
   * loop); doubled for each further quick death of the same slot, up to `maxRespawnDelay`.
   * 0 to 2147483647. Default 100.
   */
  respawnDelay?: number;
  /** The longest wait between two respawns of a slot that keeps dying, in ms. Default 10000. */
  maxRespawnDelay?: number;
  /** A worker that ran at least this many ms was healthy: its slot's backoff starts over. Default 1000. */
  minUptime?: number;
  /**
   * SIGTERM and SIGINT to the parent stop the pool (as `stop()`), after which the parent ends by
   * the same signal unless the application listens for it too. A second signal during the stop
   * kills the workers at once. Default true.
   */
  signals?: boolean;
  /**
   * The listening servers the workers serve: the parent closes its copies once the workers run, so
   * that only workers accept. Default: every listening TCP server of the parent (http, https,
   * net...; an unref'd server is not found: pass it here). `[]` leaves the parent's servers open
   * (the parent then accepts too).
   */
  servers?: readonly Server[];
  /**
   * Collect garbage and compact the parent's heap once before forking (fork()'s `compact`): the
   * workers start from a dense heap and share more of it for longer (measured: 40% less total
   * memory, at start and under load). Costs the parent a few full collections at start (about 1 s
   * for a 300 MB heap on a loaded 2-core machine), and the workers, whose young generation starts
   * small, collect garbage more often during their first ~10 s of load. Default true.
   */
  compact?: boolean;
  /**
   * Keep each worker's young generation at its size at the fork (fork()'s `fixedYoungGeneration`):
   * about half the private memory per worker under load, for more CPU per request (many more
   * minor collections: 1.3-2.3x the CPU of the default in the fork-vs-cluster bench). Set in the
   * template, so every worker, replacements included, has it. Default false.
   */
  fixedYoungGeneration?: boolean;
  /**
   * Each worker's young generation grows up to this many MiB, then keeps its size (fork()'s
   * `maxYoungGenerationMiB`): most of the memory `fixedYoungGeneration` saves, for little of its
   * CPU. Measured in the fork-vs-cluster bench (300 MB data set, 60 s of HTTP load, Node.js 24):
   * total memory 0.34-0.37 of cluster's with 4 workers and 0.36 with 8, against 0.54 and 0.43 with
   * no limit; CPU per request within the spread between runs of no limit (152 against 142 µs, 138
   * against 186). null: no limit, as V8 decides. Ignored with `fixedYoungGeneration`.
   * Default 32.
   */
  maxYoungGenerationMiB?: number | null;
}

/** How a pool's workers are told to stop. */
export interface PreforkStopOptions {
  /** Milliseconds between SIGTERM and SIGKILL; default the pool's `stopTimeout`. */
  timeout?: number;
}

/** The events of a {@link PreforkPool}. */
export interface PreforkEvents {
  /** A worker was forked (the first ones are announced on the tick after prefork() returns). */
  spawn: [pid: number, index: number];
  /** A worker ended and was reaped. */
  exit: [pid: number, status: ExitStatus, index: number];
  /** Forking a replacement failed (e.g. `ERR_FORK_FAILED` with EAGAIN); it is retried with backoff. */
  spawnError: [error: ForkError, index: number];
}

/** What prefork() returns in a worker. */
export interface PreforkChild {
  readonly isChild: true;
  /** This worker's slot (as given to `main`). */
  readonly index: number;
}

/** The defaults of the optional {@link PreforkOptions}. */
const DEFAULTS = {
  respawn: true,
  stopTimeout: 10_000,
  respawnDelay: 100,
  maxRespawnDelay: 10_000,
  minUptime: 1_000,
  signals: true,
  compact: true,
  fixedYoungGeneration: false,
  maxYoungGenerationMiB: 32,
} as const;
const KNOWN = [
  'workers',
  'main',
  'respawn',
  'stopTimeout',
  'respawnDelay',
  'maxRespawnDelay',
  'minUptime',
  'signals',
  'servers',
  'compact',
  'fixedYoungGeneration',
  'maxYoungGenerationMiB',
] as const;
const MAX_WORKERS = 1024;
const MAX_MS = 0x7fffffff;

interface Resolved {
  workers: number;
  main: (worker: PreforkWorkerInfo) => unknown;
  respawn: boolean;
  stopTimeout: number;
  respawnDelay: number;
  maxRespawnDelay: number;
  minUptime: number;
  signals: boolean;
  compact: boolean;
  fixedYoungGeneration: boolean;
  maxYoungGenerationMiB: number | null;
  servers: readonly Server[] | undefined;
}

// ---- Options.

function validateServers(v: unknown): readonly Server[] {
  const { Server: NetServer } = require('node:net') as typeof import('node:net');
  if (!Array.isArray(v)) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "servers" option must be an array of listening net.Server (http.Server...). Received ${describe(v)}`,
    );
  }
  v.forEach((s: unknown, i) => {
    if (!(s instanceof NetServer)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `The "servers" option must hold net.Server instances (http.Server...); servers[${i}] is ${describe(s)}`,
      );
    }
    if (!s.listening) {
      throw argError('type', 'ERR_INVALID_ARG_VALUE', `The "servers" option: servers[${i}] is not listening`);
    }
    if (typeof s.address() === 'string') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `The "servers" option: servers[${i}] listens on a Unix-domain socket (${String(s.address())}); closing the ` +
          "parent's copy would unlink its path (libuv does), so it cannot be handed over",
      );
    }
  });
  return [...v] as Server[];
}

function resolvePreforkOptions(options: unknown): Resolved {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument of prefork() must be an object ({ workers, main }). Received ${describe(options)}`,
    );
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(KNOWN as readonly string[]).includes(key)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `Unknown prefork() option "${key}". Known options: ${KNOWN.join(', ')}`,
      );
    }
  }
  const { workers, main } = o;
  if (typeof workers !== 'number') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "workers" option must be a number (how many workers). Received ${describe(workers)}`,
    );
  }
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "workers" option must be an integer from 1 to ${MAX_WORKERS}. Received ${describe(workers)}`,
    );
  }
  if (typeof main !== 'function') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "main" option must be a function (run in each worker). Received ${describe(main)}`,
    );
  }
  const ms = (name: keyof typeof DEFAULTS & string) =>
    o[name] === undefined ? (DEFAULTS[name] as number) : validateMs(name, o[name], MAX_MS);
  const bool = (name: keyof typeof DEFAULTS & string) =>
    o[name] === undefined ? (DEFAULTS[name] as boolean) : validateBoolean(name, o[name]);
  const r: Resolved = {
    workers,
    main: main as Resolved['main'],
    respawn: bool('respawn'),
    stopTimeout: ms('stopTimeout'),
    respawnDelay: ms('respawnDelay'),
    maxRespawnDelay: ms('maxRespawnDelay'),
    minUptime: ms('minUptime'),
    signals: bool('signals'),
    compact: bool('compact'),
    fixedYoungGeneration: bool('fixedYoungGeneration'),
    maxYoungGenerationMiB:
      o.maxYoungGenerationMiB === undefined
        ? DEFAULTS.maxYoungGenerationMiB
        : validateYoungGenerationMiB(o.maxYoungGenerationMiB),
    servers: o.servers === undefined ? undefined : validateServers(o.servers),
  };
  if (r.maxRespawnDelay < r.respawnDelay) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "maxRespawnDelay" option (${r.maxRespawnDelay}) must not be below "respawnDelay" (${r.respawnDelay})`,
    );
  }
  return r;
}

/** The validated options of {@link stop}. */
function resolveStopTimeout(options: unknown, fallback: number): number {
  if (options === undefined) return fallback;
  if (typeof options !== 'object' || options === null) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument of stop() must be an object ({ timeout }). Received ${describe(options)}`,
    );
  }
  const { timeout } = options as { timeout?: unknown };
  for (const key of Object.keys(options)) {
    if (key !== 'timeout') {
      throw argError('type', 'ERR_INVALID_ARG_VALUE', `Unknown stop() option "${key}". Known options: timeout`);
    }
  }
  return timeout === undefined ? fallback : validateMs('timeout', timeout, MAX_MS);
}

/** The parent's listening TCP servers (ref'd ones: `_getActiveHandles` skips unref'd handles). */
function listeningServers(): Server[] {
  const active = (process as { _getActiveHandles?: () => unknown[] })._getActiveHandles;
  if (typeof active !== 'function') return [];
  const { Server: NetServer } = require('node:net') as typeof import('node:net');
  return active
    .call(process)
    .filter((h): h is Server => h instanceof NetServer && h.listening && typeof h.address() !== 'string');
}

// ---- The line protocol between the parent and the template.
//
// Commands (parent -> template): `spawn <index>`, `exit`.
// Events (template -> parent): `spawned <index> <pid>`, `failed <index> <code> <JSON message>`,
// `exited <pid> <code|-> <signal|->`. Each file is append-only; each side reads from its offset.

class LineReader {
  #offset = 0;
  #partial = '';
  readonly #buf = Buffer.allocUnsafe(4096);
  constructor(private readonly fd: number) {}
  /** The complete lines appended since the last call. */
  read(): string[] {
    let text = '';
    for (;;) {
      const n = readSync(this.fd, this.#buf, 0, this.#buf.length, this.#offset);
      if (n <= 0) break;
      this.#offset += n;
      text += this.#buf.toString('latin1', 0, n);
      if (n < this.#buf.length) break;
    }
    if (!text) return [];
    const lines = (this.#partial + text).split('\n');
    this.#partial = lines.pop() ?? '';
    return lines.filter((l) => l.length > 0);
  }
}

const SLEEP = new Int32Array(new SharedArrayBuffer(4));
/** Sleeps without running the event loop. */
function sleepSync(ms: number): void {
  Atomics.wait(SLEEP, 0, 0, ms);
}

/** The real parent pid (process.ppid is fixed at fork time in a forked child). */
function realPpid(): number {
  try {
    const stat = readFileSync('/proc/self/stat', 'latin1');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return process.ppid;
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

// ---- The template: runs inside prefork() in the process the parent forked first, never returns
// to its event loop, and returns only in a worker it forked (with that worker's index).

interface TemplateContext {
  workers: number;
  cmdFd: number;
  evFd: number;
  parent: number;
  stopTimeout: number;
}

/** Signals a terminal or a service manager sends the whole group: the parent decides for the pool. */
const TEMPLATE_IGNORES = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const ignoreSignal = (): void => {};
/** The template's longest sleep between two looks at its commands and children (ms): each wake-up
 * costs ~0.1 ms of CPU, so an idle pool's template uses ~0.3% of a core; an exit is seen within it. */
const TEMPLATE_IDLE_MS = 50;

function runTemplate(ctx: TemplateContext): PreforkWorkerInfo {
  // A caught signal is queued for a loop that never runs: ignored, without changing what the
  // workers inherit (they drop these listeners, which restores the default action).
  for (const s of TEMPLATE_IGNORES) process.on(s, ignoreSignal);
  const children = new Map<number, number>();
  const commands = new LineReader(ctx.cmdFd);
  const report = (line: string): void => {
    writeSync(ctx.evFd, `${line}\n`);
    kill(ctx.parent, 'SIGCHLD');
  };
  let worker: PreforkWorkerInfo | undefined;
  const spawn = (index: number): void => {
    let pid: number;
    const forkedAt = process.hrtime.bigint();
    try {
      pid = fork();
    } catch (e) {
      const err = e as Error & { code?: string };
      report(`failed ${index} ${err.code ?? 'ERR_FORK_FAILED'} ${JSON.stringify(err.message)}`);
      return;
    }
    if (pid === 0) {
      // The worker: drop the template's part of the state and leave the loop.
      closeSync(ctx.cmdFd);
      closeSync(ctx.evFd);
      for (const s of TEMPLATE_IGNORES) process.removeListener(s, ignoreSignal);
      worker = { index, forkedAt };
      return;
    }
    children.set(pid, index);
    report(`spawned ${index} ${pid}`);
  };
  const reap = (): boolean => {
    let any = false;
    for (const pid of [...children.keys()]) {
      let status: ExitStatus | undefined;
      try {
        status = tryWaitpid(pid);
      } catch {
        status = { code: null, signal: null };
      }
      if (status) {
        children.delete(pid);
        report(`exited ${pid} ${status.code ?? '-'} ${status.signal ?? '-'}`);
        any = true;
      }
    }
    return any;
  };
  const finish = (deadline: number): never => {
    for (const pid of children.keys()) kill(pid, 'SIGTERM');
    while (children.size > 0 && Date.now() < deadline) {
      if (!reap()) sleepSync(5);
    }
    for (const pid of children.keys()) kill(pid, 'SIGKILL');
    while (children.size > 0) {
      if (!reap()) sleepSync(2);
    }
    process.removeAllListeners('exit');
    process.exit(0);
    throw new Error('unreachable: process.exit() returned');
  };

  for (let i = 0; i < ctx.workers; i++) {
    spawn(i);
    if (worker) return worker;
  }
  let idle = 1;
  let nextParentCheck = 0;
  for (;;) {
    let busy = false;
    for (const line of commands.read()) {
      const [cmd, arg] = line.split(' ');
      if (cmd === 'spawn') {
        spawn(Number(arg));
        if (worker) return worker;
        busy = true;
      } else if (cmd === 'exit') {
        // The parent stopped the workers already: anything left is killed at once.
        finish(0);
      }
    }
    if (reap()) busy = true;
    const now = Date.now();
    if (now >= nextParentCheck) {
      nextParentCheck = now + 200;
      // The parent ended without stopping the pool: stop it as stop() would.
      if (realPpid() !== ctx.parent) finish(now + ctx.stopTimeout);
    }
    idle = busy ? 1 : Math.min(TEMPLATE_IDLE_MS, idle * 2);
    sleepSync(idle);
  }
}

/** In a worker: runs `main` and returns what prefork() returns there. */
function startWorker(info: PreforkWorkerInfo, main: Resolved['main']): PreforkChild {
  const rethrow = (e: unknown): void => {
    process.nextTick(() => {
      throw e;
    });
  };
  try {
    const r = main({ ...info }) as { then?: unknown } | undefined;
    if (r !== null && typeof r === 'object' && typeof r.then === 'function') {
      (r as Promise<unknown>).then(undefined, rethrow);
    }
  } catch (e) {
    rethrow(e);
  }
  return Object.freeze({ isChild: true as const, index: info.index });
}

// ---- The parent's side.

/** The parent's live pools: a child forked from the parent drops their bookkeeping. */
const parentPools = new Set<PreforkPool>();

interface Slot {
  pid: number | undefined;
  spawnedAt: number;
  quickDeaths: number;
  /** A spawn command is with the template, unanswered. */
  requested: boolean;
  /** A respawn waits for its backoff delay. */
  timer: NodeJS.Timeout | undefined;
}

/** How long prefork() waits for the template to fork the first workers. */
const START_TIMEOUT_MS = 60_000;
/** How often the parent reads the template's events besides its SIGCHLDs. */
const BACKSTOP_MS = 250;

/** A listener of one of the pool's events. */
type PoolListener<E extends keyof PreforkEvents> = (...args: PreforkEvents[E]) => void;

/**
 * The listener methods, typed by event name (a misspelt name is reported as not a
 * `keyof PreforkEvents`). Declarations only, merged into the class; EventEmitter implements them.
 */
export interface PreforkPool {
  on<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  once<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  off<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  addListener<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  removeListener<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  prependListener<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
  prependOnceListener<E extends keyof PreforkEvents>(event: E, listener: PoolListener<E>): this;
}

/**
 * The parent's handle on a running pool of workers forked by {@link prefork}. An EventEmitter:
 * `'spawn'` (pid, index), `'exit'` (pid, status, index), `'spawnError'` (error, index).
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface declares EventEmitter's own listener methods, typed; no property.
export class PreforkPool extends EventEmitter<PreforkEvents> {
  readonly isChild = false as const;
  readonly #opts: Resolved;
  readonly #template: number;
  readonly #cmdFd: number;
  readonly #evFd: number;
  readonly #events: LineReader;
  readonly #slots: Slot[];
  readonly #workers = new Map<number, number>();
  #backstop: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;
  #resolveStop: (() => void) | undefined;
  #killed = false;
  #exitSent = false;
  #templateDone = false;
  #released = false;
  readonly #onSigchld = (): void => this.#drain();
  readonly #onSignal = (signal: NodeJS.Signals): void => this.#signal(signal);

  static {
    // In a child forked from the parent (by fork() or another pool), the parent's pools are dead
    // copies: no timers, no signal listeners, no channels.
    onForkChild(() => {
      for (const pool of [...parentPools]) pool.#detach();
    });
  }

  /**
   * @internal Use {@link prefork}. Waits (synchronously) until the template forked the first
   * workers; throws the template's ForkError if it could not.
   */
  constructor(template: number, cmdFd: number, evFd: number, opts: Resolved) {
    super();
    this.#template = template;
    this.#cmdFd = cmdFd;
    this.#evFd = evFd;
    this.#opts = opts;
    this.#events = new LineReader(evFd);
    this.#slots = Array.from({ length: opts.workers }, () => ({
      pid: undefined,
      spawnedAt: 0,
      quickDeaths: 0,
      requested: true,
      timer: undefined,
    }));
    this.#start();
  }

  /** The pids of the running workers, by slot. */
  get pids(): number[] {
    return this.#slots.map((s) => s.pid).filter((p): p is number => p !== undefined);
  }

  /** The pid of the template process that forks the workers (it never runs its event loop). */
  get templatePid(): number {
    return this.#template;
  }

  /** Whether the pool is stopping or stopped (stop(), a signal, or the template's end). */
  get stopping(): boolean {
    return this.#stopping !== undefined;
  }

  /**
   * Stops the pool: no more respawns, SIGTERM to every worker, SIGKILL to those still running after
   * `timeout` ms; resolves once every worker and the template have ended and been reaped. Calling
   * it again returns the same promise.
   */
  stop(options?: PreforkStopOptions): Promise<void> {
    if (this.#stopping) return this.#stopping;
    let timeout: number;
    try {
      timeout = resolveStopTimeout(options, this.#opts.stopTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
    this.#stopping = new Promise<void>((resolve) => {
      this.#resolveStop = resolve;
    });
    for (const slot of this.#slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = undefined;
    }
    for (const pid of this.#workers.keys()) kill(pid, 'SIGTERM');
    this.#killTimer = setTimeout(() => this.#killAll(), timeout);
    this.#drain();
    return this.#stopping;
  }

  #start(): void {
    const deadline = Date.now() + START_TIMEOUT_MS;
    const later: string[] = [];
    const spawned: Array<[number, number]> = [];
    let failure: ForkError | undefined;
    while (this.#slots.some((s) => s.requested) && !failure) {
      for (const line of this.#events.read()) {
        const [kind, a, b, ...rest] = line.split(' ');
        if (kind === 'spawned') {
          const index = Number(a);
          const pid = Number(b);
          const slot = this.#slots[index] as Slot;
          slot.requested = false;
          slot.pid = pid;
          slot.spawnedAt = Date.now();
          this.#workers.set(pid, index);
          spawned.push([pid, index]);
        } else if (kind === 'failed') {
          failure = new ForkError(
            b as ForkErrorCode,
            `prefork(): forking worker ${a} failed: ${JSON.parse(rest.join(' '))}`,
          );
        } else {
          later.push(line);
        }
      }
      if (!this.#slots.some((s) => s.requested) || failure) break;
      let status: ExitStatus | undefined;
      try {
        status = tryWaitpid(this.#template);
      } catch {
        status = { code: null, signal: null };
      }
      if (status) {
        this.#templateDone = true;
        failure = new ForkError(
          'ERR_FORK_FAILED',
          `prefork(): the template process ended (${describeStatus(status)}) before the workers started`,
        );
      } else if (Date.now() > deadline) {
        failure = new ForkError(
          'ERR_FORK_FAILED',
          `prefork(): the workers did not start within ${START_TIMEOUT_MS} ms`,
        );
      } else {
        sleepSync(1);
      }
    }
    if (failure) {
      this.#abortStart(spawned.map(([pid]) => pid));
      throw failure;
    }
    this.#attach();
    // Announce the first workers (and whatever happened to them meanwhile) on the next tick, once
    // the caller has had a chance to listen.
    process.nextTick(() => {
      if (this.#released) return;
      for (const [pid, index] of spawned) this.emit('spawn', pid, index);
      for (const line of later) this.#handle(line);
      this.#drain();
    });
  }

  /** The start failed: the template kills and reaps what it forked, and ends. */
  #abortStart(spawned: number[]): void {
    if (this.#templateDone) {
      // The template died: what it forked is orphaned, nobody else stops it.
      for (const pid of spawned) kill(pid, 'SIGKILL');
    } else {
      writeSync(this.#cmdFd, 'exit\n');
      const deadline = Date.now() + 10_000;
      for (;;) {
        let status: ExitStatus | undefined;
        try {
          status = tryWaitpid(this.#template);
        } catch {
          break;
        }
        if (status) break;
        if (Date.now() > deadline) {
          kill(this.#template, 'SIGKILL');
          for (const pid of spawned) kill(pid, 'SIGKILL');
          try {
            native().waitpid(this.#template, true);
          } catch {
            // Reaped meanwhile.
          }
          break;
        }
        sleepSync(1);
      }
    }
    this.#released = true;
    closeSync(this.#cmdFd);
    closeSync(this.#evFd);
  }

  #attach(): void {
    parentPools.add(this);
    process.on('SIGCHLD', this.#onSigchld);
    if (this.#opts.signals) {
      process.on('SIGTERM', this.#onSignal);
      process.on('SIGINT', this.#onSignal);
    }
    // Ref'd: the parent stays alive while its pool runs.
    this.#backstop = setInterval(() => this.#drain(), BACKSTOP_MS);
    waitpid(this.#template).then(
      (status) => this.#templateEnded(status),
      () => this.#templateEnded({ code: null, signal: null }),
    );
  }

  /** Drops every handle and listener of the pool (in the parent when done, or in a forked child). */
  #release(): void {
    if (this.#backstop) clearInterval(this.#backstop);
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#backstop = undefined;
    this.#killTimer = undefined;
    for (const slot of this.#slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = undefined;
    }
    process.removeListener('SIGCHLD', this.#onSigchld);
    process.removeListener('SIGTERM', this.#onSignal);
    process.removeListener('SIGINT', this.#onSignal);
    parentPools.delete(this);
    if (!this.#released) {
      this.#released = true;
      closeSync(this.#cmdFd);
      closeSync(this.#evFd);
    }
  }

  #detach(): void {
    this.#release();
    for (const s of this.#slots) {
      s.pid = undefined;
      s.requested = false;
    }
    this.#workers.clear();
    this.#stopping ??= Promise.resolve();
    this.#resolveStop = undefined;
    this.removeAllListeners();
  }

  #drain(): void {
    if (this.#released) return;
    for (const line of this.#events.read()) this.#handle(line);
    this.#maybeFinish();
  }

  #handle(line: string): void {
    const [kind, a, b, c, ...rest] = line.split(' ');
    if (kind === 'spawned') {
      const index = Number(a);
      const pid = Number(b);
      const slot = this.#slots[index];
      if (!slot) return;
      slot.requested = false;
      slot.pid = pid;
      slot.spawnedAt = Date.now();
      this.#workers.set(pid, index);
      // Forked while the pool began to stop: it goes at once.
      if (this.#stopping) kill(pid, this.#killed ? 'SIGKILL' : 'SIGTERM');
      this.emit('spawn', pid, index);
    } else if (kind === 'exited') {
      const pid = Number(a);
      const index = this.#workers.get(pid);
      if (index === undefined) return;
      this.#workers.delete(pid);
      const slot = this.#slots[index] as Slot;
      slot.pid = undefined;
      const status: ExitStatus = {
        code: b === '-' ? null : Number(b),
        signal: c === '-' || c === undefined ? null : (c as NodeJS.Signals),
      };
      this.emit('exit', pid, status, index);
      this.#scheduleRespawn(index, Date.now() - slot.spawnedAt);
    } else if (kind === 'failed') {
      const index = Number(a);
      const slot = this.#slots[index];
      if (!slot) return;
      slot.requested = false;
      const message = JSON.parse([c, ...rest].join(' ')) as string;
      this.emit(
        'spawnError',
        new ForkError(b as ForkErrorCode, `prefork(): forking a worker for slot ${index} failed: ${message}`),
        index,
      );
      // Retried as a worker that died at once.
      this.#scheduleRespawn(index, 0);
    }
  }

  #scheduleRespawn(index: number, uptime: number): void {
    const slot = this.#slots[index] as Slot;
    if (this.#stopping || !this.#opts.respawn || this.#templateDone || this.#released) return;
    slot.quickDeaths = uptime < this.#opts.minUptime ? slot.quickDeaths + 1 : 0;
    const delay =
      slot.quickDeaths === 0
        ? 0
        : Math.min(this.#opts.maxRespawnDelay, this.#opts.respawnDelay * 2 ** (slot.quickDeaths - 1));
    const go = (): void => {
      slot.timer = undefined;
      if (this.#stopping || this.#templateDone || this.#released) return;
      slot.requested = true;
      writeSync(this.#cmdFd, `spawn ${index}\n`);
    };
    if (delay === 0) go();
    else slot.timer = setTimeout(go, delay);
  }

  #killAll(): void {
    this.#killTimer = undefined;
    this.#killed = true;
    for (const pid of this.#workers.keys()) kill(pid, 'SIGKILL');
  }

  #signal(signal: NodeJS.Signals): void {
    if (this.#stopping) {
      // A second signal: no more waiting.
      this.#killAll();
      return;
    }
    this.stop().then(() => {
      // End the way the signal would have ended the process, unless the application handles it.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }

  /** Once stopping and no worker is left or coming: tell the template to end; it is reaped below. */
  #maybeFinish(): void {
    if (!this.#stopping || this.#released || this.#exitSent) return;
    if (this.#workers.size > 0 || this.#slots.some((s) => s.requested)) return;
    this.#exitSent = true;
    try {
      writeSync(this.#cmdFd, 'exit\n');
    } catch {
      // The template is gone already: #templateEnded follows.
    }
  }

  /** The template was reaped (it ended after 'exit', or it died). */
  #templateEnded(status: ExitStatus): void {
    if (this.#released) return;
    this.#templateDone = true;
    for (const line of this.#events.read()) this.#handle(line);
    if (this.#workers.size > 0) {
      // The template died while workers ran (someone killed it): they are orphans now, which
      // nobody can respawn or reap from here. Kill them; their new parent (init) reaps them.
      process.emitWarning(
        `the prefork template process ${this.#template} ended (${describeStatus(status)}) while ${this.#workers.size} worker(s) ran; they are killed`,
        { type: 'PreforkWarning', code: 'LOOP_HELPERS_PREFORK_TEMPLATE_ENDED' },
      );
      for (const [pid, index] of [...this.#workers]) {
        kill(pid, 'SIGKILL');
        this.#workers.delete(pid);
        (this.#slots[index] as Slot).pid = undefined;
        this.emit('exit', pid, { code: null, signal: 'SIGKILL' }, index);
      }
    }
    this.#stopping ??= Promise.resolve();
    const resolve = this.#resolveStop;
    this.#resolveStop = undefined;
    this.#release();
    resolve?.();
  }
}

function describeStatus(s: ExitStatus): string {
  return s.signal ? `signal ${s.signal}` : `code ${s.code}`;
}

/**
 * Starts a pool of `workers` processes forked from this one with {@link fork}, like `cluster`
 * without starting new Node.js processes: every worker begins as a copy of this process at the
 * call (its loaded modules, data and listening servers), sharing memory pages with it until
 * either side writes them.
 *
 * - In the parent, returns a {@link PreforkPool} (`isChild: false`): `pids`, `stop()`, and the
 *   `'spawn'` / `'exit'` events. The parent closes its copies of the listening servers (see
 *   `servers`), so that the workers alone accept on them.
 * - In each worker, runs `main({ index })` and returns `{ isChild: true, index }`.
 *
 * A worker that ends is replaced (`respawn`), after a growing delay when it keeps dying quickly.
 * SIGTERM and SIGINT to the parent stop the pool (`signals`). Linux only, as fork().
 *
 * The workers are forked by a *template* process, itself forked from the parent at the call and
 * idle ever after, so that replacements inherit the listening sockets too: a worker's
 * `process.ppid` is the template's pid, and the parent cannot waitpid() its workers (the pool
 * reaps them; see the 'exit' event).
 *
 * @throws {ForkError} whatever {@link fork} refuses (same codes), and
 *   `ERR_PREFORK_DETECTOR_RUNNING` while a BlockingDetector runs (start one in `main` instead).
 * @throws {TypeError|RangeError} for invalid options (`code` `ERR_INVALID_ARG_TYPE`,
 *   `ERR_INVALID_ARG_VALUE` or `ERR_OUT_OF_RANGE`), naming the option and the value.
 */
export function prefork(options: PreforkOptions): PreforkPool | PreforkChild {
  const opts = resolvePreforkOptions(options);
  if (process.platform === 'linux') {
    const watches = (JSON.parse(native().nativeInfo()) as { watches?: number }).watches ?? 0;
    if (watches > 0) {
      throw new ForkError(
        'ERR_PREFORK_DETECTOR_RUNNING',
        `prefork() refused: ${watches} BlockingDetector(s) running. The pool's template process waits ` +
          'without running its event loop, and its copy of a detector would report that wait as a block ' +
          'forever. Stop the detector before prefork() and start one in main() (each worker gets its own).',
      );
    }
  }
  const servers = opts.servers ?? listeningServers();
  // The two channels: opened, then unlinked at once (the descriptors keep them; nothing is left
  // on disk whatever happens to either process).
  let cmdFd = -1;
  let evFd = -1;
  if (process.platform === 'linux') {
    const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-prefork-'));
    try {
      cmdFd = openSync(join(dir, 'cmd'), 'a+');
      evFd = openSync(join(dir, 'events'), 'a+');
    } finally {
      for (const f of ['cmd', 'events']) {
        try {
          unlinkSync(join(dir, f));
        } catch {
          // Not created.
        }
      }
      rmdirSync(dir);
    }
  }
  let template: number;
  try {
    // The young generation's settings are made in the template: every worker, replacements
    // included, inherits them (the limit's check runs in each worker's loop).
    template = fork({
      compact: opts.compact,
      fixedYoungGeneration: opts.fixedYoungGeneration,
      maxYoungGenerationMiB: opts.maxYoungGenerationMiB,
    });
  } catch (e) {
    if (cmdFd >= 0) closeSync(cmdFd);
    if (evFd >= 0) closeSync(evFd);
    throw e;
  }
  if (template === 0) {
    const info = runTemplate({
      workers: opts.workers,
      cmdFd,
      evFd,
      parent: process.ppid,
      stopTimeout: opts.stopTimeout,
    });
    return startWorker(info, opts.main);
  }
  const pool = new PreforkPool(template, cmdFd, evFd, opts);
  for (const server of servers) server.close();
  return pool;
}
