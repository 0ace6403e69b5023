// BlockingWarning: a block, after it ended, as a Node.js process warning.

import { framesText } from './interrupt';
import type { BlockEvent, BlockSample } from './types';

/**
 * A whole block as a process warning: what `process.on('warning')` listeners receive once the loop
 * turns again (the live text was already printed during the block, so it is not printed again). It
 * carries every field of the {@link BlockEvent}; its `.stack` is the blocking code's stack (the
 * first sample with one). `JSON.stringify(warning)` gives `name`, `message`, `code` and the event's
 * fields.
 */
export class BlockingWarning extends Error implements BlockEvent {
  /** Always `LOOP_HELPERS_BLOCKED`. */
  readonly code = 'LOOP_HELPERS_BLOCKED';
  readonly threadId: number;
  readonly timeout: number;
  readonly startTime: number;
  readonly startHrtimeMs: number;
  readonly durationMs: number;
  readonly ended: boolean;
  readonly cpuMs: number | null;
  readonly cpuWaitMs: number | null;
  readonly fingerprint: string | null;
  readonly logSuppressed: boolean;
  readonly suppressedSinceLastLog: number;
  readonly samples: BlockSample[];

  /** @internal */
  constructor(event: BlockEvent) {
    const where = event.threadId === 0 ? '' : ` in worker thread ${event.threadId}`;
    super(
      `blocking detected after timeout=${event.timeout}; blocked for ${(event.durationMs / 1000).toFixed(3)} s in total${where}`,
    );
    this.name = 'BlockingWarning';
    this.threadId = event.threadId;
    this.timeout = event.timeout;
    this.startTime = event.startTime;
    this.startHrtimeMs = event.startHrtimeMs;
    this.durationMs = event.durationMs;
    this.ended = event.ended;
    this.cpuMs = event.cpuMs;
    this.cpuWaitMs = event.cpuWaitMs;
    this.fingerprint = event.fingerprint;
    this.logSuppressed = event.logSuppressed;
    this.suppressedSinceLastLog = event.suppressedSinceLastLog;
    this.samples = event.samples;
    const frames = event.samples.find((s) => s.frames?.length)?.frames;
    // Where the thread was outside JavaScript, as the live warning said it: a synchronous API (its
    // caller's frames come when it returns), or a garbage collection, only when no JavaScript stack
    // came with that sample (a scavenge that happened to run at the monitor's look, inside a block
    // of JavaScript, is not where the block was).
    const named = event.samples.find((s) => s.syncApi || (s.gc && !s.frames?.length));
    const inside = named?.syncApi
      ? `    in ${named.syncApi}\n`
      : named?.gc
        ? `    in a garbage collection (${named.gc})\n`
        : '';
    const body = inside + (frames ? framesText(frames) : '    (no JavaScript stack captured)');
    Object.defineProperty(this, 'stack', {
      value: `${this.name}: ${this.message}\n${body}`,
      writable: true,
      configurable: true,
    });
  }

  /** Plain data: `name`, `message`, `code` and the event's fields. */
  toJSON(): BlockEvent & { name: string; message: string; code: string } {
    const { name, message, code, threadId, timeout, startTime, startHrtimeMs, durationMs, ended } = this;
    const { cpuMs, cpuWaitMs, fingerprint, logSuppressed, suppressedSinceLastLog, samples } = this;
    return {
      name,
      message,
      code,
      threadId,
      timeout,
      startTime,
      startHrtimeMs,
      durationMs,
      ended,
      cpuMs,
      cpuWaitMs,
      fingerprint,
      logSuppressed,
      suppressedSinceLastLog,
      samples,
    };
  }
}
BlockingWarning.prototype.name = 'BlockingWarning';
