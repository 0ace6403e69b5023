// Before publishing (run by .github/workflows/ci.yml): gives every npm/<platform> package the root
// package's version and declares them all as the root package's optionalDependencies, so that
// `npm install loop-helpers` fetches the one binary for the user's platform (lib/native.ts loads it).
// They are not declared in the repository's package.json: they do not exist on the registry until
// published, and `npm ci` refuses a lock file without them.
//   node scripts/prepublish.mjs [--dry-run]   (--dry-run prints the result, writes nothing)
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

const dry = process.argv.includes('--dry-run');
const rootUrl = new URL('../', import.meta.url);
const read = (rel) => JSON.parse(readFileSync(new URL(rel, rootUrl), 'utf8'));
const write = (rel, data) => {
  if (!dry) writeFileSync(new URL(rel, rootUrl), `${JSON.stringify(data, null, 2)}\n`);
};

const pkg = read('package.json');
const optional = {};
for (const dir of readdirSync(new URL('npm/', rootUrl)).sort()) {
  const rel = `npm/${dir}/package.json`;
  const sub = read(rel);
  if (sub.name !== `${pkg.name}-${dir}`) throw new Error(`${rel}: name ${sub.name}, expected ${pkg.name}-${dir}`);
  sub.version = pkg.version;
  write(rel, sub);
  optional[sub.name] = pkg.version;
}
pkg.optionalDependencies = optional;
write('package.json', pkg);
console.log(JSON.stringify({ version: pkg.version, optionalDependencies: optional }, null, 2));
