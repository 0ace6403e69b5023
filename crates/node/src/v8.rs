//! The V8 entry points Node-API lacks, resolved at run time.
//!
//! Every symbol is looked up with `dlsym` in the running node executable. A missing one turns the
//! capability off (reported by `capabilities()`); it never makes the addon fail to load. Only plain,
//! non-virtual functions are called, through their Itanium-mangled names, with these ABI facts:
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

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::OnceLock;

use loop_helpers_core::report::Frame;

use crate::napi::*;

pub type Isolate = c_void;
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
type CurrentStackTraceFn = unsafe extern "C" fn(*mut Isolate, c_int, c_int) -> *mut c_void;
type FrameCountFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetFrameFn = unsafe extern "C" fn(*mut c_void, *mut Isolate, u32) -> *mut c_void;
type LocationFn = unsafe extern "C" fn(*mut c_void) -> Location;
type LocalGetterFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

struct Api {
    get_current: GetCurrentFn,
    request_interrupt: RequestInterruptFn,
    current_stack_trace: CurrentStackTraceFn,
    frame_count: FrameCountFn,
    get_frame: GetFrameFn,
    location: LocationFn,
    script_name: LocalGetterFn,
    function_name: LocalGetterFn,
}

/// (the resolved API, or the names of the symbols that are missing)
static API: OnceLock<Result<Api, String>> = OnceLock::new();

pub(crate) fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the symbol tables.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Set to 1 to run without the V8 entry points, as on a Node.js that lacks them (diagnostics, tests).
pub(crate) const DISABLE_ENV: &str = "LOOP_HELPERS_DISABLE_V8";

/// Looks up every symbol; all of them, or an error naming the missing ones.
pub(crate) fn lookup_all<const N: usize>(
    names: [&'static CStr; N],
) -> Result<[*mut c_void; N], String> {
    let mut out = [std::ptr::null_mut(); N];
    let mut missing = Vec::new();
    for (slot, name) in out.iter_mut().zip(names) {
        match lookup(name) {
            Some(p) => *slot = p,
            None => missing.push(name.to_string_lossy().into_owned()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!("missing V8 symbols: {}", missing.join(", ")))
    }
}

fn resolve() -> Result<Api, String> {
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| v == "1") {
        return Err(format!("disabled by {DISABLE_ENV}=1"));
    }
    let p = lookup_all([
        c"_ZN2v87Isolate10GetCurrentEv",
        c"_ZN2v87Isolate16RequestInterruptEPFvPS0_PvES2_",
        c"_ZN2v810StackTrace17CurrentStackTraceEPNS_7IsolateEiNS0_17StackTraceOptionsE",
        c"_ZNK2v810StackTrace13GetFrameCountEv",
        c"_ZNK2v810StackTrace8GetFrameEPNS_7IsolateEj",
        c"_ZNK2v810StackFrame11GetLocationEv",
        c"_ZNK2v810StackFrame13GetScriptNameEv",
        c"_ZNK2v810StackFrame15GetFunctionNameEv",
    ])?;
    // SAFETY: each pointer is the address of the exported function whose mangled name encodes the
    // signature declared in `Api` (see the module comment for the ABI facts this relies on).
    unsafe {
        Ok(Api {
            get_current: std::mem::transmute::<*mut c_void, GetCurrentFn>(p[0]),
            request_interrupt: std::mem::transmute::<*mut c_void, RequestInterruptFn>(p[1]),
            current_stack_trace: std::mem::transmute::<*mut c_void, CurrentStackTraceFn>(p[2]),
            frame_count: std::mem::transmute::<*mut c_void, FrameCountFn>(p[3]),
            get_frame: std::mem::transmute::<*mut c_void, GetFrameFn>(p[4]),
            location: std::mem::transmute::<*mut c_void, LocationFn>(p[5]),
            script_name: std::mem::transmute::<*mut c_void, LocalGetterFn>(p[6]),
            function_name: std::mem::transmute::<*mut c_void, LocalGetterFn>(p[7]),
        })
    }
}

fn api() -> Result<&'static Api, &'static str> {
    API.get_or_init(resolve).as_ref().map_err(|e| e.as_str())
}

type IsolateMethodFn = unsafe extern "C" fn(*mut Isolate);
type IsolatePredicateFn = unsafe extern "C" fn(*mut Isolate) -> bool;

/// Termination: the entry points behind interrupts.
struct Terminate {
    terminate: IsolateMethodFn,
    cancel: IsolateMethodFn,
    is_terminating: IsolatePredicateFn,
}

static TERMINATE: OnceLock<Result<Terminate, String>> = OnceLock::new();

fn resolve_terminate() -> Result<Terminate, String> {
    api().map_err(|e| e.to_string())?;
    let p = lookup_all([
        c"_ZN2v87Isolate18TerminateExecutionEv",
        c"_ZN2v87Isolate24CancelTerminateExecutionEv",
        c"_ZN2v87Isolate22IsExecutionTerminatingEv",
    ])?;
    // SAFETY: exported non-virtual Isolate methods; `this` is the only argument, and
    // IsExecutionTerminating returns a C++ bool (one byte in a register, like Rust's bool).
    unsafe {
        Ok(Terminate {
            terminate: std::mem::transmute::<*mut c_void, IsolateMethodFn>(p[0]),
            cancel: std::mem::transmute::<*mut c_void, IsolateMethodFn>(p[1]),
            is_terminating: std::mem::transmute::<*mut c_void, IsolatePredicateFn>(p[2]),
        })
    }
}

fn terminate_api() -> Result<&'static Terminate, &'static str> {
    TERMINATE
        .get_or_init(resolve_terminate)
        .as_ref()
        .map_err(|e| e.as_str())
}

/// Whether blocking JavaScript can be terminated on this Node; the reason when it cannot.
pub fn terminate_support() -> Result<(), &'static str> {
    terminate_api().map(|_| ())
}

/// Requests termination of the JavaScript running on `isolate` (thread-safe in V8).
///
/// # Safety
/// `isolate` must be alive.
pub unsafe fn terminate_execution(isolate: *mut Isolate) -> bool {
    match terminate_api() {
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
    match terminate_api() {
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

/// What interrupting unguarded code needs on top of termination: V8's callbacks that run after a
/// terminated call or microtask checkpoint has unwound (the pattern V8's inspector uses for
/// `Runtime.terminateExecution`), and whether a microtask checkpoint is running.
struct AfterTermination {
    add_cc: CcRegisterFn,
    remove_cc: CcRegisterFn,
    add_mc: McRegisterFn,
    remove_mc: McRegisterFn,
    running_microtasks: IsolatePredicateFn,
}

static AFTER: OnceLock<Result<AfterTermination, String>> = OnceLock::new();

fn resolve_after() -> Result<AfterTermination, String> {
    terminate_api().map_err(|e| e.to_string())?;
    let p = lookup_all([
        c"_ZN2v87Isolate24AddCallCompletedCallbackEPFvPS0_E",
        c"_ZN2v87Isolate27RemoveCallCompletedCallbackEPFvPS0_E",
        c"_ZN2v87Isolate30AddMicrotasksCompletedCallbackEPFvPS0_PvES2_",
        c"_ZN2v87Isolate33RemoveMicrotasksCompletedCallbackEPFvPS0_PvES2_",
        c"_ZN2v815MicrotasksScope19IsRunningMicrotasksEPNS_7IsolateE",
    ])?;
    // SAFETY: exported non-virtual Isolate methods (`this` first) and one static function taking
    // the isolate, with the signatures their mangled names encode.
    unsafe {
        Ok(AfterTermination {
            add_cc: std::mem::transmute::<*mut c_void, CcRegisterFn>(p[0]),
            remove_cc: std::mem::transmute::<*mut c_void, CcRegisterFn>(p[1]),
            add_mc: std::mem::transmute::<*mut c_void, McRegisterFn>(p[2]),
            remove_mc: std::mem::transmute::<*mut c_void, McRegisterFn>(p[3]),
            running_microtasks: std::mem::transmute::<*mut c_void, IsolatePredicateFn>(p[4]),
        })
    }
}

fn after_api() -> Result<&'static AfterTermination, &'static str> {
    AFTER
        .get_or_init(resolve_after)
        .as_ref()
        .map_err(|e| e.as_str())
}

/// Whether unguarded code can be interrupted and recovered from; the reason when it cannot.
pub fn after_termination_support() -> Result<(), &'static str> {
    after_api().map(|_| ())
}

/// Whether V8 is running a microtask checkpoint (promise reactions, `await` continuations).
///
/// # Safety
/// On `isolate`'s thread.
pub unsafe fn is_running_microtasks(isolate: *mut Isolate) -> bool {
    match after_api() {
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
    let Ok(a) = after_api() else {
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
    match terminate_api() {
        // SAFETY: on `isolate`'s thread (the caller's contract).
        Ok(t) => unsafe { (t.is_terminating)(isolate) },
        Err(_) => false,
    }
}

/// Whether stack sampling can work on this Node; the reason when it cannot.
pub fn stack_capture_support() -> Result<(), &'static str> {
    api().map(|_| ())
}

/// The calling thread's isolate (null when unavailable).
pub fn current_isolate() -> *mut Isolate {
    match api() {
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
    match api() {
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
unsafe fn string(env: napi_env, local: *mut c_void) -> String {
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
    let Ok(a) = api() else {
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

/// V8's GC prologue and epilogue callbacks (the variants with a `void* data`), by which a thread
/// marks that it is in a garbage collection.
struct GcCallbacks {
    add_prologue: GcAddFn,
    add_epilogue: GcAddFn,
    remove_prologue: GcRemoveFn,
    remove_epilogue: GcRemoveFn,
}

static GC: OnceLock<Result<GcCallbacks, String>> = OnceLock::new();

fn resolve_gc() -> Result<GcCallbacks, String> {
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| v == "1") {
        return Err(format!("disabled by {DISABLE_ENV}=1"));
    }
    let p = lookup_all([
        c"_ZN2v87Isolate21AddGCPrologueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_S2_",
        c"_ZN2v87Isolate21AddGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_S2_",
        c"_ZN2v87Isolate24RemoveGCPrologueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_",
        c"_ZN2v87Isolate24RemoveGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_",
    ])?;
    // SAFETY: exported non-virtual Isolate methods (`this` first), with the signatures their
    // mangled names encode: `Add…(GCCallbackWithData, void*, GCType)`, `Remove…(GCCallbackWithData,
    // void*)`.
    unsafe {
        Ok(GcCallbacks {
            add_prologue: std::mem::transmute::<*mut c_void, GcAddFn>(p[0]),
            add_epilogue: std::mem::transmute::<*mut c_void, GcAddFn>(p[1]),
            remove_prologue: std::mem::transmute::<*mut c_void, GcRemoveFn>(p[2]),
            remove_epilogue: std::mem::transmute::<*mut c_void, GcRemoveFn>(p[3]),
        })
    }
}

fn gc_api() -> Result<&'static GcCallbacks, &'static str> {
    GC.get_or_init(resolve_gc).as_ref().map_err(|e| e.as_str())
}

/// Whether a thread's garbage collections can be marked on this Node; the reason when not.
pub fn gc_callbacks_support() -> Result<(), &'static str> {
    gc_api().map(|_| ())
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
    let Ok(g) = gc_api() else {
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
