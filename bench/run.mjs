// `npm run bench [-- --quick]`: every benchmark in turn (setup first). Benchmarks report; they do
// not assert.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
for (const [title, file] of [
  ['Precision', 'bench/precision.mjs'],
  ['Loop overhead', 'bench/overhead.mjs'],
]) {
  console.log(`\n## ${title}\n`);
  const r = spawnSync(process.execPath, [file, ...args], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
