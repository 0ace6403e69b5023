// `npm run test:node-matrix`: the README's test command, `npm test`, under Node.js 20, 22, 24 and 26
// with one and the same native addon (built once, for this platform). Each Node.js comes from the npm
// package `node-<platform>-<arch>@<major>` (it ships bin/node), unpacked into .cache/node-matrix/.
// Each run puts that Node.js first on PATH and starts npm with it, so npm, the pretest step and ava
// (and ava's test processes) all run on it; LOOP_HELPERS_NATIVE_PATH pins the addon, whose hash is
// checked after every run. Node.js 24 is the primary version (run first); 20 is end-of-life.
// Counts passed, failed and skipped tests per version (ava's closing summary, cross-checked against
// its one line per test), writes them to bench/results/node-matrix.md, prints that table and, last,
// the totals line `node-matrix total: N passed, N failed, N skipped`. Exit status: 0 when every run
// passed (a run that fails outside any test, e.g. a crash or a timeout, counts as one failure).
//   node scripts/node-matrix.mjs [--verbose] [majors...]   e.g. `npm run test:node-matrix -- 22 24`
//   --verbose                    stream every run's output (otherwise only a failed run's is shown)
//   NODE_MATRIX_TIMEOUT=<s>      time limit of one version's run, default 420 s (one version takes
//                                about 150 s on an idle 2-core machine)
//   NODE_MATRIX_BUDGET=<s>       time limit of the whole matrix, default 1500 s (CI allows 90
//                                minutes; we aim at 15 for all of .ci/run and leave room for a slow
//                                day); a version that does not fit counts as one failure
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util'; // FORCE_COLOR would colour ava's marks
import { nodeBinary as fetchNodeBinary } from './node-binary.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const cache = join(root, '.cache', 'node-matrix');
const PRIMARY = '24';
const END_OF_LIFE = new Set(['20']);
const requested = process.argv.slice(2).filter((a) => /^\d+$/.test(a));
const verbose = process.argv.includes('--verbose');
// The primary version runs first; the table is in version order.
const MAJORS = (requested.length ? requested : ['20', '22', '24', '26']).sort(
  (a, b) => (b === PRIMARY) - (a === PRIMARY) || a - b,
);
const timeoutMs = Number(process.env.NODE_MATRIX_TIMEOUT || 420) * 1000;
const budgetMs = Number(process.env.NODE_MATRIX_BUDGET || 1500) * 1000;
const say = (m) => console.error(`[node-matrix] ${m}`);
const tag = (r) =>
  `${r.node}${r.major === PRIMARY ? ' (primary)' : ''}${END_OF_LIFE.has(r.major) ? ' (end-of-life)' : ''}`;

/** bin/node of node-<platform>-<arch>@<major>, downloaded once. */
const nodeBinary = (major) => fetchNodeBinary(major, say);

/** npm's JavaScript entry point, to start npm with a given node; undefined: run `npm` from PATH. */
function npmCli() {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && /npm-cli\.c?js$/.test(fromNpm)) return fromNpm;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, 'npm');
    if (!dir || !existsSync(p)) continue;
    const real = realpathSync(p);
    return /\.c?js$/.test(real) ? real : undefined;
  }
  return undefined;
}

const sha = (file) => createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 16);

let current; // the running child's process group, ended with us on Ctrl-C
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    try {
      if (current) process.kill(-current, 'SIGKILL');
    } catch {}
    process.exit(130);
  });
}
/** Runs `cmd args`, collecting stdout and stderr in arrival order; kills its process group after limitMs. */
function run(cmd, args, env, limitMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    current = child.pid;
    const chunks = [];
    const collect = (c) => {
      chunks.push(c);
      if (verbose) process.stderr.write(c);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL'); // npm, ava and ava's test processes
      } catch {}
    }, limitMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      current = undefined;
      resolve({ status: null, signal: null, timedOut, out: `${error.message}\n` });
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      current = undefined;
      resolve({ status, signal, timedOut, out: Buffer.concat(chunks).toString('utf8') });
    });
  });
}

/** passed / failed / skipped from ava's default reporter output. */
function count(output) {
  const lines = stripVTControlCharacters(output).split('\n');
  const perTest = (re) => lines.filter((l) => re.test(l));
  // ava's closing summary: `  49 tests passed` (printed only when nothing failed), `  2 tests failed`
  // (a test.failing that passed included), `  1 hook failed`, `  1 known failure` (a test.failing
  // that failed as expected: a pass here, like its `✔ [expected fail]` line), `  1 test skipped`.
  const summary = (re) => {
    const hits = lines.map((l) => l.match(re)).filter(Boolean);
    return hits.length ? Number(hits.at(-1)[1]) : undefined;
  };
  const fromLines = {
    passed: perTest(/^\s+✔ /).length,
    failed: perTest(/^\s+✘ \[(fail|unexpected pass)\]:/).length,
    skipped: perTest(/^\s+- \[skip\] /).length,
  };
  const sum = {
    passed: summary(/^\s+(\d+) tests? passed\s*$/),
    knownFailures: summary(/^\s+(\d+) known failures?\s*$/),
    failedTests: summary(/^\s+(\d+) tests? failed\s*$/),
    failedHooks: summary(/^\s+(\d+) hooks? failed\s*$/),
    skipped: summary(/^\s+(\d+) tests? skipped\s*$/),
  };
  // No summary at all: ava was killed or crashed before it could write one.
  const anySummary = Object.values(sum).some((v) => v !== undefined);
  const counts = {
    passed: sum.passed === undefined ? fromLines.passed : sum.passed + (sum.knownFailures ?? 0),
    failed: anySummary ? (sum.failedTests ?? 0) + (sum.failedHooks ?? 0) : fromLines.failed,
    skipped: anySummary ? (sum.skipped ?? 0) : fromLines.skipped,
  };
  // A mismatch means the parsing above no longer fits ava's output: said, not counted as a failure.
  const warnings = [];
  for (const k of ['passed', 'failed', 'skipped']) {
    if (counts[k] !== fromLines[k])
      warnings.push(`ava's summary says ${counts[k]} ${k}, its per-test lines ${fromLines[k]}`);
  }
  const titles = (re) => perTest(re).map((l) => l.replace(re, '').trim());
  return {
    ...counts,
    failures: titles(/^\s+✘ \[(fail|unexpected pass)\]: /),
    skips: titles(/^\s+- \[skip\] /),
    warnings,
  };
}

execFileSync(process.execPath, [join(root, 'scripts', 'setup.mjs')], { stdio: 'inherit' });
const { platformTriple } = await import('../lib/platform-triple.cjs');
const addon = join(root, `loop-helpers.${platformTriple()}.node`);
const addonHash = sha(addon);
const cli = npmCli();
say(`one addon for every run: ${addon} (sha256 ${addonHash}…)`);
say(`each run: ${cli ? `<that node> ${cli} test` : 'npm test'}, that node first on PATH`);

const rows = [];
const matrixStarted = Date.now();
for (const major of MAJORS) {
  const started = Date.now();
  const left = budgetMs - (started - matrixStarted);
  const row = {
    major,
    node: `v${major}`,
    passed: 0,
    failed: 0,
    skipped: 0,
    failures: [],
    skips: [],
    notes: [],
    warnings: [],
  };
  rows.push(row);
  if (left < 30_000) {
    row.seconds = 0;
    row.failed = 1;
    row.notes.push(`not run: the matrix's ${budgetMs / 1000} s (NODE_MATRIX_BUDGET) are used up`);
    say(`Node ${major}: ${row.notes[0]}`);
    continue;
  }
  let node;
  try {
    node = nodeBinary(major);
    row.node = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  } catch (e) {
    row.seconds = Math.round((Date.now() - started) / 1000);
    row.failed = 1;
    row.notes.push(`no Node.js ${major}: ${e.message.split('\n')[0]}`);
    say(`Node ${major}: ${row.notes[0]}`);
    continue;
  }
  const env = {
    ...process.env,
    PATH: [dirname(node), process.env.PATH].join(delimiter),
    LOOP_HELPERS_NATIVE_PATH: addon,
  };
  // An outer `npm run`'s own variables (npm_execpath, npm_node_execpath, npm_lifecycle_*, ...); its
  // npm_config_* are the same configuration the inner npm reads anyway.
  for (const k of Object.keys(env)) if (/^npm_/i.test(k) && !/^npm_config_/i.test(k)) delete env[k];
  let onPath;
  try {
    onPath = execFileSync('sh', ['-c', 'node --version'], { encoding: 'utf8', env }).trim();
  } catch (e) {
    onPath = `nothing (${e.message.split('\n')[0]})`;
  }
  const label = `Node ${tag(row)}`;
  say(`${label}: npm test`);
  const limitMs = Math.max(1000, Math.min(timeoutMs, budgetMs - (Date.now() - matrixStarted)));
  const r = await run(cli ? node : 'npm', cli ? [cli, 'test'] : ['test'], env, limitMs);
  Object.assign(row, count(r.out), { seconds: Math.round((Date.now() - started) / 1000) });
  if (onPath !== row.node) row.notes.push(`\`node\` on PATH was ${onPath}, not ${row.node}`);
  if (r.timedOut)
    row.notes.push(`killed after ${Math.round(limitMs / 1000)} s (NODE_MATRIX_TIMEOUT, NODE_MATRIX_BUDGET)`);
  if (existsSync(addon) && sha(addon) !== addonHash) row.notes.push('the addon changed during this run');
  const clean = r.status === 0 && !r.timedOut && row.notes.length === 0 && row.failed === 0 && row.passed > 0;
  if (!clean && row.failed === 0) {
    // A failure outside any test (a test file that crashed, a timeout, a wrong node or addon).
    row.failed = 1;
    row.notes.push(`failed outside any test (npm test: exit ${r.status ?? r.signal}): counted as 1 failure`);
  }
  row.ok = clean;
  if (!clean && !verbose) process.stderr.write(`${r.out}\n`);
  say(`${label}: ${row.passed} passed, ${row.failed} failed, ${row.skipped} skipped (${row.seconds} s)`);
  for (const n of [...row.notes, ...row.warnings]) say(`${label}: ${n}`);
}

rows.sort((a, b) => a.major - b.major);
const total = (k) => rows.reduce((s, r) => s + r[k], 0);
const totals = `${total('passed')} passed, ${total('failed')} failed, ${total('skipped')} skipped`;
const md = [
  '# Test suite by Node.js version',
  '',
  `One addon (\`loop-helpers.${platformTriple()}.node\`, sha256 ${addonHash}…), ${new Date().toISOString()}, \`npm run test:node-matrix\` (\`npm test\` under each Node.js).`,
  '',
  '| Node.js | passed | failed | skipped | time |',
  '|---|---|---|---|---|',
  ...rows.map((r) => `| ${tag(r)} | ${r.passed} | ${r.failed} | ${r.skipped} | ${r.seconds} s |`),
  `| total | ${total('passed')} | ${total('failed')} | ${total('skipped')} | |`,
  '',
  ...rows.flatMap((r) => r.failures.map((f) => `- ${r.node} failed: ${f}`)),
  ...rows.flatMap((r) => [...r.notes, ...r.warnings].map((n) => `- ${r.node}: ${n}`)),
  ...rows.flatMap((r) => r.skips.map((s) => `- ${r.node} skipped: ${s}`)),
  '',
];
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(join(root, 'bench', 'results', 'node-matrix.md'), md.join('\n').replace(/\n\n+$/, '\n'));
console.log(md.join('\n'));
const cachedMajors = readdirSync(cache).filter((d) => /^\d+$/.test(d)); // not a fetch's temporary directory
say(`cached Node.js builds: ${cachedMajors.join(', ')}`);
console.log(`node-matrix total: ${totals}`);
if (!rows.every((r) => r.ok)) process.exitCode = 1;
