// Runs cargo with the crate source chosen by cargo-source.mjs: `node scripts/cargo.mjs test --workspace`.
import { spawnSync } from 'node:child_process';
import { cargoSourceArgs } from './cargo-source.mjs';
import { cargoEnv } from './toolchain.mjs';

const [sub, ...rest] = process.argv.slice(2);
const r = spawnSync('cargo', [sub, ...cargoSourceArgs(), ...rest], { stdio: 'inherit', env: cargoEnv() });
process.exit(r.status ?? 1);
