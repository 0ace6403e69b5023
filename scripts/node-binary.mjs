// bin/node of another Node.js major, from the npm package `node-<platform>-<arch>@<major>` (it
// ships bin/node), unpacked once into .cache/node-matrix/<major>/. Used by the test matrix and by
// `npm run bench -- --node <major>`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cache = join(fileURLToPath(new URL('..', import.meta.url)), '.cache', 'node-matrix');

/** @param {string} major e.g. '24'; @param {(m: string) => void} say progress messages */
export function nodeBinary(major, say = () => {}) {
  if (!/^\d+$/.test(major)) throw new Error(`a Node.js major version is a number, e.g. 24. Received '${major}'`);
  const dir = join(cache, major);
  const bin = join(dir, 'package', 'bin', 'node');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const pkg = `node-${process.platform}-${process.arch}@${major}`;
  say(`fetching ${pkg}`);
  // Unpacked beside, then renamed into place: a process that finds bin/node finds all of it (CI
  // fetches in the background while it builds).
  const tmp = mkdtempSync(join(cache, `.${major}-`));
  try {
    const tgz = execFileSync('npm', ['pack', pkg, '--silent', '--pack-destination', tmp], { encoding: 'utf8' }).trim();
    execFileSync('tar', ['xzf', join(tmp, tgz.split('\n').pop()), '-C', tmp]);
    if (!existsSync(join(tmp, 'package', 'bin', 'node'))) throw new Error(`${pkg} has no package/bin/node`);
    try {
      renameSync(join(tmp, 'package'), join(dir, 'package'));
    } catch (e) {
      if (!existsSync(bin)) throw e; // else another process put the same build there first
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}

// `node scripts/node-binary.mjs 24 20 ...`: fetches those builds now (CI does, beside its build).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const major of process.argv.slice(2)) console.log(nodeBinary(major, (m) => console.error(`[node-binary] ${m}`)));
}
