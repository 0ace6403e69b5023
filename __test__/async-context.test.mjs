// asyncContext: the blocked code's AsyncLocalStorage store, read natively in the sampling
// interrupt, in real child processes (a real HTTP server for "which request blocked").
import { AsyncLocalStorage } from 'node:async_hooks';
import test from 'ava';
import { BlockingDetector, capabilities } from '../dist/index.js';
import { fixture, runNode } from './helpers/run.mjs';

const caps = capabilities();
const major = Number(process.versions.node.split('.')[0]);
const run = (name, options = {}, nodeArgs = []) =>
  runNode([...nodeArgs, fixture('async-context.cjs'), name, JSON.stringify(options)], { timeoutMs: 30_000 });

const needsContext = caps.asyncContext ? test.serial : test.serial.skip;
const contextReason = caps.asyncContext ? '' : ` (skipped: ${caps.reasons.asyncContext})`;

/** The block of the spin (a loaded machine may add short blocks of its own). */
const spins = (s) => (s.frames ?? []).some((f) => f.functionName === 'spinHard');
const spinEvent = (r) => r.result.events.find((ev) => ev.samples.some(spins));

/** Checks the event of a block that requestId `id` caused. */
function assertBlockedRequest(t, r, id) {
  t.is(r.code, 0, r.stderr);
  t.deepEqual(
    r.result.bodies,
    Array.from({ length: 5 }, (_, i) => `done ${i}`),
  );
  const e = spinEvent(r);
  t.truthy(e, JSON.stringify(r.result.events));
  const store = { requestId: id, path: `/r?i=${id.slice(4)}`, user: { id: Number(id.slice(4)), roles: ['a', 'b'] } };
  t.is(e.contextMissing, null);
  t.deepEqual(e.context, store);
  t.true(e.samples.filter(spins).length >= 2, 'aggressive: a sample per timeout');
  // Read once per block, at the first sample of the blocked JavaScript; the others have no fields.
  const read = e.samples.filter((s) => 'context' in s);
  t.is(read.length, 1);
  t.true(spins(read[0]));
  t.deepEqual(read[0].context, store);
  t.is(read[0].contextMissing, null);
  return e;
}

needsContext(`the event carries the blocked request's store, not a neighbour's${contextReason}`, async (t) => {
  // Neighbours resume in the same microtask checkpoint just before and after the blocker.
  assertBlockedRequest(t, await run('http', { blocker: 2 }), 'req-2');
  assertBlockedRequest(t, await run('http', { blocker: 4 }), 'req-4');
});

needsContext(`several storages: an array in the option's order, with per-storage keys${contextReason}`, async (t) => {
  const r = await run('http', { blocker: 1, multi: true });
  t.is(r.code, 0, r.stderr);
  const e = spinEvent(r);
  t.is(e.contextMissing, null);
  t.deepEqual(e.context, [
    { requestId: 'req-1', path: '/r?i=1', user: { id: 1, roles: ['a', 'b'] } },
    { tenant: 't-1' },
  ]);
});

needsContext(`asyncContextKeys keeps only the named keys${contextReason}`, async (t) => {
  const r = await run('http', { blocker: 3, detector: { asyncContextKeys: ['requestId', 'absent'] } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(spinEvent(r).context, { requestId: 'req-3' });
});

(major === 22 ? test.serial : test.serial.skip)(
  `Node.js 22 with --experimental-async-context-frame${major === 22 ? '' : ` (skipped: this is Node.js ${major})`}`,
  async (t) => {
    const r = await runNode(
      ['--experimental-async-context-frame', fixture('async-context.cjs'), 'http', JSON.stringify({ blocker: 0 })],
      { timeoutMs: 30_000 },
    );
    t.true(r.result.capabilities.asyncContext, JSON.stringify(r.result.capabilities.reasons));
    assertBlockedRequest(t, r, 'req-0');
  },
);

needsContext(`blocked in the request callback itself: that request's store${contextReason}`, async (t) => {
  // On Node.js 20/22 (async_hooks-based stores) Node enters this level natively: the store is
  // found through the record of als.run(), not through Node's resource array.
  assertBlockedRequest(t, await run('http', { blocker: 3, sync: true }), 'req-3');
});

needsContext(
  `after an interrupt that run() threw, a later block of the same callback has no stale store${contextReason}`,
  async (t) => {
    const r = await run('guarded');
    t.is(r.code, 0, r.stderr);
    t.is(r.result.caught, 'AlarmInterrupt');
    t.is(r.result.runs, 2);
    const blocks = r.result.events.filter((ev) => ev.samples.some(spins));
    t.is(blocks.length, 2, JSON.stringify(r.result.events));
    t.deepEqual(blocks[0].context, { requestId: 'inner' });
    t.is(blocks[1].context, null, 'not the store of the run() the interrupt cut short');
    t.is(blocks[1].contextMissing, null);
  },
);

(major >= 24 ? test.serial : test.serial.skip)(
  `with --no-async-context-frame, context is null and contextMissing says why${major >= 24 ? '' : ` (skipped: Node.js ${major} has the async_wrap binding, where the stores are found)`}`,
  async (t) => {
    const r = await run('http', { blocker: 2 }, ['--no-async-context-frame']);
    t.is(r.code, 0, r.stderr);
    t.false(r.result.capabilities.asyncContext);
    const reason = r.result.capabilities.reasons.asyncContext;
    t.regex(reason, /async_hooks-based .* cannot be found without running JavaScript: .*async_wrap binding/);
    const [e] = r.result.events;
    for (const s of [e, ...e.samples]) {
      t.is(s.context, null);
      t.is(s.contextMissing, reason);
    }
  },
);

needsContext(`the snapshot copies plain values and never runs the store's code${contextReason}`, async (t) => {
  const r = await run('rules');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.calls, [], 'no getter, trap, toJSON or Symbol.toPrimitive ran');
  const c = r.result.events[0].context;
  t.is(r.result.events[0].contextMissing, null);
  t.is(c.requestId, 'rules-1');
  t.is(c.count, 3);
  t.is(c.ok, true);
  t.is(c.nothing, null);
  t.false('skipped' in c, 'undefined is left out, as JSON.stringify does');
  t.is(c.big, String(2n ** 70n));
  t.is(c.when, '2024-01-02T03:04:05.006Z');
  t.deepEqual(c.tags, { '[Set]': ['x', 'y'] });
  t.deepEqual(c.headers, { '[Map]': [['accept', 'json']] });
  t.is(c.secret, '[Getter]');
  t.deepEqual(c.primitive, {}, 'symbol keys are left out');
  t.deepEqual(c.withToJSON, { a: 1, toJSON: '[Function]' });
  t.deepEqual(c.session, { '[class Session]': { id: 's1' } });
  t.is(c.proxy, '[Proxy]');
  t.deepEqual(c.behindProxy, { '[class Object]': { x: 1 } }, 'its proxy prototype is never asked');
  t.deepEqual(c.otherContext, { a: 1, list: [1, 2], when: '1970-01-01T00:00:00.000Z' }, 'plain in any context');
  t.deepEqual(c.otherClass, { '[class Point]': { x: 1 } });
  t.deepEqual(c.cyclic, { name: 'loop', self: '[Circular]' });
  t.deepEqual(c.deep, { level: 1, next: { level: 2, next: { level: 3, next: '[Object]' } } }, 'depth 4');
  t.is(Object.keys(c.many).length, 51);
  t.is(c.many.k49, 49);
  t.is(c.many['[truncated]'], '30 more keys');
  t.is(c.list.length, 51);
  t.is(c.list[50], '[10 more items]');
  t.is(c.fn, '[Function]');
  // 1 KiB of UTF-8: 512 two-byte characters, then the note.
  t.is(c.long, `${'é'.repeat(512)}…[truncated, 512 of 3000 characters]`);
  // JSON-safe as is.
  t.deepEqual(JSON.parse(JSON.stringify(c)), c);
});

test.serial('without asyncContext, events have no context fields', async (t) => {
  const r = await run('off');
  t.is(r.code, 0, r.stderr);
  const [e] = r.result.events;
  t.true(e.samples.length >= 1);
  for (const s of [e, ...e.samples]) {
    t.false('context' in s);
    t.false('contextMissing' in s);
  }
});

needsContext(`blocked inside a native call: contextMissing says why${contextReason}`, async (t) => {
  const r = await run('native');
  t.is(r.code, 0, r.stderr);
  const [e] = r.result.events;
  // No interrupt lands while spawnSync waits; when it finally runs there may be JavaScript of
  // the same request on the stack (then the store is right) or none (then it says so).
  if (e.context === null) t.regex(e.contextMissing, /native code/);
  else t.deepEqual(e.context, { requestId: 'native' });
});

needsContext(`blocked outside any als.run(): context null, no reason${contextReason}`, async (t) => {
  const r = await run('outside');
  t.is(r.code, 0, r.stderr);
  const [e] = r.result.events;
  t.is(e.context, null);
  t.is(e.contextMissing, null);
});

(major <= 22 ? test.serial : test.serial.skip)(
  `async_hooks-based stores: run()/enterWith() are wrapped on the prototype only while read, and another library's wrapper stays${major <= 22 ? '' : ` (skipped: Node.js ${major} keeps stores in AsyncContextFrames; nothing is wrapped)`}`,
  (t) => {
    const proto = AsyncLocalStorage.prototype;
    const own = { run: proto.run, enterWith: proto.enterWith };
    const als = new AsyncLocalStorage();
    const keysBefore = Reflect.ownKeys(als);
    const d = new BlockingDetector({ timeout: 1, raiseExc: false, log: false, asyncContext: als }).start();
    t.not(proto.run, own.run, 'wrapped while read');
    t.is(proto.run.length, own.run.length);
    t.is(proto.enterWith.length, own.enterWith.length);
    t.deepEqual(Reflect.ownKeys(als), keysBefore, 'the instance itself is untouched');
    t.false(Object.getOwnPropertyDescriptor(proto, 'run').enumerable);
    t.is(
      als.run({ a: 1 }, (x, y) => `${als.getStore().a}${x}${y}`, 2, 3),
      '123',
      'arguments and result pass through',
    );
    d.stop();
    t.is(proto.run, own.run, 'put back when nothing is read');
    t.is(proto.enterWith, own.enterWith);
    // Another library wraps run() while a detector reads: after stop() its wrapper stays.
    const d2 = new BlockingDetector({ timeout: 1, raiseExc: false, log: false, asyncContext: als }).start();
    const ours = proto.run;
    const calls = [];
    const theirs = function run(...args) {
      calls.push(args[0]);
      return ours.apply(this, args);
    };
    proto.run = theirs;
    try {
      d2.stop();
      t.is(proto.run, theirs, "the other library's wrapper is not replaced");
      t.is(proto.enterWith, own.enterWith);
      t.is(
        als.run(7, () => als.getStore()),
        7,
      );
      t.deepEqual(calls, [7]);
    } finally {
      proto.run = own.run;
    }
    // A library that wrapped run() before a detector started takes its wrapper off (and ours
    // with it) while the detector runs: the next start wraps again.
    const before = function run(...args) {
      return own.run.apply(this, args);
    };
    proto.run = before;
    const d3 = new BlockingDetector({ timeout: 1, raiseExc: false, log: false, asyncContext: als }).start();
    t.not(proto.run, before);
    proto.run = own.run;
    d3.stop();
    t.is(proto.run, own.run);
    const d4 = new BlockingDetector({ timeout: 1, raiseExc: false, log: false, asyncContext: als }).start();
    t.not(proto.run, own.run, 'wrapped again');
    d4.stop();
    t.is(proto.run, own.run);
  },
);

test('capabilities() reports asyncContext, with a reason when false', (t) => {
  t.is(typeof caps.asyncContext, 'boolean');
  if (caps.asyncContext) t.is(caps.reasons.asyncContext, undefined);
  else t.is(typeof caps.reasons.asyncContext, 'string');
  // Frames on 24+ (and 22 with the flag), Node's async_wrap binding on 20 and 22.
  t.true(caps.asyncContext, caps.reasons.asyncContext);
});

test('bad asyncContext values are refused with errors naming the option and value', (t) => {
  const als = new AsyncLocalStorage();
  const bad = [
    [
      { asyncContext: 'als' },
      TypeError,
      /^The "asyncContext" option must be an AsyncLocalStorage or a \{ storage, keys \} object, or an array of them\. Received type string \('als'\)$/,
    ],
    [{ asyncContext: [] }, TypeError, /^The "asyncContext" option must not be an empty array/],
    [
      { asyncContext: [als, 42] },
      TypeError,
      /^The "asyncContext\[1\]" option must be an AsyncLocalStorage or a \{ storage, keys \} object\. Received 42$/,
    ],
    [
      { asyncContext: { storage: {} } },
      TypeError,
      /^The "asyncContext\.storage" option must be an AsyncLocalStorage\. Received an instance of Object$/,
    ],
    [
      { asyncContext: { storage: als, key: ['a'] } },
      TypeError,
      /^Unknown key "key" in the "asyncContext" option\. Known keys: storage, keys$/,
    ],
    [
      { asyncContext: { storage: als, keys: 'requestId' } },
      TypeError,
      /^The "asyncContext\.keys" option must be an array of non-empty strings\. Received type string/,
    ],
    [
      { asyncContext: als, asyncContextKeys: [1] },
      TypeError,
      /^The "asyncContextKeys" option must be an array of non-empty strings\. Received an instance of Array$/,
    ],
    [
      { asyncContext: als, asyncContextKeys: Array.from({ length: 51 }, (_, i) => `k${i}`) },
      RangeError,
      /^The "asyncContextKeys" option must have at most 50 keys\. Received 51$/,
    ],
    [{ asyncContextKeys: ['requestId'] }, TypeError, /^The "asyncContextKeys" option needs the "asyncContext" option/],
  ];
  for (const [options, type, message] of bad) {
    const e = t.throws(() => new BlockingDetector(options), { instanceOf: type }, JSON.stringify(options));
    t.regex(e.message, message);
    t.regex(e.code, /^ERR_(INVALID_ARG_TYPE|INVALID_ARG_VALUE|OUT_OF_RANGE)$/);
  }
  // Good values are accepted (without starting).
  t.notThrows(
    () => new BlockingDetector({ asyncContext: [als, { storage: als, keys: ['a'] }], asyncContextKeys: ['b'] }),
  );
});
