// Builds the addon with @napi-rs/cli into ./loop-helpers.<platform>.node.
// `--debug` builds without optimisations.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cargoSourceArgs } from './cargo-source.mjs';
import { cargoEnv } from './toolchain.mjs';

const release = !process.argv.includes('--debug');
const args = [
  'build',
  '--platform',
  ...(release ? ['--release'] : []),
  '--manifest-path',
  'crates/node/Cargo.toml',
  '--output-dir',
  '.',
  '--',
  ...cargoSourceArgs(),
];
const root = fileURLToPath(new URL('..', import.meta.url));
const napi = join(root, 'node_modules', '.bin', 'napi');
const r = spawnSync(napi, args, { stdio: 'inherit', env: cargoEnv(), cwd: root });
if (r.error) {
  console.error(`[loop-helpers] cannot run napi (${r.error.message}); run npm install first`);
  process.exit(1);
}
process.exit(r.status ?? 1);
