// The interception of Node.js's blocking synchronous APIs, shared by two users on each thread:
// - SyncCallDetector (lib/sync-calls.ts) reports the calls: it sets an observer that sees each
//   call before it runs;
// - BlockingDetector marks the call in progress, so that a warning of a block inside it names the
//   API: the wrappers write the API's number into native memory the monitor reads (an Int32Array
//   over it; crates/node/src/sync_marker.rs), and take a waiting stack sample as the call returns.
//
// Two layers, installed while at least one user needs them and removed (every original back in
// place) when the last one is done:
//
// 1. Exports. The public synchronous functions of node:fs, node:zlib, node:crypto and
//    node:child_process, fs.Dir's readSync/closeSync and Atomics.wait are replaced on their module
//    objects by wrappers, and `module.syncBuiltinESMExports()` hands the wrappers to ES module
//    named imports (live bindings). This catches every call through a property read or an ES
//    import, with the exact API name. SyncCallDetector loads the modules that are not loaded yet;
//    the marker alone patches the loaded ones (loading node:crypto costs ~10 ms and 1-2 MB), and
//    the others once they are loaded (`patchLoadedModules()`, at each BlockingDetector start and
//    block delivery).
// 2. Internals. Functions taken before start() (`const { execSync } = require(...)`) are still
//    the originals, and a JavaScript function's implementation cannot be replaced. What those
//    originals call can be: the fs, zlib and spawn_sync bindings (`process.binding()` returns the
//    very objects Node's own modules call through, also those loaded later), and the crypto job
//    classes, whose prototypes are found once per thread by creating one async job of each kind
//    under an async hook, with its run() skipped (node:crypto must be loaded for that). A
//    synchronous binding call is recognised by its arguments (no request object) and a
//    synchronous crypto job by having no `ondone`. Calls made through a layer-1 wrapper are not
//    seen again here.
//    Node.js 26 fills random bytes synchronously (randomBytes, randomFillSync, the randomUUID,
//    randomInt and getRandomValues refills) through a binding function its random module keeps in
//    a variable of its own, with no job: for SyncCallDetector, that variable is replaced once per
//    thread through the inspector (./captured-binding; 40-120 ms, so not for the marker alone), and
//    the replacement stays, doing nothing while nothing is installed.
//
// The hot path, per synchronous call while installed: a depth check, the observer check, two
// stores into the marker and one load (see bench/cases/sync-calls.mjs).

import { dirname, sep } from 'node:path';
import { replaceCapturedBinding } from './captured-binding';

/** Sees a call before it runs: `api` its name at the export, or undefined below it (`fallback`
 * then names it, `hint` names a zlib handle's API); `skip` is the interception frame. May throw
 * (SyncCallDetector's `'throw'`): the call then does not happen. */
export type SyncCallObserver = (
  api: string | undefined,
  fallback: string,
  skip: (...args: never[]) => unknown,
  hint?: string,
) => void;

type AnyFn = (...args: unknown[]) => unknown;

/** This file's directory: the frames of this package's code, which samples taken inside a wrapper leave out. */
export const OWN_CODE_DIR = `${dirname(__filename)}${sep}`;

// ---------------------------------------------------------------------------------------------
// State of this thread.

/** Inside an intercepted call: nested intercepted calls pass straight through. */
let depth = 0;
/** SyncCallDetector's observer while one runs. */
let observer: SyncCallObserver | undefined;
/** The marker cells while a BlockingDetector runs (and this Node.js allows them). */
let marker: Int32Array | undefined;
/** Element of `marker`: 1 + the index in `names` of the API the thread is inside; 0: none. */
const API = 0;
/** Element of `marker`: 1 while a stack sample is waiting (set natively). */
const SAMPLE_WAITING = 1;

/** The API names the marker uses, by number - 1. */
const names: string[] = [];
const numbers = new Map<string, number>();
/** The marker's number of an API name (numbers are never reused on a thread). */
function numberOf(name: string): number {
  let n = numbers.get(name);
  if (n === undefined) {
    names.push(name);
    n = names.length;
    numbers.set(name, n);
    namesChanged = true;
  }
  return n;
}
/** Names were added since the native side last got them. */
let namesChanged = true;

/** Users: SyncCallDetector (loads the modules) and the marker (patches the loaded ones). */
let loadingUsers = 0;
let markerUsers = 0;

// ---------------------------------------------------------------------------------------------
// The wrappers.

/**
 * What a wrapper needs to know about the function it wraps. Plain data where it can be: every
 * wrapper is a closure of one function literal, so V8 sees its call sites as one (megamorphic);
 * a call avoided on the hot path is worth more than usual.
 */
interface Interception {
  /** Whether this call is synchronous (else it passes straight through); absent: always. */
  sync: ((self: unknown, args: unknown[]) => boolean) | undefined;
  /** The API's name at the export; undefined below it (the observer names it from the stack). */
  api: string | undefined;
  /** The observer's name for the call when the stack does not give one. */
  label: string;
  /** zlib: the API of the handle the call is made on. */
  hint?: ((self: unknown) => string | undefined) | undefined;
  /** The marker's number of the API; 0: computed by `number`. */
  n: number;
  number?: ((self: unknown) => number) | undefined;
}

/**
 * `original` wrapped: an outermost synchronous call is shown to the observer, marked while it
 * runs, and takes a waiting stack sample as it returns. One frame (errors thrown by the call
 * carry it): the marking is written out here rather than in a helper.
 */
function intercepted(original: AnyFn, how: Interception): AnyFn {
  const { sync, api, label, hint, number } = how;
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    if (depth !== 0 || (sync !== undefined && !sync(this, args))) return Reflect.apply(original, this, args);
    if (observer !== undefined) observer(api, label, wrapped, hint?.(this));
    const m = marker;
    const n = m === undefined ? 0 : number === undefined ? how.n : number(this);
    depth = 1;
    if (m !== undefined) m[API] = n;
    try {
      return Reflect.apply(original, this, args);
    } finally {
      depth = 0;
      if (m !== undefined) {
        // A stack sample waits (the block was reported while the call ran): take it here, where
        // the stack is the caller's. Still marked meanwhile, as the call is not quite over.
        if (m[SAMPLE_WAITING] !== 0) sampleAtReturn(n);
        m[API] = 0;
      }
    }
  };
  return wrapped;
}

let sampleAtReturn: (n: number) => void = () => {};

/**
 * A termination (a detector's interrupt) skips `finally` blocks, ours too: called when one was
 * resolved, so that the next calls are intercepted and marked again.
 */
export function resetAfterTermination(): void {
  depth = 0;
  if (marker !== undefined) marker[API] = 0;
}

// ---------------------------------------------------------------------------------------------
// Layer 1: the exports.

interface Patch {
  target: object;
  key: PropertyKey;
  descriptor: PropertyDescriptor;
}

let patches: Patch[] = [];

function replace(target: object, key: PropertyKey, make: (original: AnyFn) => AnyFn): void {
  const descriptor = Object.getOwnPropertyDescriptor(target, key);
  if (!descriptor?.configurable) return;
  // A lazy getter (fs.opendirSync on Node 20) becomes a plain property while patched.
  const value: unknown = descriptor.get ? Reflect.apply(descriptor.get, target, []) : descriptor.value;
  if (typeof value !== 'function') return;
  const original = value as AnyFn;
  const replacement = make(original);
  Object.defineProperty(replacement, 'name', { value: original.name, configurable: true });
  Object.defineProperty(replacement, 'length', { value: original.length, configurable: true });
  patches.push({ target, key, descriptor });
  Object.defineProperty(target, key, {
    value: replacement,
    writable: descriptor.get ? true : descriptor.writable === true,
    enumerable: descriptor.enumerable === true,
    configurable: true,
  });
}

/** A wrapper for an exported function: `isSync` says whether this call is synchronous. */
function exportWrapper(api: string, isSync?: (args: unknown[]) => boolean) {
  const how: Interception = {
    sync: isSync === undefined ? undefined : (_self, args) => isSync(args),
    api,
    label: api,
    n: numberOf(api),
  };
  return (original: AnyFn): AnyFn => {
    const wrapped = intercepted(original, how);
    // Own properties such as fs.realpathSync.native and util.promisify.custom stay reachable.
    for (const key of Reflect.ownKeys(original)) {
      if (key === 'name' || key === 'length' || key === 'prototype') continue;
      const d = Object.getOwnPropertyDescriptor(original, key);
      if (d) Object.defineProperty(wrapped, key, d);
    }
    return wrapped;
  };
}

const lastIsCallback = (at: number) => (args: unknown[]) => typeof args[at] !== 'function';

/** The modules whose exports are patched. */
const patchedModules = new Set<string>();

/** Whether Node.js has loaded builtin module `name` (true where that cannot be told). */
function isLoaded(name: string): boolean {
  const list = (process as { moduleLoadList?: unknown }).moduleLoadList;
  return !Array.isArray(list) || list.includes(`NativeModule ${name}`);
}

function patchFs(): void {
  const fs = require('node:fs') as Record<string, unknown> & typeof import('node:fs');
  // realpathSync.native first, so that the realpathSync wrapper copies the wrapped one.
  replace(fs.realpathSync, 'native', exportWrapper('fs.realpathSync.native'));
  for (const key of Object.keys(fs)) {
    if (key.endsWith('Sync')) replace(fs, key, exportWrapper(`fs.${key}`));
  }
  const Dir = fs.Dir as unknown as { prototype: object } | undefined;
  if (Dir) {
    replace(Dir.prototype, 'readSync', exportWrapper('fs.Dir.readSync'));
    replace(Dir.prototype, 'closeSync', exportWrapper('fs.Dir.closeSync'));
  }
  replace(Atomics, 'wait', exportWrapper('Atomics.wait'));
}

function patchZlib(): void {
  const zlib = require('node:zlib') as unknown as Record<string, unknown>;
  for (const key of Object.keys(zlib)) {
    if (key.endsWith('Sync')) replace(zlib, key, exportWrapper(`zlib.${key}`));
  }
}

function patchCrypto(): void {
  const crypto = require('node:crypto') as unknown as Record<string, unknown>;
  for (const key of Object.keys(crypto)) {
    if (key.endsWith('Sync')) replace(crypto, key, exportWrapper(`crypto.${key}`));
  }
  // Synchronous when called without a callback.
  for (const [key, at] of [
    ['randomBytes', 1],
    ['pseudoRandomBytes', 1],
    ['prng', 1],
    ['rng', 1],
    ['sign', 3],
    ['verify', 4],
    ['diffieHellman', 1],
    ['encapsulate', 1],
    ['decapsulate', 2],
  ] as const) {
    replace(crypto, key, exportWrapper(`crypto.${key}`, lastIsCallback(at)));
  }
  patchCryptoJobs();
}

function patchChildProcess(): void {
  const cp = require('node:child_process') as unknown as Record<string, unknown>;
  for (const key of ['execSync', 'execFileSync', 'spawnSync']) replace(cp, key, exportWrapper(`child_process.${key}`));
}

const modulePatchers: Record<string, () => void> = {
  fs: patchFs,
  zlib: patchZlib,
  crypto: patchCrypto,
  child_process: patchChildProcess,
};

/**
 * Patches the exports of the modules not patched yet: all of them (`load`: loading those not
 * loaded yet), or those Node.js has loaded. Returns whether anything was patched.
 */
function patchModules(load: boolean): boolean {
  let any = false;
  for (const [name, patch] of Object.entries(modulePatchers)) {
    if (patchedModules.has(name) || !(load || name === 'fs' || isLoaded(name))) continue;
    patchedModules.add(name);
    patch();
    any = true;
  }
  return any;
}

/** Hands the module objects' current functions to ES module named imports. */
function syncESM(): void {
  try {
    (require('node:module') as typeof import('node:module')).syncBuiltinESMExports();
  } catch {
    // Not in this Node.js build: ES named imports keep the originals (caught by layer 2).
  }
}

// ---------------------------------------------------------------------------------------------
// Layer 2: below the exports.

/** `process.binding(name)` without the pending-deprecation warning; undefined where it is gone. */
function legacyBinding(name: string): Record<string, unknown> | undefined {
  const p = process as unknown as { binding?: (n: string) => unknown; noDeprecation?: boolean | undefined };
  if (typeof p.binding !== 'function') return undefined;
  const quietBefore = p.noDeprecation;
  try {
    p.noDeprecation = true;
    const b = p.binding(name);
    return typeof b === 'object' && b !== null ? (b as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  } finally {
    p.noDeprecation = quietBefore;
  }
}

/**
 * A hook below the exports: `label` names the call for the observer when its stack does not;
 * `number` gives the marker's number of the API (from the receiver, for zlib handles).
 */
function internalWrapper(
  label: string,
  sync: ((self: unknown, args: unknown[]) => boolean) | undefined,
  number: number | ((self: unknown) => number),
  hint?: (self: unknown) => string | undefined,
) {
  const how: Interception =
    typeof number === 'number'
      ? { sync, api: undefined, label, hint, n: number }
      : { sync, api: undefined, label, hint, n: 0, number };
  return (original: AnyFn): AnyFn => intercepted(original, how);
}

/** The synchronous fs API a binding function serves (the marker's name for it). */
function fsBindingApi(key: string): string {
  const special: Record<string, string> = {
    readFileUtf8: 'fs.readFileSync',
    writeFileUtf8: 'fs.writeFileSync',
    writeString: 'fs.writeSync',
    writeBuffer: 'fs.writeSync',
    writeBuffers: 'fs.writevSync',
    readBuffers: 'fs.readvSync',
    internalModuleStat: 'fs.statSync',
    openFileHandle: 'fs.openSync',
  };
  return special[key] ?? (key.endsWith('Sync') ? `fs.${key}` : `fs.${key}Sync`);
}

/** `zlib.gzipSync` for a native zlib handle whose owner is a Gzip stream (handle[owner_symbol]). */
function zlibApi(handle: unknown): string | undefined {
  if (typeof handle !== 'object' || handle === null) return undefined;
  const sym = Object.getOwnPropertySymbols(handle).find((s) => s.description === 'owner_symbol');
  const owner = sym === undefined ? undefined : (handle as Record<symbol, unknown>)[sym];
  const name = (owner as { constructor?: { name?: unknown } } | undefined)?.constructor?.name;
  return typeof name === 'string' && name !== '' ? `zlib.${name[0]?.toLowerCase()}${name.slice(1)}Sync` : undefined;
}

/** The marker's number for a zlib handle: its API's when known (cached per handle). */
const zlibNumbers = new WeakMap<object, number>();
function zlibNumber(fallback: number) {
  return (handle: unknown): number => {
    if (typeof handle !== 'object' || handle === null) return fallback;
    let n = zlibNumbers.get(handle);
    if (n === undefined) {
      const api = zlibApi(handle);
      n = api === undefined ? fallback : numberOf(api);
      zlibNumbers.set(handle, n);
    }
    return n;
  };
}

/** Whether layer 2 reached each kind of binding here (for tests and the table in docs/testing.md). */
const reach = { fs: false, zlib: false, spawnSync: false, cryptoJobs: 0, randomFill: false };

function patchInternals(): void {
  const fsb = legacyBinding('fs');
  if (fsb) {
    const Req = fsb.FSReqCallback as (new () => object) | undefined;
    const usePromises = fsb.kUsePromises;
    const sync = (_self: unknown, args: unknown[]) => {
      for (const a of args) if (a === usePromises || (Req !== undefined && a instanceof Req)) return false;
      return true;
    };
    for (const key of Object.keys(fsb)) {
      if (/^[a-z]/.test(key) && typeof fsb[key] === 'function') {
        const n = numberOf(fsBindingApi(key));
        replace(fsb, key, internalWrapper(`fs.${key}`, sync, n));
      }
    }
    reach.fs = true;
  }
  const zb = legacyBinding('zlib');
  if (zb) {
    // Every API a zlib handle can serve, numbered now: the native side gets the names once.
    const zlibClasses = ['Deflate', 'Inflate', 'Gzip', 'Gunzip', 'DeflateRaw', 'InflateRaw', 'Unzip'];
    for (const c of [...zlibClasses, 'BrotliCompress', 'BrotliDecompress', 'ZstdCompress', 'ZstdDecompress']) {
      numberOf(`zlib.${c[0]?.toLowerCase()}${c.slice(1)}Sync`);
    }
    for (const cls of ['Zlib', 'BrotliEncoder', 'BrotliDecoder', 'ZstdCompress', 'ZstdDecompress']) {
      const C = zb[cls] as { prototype?: object } | undefined;
      if (C?.prototype)
        replace(
          C.prototype,
          'writeSync',
          internalWrapper(`zlib.${cls}`, undefined, zlibNumber(numberOf(`zlib (${cls})`)), zlibApi),
        );
    }
    reach.zlib = true;
  }
  const ss = legacyBinding('spawn_sync');
  if (ss) {
    const n = numberOf('child_process.spawnSync');
    replace(ss, 'spawn', internalWrapper('child_process.spawnSync', undefined, n));
    reach.spawnSync = true;
  }
}

/** The synchronous crypto API behind each probe below (the marker's names for its job class). */
const CRYPTO_JOB_APIS: Record<string, string> = {
  pbkdf2: 'crypto.pbkdf2Sync',
  scrypt: 'crypto.scryptSync',
  hkdf: 'crypto.hkdfSync',
  randomBytes: 'crypto.randomFillSync',
  generatePrime: 'crypto.generatePrimeSync',
  checkPrime: 'crypto.checkPrimeSync',
  generateKey: 'crypto.generateKeySync',
  generateKeyPair: 'crypto.generateKeyPairSync',
  sign: 'crypto.sign',
  diffieHellman: 'crypto.diffieHellman',
  encapsulate: 'crypto.encapsulate',
  decapsulate: 'crypto.decapsulate',
  argon2: 'crypto.argon2Sync',
};

function patchCryptoJobs(): void {
  const jobs = cryptoJobPrototypes();
  for (const [proto, api] of jobs) {
    const n = numberOf(api);
    // A job without `ondone` runs synchronously.
    replace(
      proto,
      'run',
      internalWrapper('crypto', (self) => (self as { ondone?: unknown }).ondone === undefined, n),
    );
  }
  reach.cryptoJobs = jobs.size;
  reach.randomFill = randomFillViaJob;
}

/**
 * Whether this thread's synchronous random fill reaches the replaced binding function (Node.js 26;
 * see {@link hookRandomFill}): undefined until tried, then kept, as the replacement is.
 */
let randomFillHooked: boolean | undefined;

/**
 * Replaces the binding function that Node.js 26's `randomFillSync` calls directly (no job object),
 * once per thread: `crypto.randomBytes(n)`, `randomFillSync`, and the refills of `randomUUID`,
 * `randomInt` and `getRandomValues` taken before start() are caught there. For SyncCallDetector
 * only (node:crypto patched): the inspector pause costs 40-120 ms.
 */
function hookRandomFill(): boolean {
  if (randomFillHooked !== undefined) return randomFillHooked;
  const crypto = require('node:crypto') as unknown as Record<string, AnyFn>;
  // The function itself, not this module's wrapper of it (exports are patched first).
  const original =
    patches.find((p) => p.target === crypto && p.key === 'randomFillSync')?.descriptor.value ?? crypto.randomFillSync;
  const n = numberOf('crypto.randomFillSync');
  randomFillHooked =
    typeof original === 'function' &&
    'variable' in
      replaceCapturedBinding(
        original as AnyFn,
        [new Uint8Array(1)],
        'randomFillSync',
        internalWrapper('crypto.randomFillSync', undefined, n),
      );
  return randomFillHooked;
}

let probing = false;
let jobPrototypes: Map<object, string> | undefined;
/** A synchronous random fill runs a job (RandomBytesJob) on this Node.js: true before Node.js 26. */
let randomFillViaJob = false;

/**
 * The prototypes of Node's crypto job classes (PBKDF2Job, ScryptJob, RandomBytesJob, the key
 * generation jobs, SignJob...), which no public object exposes, each with the synchronous API it
 * serves: each async crypto function creates one, and an async hook's init sees it. Found once
 * per thread; the probe's jobs never run.
 */
function cryptoJobPrototypes(): Map<object, string> {
  if (jobPrototypes) return jobPrototypes;
  const found = new Map<object, string>();
  let probe = '';
  let syncJobRan = false;
  const { createHook } = require('node:async_hooks') as typeof import('node:async_hooks');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const hook = createHook({
    init(_id, type, _trigger, resource) {
      if (!probing || !type.endsWith('REQUEST')) return;
      const proto = Object.getPrototypeOf(resource) as { run?: unknown } | null;
      if (proto && typeof proto.run === 'function' && !found.has(proto)) {
        found.set(proto, CRYPTO_JOB_APIS[probe] ?? `crypto.${probe}`);
        // Installed at once, so that the job being created does not run: probing skips it.
        replace(
          proto,
          'run',
          (original) =>
            function (this: { ondone?: unknown }, ...args: unknown[]) {
              if (this.ondone !== undefined) return undefined;
              syncJobRan = true;
              return Reflect.apply(original, this, args);
            },
        );
      }
    },
  });
  const noop = () => {};
  // Untyped: some of these options exist only on some Node.js versions.
  const c = crypto as unknown as Record<string, AnyFn>;
  const probes: [string, ...unknown[]][] = [
    ['pbkdf2', '', '', 1, 1, 'sha256', noop],
    ['scrypt', '', '', 1, noop],
    ['hkdf', 'sha256', 'k', '', '', 1, noop],
    ['randomBytes', 1, noop],
    ['generatePrime', 8, noop],
    ['checkPrime', 7n, noop],
    ['generateKey', 'hmac', { length: 8 }, noop],
    ['generateKeyPair', 'rsa', { modulusLength: 512 }, noop],
    ['generateKeyPair', 'dsa', { modulusLength: 512, divisorLength: 160 }, noop],
    ['generateKeyPair', 'ec', { namedCurve: 'P-256' }, noop],
    ['generateKeyPair', 'ed25519', {}, noop],
    ['generateKeyPair', 'dh', { primeLength: 64 }, noop],
    ['sign', null, Buffer.alloc(1), ED25519_PKCS8, noop],
    ['diffieHellman', { privateKey: X25519_PKCS8, publicKey: X25519_SPKI }, noop],
    ['encapsulate', X25519_SPKI, noop],
    ['decapsulate', X25519_PKCS8, Buffer.alloc(32, 9), noop],
    [
      'argon2',
      'argon2id',
      { message: '', nonce: Buffer.alloc(16), parallelism: 1, tagLength: 4, memory: 8, passes: 1 },
      noop,
    ],
  ];
  const before = patches.length;
  probing = true;
  hook.enable();
  try {
    for (const [name, ...args] of probes) {
      probe = name;
      try {
        c[name]?.(...args);
      } catch {
        // This Node.js lacks that job (or rejects the options): its sync form goes uncaught here.
      }
    }
    // And whether a synchronous random fill runs one of the jobs found (not on Node.js 26).
    syncJobRan = false;
    c.randomFillSync?.(new Uint8Array(1));
    randomFillViaJob = syncJobRan;
  } finally {
    hook.disable();
    probing = false;
    // Take the probe's temporary run() replacements out again; patchCryptoJobs installs the real ones.
    for (const p of patches.splice(before).reverse()) Object.defineProperty(p.target, p.key, p.descriptor);
  }
  jobPrototypes = found;
  return jobPrototypes;
}

/** A fixed Ed25519 private key (PKCS#8 DER) for the SignJob probe: generating one would run a sync job. */
const ED25519_PKCS8 = {
  key: Buffer.from(`302e020100300506032b657004220420${'11'.repeat(32)}`, 'hex'),
  format: 'der' as const,
  type: 'pkcs8' as const,
};

/** A fixed X25519 key pair (PKCS#8 and SPKI DER) for the DHBitsJob and KEM probes. */
const X25519_PKCS8 = {
  key: Buffer.from(`302e020100300506032b656e04220420${'22'.repeat(32)}`, 'hex'),
  format: 'der' as const,
  type: 'pkcs8' as const,
};
const X25519_SPKI = {
  key: Buffer.from(`302a300506032b656e032100${'09'.padEnd(64, '0')}`, 'hex'),
  format: 'der' as const,
  type: 'spki' as const,
};

// ---------------------------------------------------------------------------------------------
// Installation.

/** Layer 2 and fs are installed. */
let installed = false;

/** Patches what is missing for the users there are now; undoes everything when there are none. */
function update(): void {
  if (loadingUsers + markerUsers === 0) {
    for (const p of patches.reverse()) Object.defineProperty(p.target, p.key, p.descriptor);
    patches = [];
    patchedModules.clear();
    installed = false;
    syncESM();
    return;
  }
  const changed = patchModules(loadingUsers > 0);
  if (!installed) {
    installed = true;
    patchInternals();
  }
  if (loadingUsers > 0 && !reach.randomFill) reach.randomFill = hookRandomFill();
  if (changed) syncESM();
  pushNames();
}

/** What the marker needs from the native side. */
export interface SyncMarkerBinding {
  /** This thread's marker cells (the same ones every time), or undefined where there are none. */
  cells(): Int32Array | undefined;
  /** The API names, by number - 1. */
  setNames(names: readonly string[]): void;
  /**
   * A marked call (number `n`) returns while a stack sample waits: take it now. Called as a plain
   * function; a native one, so that no JavaScript function entry (a V8 interrupt check) comes
   * between the call's return and the sample.
   */
  sample: (n: number) => void;
}

let binding: SyncMarkerBinding | undefined;

/** Hands the native side the names added since (the marker reports numbers). */
function pushNames(): void {
  if (marker === undefined || !namesChanged || binding === undefined) return;
  namesChanged = false;
  binding.setNames(names);
}

/** SyncCallDetector: intercept every synchronous API (loading the modules) and see each call. */
export function acquireSyncHooks(o: SyncCallObserver): void {
  loadingUsers++;
  observer = o;
  update();
}

/** The last SyncCallDetector of this thread stopped. */
export function releaseSyncHooks(): void {
  loadingUsers--;
  observer = undefined;
  update();
}

/**
 * BlockingDetector: mark the synchronous API in progress in the binding's cells, and take a
 * waiting stack sample as a call returns. Counted: one release per acquire.
 */
export function acquireSyncMarker(b: SyncMarkerBinding): void {
  if (markerUsers++ > 0) {
    patchLoadedModules();
    return;
  }
  binding = b;
  marker = b.cells();
  if (marker !== undefined) {
    sampleAtReturn = b.sample;
    namesChanged = true;
  }
  update();
}

/** The last BlockingDetector of this thread stopped. */
export function releaseSyncMarker(): void {
  if (--markerUsers > 0) return;
  if (marker !== undefined) marker[API] = 0;
  marker = undefined;
  binding = undefined;
  sampleAtReturn = () => {};
  update();
}

/**
 * Patches the modules Node.js loaded since the marker was installed (node:crypto, node:zlib,
 * node:child_process are not loaded for it): called when a BlockingDetector starts and when a
 * block is delivered.
 */
export function patchLoadedModules(): void {
  if (markerUsers === 0 || patchedModules.size === Object.keys(modulePatchers).length) return;
  if (patchModules(false)) {
    syncESM();
    pushNames();
  }
}

/** @internal What the interception reached on this thread while installed (tests, the table in docs/testing.md). */
export function syncCallCoverage(): {
  fs: boolean;
  zlib: boolean;
  spawnSync: boolean;
  cryptoJobs: number;
  randomFill: boolean;
} {
  return { ...reach };
}
