// Process trees and their memory on Linux: proportional set size (PSS) from /proc/<pid>/smaps_rollup,
// where a page shared by k processes counts 1/k in each, so that the sum over a tree is the memory
// the tree really uses; and the CPU time a tree used. Also the cleanup that makes sure a benchmark
// leaves no process behind.
import { readdirSync, readFileSync } from 'node:fs';

/** `{ ppid, state }` of a process, or null when it no longer exists. */
export function procStat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], ppid: Number(f[1]) };
  } catch {
    return null;
  }
}

/** `root` and every live descendant of it (zombies excluded), from one scan of /proc. */
export function processTree(root) {
  const children = new Map();
  for (const d of readdirSync('/proc')) {
    if (d.charCodeAt(0) > 57) continue;
    const pid = Number(d);
    const st = procStat(pid);
    if (!st || st.state === 'Z') continue;
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push(pid);
  }
  const out = [];
  const walk = (pid) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  if (procStat(root)) walk(root);
  return out;
}

/** The fields of /proc/<pid>/smaps_rollup in KiB (Pss, Rss, Private_Dirty...), or null. */
export function smapsRollup(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
  } catch {
    return null;
  }
  const kb = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) kb[m[1]] = Number(m[2]);
  }
  return kb;
}

const mib = (kb) => Math.round((kb / 1024) * 10) / 10;

/**
 * Memory of a set of processes: total PSS, total USS (private pages: what each process alone
 * holds), RSS, and per process. Processes that ended meanwhile are left out.
 */
export function treeMemory(pids) {
  const per = [];
  for (const pid of pids) {
    const r = smapsRollup(pid);
    if (!r) continue;
    per.push({
      pid,
      pssMiB: mib(r.Pss ?? 0),
      ussMiB: mib((r.Private_Clean ?? 0) + (r.Private_Dirty ?? 0)),
      rssMiB: mib(r.Rss ?? 0),
    });
  }
  const sum = (k) => Math.round(per.reduce((a, p) => a + p[k], 0) * 10) / 10;
  return { pssMiB: sum('pssMiB'), ussMiB: sum('ussMiB'), rssMiB: sum('rssMiB'), processes: per };
}

/**
 * Every thread of `pids` now: its CPU time so far in ms (the first field of
 * /proc/<pid>/task/<tid>/schedstat, ns on the CPU) and its minor page faults so far (field 10 of
 * its stat; copy-on-write breaks and first touches of new memory). A thread that already ended is
 * not listed.
 */
export function treeThreads(pids) {
  const threads = [];
  for (const pid of pids) {
    let tids = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ')[0]);
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
        const minorFaults = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
        threads.push({ pid, tid: Number(tid), cpuMs: ns / 1e6, minorFaults });
      } catch {
        // Ended meanwhile.
      }
    }
  }
  return threads;
}

/**
 * Kills `pids` (and, when `root` is given, every descendant of it found now) with SIGKILL, and
 * waits up to `ms` for them to be gone. Never throws.
 */
export async function killAll(pids, { root, ms = 5_000 } = {}) {
  const all = new Set(pids);
  if (root !== undefined) for (const p of processTree(root)) all.add(p);
  for (const pid of all) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (
      [...all].every((p) => {
        const st = procStat(p);
        return st === null || st.state === 'Z';
      })
    )
      return;
    await new Promise((r) => setTimeout(r, 20));
  }
}
