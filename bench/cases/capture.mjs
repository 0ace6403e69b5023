// What a stack sample costs the blocked thread, and how fast blocking code is stopped after the
// deadline (a spin loop and a catastrophic regular expression, inside detector.run()).
// Child mode: `node capture.mjs --child <blocks> <trials>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { nowMs, percentile, round, runChild, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);

if (process.argv[2] === '--child') {
  const { BlockingDetector } = require('../../dist/index.js');
  const blocks = Number(process.argv[3]);
  const trials = Number(process.argv[4]);
  // Sample cost and delay: blocks of 50 ms at timeout 20 ms, aggressive (2 samples per block).
  const costs = [];
  const delays = [];
  const d = new BlockingDetector({ timeout: 0.02, raiseExc: false, log: false }).start();
  d.on('blocked', (e) => {
    for (const s of e.samples) {
      if (s.sampleCostMs !== null) costs.push(s.sampleCostMs * 1000);
      if (s.sampleDelayMs !== null) delays.push(s.sampleDelayMs);
    }
  });
  for (let i = 0; i < blocks; i++) {
    await new Promise((r) =>
      setTimeout(() => {
        const t = nowMs();
        while (nowMs() - t < 50);
        r();
      }, 1),
    );
    await sleep(10);
  }
  await sleep(50);
  d.stop();
  // Interrupt latency: deadline (callback entry + timeout) to the caught error.
  const T = 0.05;
  const g = new BlockingDetector({ timeout: T, log: false }).start();
  const latency = { spin: [], regex: [] };
  const work = {
    spin: () => {
      for (;;);
    },
    regex: () => /(a+)+$/.test(`${'a'.repeat(40)}b`),
  };
  for (let i = 0; i < trials; i++) {
    for (const kind of ['spin', 'regex']) {
      await new Promise((r) =>
        setTimeout(() => {
          const entry = nowMs();
          try {
            g.run(work[kind]);
          } catch {
            latency[kind].push(nowMs() - (entry + T * 1000));
          }
          r();
        }, 1),
      );
      await sleep(10);
    }
  }
  g.stop();
  console.log(JSON.stringify({ costs, delays, latency }));
  process.exit(0);
}

export function runCapture(opts) {
  const r = runChild(fileURLToPath(import.meta.url), [
    '--child',
    sized(opts, '200', '20', '5'),
    sized(opts, '100', '10', '3'),
  ]);
  return {
    samples: r.costs.length,
    captureCostUs: { p50: round(percentile(r.costs, 50), 1), p99: round(percentile(r.costs, 99), 1) },
    sampleDelayMs: { p50: round(percentile(r.delays, 50), 3), p99: round(percentile(r.delays, 99), 3) },
    interruptLatencyMs: Object.fromEntries(
      Object.entries(r.latency).map(([k, v]) => [
        k,
        { trials: v.length, p50: round(percentile(v, 50), 3), p99: round(percentile(v, 99), 3) },
      ]),
    ),
  };
}
