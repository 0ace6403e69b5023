// Loads the native addon: a local build (`npm run build`) first, then the prebuilt binary of this
// platform's npm package. One binary serves every Node.js version from 20 on (Node-API is
// ABI-stable; the V8 entry points it lacks are resolved at run time).

import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** Native interrupt modes (crates/node/src/exports.rs `start`; an unknown value is an error there). */
export enum InterruptMode {
  /** Report only. */
  None = 0,
  /** Interrupt inside `run()`/`wrap()` and the timer guards only (`interrupt: 'guarded'`). */
  Guarded = 1,
  /** Interrupt blocking code wherever it runs (`interrupt: 'everywhere'`). */
  Everywhere = 2,
}

/** The functions the Rust addon exports (see crates/node/src/exports.rs). */
export interface NativeBinding {
  start(
    timeoutSeconds: number,
    aggressive: boolean,
    logMode: number,
    timeoutLabel: string,
    threadId: number,
    captureStacks: boolean,
    interrupt: InterruptMode,
    microtaskGraceSeconds: number,
    onBlock: (recordJson: string) => void,
    asyncContext?: readonly object[],
    asyncContextKeys?: readonly (readonly string[] | null)[],
    asyncContextSingle?: boolean,
    asyncContextPaths?: readonly (readonly (string | symbol)[] | null)[],
  ): number;
  /** The objects the watch's `asyncContext` paths led to since the last call (internal: lib/otel.ts). */
  takeContextAnchors(id: number): object[];
  /** `{"context":…,"contextMissing":…}` of the calling code's stores, read as the sampling interrupt does. */
  readAsyncContext(
    storages: readonly object[],
    keys: readonly (readonly string[] | null)[],
    single: boolean,
    paths?: readonly (readonly (string | symbol)[] | null)[],
  ): string;
  installInterrupts(
    asyncWrap: object | null,
    kStackLength: number,
    kExecutionAsyncId: number,
    kTriggerAsyncId: number,
    deliver: (json: string) => void,
    afterTermination: (trigger: (sentinel: unknown) => void, repaired: boolean) => void,
  ): [guardApply: unknown, guardThis: unknown, unguardedReason: string | undefined];
  setInterruptsActive(on: boolean): void;
  takeAbandoned(): object[];
  guardCall(fn: unknown, thisArg: unknown, args: readonly unknown[]): unknown;
  stop(id: number): string | undefined;
  flush(id: number): string | undefined;
  captureStack(limit: number): string;
  nativeInfo(): string;
  isMainThread(): boolean;
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
  waitpid(pid: number, block: boolean): [code: number | null, signal: number | null] | undefined;
}

/** The platform triples that have a prebuilt binary, as in package.json `napi.targets`. */
export const SUPPORTED_PLATFORMS = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
] as const;

/** musl's dynamic loader is on disk only on musl systems (cheaper than process.report, which
 * builds a whole diagnostic report). */
function isMusl(): boolean {
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  return existsSync(`/lib/ld-musl-${arch}.so.1`);
}

/** This process's platform triple, e.g. `linux-x64-gnu`. */
export function platformTriple(): string {
  if (process.platform === 'linux') return `linux-${process.arch}-${isMusl() ? 'musl' : 'gnu'}`;
  return `${process.platform}-${process.arch}`;
}

const packageRoot = join(__dirname, '..', '..');

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
    try {
      return require(file) as NativeBinding;
    } catch (e) {
      errors.push(`${file}: ${(e as Error).message}`);
    }
  }
  const pkg = `loop-helpers-${triple}`;
  try {
    return require(pkg) as NativeBinding;
  } catch (e) {
    errors.push(`${pkg}: ${(e as Error).message.split('\n')[0]}`);
  }
  const supported = (SUPPORTED_PLATFORMS as readonly string[]).includes(triple);
  const err = new Error(
    supported
      ? `loop-helpers: cannot load the native addon for ${triple}.\n` +
          `Reinstall with optional dependencies enabled, or build it with \`npm run build\` (needs Rust).\n` +
          `Tried:\n  ${errors.join('\n  ')}`
      : `loop-helpers: no native addon for ${triple}. Supported platforms: ${SUPPORTED_PLATFORMS.join(', ')}.`,
  ) as Error & { code: string };
  err.code = supported ? 'ERR_LOOP_HELPERS_NATIVE_LOAD' : 'ERR_LOOP_HELPERS_UNSUPPORTED_PLATFORM';
  throw err;
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
