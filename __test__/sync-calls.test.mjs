// SyncCallDetector: Node's blocking synchronous APIs called on the event loop, in real child
// processes, side by side with `node --trace-sync-io`.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const require = createRequire(import.meta.url);
const { SyncCallDetector, SyncCallError, SYNC_CALL_CHANNEL } = require('loop-helpers');
const major = Number(process.versions.node.split('.')[0]);
const run = (scenario, options, extra = []) =>
  runNode([...extra, fixture('sync-calls.cjs'), scenario, ...(options ? [JSON.stringify(options)] : [])]);
const headers = (stderr) => stderr.split('\n').filter((l) => l.includes('SyncCallWarning:'));
const line = (text) =>
  readFileSync(fixture('sync-calls.cjs'), 'utf8')
    .split('\n')
    .findIndex((l) => l.includes(text)) + 1;

/** The cases --trace-sync-io reports (counted between case markers on stderr) and the detector's. */
async function compare(how) {
  const trace = await runNode(['--trace-sync-io', fixture('sync-calls-compare.cjs'), 'trace', how]);
  const det = await runNode([fixture('sync-calls-compare.cjs'), 'detector', how]);
  const traced = {};
  let current;
  for (const l of trace.stderr.split('\n')) {
    const m = /^=== CASE (.*)$/.exec(l);
    if (m) {
      current = m[1];
      traced[current] = 0;
    } else if (l.startsWith('=== END')) current = undefined;
    else if (current && l.includes('Detected use of sync API')) traced[current]++;
  }
  return { traced, det: det.result, detStderr: det.stderr, traceCode: trace.code };
}

for (const how of ['prop', 'destructured']) {
  test.serial(
    `catches at least what node --trace-sync-io catches (functions ${how === 'prop' ? 'read from the module' : 'taken before start()'})`,
    async (t) => {
      const { traced, det, detStderr, traceCode } = await compare(how);
      t.is(traceCode, 0);
      t.truthy(det, detStderr);
      t.is(Object.keys(traced).length, 54, JSON.stringify(traced));
      const missed = Object.keys(traced).filter((k) => traced[k] > 0 && !(det[k] > 0));
      t.deepEqual(missed, [], JSON.stringify({ traced, det }));
      // The synchronous random fills, which Node 26 makes through a binding function its random
      // module keeps to itself (no job object): traced, and caught, on every version.
      for (const api of ['randomBytes', 'randomFillSync', 'randomUUID', 'randomInt', 'getRandomValues']) {
        t.true(traced[`crypto.${api}`] > 0, api);
        t.is(det[`crypto.${api} api`], `crypto.${api}`);
      }
      // Sync crypto work added in Node 24, traced there (diffieHellman without a callback is not a
      // job, and not traced, before 24; it is caught through the module).
      if (major >= 24) {
        for (const api of ['argon2Sync', 'diffieHellman', 'encapsulate', 'decapsulate']) {
          t.true(traced[`crypto.${api}`] > 0, api);
          t.is(det[`crypto.${api} api`], `crypto.${api}`);
        }
      } else if (how === 'prop') t.is(det['crypto.diffieHellman api'], 'crypto.diffieHellman');
      // And more than it: the fast paths that never reach Node's trace.
      t.true(det["fs.readFileSync(f, 'utf8')"] > 0);
      t.true(det['fs.existsSync'] > 0);
      if (how === 'prop') t.true(det['Atomics.wait'] > 0);
      // One report per API call, named after the API, whichever layer caught it.
      t.is(det['fs.readFileSync'], 1);
      t.is(det['fs.readFileSync api'], 'fs.readFileSync');
      t.is(det['child_process.execSync api'], 'child_process.execSync');
      t.is(det['zlib.gzipSync api'], 'zlib.gzipSync');
      t.is(det['crypto.pbkdf2Sync api'], 'crypto.pbkdf2Sync');
      t.is(det['crypto.generateKeyPairSync (rsa) api'], 'crypto.generateKeyPairSync');
      t.is(det['crypto.sign api'], 'crypto.sign');
      t.is(det['fs.realpathSync.native api'], 'fs.realpathSync.native');
      t.is(det['require() of a new file api'], 'require');
    },
  );
}

test.serial(
  "'warn' writes a Node-style warning with the caller's stack, once per call site, and publishes every call",
  async (t) => {
    const r = await run('warn');
    t.is(r.code, 0, r.stderr);
    const h = headers(r.stderr);
    t.deepEqual(
      h.map((l) => l.replace(/^\(node:\d+\) /, '')),
      [
        'SyncCallWarning: fs.readFileSync called on the event loop',
        'SyncCallWarning: fs.readFileSync called on the event loop',
        'SyncCallWarning: child_process.execSync called on the event loop',
      ],
      r.stderr,
    );
    t.regex(h[0], /^\(node:\d+\) SyncCallWarning/);
    const handlerLine = line("return fs.readFileSync(__filename, 'utf8').length;");
    t.regex(
      r.stderr,
      new RegExp(
        `SyncCallWarning: fs\\.readFileSync called on the event loop\\n    at handler \\(.*sync-calls\\.cjs:${handlerLine}:\\d+\\)`,
      ),
    );
    t.regex(r.stderr, /at handlerDestructured \(.*sync-calls\.cjs:\d+:\d+\)/);
    // The channel: every call (the first site twice), each with its layer.
    t.deepEqual(
      r.result.calls.map((c) => [c.api, c.via, c.top.functionName]),
      [
        ['fs.readFileSync', 'export', 'handler'],
        ['fs.readFileSync', 'export', 'handler'],
        ['fs.readFileSync', 'internal', 'handlerDestructured'],
        ['child_process.execSync', 'internal', 'warn'],
      ],
    );
    t.true(r.result.calls.every((c) => c.action === 'warn' && c.threadId === 0 && c.mine));
  },
);

test.serial("'throw' throws SyncCallError at the call, before the call does anything", async (t) => {
  const r = await run('throw');
  t.is(r.code, 0, r.stderr);
  const [write, exec, read, random] = r.result.errors;
  for (const e of [write, exec, read, random]) {
    t.truthy(e);
    t.is(e.name, 'SyncCallError');
    t.is(e.code, 'ERR_LOOP_HELPERS_SYNC_CALL');
    t.true(e.isError);
  }
  t.is(write.api, 'fs.writeFileSync');
  t.is(exec.api, 'child_process.execSync');
  t.is(read.message, 'fs.readFileSync called on the event loop');
  t.regex(
    read.stack,
    /^SyncCallError: fs\.readFileSync called on the event loop\n {4}at handler \(.*sync-calls\.cjs:\d+:\d+\)/,
  );
  t.false(r.result.written, 'writeFileSync wrote nothing');
  t.false(r.result.ran, 'execSync ran nothing');
  t.is(random.api, 'crypto.randomBytes');
  t.regex(random.stack, /^SyncCallError: crypto\.randomBytes called on the event loop\n {4}at fill \(/);
  t.false(r.result.filled, 'randomBytes taken before start() filled nothing');
  t.is(headers(r.stderr).length, 0, 'no warning in throw mode');
});

test.serial(
  'calls before the event loop first turns pass (start-up grace), unless startupGrace is false',
  async (t) => {
    const graced = await run('grace', { log: false });
    t.is(graced.result.before, 0);
    t.is(graced.result.calls.length, 1);
    const strict = await run('grace', { log: false, startupGrace: false });
    t.is(strict.result.before, 1);
    t.is(strict.result.calls.length, 2);
  },
);

test.serial("scope: 'run' reports only calls inside run() and its async continuations", async (t) => {
  const r = await run('scoped');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(
    r.result.calls.map((c) => c.top.functionName),
    ['handler', 'handlerDestructured'],
  );
  t.is(r.result.inside, 'number');
});

test.serial('allow: paths, function names, globs, RegExps and API names', async (t) => {
  const vendor = fixture('sync-vendor/dotenv/main.js');
  const script = `
    const lh = require('loop-helpers');
    const { config } = require(${JSON.stringify(vendor)});
    const calls = [];
    require('node:diagnostics_channel').subscribe(lh.SYNC_CALL_CHANNEL, ({ call }) => calls.push(call.api));
    const d = new lh.SyncCallDetector({ log: false, allow: JSON.parse(process.argv[1], (k, v) => typeof v === 'string' && v.startsWith('re:') ? new RegExp(v.slice(3)) : v) }).start();
    setTimeout(() => {
      config();
      (function loadConfig() { require('node:fs').statSync(process.execPath); })();
      require('node:zlib').gzipSync('x');
      d.stop();
      console.log('RESULT ' + JSON.stringify(calls));
    }, 1);`;
  const runWith = (allow) => runNode(['-e', script, JSON.stringify(allow)], { cwd: fixture('.') });
  const none = await runWith([]);
  t.deepEqual(none.result, ['fs.readFileSync', 'fs.statSync', 'zlib.gzipSync'], none.stderr);
  t.deepEqual((await runWith(['sync-vendor/dotenv/'])).result, ['fs.statSync', 'zlib.gzipSync']);
  t.deepEqual((await runWith(['**/dotenv/*.js'])).result, ['fs.statSync', 'zlib.gzipSync']);
  t.deepEqual((await runWith(['loadConfig'])).result, ['fs.readFileSync', 'zlib.gzipSync']);
  t.deepEqual((await runWith(['load*'])).result, ['fs.readFileSync', 'zlib.gzipSync']);
  t.deepEqual((await runWith(['zlib.gzipSync'])).result, ['fs.readFileSync', 'fs.statSync']);
  t.deepEqual((await runWith(['re:^zlib\\.'])).result, ['fs.readFileSync', 'fs.statSync']);
  t.deepEqual((await runWith(['re:dotenv', 'loadConfig', 're:gzip'])).result, []);
});

test.serial('ES module named imports are caught (live bindings, synced)', async (t) => {
  const r = await runNode([fixture('sync-calls-esm.mjs')]);
  t.is(r.code, 0, r.stderr);
  for (const n of r.result.named) {
    t.is(n.reported, 1, n.label);
    t.is(n.via, 'export', n.label);
  }
  t.deepEqual(
    r.result.named.map((n) => n.api),
    ['fs.readFileSync', 'fs.readFileSync', 'fs.readFileSync', 'child_process.execFileSync'],
  );
  t.true(r.result.restored);
});

test.serial('after stop() every patched function is back as it was, and nothing is reported', async (t) => {
  const r = await run('restore');
  t.is(r.code, 0, r.stderr);
  t.is(r.result.reportedWhileRunning, 1);
  t.true(r.result.changedDuring > 50, String(r.result.changedDuring));
  t.deepEqual(r.result.differentAfter, []);
  t.is(r.result.reportedAfter, 0);
  t.true(r.result.esmRestored);
});

test.serial('several detectors: each judges with its own options; the last stop() restores', async (t) => {
  const r = await run('two');
  t.is(r.code, 0, r.stderr);
  // d allows 'handler', a does not: handler's call is a's only; both report execSync; after
  // a.stop() only d does.
  t.deepEqual(
    r.result.calls.map((c) => [c.api, c.mine]),
    [
      ['fs.readFileSync', false],
      ['child_process.execSync', false],
      ['child_process.execSync', true],
      ['child_process.execSync', true],
    ],
  );
  t.false(r.result.patchedAfter);
});

test.serial("a Worker's detector reports that Worker's calls, with its thread id", async (t) => {
  const r = await run('worker');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.workerCalls, [
    { api: 'fs.statSync', threadId: 1 },
    { api: 'crypto.randomFillSync', threadId: 1 },
  ]);
  t.is(r.result.mainCalls, 0);
  t.regex(r.stderr, /SyncCallWarning: fs\.statSync called on the event loop in worker thread 1\n {4}at inWorker/);
});

test.serial('stacks are source-mapped under --enable-source-maps', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lh-sm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(fixture('sync-sourcemap/caller.ts'), join(dir, 'caller.ts'));
  execFileSync(
    process.execPath,
    [
      join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc'),
      '--sourceMap',
      '--target',
      'es2022',
      '--module',
      'commonjs',
      '--types',
      'node',
      '--typeRoots',
      join(process.cwd(), 'node_modules/@types'),
      'caller.ts',
    ],
    // In the temporary folder: tsc refuses file arguments next to a tsconfig.json.
    { stdio: 'pipe', cwd: dir },
  );
  const options = { module: join(dir, 'caller.js') };
  const mapped = await run('sourcemap', options, ['--enable-source-maps']);
  t.is(mapped.code, 0, mapped.stderr);
  t.regex(
    mapped.stderr,
    /SyncCallWarning: fs\.readFileSync called on the event loop\n {4}at readConfig \(.*caller\.ts:10:\d+\)/,
  );
  const plain = await run('sourcemap', options);
  t.regex(plain.stderr, /at readConfig \(.*caller\.js:\d+:\d+\)/);
});

test('bad options throw errors that name the option and the value', (t) => {
  const bad = (options, type, code, message) => {
    const e = t.throws(() => new SyncCallDetector(options), { instanceOf: type });
    t.is(e.code, code);
    t.regex(e.message, message);
  };
  bad(
    { action: 'log' },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    /"action" option must be 'warn' or 'throw'\. Received type string \('log'\)/,
  );
  bad({ allow: 'dotenv' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"allow" option must be an array/);
  bad(
    { allow: ['ok', 42] },
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    /"allow\[1\]" option must be a string or a RegExp\. Received 42/,
  );
  bad({ allow: [''] }, TypeError, 'ERR_INVALID_ARG_VALUE', /"allow\[0\]" option must not be empty/);
  bad({ allow: ['src/***'] }, TypeError, 'ERR_INVALID_ARG_VALUE', /"allow\[0\]" option is not a valid glob/);
  bad({ scope: 'request' }, TypeError, 'ERR_INVALID_ARG_VALUE', /"scope" option must be 'everywhere' or 'run'/);
  bad({ startupGrace: 'yes' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"startupGrace" option must be a boolean/);
  bad(
    { actoin: 'warn' },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    /Unknown SyncCallDetector option "actoin"\. Known options: action, allow/,
  );
  bad('warn', TypeError, 'ERR_INVALID_ARG_TYPE', /"options" argument must be an object/);
  const d = new SyncCallDetector({ allow: [/x/g, 'a'] });
  t.is(d.action, 'warn');
  t.is(d.scope, 'everywhere');
  t.deepEqual(d.allow.length, 2);
  t.false(d.running);
  t.throws(() => d.run(42), { code: 'ERR_INVALID_ARG_TYPE' });
  t.is(
    d.run((a, b) => a + b, 1, 2),
    3,
    'run() on a stopped detector just calls',
  );
  t.is(SYNC_CALL_CHANNEL, 'loop-helpers:sync-call');
  t.is(SyncCallError.prototype.name, 'SyncCallError');
});
