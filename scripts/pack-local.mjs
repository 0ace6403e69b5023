// `npm run pack:local`: the tarballs npm would publish, built from this checkout, in dist-pack/:
//   - loop-helpers-<version>.tgz, the main package (compiled TypeScript and README, no Rust);
//   - loop-helpers-<triple>-<version>.tgz, this platform's package, with the addon built here.
// Installing both (`npm install dist-pack/*.tgz`) gives a working detector with no Rust toolchain,
// the way the packages will install from the registry: the main package finds its binary as the
// package `loop-helpers-<triple>`. Prints the two paths, one per line, on stdout.
// `--out <dir>` writes them elsewhere (the test packs into a scratch directory).
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { platformTriple } from '../lib/platform-triple.cjs';

function fail(message) {
  console.error(`[pack:local] ${message}`);
  process.exit(1);
}

const root = fileURLToPath(new URL('..', import.meta.url));
const outAt = process.argv.indexOf('--out');
const out = outAt > 0 ? resolve(process.argv[outAt + 1] ?? fail('--out needs a directory')) : join(root, 'dist-pack');
const triple = platformTriple();
const binary = `loop-helpers.${triple}.node`;

if (!existsSync(join(root, 'npm', triple, 'package.json'))) {
  fail(`no npm/${triple}/ package: loop-helpers has no prebuilt package for this platform`);
}
for (const [file, how] of [
  [binary, 'npm run build'],
  ['dist/index.js', 'npm run build'],
  ['dist/esm/index.mjs', 'npm run build'],
]) {
  if (!existsSync(join(root, file))) fail(`${file} is missing: run \`${how}\` first`);
}

// `npm pack` runs no build of ours (the package has no prepare/prepack script), and prints the
// tarball's file name as its last line with --silent... except that older npm versions print
// notices first, so take the last non-empty line.
const pack = (dir) =>
  execFileSync('npm', ['pack', '--silent', '--pack-destination', out], { cwd: dir, encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop()
    .trim();

// Only our own tarballs are replaced: `--out` may name a directory that holds other things.
mkdirSync(out, { recursive: true });
for (const f of readdirSync(out)) if (/^loop-helpers-.*\.tgz$/.test(f)) rmSync(join(out, f));

const main = pack(root);

// The platform package: its package.json and README from npm/<triple>/, plus the binary. Packed
// from a scratch copy so that the checkout's npm/ stays free of build output.
const scratch = mkdtempSync(join(tmpdir(), 'loop-helpers-pack-'));
try {
  cpSync(join(root, 'npm', triple), scratch, { recursive: true });
  copyFileSync(join(root, binary), join(scratch, binary));
  const platformPkg = JSON.parse(readFileSync(join(scratch, 'package.json'), 'utf8'));
  const mainPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  if (platformPkg.version !== mainPkg.version) {
    fail(`npm/${triple}/package.json is version ${platformPkg.version}, the main package ${mainPkg.version}`);
  }
  const platform = pack(scratch);
  console.log(join(out, main));
  console.log(join(out, platform));
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
