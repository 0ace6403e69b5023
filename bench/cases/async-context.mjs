// What `asyncContext` adds at capture: reading the blocked code's AsyncLocalStorage store in the
// sampling interrupt. Two measures:
// - the native read alone, for a typical request store, called in a loop through
//   readAsyncContext() (the same code the interrupt runs, plus one Node-API call and the returned
//   string: an upper bound);
// - sampleCostMs (here in µs) of real samples with and without asyncContext (blocks of 50 ms at timeout 20 ms),
//   whose difference is the added cost per sample (noisy: the stack capture itself varies more).
// Nothing is added per loop turn: the store is only read when a block is sampled.
// Child mode: `node async-context.mjs --child <blocks> <reads>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { nowMs, percentile, round, runChild, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);

async function sampleCosts(BlockingDetector, asyncContext, als, blocks, readNs) {
  const { native } = require('../../dist/lib/native.js');
  const costs = [];
  const d = new BlockingDetector({ timeout: 0.02, raiseExc: false, log: false, asyncContext }).start();
  d.on('blocked', (e) => {
    for (const s of e.samples) if (s.sampleCostMs !== null) costs.push(s.sampleCostMs * 1000);
    // The read of this block, timed natively inside its sampling interrupt.
    if (readNs) readNs.push(JSON.parse(native().nativeInfo()).contextLastReadNs);
  });
  for (let i = 0; i < blocks; i++) {
    await als.run(store(i), async () => {
      await sleep(1);
      const t = nowMs();
      while (nowMs() - t < 50);
    });
    await sleep(10);
  }
  await sleep(50);
  d.stop();
  return costs;
}

const store = (i) => ({
  requestId: `3f2b8c1e-${i}`,
  method: 'GET',
  path: '/api/orders?page=2',
  user: { id: 42, roles: ['admin', 'billing'] },
  startedAt: 1_700_000_000_000 + i,
});

if (process.argv[2] === '--child') {
  const { AsyncLocalStorage } = require('node:async_hooks');
  const { BlockingDetector, capabilities } = require('../../dist/index.js');
  const { native } = require('../../dist/lib/native.js');
  const blocks = Number(process.argv[3]);
  const reads = Number(process.argv[4]);
  const caps = capabilities();
  if (!caps.asyncContext) {
    console.log(JSON.stringify({ unavailable: caps.reasons.asyncContext }));
    process.exit(0);
  }
  const als = new AsyncLocalStorage();
  const readUs = (keys) =>
    als.run(store(0), () => {
      for (let i = 0; i < 1000; i++) native().readAsyncContext({ storages: [als], keys: [keys], single: true });
      const t = process.hrtime.bigint();
      for (let i = 0; i < reads; i++) native().readAsyncContext({ storages: [als], keys: [keys], single: true });
      return Number(process.hrtime.bigint() - t) / 1e3 / reads;
    });
  const whole = readUs(null);
  const picked = readUs(['requestId']);
  const off = await sampleCosts(BlockingDetector, undefined, als, blocks);
  const stats = () => JSON.parse(native().nativeInfo());
  const before = stats();
  const readNs = [];
  const on = await sampleCosts(BlockingDetector, als, als, blocks, readNs);
  const after = stats();
  // The read itself, timed natively inside the sampling interrupts.
  const interrupts = after.contextReads - before.contextReads;
  const inInterrupt = (after.contextReadNs - before.contextReadNs) / 1e3 / interrupts;
  console.log(JSON.stringify({ whole, picked, off, on, reads: interrupts, inInterrupt, readNs }));
  process.exit(0);
}

export function runAsyncContext({ quick }) {
  const r = runChild(fileURLToPath(import.meta.url), ['--child', quick ? '20' : '100', quick ? '2000' : '20000']);
  if (r.unavailable) return { unavailable: r.unavailable };
  const p50 = (xs) => round(percentile(xs, 50), 1);
  return {
    readUs: { wholeStore: round(r.whole, 2), pickedKey: round(r.picked, 2) },
    perBlockInInterruptUs: {
      reads: r.reads,
      mean: round(r.inInterrupt, 2),
      p50: round(percentile(r.readNs, 50) / 1e3, 2),
      p99: round(percentile(r.readNs, 99) / 1e3, 2),
    },
    sampleCostUs: {
      off: { samples: r.off.length, p50: p50(r.off) },
      on: { samples: r.on.length, p50: p50(r.on) },
      addedP50: round(percentile(r.on, 50) - percentile(r.off, 50), 1),
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(runAsyncContext({ quick: process.argv.includes('--quick') }), null, 2));
}
