// An interrupt never lands in loop-helpers' own JavaScript (stop(), a delivery, a guard's
// bookkeeping: left half done, a stop() would leave its detector stopped in JavaScript and running
// natively), but the application's code that ours runs is interrupted as any other, including code
// that has no file: compiled by `new Function` or `eval`.
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { runNode } from './helpers/run.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

const script = `
const { BlockingDetector } = require(${JSON.stringify(root)});
const d = new BlockingDetector({ timeout: 0.05, log: false }).start();
const out = {};
const blocking = { newFunction: new Function('for (;;);'), eval: eval('(() => { for (;;); })') };
for (const [name, fn] of Object.entries(blocking)) {
  try {
    d.run(fn);
    out[name] = 'returned';
  } catch (e) {
    out[name] = { name: e.name, topFile: e.blockingFrames[0].fileName };
  }
}
d.stop();
console.log('RESULT ' + JSON.stringify(out));
`;

test('code compiled by new Function or eval, run by run(), is interrupted: a frame without a file is not ours', async (t) => {
  const r = await runNode(['-e', script], { timeoutMs: 20_000 });
  t.false(r.timedOut, 'run() never returned');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result, {
    newFunction: { name: 'AlarmInterrupt', topFile: '' },
    eval: { name: 'AlarmInterrupt', topFile: '' },
  });
});
