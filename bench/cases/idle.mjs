// Idle cost: CPU time the whole process uses while its loop waits (on a long timer) with each
// detector running, against no detector, in fresh processes, alternated. On Linux every thread's
// on-CPU time is read from /proc/self/task/*/schedstat (nanoseconds; the detector's monitor thread
// included), elsewhere from process.cpuUsage(). loop-helpers also reports its monitor's wake-ups.
// Child mode: `node idle.mjs --child <peer|none> <T> <seconds>`.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { PEERS } from '../lib/peers.mjs';
import { median, round, runChild, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);

/** Nanoseconds of CPU used so far by every thread of this process. */
function cpuNs() {
  if (existsSync('/proc/self/task')) {
    let total = 0;
    for (const t of readdirSync('/proc/self/task')) {
      try {
        total += Number(readFileSync(`/proc/self/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // The thread ended meanwhile.
      }
    }
    return total;
  }
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

const monitorWakes = () => {
  try {
    return JSON.parse(require('../../dist/lib/native.js').native().nativeInfo()).monitorWakes;
  } catch {
    return null;
  }
};

if (process.argv[2] === '--child') {
  const [, , , peer, T, seconds] = process.argv;
  const stop = peer === 'none' ? null : PEERS[peer].start(Number(T), () => {});
  await sleep(300);
  const w0 = peer.startsWith('loop-helpers') ? monitorWakes() : null;
  const c0 = cpuNs();
  const t0 = process.hrtime.bigint();
  await sleep(Number(seconds) * 1000);
  const c1 = cpuNs();
  const el = Number(process.hrtime.bigint() - t0) / 1e9;
  const w1 = peer.startsWith('loop-helpers') ? monitorWakes() : null;
  await stop?.();
  console.log(
    JSON.stringify({
      cpuMsPerS: (c1 - c0) / 1e6 / el,
      wakesPerS: w0 === null || w1 === null ? null : (w1 - w0) / el,
    }),
  );
  process.exit(0);
}

export function runIdle(opts) {
  const { quick } = opts;
  const rounds = sized(opts, 5, 2, 1);
  const seconds = sized(opts, 3, 1, 0.3);
  const configs = [['none', 0]];
  for (const T of quick ? [1] : [0.05, 1]) {
    for (const [peer, p] of Object.entries(PEERS)) if (!p.overheadOnly) configs.push([peer, T]);
  }
  const cpu = new Map(configs.map((c) => [c.join('@'), []]));
  const wakes = new Map(configs.map((c) => [c.join('@'), []]));
  const self = fileURLToPath(import.meta.url);
  for (let r = 0; r < rounds; r++) {
    for (const [peer, T] of configs) {
      const out = runChild(self, ['--child', peer, String(T), String(seconds)]);
      cpu.get(`${peer}@${T}`).push(out.cpuMsPerS);
      if (out.wakesPerS !== null) wakes.get(`${peer}@${T}`).push(out.wakesPerS);
    }
  }
  const base = median(cpu.get('none@0'));
  return configs.map(([peer, T]) => {
    const m = median(cpu.get(`${peer}@${T}`));
    const w = wakes.get(`${peer}@${T}`);
    return {
      peer,
      label: peer === 'none' ? 'no detector' : PEERS[peer].label,
      timeoutMs: T * 1000,
      cpuMsPerS: round(m, 3),
      addedMsPerS: round(m - base, 3),
      monitorWakesPerS: w.length ? round(median(w), 1) : null,
    };
  });
}
