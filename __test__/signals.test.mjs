// The detector's deadline signal reaches nobody else (issue 11): on Linux it is a timer aimed at the
// monitor thread alone. Each scenario runs in its own Node.js process (fixtures/signals.cjs) with
// detectors of a 20-50 ms timeout, so that the monitor's timer fires often, while the loop blocks.
import { existsSync } from 'node:fs';
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const run = (name, options = {}) =>
  runNode([fixture('signals.cjs'), name, JSON.stringify(options)], { timeoutMs: 30_000 });

// Serial: the utilisation measurement needs a machine that is not also running the other tests'
// blocks. Linux only: elsewhere the deadline is the process-wide interval timer (see alarm.rs).
const linux = process.platform === 'linux' ? test.serial : test.skip;

const exitedCleanly = (t, r) => {
  t.false(r.timedOut, 'the scenario finished in time');
  t.is(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  t.is(r.code, 0, r.stderr);
};

linux("a detector in a Worker never interrupts the main thread's idle wait", async (t) => {
  const r = await run('elu-worker', { ms: 1000 });
  exitedCleanly(t, r);
  const { baseline, withWorkerDetector, workerEvents } = r.result;
  t.log(
    `main thread utilisation idle: ${baseline.toFixed(4)} alone, ${withWorkerDetector.toFixed(4)} beside the Worker's detector`,
  );
  t.true(workerEvents > 0, "the Worker's detector saw its blocks");
  // Each interrupted epoll_wait is dropped from libuv's idle time: 0.9 when our signal landed here.
  t.true(withWorkerDetector < 0.2, `utilisation ${withWorkerDetector}`);
});

linux('SIGALRM listeners can come and go while a detector runs, and never get its signal', async (t) => {
  const r = await run('listeners', { ms: 1000 });
  exitedCleanly(t, r); // not "Alarm clock" (142) when the last listener goes
  t.true(r.result.toggles > 50, `${r.result.toggles} listener changes`);
  t.true(r.result.events > 5, `${r.result.events} blocks detected`);
  t.is(r.result.stray, 0, 'a listener got a SIGALRM nobody sent it');
});

linux('every SIGALRM the application sends reaches its listener exactly once', async (t) => {
  const r = await run('kills', { fromMain: 60, fromWorker: 60 });
  exitedCleanly(t, r);
  t.is(r.result.lost, 0, `${r.result.lost} never arrived`);
  t.is(r.result.received, r.result.sent);
  t.is(r.result.sent, 121);
  t.true(r.result.events > 0, 'the detector ran and detected blocks meanwhile');
});

linux('the same without a detector (the reference the test above compares with)', async (t) => {
  const r = await run('kills', { fromMain: 20, fromWorker: 20, detector: false });
  exitedCleanly(t, r);
  t.is(r.result.received, r.result.sent);
});

linux('two copies of the addon in one process each detect, and neither crashes', async (t) => {
  const blocks = 6;
  const r = await run('two-copies', { blocks });
  exitedCleanly(t, r);
  t.true(r.result.separate, 'two separate front-ends and addon instances');
  // Each 120 ms block is longer than both timeouts (50 and 30 ms): each copy reports every one.
  t.is(r.result.first.length, blocks);
  t.is(r.result.second.length, blocks);
  t.is(r.result.received, blocks, "the application's own SIGALRMs arrive once each");
});

const prlimit = ['/usr/bin/prlimit', '/bin/prlimit'].find((p) => existsSync(p));
(prlimit && process.platform === 'linux' ? test.serial : test.skip)(
  `with the user's queued signals at their limit (RLIMIT_SIGPENDING 0) blocks are detected and the process lives${prlimit ? '' : ' (skipped: no prlimit here)'}`,
  async (t) => {
    const r = await runNode(['--sigpending=0', process.execPath, fixture('signals.cjs'), 'sigpending-limit', '{}'], {
      node: prlimit,
      timeoutMs: 30_000,
    });
    // Before: the first wake-up arrived without its information, was handed back to the process
    // as a foreign SIGALRM, and the process died of it ("Alarm clock", signal SIGALRM).
    exitedCleanly(t, r);
    t.true(r.result.events >= 18, `${r.result.events} of 20 blocks of 60 ms at a 20 ms timeout`);
    t.is(r.result.forwarded, 0, 'a wake-up of ours was handed back as foreign');
  },
);
