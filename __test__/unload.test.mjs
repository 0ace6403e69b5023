// The addon loaded only in Workers stays mapped after they end and keeps working: Node dlcloses an
// addon when the last environment that loaded it ends, while our monitor thread and SIGALRM
// handler outlive every environment. Linux links it `-z nodelete`; macOS reopens it with
// RTLD_NODELETE as it loads (crates/node/build.rs, src/lib.rs).
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

test('loaded only in Workers, the addon stays mapped after they end, and a later Worker uses it again', async (t) => {
  const r = await runNode([fixture('unload.cjs')], { timeoutMs: 30_000 });
  t.false(r.timedOut, r.stderr);
  t.is(r.code, 0, r.stderr);
  t.is(r.signal, null);
  const out = r.result;
  t.deepEqual(out.before, [], 'the main thread never loaded it');
  t.is(out.load.code, 0);
  t.is(out.afterLoad.length, 1, 'mapped after the only Worker that loaded it ended');
  for (const step of ['afterDetect1', 'afterDetect2']) t.deepEqual(out[step], out.afterLoad, step);
  for (const run of [out.detect1, out.detect2]) {
    t.is(run.code, 0);
    t.deepEqual(run.message, { blocked: 1, interrupted: out.load.message.interrupt ? 1 : 0 });
  }
});
