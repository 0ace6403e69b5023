// What `asyncContext` adds: reading the blocked code's AsyncLocalStorage store in the sampling
// interrupt, once per block. Measures, for a typical request store (five fields, a nested object
// with an array):
// - in the interrupt (cold: the read runs once per block, after 50 ms of other code): its time,
//   timed natively around the read in each block's first sample (`contextLastReadNs`), for the
//   whole store and for one picked key (`asyncContextKeys`);
// - warm: readAsyncContext() in a loop (the same read, plus making and releasing the option's
//   references and arrays on every call: an upper bound);
// - sampleCostMs (here in µs) of real samples with and without asyncContext (blocks of 50 ms at
//   timeout 20 ms), whose difference is the added cost per sample (noisy: the stack capture itself
//   varies more);
// - off: no read at all without the option (the native read counter does not move);
// - the machine's cold floor, for scale: once after each of the same 50 ms blocks, timed in
//   JavaScript, V8's own JSON.stringify of the same store and an empty call into the addon (on
//   these VMs 50 ms of other code leaves the caches and TLBs cold: a read that takes 4 µs in a
//   loop takes 20-90 µs there, whatever does it);
// - per loop turn: an empty setImmediate ping-pong with a detector, with and without asyncContext
//   (nothing is done per turn: the store is only read when a block is sampled).
// Child modes: `node async-context.mjs --child <blocks> <reads>`, `--turns <off|on> <n>`.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { nowMs, percentile, round, runChild, sized, sleep } from '../lib/stats.mjs';
import { compareTurns, pingPong } from '../lib/turns.mjs';

const require = createRequire(import.meta.url);

const store = (i) => ({
  requestId: `3f2b8c1e-${i}`,
  method: 'GET',
  path: '/api/orders?page=2',
  user: { id: 42, roles: ['admin', 'billing'] },
  startedAt: 1_700_000_000_000 + i,
});

const nativeInfo = () => JSON.parse(require('../../dist/lib/native.js').native().nativeInfo());

/** Blocks of 50 ms inside als.run(store); the sample costs (µs) and each block's read (ns). */
async function blocks(BlockingDetector, options, als, count) {
  const costs = [];
  const readNs = [];
  const before = nativeInfo().contextReads;
  const d = new BlockingDetector({ timeout: 0.02, raiseExc: false, log: false, ...options }).start();
  d.on('blocked', (e) => {
    for (const s of e.samples) if (s.sampleCostMs !== null) costs.push(s.sampleCostMs * 1000);
    // The read of this block, timed natively inside its sampling interrupt.
    if (options.asyncContext) readNs.push(nativeInfo().contextLastReadNs);
  });
  for (let i = 0; i < count; i++) {
    await als.run(store(i), async () => {
      await sleep(1);
      const t = nowMs();
      while (nowMs() - t < 50);
    });
    await sleep(10);
  }
  await sleep(50);
  d.stop();
  return { costs, readNs, reads: nativeInfo().contextReads - before };
}

if (process.argv[2] === '--child') {
  const { AsyncLocalStorage } = require('node:async_hooks');
  const { BlockingDetector, capabilities } = require('../../dist/index.js');
  const { native } = require('../../dist/lib/native.js');
  const count = Number(process.argv[3]);
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
  const warm = { whole: readUs(null), picked: readUs(['requestId']) };
  // The cold floor: each operation warmed, then timed once after 50 ms of other code, per block.
  const coldUs = (op) => {
    const us = [];
    for (let i = 0; i < count; i++) {
      als.run(store(i), () => {
        for (let k = 0; k < 50; k++) op();
        const t = nowMs();
        while (nowMs() - t < 50);
        const t0 = process.hrtime.bigint();
        op();
        us.push(Number(process.hrtime.bigint() - t0) / 1e3);
      });
    }
    return us;
  };
  const cold = {
    jsonStringify: coldUs(() => JSON.stringify(als.getStore())),
    emptyNativeCall: coldUs(() => native().isMainThread()),
  };
  const off = await blocks(BlockingDetector, {}, als, count);
  const whole = await blocks(BlockingDetector, { asyncContext: als }, als, count);
  const picked = await blocks(BlockingDetector, { asyncContext: als, asyncContextKeys: ['requestId'] }, als, count);
  console.log(JSON.stringify({ warm, cold, off, whole, picked }));
  process.exit(0);
}

if (process.argv[2] === '--turns') {
  const { AsyncLocalStorage } = require('node:async_hooks');
  const { BlockingDetector } = require('../../dist/index.js');
  const als = new AsyncLocalStorage();
  const on = process.argv[3] === 'on';
  const d = new BlockingDetector({ timeout: 1, raiseExc: false, log: false, asyncContext: on ? als : undefined });
  d.start();
  await sleep(50);
  // Inside a store, so that every turn runs with an AsyncContextFrame.
  const r = await als.run(store(0), () => pingPong(Number(process.argv[4])));
  d.stop();
  console.log(JSON.stringify(r));
  process.exit(0);
}

export function runAsyncContext(opts) {
  const self = fileURLToPath(import.meta.url);
  const r = runChild(self, ['--child', sized(opts, '100', '20', '5'), sized(opts, '20000', '2000', '200')]);
  if (r.unavailable) return { unavailable: r.unavailable };
  const us = (ns, p) => round(percentile(ns, p) / 1e3, 1);
  const inInterrupt = (b) => ({ reads: b.reads, p50: us(b.readNs, 50), p99: us(b.readNs, 99) });
  const p50 = (xs) => round(percentile(xs, 50), 1);
  const turns = compareTurns(
    self,
    ['off', 'on'],
    (c) => ['--turns', c, sized(opts, '1000000', '200000', '20000')],
    sized(opts, 7, 2, 1),
  );
  return {
    perBlockInInterruptUs: { wholeStore: inInterrupt(r.whole), pickedKey: inInterrupt(r.picked) },
    warmReadUs: { wholeStore: round(r.warm.whole, 2), pickedKey: round(r.warm.picked, 2) },
    /** p50 (µs) of V8's JSON.stringify of the same store and of an empty addon call, each timed
     * once after 50 ms of other code: what anything costs cold on this machine. */
    coldFloorUs: {
      jsonStringify: round(percentile(r.cold.jsonStringify, 50), 1),
      emptyNativeCall: round(percentile(r.cold.emptyNativeCall, 50), 1),
    },
    sampleCostUs: {
      off: { samples: r.off.costs.length, p50: p50(r.off.costs) },
      wholeStore: { samples: r.whole.costs.length, p50: p50(r.whole.costs) },
      addedP50: round(percentile(r.whole.costs, 50) - percentile(r.off.costs, 50), 1),
    },
    readsWhenOff: r.off.reads,
    perTurn: { off: turns.off, on: turns.on },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(runAsyncContext({ quick: process.argv.includes('--quick') }), null, 2));
}
