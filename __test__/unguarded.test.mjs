// Interrupting blocking code outside run()/wrap(), in every context, on the main thread and in a
// Worker: the block ends, the process recovers (timers, I/O and HTTP work, nothing spins), and the
// error reaches onInterrupt, 'uncaughtException', or Node's default handler.
import { createRequire } from 'node:module';
import test from 'ava';
import { fixture, limiter, runNode as runNodeNow } from './helpers/run.mjs';

const { capabilities } = createRequire(import.meta.url)('../dist/index.js');
const caps = capabilities();
const major = Number(process.versions.node.split('.')[0]);
// Every supported Node.js interrupts unguarded code (20/22 repair Node's async-id stack through
// process.binding('async_wrap'), 24+ through Node's uncaught-exception path). Should a build lack
// what that needs, capabilities() says so and only the guarded contexts apply.
const unguardedSupported = caps.interruptUnguarded;
const unguardedSkip = `unguarded code is not interruptible here: ${caps.reasons.interruptUnguarded}`;
// Contexts a callback guard covers (interruptible even where unguarded code is not).
const guardedContexts = new Set(['queueMicrotask']);

// Each case runs a child that blocks for about 0.1 s and then mostly waits (timers, I/O, an idle
// CPU reading): about 0.5 s of CPU in 1.9 s. Three at a time, not one: none of their checks is
// timed closely enough for the other children to matter, and the file, a long chain of waits (67 s
// at two at a time), no longer outlasts the rest of the suite's run. The one case that is timed
// closely runs alone (test.serial).
const threeAtATime = limiter(3);
const runNode = (args, options) => threeAtATime(() => runNodeNow(args, options));

const run = (context, options = {}) =>
  runNode([fixture('unguarded.cjs'), context, JSON.stringify({ handler: 'onInterrupt', ...options })], {
    timeoutMs: 20_000,
  });

const everythingWorks = ['timer', 'immediate', 'tick', 'promise', 'fs', 'http 200 ok'];

/** What each context keeps or loses, beyond the common checks. */
const specifics = {
  setInterval: (t, r) =>
    t.true(r.later.includes('interval 2') && r.later.includes('interval 3'), 'the interval keeps its schedule'),
  setImmediate: (t, r) =>
    t.deepEqual(
      r.later.filter((l) => l.startsWith('immediate')),
      ['immediate before', 'immediate after'],
    ),
  'setImmediate, first of its batch': (t, r) =>
    t.deepEqual(
      r.later.filter((l) => l.startsWith('immediate')),
      ['immediate after 1', 'immediate after 2'],
      'the rest of the batch runs, in order',
    ),
  'setInterval created before start()': (t, r) =>
    t.true(r.later.includes('interval 2') && r.later.includes('interval 3'), 'the interval keeps its schedule'),
  'setTimeout, among others due': (t, r) =>
    t.deepEqual(
      r.later.filter((l) => l.startsWith('timer')),
      ['timer before', 'timer after'],
      'the other timers of the list run',
    ),
  nextTick: (t, r) => t.true(r.later.includes('next tick')),
  queueMicrotask: (t, r) => t.true(r.later.includes('next microtask')),
  'Promise.then': (t, r) => {
    t.true(r.interrupts[0].lost, 'the error says continuations were lost');
    t.false(r.later.includes('other reaction (dropped by V8)'));
  },
  'await in setTimeout': (t, r) => t.true(r.interrupts[0].lost, 'the error says continuations were lost'),
  'await in http handler': (t, r) => {
    t.true(r.interrupts[0].lost);
    t.true(r.later.includes('spin request: no response'), 'an interrupted handler never answers');
  },
  'http handler': (t, r) => t.true(r.later.includes('spin request: no response')),
  'CommonJS top level': (t, r) => t.false(r.later.includes('rest of the module ran')),
};

// Inside an AsyncResource scope, an Immediate's batch recovers as it does without one.
specifics['runInAsyncScope in setImmediate'] = specifics.setImmediate;
specifics['runInAsyncScope in setImmediate, first of its batch'] = specifics['setImmediate, first of its batch'];

function assertRecovered(t, r, context) {
  t.false(r.timedOut, 'the process did not wedge');
  t.is(r.signal, null, r.stderr);
  const res = r.result;
  t.truthy(res, `no RESULT; stderr: ${r.stderr}`);
  t.is(res.interrupts.length, 1, JSON.stringify(res));
  const [i] = res.interrupts;
  t.is(i.name, 'AlarmInterrupt');
  t.is(i.message, 'blocking detected after timeout=0.1');
  t.is(i.top, 'spinForever');
  t.true(i.stackNamesSpin);
  t.false(res.later.includes('finally inside the blocking code ran'), 'no finally inside the blocking code runs');
  t.deepEqual(res.ran, everythingWorks);
  t.true(res.idleCpuMs < 150, `nothing spins afterwards: ${res.idleCpuMs} ms CPU in 300 ms`);
  if (res.stores) t.deepEqual(res.stores, ['timer', 'fs', 'promise', 'await', 'none'], 'AsyncLocalStorage stores');
  specifics[context]?.(t, res);
}

for (const context of [
  'setTimeout',
  'setInterval',
  'setImmediate',
  'setImmediate, first of its batch',
  'setTimeout, among others due',
  'setTimeout created before start()',
  'setInterval created before start()',
  'nextTick',
  'Promise.then',
  'queueMicrotask',
  'await in setTimeout',
  'await in http handler',
  'http handler',
  'fs callback',
  'EventEmitter',
  'CommonJS top level',
]) {
  const supported = unguardedSupported || guardedContexts.has(context);
  const maybe = supported ? test : test.skip;
  maybe(
    `main thread, ${context}: interrupted, and the process recovers${supported ? '' : ` (${unguardedSkip})`}`,
    async (t) => {
      const r = await run(context);
      t.is(r.code, 0, r.stderr);
      assertRecovered(t, r, context);
    },
  );
  maybe(`Worker, ${context}: interrupted, the Worker recovers, the main thread is untouched`, async (t) => {
    const r = await run(context, { worker: true });
    t.is(r.code, 0, r.stderr);
    t.true(r.result?.inWorker, r.stderr);
    t.true(r.result.mainTicks >= 20, `main thread interval ran ${r.result.mainTicks} times`);
    t.regex(r.stdout, /WORKER EXIT 0/);
    assertRecovered(t, r, context);
  });
}

// Termination fuzz: more callback sources of Node's own (main thread; the Worker variants of the
// contexts above cover the same machinery there). Each is interrupted, the error delivered, and the
// process goes on as in every other context.
for (const context of [
  'zlib callback',
  'crypto callback',
  'dns callback',
  "stream 'data' listener",
  "http 'upgrade' listener",
  "process.on('SIGINT') listener",
  'FinalizationRegistry callback',
]) {
  const maybe = unguardedSupported ? test : test.skip;
  maybe(
    `main thread, ${context}: interrupted, and the process recovers${unguardedSupported ? '' : ` (${unguardedSkip})`}`,
    async (t) => {
      const r = await run(context);
      t.is(r.code, 0, r.stderr);
      assertRecovered(t, r, context);
    },
  );
}

// A block inside an async_hooks callback is never interrupted: Node calls hooks in the middle of its
// own bookkeeping (here a Timeout counted but not yet scheduled), and treats a hook that throws as
// fatal. Its block is only reported.
test('main thread, async_hooks init callback: reported, never interrupted', async (t) => {
  const r = await run('async_hooks init callback', { log: 'text' });
  t.is(r.code, 0, r.stderr);
  t.truthy(r.result, `no RESULT; stderr: ${r.stderr}`);
  t.deepEqual(r.result.interrupts, []);
  t.deepEqual(r.result.later, ['init hook finished', 'timer of that init ran']);
  t.deepEqual(r.result.ran, everythingWorks);
  t.regex(r.stderr, /BlockingWarning: blocking detected after timeout=0\.1/);
});

// When a block that is never interrupted (here in an async_hooks hook) ends, the next code of the
// same turn is not interrupted by a request made before it had blocked for a timeout: only code
// that was still running since the previous look is. The one that spins forever is, as itself.
test('main thread, after a block in an async_hooks hook, the next timer of the turn is not the one interrupted', async (t) => {
  const context = 'async_hooks init callback, then other timers of that turn';
  const r = await run(context, { log: 'text' });
  assertRecovered(t, r, context);
  t.deepEqual(r.result?.later.slice(0, 2), ['init hook finished', 'bounded timer after the hook finished']);
  t.true(r.result?.later.includes('timer of that init ran'));
});

// An Immediate created before the detector started. On Node 20 and 22 the precise async-id repair
// (process.binding('async_wrap'), gone in 24) hands the timer repair every resource the interrupted
// code entered, the Immediate among them: it is interrupted and repaired like any other. On 24+ the
// repair knows an Immediate only from the recorder on its prototype, which never sees this one
// start, and unrepaired Node could not go on: its block is only reported.
const earlyImmediateRepaired = major <= 22;
const onlyBefore24 = earlyImmediateRepaired
  ? ''
  : ` (skipped: Node.js ${major} has no process.binding('async_wrap'), so the repair finds Immediates by its recorder)`;
const onlyFrom24 = earlyImmediateRepaired
  ? ` (skipped: Node.js ${major} repairs through process.binding('async_wrap'), which finds every Immediate)`
  : '';
for (const worker of [false, true]) {
  const where = worker ? 'Worker' : 'main thread';
  (earlyImmediateRepaired ? test : test.skip)(
    `${where}, setImmediate created before start(): interrupted, and the rest of its batch runs (Node 20/22)${onlyBefore24}`,
    async (t) => {
      const context = 'setImmediate created before start(), then another';
      const r = await run(context, { worker });
      assertRecovered(t, r, context);
      t.true(r.result.later.includes('the next immediate of its batch ran'), JSON.stringify(r.result));
    },
  );
  (earlyImmediateRepaired ? test.skip : test)(
    `${where}, setImmediate created before start(): reported, never interrupted (Node 24+)${onlyFrom24}`,
    async (t) => {
      const r = await run('setImmediate created before start()', { worker, log: 'text' });
      t.is(r.code, 0, r.stderr);
      t.is(r.signal, null, r.stderr);
      t.truthy(r.result, `no RESULT; stderr: ${r.stderr}`);
      t.deepEqual(r.result.interrupts, []);
      t.true(r.result.later.includes('early immediate finished'));
      t.deepEqual(r.result.ran, everythingWorks);
      t.regex(r.stderr, /BlockingWarning: blocking detected after timeout=0\.1/);
    },
  );
}

// AsyncLocalStorage: through async hooks on 20 and 22 (and 24+ with --no-async-context-frame),
// through AsyncContextFrame on 24+ (and 22 with --experimental-async-context-frame).
const alsModes = [['default', []]];
if (major === 22) alsModes.push(['AsyncContextFrame', ['--experimental-async-context-frame']]);
if (major >= 24) alsModes.push(['async hooks', ['--no-async-context-frame']]);
for (const [mode, flags] of alsModes) {
  for (const context of [
    'setTimeout',
    'nextTick',
    'Promise.then',
    'await in setTimeout',
    'await in http handler',
    'fs callback',
    'EventEmitter',
    'CommonJS top level',
  ]) {
    const supported = unguardedSupported || guardedContexts.has(context);
    const maybe = supported ? test : test.skip;
    maybe(
      `AsyncLocalStorage (${mode}), ${context}: interrupted, recovers, later callbacks see their own stores`,
      async (t) => {
        const r = await runNode(
          [...flags, fixture('unguarded.cjs'), context, JSON.stringify({ handler: 'onInterrupt', als: true })],
          {
            timeoutMs: 20_000,
          },
        );
        t.is(r.code, 0, r.stderr);
        assertRecovered(t, r, context);
        t.truthy(r.result.stores);
      },
    );
  }
}

// Async hooks of the application's own, and AsyncResource scopes: JavaScript pushes async-id levels
// that the interrupted code never pops. In Immediate callbacks, the rest of the batch still runs.
for (const context of [
  'runInAsyncScope in fs callback',
  'runInAsyncScope in setImmediate',
  'runInAsyncScope in setImmediate, first of its batch',
  'Promise.then with async hooks',
]) {
  (unguardedSupported ? test : test.skip)(`${context}: interrupted, and the process recovers`, async (t) => {
    const r = await run(context);
    t.is(r.code, 0, r.stderr);
    assertRecovered(t, r, context);
  });
}

// Code that keeps moving: an `await` loop of 30 ms steps under async hooks. Looks one timeout apart
// never see the same callback (each resumption has its own async id), and the rule that spares code
// started after the previous look must not spare it for ever: it applies once per block.
(unguardedSupported ? test : test.skip)(
  'an await loop of short steps that never ends, under async hooks: interrupted, and the process recovers',
  async (t) => {
    const r = await run('await loop of short steps with async hooks');
    t.is(r.code, 0, r.stderr);
    t.false(r.timedOut, 'the loop was stopped');
    const res = r.result;
    t.truthy(res, `no RESULT; stderr: ${r.stderr}`);
    t.is(res?.interrupts.length, 1, JSON.stringify(res));
    t.is(res?.interrupts[0].name, 'AlarmInterrupt');
    t.deepEqual(res?.ran, everythingWorks);
    t.true(res?.idleCpuMs < 150, `nothing spins afterwards: ${res?.idleCpuMs} ms CPU in 300 ms`);
  },
);

const unguardedTest = unguardedSupported ? test : test.skip;

unguardedTest('ES module top level: interrupted, the rest of the module is skipped, the process exits 0', async (t) => {
  const r = await runNode([fixture('unguarded-esm.mjs')], { timeoutMs: 20_000 });
  t.false(r.timedOut);
  t.is(r.code, 0, r.stderr);
  t.is(r.result.interrupts.length, 1);
  t.is(r.result.interrupts[0].top, 'spinForever');
  t.deepEqual(r.result.later, []);
  t.true(r.result.idleCpuMs < 150);
});

unguardedTest(
  'ES module entry whose promise reaction is interrupted: the process ends normally, exit code 0',
  async (t) => {
    const r = await runNode([fixture('unguarded-esm-reaction.mjs')], { timeoutMs: 20_000 });
    t.false(r.timedOut);
    t.is(r.code, 0, r.stderr);
    t.is(r.result.interrupts.length, 1);
    t.is(r.result.interrupts[0].top, 'spinForever');
    t.true(r.result.interrupts[0].lost);
    t.deepEqual(r.result.later, ['rest of the module ran']);
    t.true(r.result.idleCpuMs < 150);
  },
);

unguardedTest('ES module top level in a Worker: interrupted, the Worker ends normally', async (t) => {
  const r = await runNode([fixture('esm-worker.cjs')], { timeoutMs: 20_000 });
  t.false(r.timedOut);
  t.is(r.code, 0, r.stderr);
  t.is(r.result.interrupts.length, 1);
  t.deepEqual(r.result.later, []);
  const m = /WORKER EXIT (\d+) MAIN TICKS (\d+)/.exec(r.stdout);
  t.is(m?.[1], '0', r.stdout);
  t.true(Number(m?.[2]) >= 20);
});

test("detector.on('interrupt') listeners get the error", async (t) => {
  const r = await run('setTimeout', { handler: 'listener' });
  t.is(r.code, 0, r.stderr);
  assertRecovered(t, r, 'setTimeout');
});

test("without onInterrupt, process.on('uncaughtException') gets the error", async (t) => {
  const r = await run('setTimeout', { handler: 'uncaughtException' });
  t.is(r.code, 0, r.stderr);
  assertRecovered(t, r, 'setTimeout');
});

test('with no handler at all, Node prints the error with the blocking stack and exits 1', async (t) => {
  const r = await run('setTimeout', { handler: 'none' });
  t.false(r.timedOut);
  t.is(r.code, 1);
  t.regex(
    r.stderr,
    /AlarmInterrupt: blocking detected after timeout=0\.1\n {4}at spinForever \(.*unguarded\.cjs:\d+:\d+\)/,
  );
  t.is(r.result, undefined);
});

(unguardedSupported ? test.serial : test.skip)(
  'a promise reaction is interrupted only after microtaskInterruptAfter timeouts',
  async (t) => {
    // Blocks for 150 ms with a grace of 2 x 0.1 s: it ends by itself, nothing is dropped.
    const short = await run('bounded Promise.then', { spinMs: 150 });
    t.is(short.code, 0, short.stderr);
    t.deepEqual(short.result.interrupts, []);
    t.deepEqual(short.result.later, ['bounded reaction finished', 'other reaction']);
    // microtaskInterruptAfter: false never interrupts one, even a long block.
    const never = await run('bounded Promise.then', { spinMs: 600, microtaskInterruptAfter: false });
    t.deepEqual(never.result.interrupts, []);
    t.deepEqual(never.result.later, ['bounded reaction finished', 'other reaction']);
    // 600 ms with a grace of 2 x 0.1 s: interrupted, and the error and the log say what was lost.
    const long = await run('bounded Promise.then', { spinMs: 600, log: 'text' });
    t.is(long.result.interrupts.length, 1);
    t.true(long.result.interrupts[0].lost);
    t.deepEqual(long.result.later, []);
    t.regex(
      long.stderr,
      /BlockingWarning: a promise continuation was interrupted: the other promise continuations pending in the same microtask checkpoint were dropped and will never run \(blocked for 0\.[2-5]\d\d s\)/,
    );
  },
);

(unguardedSupported ? test.skip : test)(
  `guards-only fallback: unguarded code is only reported, and the detector says why once${unguardedSupported ? ' (not a fallback here: unguarded code is interruptible on this Node.js)' : ''}`,
  async (t) => {
    const r = await run('bounded Promise.then', { spinMs: 600, log: 'text' });
    t.is(r.code, 0, r.stderr);
    t.deepEqual(r.result.interrupts, []);
    t.deepEqual(r.result.later, ['bounded reaction finished', 'other reaction']);
    t.is(r.stderr.match(/LOOP_HELPERS_GUARDS_ONLY/g)?.length, 1, r.stderr);
  },
);
