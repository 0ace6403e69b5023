// Original positions for reported frames when the process runs with source maps enabled
// (`--enable-source-maps`, or `process.setSourceMapsEnabled(true)`): Node keeps the maps of the
// modules it loaded, and `module.findSourceMap()` reads them.
//
// Warnings written during a block are formatted while JavaScript cannot run, so the maps are also
// handed to the native layer beforehand (`syncSourceMaps`): every loaded CommonJS module's map when
// a detector starts, then every second while one runs, and the map of every file seen in a
// delivered frame (which covers ES modules, which have no registry to list).

import type { SourceMap } from 'node:module';
import { join } from 'node:path';
import { native } from './native';

// node:module's source-map support and node:url are loaded only when source maps are enabled.
const url = () => require('node:url') as typeof import('node:url');
const findSourceMap = (path: string): SourceMap | undefined =>
  (require('node:module') as typeof import('node:module')).findSourceMap(path);
const fileURLToPath = (u: string): string => url().fileURLToPath(u);

import type { StackFrame } from './types';

/** This package's compiled files (dist/): never mapped, their frames are recognised by these paths. */
const ownRoot = join(__dirname, '..');

/**
 * Whether Node.js has source maps enabled. `cheap`: from the command line only (Node 20's
 * `process.sourceMapsEnabled` getter loads the source-map machinery into every process);
 * otherwise also `process.setSourceMapsEnabled(true)` at run time.
 */
export function sourceMapsEnabled(cheap = false): boolean {
  const flags = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`;
  if (/--enable-source-maps/.test(flags)) return true;
  if (cheap) return false;
  return (process as { sourceMapsEnabled?: boolean }).sourceMapsEnabled === true;
}

function lookup(fileName: string): SourceMap | undefined {
  // CommonJS modules are keyed by path, ES modules by URL: try what the frame has, then the other.
  const alternate = fileName.startsWith('file://')
    ? fileURLToPath(fileName)
    : fileName.startsWith('/')
      ? url().pathToFileURL(fileName).href
      : undefined;
  try {
    return findSourceMap(fileName) ?? (alternate ? findSourceMap(alternate) : undefined);
  } catch {
    return undefined;
  }
}

function mapFrame(f: StackFrame): StackFrame {
  if (f.generated || f.lineNumber < 1 || f.fileName === '' || f.fileName.startsWith('node:')) return f;
  if (f.fileName.startsWith(ownRoot)) return f;
  const map = lookup(f.fileName);
  if (!map) return f;
  const entry = map.findEntry(f.lineNumber - 1, Math.max(0, f.columnNumber - 1)) as Partial<{
    originalSource: string;
    originalLine: number;
    originalColumn: number;
  }>;
  if (entry.originalSource === undefined || entry.originalLine === undefined) return f;
  const source = entry.originalSource.startsWith('file://')
    ? fileURLToPath(entry.originalSource)
    : entry.originalSource;
  return {
    functionName: f.functionName,
    fileName: source,
    lineNumber: entry.originalLine + 1,
    columnNumber: (entry.originalColumn ?? 0) + 1,
    generated: { fileName: f.fileName, lineNumber: f.lineNumber, columnNumber: f.columnNumber },
  };
}

/** The frames with original positions where a source map has them (unchanged otherwise). */
export function mapFrames<F extends StackFrame[] | null>(frames: F): F {
  if (!frames || !sourceMapsEnabled()) return frames;
  for (const f of frames) if (!f.generated) registerFile(f.fileName);
  return frames.map(mapFrame) as F;
}

/** Files already looked at (with a map or without one). */
const seen = new Set<string>();

const toPath = (source: string): string => (source.startsWith('file://') ? fileURLToPath(source) : source);

function registerFile(fileName: string): void {
  if (seen.has(fileName) || fileName === '' || fileName.startsWith('node:') || fileName.startsWith(ownRoot)) return;
  seen.add(fileName);
  const map = lookup(fileName);
  if (!map) return;
  const payload = map.payload as { sources?: unknown; mappings?: unknown };
  if (!Array.isArray(payload.sources) || typeof payload.mappings !== 'string') return;
  try {
    native().registerSourceMap(
      fileName,
      payload.sources.map((s) => toPath(String(s))),
      payload.mappings,
    );
  } catch {
    // A map the native decoder rejects: its frames stay unmapped in live warnings.
  }
}

let timer: NodeJS.Timeout | undefined;
let users = 0;

/** Hands the source maps of loaded modules to the native layer, for warnings written during a
 * block. `on`: a detector starts (keeps them current every second while any runs); `off`: one
 * stopped. */
export function syncSourceMaps(change: 'on' | 'off'): void {
  if (change === 'off') {
    if (--users <= 0 && timer) {
      clearInterval(timer);
      timer = undefined;
      users = 0;
    }
    return;
  }
  users++;
  // Maps enabled at run time are picked up from the first delivered frames (mapFrames).
  if (!sourceMapsEnabled(true)) return;
  const scan = () => {
    for (const file of Object.keys(require.cache)) registerFile(file);
  };
  scan();
  if (!timer) {
    timer = setInterval(scan, 1000);
    timer.unref();
  }
}
