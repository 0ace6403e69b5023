// After stop() has returned, a detector emits only what stop() promises (docs/api.md): what it had
// not emitted yet, from one process.nextTick callback queued by stop(); and, when stop() is called
// from a listener of an event, the rest of that event's emission. Then nothing: no 'blocked' or
// 'interrupt' event, no diagnostics_channel message, no process 'warning', no line on stderr.
// Each scenario runs in a child (fixtures/after-stop.cjs), which notes what each receiver got and
// in which phase of its detector (see the fixture's header).
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const run = (scenario) => runNode([fixture('after-stop.cjs'), scenario], { timeoutMs: 30_000 });

const BLOCK_RECEIVERS = ['onBlocked', 'listener:blocked', 'channel:blocked', 'process:warning'];
const INTERRUPT_RECEIVERS = ['onInterrupt', 'listener:interrupt', 'channel:interrupt'];

/** What every scenario must show; returns the notes. */
function nothingLate(t, r) {
  t.false(r.timedOut, r.stderr);
  t.is(r.code, 0, r.stderr);
  const { notes, timeouts } = r.result;
  t.deepEqual(
    notes.filter((n) => n.phase === 'late' || n.detector === '?'),
    [],
    'received after the tick that follows stop()',
  );
  // stderr: no line of a detector after its marker.
  const lines = r.stderr.split('\n');
  for (const [i, line] of lines.entries()) {
    const m = /^MARK (\S+) after-tick$/.exec(line);
    if (!m) continue;
    const timeout = timeouts[m[1]];
    const later = lines
      .slice(i + 1)
      .filter((l) => l.startsWith('{') && Math.abs(JSON.parse(l).timeout - timeout) < 1e-7);
    t.deepEqual(later, [], `stderr lines of detector ${m[1]} after stop()`);
  }
  return notes;
}

/** The notes of one detector, as `receiver phase start ended` strings, in order. */
const of = (notes, detector, kind = 'block') =>
  notes
    .filter((n) => n.detector === detector && n.kind === kind)
    .map((n) => `${n.receiver} ${n.phase}${kind === 'block' ? ` ${n.start} ${n.ended}` : ''}`);

test("a block that ended but was not emitted yet when stop() was called is emitted in stop()'s tick, once", async (t) => {
  const r = await run('ended-undelivered');
  const notes = nothingLate(t, r);
  const { attempts } = r.result;
  const last = attempts.at(-1);
  // Each earlier attempt was tried again only because its record was delivered before the turn
  // that stops the detector (see the fixture); there, it came once per receiver, while running.
  for (const a of attempts.slice(0, -1)) {
    t.true(a.deliveredEarly, `${a.name}: tried again only when its record was delivered early`);
    const start = notes.find((n) => n.detector === a.name)?.start;
    t.deepEqual(
      of(notes, a.name),
      BLOCK_RECEIVERS.map((x) => `${x} running ${start} true`),
    );
  }
  t.false(last.deliveredEarly, `${last.name}: delivered before stop() in each of ${attempts.length} attempts`);
  t.true(last.queuedAtStop > 0, 'the block record was queued for delivery when stop() was called');
  const start = notes.find((n) => n.detector === last.name)?.start;
  t.deepEqual(
    of(notes, last.name),
    BLOCK_RECEIVERS.map((x) => `${x} stopped ${start} true`),
  );
});

test("stop() in the turn that blocked, twenty times: each block in progress is emitted in stop()'s tick with ended: false, and no warning line follows", async (t) => {
  const r = await run('in-progress');
  const notes = nothingLate(t, r);
  let emitted = 0;
  for (let i = 0; i < 20; i++) {
    const mine = notes.filter((n) => n.detector === `d${i}` && n.kind === 'block');
    // A block that ended before stop() (at a 20 ms timeout, the turn of `await later(5)` on a
    // loaded machine can be one) was delivered while the detector ran, to every receiver, once.
    const earlier = mine.filter((n) => n.ended);
    for (const start of new Set(earlier.map((n) => n.start))) {
      t.deepEqual(
        earlier.filter((n) => n.start === start).map((n) => `${n.receiver} ${n.phase}`),
        BLOCK_RECEIVERS.map((x) => `${x} running`),
        `d${i}: a block that ended before stop()`,
      );
    }
    // The spin, in progress when stop() was called. Warned about (the monitor got a CPU during
    // the 100 ms spin): its record, once per receiver, ended: false, in stop()'s tick.
    const got = mine.filter((n) => !n.ended);
    if (got.length === 0) continue;
    emitted++;
    const start = got[0].start;
    const receivers = got.map((n) => n.receiver);
    t.deepEqual(new Set(receivers).size, receivers.length, `d${i}: each receiver once`);
    t.deepEqual(
      got.map((n) => `${n.receiver} ${n.phase} ${n.start} ${n.ended}`),
      receivers.map((x) => `${x} stopped ${start} false`),
    );
  }
  t.true(emitted > 0, 'at least one block was in progress when stop() was called');
});

test("an interrupt's error not yet delivered when stop() is called comes in stop()'s tick, once, with the block", async (t) => {
  const r = await run('interrupt-undelivered');
  const notes = nothingLate(t, r);
  t.deepEqual(
    of(notes, 'a', 'interrupt'),
    // The channel message is published before the detector's own receivers.
    ['channel:interrupt', 'onInterrupt', 'listener:interrupt'].map((x) => `${x} stopped`),
  );
  // The interrupted block, still in progress (the loop had not turned), after the interrupt: the
  // last block of a. A loaded machine can hold the loop for a timeout before the spin too (a gate
  // run, Node 26: a block 95 ms earlier); such a block ended and was delivered while a ran.
  const aBlocks = notes.filter((n) => n.detector === 'a' && n.kind === 'block');
  const start = aBlocks.at(-1)?.start;
  const earlier = aBlocks.filter((n) => n.start !== start);
  t.true(
    earlier.every((n) => n.phase === 'running' && n.ended && n.start < start),
    JSON.stringify(earlier),
  );
  const interrupted = notes.filter((n) => n.detector === 'a' && (n.kind !== 'block' || n.start === start));
  t.deepEqual(
    of(interrupted, 'a'),
    BLOCK_RECEIVERS.map((x) => `${x} stopped ${start} false`),
  );
  const order = interrupted.map((n) => n.kind);
  t.deepEqual(order, [...INTERRUPT_RECEIVERS.map(() => 'interrupt'), ...BLOCK_RECEIVERS.map(() => 'block')]);
});

/**
 * a reported the first spin's block only; b both spins' blocks, every receiver while running. A
 * loaded machine can stretch the process's own work before the first spin past a timeout (blocks of
 * 55-135 ms seen after start()): such a block holds no spin, and came whole while both ran.
 */
function firstBlockOnlyForA(t, notes, aPhases) {
  const own = notes.filter((n) => n.kind === 'block' && n.spin === -1);
  const firstSpin = Math.min(...notes.filter((n) => n.spin === 0).map((n) => n.start));
  t.true(
    own.every((n) => n.phase === 'running' && n.ended && n.start < firstSpin),
    JSON.stringify(own),
  );
  const spins = notes.filter((n) => n.kind !== 'block' || n.spin !== -1);
  const aSpins = new Set(spins.filter((n) => n.detector === 'a').map((n) => n.spin));
  t.deepEqual([...aSpins], [0], 'a reported the first spin only');
  const [start] = new Set(spins.filter((n) => n.detector === 'a').map((n) => n.start));
  t.deepEqual(
    of(spins, 'a'),
    BLOCK_RECEIVERS.map((x, i) => `${x} ${aPhases[i]} ${start} true`),
  );
  const bSpins = spins.filter((n) => n.detector === 'b');
  t.deepEqual([...new Set(bSpins.map((n) => n.spin))], [0, 1], 'b reported both spins');
  const bStarts = [...new Set(bSpins.map((n) => n.start))];
  t.is(bStarts.length, 2, 'one block per spin');
  t.deepEqual(
    of(spins, 'b'),
    bStarts.flatMap((s) => BLOCK_RECEIVERS.map((x) => `${x} running ${s} true`)),
  );
}

test('stop() from onBlocked: the rest of that emission completes, then nothing of that detector; the other one goes on', async (t) => {
  const r = await run('from-onBlocked');
  const notes = nothingLate(t, r);
  firstBlockOnlyForA(t, notes, ['running', 'stopped', 'stopped', 'stopped']);
});

test("stop() from a 'blocked' listener: the same", async (t) => {
  const r = await run('from-listener');
  const notes = nothingLate(t, r);
  firstBlockOnlyForA(t, notes, ['running', 'running', 'stopped', 'stopped']);
});

test('stop() of one of two detectors between two blocks: only the other reports the second', async (t) => {
  const r = await run('one-of-two');
  const notes = nothingLate(t, r);
  firstBlockOnlyForA(t, notes, ['running', 'running', 'running', 'running']);
});
