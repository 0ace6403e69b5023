// Interrupt edge cases, each in a child process with a time limit (fixtures/interrupt-edge.cjs).
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const run = async (t, name) => {
  const r = await runNode([fixture('interrupt-edge.cjs'), name], { timeoutMs: 20_000 });
  t.false(r.timedOut, `${name} timed out; stderr: ${r.stderr}`);
  t.is(r.code, 0, r.stderr);
  t.truthy(r.result, `no RESULT; stderr: ${r.stderr}`);
  return r.result;
};

test("interrupt: 'guarded' throws inside run() only; other blocks are reported and finish", async (t) => {
  const r = await run(t, 'guarded');
  t.is(r.caught?.name, 'AlarmInterrupt');
  t.is(r.caught.top, 'spinForever');
  t.deepEqual(r.finished, ['timer 250', 'reaction 250'], 'unguarded blocks ran to their end');
  t.deepEqual(r.interrupts, [], 'nothing outside run() was interrupted');
  t.true(r.blocked.filter((ms) => ms >= 240).length >= 2, `both unguarded blocks reported: ${r.blocked}`);
  t.false(r.guardsOnPrototype);
});

test("a 'guarded' and an 'everywhere' detector on one thread each keep their own mode", async (t) => {
  const r = await run(t, 'mixed-modes');
  t.is(r.caught?.name, 'AlarmInterrupt', 'run() under the guarded detector throws');
  t.is(r.caught.top, 'spinForever');
  t.deepEqual(r.finished, ['timer 200', 'reaction 200'], 'blocks under 300 ms outside run() ran to their end');
  t.deepEqual(r.guardedInterrupts, [], 'the guarded detector interrupted nothing outside run()');
  t.is(r.everywhereInterrupts.length, 1, JSON.stringify(r.everywhereInterrupts));
  t.is(r.everywhereInterrupts[0].top, 'spinForever');
});

test('run() and wrap() on a detector that is not running throw ERR_LOOP_HELPERS_NOT_RUNNING', async (t) => {
  const r = await run(t, 'not-running');
  t.is(r.errors.length, 2);
  for (const e of r.errors) {
    t.is(e?.code, 'ERR_LOOP_HELPERS_NOT_RUNNING');
    t.regex(e.message, /not running.*call start\(\) first/);
  }
  t.is(r.whileRunning, 2);
  t.is(r.afterStop, 'ERR_LOOP_HELPERS_NOT_RUNNING');
});

test('a frozen Error instance as raiseExc is thrown as itself', async (t) => {
  const r = await run(t, 'frozen-instance');
  t.true(r.same);
  t.is(r.caught.name, 'RangeError');
  t.is(r.caught.message, 'frozen');
});

test('a raiseExc class whose constructor throws gives AlarmInterrupt with that error as cause', async (t) => {
  const r = await run(t, 'throwing-class');
  for (const e of [r.caught, r.delivered[0]]) {
    t.is(e?.name, 'AlarmInterrupt');
    t.is(e.top, 'spinForever');
    t.deepEqual(e.cause, { name: 'TypeError', message: 'constructor failed' });
  }
  t.is(r.delivered.length, 1, 'the unguarded interrupt was delivered too');
});

test('stop() called from onBlocked: the interrupt of that block is still delivered', async (t) => {
  const r = await run(t, 'stop-in-onBlocked');
  t.false(r.running);
  t.is(r.delivered.length, 1);
  t.is(r.delivered[0].top, 'spinForever');
});

test('fake timers installed before start(): nothing put on Object.prototype, fake timers work, real timers are interrupted', async (t) => {
  const r = await run(t, 'fake-timers');
  t.is(r.startError, undefined);
  t.deepEqual(r.polluted, []);
  t.true(r.fakeFired);
  t.is(r.delivered.length, 1);
  t.is(r.delivered[0].top, 'spinForever');
});

test("a blocking 'exit' listener is reported, not interrupted: the listeners after it still run", async (t) => {
  const r = await runNode([fixture('interrupt-edge.cjs'), 'exit-listeners'], { timeoutMs: 20_000 });
  t.false(r.timedOut);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /FIRST EXIT LISTENER DONE\nSECOND EXIT LISTENER RAN/);
  t.notRegex(r.stdout, /INTERRUPTED/);
  t.regex(r.stderr, /"type":"BlockingWarning"/, 'the block was reported');
});

test("run()'s late path (blocked past the deadline inside a native call): fn's own exception is the cause", async (t) => {
  const r = await run(t, 'late-cause');
  t.is(r.caught.name, 'AlarmInterrupt');
  t.is(r.caught.top, null, 'no JavaScript stack: the block was inside JSON.parse');
  t.is(r.caught.rawCause, 'own failure');
});

test("an interrupt never lands inside the loading of Node's own built-in modules: they are whole afterwards", async (t) => {
  const r = await run(t, 'builtin-loading');
  t.is(r.caught?.name, 'AlarmInterrupt', 'the runaway after the loads was still interrupted');
  t.deepEqual(r.got, r.expected, 'every built-in has all its exports');
});
