/**
 * The default error for {@link BlockingDetectorOptions.raiseExc}: what a blocked call is interrupted
 * with. Like gevent-helpers' `AlarmInterrupt`, its message is
 * `blocking detected after timeout=<timeout>`.
 */
export class AlarmInterrupt extends Error {
  constructor(message?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AlarmInterrupt';
  }

  /**
   * Plain data: `name`, `message` and the fields a detector gave it (`timeout`, `blockedMs`,
   * `blockingFrames`, `lostContinuations`: see `InterruptFields`), for logs and JSON.
   */
  toJSON(): Record<string, unknown> {
    return { ...(this as object), name: this.name, message: this.message };
  }
}
AlarmInterrupt.prototype.name = 'AlarmInterrupt';

/** A `TypeError` or `RangeError` with a Node-style `code`. */
export function argError(kind: 'type' | 'range', code: string, message: string): TypeError | RangeError {
  const e = kind === 'type' ? new TypeError(message) : new RangeError(message);
  (e as Error & { code: string }).code = code;
  return e;
}

/** Describes a value for an error message: its type and a short rendering. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'string') return `type string ('${value.length > 28 ? `${value.slice(0, 25)}...` : value}')`;
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `${value}`;
  if (typeof value === 'bigint') return `type bigint (${value}n)`;
  if (typeof value === 'symbol') return `type symbol (${String(value)})`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name ? `an instance of ${name}` : 'type object';
  }
  return `type ${typeof value} (${String(value)})`;
}

/**
 * A boolean, or an error naming the option `name` (of `owner`, e.g. `'fork()'`, when the message
 * should say whose) and the value.
 */
export function validateBoolean(name: string, v: unknown, owner?: string): boolean {
  if (typeof v !== 'boolean') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "${name}" option${owner ? ` of ${owner}` : ''} must be a boolean. Received ${describe(v)}`,
    );
  }
  return v;
}

/** A number of milliseconds from 0 to `max`, or an error naming the option `name` and the value. */
export function validateMs(name: string, v: unknown, max: number): number {
  if (typeof v !== 'number') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "${name}" option must be a number of milliseconds. Received ${describe(v)}`,
    );
  }
  if (!(v >= 0 && v <= max)) {
    throw argError(
      'range',
      'ERR_OUT_OF_RANGE',
      `The "${name}" option must be a number of milliseconds from 0 to ${max}. Received ${describe(v)}`,
    );
  }
  return v;
}
