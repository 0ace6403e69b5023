// Where cargo gets crates. crates.io when it is usable; Debian's packaged crates
// (/usr/share/cargo/registry) when they are installed or can be (offline machines such as ours).
// Nothing is written to .cargo/config.toml, so a machine that reaches crates.io builds the same
// files unchanged. Override with LOOP_HELPERS_CARGO_SOURCE=crates-io|debian.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

export const DEBIAN_REGISTRY = '/usr/share/cargo/registry';
const DEBIAN_PACKAGES = ['librust-nix-dev', 'librust-libc-dev', 'librust-cc-dev'];

function debianHasCrates() {
  if (!existsSync(DEBIAN_REGISTRY)) return false;
  const dirs = readdirSync(DEBIAN_REGISTRY);
  return ['nix-0.26', 'libc-0.2', 'cc-1.0'].every((p) => dirs.some((d) => d.startsWith(p)));
}

function canApt() {
  return process.getuid?.() === 0 && existsSync('/usr/bin/apt-get');
}

function cratesIoReachable() {
  try {
    execFileSync('cargo', ['search', '--limit', '1', 'nix'], { stdio: 'ignore', timeout: 15000 });
    return true;
  } catch {
    return false;
  }
}

function installDebianCrates() {
  console.error(`[loop-helpers] installing Debian's Rust crates: ${DEBIAN_PACKAGES.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  try {
    run(['install', '-y', '-qq', ...DEBIAN_PACKAGES]);
  } catch {
    run(['update', '-qq']);
    run(['install', '-y', '-qq', ...DEBIAN_PACKAGES]);
  }
}

/** The `--config` arguments for cargo, installing Debian's crates first when that is the way. */
export function cargoSourceArgs() {
  const choice = process.env.LOOP_HELPERS_CARGO_SOURCE;
  const debian = [
    '--config',
    'source.crates-io.replace-with="debian"',
    '--config',
    `source.debian.directory="${DEBIAN_REGISTRY}"`,
  ];
  if (choice === 'crates-io') return [];
  if (choice === 'debian') {
    if (!debianHasCrates() && canApt()) installDebianCrates();
    return debian;
  }
  if (debianHasCrates()) return debian;
  if (canApt() && !cratesIoReachable()) {
    installDebianCrates();
    return debian;
  }
  return [];
}
