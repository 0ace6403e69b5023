// The contract between lib/native.ts and the Rust addon: the `NativeBinding` interface against the
// addon's exports and the Rust export table, options read by name with errors that name them,
// enums refused when unknown, and the loader's ABI and platform-package version checks.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { runNode } from './helpers/run.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const { native, platformTriple, NATIVE_ABI_VERSION } = require('../dist/lib/native.js');

/**
 * The members of an interface of lib/native.ts: name -> { kind, optional }. (The devDependency
 * `typescript` is TypeScript 7, whose package has no JavaScript compiler API: the interface is
 * read here. Its members are split at the `;` between them, outside any bracket, comments removed.)
 */
function interfaceMembers(name) {
  const text = readFileSync(join(root, 'lib', 'native.ts'), 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '');
  const start = text.indexOf(`export interface ${name} {`);
  if (start < 0) throw new Error(`no interface ${name} in lib/native.ts`);
  const members = [];
  let depth = 0;
  let current = '';
  for (const ch of text.slice(text.indexOf('{', start) + 1)) {
    if (depth === 0 && ch === '}') break;
    if ('({[<'.includes(ch)) depth++;
    if (')}]'.includes(ch) || (ch === '>' && !current.endsWith('='))) depth--;
    if (depth === 0 && ch === ';') {
      members.push(current.trim());
      current = '';
    } else current += ch;
  }
  return new Map(
    members.map((m) => {
      const [, , member, optional, kind] = /^(readonly\s+)?(\w+)(\?)?\s*([(:<])/.exec(m) ?? [];
      if (!member) throw new Error(`cannot read the member \`${m}\` of ${name}`);
      return [member, { kind: kind === ':' ? 'property' : 'method', optional: optional === '?' }];
    }),
  );
}

/** The names in the export table of crates/node/src/lib.rs (`(c"name", guarded!(…))`). */
function rustExportTable() {
  const src = readFileSync(join(root, 'crates', 'node', 'src', 'lib.rs'), 'utf8');
  return [...src.matchAll(/\(\s*c"(\w+)",\s*guarded!/g)].map((m) => m[1]);
}

const sorted = (xs) => [...xs].sort();

test('the addon exports exactly the methods of NativeBinding, and its abiVersion', (t) => {
  const members = interfaceMembers('NativeBinding');
  const required = [...members].filter(([, m]) => m.kind === 'method' && !m.optional).map(([n]) => n);
  const optional = [...members].filter(([, m]) => m.kind === 'method' && m.optional).map(([n]) => n);
  const binding = native();
  const functions = Object.keys(binding).filter((k) => typeof binding[k] === 'function');
  // testPanic is exported only under LOOP_HELPERS_TEST_PANIC=1 (see panics.test.mjs).
  t.deepEqual(sorted(functions), sorted(required));
  for (const name of optional) t.false(name in binding, `${name} is not exported without its switch`);
  const properties = Object.keys(binding).filter((k) => typeof binding[k] !== 'function');
  t.deepEqual(
    properties,
    [...members].filter(([, m]) => m.kind === 'property').map(([n]) => n),
  );
  t.is(binding.abiVersion, NATIVE_ABI_VERSION);
});

test('the Rust export table names the same functions as NativeBinding (testPanic aside)', (t) => {
  const members = interfaceMembers('NativeBinding');
  const methods = [...members].filter(([, m]) => m.kind === 'method').map(([n]) => n);
  const table = rustExportTable();
  t.true(table.length > 10, 'the table was found');
  t.deepEqual(sorted([...table, 'testPanic']), sorted(methods));
  t.regex(readFileSync(join(root, 'crates', 'node', 'src', 'lib.rs'), 'utf8'), /c"testPanic", guarded!/);
});

/** start()'s options, all valid. */
function startOptions() {
  return {
    timeoutSeconds: 30,
    timeoutLabel: '30',
    aggressive: false,
    logMode: 'silent',
    threadId: 0,
    captureStacks: false,
    interrupt: 'none',
    microtaskGraceSeconds: -1,
    asyncContext: undefined,
  };
}

test('start() reads every StartOptions property by name, and names a missing or mistyped one', (t) => {
  const members = interfaceMembers('StartOptions');
  t.deepEqual(sorted(Object.keys(startOptions())), sorted(members.keys()), 'the test covers every option');
  const id = native().start(startOptions(), () => {});
  t.is(typeof id, 'number');
  native().stop(id);
  for (const [name, m] of members) {
    if (m.optional) continue;
    const missing = startOptions();
    delete missing[name];
    const e = t.throws(() => native().start(missing, () => {}), { code: 'ERR_LOOP_HELPERS_NATIVE_ARGUMENT' });
    t.regex(e.message, new RegExp(`^start\\(\\): (unknown )?options\\.${name}\\b.*undefined`), name);
    const mistyped = { ...startOptions(), [name]: Symbol('x') };
    const e2 = t.throws(() => native().start(mistyped, () => {}), { code: 'ERR_LOOP_HELPERS_NATIVE_ARGUMENT' });
    t.regex(e2.message, new RegExp(`options\\.${name} must be a \\w+, got symbol`), name);
  }
  t.throws(() => native().start(undefined, () => {}), { message: 'start(): options must be an object, got undefined' });
  t.throws(() => native().start(startOptions(), 'no'), { message: 'start(): onBlock must be a function, got string' });
  t.throws(() => native().start({ ...startOptions(), timeoutSeconds: 0 }, () => {}), {
    message: /options\.timeoutSeconds must be finite and > 0, got 0/,
  });
  t.throws(
    () => native().start({ ...startOptions(), asyncContext: { storages: 'x', keys: [], single: false } }, () => {}),
    {
      message: 'start(): options.asyncContext.storages must be an array, got string',
    },
  );
});

test('an unknown log or interrupt mode is an error natively, not a default', (t) => {
  t.throws(() => native().start({ ...startOptions(), logMode: 'loud' }, () => {}), {
    code: 'ERR_LOOP_HELPERS_NATIVE_ARGUMENT',
    message: "start(): unknown options.logMode 'loud' (expected 'silent', 'text', 'json', 'deferred')",
  });
  t.throws(() => native().start({ ...startOptions(), interrupt: 2 }, () => {}), {
    message: 'start(): options.interrupt must be a string, got number',
  });
  t.throws(() => native().start({ ...startOptions(), interrupt: 'sometimes' }, () => {}), {
    message: "start(): unknown options.interrupt 'sometimes' (expected 'none', 'guarded', 'everywhere')",
  });
});

test('installInterrupts() and readAsyncContext() take named options too', (t) => {
  t.throws(() => native().installInterrupts({ preciseAsyncIds: false, afterTermination: null }, 1), {
    message: 'installInterrupts(): deliver must be a function, got number',
  });
  t.throws(() => native().installInterrupts({ preciseAsyncIds: 'yes', afterTermination: null }, () => {}), {
    message: 'installInterrupts(): options.preciseAsyncIds must be a boolean, got string',
  });
  t.throws(() => native().installInterrupts({ preciseAsyncIds: false, afterTermination: 'x' }, () => {}), {
    message: 'installInterrupts(): options.afterTermination must be a function, got string',
  });
  t.throws(() => native().readAsyncContext({ storages: [], keys: [] }), {
    message: 'readAsyncContext(): asyncContext.single must be a boolean, got undefined',
  });
  // Accepted (what it reads depends on the Node.js: frames, or hooks where `hooks` is given).
  const read = JSON.parse(native().readAsyncContext({ storages: [], keys: [], single: false }));
  t.deepEqual(Object.keys(read), ['context', 'contextMissing']);
});

/** Loads dist/lib/native.js in a child and reports what native() gave or threw. */
const loadIn = (nativeJs, env = {}) =>
  runNode(
    [
      '-e',
      `try { const b = require(${JSON.stringify(nativeJs)}).native(); console.log('RESULT ' + JSON.stringify({ abiVersion: b.abiVersion, start: typeof b.start })); }
       catch (e) { console.log('RESULT ' + JSON.stringify({ code: e.code, message: e.message })); }`,
    ],
    { env },
  );

test('the loader refuses an addon of another ABI version, naming both versions and the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-abi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // require() of a .js path works as for a .node one.
  const fake = join(dir, 'fake-addon.js');
  writeFileSync(fake, 'module.exports = { abiVersion: 999, start() {} };\n');
  const wrong = await loadIn(join(root, 'dist', 'lib', 'native.js'), { LOOP_HELPERS_NATIVE_PATH: fake });
  t.is(wrong.result.code, 'ERR_LOOP_HELPERS_NATIVE_ABI');
  t.true(wrong.result.message.includes(fake), wrong.result.message);
  t.true(
    wrong.result.message.includes(`ABI version 999, but this loop-helpers needs version ${NATIVE_ABI_VERSION}.`),
    wrong.result.message,
  );
  t.regex(wrong.result.message, /Rebuild it .*reinstall loop-helpers/);
  // An addon from before the check has no abiVersion at all.
  writeFileSync(fake, 'module.exports = { start() {} };\n');
  const none = await loadIn(join(root, 'dist', 'lib', 'native.js'), { LOOP_HELPERS_NATIVE_PATH: fake });
  t.is(none.result.code, 'ERR_LOOP_HELPERS_NATIVE_ABI');
  t.regex(none.result.message, /has ABI version none/);
});

test('the loader refuses a platform package of another version than the main package', async (t) => {
  // An installed layout without a local build: <pkg>/package.json, <pkg>/dist/lib/native.js (and
  // the platform-triple module it loads) and <pkg>/node_modules/loop-helpers-<triple>/.
  const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-platform-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'loop-helpers', version }));
  mkdirSync(join(dir, 'dist', 'lib'), { recursive: true });
  for (const file of ['native.js', 'platform-triple.cjs']) {
    copyFileSync(join(root, 'dist', 'lib', file), join(dir, 'dist', 'lib', file));
  }
  const triple = platformTriple();
  const platformDir = join(dir, 'node_modules', `loop-helpers-${triple}`);
  mkdirSync(platformDir, { recursive: true });
  const addon = process.env.LOOP_HELPERS_NATIVE_PATH || join(root, `loop-helpers.${triple}.node`);
  writeFileSync(join(platformDir, 'index.js'), `module.exports = require(${JSON.stringify(addon)});\n`);
  const manifest = (v) =>
    writeFileSync(
      join(platformDir, 'package.json'),
      JSON.stringify({ name: `loop-helpers-${triple}`, version: v, main: 'index.js' }),
    );
  const nativeJs = join(dir, 'dist', 'lib', 'native.js');
  const env = { LOOP_HELPERS_NATIVE_PATH: '' };

  manifest('0.0.0-other');
  const other = await loadIn(nativeJs, env);
  t.is(other.result.code, 'ERR_LOOP_HELPERS_NATIVE_VERSION');
  t.true(other.result.message.includes(`loop-helpers-${triple} is version 0.0.0-other`), other.result.message);
  t.true(other.result.message.includes(`loop-helpers is version ${version}`), other.result.message);
  t.true(other.result.message.includes(platformDir), other.result.message);
  t.true(other.result.message.includes(`npm install loop-helpers@${version}`), other.result.message);

  manifest(version);
  const same = await loadIn(nativeJs, env);
  t.deepEqual(same.result, { abiVersion: NATIVE_ABI_VERSION, start: 'function' });
});
