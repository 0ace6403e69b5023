// Runs a fixture in a child Node.js process with a time limit and collects what it printed.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const fixture = (name) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

/**
 * @returns {Promise<{code: number|null, signal: string|null, stdout: string, stderr: string,
 *   timedOut: boolean, result: any}>} `result` is the JSON after the last `RESULT ` line on stdout.
 */
export function runNode(args, { timeoutMs = 30_000, env = {}, node = process.execPath, cwd = undefined } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(node, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      // Where the child was when it ran out of time, for the failure message: a thread spinning
      // in JavaScript that was never interrupted reads 'R' with seconds of CPU, an idle process
      // that did not exit reads 'S' in ep_poll.
      stderr += `\n[runNode: timed out after ${timeoutMs} ms; threads: ${threadStates(child.pid)}]\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout
        .split('\n')
        .filter((l) => l.startsWith('RESULT '))
        .pop();
      resolve({ code, signal, stdout, stderr, timedOut, result: line ? JSON.parse(line.slice(7)) : undefined });
    });
  });
}

/** Each thread of a process as `name state cpu-ms wchan` (Linux /proc; elsewhere a note). */
function threadStates(pid) {
  try {
    const tick = 10; // ms per clock tick (USER_HZ 100 on Linux)
    return readdirSync(`/proc/${pid}/task`)
      .map((tid) => {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const cpuMs = (Number(f[11]) + Number(f[12])) * tick;
        let wchan = '';
        try {
          wchan = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8');
        } catch {}
        return `${tid === String(pid) ? 'main' : name} ${f[0]} ${cpuMs}ms ${wchan || '-'}`;
      })
      .join('; ');
  } catch (e) {
    return `unreadable (${e.code ?? e.message})`;
  }
}

/** Runs `scenario.cjs <name> <options JSON>`. */
export const scenario = (name, options = {}, runOptions = {}) =>
  runNode([fixture('scenario.cjs'), name, JSON.stringify(options)], runOptions);

/** The BlockingWarning headers in a text. */
export const warnings = (text) =>
  text.split('\n').filter((l) => l.includes('BlockingWarning: blocking detected after'));

/**
 * Whether `stderr` holds a live warning whose header matches `header` (a RegExp source) with a stack
 * frame matching `frame` (a RegExp source, after `at `): in the warning itself, or, when its stack
 * missed the 5 ms wait (a loaded machine), in the follow-up line that brings it while the block lasts.
 */
export function liveWarningWithStack(stderr, header, frame) {
  const direct = new RegExp(`${header}\\n( {4}at .*\\n)* {4}at ${frame}`);
  const late = new RegExp(
    `${header}\\n( {4}\\(.*\\)\\n)+\\(node:\\d+\\) BlockingWarning: the stack of the block above, sampled [\\d.]+ s after its warning[^\\n]*\\n( {4}at .*\\n)* {4}at ${frame}`,
  );
  return direct.test(stderr) || late.test(stderr);
}

/**
 * A limit of `n` tasks at a time: `limit(fn)` runs `fn` when fewer than `n` others run, and returns
 * its promise. For test files whose cases spend most of their time waiting on a child (a few of
 * them at once keep a 2-core machine busy without crowding it the way all of them would).
 */
export function limiter(n) {
  let running = 0;
  const waiting = [];
  const next = () => {
    if (running >= n || waiting.length === 0) return;
    running++;
    const { fn, resolve, reject } = waiting.shift();
    Promise.resolve()
      .then(fn)
      .then(resolve, reject)
      .finally(() => {
        running--;
        next();
      });
  };
  return (fn) =>
    new Promise((resolve, reject) => {
      waiting.push({ fn, resolve, reject });
      next();
    });
}
