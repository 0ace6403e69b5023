// Zero-code mode: `node --import loop-helpers/register app.js` or `--require loop-helpers/register`
// (also through NODE_OPTIONS). Starts one BlockingDetector per thread, configured from environment
// variables; Workers inherit the flag and get their own.

import { BlockingDetector } from './detector';
import type { BlockingDetectorOptions } from './options';

/** A bad environment variable: names the variable and the value. */
export class RegisterConfigError extends Error {
  readonly code = 'ERR_LOOP_HELPERS_ENV';
  constructor(message: string) {
    super(message);
    this.name = 'RegisterConfigError';
  }
}

function bool(name: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new RegisterConfigError(`${name} must be true or false (or 1/0, yes/no, on/off), got "${value}"`);
}

/**
 * The detector options for zero-code mode, from `LOOP_HELPERS_TIMEOUT` (seconds, default 1),
 * `LOOP_HELPERS_RAISE` (interrupt blocking code with AlarmInterrupt; default false: only warn),
 * `LOOP_HELPERS_AGGRESSIVE` (default true) and `LOOP_HELPERS_LOG` (`text`, default, or `json`).
 * @throws {RegisterConfigError} naming the variable when a value is not valid.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): BlockingDetectorOptions {
  const options: BlockingDetectorOptions = { timeout: 1, raiseExc: false, aggressive: true, log: 'text' };
  const timeout = env.LOOP_HELPERS_TIMEOUT;
  if (timeout !== undefined && timeout !== '') {
    const n = Number(timeout);
    if (!(Number.isFinite(n) && n >= 0.001 && n <= 86400)) {
      throw new RegisterConfigError(
        `LOOP_HELPERS_TIMEOUT must be a number of seconds from 0.001 to 86400, got "${timeout}"`,
      );
    }
    options.timeout = n;
  }
  const raise = env.LOOP_HELPERS_RAISE;
  if (raise !== undefined && raise !== '') {
    if (bool('LOOP_HELPERS_RAISE', raise)) delete options.raiseExc; // the default: AlarmInterrupt
  }
  const aggressive = env.LOOP_HELPERS_AGGRESSIVE;
  if (aggressive !== undefined && aggressive !== '') options.aggressive = bool('LOOP_HELPERS_AGGRESSIVE', aggressive);
  const log = env.LOOP_HELPERS_LOG;
  if (log !== undefined && log !== '') {
    const v = log.trim().toLowerCase();
    if (v !== 'text' && v !== 'json')
      throw new RegisterConfigError(`LOOP_HELPERS_LOG must be text or json, got "${log}"`);
    options.log = v;
  }
  return options;
}

const kRegistered = Symbol.for('loop-helpers.register');
type WithDetector = typeof globalThis & { [kRegistered]?: BlockingDetector };

/** The detector zero-code mode started on this thread, if any. */
export function registeredDetector(): BlockingDetector | undefined {
  return (globalThis as WithDetector)[kRegistered];
}

// Once per thread, even when both --require and --import name this module.
const g = globalThis as WithDetector;
if (!g[kRegistered]) {
  g[kRegistered] = new BlockingDetector(optionsFromEnv()).start();
}
