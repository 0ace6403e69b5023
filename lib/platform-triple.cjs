// This process's platform triple (`linux-x64-gnu`, `darwin-arm64`, ...): the one copy, used by the
// loader (lib/native.ts) and by the build and test scripts (scripts/*.mjs). Plain JavaScript, so
// that the scripts can use it before the TypeScript is compiled.
'use strict';
const { existsSync } = require('node:fs');

/**
 * The platform triples that have a prebuilt binary, as in package.json `napi.targets`.
 * @type {readonly string[]}
 */
const SUPPORTED_PLATFORMS = Object.freeze([
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
]);

/**
 * musl's dynamic loader is on disk only on musl systems (cheaper than process.report, which
 * builds a whole diagnostic report).
 * @returns {boolean}
 */
function isMusl() {
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  return existsSync(`/lib/ld-musl-${arch}.so.1`);
}

/**
 * This process's platform triple, e.g. `linux-x64-gnu`.
 * @returns {string}
 */
function platformTriple() {
  if (process.platform === 'linux') return `linux-${process.arch}-${isMusl() ? 'musl' : 'gnu'}`;
  return `${process.platform}-${process.arch}`;
}

module.exports = { SUPPORTED_PLATFORMS, platformTriple };
