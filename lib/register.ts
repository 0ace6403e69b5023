// Zero-code mode: `node --import loop-helpers/register app.js` or `--require loop-helpers/register`
// (also through NODE_OPTIONS). Starts one BlockingDetector per thread, configured from environment
// variables; Workers inherit the flag and get their own.

import { writeSync } from 'node:fs';
import { BlockingDetector } from './detector';
import { type BlockingDetectorOptions, MAX_LOG_REPEATS_AFTER_MS, MAX_TIMEOUT, MIN_TIMEOUT } from './options';

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
 * `LOOP_HELPERS_AGGRESSIVE` (default true), `LOOP_HELPERS_LOG` (`text`, default, or `json`) and
 * `LOOP_HELPERS_LOG_REPEATS_AFTER_MS` (the report budget, `logRepeatsAfterMs`; default 0: none).
 * @throws {RegisterConfigError} naming the variable when a value is not valid.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): BlockingDetectorOptions {
  const options: BlockingDetectorOptions = { timeout: 1, raiseExc: false, aggressive: true, log: 'text' };
  const timeout = env.LOOP_HELPERS_TIMEOUT;
  if (timeout !== undefined && timeout !== '') {
    const n = Number(timeout);
    if (!(Number.isFinite(n) && n >= MIN_TIMEOUT && n <= MAX_TIMEOUT)) {
      throw new RegisterConfigError(
        `LOOP_HELPERS_TIMEOUT must be a number of seconds from ${MIN_TIMEOUT} to ${MAX_TIMEOUT}, got "${timeout}"`,
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
  const repeats = env.LOOP_HELPERS_LOG_REPEATS_AFTER_MS;
  if (repeats !== undefined && repeats.trim() !== '') {
    const n = Number(repeats);
    if (!(Number.isFinite(n) && n >= 0 && n <= MAX_LOG_REPEATS_AFTER_MS)) {
      throw new RegisterConfigError(
        `LOOP_HELPERS_LOG_REPEATS_AFTER_MS must be a number of milliseconds from 0 to ${MAX_LOG_REPEATS_AFTER_MS}, got "${repeats}"`,
      );
    }
    options.logRepeatsAfterMs = n;
  }
  return options;
}

const kRegistered = Symbol.for('loop-helpers.register');
type WithDetector = typeof globalThis & { [kRegistered]?: BlockingDetector };

/** The detector zero-code mode started on this thread, if any. */
export function registeredDetector(): BlockingDetector | undefined {
  return (globalThis as WithDetector)[kRegistered];
}

/**
 * Starts zero-code mode's detector on this thread. A detector that interrupts
 * (`LOOP_HELPERS_RAISE=1`) only reports blocks until the loop first turns: the application's
 * synchronous start-up (loading modules, reading configuration) is not the blocking code that
 * interrupts are meant for, and interrupting it would stop the application before it started.
 * From the first turn on, blocks are interrupted.
 */
function startRegistered(options: BlockingDetectorOptions): BlockingDetector {
  if (options.raiseExc === false) return new BlockingDetector(options).start();
  const startUp = new BlockingDetector({ ...options, raiseExc: false }).start();
  setImmediate(() => {
    startUp.stop();
    g[kRegistered] = new BlockingDetector(options).start();
  });
  return startUp;
}

// Once per thread, even when both --require and --import name this module.
const g = globalThis as WithDetector;
if (!g[kRegistered]) {
  let options: BlockingDetectorOptions;
  try {
    options = optionsFromEnv();
  } catch (e) {
    if (!(e instanceof RegisterConfigError)) throw e;
    // A configuration mistake, not a bug: one short line, no stack, and the application never runs.
    writeSync(2, `loop-helpers/register: ${e.message} (${e.code})\n`);
    process.exit(9); // Node's "invalid argument" exit code
  }
  g[kRegistered] = startRegistered(options);
}
