// Panics in the native layer are recovered from visibly: counted, with the last message, in
// nativeInfo() and capabilities().panics, and the process goes on working. The panic is forced
// through the test-only export `testPanic`, which exists only under LOOP_HELPERS_TEST_PANIC=1.
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { runNode } from './helpers/run.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

const script = `
const { capabilities, BlockingDetector } = require(${JSON.stringify(root)});
const { native } = require(${JSON.stringify(`${root}dist/lib/native.js`)});
const out = { before: capabilities().panics };
const attempt = (...args) => {
  try { native().testPanic(...args); return { returned: true }; }
  catch (e) { return { code: e.code, message: e.message }; }
};
out.first = attempt('forced panic one', false);
out.afterFirst = capabilities().panics;
out.info = JSON.parse(native().nativeInfo()).panics;
out.poisoning = attempt('forced panic two', true);
out.afterPoisoning = capabilities().panics;
out.recovering = attempt('forced panic three', false);
out.afterRecovering = capabilities().panics;
// The process keeps working: a detector still reports a block.
const events = [];
const d = new BlockingDetector({ timeout: 0.05, raiseExc: false, log: false }).start();
d.on('blocked', (e) => events.push(e.blockedMs));
const until = Date.now() + 300;
while (Date.now() < until);
setTimeout(() => {
  d.stop();
  out.events = events.length;
  console.log('RESULT ' + JSON.stringify(out));
}, 50);
`;

test('a forced panic is an ERR_LOOP_HELPERS_PANIC exception, counted with its message, and the process goes on', async (t) => {
  const r = await runNode(['-e', script], { env: { LOOP_HELPERS_TEST_PANIC: '1' } });
  t.is(r.code, 0, r.stderr);
  const out = r.result;
  t.deepEqual(out.before, { count: 0, last: null, poisonedLocks: 0, lastPoisonedLock: null });

  t.is(out.first.code, 'ERR_LOOP_HELPERS_PANIC');
  t.is(out.first.message, 'internal error in exports::test_panic: forced panic one');
  t.deepEqual(out.afterFirst, {
    count: 1,
    last: 'exports::test_panic: forced panic one',
    poisonedLocks: 0,
    lastPoisonedLock: null,
  });
  t.deepEqual(out.info, out.afterFirst, 'nativeInfo() reports the same');

  // A panic while holding a lock poisons it; the next use recovers from it and counts that, once.
  t.is(out.poisoning.code, 'ERR_LOOP_HELPERS_PANIC');
  t.deepEqual(out.afterPoisoning, {
    count: 2,
    last: 'exports::test_panic: forced panic two',
    poisonedLocks: 0,
    lastPoisonedLock: null,
  });
  t.is(out.recovering.code, 'ERR_LOOP_HELPERS_PANIC');
  t.deepEqual(out.afterRecovering, {
    count: 3,
    last: 'exports::test_panic: forced panic three',
    poisonedLocks: 1,
    lastPoisonedLock: 'exports::test_panic',
  });

  t.true(out.events >= 1, 'the detector still reports blocks');
  // Rust's panic message is on stderr too.
  t.regex(r.stderr, /panicked at .*forced panic one/s);
});

test('without LOOP_HELPERS_TEST_PANIC=1 there is no testPanic, and no panics are counted', async (t) => {
  const r = await runNode(
    [
      '-e',
      `const { capabilities } = require(${JSON.stringify(root)});
       const { native } = require(${JSON.stringify(`${root}dist/lib/native.js`)});
       console.log('RESULT ' + JSON.stringify({ testPanic: typeof native().testPanic, panics: capabilities().panics }));`,
    ],
    { env: { LOOP_HELPERS_TEST_PANIC: '' } },
  );
  t.deepEqual(r.result, {
    testPanic: 'undefined',
    panics: { count: 0, last: null, poisonedLocks: 0, lastPoisonedLock: null },
  });
});
