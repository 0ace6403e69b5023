// `npm run bench [-- --quick | --smoke] [-- --skip <case>,...]`: loop-helpers against the tools
// Node users pick today, side by side in one run on this machine. Writes bench/results/latest.json,
// latest.md and the SVGs; a quick run writes to bench/results/quick/ instead, a smoke run (every
// case once at its smallest, for CI: it shows that the benchmark runs, its figures mean nothing) to
// bench/results/smoke/ (neither committed), so that they never replace the last full run's
// figures. `--skip fork-vs-cluster` leaves out the case that needs ~2.5 GB of memory (cluster holds
// a data set per worker); `--skip instructions` the one counted under valgrind (minutes).
// Benchmarks report; they do not assert.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { runAsyncContext } from './cases/async-context.mjs';
import { runCapture } from './cases/capture.mjs';
import { runFork } from './cases/fork.mjs';
import { forkVsClusterMarkdown, runForkVsCluster } from './cases/fork-vs-cluster.mjs';
import { runHttp } from './cases/http.mjs';
import { runIdle } from './cases/idle.mjs';
import { runInstructions } from './cases/instructions.mjs';
import { runLiveStacks } from './cases/live-stacks.mjs';
import { runManyDetectors } from './cases/many-detectors.mjs';
import { runMemory } from './cases/memory.mjs';
import { runNativeBlocks } from './cases/native-blocks.mjs';
import { runOtel } from './cases/otel.mjs';
import { runOverhead } from './cases/overhead.mjs';
import { FACTORS, runPrecision } from './cases/precision.mjs';
import { median, medianInterval, round, sized } from './lib/stats.mjs';
import { precisionSvg } from './lib/svg.mjs';

// `--node <major>`: run the whole benchmark under that Node.js (from the npm package
// node-<platform>-<arch>@<major>; every child process inherits it), e.g. `npm run bench -- --node 24`.
const nodeAt = process.argv.indexOf('--node');
if (nodeAt !== -1) {
  const major = process.argv[nodeAt + 1] ?? '';
  const { nodeBinary } = await import('../scripts/node-binary.mjs');
  const args = process.argv.slice(2).filter((_, i) => i !== nodeAt - 2 && i !== nodeAt - 1);
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(
    nodeBinary(major, (m) => console.error(`[bench] ${m}`)),
    [fileURLToPath(import.meta.url), ...args],
    {
      stdio: 'inherit',
    },
  );
  process.exit(r.status ?? 1);
}

const smoke = process.argv.includes('--smoke');
const quick = smoke || process.argv.includes('--quick');
const skipAt = process.argv.indexOf('--skip');
const skip = new Set(skipAt === -1 ? [] : (process.argv[skipAt + 1] ?? '').split(','));
const resultsDir = smoke ? 'bench/results/smoke' : quick ? 'bench/results/quick' : 'bench/results';
const results = (file) => new URL(`../${resultsDir}/${file}`, import.meta.url);
const opts = { quick, smoke, resultsDir };
const started = Date.now();
const step = (name) => console.error(`[bench] ${name} (${((Date.now() - started) / 1000).toFixed(0)} s)`);

step('loop overhead');
const overhead = runOverhead(opts);
step('loop cost counted in instructions (callgrind)');
const instructions = skip.has('instructions')
  ? { unavailable: 'left out with --skip instructions' }
  : await runInstructions(opts);
step('idle CPU');
const idle = runIdle(opts);
step('HTTP throughput');
const http = await runHttp(opts);
step('precision');
const precision = runPrecision(opts);
step('stack capture cost and interrupt latency');
const capture = runCapture(opts);
step('asyncContext capture cost');
const asyncContext = runAsyncContext(opts);
step('OpenTelemetry cost');
const otel = runOtel(opts);
step('live warnings with a stack');
const liveStacks = runLiveStacks(opts);
step('many detectors on one loop');
const manyDetectors = runManyDetectors(opts);
step('native blocks named');
const nativeBlocks = runNativeBlocks(opts);
step('memory');
const memory = runMemory(opts);
step('fork');
const fork = runFork(opts);
step('fork() against cluster');
const forkVsCluster = skip.has('fork-vs-cluster')
  ? { skipped: 'left out with --skip fork-vs-cluster' }
  : await runForkVsCluster(opts);
step('SyncCallDetector per-call cost');
const syncCalls = runSyncCalls();

/** bench/cases/sync-calls.mjs in its own process (it patches Node's sync APIs). */
function runSyncCalls() {
  const file = fileURLToPath(new URL('./cases/sync-calls.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [file, sized(opts, '7', '3', '1'), sized(opts, '100000', '20000', '2000')], {
    encoding: 'utf8',
  });
  if (r.status !== 0) return { skipped: `sync-calls.mjs failed: ${r.stderr.trim().split('\n').pop()}` };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const machine = {
  node: process.version,
  cpus: cpus().length,
  cpu: cpus()[0]?.model,
  date: new Date().toISOString(),
  quick,
};

// Targets (issue 4): checked here, reported in the table, never asserted.
const lhPing = overhead.find((r) => r.workload === 'ping-pong' && r.peer === 'loop-helpers' && r.timeoutMs === 1000);
const lhHttp = http.find((r) => r.peer === 'loop-helpers');
const lhHttpInterrupt = http.find((r) => r.peer === 'loop-helpers-interrupt');
/**
 * What `peer` adds per callback over `other` (ns), paired: the median over rounds of the difference
 * between the two runs of the same round, with its 95% interval. Two medians against no detector,
 * subtracted, carry both runs' noise twice over; on these VMs that alone moved a difference of
 * identical code (`'guarded'` over detect-only) by ±50 ns.
 */
const pairedAdded = (peer, other, workload, T = 1000) => {
  const row = (p) => overhead.find((r) => r.workload === workload && r.peer === p && r.timeoutMs === T);
  const [a, b] = [row(peer), row(other)];
  if (!a?.nsByRound || !b?.nsByRound) return null;
  const diffs = a.nsByRound.map((v, r) => v - b.nsByRound[r]);
  return { ns: round(median(diffs), 1), interval: medianInterval(diffs)?.map((x) => round(x, 1)) };
};
const pairedText = (x) => (x === null ? '?' : `${x.ns} ns${x.interval ? ` [${x.interval[0]}–${x.interval[1]}]` : ''}`);
const guardedAdded = pairedAdded('loop-helpers-guarded', 'loop-helpers', 'ping-pong');
// 'everywhere' over detect-only, per callback, on both loops at both timeouts.
const everywhereAdded = [...new Set(overhead.map((r) => `${r.workload}|${r.timeoutMs}`))]
  .map((k) => k.split('|'))
  .filter(([, T]) => T !== '0' && T !== 'undefined')
  .map(([workload, T]) => ({
    workload,
    timeoutMs: Number(T),
    added: pairedAdded('loop-helpers-interrupt', 'loop-helpers', workload, Number(T)),
  }))
  .filter((x) => x.added !== null);
const lhRows = precision.filter((r) => r.peer === 'loop-helpers');
// Issue 11: detect-only no costlier than x1.01 on both loops at both timeouts, level with or
// ahead of every peer, and its idle CPU no higher than before (+3 ms/s at 1 s, +12 ms/s at 50 ms).
const lhLoop = overhead.filter((r) => r.peer === 'loop-helpers');
const peerBest = (workload, T) =>
  Math.min(
    ...overhead
      .filter((r) => r.workload === workload && r.timeoutMs === T && !r.peer.startsWith('loop-helpers'))
      .filter((r) => r.peer !== 'none' && r.peer !== 'blocked-at')
      .map((r) => r.fastRatio),
  );
const lhIdle = idle.filter((r) => r.peer === 'loop-helpers');
// The same loop cost counted in the loop thread's instructions (callgrind), which these VMs'
// noise does not move: per callback, against no detector and against every peer counted.
const counted = instructions.rows ?? [];
const countedLh = counted.filter((r) => r.peer === 'loop-helpers');
const countedPeerBest = (workload, T) => {
  const peers = counted.filter(
    (r) => r.workload === workload && r.timeoutMs === T && r.peer !== 'none' && !r.peer.startsWith('loop-helpers'),
  );
  return peers.length ? Math.min(...peers.map((r) => r.ratio)) : null;
};
const countedEverywhereHttp = counted.filter((r) => r.workload === 'http' && r.peer === 'loop-helpers-interrupt');

const idleBefore = { 50: 12, 1000: 3 };
/** ' [lo–hi]' for a ratio's 95% interval, '' when there is none (a single round). */
const interval = (iv) => (iv ? ` [${iv[0]}–${iv[1]}]` : '');
const targets = [
  [
    'detect-only loop cost ratio <= 1.01 (ping-pong and timers, every timeout; fastest third of runs [95% interval]; median of paired rounds after it)',
    lhLoop
      .map(
        (r) =>
          `${r.workload}@${r.timeoutMs}ms ${r.fastRatio}${interval(r.fastRatioInterval)} (CPU ${r.loopCpuFastRatio}; paired median ${r.ratio})`,
      )
      .join(', '),
    lhLoop.length > 0 && lhLoop.every((r) => r.fastRatio <= 1.01),
  ],
  [
    'detect-only loop cost level with or ahead of every peer (within 0.01; fastest third of runs)',
    lhLoop
      .map((r) => `${r.workload}@${r.timeoutMs}ms ${r.fastRatio} vs ${round(peerBest(r.workload, r.timeoutMs), 3)}`)
      .join(', '),
    lhLoop.length > 0 && lhLoop.every((r) => r.fastRatio <= peerBest(r.workload, r.timeoutMs) + 0.01),
  ],
  [
    'idle CPU added no higher than before (+12 ms/s at 50 ms, +3 ms/s at 1 s)',
    lhIdle.map((r) => `${r.timeoutMs} ms: +${r.addedMsPerS} ms/s`).join(', '),
    lhIdle.every((r) => r.addedMsPerS <= (idleBefore[r.timeoutMs] ?? Infinity)),
  ],
  ...(instructions.unavailable
    ? []
    : [
        [
          'detect-only loop-thread instructions per callback <= x1.01 (callgrind; ping-pong and HTTP, every timeout)',
          countedLh.map((r) => `${r.workload}@${r.timeoutMs}ms x${r.ratio} (${r.addedInstructions})`).join(', '),
          countedLh.length > 0 && countedLh.every((r) => r.ratio <= 1.01),
        ],
        [
          'detect-only loop-thread instructions level with or below every peer counted (within 0.01)',
          countedLh
            .map((r) => {
              const best = countedPeerBest(r.workload, r.timeoutMs);
              return `${r.workload}@${r.timeoutMs}ms x${r.ratio} vs ${best === null ? 'no peer counted' : `x${round(best, 4)}`}`;
            })
            .join(', '),
          countedLh.length > 0 &&
            countedLh.every((r) => {
              const best = countedPeerBest(r.workload, r.timeoutMs);
              return best !== null && r.ratio <= best + 0.01;
            }),
        ],
        [
          // HTTP's system calls per request move with timing (how reads and writes fall into loop
          // turns): -0.103 and +0.026 for detect-only in one Node 20 run, -0.085 to +0.026 for the
          // peers. They are shown, and only the ping-pong, which repeats exactly, is judged.
          'detect-only adds no system call on the loop thread (callgrind, per ping-pong callback; HTTP shown, its count moves with timing)',
          countedLh.map((r) => `${r.workload}@${r.timeoutMs}ms ${r.addedSyscalls}`).join(', '),
          countedLh.some((r) => r.workload === 'ping-pong') &&
            countedLh.filter((r) => r.workload === 'ping-pong').every((r) => r.addedSyscalls < 0.01),
        ],
        [
          "interrupt: 'everywhere' HTTP server loop-thread instructions per request <= x1.031 (callgrind; a throughput ratio >= 0.97 where the server's CPU is the limit)",
          countedEverywhereHttp.map((r) => `${r.timeoutMs} ms x${r.ratio} (${r.addedInstructions})`).join(', ') ||
            'not counted',
          countedEverywhereHttp.length > 0 && countedEverywhereHttp.every((r) => r.ratio <= 1.031),
        ],
      ]),
  [
    'detect-only ping-pong ratio <= 1.02 (fastest third of runs)',
    lhPing?.fastRatio,
    lhPing && lhPing.fastRatio <= 1.02,
  ],
  [
    'detect-only HTTP throughput ratio >= 0.99',
    lhHttp && `${lhHttp.ratio} (server CPU per request x${lhHttp.cpuRatio})`,
    lhHttp && lhHttp.ratio >= 0.99,
  ],
  [
    "interrupt: 'everywhere' adds <= 50 ns per callback over detect-only (ping-pong and timers, every timeout; median of paired rounds [95% interval])",
    everywhereAdded.map((x) => `${x.workload}@${x.timeoutMs}ms ${pairedText(x.added)}`).join(', '),
    everywhereAdded.length > 0 && everywhereAdded.every((x) => x.added.ns <= 50),
  ],
  [
    "interrupt: 'everywhere' HTTP throughput ratio >= 0.97",
    lhHttpInterrupt && `${lhHttpInterrupt.ratio} (server CPU per request x${lhHttpInterrupt.cpuRatio})`,
    lhHttpInterrupt && lhHttpInterrupt.ratio >= 0.97,
  ],
  [
    "interrupt: 'guarded' costs nothing beyond detection (ping-pong, within 10 ns; median of paired rounds [95% interval])",
    guardedAdded && pairedText(guardedAdded),
    guardedAdded !== null && guardedAdded.ns <= 10,
  ],
  [
    'blocks >= 1.05x always reported',
    lhRows
      .filter((r) => r.factor >= 1.05)
      .map((r) => `${r.reported}/${r.trials}`)
      .join(' '),
    lhRows.filter((r) => r.factor >= 1.05).every((r) => r.reported === r.trials),
  ],
  [
    'blocks <= 0.9x never reported',
    lhRows
      .filter((r) => r.factor <= 0.9)
      .map((r) => `${r.reported}/${r.trials}`)
      .join(' '),
    lhRows.filter((r) => r.factor <= 0.9).every((r) => r.reported === 0),
  ],
  [
    'duration within max(2 ms, 2%)',
    lhRows
      .map((r) => r.durationErrMaxMs)
      .filter((v) => v !== null)
      .reduce((a, b) => Math.max(a, b), 0),
    lhRows.every(
      (r) => r.durationErrMaxMs === null || r.durationErrMaxMs <= Math.max(2, 0.02 * r.timeoutMs * r.factor),
    ),
  ],
  ['stack capture p99 <= 1 ms', `${capture.captureCostUs.p99} µs`, capture.captureCostUs.p99 <= 1000],
  [
    'interrupt latency p99 <= 10 ms',
    `spin ${capture.interruptLatencyMs.spin.p99} ms, regex ${capture.interruptLatencyMs.regex.p99} ms`,
    capture.interruptLatencyMs.spin.p99 <= 10 && capture.interruptLatencyMs.regex.p99 <= 10,
  ],
  [
    'RSS added <= 2 MiB',
    memory.addedAnonMiB === null
      ? `${memory.addedMiB} MiB`
      : `${memory.addedMiB} MiB: ${memory.addedAnonMiB} MiB private (anonymous), ${memory.addedFileMiB} MiB file-backed (Node's own executable paged in, and the addon's text)`,
    memory.addedMiB <= 2,
  ],
  [`no RSS growth over ${memory.detections} detections`, `${memory.growthMiB} MiB`, memory.growthMiB <= 1],
  // Issue 11: >= 99% of live warnings of JavaScript blocks carry the stack, on time or late.
  [
    'live warnings of JavaScript blocks with the stack >= 99% (spin, alloc, JSON, regex)',
    liveStacks.map((r) => `${r.kind} ${r.withStackPercent}% (${r.onTimePercent}% on time)`).join(', '),
    liveStacks.every((r) => r.withStackPercent >= 99),
  ],
  // Issue 11: 2,000 detectors on one loop share one sample per deadline: each still measures a
  // 200 ms block as at most 220 ms, and together they cost under 5% of a CPU idle.
  [
    `${manyDetectors.detectors} detectors on one loop: a ${manyDetectors.spinMs} ms block measured <= 220 ms by each (every run)`,
    manyDetectors.runs
      .map((r) => `${r.reportedBy} reported, ${r.durationMs.min}-${r.durationMs.max} ms for a ${r.spinMs} ms spin`)
      .join('; '),
    manyDetectors.runs.every((r) => r.reportedBy === manyDetectors.detectors && r.durationMs.max <= 220),
  ],
  [
    `idle CPU with ${manyDetectors.detectors} detectors < 5% (whole process, timeout ${manyDetectors.timeoutMs} ms, every run)`,
    manyDetectors.runs.map((r) => `${r.idleCpuPercent}%`).join(', '),
    manyDetectors.runs.every((r) => r.idleCpuPercent < 5),
  ],
  // Issue 11: >= 95% of live warnings of blocks outside JavaScript name the sync API (or the GC).
  (() => {
    const warned = nativeBlocks.reduce((a, r) => a + r.warnings, 0);
    const named = nativeBlocks.reduce((a, r) => a + r.named, 0);
    return [
      'native blocks named >= 95% (live warnings naming the sync API or the GC, every scenario)',
      `${warned ? round((100 * named) / warned, 1) : null}% of ${warned}: ${nativeBlocks.map((r) => `${r.scenario} ${r.namedPercent}%`).join(', ')}`,
      nativeBlocks.length > 0 && nativeBlocks.every((r) => r.warnings > 0 && r.namedPercent >= 95),
    ];
  })(),
  // Issue 12: asyncContext and OpenTelemetry add < 5 µs per block at capture (the read in the
  // sampling interrupt), and nothing per loop turn.
  ...(asyncContext.unavailable
    ? []
    : [
        [
          'asyncContext read < 5 µs per block at capture (p50, in the sampling interrupt)',
          `whole store ${asyncContext.perBlockInInterruptUs.wholeStore.p50} µs (p99 ${asyncContext.perBlockInInterruptUs.wholeStore.p99}), one key ${asyncContext.perBlockInInterruptUs.pickedKey.p50} µs (p99 ${asyncContext.perBlockInInterruptUs.pickedKey.p99}); warm loop: ${asyncContext.warmReadUs.wholeStore} µs, ${asyncContext.warmReadUs.pickedKey} µs; this machine's cold floor: V8's JSON.stringify of the same store ${asyncContext.coldFloorUs.jsonStringify} µs, an empty addon call ${asyncContext.coldFloorUs.emptyNativeCall} µs`,
          asyncContext.perBlockInInterruptUs.wholeStore.p50 < 5,
        ],
      ]),
  ...(otel.unavailable || !otel.spansReadable
    ? []
    : [
        [
          'OpenTelemetry span read < 5 µs per block at capture (p50, in the sampling interrupt)',
          `${otel.perBlock.on.inInterruptUs.p50} µs (p99 ${otel.perBlock.on.inInterruptUs.p99}); then at delivery ${otel.perBlock.on.atDeliveryUs.p50} µs of JavaScript (metric only: ${otel.perBlock.metrics.atDeliveryUs.p50} µs)`,
          otel.perBlock.on.inInterruptUs.p50 < 5,
        ],
      ]),
  ...[
    ['asyncContext', asyncContext],
    ['OpenTelemetry', otel],
  ]
    .filter(([, r]) => !r.unavailable)
    .map(([name, r]) => [
      `${name}: nothing per loop turn (ping-pong, loop-thread CPU of the fastest run of each added within 2%; lib/turns.mjs says why the fastest)`,
      `fastest runs: ${r.perTurn.on.minAddedNs} ns wall, ${r.perTurn.on.minCpuAddedNs ?? '–'} ns CPU per turn (off: ${r.perTurn.off.minNs} / ${r.perTurn.off.minCpuNs ?? '–'} ns); medians: ${r.perTurn.on.addedNs} / ${r.perTurn.on.cpuAddedNs ?? '–'} ns`,
      r.perTurn.on.minCpuAddedNs === null
        ? Math.abs(r.perTurn.on.minAddedNs) <= 0.02 * r.perTurn.off.minNs
        : Math.abs(r.perTurn.on.minCpuAddedNs) <= 0.02 * r.perTurn.off.minCpuNs,
    ]),
  // Issue 13: a started SyncCallDetector adds < 1 µs per sync call when it takes no stack.
  ...(syncCalls.skipped
    ? []
    : [
        [
          'SyncCallDetector adds < 1 µs per sync call without a stack',
          Object.entries(syncCalls.ns)
            .map(([op, v]) => `${op} +${v.quietAdded} ns`)
            .join(', '),
          Object.values(syncCalls.ns).every((v) => v.quietAdded < 1000),
        ],
        // Issue 11: a running BlockingDetector's marker (nameSyncCalls) well under 1 µs per sync call.
        [
          'BlockingDetector marks a sync call in < 1 µs (nameSyncCalls, no SyncCallDetector)',
          Object.entries(syncCalls.ns)
            .map(([op, v]) => `${op} +${v.markerAdded} ns`)
            .join(', '),
          Object.values(syncCalls.ns).every((v) => v.markerAdded < 1000),
        ],
      ]),
  // Issue 15: prefork() against cluster (PSS after load, child readiness).
  ...(forkVsCluster.skipped ? [] : forkVsCluster.targets.map((t) => [t.target, t.value, t.met])),
].map(([target, value, met]) => ({ target, value, met: Boolean(met) }));

const all = {
  machine,
  targets,
  overhead,
  instructions,
  idle,
  http,
  precision,
  capture,
  asyncContext,
  otel,
  liveStacks,
  manyDetectors,
  nativeBlocks,
  memory,
  fork,
  forkVsCluster,
  syncCalls,
};
mkdirSync(results(''), { recursive: true });
writeFileSync(results('latest.json'), `${JSON.stringify(all, null, 2)}\n`);
writeFileSync(results('precision.svg'), precisionSvg(precision, FACTORS));

const md = [];
const table = (head, rows) => {
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of rows) md.push(`| ${r.map((v) => (v === null || v === undefined ? '–' : v)).join(' | ')} |`);
  md.push('');
};
md.push(
  `# Benchmarks`,
  '',
  `Node ${machine.node}, ${machine.cpus} × ${machine.cpu}, ${machine.date}${smoke ? ' (smoke run: the figures mean nothing)' : quick ? ' (quick run)' : ''}.`,
  '',
);
md.push('## Targets', '');
table(
  ['target', 'measured', 'met'],
  targets.map((t) => [t.target, t.value, t.met ? 'yes' : '**no**']),
);
md.push('## Loop overhead (ns per callback; ratio to no detector)', '');
md.push(
  `${overhead[0]?.rounds ?? 0} rounds, each running every configuration once in a fresh process (order rotated from round to round). On these VMs a run goes at one of two speeds whatever its configuration (the slower ~40% slower, in bursts of minutes), so the judged ratio is that of the mean of each configuration's fastest third of runs to the same without a detector, with its 95% interval (bootstrap); the loop-thread CPU ratio (from the loop thread's own CPU time) is taken the same way. The paired ratio is the median over rounds of a run against the same round's run without a detector, with its 95% interval: where an interval holds 1, this machine cannot tell the detector from no detector.`,
  '',
);
for (const w of ['ping-pong', 'timers']) {
  md.push(
    `${w === 'ping-pong' ? 'Empty setImmediate ping-pong (one loop turn per callback)' : 'Timers due at once (timer-heavy loop)'}:`,
    '',
  );
  table(
    [
      'detector',
      'timeout',
      'ns (median)',
      'ratio (fastest third)',
      '95% interval',
      'loop-thread CPU ratio (fastest third)',
      'paired ratio (median)',
      '95% interval',
      'added ns (paired median)',
    ],
    overhead
      .filter((r) => r.workload === w)
      .map((r) => [
        r.label,
        r.timeoutMs ? `${r.timeoutMs} ms` : '–',
        r.nsPerCallback,
        r.fastRatio,
        r.peer === 'none' || !r.fastRatioInterval ? '–' : r.fastRatioInterval.join('–'),
        r.loopCpuFastRatio,
        r.ratio,
        r.peer === 'none' || !r.ratioInterval ? '–' : r.ratioInterval.join('–'),
        r.addedNs,
      ]),
  );
}
md.push('## Loop cost counted in instructions (callgrind; the loop thread only)', '');
if (instructions.unavailable) md.push(`Not counted: ${instructions.unavailable}.`, '');
else {
  const repeatability = Object.entries(instructions.repeatability)
    .map(([workload, d]) => `${d} (${workload})`)
    .join(', ');
  const repeated = Object.values(instructions.repeatability).some((d) => d === null)
    ? 'Two identical runs of the baseline were not compared (a smoke run leaves that out)'
    : `Two identical runs of the baseline differed by ${repeatability} instructions per callback`;
  md.push(
    `The loop thread's instructions and system calls per callback under valgrind's callgrind, each thread counted apart (the monitor thread's work is not in these figures; its idle cost is in the next table), V8 made deterministic (\`--predictable\`, fixed seeds, no address randomisation). A figure is the difference between a run of ${instructions.sizes['ping-pong'].join(' and ')} callbacks (HTTP: ${instructions.sizes.http.join(' and ')} requests, one at a time on one keep-alive connection), divided by their difference: start-up cancels out. Every detector's timeout is scaled by valgrind's slowdown (x50), so callbacks stand to the timeout and heartbeat timers fire per callback as natively. Left out: cache misses and kernel time (the system calls are counted; under valgrind a clock read is one), perf_hooks.monitorEventLoopDelay (its 1 ms timer does not follow the timeout), and the timer-heavy loop (which timers are due at a turn depends on the wall clock, so its count moves with timing, not cost). ${repeated}; runs went ${instructions.parallel} at a time (counts do not depend on load).`,
    '',
  );
  table(
    ['workload', 'detector', 'timeout', 'instructions', 'ratio', 'added', 'system calls', 'added'],
    instructions.rows.map((r) => [
      r.workload,
      r.label,
      r.timeoutMs ? `${r.timeoutMs} ms` : '–',
      r.instructionsPerCallback,
      r.ratio,
      r.addedInstructions,
      r.syscallsPerCallback,
      r.addedSyscalls,
    ]),
  );
}
md.push('## Idle CPU (the loop waits on a timer; whole process, every thread; median of alternating runs)', '');
md.push(
  "loop-helpers' monitor looks at a waiting loop every timeout/20 (every 2.5 ms at 50 ms): that step bounds how far apart the two looks around a block's start can be, which is what holds the precision floors (docs/how-it-works.md). At short timeouts its idle cost is nearly all those wake-ups (a timer's signal, `sigtimedwait`, one look at each loop); the last column divides the added CPU by them, so at long timeouts, with few wake-ups, it also carries what does not scale with them.",
  '',
);
table(
  ['detector', 'timeout', 'CPU ms/s', 'added ms/s', 'monitor wake-ups/s', 'added µs per wake-up'],
  idle.map((r) => [
    r.label,
    r.timeoutMs ? `${r.timeoutMs} ms` : '–',
    r.cpuMsPerS,
    r.addedMsPerS,
    r.monitorWakesPerS,
    r.monitorWakesPerS ? round((r.addedMsPerS * 1000) / r.monitorWakesPerS, 1) : '–',
  ]),
);
md.push('## HTTP throughput (autocannon, 10 connections, loopback)', '');
md.push(
  `Each round runs every configuration once (order rotated), after a 1 s warm-up of each new server; a ratio is the median over rounds of a configuration against the same round's run without a detector${http[0]?.pinned ? '; the server ran alone on one CPU, autocannon on the other(s)' : ''}. The range shows the rounds' spread: on a shared virtual machine it is far wider than a detector's cost per request (nanoseconds per callback, in the loop-cost table above), so a ratio within it is noise.`,
  '',
);
const spread = (xs) => (xs.length > 1 ? `${Math.min(...xs)}–${Math.max(...xs)}` : '–');
table(
  ['detector', 'requests/s', 'ratio', 'rounds (range)', 'server CPU µs per request', 'CPU ratio', 'CPU rounds (range)'],
  http.map((r) => [
    r.label,
    r.requestsPerSecond,
    r.ratio,
    r.peer === 'none' ? '–' : spread(r.roundRatios),
    r.serverCpuUsPerRequest,
    r.cpuRatio,
    r.peer === 'none' ? '–' : spread(r.cpuRoundRatios),
  ]),
);
md.push('## Precision (blocks of k × timeout; all detectors watch the same blocks)', '');
md.push(
  'Detection: blocks reported / blocks. Latency: deadline (block start + timeout) to the report; detectors that only report after the block ends cannot be early.',
  '',
);
for (const T of [...new Set(precision.map((r) => r.timeoutMs))]) {
  md.push(`Timeout ${T} ms:`, '');
  const peers = [...new Set(precision.map((r) => r.peer))];
  table(
    ['detector', ...FACTORS.map((f) => `${f}x`), 'duration error p50/max ms', 'latency p50/p99 ms'],
    peers.map((p) => {
      const rs = precision.filter((r) => r.peer === p && r.timeoutMs === T);
      const ge = rs.filter((r) => r.factor >= 1.05);
      const dur = rs.map((r) => r.durationErrMaxMs).filter((v) => v !== null);
      const durMed = rs.map((r) => r.durationErrMedianMs).filter((v) => v !== null);
      const lat50 = ge.map((r) => r.latencyP50Ms).filter((v) => v !== null);
      const lat99 = ge.map((r) => r.latencyP99Ms).filter((v) => v !== null);
      return [
        rs[0]?.label,
        ...FACTORS.map((f) => {
          const r = rs.find((x) => x.factor === f);
          return r ? `${r.reported}/${r.trials}` : '–';
        }),
        dur.length ? `${Math.max(...durMed)} / ${Math.max(...dur)}` : 'no duration',
        lat50.length ? `${Math.min(...lat50)}–${Math.max(...lat50)} / ${Math.max(...lat99)}` : '–',
      ];
    }),
  );
}
md.push('![precision](precision.svg)', '');
md.push('## Stack capture and interrupts (loop-helpers)', '');
table(
  ['measure', 'p50', 'p99'],
  [
    [
      `stack capture cost on the blocked thread (${capture.samples} samples)`,
      `${capture.captureCostUs.p50} µs`,
      `${capture.captureCostUs.p99} µs`,
    ],
    ['request → sample on the blocked thread', `${capture.sampleDelayMs.p50} ms`, `${capture.sampleDelayMs.p99} ms`],
    [
      `interrupt latency, spin loop (${capture.interruptLatencyMs.spin.trials})`,
      `${capture.interruptLatencyMs.spin.p50} ms`,
      `${capture.interruptLatencyMs.spin.p99} ms`,
    ],
    [
      `interrupt latency, catastrophic regexp (${capture.interruptLatencyMs.regex.trials})`,
      `${capture.interruptLatencyMs.regex.p50} ms`,
      `${capture.interruptLatencyMs.regex.p99} ms`,
    ],
  ],
);
md.push('## asyncContext and OpenTelemetry (per block; blocks of 50 ms at timeout 20 ms)', '');
md.push(
  'In the interrupt: the read in the first sample of each block, timed natively (cold: it runs once per block). At delivery: the JavaScript `enableOpenTelemetry()` runs per block once the loop turns again (histogram record, `span.addEvent`). Sample cost: the whole interrupt (stack capture and read), p50.',
  '',
);
const dist = (d) => (d ? `${d.p50} / ${d.p99} µs` : '–');
table(
  ['configuration', 'in the interrupt p50 / p99', 'at delivery p50 / p99', 'sample cost p50'],
  [
    ...(asyncContext.unavailable
      ? [['asyncContext', asyncContext.unavailable, '–', '–']]
      : [
          ['detector alone', '–', '–', `${asyncContext.sampleCostUs.off.p50} µs`],
          [
            'asyncContext, whole store',
            dist(asyncContext.perBlockInInterruptUs.wholeStore),
            '–',
            `${asyncContext.sampleCostUs.wholeStore.p50} µs`,
          ],
          ['asyncContext, one key', dist(asyncContext.perBlockInInterruptUs.pickedKey), '–', '–'],
        ]),
    ...(otel.unavailable
      ? [['OpenTelemetry', otel.unavailable, '–', '–']]
      : [
          ['OpenTelemetry off (detector alone)', '–', '–', `${otel.perBlock.off.sampleCostUsP50} µs`],
          [
            'OpenTelemetry, metric only',
            '–',
            dist(otel.perBlock.metrics.atDeliveryUs),
            `${otel.perBlock.metrics.sampleCostUsP50} µs`,
          ],
          [
            'OpenTelemetry, metric and spans',
            dist(otel.perBlock.on.inInterruptUs),
            dist(otel.perBlock.on.atDeliveryUs),
            `${otel.perBlock.on.sampleCostUsP50} µs`,
          ],
        ]),
  ],
);
if (!asyncContext.unavailable) {
  md.push(
    `This machine's cold floor, for scale: each timed once after 50 ms of other code, as the read in the interrupt is, V8's own \`JSON.stringify\` of the same store takes ${asyncContext.coldFloorUs.jsonStringify} µs (p50) and an empty call into the addon ${asyncContext.coldFloorUs.emptyNativeCall} µs; in a loop, the read takes ${asyncContext.warmReadUs.wholeStore} µs (whole store) and ${asyncContext.warmReadUs.pickedKey} µs (one key).`,
    '',
  );
}
md.push(
  `Off: ${asyncContext.unavailable ? '–' : asyncContext.readsWhenOff} native reads without \`asyncContext\`; ${otel.unavailable ? '–' : `${otel.perBlock.off.nativeReads} with OpenTelemetry off, ${otel.perBlock.metrics.nativeReads} with its metric only`} (nothing is read or hooked when a feature is off).`,
  '',
);
md.push(
  `## Live warnings with the blocking stack (blocks of 3 × ${50} ms, \`log: 'json'\`; late = the stack followed in a BlockingStack line)`,
  '',
);
table(
  ['block', 'warnings', 'stack on time', 'stack late', 'no stack', 'with stack'],
  liveStacks.map((r) => [r.kind, r.warnings, r.onTime, r.late, r.none, `${r.withStackPercent}%`]),
);
md.push(
  `## Many detectors on one loop (${manyDetectors.detectors} BlockingDetectors, timeout ${manyDetectors.timeoutMs} ms, a ${manyDetectors.spinMs} ms spin in a timer callback; fresh process per run)`,
  '',
  "Each detector's report of the spin's block (they share one look at the loop per monitor cycle and one stack sample per deadline); the spin's own wall and CPU time; the whole process's CPU while all of them watched the idle loop for 1 s before it.",
  '',
);
table(
  ['run', 'reported by', 'duration min / p50 / max', 'spin (wall / CPU)', 'idle CPU'],
  manyDetectors.runs.map((r, i) => [
    i + 1,
    r.reportedBy,
    `${r.durationMs.min} / ${r.durationMs.p50} / ${r.durationMs.max} ms`,
    `${r.spinMs} / ${r.spinCpuMs ?? '–'} ms`,
    `${r.idleCpuPercent}%`,
  ]),
);
md.push(
  `## Blocks outside JavaScript named (blocks of 3+ × 100 ms, \`log: 'json'\`; named = the live warning's \`syncApi\` or \`gc\` says it)`,
  '',
);
table(
  ['block', 'live warnings', 'named', 'named %', "events with the caller's frames", 'named otherwise'],
  nativeBlocks.map((r) => [
    r.scenario,
    r.warnings,
    r.named,
    `${r.namedPercent}%`,
    `${r.eventsWithCaller}/${r.events}`,
    r.other.join(', ') || '–',
  ]),
);
md.push('## Memory (RSS)', '');
table(
  ['state', 'RSS MiB'],
  [
    ['no detector', memory.rssWithoutMiB],
    ['detector running', memory.rssRunningMiB],
    ...(memory.addedAnonMiB === null
      ? []
      : [
          ['added: private (anonymous)', memory.addedAnonMiB],
          ['added: file-backed (pages of node and the addon)', memory.addedFileMiB],
        ]),
    ...memory.checkpoints.map((c) => [`after ${c.detections} detections`, c.rssMiB]),
  ],
);
md.push('## fork() (loop-helpers only; no peer forks a Node.js process)', '');
if (fork.skipped) md.push(fork.skipped, '');
else {
  md.push(
    "Parent's stall per fork by heap size (median of the forks after the first; the first also clears V8's new don't-fork mappings):",
    '',
  );
  table(
    [
      'heap',
      'RSS MiB',
      'stall p50 / max ms',
      'park ms',
      'smaps + madvise ms',
      'fork(2) ms',
      'first fork ms',
      'mappings',
    ],
    fork.stall.map((r) => [
      `${r.heapMB} MB`,
      r.rssMiB,
      `${r.totalMs.p50} / ${r.totalMs.max}`,
      r.parkMs,
      r.memoryMs,
      r.forkMs,
      r.firstForkMs,
      r.mappings,
    ]),
  );
  const s = fork.stress;
  md.push(
    `Stress: ${s.cycles} cycles of fork → child uses fs + crypto, allocates, exits (process.exit or natural end) → waitpid, from a parent that uses the threadpool and allocates between forks: ${s.ok}/${s.cycles} ended with the expected code, ${s.wallS} s in all; cycle p50 ${s.cycleMs.p50} ms / p99 ${s.cycleMs.p99} ms; parent stall p50 ${s.stallMs.p50} ms / p99 ${s.stallMs.p99} ms.`,
    '',
  );
}
md.push('## fork() against cluster', '', ...forkVsClusterMarkdown(forkVsCluster));
md.push('## SyncCallDetector: ns per synchronous call', '');
if (syncCalls.skipped) md.push(syncCalls.skipped, '');
else {
  table(
    [
      'call',
      'no detector',
      'started, not reported',
      'added',
      'reported (stack taken)',
      'one full report',
      'BlockingDetector marking it',
      'added',
    ],
    Object.entries(syncCalls.ns).map(([op, v]) => [
      op,
      v.off,
      v.quiet,
      `+${v.quietAdded}`,
      v.stack,
      v.report,
      v.marker,
      `+${v.markerAdded}`,
    ]),
  );
}
writeFileSync(results('latest.md'), `${md.join('\n')}\n`);
// Each Node.js major keeps its own copy of its last run.
const major = process.versions.node.split('.')[0];
copyFileSync(results('latest.md'), results(`node${major}.md`));
step(`done: ${resultsDir}/latest.md (and node${major}.md), latest.json, the SVGs`);
console.log(md.join('\n'));
