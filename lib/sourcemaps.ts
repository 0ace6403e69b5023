// Original positions for reported frames when the process runs with source maps enabled
// (`--enable-source-maps`, or `process.setSourceMapsEnabled(true)`): Node keeps the maps of the
// modules it loaded, and `module.findSourceMap()` reads them.

import { findSourceMap, type SourceMap } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { StackFrame } from './types';

/** Whether Node.js has source maps enabled (Node 20.7+ says so directly). */
export function sourceMapsEnabled(): boolean {
  const flag = (process as { sourceMapsEnabled?: boolean }).sourceMapsEnabled;
  if (flag !== undefined) return flag;
  return (
    process.execArgv.includes('--enable-source-maps') || /--enable-source-maps/.test(process.env.NODE_OPTIONS ?? '')
  );
}

function lookup(fileName: string): SourceMap | undefined {
  // CommonJS modules are keyed by path, ES modules by URL: try what the frame has, then the other.
  const alternate = fileName.startsWith('file://')
    ? fileURLToPath(fileName)
    : fileName.startsWith('/')
      ? pathToFileURL(fileName).href
      : undefined;
  try {
    return findSourceMap(fileName) ?? (alternate ? findSourceMap(alternate) : undefined);
  } catch {
    return undefined;
  }
}

function mapFrame(f: StackFrame): StackFrame {
  if (f.lineNumber < 1 || f.fileName === '' || f.fileName.startsWith('node:')) return f;
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
  return frames.map(mapFrame) as F;
}
