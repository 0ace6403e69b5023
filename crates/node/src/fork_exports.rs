//! The fork() functions the TypeScript layer calls (`lib/fork.ts` validates and explains).
//!
//! # Safety (every function here)
//! A Node-API function callback, registered through `guarded!` in `lib.rs`: called by Node on
//! `env`'s JavaScript thread, with this call's `info` and a handle scope open. That is the
//! contract the `js` helpers and the `fork` functions ask for, and what each SAFETY comment below
//! calls "the callback's contract".

use crate::fork::{self, Forked};
use crate::js;
use crate::napi::*;

const E_ARG: &str = "ERR_LOOP_HELPERS_NATIVE_ARGUMENT";

/// forkSupport() -> null when fork() can work here, else the reason.
pub unsafe fn fork_support(env: napi_env, _info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    unsafe {
        match fork::support() {
            Ok(()) => js::null(env),
            Err(e) => js::string(env, e),
        }
    }
}

/// activeRequests() -> the main loop's active libuv requests.
pub unsafe fn active_requests(env: napi_env, _info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract (env's JS thread, as `fork::active_requests` needs).
    unsafe {
        match fork::active_requests(env) {
            Some(n) => js::number(env, f64::from(n)),
            None => js::throw(env, "ERR_FORK_FAILED", "no event loop"),
        }
    }
}

/// fork(check?) -> [pid, parkMs, memoryMs, forkMs, mappings, workers] in the parent,
/// [0, getpid(), getppid(), workersRestored (0/1), tlsCut] in the child. Throws an Error with a
/// stable `code` when it refuses or fails.
///
/// `check` (a function) runs first, while every handle of the loop is ref'd, so that
/// `process.getActiveResourcesInfo()` and `process._getActiveHandles()` list unref'd handles too;
/// its argument is the number of TLS streams found natively (the child's copies of those are cut).
/// An exception it throws is fork()'s (nothing forked).
pub unsafe fn fork_process(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let a = unsafe { js::args::<1>(env, info) };
    // SAFETY: the callback's contract (env's JS thread).
    let Some(tls) = (unsafe { fork::tls_streams(env) }) else {
        // SAFETY: the callback's contract.
        return unsafe { js::throw(env, "ERR_FORK_FAILED", "no event loop") };
    };
    // SAFETY: the callback's contract.
    if unsafe { js::is_function(env, a[0]) } {
        // SAFETY: the callback's contract.
        let count = unsafe { js::number(env, tls.len() as f64) };
        // SAFETY: the callback's contract. The check is JavaScript called synchronously with a
        // value of this env, which cannot run the loop, as `with_all_handles_visible` requires.
        let checked = unsafe {
            fork::with_all_handles_visible(env, || {
                let mut recv = std::ptr::null_mut();
                let mut result = std::ptr::null_mut();
                napi_get_undefined(env, &mut recv);
                napi_call_function(env, recv, a[0], 1, &count, &mut result)
            })
        };
        // SAFETY: the callback's contract; `err` a live local.
        unsafe {
            match checked {
                None => return js::throw(env, "ERR_FORK_FAILED", "no event loop"),
                // The check threw (a refusal): rethrown as it is.
                Some(NAPI_PENDING_EXCEPTION) => {
                    let mut err = std::ptr::null_mut();
                    if napi_get_and_clear_last_exception(env, &mut err) == NAPI_OK {
                        napi_throw(env, err);
                    }
                    return std::ptr::null_mut();
                }
                Some(status) if status != NAPI_OK => {
                    return js::throw(env, "ERR_FORK_FAILED", "the fork() checks could not run");
                }
                Some(_) => {}
            }
        }
    }
    // SAFETY: the callback's contract. `fork` also needs the main thread's environment: the
    // TypeScript layer refuses other threads before calling this.
    let forked = unsafe { fork::fork(env, &tls) };
    // SAFETY: the callback's contract (in the parent; in the child, the same thread and env).
    // getpid and getppid have no precondition.
    unsafe {
        match forked {
            Ok(Forked::Parent { pid, timing }) => js::numbers(
                env,
                &[
                    f64::from(pid),
                    timing.park_ms,
                    timing.memory_ms,
                    timing.fork_ms,
                    timing.mappings as f64,
                    timing.workers as f64,
                ],
            ),
            Ok(Forked::Child {
                workers_restored,
                tls_cut,
            }) => js::numbers(
                env,
                &[
                    0.0,
                    f64::from(libc::getpid()),
                    f64::from(libc::getppid()),
                    f64::from(u8::from(workers_restored)),
                    tls_cut as f64,
                ],
            ),
            Err(r) => js::throw(env, r.code, &r.message),
        }
    }
}

/// childExitGuard(beforeExit, exit): in a forked child, replaces the natural end of the loop.
pub unsafe fn child_exit_guard(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    unsafe {
        let a = js::args::<2>(env, info);
        if !(js::is_function(env, a[0]) && js::is_function(env, a[1])) {
            return js::throw(env, E_ARG, "childExitGuard(): expected two functions");
        }
        // `install` also wants, in a forked child, the main environment: the only one there.
        match crate::exit_guard::install(env, a[0], a[1]) {
            Ok(()) => js::undefined(env),
            Err(e) => js::throw(env, "ERR_FORK_FAILED", &format!("exit guard: {e}")),
        }
    }
}

/// childAbort(message): in a forked child whose setup failed, writes `message` to stderr and ends
/// the process with status 70 (EX_SOFTWARE) at once: no 'exit' listeners (they belong to the
/// parent's logic), no Node teardown (it would join threads that do not exist here).
pub unsafe fn child_abort(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let message = unsafe {
        let a = js::args::<1>(env, info);
        js::string_arg(env, a[0]).unwrap_or_default()
    };
    // SAFETY: `message` is `message.len()` readable bytes; ending the process at once is this
    // function's purpose (the TypeScript layer calls it only in a broken forked child).
    unsafe {
        let _ = libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(70);
    }
}

/// waitpid(pid, block) -> undefined while running, else [code, signal] (one of them null).
/// Throws ERR_FORK_NO_SUCH_CHILD when `pid` is not an unreaped child of this process.
pub unsafe fn waitpid(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the callback's contract.
    let a = unsafe { js::args::<2>(env, info) };
    // SAFETY: the callback's contract.
    let (Some(pid), Some(block)) = (unsafe { (js::f64_arg(env, a[0]), js::bool_arg(env, a[1])) })
    else {
        // SAFETY: the callback's contract.
        return unsafe { js::throw(env, E_ARG, "waitpid(): bad arguments") };
    };
    if !(pid >= 1.0 && pid <= f64::from(i32::MAX) && pid.fract() == 0.0) {
        // SAFETY: the callback's contract.
        return unsafe { js::throw(env, E_ARG, "waitpid(): bad pid") };
    }
    let ended = fork::wait(pid as i32, block);
    // SAFETY: the callback's contract; `arr` a live local.
    unsafe {
        match ended {
            Ok(None) => js::undefined(env),
            Ok(Some((code, signal))) => {
                let mut arr = std::ptr::null_mut();
                napi_create_array_with_length(env, 2, &mut arr);
                for (i, v) in [code, signal].into_iter().enumerate() {
                    let value = v.map_or_else(|| js::null(env), |n| js::number(env, f64::from(n)));
                    napi_set_element(env, arr, i as u32, value);
                }
                arr
            }
            Err(e) if e == libc::ECHILD => js::throw(
                env,
                "ERR_FORK_NO_SUCH_CHILD",
                &format!("process {pid} is not a child of this process, or was already waited for"),
            ),
            Err(e) => js::throw(
                env,
                "ERR_FORK_FAILED",
                &format!(
                    "waitpid({pid}) failed: {}",
                    std::io::Error::from_raw_os_error(e)
                ),
            ),
        }
    }
}
