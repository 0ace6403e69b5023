// Many detectors on one loop share one look at the loop per monitor cycle and one stack sample per
// deadline: 2,000 of them still measure a block as it was, each with the blocking code's stack.
// (How close, and the idle CPU they cost, are targets of `npm run bench`: bench/cases/many-detectors.mjs.)
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

test.serial(
  '2,000 detectors on one loop each report a 200 ms block with its stack, without stretching it',
  async (t) => {
    const r = await runNode([fixture('many-detectors.cjs'), '2000', '0.1', '200'], { timeoutMs: 60_000 });
    t.false(r.timedOut, r.stderr);
    t.is(r.code, 0, r.stderr);
    const { spin, reported } = r.result;
    t.is(reported.length, 2000);
    // The spin is the spin: stack samples for 2,000 watches did not stretch it (each taking its
    // own sample made it 1.5 s at 1,500 detectors, and endless at 2,000).
    // What the thread did during the spin beyond spinning: the stack samples and deliveries for
    // 2,000 watches (each taking its own sample made a 200 ms spin 1.5 s at 1,500 detectors, and
    // endless at 2,000). Measured as the thread's own CPU time where it can be read, which time
    // spent waiting for a CPU on a loaded machine does not inflate; else as wall time.
    const spent = spin.cpuMs ?? spin.durationMs;
    t.true(spent < 400, `the 200 ms spin took ${spent} ms (${spin.cpuMs === null ? 'wall' : 'CPU'})`);
    const spinEnd = spin.startHrtimeMs + spin.durationMs;
    let withStack = 0;
    for (const [i, events] of reported.entries()) {
      // The spin's block: it started before the spin and ended after it (to the microsecond: both
      // are read from the same clock, rounded apart).
      const block = events.find(
        (e) => e.startHrtimeMs <= spin.startHrtimeMs + 0.001 && e.startHrtimeMs + e.durationMs >= spinEnd - 0.001,
      );
      t.truthy(block, `detector ${i} did not report the spin: ${JSON.stringify(events)}`);
      if (!block) break;
      t.true(
        block.durationMs < spin.durationMs + 200,
        `detector ${i}: ${block.durationMs} ms for a ${spin.durationMs} ms spin`,
      );
      // The sample can land in a builtin the spin calls (process.hrtime's getter): look below it.
      if (block.top.includes('spinInTimer')) withStack++;
    }
    t.is(withStack, 2000, "every detector got the blocking code's stack");
  },
);
