// Per-loop-turn cost: an empty setImmediate ping-pong (one loop turn per callback, the worst case
// for anything done per turn), timed in fresh processes, configurations alternated (A B A B ...)
// because these machines are noisy. Besides the wall-clock time, the loop thread's own CPU time
// (Linux: /proc/self/task/<pid>/schedstat), which time spent waiting for a CPU on a shared machine
// does not inflate.
import { existsSync, readFileSync } from 'node:fs';
import { median, round, runChild } from './stats.mjs';

/** Nanoseconds of CPU the main (loop) thread used so far, or null where it cannot be read. */
export function loopThreadCpuNs() {
  const f = `/proc/self/task/${process.pid}/schedstat`;
  return existsSync(f) ? Number(readFileSync(f, 'utf8').split(' ')[0]) : null;
}

/** Child side: `total` loop turns; `{ ns, cpuNs }` per turn (cpuNs null where unknown). */
export async function pingPong(total) {
  let i = 0;
  const c0 = loopThreadCpuNs();
  const t0 = process.hrtime.bigint();
  await new Promise((resolve) => {
    const step = () => (++i < total ? setImmediate(step) : resolve());
    setImmediate(step);
  });
  const ns = Number(process.hrtime.bigint() - t0) / total;
  const c1 = loopThreadCpuNs();
  return { ns, cpuNs: c0 === null ? null : (c1 - c0) / total };
}

/**
 * Parent side: runs `node <file> ...args(config)` for each configuration, `rounds` times
 * alternated; each child prints `pingPong()`'s result as its last line. Returns, per
 * configuration, the median ns and loop-thread CPU ns per turn, and their difference to the first
 * configuration (the baseline); and the same of each configuration's fastest run (`min*`), which
 * is what a per-turn cost is judged by: on these VMs a process runs this loop at one of two speeds
 * whatever its configuration (Node 24: about 2.55 or 3.6 µs per turn, ten alternating runs of
 * asyncContext off and on, each speed in both), so a median of a few runs moves by 40% with the
 * mix, while the fastest runs differ by what the configuration adds.
 */
export function compareTurns(file, configs, args, rounds) {
  const times = new Map(configs.map((c) => [c, []]));
  const cpu = new Map(configs.map((c) => [c, []]));
  for (let r = 0; r < rounds; r++) {
    for (const c of configs) {
      const out = runChild(file, args(c));
      times.get(c).push(out.ns);
      if (out.cpuNs !== null) cpu.get(c).push(out.cpuNs);
    }
  }
  const min = (xs) => (xs.length === 0 ? null : Math.min(...xs));
  const base = median(times.get(configs[0]));
  const cpuBase = median(cpu.get(configs[0]));
  const minBase = min(times.get(configs[0]));
  const minCpuBase = min(cpu.get(configs[0]));
  return Object.fromEntries(
    configs.map((c) => {
      const ns = median(times.get(c));
      const cpuNs = median(cpu.get(c));
      const minNs = min(times.get(c));
      const minCpuNs = min(cpu.get(c));
      return [
        c,
        {
          ns: round(ns, 1),
          addedNs: round(ns - base, 1),
          cpuNs: cpuNs === null ? null : round(cpuNs, 1),
          cpuAddedNs: cpuNs === null || cpuBase === null ? null : round(cpuNs - cpuBase, 1),
          minNs: round(minNs, 1),
          minAddedNs: round(minNs - minBase, 1),
          minCpuNs: minCpuNs === null ? null : round(minCpuNs, 1),
          minCpuAddedNs: minCpuNs === null || minCpuBase === null ? null : round(minCpuNs - minCpuBase, 1),
        },
      ];
    }),
  );
}
