// loop-helpers/otel with the real OpenTelemetry SDK (sdk-metrics' in-memory exporter,
// sdk-trace-base's in-memory span exporter, context-async-hooks' AsyncLocalStorageContextManager),
// in real child processes with time limits.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { capabilities } from '../dist/index.js';
import { fixture, runNode } from './helpers/run.mjs';

const caps = capabilities();
const major = Number(process.versions.node.split('.')[0]);
const run = (name, options = {}, nodeArgs = []) =>
  runNode([...nodeArgs, fixture('otel.cjs'), name, JSON.stringify(options)], { timeoutMs: 30_000 });

const needsContext = caps.asyncContext ? test.serial : test.serial.skip;
const contextReason = caps.asyncContext ? '' : ` (skipped: ${caps.reasons.asyncContext})`;

const METRIC = 'nodejs.eventloop.block.duration';
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60];
/** The innermost frame outside Node's own code, of the first sample with a stack (as the span event's). */
const topFrame = (e) => {
  const frames = e.samples.find((s) => s.frames?.length)?.frames;
  return frames?.find((f) => !f.fileName.startsWith('node:')) ?? frames?.[0];
};
const topFunction = (e) => topFrame(e)?.functionName;
/** The block of the fixture's spin `name` (a loaded machine may add short blocks of its own). */
const spin = (events, name) => events.find((e) => topFunction(e) === name);
const spins = (events, name) => events.filter((e) => topFunction(e) === name);

/** The histogram: one value per block; a point for each spin's fingerprint (a spin per fingerprint). */
function assertHistogram(t, r, names = ['spinInSpan', 'spinOutside']) {
  const metrics = r.result.metrics.filter((m) => m.name === METRIC);
  t.is(metrics.length, 1, JSON.stringify(r.result.metrics));
  const [m] = metrics;
  t.is(m.unit, 's');
  t.is(m.scope, 'loop-helpers');
  const { events } = r.result;
  t.is(
    m.points.reduce((n, p) => n + p.value.count, 0),
    events.length,
    'one value per block',
  );
  for (const e of names.map((n) => spin(events, n))) {
    t.truthy(e, JSON.stringify(events.map(topFunction)));
    const p = m.points.find((x) => x.attributes['loop_helpers.block.fingerprint'] === e.fingerprint);
    t.truthy(p, `a point for ${e.fingerprint}`);
    t.deepEqual(p.attributes, { 'thread.id': 0, 'loop_helpers.block.fingerprint': e.fingerprint });
    t.is(p.value.count, 1);
    t.true(Math.abs(p.value.sum - e.durationMs / 1000) < 1e-9, `${p.value.sum} s for ${e.durationMs} ms`);
    t.deepEqual(p.value.buckets.boundaries, BUCKETS);
  }
}

test.serial('one histogram point per block: unit s, durationMs/1000, thread.id and fingerprint', async (t) => {
  const r = await run('spans');
  t.is(r.code, 0, r.stderr);
  t.false(r.timedOut);
  const { events } = r.result;
  t.true(spin(events, 'spinInSpan').durationMs >= 300);
  t.true(spin(events, 'spinOutside').durationMs >= 200);
  assertHistogram(t, r);
  t.true(r.result.handle.metrics);
});

needsContext(
  `the event carries the blocked span's ids; only that span gets loop.blocked${contextReason}`,
  async (t) => {
    for (const blocker of [1, 3]) {
      const r = await run('spans', { blocker });
      t.is(r.code, 0, r.stderr);
      const { events, spans, ids, handle } = r.result;
      t.deepEqual(handle, { metrics: true, spans: true, spansMissing: null });
      const [inSpan, outside] = [spin(events, 'spinInSpan'), spin(events, 'spinOutside')];
      t.is(inSpan.traceId, ids[blocker].traceId);
      t.is(inSpan.spanId, ids[blocker].spanId);
      t.false('context' in inSpan, 'no asyncContext option: no context fields');
      t.false('traceId' in outside, 'no span was active in the second block');
      t.false('spanId' in outside);
      t.is(spans.length, 5);
      for (const s of spans) {
        const mine = s.spanId === ids[blocker].spanId;
        t.deepEqual(
          s.events.map((e) => e.name),
          mine ? ['loop.blocked'] : [],
          `${s.name}: ${mine ? 'the blocked span' : 'a neighbour'}`,
        );
      }
      const ev = spans.find((s) => s.spanId === inSpan.spanId).events[0];
      t.is(ev.attributes['loop_helpers.block.duration'], inSpan.durationMs / 1000);
      t.is(ev.attributes['loop_helpers.block.fingerprint'], inSpan.fingerprint);
      t.is(ev.attributes['loop_helpers.block.ended'], true);
      t.is(ev.attributes['thread.id'], 0);
      const top = topFrame(inSpan);
      t.is(ev.attributes['code.function.name'], 'spinInSpan');
      t.is(ev.attributes['code.file.path'], top.fileName);
      t.is(ev.attributes['code.line.number'], top.lineNumber);
      t.is(ev.attributes['code.column.number'], top.columnNumber);
      // Timed at the block's start ([seconds, nanoseconds]).
      t.true(Math.abs(ev.time[0] * 1000 + ev.time[1] / 1e6 - inSpan.startTime) < 1);
      assertHistogram(t, r);
    }
  },
);

needsContext(`enabled before start() works the same${contextReason}`, async (t) => {
  const r = await run('spans', { enableBeforeStart: true, blocker: 0 });
  t.is(r.code, 0, r.stderr);
  const inSpan = spin(r.result.events, 'spinInSpan');
  t.is(inSpan.spanId, r.result.ids[0].spanId);
  t.deepEqual(
    r.result.spans.filter((s) => s.events.length > 0).map((s) => s.spanId),
    [inSpan.spanId],
  );
});

needsContext(`disable() stops recording${contextReason}`, async (t) => {
  const r = await run('disable');
  t.is(r.code, 0, r.stderr);
  const { spans, ids, metrics } = r.result;
  const events = spins(r.result.events, 'spinInSpan');
  t.is(events.length, 2, JSON.stringify(r.result.events.map(topFunction)));
  t.is(events[0].spanId, ids[0].spanId);
  t.false('spanId' in events[1], 'disabled: no span ids');
  t.false('traceId' in events[1]);
  // Both spins have the same fingerprint: its point counts the first only.
  t.is(events[0].fingerprint, events[1].fingerprint);
  const points = metrics.find((m) => m.name === METRIC).points;
  t.is(
    points.find((p) => p.attributes['loop_helpers.block.fingerprint'] === events[0].fingerprint).value.count,
    1,
    'disabled: the second block is not recorded',
  );
  const withEvents = spans.filter((s) => s.events.length > 0).map((s) => s.spanId);
  t.deepEqual(withEvents, [ids[0].spanId]);
});

needsContext(`a span that ended in the blocked turn: ids on the event, no span event${contextReason}`, async (t) => {
  const r = await run('endedSpan');
  t.is(r.code, 0, r.stderr);
  const e = spin(r.result.events, 'spinInSpan');
  t.is(e.spanId, r.result.ids[0].spanId);
  t.is(e.traceId, r.result.ids[0].traceId);
  t.deepEqual(r.result.spans[0].events, [], 'an ended span takes no events');
});

needsContext(`the detector's own asyncContext is unchanged beside it${contextReason}`, async (t) => {
  for (const multi of [false, true]) {
    const r = await run('userContext', { multi });
    t.is(r.code, 0, r.stderr);
    const e = spin(r.result.events, 'spinInSpan');
    t.deepEqual(e.context, multi ? [{ requestId: 'r-1' }] : { requestId: 'r-1' });
    t.is(e.contextMissing, null);
    const read = e.samples.filter((s) => 'context' in s);
    t.is(read.length, 1);
    t.deepEqual(read[0].context, e.context);
    t.is(e.spanId, r.result.ids[0].spanId);
    t.is(r.result.spans[0].events.length, 1);
  }
});

(major >= 24 ? test.serial : test.serial.skip)(
  `with --no-async-context-frame the metric works and the span part is skipped, saying why${major >= 24 ? '' : ` (skipped: Node.js ${major} has the async_wrap binding, where the spans are found)`}`,
  async (t) => {
    const r = await run('spans', {}, ['--no-async-context-frame']);
    t.is(r.code, 0, r.stderr);
    t.false(r.result.capabilities.asyncContext);
    t.false(r.result.handle.spans);
    t.true(r.result.handle.metrics);
    t.regex(r.result.handle.spansMissing, /cannot be read on this Node\.js: AsyncLocalStorage is async_hooks-based/);
    for (const e of r.result.events) {
      t.false('traceId' in e);
      t.false('spanId' in e);
    }
    t.true(r.result.spans.every((s) => s.events.length === 0));
    assertHistogram(t, r);
  },
);

(major === 22 ? test.serial : test.serial.skip)(
  `Node.js 22 with --experimental-async-context-frame${major === 22 ? '' : ` (skipped: this is Node.js ${major})`}`,
  async (t) => {
    const r = await run('spans', {}, ['--experimental-async-context-frame']);
    t.is(r.code, 0, r.stderr);
    t.true(r.result.handle.spans, r.result.handle.spansMissing ?? '');
    t.is(spin(r.result.events, 'spinInSpan').spanId, r.result.ids[2].spanId);
  },
);

test.serial('argument errors name the argument and the value; enabling twice is an error', async (t) => {
  const r = await run('errors');
  t.is(r.code, 0, r.stderr);
  const [notDetector, unknown, badSpans, twice, again] = r.result.errors;
  t.is(notDetector.code, 'ERR_INVALID_ARG_TYPE');
  t.is(notDetector.message, 'The "detector" argument must be a BlockingDetector. Received an instance of Object');
  t.is(unknown.code, 'ERR_INVALID_ARG_VALUE');
  t.regex(unknown.message, /Unknown option "metric" .* Known options: metrics, spans, meterName/);
  t.is(badSpans.message, `The "spans" option must be a boolean. Received type string ('yes')`);
  t.is(twice.code, 'ERR_LOOP_HELPERS_OTEL_ENABLED');
  t.is(again, null, 'after disable() it can be enabled again');
});

test.serial('without @opentelemetry/api installed: a clear error naming the package', async (t) => {
  // The package as an application installs it, in a directory without @opentelemetry/api.
  const root = fileURLToPath(new URL('..', import.meta.url));
  const app = mkdtempSync(join(tmpdir(), 'loop-helpers-otel-'));
  t.teardown(() => rmSync(app, { recursive: true, force: true }));
  const pkg = join(app, 'node_modules', 'loop-helpers');
  mkdirSync(pkg, { recursive: true });
  // The local build of the addon (the platform packages are not installed here).
  const addons = readdirSync(root).filter((f) => /^loop-helpers\..*\.node$/.test(f));
  t.true(addons.length > 0, 'a local build of the addon');
  for (const f of ['package.json', 'dist', ...addons]) cpSync(join(root, f), join(pkg, f), { recursive: true });
  writeFileSync(
    join(app, 'app.mjs'),
    [
      "import { BlockingDetector } from 'loop-helpers';",
      "import { enableOpenTelemetry, BLOCK_DURATION_METRIC } from 'loop-helpers/otel';",
      "import { createRequire } from 'node:module';",
      'const out = { metric: BLOCK_DURATION_METRIC };',
      "try { createRequire(import.meta.url).resolve('@opentelemetry/api'); out.apiFound = true; } catch { out.apiFound = false; }",
      'try { enableOpenTelemetry(new BlockingDetector({ log: false })); } catch (e) {',
      '  out.error = { code: e.code, message: e.message, cause: e.cause?.code };',
      '}',
      "const cjs = (await import('node:module')).createRequire(import.meta.url)('loop-helpers/otel');",
      'out.cjs = typeof cjs.enableOpenTelemetry;',
      "console.log('RESULT ' + JSON.stringify(out));",
    ].join('\n'),
  );
  const r = await runNode([join(app, 'app.mjs')], { cwd: app, timeoutMs: 30_000, env: { NODE_PATH: '' } });
  t.is(r.code, 0, r.stderr);
  t.is(r.result.metric, METRIC, 'the ES module entry loads without @opentelemetry/api');
  t.is(r.result.cjs, 'function', 'and the CommonJS one');
  t.false(r.result.apiFound);
  t.is(r.result.error.code, 'ERR_LOOP_HELPERS_OTEL_API_MISSING');
  t.regex(r.result.error.message, /needs the "@opentelemetry\/api" package .*npm install @opentelemetry\/api/);
  t.is(r.result.error.cause, 'MODULE_NOT_FOUND');
});
