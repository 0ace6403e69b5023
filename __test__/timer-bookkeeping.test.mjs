// An interrupt that arrives while Node's own code takes a Timeout or Immediate off its list and
// enters its callback's scope, or while clearTimeout() takes one off, is declined: the monitor
// asks again later, and the timer runs on.
// Found by the churn test on Node 22 under load (a Worker's interval stopped for good). The stall
// is injected (fixtures/timer-bookkeeping.cjs): a wrapper of Node's function, compiled under that
// function's own file name, spins after the real one ran, once.
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const major = Number(process.versions.node.split('.')[0]);

const cases = [
  // listOnTimeout takes a due Timeout off its list with L.remove() (every supported Node.js).
  ['remove', 'interval', true],
  ['remove', 'timeout', true],
  // clearTimeout() takes a pending Timeout off its list with L.remove() too, from Node's public
  // timer code (`unenroll` in node:timers), and then drops its ref.
  ['remove', 'clear', true],
  // Then, and processImmediate after marking an Immediate destroyed, AsyncContextFrame.exchange()
  // (Node 22+).
  ['exchange', 'interval', major >= 22],
  ['exchange', 'timeout', major >= 22],
  ['exchange', 'immediate', major >= 22],
];

for (const [where, kind, applies] of cases) {
  const skipped = applies ? '' : ` (skipped: Node.js ${major} has no AsyncContextFrame.exchange())`;
  (applies ? test : test.skip)(
    kind === 'clear'
      ? "a stall in Node's remove() inside clearTimeout(): reported, not interrupted, and the Timeout's ref is dropped"
      : `a stall in Node's ${where}() before ${kind === 'timeout' ? 'a' : 'an'} ${kind}'s callback: reported, not interrupted, and the ${kind} runs on${skipped}`,
    async (t) => {
      const r = await runNode(['--expose-internals', fixture('timer-bookkeeping.cjs'), where, kind], {
        timeoutMs: 20_000,
      });
      t.false(r.timedOut, `the process never ended (a Timeout's ref left behind?): ${r.stderr}`);
      t.is(r.code, 0, r.stderr);
      // Without RESULT the process ended by itself, its timer or Immediate lost.
      t.truthy(r.result, `no RESULT (the ${kind} was lost); stderr: ${r.stderr}`);
      t.is(r.result.stalled, 1, 'the stall was injected once');
      t.is(r.result.runs, kind === 'timeout' || kind === 'clear' ? 1 : 5);
      t.is(r.result.interrupts, 0);
      // The stall was where it was meant to be, under Node's timer code, and it was reported as a
      // block (a loaded machine may report others too).
      t.is(r.result.caller, { immediate: 'processImmediate', clear: 'unenroll' }[kind] ?? 'listOnTimeout');
      t.true(
        r.result.blocked.some((ms) => ms >= 55),
        `no block of the 60 ms stall: ${JSON.stringify(r.result.blocked)}`,
      );
    },
  );
}
