// What `enableOpenTelemetry()` (loop-helpers/otel) adds, with the real SDK (global MeterProvider
// with an in-memory exporter, BasicTracerProvider, AsyncLocalStorageContextManager), per block and
// per loop turn. Blocks of 50 ms at timeout 20 ms, each inside an active span (a request's), with
// the detector alone ('off'), with OpenTelemetry's metric only ('metrics', `spans: false`), and
// with metric and spans ('on'):
// - in the interrupt: the native read of the span ids from OpenTelemetry's context (spans only),
//   timed natively in each block's first sample (`contextLastReadNs`);
// - at delivery, once the loop turns again: the JavaScript it runs per block (histogram record,
//   `span.addEvent`), timed around its hook;
// - sampleCostMs (here in µs) of the samples, against 'off';
// - per loop turn: an empty setImmediate ping-pong inside an active span, detector alone against
//   detector with OpenTelemetry (nothing is done per turn).
// Child modes: `node otel.mjs --child <blocks>`, `--turns <off|on> <n>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { nowMs, percentile, round, runChild, sized, sleep } from '../lib/stats.mjs';
import { compareTurns, pingPong } from '../lib/turns.mjs';

const require = createRequire(import.meta.url);

/** The global providers, as an application's SDK setup makes them; the tracer, or why not. */
function setUpSdk() {
  let api;
  let sdk;
  try {
    api = require('@opentelemetry/api');
    sdk = {
      ...require('@opentelemetry/context-async-hooks'),
      ...require('@opentelemetry/sdk-metrics'),
      ...require('@opentelemetry/sdk-trace-base'),
    };
  } catch (e) {
    return { unavailable: `the OpenTelemetry SDK packages (devDependencies) are not installed: ${e.message}` };
  }
  api.context.setGlobalContextManager(new sdk.AsyncLocalStorageContextManager());
  const exporter = new sdk.InMemoryMetricExporter(sdk.AggregationTemporality.CUMULATIVE);
  const reader = new sdk.PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  api.metrics.setGlobalMeterProvider(new sdk.MeterProvider({ readers: [reader] }));
  const spans = new sdk.InMemorySpanExporter();
  api.trace.setGlobalTracerProvider(
    new sdk.BasicTracerProvider({ spanProcessors: [new sdk.SimpleSpanProcessor(spans)] }),
  );
  return { tracer: api.trace.getTracer('otel-bench') };
}

const nativeInfo = () => JSON.parse(require('../../dist/lib/native.js').native().nativeInfo());

/** `count` blocks of 50 ms, each in an active span, with OpenTelemetry as `config` says. */
async function blocks(tracer, config, count) {
  const { BlockingDetector, kAddTap } = require('../../dist/lib/detector.js');
  const { enableOpenTelemetry } = require('../../dist/lib/otel.js');
  const d = new BlockingDetector({ timeout: 0.02, raiseExc: false, log: false });
  // The hook enableOpenTelemetry() adds, timed.
  const hookNs = [];
  const addTap = d[kAddTap].bind(d);
  d[kAddTap] = (tap) =>
    addTap({
      ...tap,
      onBlock: (...args) => {
        const t = process.hrtime.bigint();
        tap.onBlock(...args);
        hookNs.push(Number(process.hrtime.bigint() - t));
      },
    });
  d.start();
  const handle = config === 'off' ? undefined : enableOpenTelemetry(d, { spans: config === 'on' });
  const costs = [];
  const readNs = [];
  let withIds = 0;
  const before = nativeInfo().contextReads;
  d.on('blocked', (e) => {
    for (const s of e.samples) if (s.sampleCostMs !== null) costs.push(s.sampleCostMs * 1000);
    if (config === 'on') readNs.push(nativeInfo().contextLastReadNs);
    if (e.spanId !== undefined) withIds++;
  });
  for (let i = 0; i < count; i++) {
    await tracer.startActiveSpan(`request-${i}`, async (span) => {
      await sleep(1);
      const t = nowMs();
      while (nowMs() - t < 50);
      await sleep(1);
      span.end();
    });
    await sleep(10);
  }
  await sleep(50);
  d.stop();
  handle?.disable();
  return { costs, readNs, hookNs, withIds, reads: nativeInfo().contextReads - before };
}

if (process.argv[2] === '--child') {
  const { capabilities } = require('../../dist/index.js');
  const { tracer, unavailable } = setUpSdk();
  if (unavailable) {
    console.log(JSON.stringify({ unavailable }));
    process.exit(0);
  }
  const count = Number(process.argv[3]);
  const out = { spansReadable: capabilities().asyncContext };
  for (const config of ['off', 'metrics', 'on']) out[config] = await blocks(tracer, config, count);
  console.log(JSON.stringify(out));
  process.exit(0);
}

if (process.argv[2] === '--turns') {
  const { BlockingDetector } = require('../../dist/lib/detector.js');
  const { enableOpenTelemetry } = require('../../dist/lib/otel.js');
  const { tracer } = setUpSdk();
  const d = new BlockingDetector({ timeout: 1, raiseExc: false, log: false }).start();
  if (process.argv[3] === 'on') enableOpenTelemetry(d);
  await sleep(50);
  // Inside an active span, so that every turn runs with OpenTelemetry's context.
  const r = await tracer.startActiveSpan('turns', async (span) => {
    const res = await pingPong(Number(process.argv[4]));
    span.end();
    return res;
  });
  d.stop();
  console.log(JSON.stringify(r));
  process.exit(0);
}

export function runOtel(opts) {
  const self = fileURLToPath(import.meta.url);
  const r = runChild(self, ['--child', sized(opts, '100', '20', '5')]);
  if (r.unavailable) return { unavailable: r.unavailable };
  const dist = (xs, scale) =>
    xs.length === 0
      ? null
      : { n: xs.length, p50: round(percentile(xs, 50) / scale, 1), p99: round(percentile(xs, 99) / scale, 1) };
  const perConfig = (c) => ({
    inInterruptUs: dist(c.readNs, 1e3),
    atDeliveryUs: dist(c.hookNs, 1e3),
    sampleCostUsP50: round(percentile(c.costs, 50), 1),
    nativeReads: c.reads,
    eventsWithSpanIds: c.withIds,
  });
  const turns = compareTurns(
    self,
    ['off', 'on'],
    (c) => ['--turns', c, sized(opts, '1000000', '200000', '20000')],
    sized(opts, 7, 2, 1),
  );
  return {
    spansReadable: r.spansReadable,
    perBlock: { off: perConfig(r.off), metrics: perConfig(r.metrics), on: perConfig(r.on) },
    perTurn: { off: turns.off, on: turns.on },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(runOtel({ quick: process.argv.includes('--quick') }), null, 2));
}
