//! The V8 entry points Node-API lacks, resolved at run time.
//!
//! Every symbol is looked up with `dlsym` in the running node executable, in tables declared with
//! `symbol_table!` (`loop_helpers_core::symbols`), each entry beside its mangled name. A missing
//! one turns the capability off (reported by `capabilities()`); it never makes the addon fail to
//! load. Only plain, non-virtual functions are called, through their Itanium-mangled names, typed
//! with the signature the name encodes, given these ABI facts:
//! - `Local<T>` is one pointer (the handle slot; Node builds V8 without direct handles), returned in
//!   a register and passed as `this` to `T`'s methods;
//! - `StackFrame::GetLocation()` returns `v8::Location`, two ints, trivially copyable, so returned in
//!   registers like a `#[repr(C)] struct { i32, i32 }`; its line and column are 0-based;
//! - handle scopes and strings go through Node-API (`napi_open_handle_scope`,
//!   `napi_get_value_string_utf8`), because `HandleScope`'s constructor became inline in V8 14 and
//!   `String::Utf8Value` changed signature in V8 13. A `napi_value` is the same slot pointer as a
//!   `Local<Value>` (Node converts between them by reinterpretation).
//!
//! Checked against the exports of Node 20 (V8 11.3), 22 (12.4), 24 (13.6) and 26 (14.6).
//! The GC prologue/epilogue callbacks mark when a thread is in a garbage collection (see
//! `gc_state`).

use std::os::raw::{c_char, c_int, c_void};

use loop_helpers_core::report::Frame;
use loop_helpers_core::symbol_table;

use crate::napi::*;

loop_helpers_core::opaque_types! {
    /// A `v8::Isolate`; only ever used behind a pointer.
    pub Isolate;
}

/// A `Local<T>`: the handle slot's address. Deliberately the same Rust type as `napi_value`:
/// Node-API's `napi_value` *is* a `Local<Value>` reinterpreted (`v8impl::JsValueFromV8LocalValue`
/// and back are casts in Node's `js_native_api_v8.h`), and the snapshot walker passes one handle
/// to both APIs. What the typing guards against is mistaking a handle for an env, a reference, a
/// scope or an isolate; `T` itself (`Value`, `Context`, `Array`...) is checked by the callers,
/// as V8's own `Local<T>::Cast` would.
pub type Local = napi_value;

pub type InterruptCallback = unsafe extern "C" fn(*mut Isolate, *mut c_void);

#[repr(C)]
#[derive(Clone, Copy)]
struct Location {
    line: c_int,
    column: c_int,
}

/// `StackTrace::kDetailed` (kLineNumber | kColumnOffset | kScriptName | kFunctionName | kIsEval |
/// kIsConstructor | kScriptNameOrSourceURL).
const K_DETAILED: c_int = 127;

type GetCurrentFn = unsafe extern "C" fn() -> *mut Isolate;
type RequestInterruptFn = unsafe extern "C" fn(*mut Isolate, InterruptCallback, *mut c_void);
type CurrentStackTraceFn = unsafe extern "C" fn(*mut Isolate, c_int, c_int) -> Local;
type FrameCountFn = unsafe extern "C" fn(Local) -> c_int;
type GetFrameFn = unsafe extern "C" fn(Local, *mut Isolate, u32) -> Local;
type LocationFn = unsafe extern "C" fn(Local) -> Location;
type LocalGetterFn = unsafe extern "C" fn(Local) -> Local;

symbol_table! {
    /// Stack capture and interrupts, on which termination (and so `AfterTermination`) builds.
    struct Api in "V8" {
        get_current: GetCurrentFn = c"_ZN2v87Isolate10GetCurrentEv",
        request_interrupt: RequestInterruptFn = c"_ZN2v87Isolate16RequestInterruptEPFvPS0_PvES2_",
        current_stack_trace: CurrentStackTraceFn =
            c"_ZN2v810StackTrace17CurrentStackTraceEPNS_7IsolateEiNS0_17StackTraceOptionsE",
        frame_count: FrameCountFn = c"_ZNK2v810StackTrace13GetFrameCountEv",
        get_frame: GetFrameFn = c"_ZNK2v810StackTrace8GetFrameEPNS_7IsolateEj",
        location: LocationFn = c"_ZNK2v810StackFrame11GetLocationEv",
        script_name: LocalGetterFn = c"_ZNK2v810StackFrame13GetScriptNameEv",
        function_name: LocalGetterFn = c"_ZNK2v810StackFrame15GetFunctionNameEv",
    }
    requires: [enabled()];
}

/// Set to 1 to run without the V8 entry points, as on a Node.js that lacks them (diagnostics, tests).
pub(crate) const DISABLE_ENV: &str = "LOOP_HELPERS_DISABLE_V8";

/// Whether the V8 entry points may be used ([`DISABLE_ENV`]): every table of them requires this,
/// directly or through `Api`.
pub(crate) fn enabled() -> Result<(), String> {
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| v == "1") {
        return Err(format!("disabled by {DISABLE_ENV}=1"));
    }
    Ok(())
}

type IsolateMethodFn = unsafe extern "C" fn(*mut Isolate);
type IsolatePredicateFn = unsafe extern "C" fn(*mut Isolate) -> bool;

symbol_table! {
    /// Termination: the entry points behind interrupts. Exported non-virtual Isolate methods;
    /// `this` is the only argument, and IsExecutionTerminating returns a C++ bool (one byte in a
    /// register, like Rust's bool).
    struct Terminate in "V8" {
        terminate: IsolateMethodFn = c"_ZN2v87Isolate18TerminateExecutionEv",
        cancel: IsolateMethodFn = c"_ZN2v87Isolate24CancelTerminateExecutionEv",
        is_terminating: IsolatePredicateFn = c"_ZN2v87Isolate22IsExecutionTerminatingEv",
    }
    requires: [Api::get()];
}

/// Whether blocking JavaScript can be terminated on this Node; the reason when it cannot.
pub fn terminate_support() -> Result<(), &'static str> {
    Terminate::get().map(|_| ())
}

/// Requests termination of the JavaScript running on `isolate` (thread-safe in V8).
///
/// # Safety
/// `isolate` must be alive.
pub unsafe fn terminate_execution(isolate: *mut Isolate) -> bool {
    match Terminate::get() {
        Ok(t) if !isolate.is_null() => {
            // SAFETY: `isolate` is alive (the caller's contract) and non-null;
            // `TerminateExecution` may be called from any thread.
            unsafe { (t.terminate)(isolate) };
            true
        }
        _ => false,
    }
}

/// Clears a termination in progress or requested, if any. Returns whether one was in progress.
///
/// # Safety
/// On `isolate`'s own thread.
pub unsafe fn cancel_termination(isolate: *mut Isolate) -> bool {
    match Terminate::get() {
        Ok(t) if !isolate.is_null() => {
            // SAFETY: on `isolate`'s own thread (the caller's contract), which both calls need.
            unsafe {
                let was = (t.is_terminating)(isolate);
                // Also clears a request that has not reached JavaScript yet.
                (t.cancel)(isolate);
                was
            }
        }
        _ => false,
    }
}

/// `napi_cannot_run_js`: what Node-API answers instead of `napi_pending_exception` when the
/// environment cannot run JavaScript, to modules built for experimental Node-API (not this one;
/// recognised anyway).
const NAPI_CANNOT_RUN_JS: napi_status = 23;

/// Whether `env` is stopping: Node will run no more JavaScript there (`worker.terminate()`,
/// `process.exit()` in a Worker, environment teardown), and whatever terminated the JavaScript
/// there must stay terminated.
///
/// Node has no public query for it, but every Node-API call that may run JavaScript checks it
/// first (`NAPI_PREAMBLE`: `can_call_into_js()`, which is false once the environment
/// `is_stopping()`; `worker.terminate()` sets that before it calls `TerminateExecution`). So a
/// `napi_call_function` whose receiver is missing answers right after that check without running
/// anything: `napi_invalid_arg` while JavaScript may run, `napi_pending_exception` once stopping.
///
/// # Safety
/// On `env`'s JS thread, with no termination in progress and no exception stored in Node-API
/// (`napi_get_and_clear_last_exception` first: the same preamble reports that as
/// `napi_pending_exception` too).
pub unsafe fn env_stopping(env: napi_env) -> bool {
    let mut result = std::ptr::null_mut();
    // SAFETY: on env's JS thread (the caller's contract). The null function makes Node-API return
    // after its preamble, before it would use any argument (see above); `result` is a live local.
    let status = unsafe {
        napi_call_function(
            env,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null(),
            &mut result,
        )
    };
    status == NAPI_PENDING_EXCEPTION || status == NAPI_CANNOT_RUN_JS
}

/// Resolves a termination that we fired and that has reached its resolver (a guard frame or an
/// after-termination callback): cancels it, then, if the environment is stopping (a Worker
/// termination coincided with ours and was cancelled with it), terminates again. Returns whether
/// JavaScript may go on (ours was the only termination); false: the caller must neither throw nor
/// deliver anything, only return, and the termination lands at the next interrupt check.
///
/// Cancel first, then look: `worker.terminate()` sets the stopping flag before it calls
/// `TerminateExecution`, and both V8 calls take the same lock, so a Worker termination that the
/// cancel cleared is seen here, and one that comes later is not cleared at all.
///
/// # Safety
/// On `env`'s JS thread; `isolate` is its isolate, alive.
pub unsafe fn resolve_own_termination(env: napi_env, isolate: *mut Isolate) -> bool {
    // SAFETY: on `isolate`'s thread (the caller's contract: env's JS thread, its isolate).
    unsafe { cancel_termination(isolate) };
    // The terminated call stored the termination as Node-API's pending exception.
    let mut discarded = std::ptr::null_mut();
    // SAFETY: on env's JS thread; `discarded` a live local.
    unsafe { napi_get_and_clear_last_exception(env, &mut discarded) };
    // SAFETY: on env's JS thread, with the termination cancelled and the exception cleared just
    // above, as `env_stopping` requires.
    if unsafe { env_stopping(env) } {
        // SAFETY: `isolate` is alive (the caller's contract).
        unsafe { terminate_execution(isolate) };
        return false;
    }
    true
}

type CallCompletedCallback = unsafe extern "C" fn(*mut Isolate);
pub type MicrotasksCompletedCallback = unsafe extern "C" fn(*mut Isolate, *mut c_void);
type CcRegisterFn = unsafe extern "C" fn(*mut Isolate, CallCompletedCallback);
type McRegisterFn = unsafe extern "C" fn(*mut Isolate, MicrotasksCompletedCallback, *mut c_void);

symbol_table! {
    /// What interrupting unguarded code needs on top of termination: V8's callbacks that run after
    /// a terminated call or microtask checkpoint has unwound (the pattern V8's inspector uses for
    /// `Runtime.terminateExecution`), and whether a microtask checkpoint is running. Exported
    /// non-virtual Isolate methods (`this` first) and one static function taking the isolate.
    struct AfterTermination in "V8" {
        add_cc: CcRegisterFn = c"_ZN2v87Isolate24AddCallCompletedCallbackEPFvPS0_E",
        remove_cc: CcRegisterFn = c"_ZN2v87Isolate27RemoveCallCompletedCallbackEPFvPS0_E",
        add_mc: McRegisterFn = c"_ZN2v87Isolate30AddMicrotasksCompletedCallbackEPFvPS0_PvES2_",
        remove_mc: McRegisterFn =
            c"_ZN2v87Isolate33RemoveMicrotasksCompletedCallbackEPFvPS0_PvES2_",
        running_microtasks: IsolatePredicateFn =
            c"_ZN2v815MicrotasksScope19IsRunningMicrotasksEPNS_7IsolateE",
    }
    requires: [Terminate::get()];
}

/// Whether unguarded code can be interrupted and recovered from; the reason when it cannot.
pub fn after_termination_support() -> Result<(), &'static str> {
    AfterTermination::get().map(|_| ())
}

/// Whether V8 is running a microtask checkpoint (promise reactions, `await` continuations).
///
/// # Safety
/// On `isolate`'s thread.
pub unsafe fn is_running_microtasks(isolate: *mut Isolate) -> bool {
    match AfterTermination::get() {
        // SAFETY: on `isolate`'s thread (the caller's contract).
        Ok(a) => unsafe { (a.running_microtasks)(isolate) },
        Err(_) => false,
    }
}

/// Registers (or removes) the callbacks that resolve one unguarded termination.
///
/// # Safety
/// On `isolate`'s thread; `mc_data` must stay valid while registered.
pub unsafe fn set_after_termination_callbacks(
    isolate: *mut Isolate,
    on: bool,
    cc: CallCompletedCallback,
    mc: MicrotasksCompletedCallback,
    mc_data: *mut c_void,
) -> bool {
    let Ok(a) = AfterTermination::get() else {
        return false;
    };
    // SAFETY: on `isolate`'s thread, and `mc_data` stays valid while registered (the caller's
    // contract); V8 calls the callbacks on that thread only.
    unsafe {
        if on {
            (a.add_cc)(isolate, cc);
            (a.add_mc)(isolate, mc, mc_data);
        } else {
            (a.remove_cc)(isolate, cc);
            (a.remove_mc)(isolate, mc, mc_data);
        }
    }
    true
}

/// Whether the isolate is terminating now.
///
/// # Safety
/// On `isolate`'s thread.
pub unsafe fn is_terminating(isolate: *mut Isolate) -> bool {
    match Terminate::get() {
        // SAFETY: on `isolate`'s thread (the caller's contract).
        Ok(t) => unsafe { (t.is_terminating)(isolate) },
        Err(_) => false,
    }
}

/// Whether stack sampling can work on this Node; the reason when it cannot.
pub fn stack_capture_support() -> Result<(), &'static str> {
    Api::get().map(|_| ())
}

/// The calling thread's isolate (null when unavailable).
pub fn current_isolate() -> *mut Isolate {
    match Api::get() {
        // SAFETY: Isolate::GetCurrent() only reads a thread-local.
        Ok(a) => unsafe { (a.get_current)() },
        Err(_) => std::ptr::null_mut(),
    }
}

/// Queues `cb(isolate, data)` to run on the isolate's JavaScript thread at its next interrupt
/// check. Thread-safe. Returns false when the API is unavailable (then `cb` never runs).
///
/// # Safety
/// `isolate` must be alive, and `cb` must be sound to run on its thread with `data`.
pub unsafe fn request_interrupt(
    isolate: *mut Isolate,
    cb: InterruptCallback,
    data: *mut c_void,
) -> bool {
    match Api::get() {
        Ok(a) if !isolate.is_null() => {
            // SAFETY: `isolate` is alive and `cb` sound with `data` on its thread (the caller's
            // contract); `RequestInterrupt` may be called from any thread.
            unsafe { (a.request_interrupt)(isolate, cb, data) };
            true
        }
        _ => false,
    }
}

/// The text of a `v8::Local<v8::String>` (a `napi_value` is one), lossily; empty for an empty
/// handle or a failure.
///
/// # Safety
/// As for [`capture_stack`]; `local` is null or a live handle of that isolate.
unsafe fn string(env: napi_env, local: Local) -> String {
    if local.is_null() {
        return String::new();
    }
    let mut len = 0usize;
    // SAFETY: on env's JS thread with a handle scope open (the caller's contract); a null buffer
    // asks for the length only.
    if unsafe { napi_get_value_string_utf8(env, local, std::ptr::null_mut(), 0, &mut len) }
        != NAPI_OK
    {
        return String::new();
    }
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    // SAFETY: as above; `buf` holds `buf.len()` bytes, the most Node-API writes.
    if unsafe {
        napi_get_value_string_utf8(
            env,
            local,
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            &mut written,
        )
    } != NAPI_OK
    {
        return String::new();
    }
    buf.truncate(written);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Captures the current JavaScript stack of the calling thread (at most `limit` frames).
///
/// # Safety
/// Must run on `env`'s JavaScript thread, either inside a Node-API callback or inside an interrupt
/// callback requested with [`request_interrupt`]; `isolate` must be that thread's isolate.
pub unsafe fn capture_stack(env: napi_env, isolate: *mut Isolate, limit: u32) -> Vec<Frame> {
    let Ok(a) = Api::get() else {
        return Vec::new();
    };
    let mut scope: napi_handle_scope = std::ptr::null_mut();
    // SAFETY: on env's JS thread, in a callback (the caller's contract); `scope` a live local.
    if unsafe { napi_open_handle_scope(env, &mut scope) } != NAPI_OK {
        return Vec::new();
    }
    let mut frames = Vec::new();
    // SAFETY: `isolate` is this thread's isolate (the caller's contract), with the handle scope
    // just opened for the Locals these calls make. Each handle is checked for null before use.
    unsafe {
        let trace =
            (a.current_stack_trace)(isolate, limit.min(i32::MAX as u32) as c_int, K_DETAILED);
        if !trace.is_null() {
            let n = (a.frame_count)(trace).max(0) as u32;
            for i in 0..n {
                let frame = (a.get_frame)(trace, isolate, i);
                if frame.is_null() {
                    continue;
                }
                let loc = (a.location)(frame);
                frames.push(Frame {
                    function_name: string(env, (a.function_name)(frame)),
                    file_name: string(env, (a.script_name)(frame)),
                    line: (loc.line.max(-1) + 1) as u32,
                    column: (loc.column.max(-1) + 1) as u32,
                    generated: None,
                });
            }
        }
    }
    // SAFETY: the scope opened above, closed once, innermost (the loop opened none).
    unsafe { napi_close_handle_scope(env, scope) };
    // Original positions where JavaScript registered a source map (`--enable-source-maps`).
    loop_helpers_core::sourcemap::map_frames(frames)
}

/// `v8::GCCallbackWithData`: `(isolate, GCType, GCCallbackFlags, data)`; both enums are plain
/// C++ enums (int-sized).
pub type GcCallback = unsafe extern "C" fn(*mut Isolate, c_int, c_int, *mut c_void);
type GcAddFn = unsafe extern "C" fn(*mut Isolate, GcCallback, *mut c_void, c_int);
type GcRemoveFn = unsafe extern "C" fn(*mut Isolate, GcCallback, *mut c_void);

/// `kGCTypeAll`: every kind of collection (v8-callbacks.h, the same from V8 11.3 to 14.6).
const GC_TYPE_ALL: c_int = 31;

symbol_table! {
    /// V8's GC prologue and epilogue callbacks (the variants with a `void* data`), by which a
    /// thread marks that it is in a garbage collection. Exported non-virtual Isolate methods
    /// (`this` first): `Add…(GCCallbackWithData, void*, GCType)`, `Remove…(GCCallbackWithData,
    /// void*)`.
    struct GcCallbacks in "V8" {
        add_prologue: GcAddFn = c"_ZN2v87Isolate21AddGCPrologueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_S2_",
        add_epilogue: GcAddFn = c"_ZN2v87Isolate21AddGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_S2_",
        remove_prologue: GcRemoveFn = c"_ZN2v87Isolate24RemoveGCPrologueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_",
        remove_epilogue: GcRemoveFn = c"_ZN2v87Isolate24RemoveGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_",
    }
    requires: [enabled()];
}

/// Whether a thread's garbage collections can be marked on this Node; the reason when not.
pub fn gc_callbacks_support() -> Result<(), &'static str> {
    GcCallbacks::get().map(|_| ())
}

/// Registers (or removes) `prologue` and `epilogue` for every kind of garbage collection of
/// `isolate`, with `data`. Returns false when the entry points are missing.
///
/// # Safety
/// On `isolate`'s thread, outside a garbage collection; `data` must stay valid while registered,
/// and the callbacks must be sound to run on that thread during a collection (they may not touch
/// the JavaScript heap).
pub unsafe fn set_gc_callbacks(
    isolate: *mut Isolate,
    on: bool,
    prologue: GcCallback,
    epilogue: GcCallback,
    data: *mut c_void,
) -> bool {
    let Ok(g) = GcCallbacks::get() else {
        return false;
    };
    if isolate.is_null() {
        return false;
    }
    // SAFETY: on `isolate`'s thread outside a collection, `data` valid while registered, and the
    // callbacks sound during a collection (the caller's contract).
    unsafe {
        if on {
            (g.add_prologue)(isolate, prologue, data, GC_TYPE_ALL);
            (g.add_epilogue)(isolate, epilogue, data, GC_TYPE_ALL);
        } else {
            (g.remove_prologue)(isolate, prologue, data);
            (g.remove_epilogue)(isolate, epilogue, data);
        }
    }
    true
}
