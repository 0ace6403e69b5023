// The text of a stack made of frames that V8 did not hand to JavaScript as call sites (the
// detector's native samples) or that loop-helpers rearranged: formatted by whatever
// `Error.prepareStackTrace` is installed, so that the mapping a test runner or a source-map library
// put there applies (Vitest's and Jest's transforms, source-map-support), and by hand when that
// fails.

import type { StackFrame } from './types';

/** A V8 CallSite look-alike; its methods live on the prototype, as cloning call-site mappers expect. */
class FrameSite {
  readonly #f: StackFrame;
  constructor(f: StackFrame) {
    this.#f = f;
  }
  getThis(): undefined {
    return undefined;
  }
  getTypeName(): null {
    return null;
  }
  getFunction(): undefined {
    return undefined;
  }
  getFunctionName(): string | null {
    return this.#f.functionName || null;
  }
  getMethodName(): null {
    return null;
  }
  getFileName(): string | undefined {
    return this.#f.fileName || undefined;
  }
  getScriptNameOrSourceURL(): string | undefined {
    return this.#f.fileName || undefined;
  }
  getScriptHash(): string {
    return '';
  }
  getLineNumber(): number | null {
    return this.#f.lineNumber || null;
  }
  getColumnNumber(): number | null {
    return this.#f.columnNumber || null;
  }
  getEnclosingLineNumber(): number | null {
    return null;
  }
  getEnclosingColumnNumber(): number | null {
    return null;
  }
  getPosition(): number {
    return 0;
  }
  getEvalOrigin(): undefined {
    return undefined;
  }
  getPromiseIndex(): null {
    return null;
  }
  isToplevel(): boolean {
    return this.#f.functionName === '';
  }
  isEval(): boolean {
    return false;
  }
  isNative(): boolean {
    return false;
  }
  isConstructor(): boolean {
    return false;
  }
  isAsync(): boolean {
    return false;
  }
  isPromiseAll(): boolean {
    return false;
  }
  toString(): string {
    return formatFrame(this.#f);
  }
}

/** `fn (file:line:column)`, as V8 writes a frame. */
export function formatFrame(f: StackFrame): string {
  const where = f.fileName ? `${f.fileName}:${f.lineNumber}:${f.columnNumber}` : '<anonymous>';
  return f.functionName ? `${f.functionName} (${where})` : where;
}

/** `name: message` and the frames, one `    at ...` line each (at most `limit`). */
export function stackText(name: string, message: string, frames: readonly StackFrame[], limit = 30): string {
  const shown = frames.slice(0, limit);
  const prepare = (Error as { prepareStackTrace?: unknown }).prepareStackTrace;
  if (typeof prepare === 'function') {
    try {
      const error = Object.create(Error.prototype) as Error;
      Object.defineProperty(error, 'name', { value: name, configurable: true });
      Object.defineProperty(error, 'message', { value: message, configurable: true });
      const text: unknown = prepare.call(
        Error,
        error,
        shown.map((f) => new FrameSite(f)),
      );
      if (typeof text === 'string' && text.startsWith(`${name}: ${message}`)) return text;
    } catch {
      // A mapper that needs more of the call-site API than a frame has: format by hand.
    }
  }
  return `${name}: ${message}${shown.map((f) => `\n    at ${formatFrame(f)}`).join('')}`;
}
