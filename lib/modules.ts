// Keeping require() whole across interrupts.
//
// A termination skips every `finally`, Node's own too: `Module._load` deletes a module from
// `require.cache` in a `finally` when its evaluation threw, and an interrupt skips that, leaving a
// half-evaluated module whose partial exports the next `require()` would return. So every CommonJS
// load goes through `Module.prototype.load` wrapped here: it pushes the module on a stack and pops
// it when the load returns or throws. A load that was interrupted stays on the stack, and the
// detector drops it from the cache (what Node's `finally` would have done): the next `require()`
// evaluates the module afresh.

import type Module from 'node:module';

interface LoadableModule {
  id: string;
  filename: string | null;
  loaded: boolean;
}

/** Modules whose load is in progress in this thread, outermost first. */
const loading: LoadableModule[] = [];
let installed = false;

/** Wraps `Module.prototype.load` once per thread. */
export function installRequireRepair(): void {
  if (installed) return;
  installed = true;
  const ModuleClass = require('node:module') as typeof Module & { prototype: { load: (f: string) => void } };
  const load = ModuleClass.prototype.load;
  if (typeof load !== 'function') return;
  ModuleClass.prototype.load = function loadTracked(this: LoadableModule, filename: string) {
    loading.push(this);
    try {
      return load.call(this, filename);
    } finally {
      // Not reached when the load is interrupted: the entry stays for forgetInterruptedLoads().
      const i = loading.lastIndexOf(this);
      if (i !== -1) loading.splice(i, 1);
    }
  };
}

/** How many loads are in progress now (a guard remembers it when it starts). */
export const loadDepth = (): number => loading.length;

/**
 * An interrupt unwound the loads above `depth` (0 for unguarded code: everything unwound): remove
 * those modules from `require.cache`, as Node does for a module whose evaluation threw. Returns
 * their file names.
 */
export function forgetInterruptedLoads(depth: number): string[] {
  if (loading.length <= depth) return [];
  const cache = (require('node:module') as { _cache?: Record<string, unknown> })._cache ?? require.cache;
  const forgotten: string[] = [];
  for (const m of loading.splice(depth)) {
    if (m.loaded) continue;
    const key = m.filename ?? m.id;
    if (cache[key] === m) {
      delete cache[key];
      forgotten.push(key);
    }
  }
  return forgotten;
}
