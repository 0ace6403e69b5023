// bin/node of another Node.js major, from the npm package `node-<platform>-<arch>@<major>` (it
// ships bin/node), unpacked once into .cache/node-matrix/<major>/. Used by the test matrix and by
// `npm run bench -- --node <major>`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
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
  const tgz = execFileSync('npm', ['pack', pkg, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim();
  execFileSync('tar', ['xzf', join(dir, tgz.split('\n').pop()), '-C', dir]);
  if (!existsSync(bin)) throw new Error(`${pkg} has no package/bin/node`);
  return bin;
}
