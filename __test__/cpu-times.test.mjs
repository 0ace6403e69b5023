// The code, or the machine? BlockEvent.cpuMs / cpuWaitMs, and interrupts of guarded code whose
// thread waits for a CPU rather than runs. Real blocks in child processes (fixtures/cpu-times.cjs);
// where a CPU must be shared, the child and a busy-loop process are pinned to one CPU (taskset).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import test from 'ava';

import { fixture, runNode } from './helpers/run.mjs';

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const linux = process.platform === 'linux';
const taskset = ['/usr/bin/taskset', '/bin/taskset'].find((p) => existsSync(p));
/** The first CPU this process may run on. */
const firstCpu = () => /Cpus_allowed_list:\s*(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';

const run = (name, pin) =>
  runNode(pin ? ['-c', pin, process.execPath, fixture('cpu-times.cjs'), name] : [fixture('cpu-times.cjs'), name], {
    node: pin ? taskset : process.execPath,
    timeoutMs: 40_000,
    env: { LOOP_HELPERS_DIST: dist },
  });

/**
 * Runs `fn` while a busy-loop process holds CPU `cpu`: from the moment the loop spins, which the
 * process says on stdout (a fixed wait was not enough: on a loaded machine Node took longer to
 * start, and the "starved" code ran with the CPU to itself).
 */
async function beside(cpu, fn) {
  const hog = spawn(taskset, ['-c', cpu, process.execPath, '-e', 'process.stdout.write("spinning\\n"); for (;;);'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  try {
    await new Promise((resolve, reject) => {
      hog.stdout.once('data', resolve);
      hog.once('error', reject);
      hog.once('exit', (code, signal) => reject(new Error(`the busy loop exited first (${code ?? signal})`)));
    });
    return await fn();
  } finally {
    hog.kill('SIGKILL');
  }
}

test('a block that computes uses the CPU for it; one that sleeps in a system call does not', async (t) => {
  const r = await run('spin-and-sleep');
  t.is(r.code, 0, r.stderr);
  const [spun, slept] = r.result.events;
  t.is(r.result.events.length, 2, JSON.stringify(r.result.events));
  for (const e of [spun, slept]) {
    t.is(typeof e.cpuMs, 'number');
    t.true(e.cpuMs >= 0 && e.cpuMs <= e.durationMs + 5, JSON.stringify(e));
    if (linux) t.is(typeof e.cpuWaitMs, 'number');
    else t.is(e.cpuWaitMs, null);
  }
  // However loaded the machine, a thread in Atomics.wait uses (next to) no CPU, and a spinning one
  // some.
  t.true(slept.cpuMs < slept.durationMs / 2, JSON.stringify(slept));
  t.true(spun.cpuMs > slept.cpuMs, JSON.stringify({ spun, slept }));
});

// One at a time: each pins a busy loop to the same CPU, and two of them together would starve each
// other's children beyond what the case means to set up.
const pinned = linux && taskset ? test.serial : test.skip;

pinned('a thread sharing its CPU with a busy loop: the wait is counted and the closing line says so', async (t) => {
  const cpu = firstCpu();
  const r = await beside(cpu, () => run('shared-cpu', cpu));
  t.is(r.code, 0, r.stderr);
  const [e] = r.result.events;
  t.is(r.result.events.length, 1, JSON.stringify(r.result.events));
  // Two runnable threads on one CPU take turns: about half of the block each.
  t.true(e.cpuWaitMs >= e.durationMs * 0.2, JSON.stringify(e));
  t.true(e.cpuMs + e.cpuWaitMs <= e.durationMs + 10, JSON.stringify(e));
  const [end] = r.result.endText;
  if (e.cpuWaitMs * 4 >= e.durationMs) t.regex(end, /; the thread waited [\d.]+ s of it for a CPU \(the machine/);
  else t.notRegex(end, /for a CPU/);
});

pinned('guarded code whose thread waits for a CPU is not interrupted; a guarded spin still is', async (t) => {
  const cpu = firstCpu();
  const r = await beside(cpu, () => run('starved-guard', cpu));
  t.is(r.code, 0, r.stderr);
  const { starved, spun, events } = r.result;
  // 6 ms of CPU at the lowest priority beside a busy loop take far longer than the 100 ms timeout.
  t.true(starved.wallMs > 150, JSON.stringify(starved));
  t.false(starved.interrupted, JSON.stringify({ starved, events }));
  t.true(spun.interrupted, JSON.stringify(spun));
  // The starved block was reported all the same, as mostly waiting for the CPU.
  const waited = events.find((e) => e.cpuWaitMs > e.durationMs / 2);
  t.truthy(waited, JSON.stringify(events));
});

pinned('unguarded code is interrupted by its own time, not by time its thread waited for a CPU', async (t) => {
  const cpu = firstCpu();
  const r = await beside(cpu, () => run('starved-unguarded', cpu));
  t.is(r.code, 0, r.stderr);
  const { endless, starved } = r.result;
  // A timer callback that spins for ever is interrupted, and never finishes.
  t.deepEqual(
    endless.interrupts.map((i) => i.name),
    ['AlarmInterrupt'],
    JSON.stringify(r.result),
  );
  t.is(endless.finishedAfterMs, null);
  // 90 ms of CPU taking turns with the busy loop: the turn outlasts the 100 ms timeout (twice
  // over at a third of the CPU), but the code's own time does not, and it runs to its end.
  t.true(starved.finishedAfterMs > 100, JSON.stringify(r.result));
  t.deepEqual(starved.interrupts, [], JSON.stringify(r.result));
});

pinned("a promise reaction's grace does not count time its thread waited for a CPU", async (t) => {
  const cpu = firstCpu();
  const r = await beside(cpu, () => run('starved-reaction', cpu));
  t.is(r.code, 0, r.stderr);
  const { short, endless } = r.result;
  // 120 ms of CPU, taking turns with the busy loop: the turn outlasts the 200 ms grace...
  t.true(short.wallMs > 200, JSON.stringify(r.result));
  // ...but the reaction's own time does not, and nothing is dropped.
  t.deepEqual(short.interrupts, [], JSON.stringify(r.result));
  t.is(short.later.length, 2, JSON.stringify(short));
  t.is(short.later[1], 'other reaction');
  // A reaction that spins for ever is still interrupted, and its neighbour dropped.
  t.deepEqual(endless.interrupts, [{ name: 'AlarmInterrupt', lost: true }], JSON.stringify(r.result));
  t.deepEqual(endless.later, []);
});

pinned('assertNoBlocking does not blame code for time its thread waited for a CPU', async (t) => {
  const cpu = firstCpu();
  const r = await beside(cpu, () => run('starved-assert', cpu));
  t.is(r.code, 0, r.stderr);
  const { starved, blocking } = r.result;
  // 2 ms of CPU at the lowest priority beside a busy loop take far longer than the 50 ms budget.
  t.true(starved.wallMs > 100, JSON.stringify(starved));
  t.true(starved.passed, JSON.stringify(starved));
  // 200 ms of CPU once the priority is back is still the code's own block.
  t.deepEqual(blocking, { passed: false, name: 'BlockingError' });
});
