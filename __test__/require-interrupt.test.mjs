// An interrupted require() must not leave its half-evaluated module in the cache: the next
// require() evaluates it afresh (as Node does for a module whose evaluation threw).
import { createRequire } from 'node:module';
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const { capabilities } = createRequire(import.meta.url)('../dist/index.js');
const caps = capabilities();

for (const where of ['run', 'setTimeout', 'fs callback', 'Promise.then']) {
  const unguarded = where === 'fs callback' || where === 'Promise.then';
  const maybe = !unguarded || caps.interruptUnguarded ? test.serial : test.skip;
  maybe(`require() interrupted in ${where}: the next require() evaluates the module afresh`, async (t) => {
    const r = await runNode([fixture('require-interrupt.cjs'), where], { timeoutMs: 20_000 });
    t.false(r.timedOut, r.stderr);
    t.is(r.code, 0, r.stderr);
    const res = r.result;
    if (where === 'run') t.is(res.caught, 'AlarmInterrupt');
    else t.deepEqual(res.interrupts, ['AlarmInterrupt']);
    t.is(res.evaluations, 2, 'evaluated twice');
    t.deepEqual(res.again, { evaluations: 2, partial: true, complete: true }, 'complete exports, not the partial ones');
  });
}
