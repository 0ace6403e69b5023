// Node.js's conventions for process warnings, applied to BlockingWarning: `--no-warnings`,
// `NODE_NO_WARNINGS=1` and `--disable-warning=BlockingWarning` silence the text written during a
// block; `process.on('warning')` listeners receive each block, after it, as a BlockingWarning.

import { BlockingWarning } from './blocking-warning';
import type { BlockEvent } from './types';

/** Node's flags from the command line and NODE_OPTIONS. */
function flags(): string[] {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean)];
}

/**
 * Whether Node.js was told not to print warnings, or not BlockingWarnings: `--no-warnings`,
 * `NODE_NO_WARNINGS=1`, `--disable-warning=BlockingWarning` (Node 21.3+). The detector then writes
 * no live text warnings (`log: 'json'` and a `log` function are explicit choices: they stay).
 */
export function blockingWarningsSilenced(): boolean {
  if (process.env.NODE_NO_WARNINGS === '1') return true;
  const f = flags();
  for (let i = 0; i < f.length; i++) {
    const a = f[i] as string;
    if (a === '--no-warnings') return true;
    if (a === '--disable-warning=BlockingWarning') return true;
    if (a === '--disable-warning' && f[i + 1] === 'BlockingWarning') return true;
  }
  return false;
}

/**
 * Node's own listener, which prints every warning to stderr (lib/internal/process/warning.js,
 * installed before user code runs unless warnings are off). The live warning was printed already.
 */
function isNodePrinter(listener: (...args: unknown[]) => unknown): boolean {
  return listener.name === 'onWarning' && Function.prototype.toString.call(listener).includes('getOptionValue');
}

/**
 * Hands a block to the process's `'warning'` listeners as a {@link BlockingWarning}, once, after the
 * block, without printing it a second time: every listener is called as `process.emit('warning')`
 * would call it, except Node's printer. Nothing is built when no other listener is there.
 * A listener's exception is returned, for the caller to rethrow outside the delivery.
 */
export function emitBlockingWarning(event: BlockEvent): unknown[] {
  const listeners = (process.rawListeners('warning') as ((...args: unknown[]) => unknown)[]).filter(
    (l) => !isNodePrinter(l),
  );
  if (listeners.length === 0) return [];
  const warning = new BlockingWarning(event);
  const errors: unknown[] = [];
  for (const listener of listeners) {
    try {
      listener.call(process, warning);
    } catch (e) {
      errors.push(e);
    }
  }
  return errors;
}
