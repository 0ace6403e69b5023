// Loads the native addon: a local build (`npm run build`) first, then the prebuilt binary of this
// platform's npm package. One binary serves every Node.js version from 20 on (Node-API is
// ABI-stable; the V8 entry points it lacks are resolved at run time). The addon must speak this
// file's contract (`NATIVE_ABI_VERSION`) and a platform package be of this package's version.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { NativeHooks } from './hooks-store';
import { platformTriple, SUPPORTED_PLATFORMS } from './platform-triple.cjs';

/**
 * The version of the contract between this file and the addon: the functions of
 * {@link NativeBinding}, their options and results. The addon exports its own as `abiVersion`
 * (crates/node/src/lib.rs `ABI_VERSION`); the loader refuses an addon whose version differs
 * (`ERR_LOOP_HELPERS_NATIVE_ABI`), such as a stale local build or a binary of another release.
 * Bump both with any change to the contract. `__test__/native-contract.test.mjs` checks that the
 * addon's exports are exactly the members of {@link NativeBinding}.
 */
export const NATIVE_ABI_VERSION = 2;

/** Where a detector's warnings go (an unknown value is an error natively too). */
export type NativeLogMode =
  /** Nowhere (`log: false`, or warnings silenced the Node.js way). */
  | 'silent'
  /** stderr, as text. */
  | 'text'
  /** stderr, one JSON object a line (`log: 'json'`). */
  | 'json'
  /** To JavaScript, through `onBlock` (`log: function`). */
  | 'deferred';

/** Which blocking code a detector interrupts (an unknown value is an error natively too). */
export type NativeInterruptMode =
  /** None: report only. */
  | 'none'
  /** Inside `run()`/`wrap()` and the timer guards only (`interrupt: 'guarded'`). */
  | 'guarded'
  /** Blocking code wherever it runs (`interrupt: 'everywhere'`). */
  | 'everywhere';

/** The AsyncLocalStorage stores a detector reads with each stack sample (`asyncContext`). */
export interface NativeAsyncContext {
  /** The AsyncLocalStorage instances. */
  storages: readonly object[];
  /** Per instance: null (the whole store) or the keys to keep. */
  keys: readonly (readonly string[] | null)[];
  /** One instance was given alone: its store is the snapshot, not an array of one. */
  single: boolean;
  /**
   * Internal (lib/otel.ts): per instance, null or the keys to follow from its store, each a Map
   * key matched by identity or an own data property; the object reached is kept as an anchor
   * (see `takeContextAnchors`).
   */
  paths?: readonly (readonly (string | symbol)[] | null)[] | undefined;
  /**
   * Internal (lib/otel.ts): per instance, null or the keys kept of the objects found under its
   * `keys` (a second level of picking, so that nothing else of them is read).
   */
  innerKeys?: readonly (readonly string[] | null)[] | undefined;
  /**
   * Where stores hang off async resources (async_hooks-based AsyncLocalStorage): where to find the
   * current resource, and the records of the levels native code entered (lib/hooks-store.ts).
   */
  hooks?: NativeHooks | undefined;
}

/** `start()`'s options, read natively by name (crates/node/src/exports.rs `start`). */
export interface StartOptions {
  /** The timeout, > 0. */
  timeoutSeconds: number;
  /** The timeout as reports print it. */
  timeoutLabel: string;
  aggressive: boolean;
  logMode: NativeLogMode;
  /** `worker_threads.threadId` of this environment (reports). */
  threadId: number;
  /** Whether to sample the blocked code's stack (`capabilities().stackCapture`). */
  captureStacks: boolean;
  interrupt: NativeInterruptMode;
  /** Interrupt a promise reaction only once the block is this long; negative: never. */
  microtaskGraceSeconds: number;
  /** Stores to read with each stack sample; absent: none. */
  asyncContext?: NativeAsyncContext | undefined;
}

/** `installInterrupts()`'s options (crates/node/src/exports.rs `install_interrupts`). */
export interface InstallInterruptsOptions {
  /**
   * Whether `afterTermination` pops the async-id levels the interrupted code pushed one by one
   * (Node 20/22, through the async_wrap binding): then every Immediate can be repaired.
   */
  preciseAsyncIds: boolean;
  /** Repairs what a termination left (async-id stack, module cache, timers), or null. */
  afterTermination: ((trigger: (sentinel: unknown) => void) => void) | null;
  /**
   * Int32Array over a SharedArrayBuffer, element 0 set while an Immediate callback that
   * `afterTermination` can repair runs (lib/timer-repair.ts, mode `'record'`), or null. With
   * `preciseAsyncIds` and `afterTermination`, every Immediate can be repaired (the levels the
   * precise repair pops name it) and this is not read; otherwise null means that none is, so none
   * is terminated.
   */
  immediateRunning: Int32Array | null;
}

/** What a stopped watch had not delivered yet, oldest first (crates/node/src/exports.rs `stop`). */
export interface UndeliveredRecords {
  /** Its interrupts' records, as `installInterrupts`' `deliver` receives them. */
  interrupts: string[];
  /** Its block records, as `onBlock` receives them; last, the block in progress (`ended: false`), if any. */
  blocks: string[];
}

/**
 * The addon's exports (crates/node/src/lib.rs, the table in `napi_register_module_v1`; the
 * functions in exports.rs and fork_exports.rs). Kept by hand, and checked against the addon by
 * `__test__/native-contract.test.mjs`: every method here is exported and nothing else is.
 */
export interface NativeBinding {
  /** The addon's {@link NATIVE_ABI_VERSION}. */
  readonly abiVersion: number;
  /** Starts a watch; returns its id. `onBlock` receives the records of log mode `'deferred'`. */
  start(options: StartOptions, onBlock: (recordJson: string) => void): number;
  /** The objects the watch's `asyncContext` paths led to since the last call (internal: lib/otel.ts). */
  takeContextAnchors(id: number): object[];
  /** `{"context":…,"contextMissing":…}` of the calling code's stores, read as the sampling interrupt does. */
  readAsyncContext(asyncContext: NativeAsyncContext): string;
  installInterrupts(
    options: InstallInterruptsOptions,
    deliver: (json: string) => void,
  ): [guardApply: unknown, unguardedReason: string | undefined];
  setInterruptsActive(on: boolean): void;
  guardCall(fn: unknown, thisArg: unknown, args: readonly unknown[]): unknown;
  /** Hands `error` to Node's uncaught-exception path (`napi_fatal_exception`). */
  triggerUncaught(error: unknown): void;
  /**
   * Stops a watch; returns what it had not delivered yet (undefined: nothing). Nothing of the
   * watch is delivered after this returns.
   */
  stop(id: number): UndeliveredRecords | undefined;
  flush(id: number): string | undefined;
  captureStack(limit: number): string;
  /** JSON: capabilities, monitor statistics, and `panics` (see `Capabilities['panics']`). */
  nativeInfo(): string;
  isMainThread(): boolean;
  /** How long the calling thread has waited for a CPU since it started (ns; Linux), or -1. */
  threadCpuWaitNs(): number;
  forkSupport(): string | null;
  activeRequests(): number;
  /** Parent: [pid, parkMs, memoryMs, forkMs, mappings, workers]; child: [0, pid, ppid, workersRestored]. */
  fork(check?: (nativeTls: number) => void): number[];
  childExitGuard(beforeExit: () => void, exit: () => void): void;
  childAbort(message: string): never;
  registerSourceMap(generatedFile: string, sources: string[], mappings: string): boolean;
  /** A watch's report budget: at most one logged block per fingerprint per `ms` (0: none). */
  setLogRepeatsAfter(id: number, ms: number): boolean;
  /** The directory fingerprints make file names relative to, and this package's own directory. */
  setReportPaths(cwd: string, ownDir: string): void;
  /**
   * The memory through which this thread's synchronous-API wrappers mark the API they are inside
   * (lib/sync-api-hooks.ts), the same for every call on a thread: as an `Int32Array`, element 0
   * is the API's number (see `setSyncApiNames`; 0: none), element 1 is 1 while a stack sample is
   * waiting. `ownDir`: this package's compiled directory, whose frames on top of a sample taken
   * in a wrapper are left out. Throws where external ArrayBuffers are not allowed
   * (`nativeInfo().syncCallNames` false).
   */
  syncMarker(ownDir: string): ArrayBuffer;
  /** What the marker's numbers mean: number n is `names[n - 1]`. */
  setSyncApiNames(names: readonly string[]): void;
  /** A wrapped synchronous API (1 + its index) returned while a sample waited: take it here. */
  sampleAtSyncReturn(api: number): void;
  waitpid(pid: number, block: boolean): [code: number | null, signal: number | null] | undefined;
  /**
   * Panics with `message` inside a guarded export (an ERR_LOOP_HELPERS_PANIC exception), holding
   * a lock it poisons when `holdingLock`. Exported only when `LOOP_HELPERS_TEST_PANIC=1` as the
   * addon loads (the tests of panic visibility).
   */
  testPanic?(message: string, holdingLock: boolean): never;
}

export { platformTriple, SUPPORTED_PLATFORMS };

const packageRoot = join(__dirname, '..', '..');

function loadError(code: string, message: string): Error & { code: string } {
  const err = new Error(message) as Error & { code: string };
  err.code = code;
  return err;
}

/**
 * `binding`, loaded from `file`, when it speaks this file's contract. An addon of another ABI
 * version is an error rather than a reason to try the next candidate: it is a stale build or a
 * binary of another release, which the user should hear about, not have silently replaced.
 */
function checkAbi(binding: NativeBinding, file: string): NativeBinding {
  const got = (binding as { abiVersion?: unknown }).abiVersion;
  if (got === NATIVE_ABI_VERSION) return binding;
  throw loadError(
    'ERR_LOOP_HELPERS_NATIVE_ABI',
    `loop-helpers: the native addon ${file} has ABI version ${got === undefined ? 'none' : String(got)}, ` +
      `but this loop-helpers needs version ${NATIVE_ABI_VERSION}.\n` +
      'Rebuild it (`npm run build` in a checkout), or reinstall loop-helpers so that its platform package matches.',
  );
}

/** `version` of the package.json at `file`; undefined when it cannot be read. */
function packageVersion(file: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

function load(): NativeBinding {
  const triple = platformTriple();
  const explicit = process.env.LOOP_HELPERS_NATIVE_PATH;
  const candidates: string[] = [];
  if (explicit) candidates.push(explicit);
  candidates.push(join(packageRoot, `loop-helpers.${triple}.node`));
  const errors: string[] = [];
  for (const file of candidates) {
    if (!existsSync(file)) {
      errors.push(`${file}: not found`);
      continue;
    }
    let binding: NativeBinding;
    try {
      binding = require(file) as NativeBinding;
    } catch (e) {
      errors.push(`${file}: ${(e as Error).message}`);
      continue;
    }
    return checkAbi(binding, file);
  }
  // The platform package must be of this package's version, as napi-rs loaders check: another
  // release's binary may speak the same ABI and still behave differently.
  const pkg = `loop-helpers-${triple}`;
  let manifest: string | undefined;
  try {
    manifest = require.resolve(`${pkg}/package.json`);
  } catch (e) {
    errors.push(`${pkg}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (manifest !== undefined) {
    const own = packageVersion(join(packageRoot, 'package.json'));
    const theirs = packageVersion(manifest);
    if (theirs !== own) {
      throw loadError(
        'ERR_LOOP_HELPERS_NATIVE_VERSION',
        `loop-helpers: the platform package ${pkg} is version ${theirs ?? '(unreadable)'} (${dirname(manifest)}), ` +
          `but loop-helpers is version ${own ?? '(unreadable)'}.\n` +
          `Reinstall so that both are the same version (\`npm install loop-helpers@${own ?? '<version>'}\`).`,
      );
    }
    let binding: NativeBinding | undefined;
    try {
      binding = require(pkg) as NativeBinding;
    } catch (e) {
      errors.push(`${pkg}: ${(e as Error).message.split('\n')[0]}`);
    }
    if (binding !== undefined) return checkAbi(binding, require.resolve(pkg));
  }
  const supported = (SUPPORTED_PLATFORMS as readonly string[]).includes(triple);
  throw loadError(
    supported ? 'ERR_LOOP_HELPERS_NATIVE_LOAD' : 'ERR_LOOP_HELPERS_UNSUPPORTED_PLATFORM',
    supported
      ? `loop-helpers: cannot load the native addon for ${triple}.\n` +
          // A checkout has the Rust sources to build from; an installed package has only the
          // platform package to get it from.
          (existsSync(join(packageRoot, 'Cargo.toml'))
            ? `Build it with \`npm run build\` (needs Rust), or install the platform package ${pkg}.\n`
            : `It comes from the platform package ${pkg}, an optional dependency: reinstall without \`--omit=optional\` (or \`--no-optional\`), and with the same platform and C library as this machine.\n`) +
          `Tried:\n  ${errors.join('\n  ')}`
      : `loop-helpers: no native addon for ${triple}. Supported platforms: ${SUPPORTED_PLATFORMS.join(', ')}.`,
  );
}

let binding: NativeBinding | undefined;

/** The native addon, loaded on first use. */
export function native(): NativeBinding {
  binding ??= load();
  return binding;
}

let cachedThreadId: number | undefined;

/**
 * `worker_threads.threadId` of this thread. The main thread's is 0, known without loading
 * `node:worker_threads` (which costs the main thread ~1.7 MB of RSS); a Worker has it loaded anyway.
 */
export function threadId(): number {
  cachedThreadId ??= native().isMainThread()
    ? 0
    : (require('node:worker_threads') as typeof import('node:worker_threads')).threadId;
  return cachedThreadId;
}
