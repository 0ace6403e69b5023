// Many detectors on one loop: 2,000 BlockingDetectors (timeout 100 ms) watch one loop, which spins
// for 200 ms in a timer callback; what each reported of that block, and the process's CPU while
// they all watched the idle loop before it (1 s, every thread). In fresh processes, one per round:
// the test fixture __test__/fixtures/many-detectors.cjs, which the test of the same name asserts
// behaviour with (every detector reports the block with its stack); here, how close they measure
// it and what they cost idle.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { median, round, sized } from '../lib/stats.mjs';

const FIXTURE = fileURLToPath(new URL('../../__test__/fixtures/many-detectors.cjs', import.meta.url));
const DETECTORS = 2000;
const TIMEOUT_S = 0.1;
const SPIN_MS = 200;

/** One run of the fixture: its RESULT line. */
function runOnce() {
  const r = spawnSync(process.execPath, [FIXTURE, String(DETECTORS), String(TIMEOUT_S), String(SPIN_MS)], {
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 64 << 20,
  });
  const line = (r.stdout ?? '')
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`many-detectors: no RESULT line (status ${r.status}):\n${(r.stderr ?? '').slice(-2000)}`);
  return JSON.parse(line.slice('RESULT '.length));
}

export function runManyDetectors(opts) {
  const rounds = sized(opts, 5, 2, 1);
  const runs = [];
  for (let r = 0; r < rounds; r++) {
    const { spin, idleCpuPercent, reported } = runOnce();
    const spinEnd = spin.startHrtimeMs + spin.durationMs;
    // Each detector's report of the spin's block (it started before the spin and ended after it).
    const durations = reported.map((events) => {
      const block = events.find(
        (e) => e.startHrtimeMs <= spin.startHrtimeMs + 0.001 && e.startHrtimeMs + e.durationMs >= spinEnd - 0.001,
      );
      return block ? block.durationMs : null;
    });
    const measured = durations.filter((d) => d !== null);
    runs.push({
      spinMs: round(spin.durationMs, 1),
      spinCpuMs: spin.cpuMs === null ? null : round(spin.cpuMs, 1),
      reportedBy: measured.length,
      durationMs: {
        min: round(Math.min(...measured), 1),
        p50: round(median(measured), 1),
        max: round(Math.max(...measured), 1),
      },
      idleCpuPercent: round(idleCpuPercent, 2),
    });
  }
  return { detectors: DETECTORS, timeoutMs: TIMEOUT_S * 1000, spinMs: SPIN_MS, rounds, runs };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(runManyDetectors({ quick: process.argv.includes('--quick') }), null, 2));
}
