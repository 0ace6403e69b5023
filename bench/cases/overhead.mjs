// Loop overhead: an empty setImmediate ping-pong (one loop turn per callback, the worst case for
// a per-turn heartbeat) and N timers due at once (a timer-heavy loop), with each detector running,
// in fresh processes, alternated (each round runs every configuration once, in a rotated order)
// because these machines are noisy. Two ratios to no detector: the one judged, of the mean of each
// configuration's fastest third of runs (see fastMean), and the median over rounds of each
// round's run against that round's run without a detector; each with its 95% interval. Besides
// the wall-clock time, the loop thread's own CPU time (Linux: /proc/self/task/<pid>/schedstat),
// which time spent waiting for a CPU on a shared machine does not inflate.
// Child mode: `node overhead.mjs --child <peer|none> <T> <workload> <n>`.
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { fastRatio, median, medianInterval, round, runChild, sized, sleep } from '../lib/stats.mjs';
import { loopThreadCpuNs } from '../lib/turns.mjs';

if (process.argv[2] === '--child') {
  const [, , , peer, T, workload, n] = process.argv;
  if (peer !== 'none') PEERS[peer].start(Number(T), () => {});
  await sleep(50);
  const total = Number(n);
  let i = 0;
  const c0 = loopThreadCpuNs();
  const t0 = process.hrtime.bigint();
  await new Promise((resolve) => {
    if (workload === 'timers') {
      // N timers, scheduled in chunks (one long synchronous loop would itself be a block, which
      // interrupt mode would rightly stop), each callback run by listOnTimeout.
      const cb = () => ++i === total && resolve();
      let scheduled = 0;
      const chunk = () => {
        for (let k = 0; k < 5000 && scheduled < total; k++, scheduled++) setTimeout(cb, 1);
        if (scheduled < total) setImmediate(chunk);
      };
      chunk();
    } else {
      const step = () => (++i < total ? setImmediate(step) : resolve());
      setImmediate(step);
    }
  });
  const ns = Number(process.hrtime.bigint() - t0) / total;
  const c1 = loopThreadCpuNs();
  console.log(JSON.stringify({ ns, cpuNs: c0 === null ? null : (c1 - c0) / total }));
  process.exit(0);
}

export function runOverhead(opts) {
  const { quick } = opts;
  // Many short runs rather than a few long ones: the spread between runs comes mostly from each
  // new process (where its code and heap land), which a longer run does not average out.
  const rounds = sized(opts, 15, 3, 1);
  const n = { 'ping-pong': sized(opts, 400_000, 200_000, 20_000), timers: sized(opts, 500_000, 100_000, 10_000) };
  const configs = [['none', 0]];
  for (const T of quick ? [1] : [0.05, 1]) {
    for (const peer of Object.keys(PEERS)) configs.push([peer, T]);
  }
  const rows = [];
  const self = fileURLToPath(import.meta.url);
  for (const workload of Object.keys(n)) {
    const times = new Map(configs.map((c) => [c.join('@'), []]));
    const cpu = new Map(configs.map((c) => [c.join('@'), []]));
    for (let r = 0; r < rounds; r++) {
      // Every configuration once per round, in an order rotated from round to round, so that none
      // always runs first or right after another.
      for (let k = 0; k < configs.length; k++) {
        const [peer, T] = configs[(k + r) % configs.length];
        const count = PEERS[peer]?.slow ? n[workload] / 10 : n[workload];
        const out = runChild(self, ['--child', peer, String(T), workload, String(count)]);
        times.get(`${peer}@${T}`).push(out.ns);
        cpu.get(`${peer}@${T}`).push(out.cpuNs);
      }
    }
    // Paired: each round's run against the same round's run without a detector (the machine's
    // slow minutes slow both sides), then the median over rounds, with its 95% interval.
    const base = times.get('none@0');
    const cpuBase = cpu.get('none@0');
    for (const [peer, T] of configs) {
      const t = times.get(`${peer}@${T}`);
      const c = cpu.get(`${peer}@${T}`);
      const ratios = t.map((v, r) => v / base[r]);
      const cpuRatios = c.every((v, r) => v !== null && cpuBase[r] !== null) ? c.map((v, r) => v / cpuBase[r]) : null;
      const interval = medianInterval(ratios);
      const fast = fastRatio(t, base);
      const fastCpu = cpuRatios === null ? null : fastRatio(c, cpuBase);
      rows.push({
        workload,
        peer,
        label: peer === 'none' ? 'no detector' : PEERS[peer].label,
        timeoutMs: T * 1000,
        rounds,
        nsPerCallback: round(median(t), 1),
        /** Mean of the fastest third of runs over the same of no detector: the judged ratio. */
        fastRatio: round(fast.ratio, 3),
        fastRatioInterval: fast.interval?.map((x) => round(x, 3)),
        ratio: round(median(ratios), 3),
        /** The 95% interval of that median (bootstrap); undefined with a single round. */
        ratioInterval: interval?.map((x) => round(x, 3)),
        addedNs: round(median(t.map((v, r) => v - base[r])), 1),
        /** Each round's ns per callback, in round order (for paired comparisons between configurations). */
        nsByRound: t.map((v) => round(v, 1)),
        loopCpuNsPerCallback: cpuRatios === null ? null : round(median(c), 1),
        loopCpuRatio: cpuRatios === null ? null : round(median(cpuRatios), 3),
        loopCpuFastRatio: fastCpu === null ? null : round(fastCpu.ratio, 3),
      });
    }
  }
  return rows;
}
