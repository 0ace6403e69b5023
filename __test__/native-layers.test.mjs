// The modules of crates/node form layers (raw access, per-environment state, what runs on it, entry
// points), listed in the module comment of crates/node/src/lib.rs. A module may name, through a
// `crate::` path, only modules of its own layer or a lower one, and the modules never name each
// other in a circle. This reads the list and every module's source, and checks both.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const src = fileURLToPath(new URL('../crates/node/src/', import.meta.url));

/**
 * Rust source without comments, string literals and char literals (their text could look like a
 * path). Lifetimes (`'a`) are kept; raw strings are blanked like strings.
 */
function codeOnly(text) {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i, i + 3);
    if (rest.startsWith('//')) {
      const end = text.indexOf('\n', i);
      i = end < 0 ? text.length : end;
    } else if (rest.startsWith('/*')) {
      let depth = 0;
      do {
        if (text.startsWith('/*', i)) {
          depth++;
          i += 2;
        } else if (text.startsWith('*/', i)) {
          depth--;
          i += 2;
        } else i++;
      } while (depth > 0 && i < text.length);
      out += ' ';
    } else if (/^r#*"/.test(text.slice(i, i + 8)) && !/[\w]/.test(text[i - 1] ?? '')) {
      const hashes = /^r(#*)"/.exec(text.slice(i))[1];
      const end = text.indexOf(`"${hashes}`, i + hashes.length + 2);
      i = end < 0 ? text.length : end + hashes.length + 1;
      out += '""';
    } else if (text[i] === '"') {
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      out += '""';
    } else if (text[i] === "'" && /^'(\\.[^']*|[^\\'])'/.test(text.slice(i, i + 12))) {
      i += /^'(\\.[^']*|[^\\'])'/.exec(text.slice(i, i + 12))[0].length;
      out += "' '";
    } else {
      out += text[i];
      i++;
    }
  }
  return out;
}

/** The first segments of the paths of a use-list body (`a, b::c, d::{e, f}` -> a, b, d). */
function listHeads(body) {
  const heads = [];
  let depth = 0;
  let item = '';
  for (const ch of `${body},`) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      const head = /^\s*(\w+)/.exec(item)?.[1];
      if (head && head !== 'self') heads.push(head);
      item = '';
    } else item += ch;
  }
  return heads;
}

/**
 * The crate-level names a module's code reaches through `crate::` paths (`use crate::x::..`,
 * `use crate::{a, b::c}`, `crate::x::f()`); `super::` counts the same in a top-level module.
 */
function crateNames(code, { topLevel = true } = {}) {
  const names = new Set();
  const roots = topLevel ? '(?:crate|super)' : 'crate';
  const single = new RegExp(`(?<![\\w$])${roots}::(\\w+)`, 'g');
  for (const m of code.matchAll(single)) names.add(m[1]);
  const list = new RegExp(`(?<![\\w$])${roots}::\\{`, 'g');
  for (const m of code.matchAll(list)) {
    let depth = 1;
    let j = m.index + m[0].length;
    const start = j;
    while (j < code.length && depth > 0) {
      if (code[j] === '{') depth++;
      if (code[j] === '}') depth--;
      j++;
    }
    for (const head of listHeads(code.slice(start, j - 1))) names.add(head);
  }
  return names;
}

/** The modules declared in lib.rs, and the layer (1, 2, ...) each is listed in. */
function layerMap() {
  const lib = readFileSync(join(src, 'lib.rs'), 'utf8');
  const declared = [...lib.matchAll(/^\s*(?:pub(?:\([\w:]+\))?\s+)?mod (\w+);/gm)].map((m) => m[1]);
  const layers = new Map();
  let current = null;
  for (const line of lib.split('\n')) {
    if (!line.startsWith('//!')) break;
    const item = /^\/\/! (\d+)\. /.exec(line);
    if (item) current = Number(item[1]);
    else if (/^\/\/!\s*$/.test(line) || line.startsWith('//! #')) current = null;
    if (current === null) continue;
    for (const m of line.matchAll(/\[`(\w+)`\]/g)) {
      if (layers.has(m[1]) && layers.get(m[1]) !== current) {
        throw new Error(`lib.rs lists ${m[1]} in layers ${layers.get(m[1])} and ${current}`);
      }
      layers.set(m[1], current);
    }
  }
  return { declared, layers };
}

/** Each module's source files: `x.rs`, and `x/*.rs` for its submodules. */
function moduleSources(name) {
  const files = [join(src, `${name}.rs`)];
  const dir = join(src, name);
  if (existsSync(dir)) {
    for (const f of readdirSync(dir, { recursive: true })) {
      if (String(f).endsWith('.rs')) files.push(join(dir, String(f)));
    }
  }
  return files;
}

/** module -> the modules it names (itself and crate-root items left out). */
function dependencies(declared) {
  const modules = new Set(declared);
  const deps = new Map();
  for (const name of declared) {
    const names = new Set();
    for (const [i, file] of moduleSources(name).entries()) {
      const code = codeOnly(readFileSync(file, 'utf8'));
      for (const n of crateNames(code, { topLevel: i === 0 })) names.add(n);
    }
    deps.set(name, [...names].filter((n) => n !== name && modules.has(n)).sort());
  }
  return deps;
}

/** A circle among the modules (a list that starts and ends with the same one), or null. */
function findCircle(deps) {
  const state = new Map();
  const path = [];
  const visit = (m) => {
    state.set(m, 'open');
    path.push(m);
    for (const d of deps.get(m) ?? []) {
      if (state.get(d) === 'open') return [...path.slice(path.indexOf(d)), d];
      if (!state.has(d)) {
        const found = visit(d);
        if (found) return found;
      }
    }
    path.pop();
    state.set(m, 'done');
    return null;
  };
  for (const m of deps.keys()) {
    if (!state.has(m)) {
      const found = visit(m);
      if (found) return found;
    }
  }
  return null;
}

test('the path reader finds crate paths in use lines, use lists and expressions, not in comments or strings', (t) => {
  const code = codeOnly(`
    use crate::napi::*;
    use crate::{env_loop::{EnvLoop, GuardFn}, js, self};
    pub(crate) fn f() { crate::uv::uv_now(); $crate::ignored::x(); }
    // use crate::commented;
    /* crate::blocked /* nested */ crate::still_blocked */
    const S: &str = "crate::quoted \\" crate::escaped";
    const R: &str = r#"crate::raw"#;
    const C: char = '"'; fn g<'a>(x: &'a str) -> &'a str { crate::v8::id(x) }
  `);
  t.deepEqual([...crateNames(code)].sort(), ['env_loop', 'js', 'napi', 'uv', 'v8']);
  t.deepEqual([...crateNames('use super::handles;', { topLevel: false })], []);
  t.deepEqual([...crateNames('use super::napi;')], ['napi']);
});

test('the circle finder reports a circle, and none in a chain', (t) => {
  const chain = new Map([
    ['a', ['b']],
    ['b', ['c']],
    ['c', []],
  ]);
  t.is(findCircle(chain), null);
  const circle = new Map([
    ['a', ['b']],
    ['b', ['c']],
    ['c', ['a']],
  ]);
  t.deepEqual(findCircle(circle), ['a', 'b', 'c', 'a']);
});

test('every module of crates/node is in exactly one layer of the list in lib.rs', (t) => {
  const { declared, layers } = layerMap();
  t.true(declared.length >= 20, `lib.rs declares ${declared.length} modules`);
  t.deepEqual(
    declared.filter((m) => !layers.has(m)),
    [],
    'modules missing from the layer list of lib.rs',
  );
  t.deepEqual(
    [...layers.keys()].filter((m) => !declared.includes(m)),
    [],
    'the layer list names modules lib.rs does not declare',
  );
  t.deepEqual([...new Set(layers.values())].sort(), [1, 2, 3, 4]);
});

test('no module of crates/node names a module of a higher layer, and none is in a circle', (t) => {
  const { declared, layers } = layerMap();
  const deps = dependencies(declared);
  // The reader sees the real dependencies (it would pass vacuously otherwise).
  t.true(deps.get('exports').includes('env_loop'));
  t.true(deps.get('sink').includes('env_loop'));
  t.true(deps.get('fork').includes('platform'), 'paths in fork/*.rs count for fork');
  const upward = [];
  for (const [m, ds] of deps) {
    for (const d of ds) {
      if (layers.get(d) > layers.get(m)) {
        upward.push(`${m} (layer ${layers.get(m)}) names ${d} (layer ${layers.get(d)})`);
      }
    }
  }
  t.deepEqual(upward, []);
  t.is(findCircle(deps)?.join(' -> ') ?? null, null);
});
