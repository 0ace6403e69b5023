// Loop overhead: an empty setImmediate ping-pong (one loop turn per callback, the worst case for
// a per-turn heartbeat) and N timers due at once (a timer-heavy loop), with each detector running,
// in fresh processes, alternated (A B C ... A B C ...) because these machines are noisy. Besides
// the wall-clock time, the loop thread's own CPU time (Linux: /proc/self/task/<pid>/schedstat),
// which time spent waiting for a CPU on a shared machine does not inflate.
// Child mode: `node overhead.mjs --child <peer|none> <T> <workload> <n>`.
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { median, round, runChild, sized, sleep } from '../lib/stats.mjs';
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
  const rounds = sized(opts, 7, 2, 1);
  const n = { 'ping-pong': sized(opts, 1_000_000, 200_000, 20_000), timers: sized(opts, 500_000, 100_000, 10_000) };
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
      for (const [peer, T] of configs) {
        const count = PEERS[peer]?.slow ? n[workload] / 10 : n[workload];
        const out = runChild(self, ['--child', peer, String(T), workload, String(count)]);
        times.get(`${peer}@${T}`).push(out.ns);
        if (out.cpuNs !== null) cpu.get(`${peer}@${T}`).push(out.cpuNs);
      }
    }
    const base = median(times.get('none@0'));
    const cpuBase = median(cpu.get('none@0'));
    for (const [peer, T] of configs) {
      const m = median(times.get(`${peer}@${T}`));
      const c = median(cpu.get(`${peer}@${T}`));
      rows.push({
        workload,
        peer,
        label: peer === 'none' ? 'no detector' : PEERS[peer].label,
        timeoutMs: T * 1000,
        nsPerCallback: round(m, 1),
        ratio: round(m / base, 3),
        addedNs: round(m - base, 1),
        loopCpuNsPerCallback: c === null ? null : round(c, 1),
        loopCpuRatio: c === null || cpuBase === null ? null : round(c / cpuBase, 3),
      });
    }
  }
  return rows;
}
