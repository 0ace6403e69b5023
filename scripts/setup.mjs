// Makes a fresh clone ready: npm packages, the native addon, the compiled TypeScript. Each step is
// skipped when its output is newer than its inputs, so `npm test` and `npm run demo` can always call
// it. Uses only Node's standard library: it runs before node_modules exists.
//   --force-build   rebuild the addon and the TypeScript even if they look fresh
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
process.chdir(root);
const force = process.argv.includes('--force-build');
const say = (m) => console.error(`[loop-helpers setup] ${m}`);
const npmBin = (name) => join(root, 'node_modules', '.bin', name);
const run = (cmd, args, env) => execFileSync(cmd, args, { stdio: 'inherit', env: env ?? process.env });

function newest(paths) {
  let t = 0;
  const walk = (p) => {
    if (!existsSync(p)) return;
    const s = statSync(p);
    if (s.isDirectory()) {
      for (const e of readdirSync(p)) if (e !== 'target' && e !== 'node_modules') walk(join(p, e));
    } else t = Math.max(t, s.mtimeMs);
  };
  for (const p of paths) walk(p);
  return t;
}

const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

// 1. npm packages
if (
  !existsSync(npmBin('napi')) ||
  !existsSync(npmBin('ava')) ||
  mtime('package-lock.json') > mtime('node_modules/.package-lock.json')
) {
  say('installing npm packages');
  run(
    'npm',
    existsSync('package-lock.json') ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund'],
  );
}

// 2. the native addon (a local build; see lib/native.ts for the prebuilt packages)
const { platformTriple } = await import('../lib/platform-triple.cjs');
const addon = `loop-helpers.${platformTriple()}.node`;
if (force || mtime(addon) < newest(['crates', 'Cargo.toml'])) {
  say(`building ${addon}`);
  run(process.execPath, ['scripts/build-native.mjs']);
}

// 3. TypeScript
if (force || mtime('dist/index.js') < newest(['index.ts', 'lib', 'tsconfig.json'])) {
  say('compiling TypeScript');
  run(npmBin('tsc'), ['-p', 'tsconfig.json']);
  run(process.execPath, ['scripts/build-esm.mjs']);
}
