/**
 * loop-helpers: find and stop code that blocks the Node.js event loop.
 *
 * A port of gevent-helpers (Python) with a Rust core. See README.md and docs/ for the manual.
 * @packageDocumentation
 */

export type { AsyncContextEntry, AsyncContextOption, JsonValue } from './lib/async-context';
export { BlockingWarning } from './lib/blocking-warning';
export { capabilities } from './lib/capabilities';
export { BLOCKED_CHANNEL, BlockingDetector, type BlockingDetectorEvents, INTERRUPT_CHANNEL } from './lib/detector';
export { AlarmInterrupt } from './lib/errors';
export {
  type ExitStatus,
  ForkError,
  type ForkErrorCode,
  type ForkTiming,
  fork,
  lastForkTiming,
  tryWaitpid,
  waitpid,
} from './lib/fork';
export type { InterruptFields, InterruptRecord } from './lib/interrupt';
export type { BlockingDetectorOptions, ErrorClass, InterruptScope, LogOption, RaiseExc } from './lib/options';
export {
  type PreforkChild,
  type PreforkEvents,
  type PreforkOptions,
  PreforkPool,
  type PreforkStopOptions,
  type PreforkWorkerInfo,
  prefork,
} from './lib/prefork';
export {
  SYNC_CALL_CHANNEL,
  type SyncCall,
  type SyncCallAction,
  type SyncCallAllow,
  SyncCallDetector,
  type SyncCallDetectorOptions,
  SyncCallError,
  type SyncCallScope,
} from './lib/sync-calls';
export type { BlockEvent, BlockSample, Capabilities, StackFrame } from './lib/types';
