// A warning written without a stack (the thread was in native code or a long GC at the deadline)
// gets its stack in a follow-up line while the block lasts, and the event carries it (issue 11).
import test from 'ava';
import { capabilities } from '../dist/index.js';
import { fixture, runNode } from './helpers/run.mjs';

const needsStacks = capabilities().stackCapture ? test : test.skip;

needsStacks('text: the stack of a warning that went out without one follows while the block lasts', async (t) => {
  const r = await runNode([fixture('late-stack.cjs'), 'text'], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  const warning = r.stderr.indexOf('BlockingWarning: blocking detected after timeout=0.1');
  const follow = r.stderr.indexOf('BlockingWarning: the stack of the block above, sampled');
  t.true(warning >= 0, r.stderr);
  t.regex(r.stderr, /no JavaScript stack yet/);
  t.true(follow > warning, r.stderr);
  t.regex(r.stderr.slice(follow), /^ {4}at nativeThenJavaScript \(.*late-stack\.cjs:\d+:\d+\)$/m);
  const [e] = r.result.events;
  t.is(e.samples.length, 1);
  t.is(e.samples[0].missingStack, null);
  t.is(e.samples[0].frames[0].functionName, 'nativeThenJavaScript');
  t.true(e.samples[0].sampleDelayMs > 100, `sampled ${e.samples[0].sampleDelayMs} ms after the warning`);
  t.truthy(e.fingerprint);
});

needsStacks("json: a BlockingStack line follows the warning's, with the same index and the frames", async (t) => {
  const r = await runNode([fixture('late-stack.cjs'), 'json'], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  const lines = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const types = lines.map((l) => l.type);
  t.deepEqual(types, ['BlockingWarning', 'BlockingStack', 'BlockingEnded'], r.stderr);
  t.is(lines[0].frames, null);
  t.is(lines[1].index, lines[0].index);
  t.is(lines[1].frames[0].functionName, 'nativeThenJavaScript');
  t.is(lines[1].startHrtimeMs, lines[0].startHrtimeMs);
  t.is(lines[2].fingerprint, r.result.events[0].fingerprint);
});
