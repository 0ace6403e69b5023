// SyncCallDetector: reports calls to Node.js's blocking synchronous APIs made on the event loop, a
// BlockHound for Node.js.
//
// The interception itself (wrappers of the module exports, hooks below them for functions taken
// before start()) is lib/sync-api-hooks.ts, shared with BlockingDetector, which marks the call in
// progress for its warnings. Here: the observer it calls before each call while a detector runs
// on this thread (the caller's stack, the API's name, the allow list, the report).

import { channelMessage } from './channel-message';
import { argError, describe } from './errors';
import { threadId } from './native';
import { mapFrames } from './sourcemaps';
import { stackText } from './stack-text';
import { acquireSyncHooks, releaseSyncHooks } from './sync-api-hooks';
import type { StackFrame } from './types';

/** What a detector does with a synchronous call: write a warning, or throw {@link SyncCallError}. */
export type SyncCallAction = 'warn' | 'throw';

/**
 * An entry of {@link SyncCallDetectorOptions.allow}. A string without glob characters matches a
 * frame whose file path contains it or whose function name is it, or the API name itself
 * (`'crypto.randomUUID'`); a string with `*` or `?` is a glob over the whole file path (`**`
 * crosses directories) or the function name; a RegExp is tested against the API name, each file
 * path and each function name.
 */
export type SyncCallAllow = string | RegExp;

/** Which calls a detector looks at: all of this thread's, or only those inside `detector.run()`. */
export type SyncCallScope = 'everywhere' | 'run';

/** Options of {@link SyncCallDetector}. */
export interface SyncCallDetectorOptions {
  /** `'warn'` (default): write a warning with the caller's stack; `'throw'`: throw {@link SyncCallError} at the call, before it does anything. */
  action?: SyncCallAction;
  /**
   * Calls to let through: matched against the API name and every frame of the caller's stack
   * (file and function), so that an entry allows the calls made anywhere inside the code it
   * names, e.g. `'node_modules/dotenv/'`, `'loadConfig'`, `'node:internal/modules/'` (module
   * loading by `require()`), `/^crypto\.randomUUID$/`. See {@link SyncCallAllow}.
   */
  allow?: readonly SyncCallAllow[];
  /** `'everywhere'` (default), or `'run'`: only calls inside `detector.run(fn)` and its async continuations. */
  scope?: SyncCallScope;
  /** Let calls made before the event loop first turns pass, as `node --trace-sync-io` does. Default true. */
  startupGrace?: boolean;
  /** Write warnings on stderr (`'warn'`). Default true; `false`: only the `diagnostics_channel`. */
  log?: boolean;
}

/** One reported synchronous call, as published on {@link SYNC_CALL_CHANNEL}. */
export interface SyncCall {
  /** The API, e.g. `fs.readFileSync`, `child_process.execSync`, `crypto.pbkdf2Sync`, `Atomics.wait`, `require`. */
  api: string;
  /** What the detector did. */
  action: SyncCallAction;
  /** `worker_threads.threadId` of the calling thread (0: the main thread). */
  threadId: number;
  /** The caller's stack, innermost frame first, from the code that called the API (source-mapped when source maps are enabled). */
  frames: StackFrame[];
  /** How it was caught: through the module's export (`'export'`) or below it (`'internal'`: a function taken before start(), or Node's own code). */
  via: 'export' | 'internal';
}

/**
 * Thrown by a detector whose `action` is `'throw'`, at the synchronous call, before the call does
 * anything. Its `.stack` is the caller's stack.
 */
export class SyncCallError extends Error {
  /** Always `ERR_LOOP_HELPERS_SYNC_CALL`. */
  readonly code = 'ERR_LOOP_HELPERS_SYNC_CALL';
  /** The API that was called, e.g. `fs.readFileSync`. */
  readonly api: string;
  /** The caller's stack, innermost frame first. */
  readonly frames: StackFrame[];

  /** @internal */
  constructor(call: SyncCall) {
    super(`${call.api} called on the event loop${where()}`);
    this.name = 'SyncCallError';
    this.api = call.api;
    this.frames = call.frames;
    this.stack = stackText(this.name, this.message, call.frames);
  }
}
SyncCallError.prototype.name = 'SyncCallError';

/** The `diagnostics_channel` every detector publishes `{ call: SyncCall, detector }` on, once per reported call. */
export const SYNC_CALL_CHANNEL = 'loop-helpers:sync-call';

// ---------------------------------------------------------------------------------------------
// State of this thread.

/** Running detectors. */
const active: SyncCallDetector[] = [];
/** Reporting a call (stack, source maps, stderr, channel): nothing is intercepted meanwhile. */
let reporting = false;
/** The event loop of this thread has started (`performance.nodeTiming.loopStart`). */
let loopStarted = false;
/** Some running detector has no start-up grace. */
let anyWithoutGrace = false;

function loopHasStarted(): boolean {
  if (!loopStarted) loopStarted = performance.nodeTiming.loopStart >= 0;
  return loopStarted;
}

const where = (): string => {
  const id = threadId();
  return id === 0 ? '' : ` in worker thread ${id}`;
};

// ---------------------------------------------------------------------------------------------
// Options.

const KNOWN = ['action', 'allow', 'scope', 'startupGrace', 'log'] as const;

/** Tests a string (an API name, a path, a function name). */
type Matcher = (text: string, kind: 'api' | 'file' | 'function') => boolean;

function globToRegExp(glob: string, index: number): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
        if (glob[i + 1] === '/') i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
  }
  try {
    return new RegExp(`^${re}$`);
  } catch {
    throw argError(
      'type',
      'ERR_INVALID_ARG_VALUE',
      `The "allow[${index}]" option is not a valid glob. Received ${describe(glob)}`,
    );
  }
}

function matcher(entry: unknown, index: number): Matcher {
  if (entry instanceof RegExp) {
    const re = new RegExp(entry.source, entry.flags.replace(/[gy]/g, ''));
    return (text) => re.test(text);
  }
  if (typeof entry !== 'string') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "allow[${index}]" option must be a string or a RegExp. Received ${describe(entry)}`,
    );
  }
  if (entry.trim() === '') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_VALUE',
      `The "allow[${index}]" option must not be empty (it would allow every call). Received ${describe(entry)}`,
    );
  }
  if (/[*?]/.test(entry)) {
    if (/\*\*\*/.test(entry)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `The "allow[${index}]" option is not a valid glob ("***"). Received ${describe(entry)}`,
      );
    }
    const re = globToRegExp(entry, index);
    return (text, kind) => kind !== 'api' && re.test(text);
  }
  return (text, kind) => (kind === 'file' ? text.includes(entry) : text === entry);
}

interface Resolved {
  action: SyncCallAction;
  allow: Matcher[];
  allowSpec: readonly SyncCallAllow[];
  scope: SyncCallScope;
  startupGrace: boolean;
  log: boolean;
}

function resolveOptions(options: unknown): Resolved {
  const r: Resolved = { action: 'warn', allow: [], allowSpec: [], scope: 'everywhere', startupGrace: true, log: true };
  if (options === undefined) return r;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument must be an object. Received ${describe(options)}`,
    );
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(KNOWN as readonly string[]).includes(key)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `Unknown SyncCallDetector option "${key}". Known options: ${KNOWN.join(', ')}`,
      );
    }
  }
  if (o.action !== undefined) {
    if (o.action !== 'warn' && o.action !== 'throw') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `The "action" option must be 'warn' or 'throw'. Received ${describe(o.action)}`,
      );
    }
    r.action = o.action;
  }
  if (o.allow !== undefined) {
    if (!Array.isArray(o.allow)) {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `The "allow" option must be an array of strings and RegExps. Received ${describe(o.allow)}`,
      );
    }
    r.allow = o.allow.map(matcher);
    r.allowSpec = Object.freeze([...(o.allow as SyncCallAllow[])]);
  }
  if (o.scope !== undefined) {
    if (o.scope !== 'everywhere' && o.scope !== 'run') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `The "scope" option must be 'everywhere' or 'run'. Received ${describe(o.scope)}`,
      );
    }
    r.scope = o.scope;
  }
  for (const key of ['startupGrace', 'log'] as const) {
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') {
      throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "${key}" option must be a boolean. Received ${describe(v)}`);
    }
    r[key] = v;
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Stacks.

interface CallSiteLike {
  getFunctionName(): string | null;
  getFileName(): string | undefined | null;
  getLineNumber(): number | null;
  getColumnNumber(): number | null;
}

/** The stack above `skip` (excluded), as frames; V8's structured call sites, no text formatting. */
function captureFrames(skip: (...args: never[]) => unknown): StackFrame[] {
  const E = Error as ErrorConstructor & { prepareStackTrace?: unknown; stackTraceLimit: number };
  const prepare = E.prepareStackTrace;
  const limit = E.stackTraceLimit;
  const holder: { stack?: unknown } = {};
  try {
    E.prepareStackTrace = (_e: unknown, sites: CallSiteLike[]) => sites;
    E.stackTraceLimit = 24;
    E.captureStackTrace(holder, skip);
    const sites = holder.stack as CallSiteLike[] | undefined;
    if (!Array.isArray(sites)) return [];
    return sites.map((s) => ({
      functionName: s.getFunctionName() ?? '',
      fileName: s.getFileName() ?? '',
      lineNumber: s.getLineNumber() ?? 0,
      columnNumber: s.getColumnNumber() ?? 0,
    }));
  } finally {
    E.prepareStackTrace = prepare;
    E.stackTraceLimit = limit;
  }
}

const isNodeFrame = (f: StackFrame): boolean => f.fileName.startsWith('node:');

/** `node:internal/crypto/pbkdf2` -> `crypto`, `node:fs` -> `fs`, `node:internal/modules/cjs/loader` -> `module`. */
function moduleOf(file: string): string {
  const rest = file.slice('node:'.length).replace(/^internal\//, '');
  const first = rest.split('/')[0] ?? rest;
  return first === 'modules' ? 'module' : first;
}

/**
 * The API and the frames to show for a call caught below the exports: the outermost frame of
 * Node's own code next to the application's is the API the application called.
 */
/** Node's internal function names that differ from the API's. */
const INTERNAL_NAMES: Record<string, string> = {
  'crypto.signOneShot': 'crypto.sign',
  'crypto.verifyOneShot': 'crypto.verify',
  'fs.realpath': 'fs.realpathSync.native',
  'fs.native': 'fs.realpathSync.native',
};

function describeInternal(raw: StackFrame[], fallback: string, hint?: string): { api: string; frames: StackFrame[] } {
  const app = raw.findIndex((f) => !isNodeFrame(f));
  if (app === 0) return { api: fallback, frames: raw };
  const entry = app < 0 ? raw[raw.length - 1] : raw[app - 1];
  const frames = app < 0 ? raw : raw.slice(app);
  // zlib's convenience methods are all one closure, `syncBufferWrapper`: the hint names it.
  if (hint !== undefined && (!entry || entry.functionName === '' || entry.functionName === 'syncBufferWrapper')) {
    return { api: hint, frames };
  }
  // An anonymous entry (fs.realpathSync.native on Node 22 and later): named after the binding.
  if (!entry || entry.functionName === '') return { api: INTERNAL_NAMES[fallback] ?? fallback, frames };
  const mod = moduleOf(entry.fileName);
  if (mod === 'module' && entry.functionName === 'require') return { api: 'require', frames };
  const api = `${mod}.${entry.functionName}`;
  return { api: INTERNAL_NAMES[api] ?? api, frames };
}

const toPath = (file: string): string => {
  if (!file.startsWith('file://')) return file;
  try {
    return (require('node:url') as typeof import('node:url')).fileURLToPath(file);
  } catch {
    return file;
  }
};

function allowed(matchers: readonly Matcher[], api: string, frames: readonly StackFrame[]): boolean {
  if (matchers.length === 0) return false;
  for (const m of matchers) {
    if (m(api, 'api')) return true;
    for (const f of frames) {
      if (f.functionName !== '' && m(f.functionName, 'function')) return true;
      if (f.fileName !== '' && m(toPath(f.fileName), 'file')) return true;
      if (f.generated && m(toPath(f.generated.fileName), 'file')) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Reporting.

type Channel = import('node:diagnostics_channel').Channel;
let channel: Channel | undefined;

const kWants = Symbol('wants');
const kReport = Symbol('report');

/**
 * The API and call site reported last in this synchronous run: one API call can reach several
 * interceptions (fs.readFileSync taken before start() calls fs.openSync, fs.readSync and
 * fs.closeSync through the exports), reported once. Cleared by a microtask.
 */
let lastKey: string | undefined;
const forgetLast = () => {
  lastKey = undefined;
};

/**
 * A synchronous call was made. `api`: its name when caught at the export, or undefined to derive
 * it from the stack (`fallback` when that fails, `hint` for zlib); `skip`: the interception frame
 * to leave out.
 */
function intercept(
  api: string | undefined,
  fallback: string,
  skip: (...args: never[]) => unknown,
  hint?: string,
): void {
  if (quiet()) return;
  let wanting: SyncCallDetector[] | undefined;
  for (const d of active) {
    if (!d[kWants]()) continue;
    wanting ??= [];
    wanting.push(d);
  }
  if (wanting === undefined) return;
  let error: SyncCallError | undefined;
  reporting = true;
  try {
    const raw = captureFrames(skip);
    // An export called by Node's own code (fs.readFileSync calls fs.openSync): name it from the stack.
    const internal = api === undefined || (raw[0] !== undefined && isNodeFrame(raw[0]));
    const { api: name, frames } = internal ? describeInternal(raw, api ?? fallback, hint) : { api, frames: raw };
    const top = frames[0];
    const key = `${name}\n${top ? `${top.fileName}:${top.lineNumber}:${top.columnNumber}` : ''}`;
    if (key === lastKey) return;
    if (lastKey === undefined) queueMicrotask(forgetLast);
    lastKey = key;
    let mapped: StackFrame[] | undefined;
    for (const d of wanting) {
      if (allowed(d[kMatchers], name, raw)) continue;
      mapped ??= mapFrames(frames);
      const call: SyncCall = {
        api: name,
        action: d.action,
        threadId: threadId(),
        frames: mapped,
        via: internal ? 'internal' : 'export',
      };
      d[kReport](call);
      if (d.action === 'throw') error ??= new SyncCallError(call);
    }
  } finally {
    reporting = false;
  }
  if (error) throw error;
}

/** The fast test every interception makes first: nothing to do in the common case. */
const quiet = (): boolean =>
  active.length === 0 || reporting || (!loopStarted && !anyWithoutGrace && !loopHasStarted());

/** @internal What the interception reached on this thread while installed (tests, the table in docs/testing.md). */
export { syncCallCoverage } from './sync-api-hooks';

// ---------------------------------------------------------------------------------------------
// The detector.

const kMatchers = Symbol('matchers');

/**
 * Reports calls to Node.js's blocking synchronous APIs made on this thread's event loop (the main
 * thread's, or a Worker's) while it runs: `fs.*Sync`, `zlib.*Sync`, `crypto.pbkdf2Sync`,
 * `scryptSync`, `generateKeyPairSync` and the other synchronous crypto work, `child_process.*Sync`,
 * `Atomics.wait`, and the file reads of `require()`. A BlockHound for Node.js.
 *
 * `'warn'` writes `(node:PID) SyncCallWarning: fs.readFileSync called on the event loop` and the
 * caller's stack on stderr (once per API and call site), `'throw'` throws {@link SyncCallError}
 * at the call, before it does anything; both publish every call on {@link SYNC_CALL_CHANNEL}.
 *
 * Nothing is patched while no detector runs; after the last `stop()` every patched function is
 * back as it was.
 *
 * @example
 * ```ts
 * import { SyncCallDetector } from 'loop-helpers';
 * const detector = new SyncCallDetector({ action: 'warn', allow: ['node_modules/dotenv/'] }).start();
 * ```
 */
export class SyncCallDetector {
  /** What is done with a call. */
  readonly action: SyncCallAction;
  /** The allow list in effect. */
  readonly allow: readonly SyncCallAllow[];
  /** Which calls are looked at. */
  readonly scope: SyncCallScope;
  /** Whether calls before the event loop's first turn pass. */
  readonly startupGrace: boolean;
  /** Whether warnings are written on stderr. */
  readonly log: boolean;

  /** @internal */
  readonly [kMatchers]: readonly Matcher[];
  #running = false;
  #store: import('node:async_hooks').AsyncLocalStorage<SyncCallDetector> | undefined;
  /** Call sites already warned about (API and innermost frame). */
  readonly #warned = new Set<string>();

  /** @param options See {@link SyncCallDetectorOptions}. */
  constructor(options?: SyncCallDetectorOptions) {
    const r = resolveOptions(options);
    this.action = r.action;
    this.allow = r.allowSpec;
    this.scope = r.scope;
    this.startupGrace = r.startupGrace;
    this.log = r.log;
    this[kMatchers] = r.allow;
  }

  /** Whether the detector runs. */
  get running(): boolean {
    return this.#running;
  }

  /** Starts reporting. Starting a running detector does nothing. */
  start(): this {
    if (this.#running) return this;
    if (this.scope === 'run' && !this.#store) {
      const { AsyncLocalStorage } = require('node:async_hooks') as typeof import('node:async_hooks');
      this.#store = new AsyncLocalStorage();
    }
    if (active.length === 0) acquireSyncHooks(intercept);
    active.push(this);
    this.#running = true;
    anyWithoutGrace = active.some((d) => !d.startupGrace);
    return this;
  }

  /** Stops reporting. With the last running detector of this thread, every patched function is put back. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    active.splice(active.indexOf(this), 1);
    anyWithoutGrace = active.some((d) => !d.startupGrace);
    if (active.length === 0) releaseSyncHooks();
  }

  /**
   * Calls `fn(...args)`; with `scope: 'run'`, the synchronous calls made inside it and its async
   * continuations are the ones reported (per request, per test). On a detector that is not running
   * it just calls `fn`.
   */
  run<A extends unknown[], R>(fn: (...args: A) => R, ...args: A): R {
    if (typeof fn !== 'function') {
      throw argError('type', 'ERR_INVALID_ARG_TYPE', `The "fn" argument must be a function. Received ${describe(fn)}`);
    }
    if (!this.#running || !this.#store) return fn(...args);
    return this.#store.run(this, fn, ...args);
  }

  /** Stops the detector (for `using detector = new SyncCallDetector().start()`). */
  [Symbol.dispose](): void {
    this.stop();
  }

  /** @internal Whether this call concerns the detector (before any stack is taken). */
  [kWants](): boolean {
    if (this.startupGrace && !loopHasStarted()) return false;
    return this.#store === undefined || this.#store.getStore() === this;
  }

  /** @internal */
  [kReport](call: SyncCall): void {
    if (this.action === 'warn' && this.log) {
      const top = call.frames[0];
      const key = `${call.api}\n${top ? `${top.fileName}:${top.lineNumber}:${top.columnNumber}` : ''}`;
      if (!this.#warned.has(key)) {
        this.#warned.add(key);
        process.stderr.write(
          `(node:${process.pid}) ${stackText('SyncCallWarning', `${call.api} called on the event loop${where()}`, call.frames, 20)}\n`,
        );
      }
    }
    channel ??= (require('node:diagnostics_channel') as typeof import('node:diagnostics_channel')).channel(
      SYNC_CALL_CHANNEL,
    );
    if (channel.hasSubscribers) channel.publish(channelMessage({ call }, { detector: this }));
  }
}
