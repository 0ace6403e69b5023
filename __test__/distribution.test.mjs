// How users get loop-helpers: ESM and CommonJS entry points (typed), zero-code mode, the
// diagnostics_channel channels, source maps, and the CI workflow's consistency with npm/.
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { fixture, liveWarningWithStack, runNode, warnings } from './helpers/run.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

/** The app directories made so far, removed when the file's tests are done. */
const appDirs = [];
test.after.always(() => {
  // The symlink inside is removed, not followed.
  for (const dir of appDirs) rmSync(dir, { recursive: true, force: true });
});

/** A directory where `loop-helpers` resolves to this checkout, as after `npm install loop-helpers`. */
function appDir() {
  const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-app-'));
  appDirs.push(dir);
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'loop-helpers'), 'dir');
  return dir;
}

test('ESM and CommonJS entry points export the same API', async (t) => {
  const dir = appDir();
  writeFileSync(
    join(dir, 'esm.mjs'),
    "import lh, { BlockingDetector, fork, capabilities } from 'loop-helpers';\n" +
      "import * as all from 'loop-helpers';\n" +
      "console.log(JSON.stringify({ names: Object.keys(all).filter((n) => n !== 'default').sort(), same: lh.BlockingDetector === BlockingDetector, types: [typeof BlockingDetector, typeof fork, typeof capabilities] }));\n",
  );
  writeFileSync(
    join(dir, 'cjs.cjs'),
    "const lh = require('loop-helpers');\nconsole.log(JSON.stringify({ names: Object.keys(lh).filter((n) => n !== '__esModule').sort() }));\n",
  );
  const esm = JSON.parse(execFileSync(process.execPath, [join(dir, 'esm.mjs')], { cwd: dir, encoding: 'utf8' }));
  const cjs = JSON.parse(execFileSync(process.execPath, [join(dir, 'cjs.cjs')], { cwd: dir, encoding: 'utf8' }));
  t.deepEqual(esm.names, cjs.names);
  t.true(esm.same, 'one copy of the code behind both');
  t.deepEqual(esm.types, ['function', 'function', 'function']);
  for (const name of [
    'BlockingDetector',
    'AlarmInterrupt',
    'capabilities',
    'fork',
    'waitpid',
    'tryWaitpid',
    'ForkError',
  ])
    t.true(cjs.names.includes(name), name);
});

test('both entry points are typed: a TypeScript consumer of each compiles under nodenext', (t) => {
  const dir = appDir();
  writeFileSync(
    join(dir, 'esm.mts'),
    "import { BlockingDetector, type BlockEvent, fork } from 'loop-helpers';\n" +
      'const d: BlockingDetector = new BlockingDetector({ timeout: 0.5 });\n' +
      'd.on("blocked", (e: BlockEvent) => e.samples[0]?.frames?.[0]?.lineNumber);\n' +
      'd.once("interrupt", (err) => err.message.length).off("blocked", () => {});\n' +
      'const pid: number = fork();\nexport { pid };\n',
  );
  writeFileSync(
    join(dir, 'cjs.cts'),
    "import lh = require('loop-helpers');\nconst d: lh.BlockingDetector = new lh.BlockingDetector(0.5);\nexport = d;\n",
  );
  writeFileSync(
    join(dir, 'bad.mts'),
    "import { BlockingDetector } from 'loop-helpers';\nnew BlockingDetector({ timeout: 'x' });\n",
  );
  const tsc = join(root, 'node_modules', '.bin', 'tsc');
  const common = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node'];
  const typeRoots = ['--typeRoots', join(root, 'node_modules', '@types')];
  const ok = (files) =>
    execFileSync(tsc, [...common, ...typeRoots, '--ignoreConfig', ...files], { cwd: dir, encoding: 'utf8' });
  writeFileSync(
    join(dir, 'misspelt.mts'),
    "import { BlockingDetector, type PreforkPool } from 'loop-helpers';\nnew BlockingDetector({ timeout: 0.5 }).on('blockd', () => {});\n" +
      "export const f = (p: PreforkPool) => p.on('exited', () => {});\n",
  );
  t.notThrows(() => ok(['esm.mts', 'cjs.cts']));
  const err = t.throws(() => ok(['bad.mts']));
  t.regex(String(err.stdout), /bad\.mts\(2,\d+\): error TS\d+/);
  // A misspelt event name is named as such, not reported as a listener of type 'never'.
  const misspelt = t.throws(() => ok(['misspelt.mts']));
  t.regex(
    String(misspelt.stdout),
    /misspelt\.mts\(2,\d+\): error TS2345: Argument of type '"blockd"' is not assignable to parameter of type 'keyof BlockingDetectorEvents'/,
  );
  t.regex(
    String(misspelt.stdout),
    /misspelt\.mts\(3,\d+\): error TS2345: Argument of type '"exited"' is not assignable to parameter of type 'keyof PreforkEvents'/,
  );
});

const register = (flag, env, mode = 'block') => {
  const dir = appDir();
  return runNode([flag, 'loop-helpers/register', fixture('register-app.cjs'), mode], {
    env: { LOOP_HELPERS_TIMEOUT: '0.1', ...env },
    timeoutMs: 20_000,
    cwd: dir,
  });
};

for (const flag of ['--require', '--import']) {
  test.serial(`zero-code mode (${flag} loop-helpers/register) reports a block, with its stack, in text`, async (t) => {
    const r = await register(flag, {});
    t.is(r.code, 0, r.stderr);
    t.true(warnings(r.stderr).length >= 1, r.stderr);
    t.true(
      liveWarningWithStack(
        r.stderr,
        'BlockingWarning: blocking detected after timeout=0\\.1; blocked for 0\\.\\d+ s',
        'spin \\(.*register-app\\.cjs:\\d+:\\d+\\)',
      ),
      r.stderr,
    );
    t.regex(r.stdout, /done/);
  });

  test.serial(`zero-code mode (${flag}) also watches Workers, in JSON`, async (t) => {
    const r = await register(flag, { LOOP_HELPERS_LOG: 'json', LOOP_HELPERS_AGGRESSIVE: 'false' }, 'worker');
    t.is(r.code, 0, r.stderr);
    const lines = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    const worker = lines.filter((l) => l.type === 'BlockingWarning' && l.threadId > 0);
    t.true(worker.length >= 1, r.stderr);
    t.true(
      worker.every((l) => l.index === 0),
      'aggressive=false: only the first warning of each block',
    );
  });
}

test.serial('zero-code mode: LOOP_HELPERS_RAISE=1 interrupts the blocking code', async (t) => {
  const start = Date.now();
  const r = await register('--require', { LOOP_HELPERS_RAISE: '1' }, 'long');
  t.is(r.code, 1);
  t.regex(r.stderr, /AlarmInterrupt: blocking detected after timeout=0\.1/);
  t.false(r.stdout.includes('done'));
  t.true(Date.now() - start < 2900, 'stopped before the 3 s spin ended');
});

test.serial('zero-code mode: LOOP_HELPERS_RAISE=1 reports a slow start-up without interrupting it', async (t) => {
  const r = await register('--require', { LOOP_HELPERS_RAISE: '1' }, 'slow-start');
  t.is(r.code, 1, r.stderr);
  t.true(r.stdout.includes('started'), 'the synchronous start-up ran to its end');
  t.true(
    liveWarningWithStack(
      r.stderr,
      'BlockingWarning: blocking detected after timeout=0\\.1; blocked for 0\\.\\d+ s',
      'spin ',
    ),
    r.stderr,
  );
  t.regex(r.stderr, /AlarmInterrupt: blocking detected after timeout=0\.1/, 'the later runaway timer was interrupted');
  t.false(r.stdout.includes('done'));
});

for (const [name, value, message] of [
  ['LOOP_HELPERS_TIMEOUT', 'abc', /LOOP_HELPERS_TIMEOUT must be a number of seconds from 0\.001 to 86400, got "abc"/],
  ['LOOP_HELPERS_TIMEOUT', '0', /LOOP_HELPERS_TIMEOUT .* got "0"/],
  ['LOOP_HELPERS_RAISE', 'maybe', /LOOP_HELPERS_RAISE must be true or false .* got "maybe"/],
  ['LOOP_HELPERS_AGGRESSIVE', '2', /LOOP_HELPERS_AGGRESSIVE must be true or false .* got "2"/],
  ['LOOP_HELPERS_LOG', 'xml', /LOOP_HELPERS_LOG must be text or json, got "xml"/],
  [
    'LOOP_HELPERS_LOG_REPEATS_AFTER_MS',
    '1m',
    /LOOP_HELPERS_LOG_REPEATS_AFTER_MS must be a number of milliseconds from 0 to 86400000, got "1m"/,
  ],
]) {
  test(`zero-code mode: ${name}=${value} is refused, naming the variable, in one short line`, async (t) => {
    const r = await register('--require', { [name]: value });
    t.is(r.code, 9, r.stderr);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /ERR_LOOP_HELPERS_ENV/);
    t.is(r.stderr.trim().split('\n').length, 1, `one line, no stack: ${r.stderr}`);
    t.false(r.stdout.includes('done'), 'the application did not run');
  });
}

test.serial(
  'with --enable-source-maps, frames of events and interrupts point into the TypeScript source; channels publish both',
  async (t) => {
    const tsLine =
      readFileSync(fixture('sourcemap/blocker.ts'), 'utf8')
        .split('\n')
        .findIndex((l) => l.includes('BLOCKING LINE')) + 1;
    const r = await runNode(['--enable-source-maps', fixture('sourcemap.cjs')]);
    t.is(r.code, 0, r.stderr);
    for (const top of [r.result.eventTop, r.result.errorTop]) {
      t.regex(top.fileName, /sourcemap\/blocker\.ts$/);
      t.is(top.lineNumber, tsLine);
      t.regex(top.generated.fileName, /sourcemap\/blocker\.js$/);
    }
    t.regex(r.result.error.stack, new RegExp(`at blockFor \\(.*blocker\\.ts:${tsLine}:\\d+\\)`));
    // The warning written during the block, too (mapped natively: JavaScript cannot run then).
    t.true(
      liveWarningWithStack(
        r.stderr,
        'BlockingWarning: blocking detected.*',
        `blockFor \\(.*sourcemap/blocker\\.ts:${tsLine}:\\d+\\)`,
      ),
      r.stderr,
    );
    t.deepEqual(r.result.published.blocked.length, 1);
    t.true(r.result.published.blocked[0].same);
    t.true(r.result.published.blocked[0].durationMs >= 240, `${r.result.published.blocked[0].durationMs}`);
    t.deepEqual(r.result.published.interrupt, [{ name: 'AlarmInterrupt' }]);
    // Without source maps, the generated JavaScript positions.
    const plain = await runNode([fixture('sourcemap.cjs')]);
    t.regex(plain.result.eventTop.fileName, /blocker\.js$/);
    t.regex(plain.stderr, /at blockFor \(.*sourcemap\/blocker\.js:\d+:\d+\)/);
    t.is(plain.result.eventTop.generated, undefined);
  },
);

test('the CI workflow builds every npm/ target and tests each binary where it runs, the primary one on Node 22, 24 and 26', (t) => {
  const YAML = require('yaml');
  const wf = YAML.parse(readFileSync(join(root, '.github/workflows/ci.yml'), 'utf8'));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const dirs = readdirSync(join(root, 'npm')).sort();
  const build = wf.jobs.build.strategy.matrix.include;
  t.deepEqual(
    build.map((b) => b.target).sort(),
    [...pkg.napi.targets].sort(),
    'build targets = package.json napi.targets',
  );
  t.deepEqual(build.map((b) => b.npmDir).sort(), dirs, 'one build per npm/ package');
  for (const b of build) {
    const npmPkg = JSON.parse(readFileSync(join(root, 'npm', b.npmDir, 'package.json'), 'utf8'));
    t.is(npmPkg.main, `loop-helpers.${b.npmDir}.node`);
    t.regex(b.host, b.target.includes('apple') ? /^macos-/ : /^ubuntu-/);
  }
  // Every binary that is published is also tested, on a runner (or in a container) that can run
  // it: its architecture, its libc, its OS; the primary binary under every supported Node.js.
  const tests = wf.jobs.test.strategy.matrix.include;
  for (const dir of dirs) {
    const rows = tests.filter((r) => r.npmDir === dir);
    t.true(rows.length > 0, `${dir} is tested`);
    for (const r of rows) {
      t.regex(r.os, dir.startsWith('darwin') ? /^macos-/ : /^ubuntu-/, `${dir} on ${r.os}`);
      if (dir.startsWith('linux')) t.is(r.os.endsWith('-arm'), dir.includes('arm64'), `${dir} on ${r.os}`);
      if (dir === 'darwin-x64') t.is(r.os, 'macos-13', 'the last Intel macOS runner');
      t.is(Boolean(r.image?.includes('alpine')), dir.endsWith('-musl'), `${dir}: musl in Alpine`);
    }
  }
  const primary = tests.filter((r) => r.npmDir === 'linux-x64-gnu').map((r) => String(r.node));
  for (const major of ['22', '24', '26']) t.true(primary.includes(major), `linux-x64-gnu on Node ${major}`);
  const steps = JSON.stringify(wf.jobs.test.steps);
  t.regex(steps, /npx ava/, 'the tests run, not only the build');
  t.regex(steps, /docker run/, 'the Alpine rows run in their image');
  const publish = wf.jobs.publish;
  t.deepEqual([...publish.needs].sort(), ['build', 'test']);
  const publishSteps = JSON.stringify(publish.steps);
  t.regex(publishSteps, /scripts\/prepublish\.mjs/);
  t.regex(publishSteps, /npm publish/);
  // Every npm script the workflow runs exists.
  for (const m of JSON.stringify(wf).matchAll(/npm run ([\w:-]+)/g)) t.truthy(pkg.scripts[m[1]], m[1]);
});

test('the loader names the supported platforms on an unsupported one, and explains a missing binary on a supported one', async (t) => {
  const probe = (arch) =>
    runNode(
      [
        '-e',
        `Object.defineProperty(process, 'arch', { value: ${JSON.stringify(arch)} });
       try { require(${JSON.stringify(root)}).capabilities(); console.log('RESULT ' + JSON.stringify({ loaded: true })); }
       catch (e) { console.log('RESULT ' + JSON.stringify({ code: e.code, message: e.message })); }`,
      ],
      // Not the explicit addon path (npm run test:node-matrix sets one): the platform lookup.
      { env: { LOOP_HELPERS_NATIVE_PATH: '' } },
    );
  const unsupported = await probe('ppc64');
  t.is(unsupported.result.code, 'ERR_LOOP_HELPERS_UNSUPPORTED_PLATFORM');
  t.regex(unsupported.result.message, /no native addon for \w+-ppc64/);
  t.regex(
    unsupported.result.message,
    /Supported platforms: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl, darwin-x64, darwin-arm64/,
  );
  if (process.arch !== 'arm64') {
    const missing = await probe('arm64');
    t.is(missing.result.code, 'ERR_LOOP_HELPERS_NATIVE_LOAD');
    // In a checkout, with the Rust sources to build from (an installed package: pack.test.mjs).
    t.regex(
      missing.result.message,
      /Build it with `npm run build` \(needs Rust\), or install the platform package loop-helpers-\w+-arm64/,
    );
  }
});

/** The code block of the README's "In production" section, as written. */
function readmeProductionExample() {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## In production'));
  return section.slice(section.indexOf('```ts\n') + 6, section.indexOf('\n```', section.indexOf('```ts\n')));
}

// Node.js runs TypeScript by stripping its types (22.18+, 23.6+; process.features.typescript).
const stripsTypes = Boolean(process.features.typescript);
(stripsTypes ? test : test.skip)(
  `the README's production example runs as written (Node's type stripping${stripsTypes ? '' : ': not in this Node.js'})`,
  async (t) => {
    // Inside the package folder, so that 'loop-helpers' resolves to this package (self-reference)
    // and @opentelemetry/api to its development copy.
    const dir = join(root, '.cache');
    mkdirSync(dir, { recursive: true });
    const tmp = mkdtempSync(join(dir, 'readme-'));
    t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
    const file = join(tmp, 'production.mts');
    // The example, then what a server would do: a request that blocks, then a catastrophic regex.
    writeFileSync(
      file,
      `${readmeProductionExample()}
requestContext.run({ requestId: 'r-42', route: '/report' }, () =>
  setTimeout(() => {
    const end = Date.now() + 400;
    while (Date.now() < end);
  }, 10),
);
setTimeout(() => {
  const t0 = Date.now();
  const found = search('(a+)+$', \`\${'a'.repeat(40)}b\`);
  console.log(\`RESULT \${JSON.stringify({ found, ms: Date.now() - t0 })}\`);
  setTimeout(() => detector.stop(), 50);
}, 800);
`,
    );
    // Node 22 keeps AsyncLocalStorage in async context frames (what asyncContext reads) only with
    // this flag, as the README's Status table says; 24 and later by default.
    const major = Number(process.versions.node.split('.')[0]);
    const flags = major === 22 ? ['--experimental-async-context-frame'] : [];
    const r = await runNode([...flags, file], { timeoutMs: 60_000 });
    t.is(r.code, 0, r.stderr);
    t.deepEqual(r.result?.found, false, r.stdout + r.stderr);
    // The request's block: the one sampled in its spin, on the line of the `while` above (a
    // loaded machine can hold the loop for a timeout elsewhere too, and that is logged as well).
    const whileLine = readmeProductionExample().split('\n').length + 4;
    const logged = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('event loop blocked '))
      .map((l) => JSON.parse(l.slice('event loop blocked '.length)));
    const spins = logged.filter((e) =>
      e.samples.some((s) =>
        s.frames?.some((f) => f.fileName?.endsWith('production.mts') && f.lineNumber === whileLine),
      ),
    );
    t.is(spins.length, 1, r.stderr);
    const [event] = spins;
    t.deepEqual(event.context, { requestId: 'r-42', route: '/report' });
    // The 400 ms block (timed on Date.now(), whole milliseconds), not some other.
    t.true(event.durationMs >= 390, String(event.durationMs));
  },
);

test("the README's links and picture work on the npm page: every relative target is in the package", (t) => {
  const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8' }))[0];
  const files = new Set(packed.files.map((f) => f.path));
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const targets = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
  t.true(targets.length > 5);
  for (const target of targets) {
    if (target.startsWith('#')) continue; // same page
    // The picture: served by a CDN from the published package, so it renders on npm and GitHub
    // alike whatever the repository's address.
    const cdn = target.match(/^https:\/\/cdn\.jsdelivr\.net\/npm\/loop-helpers(?:@[^/]+)?\/(.+)$/);
    if (cdn) {
      t.true(files.has(cdn[1]), `${target}: ${cdn[1]} is not in the package`);
      continue;
    }
    if (/^https?:/.test(target)) continue;
    const path = target.split('#')[0];
    t.true(files.has(path), `${target}: not in the package's files`);
  }
  // The pages shipped with it, the same way: what they link to (each other, design notes,
  // measured figures) is shipped too.
  const pages = [...files].filter((f) => f.endsWith('.md') && f !== 'README.md' && f !== 'CHANGELOG.md');
  t.true(pages.length > 5, pages.join(' '));
  for (const page of pages) {
    for (const [, target] of readFileSync(join(root, page), 'utf8').matchAll(/\]\(([^)\s]+)\)/g)) {
      if (target.startsWith('#') || /^https?:/.test(target)) continue;
      const path = posix.normalize(posix.join(posix.dirname(page), target.split('#')[0]));
      t.true(files.has(path), `${page}: ${target} (${path}) is not in the package's files`);
    }
  }
});

test('the docs pages link to files and headings that exist', (t) => {
  const slug = (h) =>
    h
      .trim()
      .toLowerCase()
      .replace(/[^\w\- ]/g, '')
      .replaceAll(' ', '-');
  const pages = [
    'README.md',
    ...readdirSync(join(root, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const headings = new Map();
  for (const page of pages) {
    let fence = false;
    const set = new Set();
    for (const line of readFileSync(join(root, page), 'utf8').split('\n')) {
      if (line.startsWith('```')) fence = !fence;
      const m = !fence && line.match(/^#{1,6} (.*)/);
      if (m) set.add(slug(m[1]));
    }
    headings.set(page, set);
  }
  for (const page of pages) {
    const text = readFileSync(join(root, page), 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^https?:/.test(target)) continue;
      const [path, anchor] = target.split('#');
      const file = path ? join(page, '..', path) : page;
      t.true(existsSync(join(root, file)), `${page}: ${target} does not exist`);
      if (anchor && headings.has(file))
        t.true(headings.get(file).has(anchor), `${page}: no heading #${anchor} in ${file}`);
    }
  }
});
