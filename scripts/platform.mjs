// The platform triple of this process, as lib/native.ts computes it.
import { existsSync } from 'node:fs';

export function platformTriple() {
  if (process.platform === 'linux') {
    const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
    return `linux-${process.arch}-${existsSync(`/lib/ld-musl-${arch}.so.1`) ? 'musl' : 'gnu'}`;
  }
  return `${process.platform}-${process.arch}`;
}
