// `npm run test:node-matrix`: the whole test suite under Node.js 20, 22, 24 and 26 with one and the
// same native addon (built once, for this platform). Each Node.js comes from the npm package
// `node-<platform>-<arch>@<major>` (it ships bin/node), unpacked into .cache/node-matrix/.
// Writes a summary to bench/results/node-matrix.md. Exit status: 0 when every run passed.
//   node scripts/node-matrix.mjs [majors...]   e.g. `-- 22 24`
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cache = join(root, '.cache', 'node-matrix');
const majors = process.argv.slice(2).filter((a) => /^\d+$/.test(a));
const MAJORS = majors.length ? majors : ['20', '22', '24', '26'];
const say = (m) => console.error(`[node-matrix] ${m}`);

/** bin/node of node-<platform>-<arch>@<major>, downloaded once. */
function nodeBinary(major) {
  const dir = join(cache, major);
  const bin = join(dir, 'package', 'bin', 'node');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const pkg = `node-${process.platform}-${process.arch}@${major}`;
  say(`fetching ${pkg}`);
  const tgz = execFileSync('npm', ['pack', pkg, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim();
  execFileSync('tar', ['xzf', join(dir, tgz.split('\n').pop()), '-C', dir]);
  return bin;
}

execFileSync(process.execPath, [join(root, 'scripts', 'setup.mjs')], { stdio: 'inherit' });
const { platformTriple } = await import('./platform.mjs');
const addon = join(root, `loop-helpers.${platformTriple()}.node`);
const addonHash = createHash('sha256').update(readFileSync(addon)).digest('hex').slice(0, 16);
say(`one addon for every run: ${addon} (sha256 ${addonHash}…)`);

const rows = [];
for (const major of MAJORS) {
  const node = nodeBinary(major);
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  say(`Node ${version}: running the suite`);
  const started = Date.now();
  const r = spawnSync(node, [join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, LOOP_HELPERS_NATIVE_PATH: addon },
    maxBuffer: 256 << 20,
    timeout: 20 * 60_000,
  });
  const out = `${r.stdout}\n${r.stderr}`;
  // ava's verbose lines: one per test.
  const lines = (re) => out.split('\n').filter((l) => re.test(l)).length;
  const row = {
    node: version,
    passed: lines(/^\s+✔ /),
    failed: lines(/^\s+✘ /),
    skipped: lines(/^\s+- \[skip\]/),
    seconds: Math.round((Date.now() - started) / 1000),
    status: r.status,
    failures: [...out.matchAll(/✘ \[fail\]: (.+)/g)].map((m) => m[1]),
  };
  rows.push(row);
  say(`Node ${version}: ${row.passed} passed, ${row.failed} failed, ${row.skipped} skipped (${row.seconds} s)`);
}

const md = [
  '# Test suite by Node.js version',
  '',
  `One addon (\`loop-helpers.${platformTriple()}.node\`, sha256 ${addonHash}…), ${new Date().toISOString()}, \`npm run test:node-matrix\`.`,
  '',
  '| Node.js | passed | failed | skipped | time |',
  '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.node} | ${r.passed} | ${r.failed} | ${r.skipped} | ${r.seconds} s |`),
  '',
  ...rows.flatMap((r) => r.failures.map((f) => `- ${r.node} failed: ${f}`)),
  '',
];
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(join(root, 'bench', 'results', 'node-matrix.md'), md.join('\n'));
console.log(md.join('\n'));
const ok = rows.every((r) => r.status === 0 && r.failed === 0 && r.passed > 0);
if (!ok) process.exitCode = 1;
say(`cached Node.js builds: ${readdirSync(cache).join(', ')}`);
