// Events and logs: JSON-safe events and messages, fingerprints, the report budget, closing records,
// Node's warning conventions. Real blocks in child processes (fixtures/events.cjs).
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

import { fixture, runNode, warnings } from './helpers/run.mjs';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const events = (name, options = {}, run = {}) =>
  runNode([...(run.nodeArgs ?? []), run.file ?? fixture('events.cjs'), name, JSON.stringify(options)], {
    timeoutMs: 30_000,
    ...run,
    env: { LOOP_HELPERS_DIST: dist, ...run.env },
  });

/**
 * The fixture's own block: the one whose samples are in `spinHere`. A loaded machine can also hold
 * the loop for a timeout elsewhere (Node's own start-up work after start(), kept off the CPU), and
 * that is reported too, rightly; tests about one block find theirs by its frames.
 */
const spinHereBlock = (t, events) => {
  const spins = events.filter((e) => e.samples.some((s) => s.frames?.some((f) => f.functionName === 'spinHere')));
  t.is(spins.length, 1, JSON.stringify(events.map((e) => [e.durationMs, e.cpuWaitMs, e.fingerprint])));
  return spins[0];
};

/** The JSON log lines on stderr. */
const jsonLines = (stderr) =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));

test('events, channel messages and interrupt errors survive JSON', async (t) => {
  const r = await events('roundtrip');
  t.is(r.code, 0, r.stderr);
  const x = r.result;
  t.true(x.events.length >= 2, 'a block, and the guarded block that was interrupted');
  t.deepEqual(
    x.eventsSurvive,
    x.events.map(() => true),
  );
  t.is(x.blockedSurvive.length, x.events.length);
  t.true(x.blockedSurvive.every(Boolean), 'loop-helpers:blocked messages');
  t.true(x.blockedHasDetector.every(Boolean), 'message.detector is still there (non-enumerable)');
  t.deepEqual(x.interruptSurvive, [true], 'loop-helpers:interrupt message');
  t.deepEqual(x.interruptHasError, [true]);
  t.is(x.interruptData[0].name, 'AlarmInterrupt');
  t.true(x.interruptData[0].blockedMs >= 100);
  t.true(x.syncSurvive.length >= 1 && x.syncSurvive.every(Boolean), 'loop-helpers:sync-call messages');
  t.is(x.errorName, 'AlarmInterrupt');
  t.true(x.errorFieldsSurvive, JSON.stringify(x.errorJson));
  t.is(x.errorJson.message, 'blocking detected after timeout=0.1');
  t.true(x.warningSurvives.every(Boolean), 'BlockingWarning.toJSON()');
  t.deepEqual(
    x.jsFingerprints,
    x.events.map(() => true),
    'lib/fingerprint.ts computes the native fingerprint',
  );
  // Units in names; no BigInt, no microseconds.
  const [e] = x.events;
  t.is(typeof e.startHrtimeMs, 'number');
  t.is(typeof e.durationMs, 'number');
  t.false('startHrtime' in e || 'duration' in e);
  t.true(e.samples.every((s) => !('sampleCostUs' in s) && (s.sampleCostMs === null || s.sampleCostMs < 50)));
  t.regex(e.fingerprint, /^[0-9a-f]{16}$/);
});

test('fingerprints: equal for the same place, in one process and across processes and paths; different for another place', async (t) => {
  // Two copies of the fixture in different directories, each run from its own directory.
  const dirs = [0, 1].map(() => mkdtempSync(join(tmpdir(), 'lh-fp-')));
  try {
    const runs = await Promise.all(
      dirs.map((dir, i) => {
        const app = join(dir, i === 0 ? 'app' : 'srv/other/app');
        mkdirSync(app, { recursive: true });
        copyFileSync(fixture('events.cjs'), join(app, 'events.cjs'));
        return events('places', { plan: ['here', 'here', 'there'] }, { file: join(app, 'events.cjs'), cwd: app });
      }),
    );
    // The fixture's three blocks, by their frames (a loaded machine can add one of its own: a
    // gate run reported a 135 ms block in Node's timers right after start(), rightly).
    const inSpin = (e) =>
      e.samples.some((s) => s.frames?.some((f) => f.functionName === 'spinHere' || f.functionName === 'spinThere'));
    const fps = runs.map((r) => {
      t.is(r.code, 0, r.stderr);
      const spins = r.result.events.filter(inSpin);
      t.is(spins.length, 3, r.stderr);
      return spins.map((e) => e.fingerprint);
    });
    const [[a1, a2, b], [c1, c2, d]] = fps;
    t.regex(a1, /^[0-9a-f]{16}$/);
    t.is(a1, a2, 'the same place twice in one process');
    t.not(a1, b, 'another place');
    t.is(a1, c1, 'the same place in another process, from another directory');
    t.is(c1, c2);
    t.is(b, d);
    // The JSON log carries the event's fingerprint: each live warning and the closing record.
    for (const r of runs) {
      const lines = jsonLines(r.stderr);
      const ends = lines.filter((l) => l.type === 'BlockingEnded');
      t.deepEqual(
        ends.map((l) => l.fingerprint),
        r.result.events.map((e) => e.fingerprint),
      );
      // A live warning written before its stack arrived (5 ms wait, loaded machine) has none yet.
      for (const l of lines.filter((l) => l.type === 'BlockingWarning')) {
        const e = r.result.events.find((e) => e.startHrtimeMs === l.startHrtimeMs);
        t.truthy(e, JSON.stringify(l));
        if (l.fingerprint !== null) t.is(l.fingerprint, e?.fingerprint);
      }
    }
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
});

test('the closing record gives the final duration, equal to the event', async (t) => {
  const r = await events('places', { plan: ['here'], spinMs: 450 });
  t.is(r.code, 0, r.stderr);
  const e = spinHereBlock(t, r.result.events);
  // The lines of that block (the same start), in the order written.
  const lines = jsonLines(r.stderr).filter((l) => l.startHrtimeMs === e.startHrtimeMs);
  const live = lines.filter((l) => l.type === 'BlockingWarning');
  const [end] = lines.filter((l) => l.type === 'BlockingEnded');
  t.true(live.length >= 1, r.stderr);
  t.is(lines.at(-1), end, 'the closing record comes last');
  t.is(end.durationMs, e.durationMs);
  t.true(end.durationMs >= 440, String(end.durationMs));
  t.true(end.durationMs > live.at(-1).blockedMs);
  t.is(end.startHrtimeMs, e.startHrtimeMs);
  t.is(end.fingerprint, e.fingerprint);
  t.true(end.ended);
  t.is(end.warnings, e.samples.length);
  t.is(end.suppressedSinceLastLog, 0);
});

test.serial(
  'the report budget: repeats are kept out of the log and counted, a new fingerprint is logged at once',
  async (t) => {
    // Three blocks here within the interval, one there, then here again once the interval is over.
    const plan = ['here', 'here', 'here', 'there', 3300, 'here'];
    const r = await events('places', { plan, logRepeatsAfterMs: 3000 });
    t.is(r.code, 0, r.stderr);
    const ev = r.result.events;
    t.is(ev.length, 5, r.stderr);
    // The budget decides when a block's first warning is written, with the fingerprint of its stack:
    // a sample that missed its 5 ms wait (a loaded machine) leaves the block without a fingerprint
    // then, and it is logged. The exact pattern holds when every first sample was on time.
    const onTime = ev.every((e) => e.samples[0].sampleDelayMs !== null && e.samples[0].sampleDelayMs < 5);
    t.false(ev[3].logSuppressed, 'a new fingerprint is logged at once');
    t.false(ev[4].logSuppressed, 'logged again once the interval is over');
    // The count carried to the next logged block is known only if that block's own first sample
    // was on time (otherwise it had no fingerprint when the budget decided, and is logged with 0).
    const firstOnTime = ev[4].samples[0].sampleDelayMs !== null && ev[4].samples[0].sampleDelayMs < 5;
    if (
      firstOnTime &&
      ev.slice(0, 3).every((e) => e.samples[0].sampleDelayMs !== null && e.samples[0].sampleDelayMs < 5)
    ) {
      t.is(ev[4].suppressedSinceLastLog, ev.slice(1, 3).filter((e) => e.logSuppressed).length);
    }
    if (!onTime) {
      t.log(
        'a first sample missed its wait: only the invariants are checked',
        JSON.stringify(ev.map((e) => e.samples[0])),
      );
      return;
    }
    t.deepEqual(
      ev.map((e) => [e.logSuppressed, e.suppressedSinceLastLog]),
      [
        [false, 0],
        [true, 1],
        [true, 2],
        [false, 0],
        [false, 2],
      ],
    );
    t.is(ev[0].fingerprint, ev[4].fingerprint);
    const lines = jsonLines(r.stderr);
    const ends = lines.filter((l) => l.type === 'BlockingEnded');
    t.deepEqual(
      ends.map((l) => [l.fingerprint, l.suppressedSinceLastLog]),
      [
        [ev[0].fingerprint, 0],
        [ev[3].fingerprint, 0],
        [ev[4].fingerprint, 2],
      ],
    );
    const logged = new Set([ev[0], ev[3], ev[4]].map((e) => e.startHrtimeMs));
    for (const l of lines) t.true(logged.has(l.startHrtimeMs), `only logged blocks have lines: ${JSON.stringify(l)}`);
  },
);

test('text mode ends a block with one short line giving the total', async (t) => {
  const r = await events('warnings', { detector: { log: 'text' } });
  t.is(r.code, 0, r.stderr);
  spinHereBlock(t, r.result.events);
  t.true(warnings(r.stderr).length >= 1, r.stderr);
  const totals = r.stderr.split('\n').filter((l) => l.includes('in total'));
  // One closing line per block, in order. When the thread waited for a CPU for a quarter of the
  // block or more (a loaded machine), the line says how long, from the event's own figure.
  const pid = /\(node:(\d+)\)/.exec(r.stderr)?.[1];
  t.deepEqual(
    totals,
    r.result.events.map((e) => {
      const waited =
        e.cpuWaitMs !== null && e.cpuWaitMs * 4 >= e.durationMs
          ? `; the thread waited ${(e.cpuWaitMs / 1000).toFixed(3)} s of it for a CPU (the machine was overloaded)`
          : '';
      return `(node:${pid}) BlockingWarning: blocked for ${(e.durationMs / 1000).toFixed(3)} s in total${waited} [${e.fingerprint}]`;
    }),
  );
});

test("'warning' listeners get one BlockingWarning per block, after it, not printed a second time", async (t) => {
  const r = await events('warnings', { listen: true });
  t.is(r.code, 0, r.stderr);
  const e = spinHereBlock(t, r.result.events);
  // One per block, the fixture's among them.
  t.is(r.result.got.length, r.result.events.length);
  const w = r.result.got.find((g) => g.json.startHrtimeMs === e.startHrtimeMs);
  t.truthy(w, JSON.stringify(r.result.got.map((g) => g.json.startHrtimeMs)));
  t.true(w.isClass);
  t.is(w.json.name, 'BlockingWarning');
  t.is(w.json.code, 'LOOP_HELPERS_BLOCKED');
  const { name: _n, message: _m, code: _c, ...fields } = w.json;
  t.deepEqual(fields, e);
  t.regex(
    w.stack,
    // The innermost application frame is spinHere (the sample can land in Node's CPU clock it calls).
    /^BlockingWarning: blocking detected after timeout=0\.1; blocked for \d+\.\d+ s in total\n(?: {4}at .*\(node:[^\n]*\n)* {4}at spinHere /,
  );
  // Printed once, live (Node's printer would have added "[LOOP_HELPERS_BLOCKED]" and a second header).
  t.notRegex(r.stderr, /LOOP_HELPERS_BLOCKED/);
  t.is(r.stderr.split('\n').filter((l) => l.includes('in total')).length, r.result.events.length, r.stderr);
});

for (const [label, run] of [
  ['--no-warnings', { nodeArgs: ['--no-warnings'] }],
  ['NODE_NO_WARNINGS=1', { env: { NODE_NO_WARNINGS: '1' } }],
  ['--disable-warning=BlockingWarning', { nodeArgs: ['--disable-warning=BlockingWarning'] }],
]) {
  const applies = !label.startsWith('--disable-warning') || Number(process.versions.node.split('.')[0]) >= 22;
  const maybe = applies ? test : test.skip;
  const title = `${label} silences the live text warnings; listeners still get the BlockingWarning`;
  maybe(applies ? title : `${title} (skipped: --disable-warning needs Node.js 21.3+)`, async (t) => {
    const r = await events('warnings', { listen: true }, run);
    t.is(r.code, 0, r.stderr);
    // The fixture's block (a loaded machine can hold the loop for a timeout elsewhere too, and
    // that is reported as well): one event, and one BlockingWarning per event for the listeners.
    spinHereBlock(t, r.result.events);
    t.deepEqual(warnings(r.stderr), []);
    t.notRegex(r.stderr, /BlockingWarning/);
    t.is(r.result.got.length, r.result.events.length);
    // An explicit log: 'json' stays.
    const j = await events('warnings', { detector: { log: 'json' } }, run);
    t.is(j.code, 0, j.stderr);
    t.true(
      jsonLines(j.stderr).some((l) => l.type === 'BlockingEnded'),
      j.stderr,
    );
  });
}
