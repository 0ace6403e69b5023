// Interrupts at random points in and around Node's timer code leave its books straight: code that
// keeps making, refreshing and clearing timers and Immediates is interrupted everywhere many times
// (fixtures/timer-books.cjs), and Node's Timeout ref count must still match what is on its lists.
// (Its Immediate count can end a ref off: a known, open issue, logged here and not judged.) Before
// the interrupt learnt where Node's timer bookkeeping runs (crates/node/src/sink.rs), this found
// leaked refs (a process that never exits) and a corrupted priority queue of timer lists.
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const INTERRUPTS = 30;

test("interrupts in and around Node's timer functions leave its Timeout ref count and timer lists straight", async (t) => {
  const r = await runNode(['--expose-internals', fixture('timer-books.cjs'), `${INTERRUPTS}`], {
    timeoutMs: 60_000,
  });
  t.false(r.timedOut, r.stderr);
  t.is(r.code, 0, r.stderr);
  t.truthy(r.result, `no RESULT; stderr: ${r.stderr}`);
  const { interrupts, checks, books, firstBad, immediateBooksOff, landed } = r.result;
  t.log(`interrupts landed at: ${JSON.stringify(landed)}`);
  // Not judged: a known, open issue (docs/interrupts.md, "Known issues").
  t.log(
    `Immediate books [counted, queued]: ${JSON.stringify([books.immediates, books.immediateRefs])}; off after ${immediateBooksOff} of ${interrupts} interrupts`,
  );
  t.true(interrupts >= INTERRUPTS);
  t.is(firstBad, null, `the Timeout books disagreed after an interrupt: ${JSON.stringify(firstBad)}`);
  // [Node's count, what its lists hold]
  t.is(books.timeoutRefs[0], books.timeoutRefs[1], 'refed Timeouts');
  t.is(books.listsQueued[0], books.listsQueued[1], 'timer lists in the priority queue');
  t.deepEqual(checks, { immediate: true, tick: true, promise: true, timeout: true });
});
