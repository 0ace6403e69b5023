// Finds cargo: on PATH, or in rustup's default place (~/.cargo/bin), which non-login shells miss.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

export function cargoEnv() {
  const env = { ...process.env };
  const rustupBin = join(process.env.CARGO_HOME ?? join(homedir(), '.cargo'), 'bin');
  if (existsSync(join(rustupBin, 'cargo'))) env.PATH = `${rustupBin}${delimiter}${env.PATH ?? ''}`;
  return env;
}
