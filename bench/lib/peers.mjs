// The detectors compared, each started in the current process the way its users drive it.
// A report is { peer, atMs (process.hrtime clock, ms), durationMs (or null when the tool cannot
// tell), startMs (or null) }.
import { createRequire } from 'node:module';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const hr = () => Number(process.hrtime.bigint()) / 1e6;

export const PEERS = {
  'loop-helpers': {
    label: 'loop-helpers (detect-only)',
    start(T, report) {
      const { BlockingDetector } = require('../../dist/index.js');
      const d = new BlockingDetector({ timeout: T, raiseExc: false, log: false, aggressive: false }).start();
      d.on('blocked', (e) => {
        const startMs = e.startHrtimeMs;
        report({ atMs: startMs + (e.samples[0]?.blockedMs ?? 0), durationMs: e.durationMs, startMs });
      });
      return () => d.stop();
    },
  },
  'loop-helpers-interrupt': {
    label: 'loop-helpers (interrupt mode)',
    overheadOnly: true,
    start(T) {
      const { BlockingDetector } = require('../../dist/index.js');
      const d = new BlockingDetector({ timeout: T, log: false, onInterrupt: () => {} }).start();
      return () => d.stop();
    },
  },
  'loop-helpers-guarded': {
    label: "loop-helpers (interrupt: 'guarded')",
    overheadOnly: true,
    start(T) {
      const { BlockingDetector } = require('../../dist/index.js');
      const d = new BlockingDetector({ timeout: T, log: false, interrupt: 'guarded' }).start();
      return () => d.stop();
    },
  },
  blocked: {
    label: 'blocked',
    start(T, report) {
      // Its interval is the sampling period: half the threshold, as its README suggests for precision.
      const timer = require('blocked')((ms) => report({ atMs: hr(), durationMs: ms, startMs: null }), {
        threshold: T * 1000,
        interval: Math.max(5, (T * 1000) / 2),
      });
      return () => clearInterval(timer);
    },
  },
  'blocked-at': {
    label: 'blocked-at',
    // async_hooks on every callback: ~10 µs each; the overhead case runs it on a tenth of the load.
    slow: true,
    start(T, report) {
      const { stop } = require('blocked-at')((ms) => report({ atMs: hr(), durationMs: ms, startMs: null }), {
        threshold: T * 1000,
      });
      return stop;
    },
  },
  sentry: {
    label: '@sentry-internal/node-native-stacktrace',
    start(T, report) {
      // As Sentry's eventLoopBlockIntegration drives it: a heartbeat every threshold/2 on the
      // watched thread, and a watchdog Worker that polls how long ago it was seen.
      const native = require('@sentry-internal/node-native-stacktrace');
      native.registerThread();
      const beat = setInterval(() => native.threadPoll(), (T * 1000) / 2);
      beat.unref();
      const pollMs = Math.max(1, (T * 1000) / 10);
      const w = new Worker(
        `const n = require(${JSON.stringify(require.resolve('@sentry-internal/node-native-stacktrace'))});
         const { parentPort } = require('node:worker_threads');
         let inBlock = false;
         setInterval(() => {
           const seen = n.getThreadsLastSeen()['0'];
           if (seen > ${T * 1000} && !inBlock) {
             inBlock = true;
             n.captureStackTrace();
             parentPort.postMessage({ atMs: Number(process.hrtime.bigint()) / 1e6, seen });
           } else if (seen < ${T * 1000}) inBlock = false;
         }, ${pollMs});`,
        { eval: true },
      );
      w.unref();
      w.on('message', (m) => report({ atMs: m.atMs, durationMs: null, startMs: null }));
      return () => {
        clearInterval(beat);
        return w.terminate();
      };
    },
  },
  eld: {
    label: 'perf_hooks.monitorEventLoopDelay',
    start(T, report) {
      const h = monitorEventLoopDelay({ resolution: 1 });
      h.enable();
      const stop = () => h.disable();
      // Metrics only: read after each block (max delay since the last read).
      stop.poll = () => {
        const maxMs = h.max / 1e6;
        if (maxMs >= T * 1000) report({ atMs: hr(), durationMs: maxMs, startMs: null });
        h.reset();
      };
      return stop;
    },
  },
};
