//! loop-helpers' Node-API addon: a thin binding over `loop-helpers-core`.
//!
//! # Layers
//!
//! The modules form four layers. A module names (through `crate::` paths) only modules of its own
//! layer or a lower one, and never in a circle: the dependencies run one way, from the entry
//! points down to the raw calls. `__test__/native-layers.test.mjs` reads the list below and checks
//! every module against it.
//!
//! 1. Raw access: Node-API, libuv and V8, with no per-environment state of their own.
//!    - [`napi`] / [`uv`]: hand-declared Node-API and libuv functions; [`js`]: Node-API helpers;
//!      [`channel`]: thread-safe functions that deliver JSON to JavaScript; [`counts`]: native
//!      object counts.
//!    - [`v8`]: the V8 entry points Node-API lacks, resolved at run time (capabilities, not
//!      crashes); [`callback_id`]: the async id of the running callback (Node's embedder API,
//!      resolved the same way); [`v8_values`], [`context_snapshot`], [`async_context`],
//!      [`hooks_store`]: reading V8 values without running JavaScript, for `asyncContext` (the
//!      blocked code's AsyncLocalStorage store, read in the sampling interrupt, from its
//!      AsyncContextFrame or its async resource); [`context_frame`]: the AsyncContextFrame a guard
//!      puts back after an interrupt.
//!    - [`gc_state`], [`sync_marker`]: where a thread outside JavaScript is, marked by the thread
//!      itself: a garbage collection (V8's GC callbacks), a Node.js synchronous API (the
//!      JavaScript layer's wrappers, through memory shared with it).
//!    - [`platform`], [`worker_pool`]: Node's V8 platform and exit handler (through a small C++
//!      shim), and V8's worker threads in a forked child (for fork()).
//! 2. Per-environment state: [`env_loop`] (the heartbeat the monitor reads, teardown) and what it
//!    owns ([`sample_queue`]: stack-sample requests waiting for the V8 interrupt). What it keeps
//!    for the layer above, it holds through traits of its own, implemented there: `WatchOutput`
//!    (a watch's sink) and `InterruptSupport` (the interrupt support).
//! 3. What runs on that state: [`sink`] (stack-sample requests and block delivery to JavaScript),
//!    [`unguarded`] (interrupting code no guard covers, and recovering from it); [`fork`] and
//!    [`exit_guard`] (fork(): the parent's preparation, the child's exit).
//! 4. Entry points, the only layer that knows all others: [`exports`] (the functions `index.ts`
//!    calls) and [`fork_exports`] (those of fork()).
//!
//! The crate root (this file) registers the entry points. The interrupt bookkeeping
//! (`loop_helpers_core::interrupt`) is pure state and lives in the core crate, with its tests.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod async_context;
mod callback_id;
mod channel;
mod context_frame;
mod context_snapshot;
mod counts;
mod env_loop;
mod exit_guard;
mod exports;
mod fork;
mod fork_exports;
mod gc_state;
mod hooks_store;
mod js;
mod napi;
mod platform;
mod sample_queue;
mod sink;
mod sync_marker;
mod unguarded;
mod uv;
mod v8;
mod v8_values;
mod worker_pool;

use std::ffi::CStr;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use loop_helpers_core::panics;
use napi::*;

/// Wraps an exported function so that a panic becomes a JavaScript exception, never unwinding into
/// Node. The panic is counted (`panics::record`), and its message is in the exception's.
///
/// `$f` must be a Rust-ABI `unsafe fn`, which the wrapper's type annotation enforces: a panic
/// cannot unwind out of an `extern "C"` function (Rust aborts the process there, before any
/// `catch_unwind` outside it could see the panic).
macro_rules! guarded {
    ($f:path) => {{
        /// # Safety
        /// A Node-API function callback: called by Node on `env`'s JavaScript thread, with this
        /// call's `info` and a handle scope open (the contract of every exported function).
        unsafe extern "C" fn wrapper(env: napi_env, info: napi_callback_info) -> napi_value {
            let f: unsafe fn(napi_env, napi_callback_info) -> napi_value = $f;
            // SAFETY: `f` is an exported function, whose contract is this callback's, passed on.
            match catch_unwind(AssertUnwindSafe(|| unsafe { f(env, info) })) {
                Ok(v) => v,
                Err(payload) => {
                    panics::record(stringify!($f), payload.as_ref());
                    let message = format!(
                        "internal error in {}: {}",
                        stringify!($f),
                        panics::payload_message(payload.as_ref())
                    );
                    // SAFETY: still on env's JS thread inside the callback; a panic left no
                    // Node-API call half done (the calls themselves cannot unwind).
                    unsafe { js::throw(env, "ERR_LOOP_HELPERS_PANIC", &message) }
                }
            }
        }
        wrapper as unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value
    }};
}

type Exported = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;

/// The version of the contract between this addon and `lib/native.ts` (the functions below, their
/// arguments and results). Bump it with any change there; the loader refuses an addon whose
/// `abiVersion` is not the one it was written for (`NATIVE_ABI_VERSION` in lib/native.ts).
const ABI_VERSION: u32 = 2;

/// Sets `exports[name]` to a JavaScript function that calls `f`.
///
/// # Safety
/// On `env`'s JavaScript thread, in a Node-API callback (the module's registration); `exports` is
/// an object of that env; `f` is sound as a Node-API function callback (a `guarded!` wrapper).
unsafe fn export(env: napi_env, exports: napi_value, name: &CStr, f: Exported) {
    let mut func: napi_value = std::ptr::null_mut();
    // SAFETY: the caller's contract; `name` is NUL-terminated and `name.to_bytes().len()` long,
    // `func` a live local.
    unsafe {
        if napi_create_function(
            env,
            name.as_ptr(),
            name.to_bytes().len(),
            Some(f),
            std::ptr::null_mut(),
            &mut func,
        ) == NAPI_OK
        {
            napi_set_named_property(env, exports, name.as_ptr(), func);
        }
    }
}

extern "C" fn at_exit() {
    // exit() runs static destructors and tears Node down while our monitor thread may still be
    // looking at loops and isolates: make it stop first.
    let _ = panics::catch("monitor::shutdown", loop_helpers_core::monitor::shutdown);
}

/// Keeps this image mapped for the life of the process (macOS; Linux links with `-z nodelete`, see
/// build.rs): Node dlcloses an addon when the last environment that loaded it ends, and our
/// monitor thread and signal handler outlive any one environment. Reopening the image with
/// RTLD_NODELETE marks it never to be unloaded; the handle is deliberately never closed.
#[cfg(target_os = "macos")]
fn stay_loaded() {
    // SAFETY: Dl_info is plain data; all-zero is a valid value for dladdr to overwrite.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = napi_register_module_v1 as *const std::os::raw::c_void;
    // SAFETY: dladdr only looks the address up; `info` is a valid out pointer.
    if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
        // SAFETY: dli_fname is the NUL-terminated path of the loaded image that holds `here`;
        // RTLD_NOLOAD only reopens an image already loaded.
        unsafe {
            libc::dlopen(
                info.dli_fname,
                libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            )
        };
    }
}

/// Node-API module entry point (looked up by name when the addon is loaded).
///
/// # Safety
/// Called by Node with a valid env and exports object, on the loading thread.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        #[cfg(target_os = "macos")]
        stay_loaded();
        // SAFETY: registering a plain extern "C" fn with atexit(3).
        unsafe { libc::atexit(at_exit) };
    });
    let _ = panics::catch("napi_register_module_v1", || {
        let functions: [(&CStr, Exported); 25] = [
            (c"start", guarded!(exports::start)),
            (c"stop", guarded!(exports::stop)),
            (c"flush", guarded!(exports::flush)),
            (c"guardCall", guarded!(exports::guard_call)),
            (c"triggerUncaught", guarded!(exports::trigger_uncaught)),
            (c"installInterrupts", guarded!(exports::install_interrupts)),
            (
                c"setInterruptsActive",
                guarded!(exports::set_interrupts_active),
            ),
            (c"captureStack", guarded!(exports::capture_stack)),
            (c"readAsyncContext", guarded!(exports::read_async_context)),
            (
                c"takeContextAnchors",
                guarded!(exports::take_context_anchors),
            ),
            (c"nativeInfo", guarded!(exports::native_info)),
            (c"isMainThread", guarded!(exports::is_main_thread)),
            (c"threadCpuWaitNs", guarded!(exports::thread_cpu_wait_ns)),
            (c"registerSourceMap", guarded!(exports::register_source_map)),
            (
                c"setLogRepeatsAfter",
                guarded!(exports::set_log_repeats_after),
            ),
            (c"setReportPaths", guarded!(exports::set_report_paths)),
            (c"syncMarker", guarded!(exports::sync_marker)),
            (c"setSyncApiNames", guarded!(exports::set_sync_api_names)),
            (
                c"sampleAtSyncReturn",
                guarded!(exports::sample_at_sync_return),
            ),
            (c"forkSupport", guarded!(fork_exports::fork_support)),
            (c"activeRequests", guarded!(fork_exports::active_requests)),
            (c"fork", guarded!(fork_exports::fork_process)),
            (c"childExitGuard", guarded!(fork_exports::child_exit_guard)),
            (c"childAbort", guarded!(fork_exports::child_abort)),
            (c"waitpid", guarded!(fork_exports::waitpid)),
        ];
        for (name, f) in functions {
            // SAFETY: Node calls this entry point on the loading thread with a valid env and
            // exports object (its contract); each `f` is a `guarded!` wrapper.
            unsafe { export(env, exports, name, f) };
        }
        if std::env::var_os("LOOP_HELPERS_TEST_PANIC").is_some_and(|v| v == "1") {
            // SAFETY: as above.
            unsafe { export(env, exports, c"testPanic", guarded!(exports::test_panic)) };
        }
        let mut version = std::ptr::null_mut();
        // SAFETY: as above; `version` a live local, the name NUL-terminated.
        unsafe {
            if napi_create_uint32(env, ABI_VERSION, &mut version) == NAPI_OK {
                napi_set_named_property(env, exports, c"abiVersion".as_ptr(), version);
            }
        }
    });
    exports
}

/// The Node-API version this addon is written against (Node reads it when loading).
#[no_mangle]
pub extern "C" fn node_api_module_get_api_version_v1() -> c_int {
    8
}
