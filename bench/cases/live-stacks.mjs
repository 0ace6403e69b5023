// How often a live warning carries the blocking code's stack (issue 11: >= 99%, GC-heavy blocks
// included), over four kinds of JavaScript blocks: a spin, allocation-heavy code (the GC runs in the
// block), JSON.stringify/parse of a large object, and a backtracking regular expression. Each block
// lasts 3 x the timeout. Counted from the `log: 'json'` lines: a BlockingWarning line with frames is
// "on time"; one without frames that a BlockingStack line completes is "late"; the rest "none".
// Child mode: `node live-stacks.mjs --child <kind> <blocks>` (the lines go to stderr).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { round, sized, sleep } from '../lib/stats.mjs';

const require = createRequire(import.meta.url);
const TIMEOUT_MS = 50;

const kinds = {
  spin(ms) {
    const end = Date.now() + ms;
    while (Date.now() < end);
  },
  alloc(ms) {
    const end = Date.now() + ms;
    let keep = [];
    while (Date.now() < end) {
      keep.push({ a: [1, 2, 3], s: `x${keep.length}` });
      if (keep.length > 200_000) keep = [];
    }
  },
  json(ms) {
    const big = Array.from({ length: 20_000 }, (_, i) => ({ i, name: `item ${i}`, tags: ['a', 'b'] }));
    const end = Date.now() + ms;
    while (Date.now() < end) JSON.parse(JSON.stringify(big));
  },
  regex(ms) {
    const end = Date.now() + ms;
    const re = /^(a+)+$/;
    while (Date.now() < end) re.test(`${'a'.repeat(22)}!`);
  },
};

if (process.argv[2] === '--child') {
  const { BlockingDetector } = require('../../dist/index.js');
  const [, , , kind, blocks] = process.argv;
  const d = new BlockingDetector({
    timeout: TIMEOUT_MS / 1000,
    aggressive: false,
    raiseExc: false,
    log: 'json',
  }).start();
  for (let i = 0; i < Number(blocks); i++) {
    await new Promise((r) =>
      setTimeout(() => {
        kinds[kind](3 * TIMEOUT_MS);
        r();
      }, 1),
    );
    await sleep(20);
  }
  d.stop();
  process.exit(0);
}

/** Live-warning stack coverage per kind of block. */
export function runLiveStacks(opts) {
  const blocks = sized(opts, 50, 10, 2);
  const self = fileURLToPath(import.meta.url);
  const rows = [];
  for (const kind of Object.keys(kinds)) {
    const r = spawnSync(process.execPath, [self, '--child', kind, String(blocks)], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const lines = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    const warnings = lines.filter((l) => l.type === 'BlockingWarning');
    const late = new Set(lines.filter((l) => l.type === 'BlockingStack').map((l) => `${l.startHrtimeMs}/${l.index}`));
    const onTime = warnings.filter((w) => w.frames?.length > 0).length;
    const completed = warnings.filter((w) => !w.frames && late.has(`${w.startHrtimeMs}/${w.index}`)).length;
    rows.push({
      kind,
      warnings: warnings.length,
      onTime,
      late: completed,
      none: warnings.length - onTime - completed,
      withStackPercent: warnings.length ? round((100 * (onTime + completed)) / warnings.length, 1) : null,
      onTimePercent: warnings.length ? round((100 * onTime) / warnings.length, 1) : null,
    });
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(runLiveStacks({ quick: process.argv.includes('--quick') }), null, 2));
}
