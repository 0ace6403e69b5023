// Interrupts at random points in and around Node's timer code leave its books straight: code that
// keeps making, refreshing and clearing timers and Immediates is interrupted everywhere many times
// (fixtures/timer-books.cjs), and Node's ref counts must still match what is on its lists. Before
// the interrupt learnt where Node's timer bookkeeping runs (crates/node/src/sink.rs), this found
// leaked refs (a process that never exits) and a corrupted priority queue of timer lists.
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const INTERRUPTS = 30;

test("interrupts in and around Node's timer functions leave its ref counts and lists straight", async (t) => {
  const r = await runNode(['--expose-internals', fixture('timer-books.cjs'), `${INTERRUPTS}`], {
    timeoutMs: 60_000,
  });
  t.false(r.timedOut, r.stderr);
  t.is(r.code, 0, r.stderr);
  t.truthy(r.result, `no RESULT; stderr: ${r.stderr}`);
  const { interrupts, checks, books, firstBad, landed } = r.result;
  t.log(`interrupts landed at: ${JSON.stringify(landed)}`);
  t.true(interrupts >= INTERRUPTS);
  t.is(firstBad, null, `the books disagreed after an interrupt: ${JSON.stringify(firstBad)}`);
  // [Node's count, what its lists hold]
  for (const [name, [counted, held]] of Object.entries(books)) t.is(counted, held, name);
  t.deepEqual(checks, { immediate: true, tick: true, promise: true, timeout: true });
});
