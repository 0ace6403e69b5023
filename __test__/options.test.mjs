// Option validation and the API's shape (no blocking needed: runs in the test process).
import { createRequire } from 'node:module';
import test from 'ava';

const require = createRequire(import.meta.url);
const { BlockingDetector, AlarmInterrupt, capabilities } = require('../dist/index.js');

test('defaults follow gevent-helpers: timeout 1, AlarmInterrupt, aggressive', (t) => {
  const d = new BlockingDetector();
  t.is(d.timeout, 1);
  t.is(d.raiseExc, AlarmInterrupt);
  t.true(d.aggressive);
  t.is(d.log, true);
  t.false(d.running);
});

test('the positional form (timeout, raiseExc, aggressive) works', (t) => {
  const d = new BlockingDetector(0.5, false, false);
  t.is(d.timeout, 0.5);
  t.is(d.raiseExc, false);
  t.false(d.aggressive);
  const e = new Error('mine');
  t.is(new BlockingDetector(2, e).raiseExc, e);
  t.is(new BlockingDetector(undefined, null).raiseExc, null);
  t.is(new BlockingDetector(undefined, null).timeout, 1);
});

test('AlarmInterrupt is an Error named AlarmInterrupt', (t) => {
  const e = new AlarmInterrupt('blocking detected after timeout=1');
  t.true(e instanceof Error);
  t.is(e.name, 'AlarmInterrupt');
  t.regex(String(e), /^AlarmInterrupt: blocking detected after timeout=1$/);
});

const badTimeouts = [
  [Number.NaN, RangeError, /"timeout".*Received NaN/],
  [0, RangeError, /"timeout".*from 0\.001 to 86400\. Received 0/],
  [-1, RangeError, /Received -1/],
  [Number.POSITIVE_INFINITY, RangeError, /Received Infinity/],
  [0.0009, RangeError, /Received 0\.0009/],
  [86400.5, RangeError, /Received 86400\.5/],
  ['1', TypeError, /"timeout" option must be a number of seconds\. Received type string \('1'\)/],
  [1n, TypeError, /Received type bigint \(1n\)/],
  [null, TypeError, /Received null/],
  [{}, TypeError, /Received an instance of Object/],
];
for (const [value, Type, message] of badTimeouts) {
  const shown =
    typeof value === 'bigint' ? `${value}n` : typeof value === 'number' ? String(value) : JSON.stringify(value);
  test(`timeout ${shown} is refused with a ${Type.name}`, (t) => {
    const err = t.throws(() => new BlockingDetector({ timeout: value }), { instanceOf: Type, message });
    t.is(err.code, Type === RangeError ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE');
    // The positional form validates the same way (an object there is an options object).
    if (typeof value !== 'object' || value === null) t.throws(() => new BlockingDetector(value), { instanceOf: Type });
  });
}

test('timeouts at the bounds are accepted', (t) => {
  t.is(new BlockingDetector({ timeout: 0.001 }).timeout, 0.001);
  t.is(new BlockingDetector({ timeout: 86400 }).timeout, 86400);
});

test('raiseExc accepts an Error class, an Error instance, false or null, and nothing else', (t) => {
  class MyError extends Error {}
  for (const ok of [Error, TypeError, MyError, AlarmInterrupt, new MyError('x'), false, null]) {
    t.is(new BlockingDetector({ raiseExc: ok }).raiseExc, ok);
  }
  for (const [bad, shown] of [
    [true, /Received type boolean \(true\)/],
    ['AlarmInterrupt', /Received type string/],
    [() => {}, /Received function/],
    [class NotAnError {}, /Received function NotAnError/],
    [{ message: 'x' }, /Received an instance of Object/],
    [0, /Received 0/],
  ]) {
    t.throws(() => new BlockingDetector({ raiseExc: bad }), {
      instanceOf: TypeError,
      message: new RegExp(
        `"raiseExc" option must be an Error class, an Error instance, false or null\\. ${shown.source}`,
      ),
    });
  }
});

test('aggressive, log and onBlocked are type-checked', (t) => {
  t.throws(() => new BlockingDetector({ aggressive: 1 }), {
    instanceOf: TypeError,
    message: /"aggressive" option must be a boolean\. Received 1/,
  });
  t.throws(() => new BlockingDetector(1, false, 'yes'), { instanceOf: TypeError, message: /"aggressive"/ });
  t.throws(() => new BlockingDetector({ log: 'xml' }), {
    instanceOf: TypeError,
    message: /"log" option must be a boolean, 'text', 'json' or a function\. Received type string \('xml'\)/,
  });
  t.throws(() => new BlockingDetector({ onBlocked: 'x' }), {
    instanceOf: TypeError,
    message: /"onBlocked" option must be a function/,
  });
  for (const log of [true, false, 'text', 'json', () => {}]) t.is(new BlockingDetector({ log }).log, log);
});

test('microtaskInterruptAfter and onInterrupt are validated', (t) => {
  t.is(new BlockingDetector().microtaskInterruptAfter, 5);
  t.is(new BlockingDetector({ microtaskInterruptAfter: false }).microtaskInterruptAfter, false);
  t.is(new BlockingDetector({ microtaskInterruptAfter: 1 }).microtaskInterruptAfter, 1);
  for (const bad of [0, 0.5, 1001, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new BlockingDetector({ microtaskInterruptAfter: bad }), {
      instanceOf: RangeError,
      message: /"microtaskInterruptAfter" option must be from 1 to 1000/,
    });
  }
  t.throws(() => new BlockingDetector({ microtaskInterruptAfter: true }), {
    instanceOf: TypeError,
    message: /Received type boolean/,
  });
  t.throws(() => new BlockingDetector({ onInterrupt: 1 }), {
    instanceOf: TypeError,
    message: /"onInterrupt" option must be a function/,
  });
});

test('logRepeatsAfterMs: milliseconds from 0 to a day; 0 (no budget) by default', (t) => {
  t.is(new BlockingDetector().logRepeatsAfterMs, 0);
  t.is(new BlockingDetector({ logRepeatsAfterMs: 60_000 }).logRepeatsAfterMs, 60_000);
  for (const bad of [-1, 86_400_001, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new BlockingDetector({ logRepeatsAfterMs: bad }), {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: new RegExp(
        `^The "logRepeatsAfterMs" option must be a number of milliseconds from 0 to 86400000\\. Received ${String(bad).replace('.', '\\.')}$`,
      ),
    });
  }
  t.throws(() => new BlockingDetector({ logRepeatsAfterMs: '60s' }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: `The "logRepeatsAfterMs" option must be a number of milliseconds. Received type string ('60s')`,
  });
});

test("interrupt: only 'everywhere' or 'guarded'; the default is 'everywhere'", (t) => {
  t.is(new BlockingDetector().interrupt, 'everywhere');
  t.is(new BlockingDetector({ interrupt: 'guarded' }).interrupt, 'guarded');
  t.throws(() => new BlockingDetector({ interrupt: 'always' }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_VALUE',
    message: `The "interrupt" option must be 'everywhere' or 'guarded'. Received type string ('always')`,
  });
});

test('an unknown option key is refused, naming it', (t) => {
  t.throws(() => new BlockingDetector({ timout: 1 }), {
    instanceOf: TypeError,
    message:
      'Unknown BlockingDetector option "timout". Known options: timeout, raiseExc, interrupt, aggressive, log, onBlocked, onInterrupt, microtaskInterruptAfter, logRepeatsAfterMs, asyncContext, asyncContextKeys, nameSyncCalls',
  });
});

test('mixing an options object with positional arguments, or too many arguments, is refused', (t) => {
  t.throws(() => new BlockingDetector({ timeout: 1 }, false), { instanceOf: TypeError });
  t.throws(() => new BlockingDetector(1, false, true, 'extra'), {
    instanceOf: TypeError,
    message: /at most 3 positional arguments/,
  });
});

test('start() returns the detector, stop() and Symbol.dispose stop it', (t) => {
  const d = new BlockingDetector({ timeout: 5, raiseExc: false });
  t.is(d.start(), d);
  t.true(d.running);
  d[Symbol.dispose]();
  t.false(d.running);
  d.stop();
  t.false(d.running);
});

test('capabilities() reports stack capture (self-tested) and interrupts everywhere on this Node.js', (t) => {
  const c = capabilities();
  t.true(c.stackCapture, JSON.stringify(c));
  t.true(c.interrupt);
  // Node 20/22 repair the async-id stack through process.binding('async_wrap'), 24+ through
  // Node's uncaught-exception path: unguarded code is interruptible on every supported version.
  t.true(c.interruptUnguarded, JSON.stringify(c));
  t.is(c.reasons.interruptUnguarded, undefined);
  t.is(c.fork, process.platform === 'linux', JSON.stringify(c));
  if (process.platform === 'linux') t.is(c.reasons.fork, undefined);
  else t.regex(c.reasons.fork, /Linux only/);
  t.is(c.reasons.stackCapture, undefined);
  t.is(c.reasons.interrupt, undefined);
});
