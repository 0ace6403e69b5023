//! The functions the TypeScript layer calls. Arguments are validated there; here they are checked
//! again only as far as memory safety needs, with errors carrying stable codes.
//!
//! # Safety (every exported function here)
//! A Node-API function callback, registered through `guarded!` in `lib.rs`: called by Node on
//! `env`'s JavaScript thread, with this call's `info` and a handle scope open. That is the
//! contract of the `js` helpers and of most functions called here (`EnvLoop::get_or_create`, ...);
//! the SAFETY comments below call it "the callback's contract".

use loop_helpers_core::interrupt::{Delivery, GuardExit, GuardKind, Taken};
use loop_helpers_core::monitor::{self, WatchConfig};
use loop_helpers_core::report::{json_frames, json_str, LogTarget, Origin};
use loop_helpers_core::{alarm, clock, panics};

use std::os::raw::c_void;

use crate::async_context::AsyncContextSpec;
use crate::context_frame::SavedFrame;
use crate::counts;
use crate::env_loop::{EnvLoop, GuardFn, WatchOutput};
use crate::js;
use crate::napi::*;
use crate::sink::{NodeSink, MAX_FRAMES};
/// triggerUncaught(error): see its comment (the one function the unguarded repair also uses).
pub use crate::unguarded::trigger_uncaught;
use crate::unguarded::{self, Support};
use crate::v8;
use crate::v8_values;

const E_ARG: &str = "ERR_LOOP_HELPERS_NATIVE_ARGUMENT";
const E_START: &str = "ERR_LOOP_HELPERS_START";

/// start(options, onBlock) -> watch id
///
/// `options` (lib/native.ts `StartOptions`, read by property name):
/// - `timeoutSeconds`: number > 0; `timeoutLabel`: the timeout as the user wrote it (reports).
/// - `aggressive`, `captureStacks`: booleans; `threadId`: the environment's `threadId`.
/// - `logMode`: `'silent'`, `'text'` (stderr), `'json'` (stderr JSON lines) or `'deferred'` (to
///   JavaScript).
/// - `interrupt`: `'none'`, `'guarded'` (only inside guards) or `'everywhere'`.
/// - `microtaskGraceSeconds`: interrupt a promise reaction only once the block is this long;
///   negative: never.
/// - `asyncContext` (optional): the AsyncLocalStorage stores to read with each stack sample, see
///   [`AsyncContextSpec::from_options`].
///
/// `onBlock(recordJson)` receives the block records of log mode `'deferred'`.
pub unsafe fn start(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract, which `start_watch` and `js::throw` share.
    unsafe {
        match start_watch(env, info) {
            Ok(v) => v,
            Err((code, msg)) => js::throw(env, code, &msg),
        }
    }
}

/// [`start`], with its errors as (code, message).
///
/// # Safety
/// The callback's contract (see the module's documentation).
unsafe fn start_watch(
    env: napi_env,
    info: napi_callback_info,
) -> Result<napi_value, (&'static str, String)> {
    let arg = |e: String| (E_ARG, e);
    // SAFETY: the callback's contract; `cb` stays a local of this call.
    let cb = unsafe { js::Callback::enter(env) };
    // SAFETY: the callback's contract; `options` is this call's argument.
    let (on_block, o) = unsafe {
        let [options, on_block] = js::args::<2>(env, info);
        let o = js::Options::new(&cb, options, "start()", "options").map_err(arg)?;
        (on_block, o)
    };
    let (timeout, aggressive, label, thread_id, stacks, grace) = (
        o.number(c"timeoutSeconds").map_err(arg)?,
        o.boolean(c"aggressive").map_err(arg)?,
        o.string(c"timeoutLabel").map_err(arg)?,
        o.number(c"threadId").map_err(arg)?,
        o.boolean(c"captureStacks").map_err(arg)?,
        o.number(c"microtaskGraceSeconds").map_err(arg)?,
    );
    // Enums are checked here too (lib/native.ts types them): an unknown value is a caller's bug,
    // not a mode to guess.
    let log = o
        .one_of(
            c"logMode",
            &[
                ("silent", LogTarget::Silent),
                ("text", LogTarget::StderrText),
                ("json", LogTarget::StderrJson),
                ("deferred", LogTarget::Deferred),
            ],
        )
        .map_err(arg)?;
    let (interrupt, interrupt_unguarded) = o
        .one_of(
            c"interrupt",
            &[
                ("none", (false, false)),
                ("guarded", (true, false)),
                ("everywhere", (true, true)),
            ],
        )
        .map_err(arg)?;
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(arg(format!(
            "start(): options.timeoutSeconds must be finite and > 0, got {timeout}"
        )));
    }
    // SAFETY: the callback's contract; `on_block` is this call's argument.
    unsafe {
        if !js::is_function(env, on_block) {
            return Err(arg(format!(
                "start(): onBlock must be a function, got {}",
                js::type_name(env, on_block)
            )));
        }
    }
    // SAFETY: the callback's contract.
    let env_loop = unsafe { EnvLoop::get_or_create(env) }.map_err(|e| (E_START, e))?;
    // SAFETY: the callback's contract.
    let context = unsafe {
        AsyncContextSpec::from_options(
            &cb,
            o.get(c"asyncContext"),
            "start()",
            "options.asyncContext",
        )
    }
    .map_err(arg)?
    .filter(|_| stacks && v8_values::ValueApi::get().is_ok());
    let async_context = context.is_some();
    // SAFETY: the callback's contract; `on_block` is a function (checked above).
    let sink = unsafe { NodeSink::new(env, env_loop.clone(), on_block, context) }
        .map_err(|e| (E_START, e))?;
    let timeout_ns = (timeout * 1e9).round() as u64;
    let cfg = WatchConfig {
        timeout_ns,
        aggressive,
        log,
        origin: Origin {
            pid: std::process::id(),
            thread_id: thread_id as u32,
            timeout_label: label,
            timeout_ns,
        },
        capture_stacks: stacks && v8::stack_capture_support().is_ok(),
        interrupt: interrupt && v8::terminate_support().is_ok(),
        interrupt_unguarded,
        microtask_grace_ns: if grace.is_finite() && grace >= 0.0 {
            (grace * 1e9).round() as u64
        } else {
            u64::MAX
        },
        async_context,
    };
    // SAFETY: the callback's contract: on the environment's JS thread, the environment alive.
    match unsafe { env_loop.add_watch(cfg, sink.clone()) } {
        // SAFETY: the callback's contract.
        Ok(id) => Ok(unsafe { js::number(env, id as f64) }),
        Err(e) => {
            // SAFETY: as for add_watch.
            unsafe { sink.close() };
            Err((E_START, e))
        }
    }
}

/// stop(id) -> `{ interrupts, blocks }`, what the watch had not delivered yet (arrays of JSON
/// strings, oldest first; `blocks` ends with the block in progress, `ended: false`, if one was
/// warned about), or undefined when there is nothing. Nothing of the watch is delivered later.
pub unsafe fn stop(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let (env_loop, id) = unsafe {
        let a = js::args::<1>(env, info);
        let Some(id) = js::f64_arg(env, a[0]) else {
            return js::throw(env, E_ARG, "stop(): bad id");
        };
        match EnvLoop::get_or_create(env) {
            Ok(e) => (e, id),
            Err(e) => return js::throw(env, E_START, &e),
        }
    };
    // SAFETY: the callback's contract: on the environment's JS thread, the environment alive.
    let removed = unsafe { env_loop.remove_watch(id as u64) };
    // SAFETY: the callback's contract; `out` a live local, the names NUL-terminated.
    unsafe {
        match removed {
            Ok(u) if u.interrupts.is_empty() && u.blocks.is_empty() => js::undefined(env),
            Ok(u) => {
                let mut out = std::ptr::null_mut();
                napi_create_object(env, &mut out);
                napi_set_named_property(
                    env,
                    out,
                    c"interrupts".as_ptr(),
                    js::strings(env, &u.interrupts),
                );
                napi_set_named_property(env, out, c"blocks".as_ptr(), js::strings(env, &u.blocks));
                out
            }
            Err(e) => js::throw(env, E_START, &e),
        }
    }
}

/// flush(id) -> JSON of a block in progress, ended now (the loop is done), or undefined
pub unsafe fn flush(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    unsafe {
        let a = js::args::<1>(env, info);
        let Some(id) = js::f64_arg(env, a[0]) else {
            return js::throw(env, E_ARG, "flush(): bad id");
        };
        match monitor::flush(id as u64) {
            Some(json) => js::string(env, &json),
            None => js::undefined(env),
        }
    }
}

/// captureStack(limit) -> JSON array of frames of the calling JavaScript stack (self-test).
pub unsafe fn capture_stack(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let limit = unsafe {
        let a = js::args::<1>(env, info);
        js::f64_arg(env, a[0])
    }
    .unwrap_or(MAX_FRAMES as f64)
    .clamp(1.0, 200.0) as u32;
    let isolate = v8::current_isolate();
    if isolate.is_null() {
        // SAFETY: the callback's contract.
        return unsafe { js::string(env, "[]") };
    }
    // SAFETY: in a Node-API callback on env's JS thread, whose isolate this is.
    let frames = unsafe { v8::capture_stack(env, isolate, limit) };
    let mut s = String::new();
    json_frames(&mut s, &frames);
    // SAFETY: the callback's contract.
    unsafe { js::string(env, &s) }
}

/// readAsyncContext(asyncContext) -> JSON `{"context":…,"contextMissing":…}`: the stores of the
/// calling code, read as the sampling interrupt reads them (self-test, tests). `asyncContext` as
/// in `start()`'s options.
pub unsafe fn read_async_context(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract; `cb` stays a local of this call.
    let cb = unsafe { js::Callback::enter(env) };
    // SAFETY: the callback's contract.
    let spec = unsafe {
        let [spec] = js::args::<1>(env, info);
        match AsyncContextSpec::from_options(&cb, spec, "readAsyncContext()", "asyncContext") {
            Ok(Some(s)) => s,
            Ok(None) => {
                return js::throw(
                    env,
                    E_ARG,
                    "readAsyncContext(): asyncContext must be an object, got undefined",
                )
            }
            Err(e) => return js::throw(env, E_ARG, &e),
        }
    };
    // SAFETY: the callback's contract: in a Node-API callback on env's JS thread, with its
    // isolate.
    let capture = unsafe { spec.capture(env, v8::current_isolate()) };
    // SAFETY: the callback's contract.
    unsafe { spec.close(env) };
    let mut s = String::from("{");
    let (context, missing) = match capture {
        loop_helpers_core::context::ContextCapture::Value(j) => (j, None),
        loop_helpers_core::context::ContextCapture::Missing(r) => ("null".into(), Some(r)),
        loop_helpers_core::context::ContextCapture::Pending => {
            ("null".into(), Some("pending".into()))
        }
    };
    s.push_str("\"context\":");
    s.push_str(&context);
    s.push_str(",\"contextMissing\":");
    match missing {
        Some(r) => json_str(&mut s, &r),
        None => s.push_str("null"),
    }
    s.push('}');
    // SAFETY: the callback's contract.
    unsafe { js::string(env, &s) }
}

/// syncMarker(ownDir) -> ArrayBuffer
///
/// The cells through which this environment's synchronous-API wrappers (lib/sync-api-hooks.ts)
/// mark the API they are inside: element 0 of an `Int32Array` over it is the API's number (see
/// `setSyncApiNames`; 0: none), element 1 is 1 while a stack sample is waiting (see
/// `sync_marker`). `ownDir`: the JavaScript layer's directory, whose frames on top of a sample
/// taken in a wrapper are left out. The same cells
/// every time for an environment: JavaScript asks once per thread. Throws where this Node.js does
/// not allow external ArrayBuffers (`nativeInfo().syncCallNames` is then false).
pub unsafe fn sync_marker(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let (own_dir, env_loop) = unsafe {
        let [own_dir] = js::args::<1>(env, info);
        let Some(own_dir) = js::string_arg(env, own_dir) else {
            return js::throw(env, E_ARG, "syncMarker(): ownDir must be a string");
        };
        match EnvLoop::get_or_create(env) {
            Ok(e) => (own_dir, e),
            Err(e) => return js::throw(env, E_START, &e),
        }
    };
    env_loop.sync.set_own_dir(own_dir);
    // SAFETY: the callback's contract.
    unsafe {
        match env_loop.sync.array_buffer(env) {
            Ok(buffer) => buffer,
            Err(status) => js::throw(
                env,
                E_START,
                &format!(
                    "syncMarker(): cannot create an external ArrayBuffer (napi status {status})"
                ),
            ),
        }
    }
}

/// setSyncApiNames(names) -> undefined
///
/// What the numbers in the sync-call cells mean: number n is `names[n - 1]`.
pub unsafe fn set_sync_api_names(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract, for the argument and its elements.
    unsafe {
        let [names] = js::args::<1>(env, info);
        let Some(elements) = js::array_elements(env, names) else {
            return js::throw(
                env,
                E_ARG,
                "setSyncApiNames(): names must be an array of strings",
            );
        };
        let mut list = Vec::with_capacity(elements.len());
        for (i, v) in elements.into_iter().enumerate() {
            match js::string_arg(env, v) {
                Some(name) => list.push(name),
                None => {
                    return js::throw(
                        env,
                        E_ARG,
                        &format!(
                            "setSyncApiNames(): names[{i}] must be a string, got {}",
                            js::type_name(env, v)
                        ),
                    )
                }
            }
        }
        match EnvLoop::get_or_create(env) {
            Ok(env_loop) => {
                env_loop.sync.set_names(list);
                js::undefined(env)
            }
            Err(e) => js::throw(env, E_START, &e),
        }
    }
}

/// sampleAtSyncReturn(api) -> undefined
///
/// Called by a synchronous-API wrapper as its call (number `api`, 1-based) returns while a stack
/// sample is waiting: takes the sample here, where the stack is the caller's.
pub unsafe fn sample_at_sync_return(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let api = unsafe {
        let [api] = js::args::<1>(env, info);
        js::f64_arg(env, api)
    }
    .unwrap_or(0.0);
    // SAFETY: the callback's contract.
    if let Some(env_loop) = unsafe { EnvLoop::get(env) } {
        let isolate = v8::current_isolate();
        if !isolate.is_null() && (0.0..=i32::MAX as f64).contains(&api) {
            // SAFETY: in a Node-API callback on the environment's thread; its isolate.
            unsafe { crate::sink::sample_at_sync_return(&env_loop, isolate, api as i32) };
        }
    }
    // SAFETY: the callback's contract.
    unsafe { js::undefined(env) }
}

/// `"<name>":<bool>,"<name>Reason":<string or null>`
fn capability(s: &mut String, name: &str, support: Result<(), &str>) {
    s.push_str(&format!("\"{name}\":{},\"{name}Reason\":", support.is_ok()));
    match support {
        Ok(()) => s.push_str("null"),
        Err(e) => json_str(s, e),
    }
}

/// nativeInfo() -> JSON: what the native layer can do here, and monitor statistics.
pub unsafe fn native_info(env: napi_env, _info: napi_callback_info) -> napi_value {
    let mut s = String::from("{");
    capability(&mut s, "stackCapture", v8::stack_capture_support());
    s.push(',');
    capability(&mut s, "afterTermination", v8::after_termination_support());
    s.push(',');
    capability(&mut s, "terminate", v8::terminate_support());
    s.push(',');
    capability(
        &mut s,
        "asyncContext",
        v8_values::ValueApi::get().map(|_| ()),
    );
    s.push(',');
    capability(&mut s, "gcState", v8::gc_callbacks_support());
    s.push(',');
    // Whether run()/wrap() can put the AsyncContextFrame back after an interrupt.
    capability(
        &mut s,
        "guardFrames",
        crate::context_frame::FrameApi::get().map(|_| ()),
    );
    s.push(',');
    // Whether external buffers are allowed is the same for every environment of the process.
    static EXTERNAL_BUFFERS: std::sync::OnceLock<Result<(), &'static str>> =
        std::sync::OnceLock::new();
    capability(
        &mut s,
        "syncCallNames",
        *EXTERNAL_BUFFERS.get_or_init(|| {
            // SAFETY: the callback's contract, which is `external_buffers_support`'s.
            unsafe { crate::sync_marker::external_buffers_support(env) }
        }),
    );
    let (reads, read_ns, last_ns) = crate::async_context::read_stats();
    s.push_str(&format!(
        ",\"contextReads\":{reads},\"contextReadNs\":{read_ns},\"contextLastReadNs\":{last_ns}"
    ));
    s.push_str(",\"panics\":");
    panics::stats_json(&mut s);
    s.push_str(&format!(
        ",\"environments\":{},\"channels\":{},\"pendingDeliveries\":{},\"samplesWaiting\":{}",
        counts::ENVIRONMENTS.get(),
        counts::CHANNELS.get(),
        counts::PENDING_DELIVERIES.get(),
        counts::SAMPLES_WAITING.get(),
    ));
    let (wakes, backstop) = monitor::wake_stats();
    s.push_str(&format!(
        ",\"watches\":{},\"monitorWakes\":{},\"backstopWakes\":{},\"forwardedSigalrm\":{},\"sigalrmInstalled\":{},\"hrtime\":\"{}\"}}",
        monitor::watch_count(),
        wakes,
        backstop,
        alarm::forwarded_count(),
        alarm::is_installed(),
        clock::now_ns()
    ));
    // SAFETY: the callback's contract.
    unsafe { js::string(env, &s) }
}

/// testPanic(message, holdingLock): panics with `message`, which the export's guard turns into an
/// ERR_LOOP_HELPERS_PANIC exception and counts. With `holdingLock`, the panic also poisons a lock
/// that the next call recovers from (and counts). Exported only when `LOOP_HELPERS_TEST_PANIC=1`
/// as the addon loads: the tests that show panics are visible.
pub unsafe fn test_panic(env: napi_env, info: napi_callback_info) -> napi_value {
    static LOCK: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    // SAFETY: the callback's contract.
    let [message, holding_lock] = unsafe { js::args::<2>(env, info) };
    // SAFETY: the callback's contract.
    let message = unsafe { js::string_arg(env, message) }.unwrap_or_default();
    let mut calls = panics::lock_or_recover(&LOCK, "exports::test_panic");
    *calls += 1;
    // SAFETY: the callback's contract.
    if !unsafe { js::bool_arg(env, holding_lock) }.unwrap_or(false) {
        drop(calls);
    }
    panic!("{message}");
}

/// guardCall(fn, thisArg, args) -> fn's result
///
/// Calls `fn` under a native guard frame. When a detector interrupts it (or it blocked past a
/// detector's deadline inside native code), the termination is cancelled here and an Error with
/// code ERR_LOOP_HELPERS_INTERRUPT is thrown, whose `interrupt` property is JSON: the detector's
/// id and the blocking code's frames. `lib/detector.ts` turns it into the detector's `raiseExc`.
///
/// A termination that is not ours (`worker.terminate()`, a `vm` timeout) is never cancelled here
/// (see `loop_helpers_core::interrupt`): it unwinds through the guard as if the guard were not
/// there.
pub unsafe fn guard_call(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract, which `invoke_guarded` shares; `env_loop` is this env's.
    unsafe {
        let a = js::args::<3>(env, info);
        if !js::is_function(env, a[0]) {
            return js::throw(env, E_ARG, "guardCall(): fn is not a function");
        }
        let Some(argv) = js::array_elements(env, a[2]) else {
            return js::throw(env, E_ARG, "guardCall(): args is not an array");
        };
        let env_loop = match EnvLoop::get_or_create(env) {
            Ok(e) => e,
            Err(e) => return js::throw(env, E_START, &e),
        };
        invoke_guarded(env, &env_loop, a[1], a[0], &argv, Mode::Throw)
    }
}

/// What a guard does with an interrupt it resolves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `detector.run()`: throw it to the caller (also for a native call that ran past the
    /// deadline).
    Throw,
    /// The queueMicrotask callback guard: return normally so that
    /// Node's bookkeeping runs, and deliver the error from a fresh callback.
    Deliver,
}

/// Calls `func` with `this` and `argv` under a guard frame of `mode`, resolving an interrupt that
/// reaches it.
///
/// # Safety
/// The callback's contract; `env_loop` is `env`'s state; `func`, `this` and `argv` are values of
/// `env`.
unsafe fn invoke_guarded(
    env: napi_env,
    env_loop: &EnvLoop,
    this: napi_value,
    func: napi_value,
    argv: &[napi_value],
    mode: Mode,
) -> napi_value {
    let kind = match mode {
        Mode::Throw => GuardKind::Explicit,
        Mode::Deliver => GuardKind::Callback,
    };
    // `run()` throws the interrupt to its caller, which goes on: it must find the AsyncContextFrame
    // it called with, not the one the interrupted code entered (context_frame.rs). The queueMicrotask
    // guard's callback ends where the guard does, and V8 sets the next microtask's frame itself.
    let frame = match mode {
        // SAFETY: on the isolate's thread, in this Node-API callback (whose handle scope outlives
        // `frame`), with no termination in progress (we were just called).
        Mode::Throw => unsafe { SavedFrame::current(env_loop.isolate) },
        Mode::Deliver => None,
    };
    env_loop.interrupts.enter_guard(kind);
    let mut result: napi_value = std::ptr::null_mut();
    // SAFETY: the callback's contract; `argv` holds `argv.len()` values of this env, `result` a
    // live local.
    let status =
        unsafe { napi_call_function(env, this, func, argv.len(), argv.as_ptr(), &mut result) };
    // A termination is unwinding through this frame: ours, or one we must not touch
    // (worker.terminate(), a vm timeout around us). A normal return cannot be one.
    // SAFETY: on the isolate's thread (env's JS thread).
    let terminating = status != NAPI_OK && unsafe { v8::is_terminating(env_loop.isolate) };
    let taken = env_loop
        .interrupts
        .exit_guard(kind, mode == Mode::Throw && !terminating, || GuardExit {
            iteration: env_loop.iteration(),
            now_ns: clock::now_ns(),
            // Called only when a request is outstanding.
            turn_cpu_wait_ns: env_loop.turn_cpu_wait_ns(),
        });
    let pass_through = || {
        if status == NAPI_OK {
            result
        } else {
            std::ptr::null_mut()
        }
    };
    let mut late_cause: Option<napi_value> = None;
    let pending = match taken {
        // A normal return, or an ordinary exception (still pending: it propagates as is), or a
        // termination that is not ours: it keeps unwinding, never cancelled here.
        None => return pass_through(),
        Some(Taken::Fired(p)) => {
            // Ours reached its guard: cancel it (every V8 call fails while terminating). If a
            // Worker termination coincided, it is renewed, and nothing of ours is thrown.
            // SAFETY: on env's JS thread; `env_loop.isolate` is its isolate, alive (running us).
            if !unsafe { v8::resolve_own_termination(env, env_loop.isolate) } {
                return std::ptr::null_mut();
            }
            // The `finally` blocks the termination skipped did not put the caller's frame back.
            if let Some(f) = &frame {
                // SAFETY: on the isolate's thread, in the callback whose scope holds the saved
                // handle, with our termination just cancelled.
                unsafe { f.restore(env_loop.isolate) };
            }
            p
        }
        Some(Taken::Late(p)) => {
            // Nothing of ours was terminated, so nothing is cancelled (a termination requested
            // meanwhile, say a vm timeout during the native call, still lands). The code did
            // block past the deadline: `run()` throws ours, and an exception the call threw
            // itself (a vm timeout's among them) becomes its `cause`, never lost.
            if status != NAPI_OK && mode == Mode::Throw {
                let mut own = std::ptr::null_mut();
                // SAFETY: the callback's contract; `own` a live local.
                if unsafe { napi_get_and_clear_last_exception(env, &mut own) } == NAPI_OK
                    && !own.is_null()
                {
                    late_cause = Some(own);
                } else {
                    return std::ptr::null_mut();
                }
            } else if status != NAPI_OK {
                return std::ptr::null_mut();
            }
            p
        }
    };
    match mode {
        Mode::Throw => {
            let json = pending.thrown_json();
            // SAFETY: the callback's contract, with no termination in progress (resolved above,
            // or none for a late one); `late_cause` is a value of this env.
            unsafe { throw_interrupt(env, &json, late_cause) }
        }
        Mode::Deliver => {
            // SAFETY: on the environment's JS thread (the callback's contract).
            unsafe {
                if let Some(support) = env_loop.support::<Support>() {
                    support.deliver(&pending, Delivery::Callback);
                }
                js::undefined(env)
            }
        }
    }
}

/// Arguments of a guard call: up to 8 on the stack (a callback rarely has more), more on the heap.
/// The guard runs on every queueMicrotask callback while an
/// interrupting detector runs, so nothing here allocates in the common case.
struct GuardArgs {
    inline: [napi_value; 8],
    heap: Vec<napi_value>,
    len: usize,
}

impl GuardArgs {
    fn as_slice(&self) -> &[napi_value] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Every argument of a guard function's call, and its data.
///
/// # Safety
/// The callback's contract, for a function made with a `GuardFn` as its data.
unsafe fn all_args(env: napi_env, info: napi_callback_info) -> (GuardArgs, *mut GuardFn) {
    let mut args = GuardArgs {
        inline: [std::ptr::null_mut(); 8],
        heap: Vec::new(),
        len: 0,
    };
    let mut argc = args.inline.len();
    let mut data = std::ptr::null_mut();
    // SAFETY: the callback's contract; `inline` has room for `argc` values, the most Node-API
    // writes (it reports the real count in `argc`).
    unsafe {
        napi_get_cb_info(
            env,
            info,
            &mut argc,
            args.inline.as_mut_ptr(),
            std::ptr::null_mut(),
            &mut data,
        )
    };
    if argc > args.inline.len() {
        args.heap = vec![std::ptr::null_mut(); argc];
        let mut again = argc;
        // SAFETY: as above; `heap` has room for `again` (the real count) values.
        unsafe {
            napi_get_cb_info(
                env,
                info,
                &mut again,
                args.heap.as_mut_ptr(),
                std::ptr::null_mut(),
                &mut data,
            )
        };
    }
    args.len = argc;
    (args, data as *mut GuardFn)
}

/// guardApply(fn, ...args): calls fn(...args) under a delivering guard (queueMicrotask callbacks).
///
/// # Safety
/// The callback's contract; the function was made by `install_interrupts`, with a `GuardFn` of
/// its environment as data.
unsafe extern "C" fn guard_apply(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: this function's contract, which is `guard_apply_inner`'s and `no_panic`'s.
    unsafe { no_panic(env, || guard_apply_inner(env, info)) }
}

/// [`guard_apply`]'s body.
///
/// # Safety
/// As for [`guard_apply`].
unsafe fn guard_apply_inner(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract, for a guard function.
    let (args, data) = unsafe { all_args(env, info) };
    let Some((&func, rest)) = args.as_slice().split_first() else {
        // SAFETY: the callback's contract.
        return unsafe { js::undefined(env) };
    };
    // No type check of `func`: the callers only pass functions, and napi_call_function refuses
    // anything else.
    if data.is_null() {
        // SAFETY: the callback's contract.
        return unsafe { js::undefined(env) };
    }
    // SAFETY: `data` is a `GuardFn` the environment's `EnvLoop` keeps (`keep_guard_fn`): alive
    // while its environment can run this function (the instance data holds the EnvLoop until the
    // environment is gone). The rest is the callback's contract.
    unsafe {
        invoke_guarded(
            env,
            (*data).env_loop(),
            js::undefined(env),
            func,
            rest,
            Mode::Deliver,
        )
    }
}

/// Runs a guard function's body; a panic becomes a JavaScript exception instead of unwinding
/// into V8 (and is counted, see `panics`).
///
/// # Safety
/// The callback's contract.
unsafe fn no_panic(env: napi_env, f: impl FnOnce() -> napi_value) -> napi_value {
    match panics::catch("callback guard", f) {
        Some(v) => v,
        // SAFETY: the callback's contract.
        None => unsafe {
            js::throw(
                env,
                "ERR_LOOP_HELPERS_PANIC",
                "internal error in a callback guard",
            )
        },
    }
}

/// installInterrupts(options, deliver) -> [guardApply, reason]
///
/// `options` (lib/native.ts `InstallInterruptsOptions`): `preciseAsyncIds`, whether
/// `afterTermination` pops the interrupted code's async-id levels one by one (Node 20/22);
/// `afterTermination`, null or the function that repairs what a termination left (async-id stack,
/// module cache, timers); `immediateRunning`, null or an Int32Array over a SharedArrayBuffer whose
/// first element `lib/timer-repair.ts` keeps at 1 while a recorded Immediate callback runs: then
/// `afterTermination` can repair that Immediate. With `preciseAsyncIds` and `afterTermination`
/// every Immediate can be (the popped levels name it), and `immediateRunning` is not needed;
/// otherwise only a recorded one is terminated (unrepaired, Node could not go on).
///
/// `reason` is null when unguarded code can be interrupted, otherwise why not (then only guarded
/// code is: run()/wrap() and the callback guards). Unguarded code needs V8's after-termination
/// callbacks and `afterTermination`.
pub unsafe fn install_interrupts(env: napi_env, info: napi_callback_info) -> napi_value {
    const CALL: &str = "installInterrupts()";
    // SAFETY: the callback's contract; `cb` stays a local of this call.
    let cb = unsafe { js::Callback::enter(env) };
    // SAFETY: the callback's contract, for the arguments and what is read from them.
    let (deliver, precise, after, immediate_running, env_loop) = unsafe {
        let [options, deliver] = js::args::<2>(env, info);
        if !js::is_function(env, deliver) {
            return js::throw(
                env,
                E_ARG,
                &format!(
                    "{CALL}: deliver must be a function, got {}",
                    js::type_name(env, deliver)
                ),
            );
        }
        let o = match js::Options::new(&cb, options, CALL, "options") {
            Ok(o) => o,
            Err(e) => return js::throw(env, E_ARG, &e),
        };
        // Read (and checked) before anything is created, so that a bad argument leaks nothing.
        let precise = match o.optional(c"preciseAsyncIds") {
            None => false,
            Some(_) => match o.boolean(c"preciseAsyncIds") {
                Ok(b) => b,
                Err(e) => return js::throw(env, E_ARG, &e),
            },
        };
        let after = match o.optional(c"afterTermination") {
            None => None,
            Some(_) => match o.function(c"afterTermination") {
                Ok(f) => Some(f),
                Err(e) => return js::throw(env, E_ARG, &e),
            },
        };
        let immediate_running = match o.optional(c"immediateRunning") {
            None => None,
            Some(v) => match unguarded::RunningCell::new(env, v) {
                Ok(cell) => Some(cell),
                Err(e) => {
                    return js::throw(env, E_ARG, &format!("{CALL}: options.immediateRunning {e}"))
                }
            },
        };
        let env_loop = match EnvLoop::get_or_create(env) {
            Ok(e) => e,
            Err(e) => return js::throw(env, E_START, &e),
        };
        (deliver, precise, after, immediate_running, env_loop)
    };
    let mut reason: Option<String> = v8::after_termination_support().err().map(str::to_string);
    let mut after_termination = None;
    if let Some(f) = after {
        let mut r = std::ptr::null_mut();
        // SAFETY: the callback's contract; `f` is a function, `r` a live local.
        if unsafe { napi_create_reference(env, f, 1, &mut r) } == NAPI_OK {
            after_termination = Some(r);
        }
    }
    let support = match env_loop.support::<Support>() {
        Some(s) => s,
        // SAFETY: the callback's contract; `deliver` is a function (checked above).
        None => match unsafe {
            Support::new(env, precise, after_termination, immediate_running, deliver)
        } {
            Ok(s) => {
                env_loop.set_support(s.clone());
                s
            }
            // SAFETY: the callback's contract.
            Err(e) => return unsafe { js::throw(env, E_START, &e) },
        },
    };
    if !support.can_repair() && reason.is_none() {
        reason = Some("no way to repair Node's async-id stack on this Node.js".into());
    }
    env_loop.set_unguarded_possible(reason.is_none());
    let mut out = std::ptr::null_mut();
    // SAFETY: the callback's contract; `out` a live local.
    unsafe { napi_create_array_with_length(env, 2, &mut out) };
    let data = env_loop.keep_guard_fn();
    let mut f = std::ptr::null_mut();
    // SAFETY: the callback's contract; the name is NUL-terminated (10 bytes before it). `data`
    // is a GuardFn of this environment's EnvLoop, kept as long as it: `guard_apply`'s contract.
    unsafe {
        napi_create_function(
            env,
            c"guardApply".as_ptr(),
            10,
            Some(guard_apply),
            data as *mut c_void,
            &mut f,
        )
    };
    // SAFETY: the callback's contract; `out` is the array made above.
    unsafe {
        napi_set_element(env, out, 0, f);
        let r = match &reason {
            Some(r) => js::string(env, r),
            None => js::undefined(env),
        };
        napi_set_element(env, out, 1, r);
    }
    out
}

/// setInterruptsActive(on): whether unguarded code may be terminated now (an interrupting
/// detector runs in this environment).
pub unsafe fn set_interrupts_active(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    unsafe {
        let a = js::args::<1>(env, info);
        let on = js::bool_arg(env, a[0]).unwrap_or(false);
        if let Ok(e) = EnvLoop::get_or_create(env) {
            e.set_unguarded_active(on);
        }
        js::undefined(env)
    }
}

/// Throws the interrupt's Error (`json` as its `interrupt` property, `cause` as its cause).
///
/// # Safety
/// The callback's contract, with no termination in progress; `cause` is a value of `env`.
unsafe fn throw_interrupt(env: napi_env, json: &str, cause: Option<napi_value>) -> napi_value {
    // SAFETY: the callback's contract; `err` a live local, the names NUL-terminated. Setting
    // properties of a fresh Error runs no JavaScript.
    unsafe {
        let code = js::string(env, "ERR_LOOP_HELPERS_INTERRUPT");
        let msg = js::string(env, "interrupted by a BlockingDetector");
        let mut err = std::ptr::null_mut();
        if napi_create_error(env, code, msg, &mut err) == NAPI_OK {
            napi_set_named_property(env, err, c"interrupt".as_ptr(), js::string(env, json));
            if let Some(cause) = cause {
                // `lib/detector.ts` hands it to the raised error as its `cause`.
                napi_set_named_property(env, err, c"cause".as_ptr(), cause);
            }
            napi_throw(env, err);
        } else if let Some(cause) = cause {
            // Could not build ours: the guarded code's own exception goes on instead.
            napi_throw(env, cause);
        }
    }
    std::ptr::null_mut()
}

/// threadCpuWaitNs() -> number: how long the calling thread has waited for a CPU since it started
/// (ns; Linux, from the scheduler's accounting), or -1 where that cannot be read. For
/// `loop-helpers/test`, which does not count time its owner's code was kept off the CPU.
pub unsafe fn thread_cpu_wait_ns(env: napi_env, _info: napi_callback_info) -> napi_value {
    let wait = loop_helpers_core::thread_times::current_thread_times()
        .and_then(|t| t.cpu_wait_ns)
        .map_or(-1.0, |ns| ns as f64);
    // SAFETY: the callback's contract.
    unsafe { js::number(env, wait) }
}

/// isMainThread() -> whether this environment runs on the process's default loop (the main
/// thread). Spares the main thread loading `node:worker_threads` just to learn its threadId is 0.
pub unsafe fn is_main_thread(env: napi_env, _info: napi_callback_info) -> napi_value {
    let mut lp = std::ptr::null_mut();
    // SAFETY: the callback's contract; `lp` a live local. uv_default_loop has no precondition
    // (the main thread made Node's default loop before any addon loaded).
    let main = unsafe {
        napi_get_uv_event_loop(env, &mut lp) == NAPI_OK && lp == crate::uv::uv_default_loop()
    };
    let mut out = std::ptr::null_mut();
    // SAFETY: the callback's contract; `out` a live local.
    unsafe { napi_get_boolean(env, main, &mut out) };
    out
}

/// registerSourceMap(generatedFile, sources, mappings) -> whether it was registered
///
/// `sources` are the original files (absolute), `mappings` the map's VLQ string. Frames of
/// `generatedFile` captured from now on (live warnings included) carry original positions.
pub unsafe fn register_source_map(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract, for the arguments and the elements of `a[1]`.
    let (file, mappings, sources) = unsafe {
        let a = js::args::<3>(env, info);
        let (Some(file), Some(mappings)) = (js::string_arg(env, a[0]), js::string_arg(env, a[2]))
        else {
            return js::throw(env, E_ARG, "registerSourceMap(): bad arguments");
        };
        let Some(elements) = js::array_elements(env, a[1]) else {
            return js::throw(env, E_ARG, "registerSourceMap(): sources must be an array");
        };
        let sources = elements
            .into_iter()
            .map(|v| js::string_arg(env, v).unwrap_or_default())
            .collect();
        (file, mappings, sources)
    };
    let ok = match loop_helpers_core::sourcemap::SourceMap::parse(sources, &mappings) {
        Ok(map) => loop_helpers_core::sourcemap::register(file, map),
        Err(_) => false,
    };
    let mut out = std::ptr::null_mut();
    // SAFETY: the callback's contract; `out` a live local.
    unsafe { napi_get_boolean(env, ok, &mut out) };
    out
}

/// setLogRepeatsAfter(id, ms) -> whether the watch exists: its report budget, at most one logged
/// block per fingerprint per `ms` (0: every block).
pub unsafe fn set_log_repeats_after(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract; `out` a live local.
    unsafe {
        let a = js::args::<2>(env, info);
        let (Some(id), Some(ms)) = (js::f64_arg(env, a[0]), js::f64_arg(env, a[1])) else {
            return js::throw(env, E_ARG, "setLogRepeatsAfter(): bad arguments");
        };
        if !(ms.is_finite() && ms >= 0.0) {
            return js::throw(env, E_ARG, "setLogRepeatsAfter(): bad interval");
        }
        let ok = monitor::set_log_repeats_after(id as u64, (ms * 1e6).round() as u64);
        let mut out = std::ptr::null_mut();
        napi_get_boolean(env, ok, &mut out);
        out
    }
}

/// setReportPaths(cwd, ownDir): what fingerprints make file names relative to, and this package's
/// directory (its frames are not the blocking code).
pub unsafe fn set_report_paths(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    unsafe {
        let a = js::args::<2>(env, info);
        let (Some(cwd), Some(own)) = (js::string_arg(env, a[0]), js::string_arg(env, a[1])) else {
            return js::throw(env, E_ARG, "setReportPaths(): bad arguments");
        };
        loop_helpers_core::fingerprint::set_paths(&cwd, &own);
        js::undefined(env)
    }
}

/// takeContextAnchors(id) -> the objects found at the end of the watch's `asyncContext` paths
/// (internal, lib/otel.ts: the spans active in blocked code) since the last call, oldest first.
pub unsafe fn take_context_anchors(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract; `arr` a live local.
    unsafe {
        let a = js::args::<1>(env, info);
        let Some(id) = js::f64_arg(env, a[0]) else {
            return js::throw(env, E_ARG, "takeContextAnchors(): bad id");
        };
        let anchors = match EnvLoop::get_or_create(env) {
            Ok(e) => e
                .watch_context(id as u64)
                .map(|c| c.take_anchors(env))
                .unwrap_or_default(),
            Err(e) => return js::throw(env, E_START, &e),
        };
        let mut arr = std::ptr::null_mut();
        napi_create_array_with_length(env, anchors.len(), &mut arr);
        for (i, v) in anchors.into_iter().enumerate() {
            napi_set_element(env, arr, i as u32, v);
        }
        arr
    }
}
