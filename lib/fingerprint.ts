// A block's fingerprint in TypeScript: the same function as crates/core/src/fingerprint.rs (which
// computes the fingerprint of events and log lines), for frames that only JavaScript has, such as
// those of a BlockingError. See that file for the reasoning.

import { dirname } from 'node:path';
import type { StackFrame } from './types';

/** Application frames that make the fingerprint. */
const FRAMES = 3;

/** This package's directory: its frames (guards) are not the blocking code. */
const ownDir = `${dirname(__dirname)}/`;

const MASK = (1n << 64n) - 1n;

function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & MASK;
  }
  return h;
}

function fmix64(h: bigint): bigint {
  let x = h;
  x ^= x >> 33n;
  x = (x * 0xff51afd7ed558ccdn) & MASK;
  x ^= x >> 33n;
  x = (x * 0xc4ceb9fe1a85ec53n) & MASK;
  return x ^ (x >> 33n);
}

/** A file name without what differs between machines (see the Rust side). */
export function normalizeFile(file: string, root: string): string {
  const path = file.startsWith('file://') ? file.slice(7) : file;
  const i = path.lastIndexOf('/node_modules/');
  if (i >= 0) return path.slice(i + 1);
  if (root !== '' && path.startsWith(`${root}/`)) return path.slice(root.length + 1);
  return path;
}

/**
 * The fingerprint of a stack, innermost frame first: 16 hex digits, or null without frames. Equal
 * to the native one (`BlockEvent.fingerprint`) for the same frames and working directory.
 */
export function fingerprint(frames: readonly StackFrame[] | null, root = process.cwd()): string | null {
  if (!frames || frames.length === 0) return null;
  const base = root.replace(/\/+$/, '');
  const isApp = (f: StackFrame) =>
    f.fileName !== '' && !f.fileName.startsWith('node:') && !f.fileName.startsWith(ownDir);
  const anyApp = frames.some(isApp);
  const keys: string[] = [];
  for (const f of frames) {
    if (anyApp && !isApp(f)) continue;
    const file = normalizeFile(f.fileName, base);
    const key = f.functionName === '' ? `@${file}:${f.lineNumber}` : `${f.functionName}@${file}`;
    if (keys.at(-1) !== key) {
      keys.push(key);
      if (keys.length === FRAMES) break;
    }
  }
  return fmix64(fnv1a64(new TextEncoder().encode(keys.join('\n'))))
    .toString(16)
    .padStart(16, '0');
}
