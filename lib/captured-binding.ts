// Replaces a native binding function that one of Node.js's internal modules took into a variable of
// its own when it loaded, e.g. `const { randomFillSync: randomFillSyncImpl } = internalBinding('crypto')`
// in node:internal/crypto/random on Node.js 26. No object outside the module holds it, so neither a
// property nor a prototype can be patched, and a JavaScript function's code cannot be swapped (V8
// dropped live edit). What a debugger's "set value" does can: an in-thread inspector session stops
// once at the entry of a function of that module, sets the variable in the module's scope, and
// resumes. The debugger is on only for that (Debugger.enable is most of the cost, 40-120 ms);
// afterwards nothing of it remains and the module calls the replacement directly.

type AnyFn = (...args: unknown[]) => unknown;

type Post = (method: string, params?: object) => Record<string, unknown>;

interface RemoteObject {
  type?: string;
  description?: string;
  objectId?: string;
}

interface PausedFrame {
  callFrameId: string;
  functionName: string;
  scopeChain: { type: string; object: RemoteObject }[];
}

/**
 * Sets the variable of `fn`'s module scope that holds the native function named `nativeName` to
 * `make(original)`. `fn(...args)` is called once to stop in it (what it does then is not
 * reported: the caller's detectors are not running yet). Synchronous.
 *
 * @returns the variable's name, or why it could not be replaced (no inspector in this Node.js
 *   build, `--permission` without `--allow-inspector`, no such variable).
 */
export function replaceCapturedBinding(
  fn: AnyFn,
  args: unknown[],
  nativeName: string,
  make: (original: AnyFn) => AnyFn,
): { variable: string } | { reason: string } {
  let inspector: typeof import('node:inspector');
  try {
    inspector = require('node:inspector') as typeof import('node:inspector');
  } catch (e) {
    return { reason: `node:inspector is not available (${(e as Error).message})` };
  }
  const session = new inspector.Session();
  try {
    session.connect();
  } catch (e) {
    return { reason: `no inspector session (${(e as Error).message})` };
  }
  // An in-thread session answers during post(); the callback runs before post() returns.
  const post: Post = (method, params) => {
    let answered = false;
    let error: Error | null = null;
    let result: Record<string, unknown> = {};
    session.post(method, params, (e: Error | null, r?: object) => {
      answered = true;
      error = e;
      result = (r ?? {}) as Record<string, unknown>;
    });
    if (!answered) throw new Error(`${method} did not answer synchronously`);
    if (error) throw error;
    return result;
  };
  // The inspector names objects of this thread's heap by expressions: a global property, taken
  // out again before this returns, hands it `fn` and then the function that builds the replacement.
  const key = `__loopHelpersCapturedBinding${process.pid}_${Math.random().toString(36).slice(2)}`;
  const globals = globalThis as unknown as Record<string, unknown>;
  let variable: string | undefined;
  let failure: string | undefined;
  try {
    globals[key] = fn;
    const fnObject = post('Runtime.evaluate', { expression: `globalThis[${JSON.stringify(key)}]` })
      .result as RemoteObject;
    if (fnObject.type !== 'function' || fnObject.objectId === undefined) return { reason: 'fn not found' };
    globals[key] = make;
    post('Debugger.enable');
    const { breakpointId } = post('Debugger.setBreakpointOnFunctionCall', { objectId: fnObject.objectId });
    const onPaused = (message: { params: { callFrames: PausedFrame[] } }) => {
      try {
        const frame = message.params.callFrames[0];
        if (frame === undefined || frame.functionName !== fn.name) {
          failure = `stopped in ${frame?.functionName ?? 'nothing'}, not in ${fn.name}`;
          return;
        }
        const r = setInScope(post, frame, nativeName, key);
        if ('variable' in r) variable = r.variable;
        else failure = r.reason;
      } catch (e) {
        failure = (e as Error).message;
      } finally {
        post('Debugger.resume');
      }
    };
    session.once('Debugger.paused', onPaused);
    try {
      Reflect.apply(fn, undefined, args);
    } finally {
      session.removeListener('Debugger.paused', onPaused);
      post('Debugger.removeBreakpoint', { breakpointId });
    }
  } catch (e) {
    failure ??= (e as Error).message;
  } finally {
    delete globals[key];
    try {
      post('Debugger.disable');
    } catch {
      // The session may be gone already; disconnecting disables the debugger for it anyway.
    }
    session.disconnect();
  }
  if (variable !== undefined) return { variable };
  return { reason: failure ?? `${fn.name} did not stop` };
}

/** In the paused frame, finds the closure variable holding the native `nativeName` and replaces it. */
function setInScope(
  post: Post,
  frame: PausedFrame,
  nativeName: string,
  key: string,
): { variable: string } | { reason: string } {
  const native = `function ${nativeName}() { [native code] }`;
  for (const [scopeNumber, scope] of frame.scopeChain.entries()) {
    if (scope.type !== 'closure' || scope.object.objectId === undefined) continue;
    const { result } = post('Runtime.getProperties', { objectId: scope.object.objectId, ownProperties: true }) as {
      result: { name: string; value?: RemoteObject }[];
    };
    const found = result.find((p) => p.value?.type === 'function' && p.value.description === native);
    if (found === undefined) continue;
    // Evaluated in the frame: the variable's value goes to make(), whose result is the new value.
    const made = post('Debugger.evaluateOnCallFrame', {
      callFrameId: frame.callFrameId,
      expression: `globalThis[${JSON.stringify(key)}](${found.name})`,
    });
    const replacement = made.result as RemoteObject;
    if (made.exceptionDetails !== undefined || replacement.type !== 'function' || replacement.objectId === undefined) {
      return { reason: `the replacement of ${found.name} could not be made` };
    }
    post('Debugger.setVariableValue', {
      scopeNumber,
      variableName: found.name,
      newValue: { objectId: replacement.objectId },
      callFrameId: frame.callFrameId,
    });
    return { variable: found.name };
  }
  return { reason: `no variable of ${frame.functionName}'s module holds the native ${nativeName}` };
}
