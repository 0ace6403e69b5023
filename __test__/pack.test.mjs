// Tarballs that install: `npm run pack:local` packs the main package and this platform's package;
// installing both into a fresh project, with no Rust toolchain (nor anything but node) on PATH,
// gives a working detector, and the installed package holds no Rust sources.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const root = fileURLToPath(new URL('..', import.meta.url));

/** npm's own script, to run it under this test's node with a PATH that has nothing else. */
function npmCli() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const npm = join(dir, 'npm');
    if (!existsSync(npm)) continue;
    const cli = join(realpathSync(npm), '..', 'npm-cli.js');
    if (existsSync(cli)) return cli;
  }
  return null;
}

test('the packed tarballs install into a fresh project without Rust, and the detector works there', (t) => {
  const cli = npmCli();
  if (!cli) {
    t.fail('npm is not on PATH');
    return;
  }
  const work = mkdtempSync(join(tmpdir(), 'loop-helpers-pack-test-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  const packed = execFileSync(
    process.execPath,
    [join(root, 'scripts', 'pack-local.mjs'), '--out', join(work, 'tarballs')],
    {
      cwd: root,
      encoding: 'utf8',
    },
  )
    .trim()
    .split('\n');
  t.is(packed.length, 2, packed.join('\n'));
  t.regex(packed[0], /loop-helpers-\d+\.\d+\.\d+.*\.tgz$/);
  t.regex(packed[1], /loop-helpers-(linux|darwin)-[a-z0-9]+(-gnu|-musl)?-\d+\.\d+\.\d+.*\.tgz$/);

  // A PATH with node alone: no cargo, rustc, napi or compiler can run during the install.
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), '{ "name": "app", "version": "1.0.0", "private": true }\n');
  const env = { HOME: work, PATH: bin, npm_config_cache: join(work, 'npm-cache') };
  const install = spawnSync(
    process.execPath,
    [cli, 'install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', ...packed],
    { cwd: app, env, encoding: 'utf8', timeout: 120_000 },
  );
  t.is(install.status, 0, `npm install: ${install.stderr}`);

  const installed = join(app, 'node_modules', 'loop-helpers');
  t.true(existsSync(join(installed, 'dist', 'index.js')));
  t.false(existsSync(join(installed, 'crates')), 'no Rust sources in the installed package');
  t.false(existsSync(join(installed, 'Cargo.toml')));
  const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
  t.is(pkg.name, 'loop-helpers');

  // The installed copy, not this checkout: a real block is reported with its stack.
  writeFileSync(
    join(app, 'main.cjs'),
    [
      "const { BlockingDetector, capabilities } = require('loop-helpers');",
      "if (!require.resolve('loop-helpers').startsWith(__dirname)) throw new Error('not the installed copy');",
      'const events = [];',
      "const d = new BlockingDetector({ timeout: 0.1, log: false, raiseExc: false }).on('blocked', (e) => events.push(e));",
      'd.start();',
      'setTimeout(function spinInstalled() {',
      '  const end = Date.now() + 300;',
      '  while (Date.now() < end);',
      '  setTimeout(() => {',
      '    d.stop();',
      '    const frames = events[0]?.samples[0]?.frames ?? [];',
      '    console.log(JSON.stringify({ events: events.length, top: frames.map((f) => f.functionName), stackCapture: capabilities().stackCapture }));',
      '  }, 20);',
      '}, 10);',
    ].join('\n'),
  );
  const run = spawnSync(process.execPath, ['main.cjs'], { cwd: app, env, encoding: 'utf8', timeout: 30_000 });
  t.is(run.status, 0, run.stderr);
  const r = JSON.parse(run.stdout.trim().split('\n').pop());
  t.is(r.events, 1, run.stdout);
  if (r.stackCapture) t.true(r.top.includes('spinInstalled'), run.stdout);

  // Without its platform package (another architecture's is not installed), the installed copy
  // says where the binary comes from: not `npm run build`, which an installed package cannot run.
  const other = process.arch === 'arm64' ? 'x64' : 'arm64';
  const missing = spawnSync(
    process.execPath,
    [
      '-e',
      `Object.defineProperty(process, 'arch', { value: ${JSON.stringify(other)} });
       try { require('loop-helpers').capabilities(); console.log('loaded'); }
       catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`,
    ],
    { cwd: app, env: { ...env, LOOP_HELPERS_NATIVE_PATH: '' }, encoding: 'utf8', timeout: 30_000 },
  );
  const error = JSON.parse(missing.stdout.trim().split('\n').pop());
  t.is(error.code, 'ERR_LOOP_HELPERS_NATIVE_LOAD', missing.stdout + missing.stderr);
  t.regex(error.message, new RegExp(`platform package loop-helpers-\\w+-${other}\\b.*an optional dependency`));
  t.regex(error.message, /reinstall without `--omit=optional`/);
  t.notRegex(error.message, /npm run build/);
});
