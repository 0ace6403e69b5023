// `loop-helpers/otel`: blocks as OpenTelemetry data. A histogram through the global MeterProvider,
// and, where the blocked code's AsyncLocalStorage can be read natively (`capabilities()
// .asyncContext`), the trace and span ids of the span that was active in the blocked code, and a
// `loop.blocked` event on that span. See docs/opentelemetry.md.
//
// How the span is found without running JavaScript while the code blocks: OpenTelemetry's
// AsyncLocalStorageContextManager keeps the active Context in an AsyncLocalStorage. The detector
// reads that storage natively, as it reads `asyncContext` stores (crates/node/src/async_context.rs),
// following a path from the store: the Context's `_currentContext` Map, its entry for the span key
// (found by identity: a symbol), and of that span only its `_spanContext` field (traceId, spanId).
// The span object itself is kept by the native side (a reference, never called) and handed back
// when the block is delivered, when JavaScript runs again and `addEvent` can be called.

import { AsyncLocalStorage } from 'node:async_hooks';
import type { JsonValue } from './async-context';
import { capabilities } from './capabilities';
import { BlockingDetector, kAddTap } from './detector';
import { argError, describe } from './errors';
import type { BlockEvent, StackFrame } from './types';

type OtelApi = typeof import('@opentelemetry/api');
type Span = import('@opentelemetry/api').Span;
type Attributes = import('@opentelemetry/api').Attributes;

/** The histogram's name: one value per block, its duration in seconds. */
export const BLOCK_DURATION_METRIC = 'nodejs.eventloop.block.duration';

/** The span event added to the span that was active in the blocked code. */
export const BLOCKED_SPAN_EVENT = 'loop.blocked';

/**
 * The histogram's explicit bucket boundaries (seconds), given as the instrument's advice (a View
 * of your MeterProvider overrides them). From 5 ms, below any sensible timeout, to a minute: the
 * steps a 50 ms timeout and a 2 s freeze both fall well inside, finer where most blocks are.
 */
export const BLOCK_DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60,
]);

/** Attribute names of the metric points and of the span event. */
export const ATTR = Object.freeze({
  /** `worker_threads.threadId` of the blocked thread (0: the main thread); semantic conventions' `thread.id`. */
  threadId: 'thread.id',
  /** The block's fingerprint (16 hex digits); absent when the block has none. */
  fingerprint: 'loop_helpers.block.fingerprint',
  /** Span event only: the block's duration in seconds. */
  duration: 'loop_helpers.block.duration',
  /** Span event only: false when the detector stopped during the block. */
  ended: 'loop_helpers.block.ended',
  /**
   * Span event only: the blocking code's innermost frame outside Node.js's own `node:` code, in
   * the block's first sample with a stack (semantic conventions' `code.*`; 1-based line, column).
   */
  functionName: 'code.function.name',
  filePath: 'code.file.path',
  lineNumber: 'code.line.number',
  columnNumber: 'code.column.number',
});

/** Options of {@link enableOpenTelemetry}. */
export interface OpenTelemetryOptions {
  /** Record the `nodejs.eventloop.block.duration` histogram (default true). */
  metrics?: boolean;
  /**
   * Find the span active in the blocked code: `traceId` and `spanId` on the event, a
   * `loop.blocked` event on the span (default true). Needs `capabilities().asyncContext` and
   * OpenTelemetry's AsyncLocalStorageContextManager as the global context manager (registered
   * before this call, as `NodeSDK.start()` does); otherwise skipped, `spansMissing` says why.
   */
  spans?: boolean;
  /** The name of the meter (default `'loop-helpers'`). */
  meterName?: string;
}

/** What {@link enableOpenTelemetry} returns. */
export interface OpenTelemetryHandle {
  /** Whether the metric is recorded. */
  readonly metrics: boolean;
  /** Whether the active span is looked for in blocked code. */
  readonly spans: boolean;
  /** Why `spans` is false although it was asked for, or null. */
  readonly spansMissing: string | null;
  /** Stops recording (idempotent). Blocks delivered afterwards are not recorded. */
  disable(): void;
  /** `disable()`, for `using otel = enableOpenTelemetry(detector)`. */
  [Symbol.dispose](): void;
}

/** The error when `@opentelemetry/api` cannot be loaded. */
function missingApi(cause: unknown): Error {
  const e = new Error(
    'loop-helpers/otel: enableOpenTelemetry() needs the "@opentelemetry/api" package (an optional peer dependency of loop-helpers), which could not be loaded: install it with `npm install @opentelemetry/api`',
    { cause },
  );
  (e as Error & { code: string }).code = 'ERR_LOOP_HELPERS_OTEL_API_MISSING';
  return e;
}

function loadApi(): OtelApi {
  try {
    return require('@opentelemetry/api') as OtelApi;
  } catch (e) {
    throw missingApi(e);
  }
}

/** Detectors OpenTelemetry is enabled on. */
const enabled = new WeakSet<BlockingDetector>();

/** The key OpenTelemetry's API stores the active span under (a symbol), found through its public API. */
function spanKey(api: OtelApi): unknown {
  let key: unknown;
  const probe = {
    setValue(k: unknown) {
      key = k;
      return probe;
    },
    getValue: () => undefined,
    deleteValue: () => probe,
  };
  api.trace.setSpan(probe, api.trace.wrapSpanContext(api.INVALID_SPAN_CONTEXT));
  return key;
}

/**
 * The global context manager's AsyncLocalStorage, and that its Contexts keep their values where
 * the native path looks (checked now, on a Context made through the API); or why not.
 */
function contextStorage(api: OtelApi): { storage: AsyncLocalStorage<unknown>; key: symbol } | string {
  const manager = (api.context as unknown as { _getContextManager?: () => unknown })._getContextManager?.();
  const storage = (manager as { _asyncLocalStorage?: unknown } | undefined)?._asyncLocalStorage;
  if (!(storage instanceof AsyncLocalStorage)) {
    return `the global OpenTelemetry context manager (${describe(manager)}) is not an AsyncLocalStorageContextManager of @opentelemetry/context-async-hooks: register one with context.setGlobalContextManager() (NodeSDK does) before calling enableOpenTelemetry()`;
  }
  const key = spanKey(api);
  const probe = api.trace.setSpan(api.ROOT_CONTEXT, api.trace.wrapSpanContext(api.INVALID_SPAN_CONTEXT));
  const map = (probe as { _currentContext?: unknown })._currentContext;
  if (typeof key !== 'symbol' || !(map instanceof Map) || !map.has(key)) {
    return 'this @opentelemetry/api keeps Context values in an unknown layout (expected a _currentContext Map keyed by the span key)';
  }
  return { storage, key };
}

/** The span context the native path read: `{ _spanContext: { traceId, spanId } }`. */
function readSpanIds(value: JsonValue | undefined): { traceId: string; spanId: string } | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const sc = value._spanContext;
  if (sc === null || typeof sc !== 'object' || Array.isArray(sc)) return undefined;
  const { traceId, spanId } = sc;
  if (typeof traceId !== 'string' || typeof spanId !== 'string') return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId };
}

/**
 * The blocking code's innermost frame outside Node.js's own code (a sample may land in a builtin
 * the code called, e.g. `process.hrtime`'s getter), from the first sample with a stack.
 */
function topFrame(event: BlockEvent): StackFrame | undefined {
  const frames = event.samples.find((s) => s.frames !== null && s.frames.length > 0)?.frames;
  return frames?.find((f) => !f.fileName.startsWith('node:')) ?? frames?.[0];
}

/** Spans handed back by the native side and not matched to a block yet (a later delivery's). */
const PENDING_SPANS_KEPT = 64;

/**
 * Records a detector's blocks in OpenTelemetry, through the global providers of
 * `@opentelemetry/api` (an optional peer dependency: install it).
 *
 * - Metric: histogram `nodejs.eventloop.block.duration`, unit `s`, one value per block
 *   (`event.durationMs / 1000`), attributes `thread.id` and `loop_helpers.block.fingerprint`
 *   (when the block has one), buckets {@link BLOCK_DURATION_BUCKETS}.
 * - Spans (where `capabilities().asyncContext`, with OpenTelemetry's
 *   AsyncLocalStorageContextManager): the span that was active in the blocked code is read
 *   natively while the code blocks, running no JavaScript. The `'blocked'` event then carries its
 *   `traceId` and `spanId`, and the span gets a `loop.blocked` event, timed at the block's start,
 *   with the duration and the innermost frame. A span that ended before the block was delivered
 *   (the loop's next turn) cannot take events any more: only the ids are given then.
 *
 * Nothing runs per loop turn: the work is done once per block. The detector may be running
 * already; if it is, and the span part is on, its native watch is replaced by one that also reads
 * OpenTelemetry's context (a block already warned about is then emitted with `ended: false`).
 *
 * @param detector The detector whose blocks are recorded.
 * @param options See {@link OpenTelemetryOptions}.
 * @returns A handle whose `disable()` stops recording.
 * @throws Error `ERR_LOOP_HELPERS_OTEL_API_MISSING` when `@opentelemetry/api` is not installed;
 *   `ERR_LOOP_HELPERS_OTEL_ENABLED` when it is enabled on this detector already.
 *
 * @example
 * ```ts
 * import { BlockingDetector } from 'loop-helpers';
 * import { enableOpenTelemetry } from 'loop-helpers/otel';
 * // after the OpenTelemetry SDK has started (global MeterProvider, TracerProvider, context manager)
 * const detector = new BlockingDetector({ timeout: 0.1, raiseExc: false }).start();
 * enableOpenTelemetry(detector);
 * ```
 */
export function enableOpenTelemetry(
  detector: BlockingDetector,
  options: OpenTelemetryOptions = {},
): OpenTelemetryHandle {
  if (!(detector instanceof BlockingDetector)) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "detector" argument must be a BlockingDetector. Received ${describe(detector)}`,
    );
  }
  if (typeof options !== 'object' || options === null) {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "options" argument must be an object. Received ${describe(options)}`,
    );
  }
  for (const k of Object.keys(options)) {
    if (k !== 'metrics' && k !== 'spans' && k !== 'meterName') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_VALUE',
        `Unknown option "${k}" of enableOpenTelemetry(). Known options: metrics, spans, meterName`,
      );
    }
  }
  for (const k of ['metrics', 'spans'] as const) {
    if (options[k] !== undefined && typeof options[k] !== 'boolean') {
      throw argError(
        'type',
        'ERR_INVALID_ARG_TYPE',
        `The "${k}" option must be a boolean. Received ${describe(options[k])}`,
      );
    }
  }
  const meterName = options.meterName ?? 'loop-helpers';
  if (typeof meterName !== 'string' || meterName === '') {
    throw argError(
      'type',
      'ERR_INVALID_ARG_TYPE',
      `The "meterName" option must be a non-empty string. Received ${describe(meterName)}`,
    );
  }
  if (enabled.has(detector)) {
    const e = new Error(
      'enableOpenTelemetry(): OpenTelemetry is enabled on this detector already; disable() the first handle before enabling it again',
    );
    (e as Error & { code: string }).code = 'ERR_LOOP_HELPERS_OTEL_ENABLED';
    throw e;
  }
  const api = loadApi();

  const wantMetrics = options.metrics !== false;
  const histogram = wantMetrics
    ? api.metrics.getMeter(meterName, packageVersion()).createHistogram(BLOCK_DURATION_METRIC, {
        description: 'How long the event loop was blocked, one value per block (loop-helpers BlockingDetector)',
        unit: 's',
        advice: { explicitBucketBoundaries: [...BLOCK_DURATION_BUCKETS] },
      })
    : undefined;

  let spansMissing: string | null = null;
  let storage: { storage: AsyncLocalStorage<unknown>; key: symbol } | undefined;
  if (options.spans !== false) {
    const caps = capabilities();
    if (!caps.asyncContext) {
      spansMissing = `the blocked code's AsyncLocalStorage cannot be read on this Node.js: ${caps.reasons.asyncContext ?? 'capabilities().asyncContext is false'}`;
    } else {
      const found = contextStorage(api);
      if (typeof found === 'string') spansMissing = found;
      else storage = found;
    }
  }

  /** Spans handed back but not matched yet, by span id (oldest first). */
  const pending = new Map<string, Span>();
  const onBlock = (
    event: BlockEvent,
    read: { value: JsonValue; missing: string | null } | undefined,
    anchors: object[],
  ): void => {
    const base: Attributes = { [ATTR.threadId]: event.threadId };
    if (event.fingerprint !== null) base[ATTR.fingerprint] = event.fingerprint;
    histogram?.record(event.durationMs / 1000, base);
    if (storage === undefined) return;
    for (const a of anchors) {
      const span = a as Span;
      const id = typeof span.spanContext === 'function' ? span.spanContext().spanId : undefined;
      if (id === undefined) continue;
      pending.delete(id);
      pending.set(id, span);
      if (pending.size > PENDING_SPANS_KEPT) pending.delete(pending.keys().next().value as string);
    }
    const ids = readSpanIds(read?.value);
    if (ids === undefined) return;
    event.traceId = ids.traceId;
    event.spanId = ids.spanId;
    const span = pending.get(ids.spanId);
    pending.delete(ids.spanId);
    if (span === undefined || !span.isRecording()) return;
    const frame = topFrame(event);
    const attrs: Attributes = {
      ...base,
      [ATTR.duration]: event.durationMs / 1000,
      [ATTR.ended]: event.ended,
    };
    if (frame !== undefined) {
      attrs[ATTR.functionName] = frame.functionName;
      attrs[ATTR.filePath] = frame.fileName;
      attrs[ATTR.lineNumber] = frame.lineNumber;
      attrs[ATTR.columnNumber] = frame.columnNumber;
    }
    span.addEvent(BLOCKED_SPAN_EVENT, attrs, event.startTime);
  };

  const remove = detector[kAddTap](
    storage === undefined
      ? { onBlock }
      : {
          // The Context's value Map, its span (found by the span key's identity), that span's ids
          // (and nothing else of its span context: each key read costs, in the interrupt).
          context: {
            storage: storage.storage,
            path: ['_currentContext', storage.key],
            keys: ['_spanContext'],
            innerKeys: ['traceId', 'spanId'],
          },
          onBlock,
        },
  );
  enabled.add(detector);
  let on = true;
  const disable = (): void => {
    if (!on) return;
    on = false;
    remove();
    enabled.delete(detector);
    pending.clear();
  };
  return {
    metrics: histogram !== undefined,
    spans: storage !== undefined,
    spansMissing,
    disable,
    [Symbol.dispose]: disable,
  };
}

let version: string | undefined;
/** This package's version (the meter's). */
function packageVersion(): string {
  version ??= (require('../../package.json') as { version: string }).version;
  return version;
}
