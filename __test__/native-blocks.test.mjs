// Blocks outside JavaScript are named (issue 11, "Native blocks"): the Node.js synchronous API the
// thread is inside (marked by the wrappers of lib/sync-api-hooks.ts), or the garbage collection it
// is in (V8's GC callbacks), in the live warning while the block lasts and in the 'blocked' event,
// whose frames include the JavaScript caller (sampled as the call returns). Each block is real, in
// a child process with a time limit (__test__/fixtures/native-blocks.cjs).
import test from 'ava';
import { capabilities } from '../dist/index.js';
import { fixture, runNode } from './helpers/run.mjs';

const caps = capabilities();
const linux = process.platform === 'linux';

/** Runs one block; returns the child's result and its JSON log lines. */
async function block(kind, { mode = 'json', options, flags = [] } = {}) {
  const args = [...flags, fixture('native-blocks.cjs'), kind, mode, ...(options ? [JSON.stringify(options)] : [])];
  const r = await runNode(args, { timeoutMs: 60_000 });
  const lines = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  return { ...r, lines, warnings: lines.filter((l) => l.type === 'BlockingWarning') };
}

const frameNames = (event) => event.samples.flatMap((s) => (s.frames ?? []).map((f) => f.functionName));

const named = caps.syncCallNames && caps.stackCapture ? test.serial : test.skip;

for (const [kind, api] of [
  ['readFileSync', 'fs.readFileSync'],
  ['pbkdf2Sync', 'crypto.pbkdf2Sync'],
  ['scryptSync', 'crypto.scryptSync'],
  ['generateKeyPairSync', 'crypto.generateKeyPairSync'],
  ['execSync', 'child_process.execSync'],
  ['spawnSync', 'child_process.spawnSync'],
  ['gzipSync', 'zlib.gzipSync'],
  ['Atomics.wait', 'Atomics.wait'],
]) {
  named(`a block in ${api} is named in the live warning and the event, whose frames include the caller`, async (t) => {
    const r = await block(kind);
    t.is(r.code, 0, r.stderr);
    t.is(r.warnings.length, 1, r.stderr);
    const [live] = r.warnings;
    t.is(live.syncApi, api, JSON.stringify(live));
    const [event] = r.result.events;
    t.is(event.samples[0].syncApi, api);
    t.true(frameNames(event).includes('callerOfTheBlock'), JSON.stringify(event.samples));
    // The wrappers' own frames are left out of the sample.
    t.false(
      event.samples.some((s) => (s.frames ?? []).some((f) => f.fileName.includes('sync-api-hooks'))),
      JSON.stringify(event.samples),
    );
    if (kind === 'readFileSync' && linux) {
      // readFileSync of a FIFO waits in open() until the writer comes.
      t.regex(live.syscall ?? '', /^(openat|open|read)$/, JSON.stringify(live));
      t.regex(live.syscallFile ?? '', /slow\.fifo$/);
      t.is(live.gc, null);
    }
  });
}

named('text: the warning says which API, which system call and which file', async (t) => {
  const r = await block('readFileSync', { mode: 'text' });
  t.is(r.code, 0, r.stderr);
  const how = linux ? 'native, a system call (openat|open|read) on \\S*slow\\.fifo' : 'native';
  t.regex(
    r.stderr,
    new RegExp(
      `BlockingWarning: blocking detected after timeout=0\\.1; blocked for [\\d.]+ s\\n {4}in fs\\.readFileSync \\(${how}\\)\\n`,
    ),
  );
  // The caller's stack follows while the block lasts, as the call returns.
  t.regex(
    r.stderr,
    /BlockingWarning: the stack of the block above, sampled [\d.]+ s after its warning, where it called fs\.readFileSync\n( {4}at .*\n)* {4}at callerOfTheBlock /,
  );
});

const gcNamed = caps.gcState && caps.stackCapture ? test.serial : test.skip;

/** The kinds a collection is named by (a forced full collection may begin with a scavenge). */
const GC_KINDS = /^(mark-compact|scavenge|minor mark-sweep)$/;

gcNamed('a long garbage collection is named in the live warning and the event', async (t) => {
  const r = await block('gc', { flags: ['--expose-gc'] });
  t.is(r.code, 0, r.stderr);
  t.true(r.result.heap > 0);
  const [live] = r.warnings;
  t.truthy(live, r.stderr);
  if (!live) return;
  t.regex(live.gc ?? '', GC_KINDS, JSON.stringify(live));
  t.true(live.gcMs > 0, JSON.stringify(live));
  t.is(live.syncApi, null);
  const [event] = r.result.events;
  t.regex(event.samples[0].gc ?? '', GC_KINDS);
  // Sampled at the first interrupt check after gc() returned, in the caller.
  t.true(frameNames(event).includes('callerOfTheBlock'), JSON.stringify(event.samples));
});

gcNamed('text: the warning says "in a garbage collection"', async (t) => {
  const r = await block('gc', { mode: 'text', flags: ['--expose-gc'] });
  t.is(r.code, 0, r.stderr);
  t.regex(
    r.stderr,
    /BlockingWarning: blocking detected after timeout=0\.05; blocked for [\d.]+ s\n {4}in a garbage collection \((mark-compact|scavenge|minor mark-sweep), \d+ ms so far\)\n/,
  );
});

named('a function taken before start() is named by the binding below it', async (t) => {
  const r = await block('execSyncTakenEarly');
  t.is(r.code, 0, r.stderr);
  // execSync reaches the spawn_sync binding, which spawnSync shares.
  t.is(r.warnings[0]?.syncApi, 'child_process.spawnSync', r.stderr);
  const names = frameNames(r.result.events[0]);
  t.true(names.includes('execSync') && names.includes('callerOfTheBlock'), names.join(', '));
});

named('a module loaded after start() is wrapped once a block is delivered', async (t) => {
  const r = await block('loadedAfterStart');
  t.is(r.code, 0, r.stderr);
  t.is(r.result.events.length, 2, r.stderr);
  const [first, second] = r.result.events;
  // The first block: its stack still arrives as the call returns.
  t.true(frameNames(first).includes('callerOfTheBlock'));
  t.is(second.samples[0].syncApi, 'crypto.pbkdf2Sync');
  t.is(r.warnings[1]?.syncApi, 'crypto.pbkdf2Sync', r.stderr);
});

named('inside a Worker, a block is named by its own detector', async (t) => {
  const r = await block('worker');
  t.is(r.code, 0, r.stderr);
  const [event] = r.result.events;
  t.true(event.threadId > 0);
  t.is(event.samples[0].syncApi, 'crypto.pbkdf2Sync');
  t.true(frameNames(event).includes('callerOfTheBlock'));
  t.true(
    r.warnings.every((w) => w.threadId === event.threadId && w.syncApi === 'crypto.pbkdf2Sync'),
    r.stderr,
  );
});

const namedInterrupting = caps.syncCallNames && caps.stackCapture && caps.interruptUnguarded ? test.serial : test.skip;

namedInterrupting('after an interrupt inside a wrapped call, the next block is named again', async (t) => {
  const r = await block('interruptedInside');
  t.is(r.code, 0, r.stderr);
  const [first] = r.result.interrupts;
  t.is(first?.name, 'AlarmInterrupt', JSON.stringify(r.result.interrupts));
  if (!first) return;
  // It landed in Node's pbkdf2Sync, after the native job: inside the wrapped call, whose finally
  // the termination skipped.
  t.true(first.frames.includes('pbkdf2Sync'), first.frames.join(', '));
  t.true(first.frames.indexOf('pbkdf2Sync') < first.frames.indexOf('callerOfTheBlock'), first.frames.join(', '));
  t.truthy(
    r.warnings.find((w) => w.syncApi === 'fs.readFileSync'),
    r.stderr,
  );
  t.true(
    r.result.events.some((e) => e.samples[0]?.syncApi === 'fs.readFileSync'),
    JSON.stringify(r.result.events.map((e) => e.samples[0]?.syncApi)),
  );
});

named('the wrappers are in place only while a detector runs; nameSyncCalls: false wraps nothing', async (t) => {
  const on = await block('spawnSync');
  t.is(on.code, 0, on.stderr);
  t.false(on.result.apiIsOriginal, 'wrapped while running');
  t.true(on.result.originalAfterStop, 'the original back after stop()');
  const off = await block('readFileSync', { options: { nameSyncCalls: false } });
  t.is(off.code, 0, off.stderr);
  t.true(off.result.apiIsOriginal);
  t.is(off.warnings[0]?.syncApi, null, off.stderr);
  t.is(off.result.events[0].samples[0].syncApi, null);
});
