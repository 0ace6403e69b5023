//! The natural end of a forked child's event loop.
//!
//! When a Node loop runs dry, Node drains V8's platform tasks (waiting for background tasks that
//! the child's missing worker threads will never run), emits 'beforeExit' and 'exit', and tears
//! down by joining those threads: the child would hang or crash. So the child keeps its loop alive
//! with one ref'd async handle, and an unref'd prepare handle notices, before each poll, when that
//! handle is all that is left. Then it does what Node would: emit 'beforeExit' (which may schedule
//! more work: the loop goes on), and when the loop is still dry, call `process.exit()`, which emits
//! 'exit' and ends in the process exit handler (`fork.rs`: `_exit` with the code).
//!
//! A child forked from such a child (a grandchild) inherits the guard: its handles are on the
//! grandchild's loop too (`uv_loop_fork` keeps every handle). The grandchild keeps that one guard
//! rather than add a second, whose ref'd handle the first would count as work left forever (the
//! grandchild's loop would never end).

use std::cell::Cell;
use std::os::raw::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use loop_helpers_core::panics;

use crate::napi::*;
use crate::uv::*;

struct Guard {
    env: napi_env,
    lp: *mut uv_loop_t,
    keep_alive: *mut uv_handle_t,
    check: *mut uv_handle_t,
    /// Replaced when a forked child inherits the guard (see [`install`]), possibly from within
    /// a call of the old one (a 'beforeExit' listener that forks): cells, read at each call.
    before_exit: Cell<napi_ref>,
    exit: Cell<napi_ref>,
    context: napi_async_context,
}

/// This process's guard, installed here or inherited from the process it was forked from.
static INSTALLED: AtomicPtr<Guard> = AtomicPtr::new(null_mut());

/// Whether the loop has anything left besides the guard's own handle.
///
/// # Safety
/// On the loop's thread; `g`'s handles are initialised (they live until the process ends).
unsafe fn loop_busy(g: &Guard) -> bool {
    // Every turn of the child's loop asks this, so the common answer comes from two loads of the
    // loop's public counters: another ref'd active handle (ours is one) or a request.
    // SAFETY: `g.lp` is the live loop and this its thread (the caller's contract); libuv 1.x's
    // public head, which `uv_loop_head` mirrors, with `active_reqs` used as the count.
    let busy = unsafe {
        let head = &*(g.lp as *const uv_loop_head);
        head.active_handles > 1 || head.active_reqs.count > 0
    };
    if busy {
        return true;
    }
    // Otherwise libuv's own answer without our handle (it also counts closing handles and
    // pending callbacks).
    // SAFETY: `keep_alive` is initialised and never closed; on the loop's thread. It is ref'd
    // again before anything else can look.
    unsafe {
        uv_unref(g.keep_alive);
        let alive = uv_loop_alive(g.lp) != 0;
        uv_ref(g.keep_alive);
        alive
    }
}

/// # Safety
/// Called by libuv on the loop thread with the guard's prepare handle, whose data is the Guard.
unsafe extern "C" fn on_prepare(handle: *mut uv_handle_t) {
    // SAFETY: `handle` is the guard's live prepare handle (libuv is running its callback).
    let g = unsafe { uv_handle_get_data(handle) } as *const Guard;
    // SAFETY: a non-null data is the leaked Guard, whose handles are initialised; on the loop's
    // thread.
    if g.is_null() || unsafe { loop_busy(&*g) } {
        return;
    }
    // Nothing else is left: make the coming poll return at once and handle it in on_dry.
    // SAFETY: the guard's async handle is initialised and never closed.
    unsafe { uv_async_send((*g).keep_alive) };
}

/// # Safety
/// Called by libuv on the loop thread with the guard's async handle, whose data is the Guard.
unsafe extern "C" fn on_dry(handle: *mut uv_handle_t) {
    // SAFETY: `handle` is the guard's live async handle (libuv is running its callback).
    let g = unsafe { uv_handle_get_data(handle) } as *const Guard;
    // SAFETY: as in on_prepare.
    if g.is_null() || unsafe { loop_busy(&*g) } {
        return;
    }
    // SAFETY: the leaked Guard, never freed.
    let g = unsafe { &*g };
    // Unwind-safe: the guard's cells only ever hold whole pointers, never a half-made state.
    let _ = panics::catch("exit_guard", || {
        // SAFETY: on the loop's thread in a libuv callback, no JavaScript on the stack; the
        // guard's functions belong to `g.env`; its handles are initialised.
        unsafe {
            call(g, g.before_exit.get());
            if !loop_busy(g) {
                call(g, g.exit.get());
            }
        }
    });
}

/// Calls a JavaScript function as a top-level callback: ticks and microtasks run after it, and an
/// exception goes to Node's uncaught-exception handling.
///
/// # Safety
/// On the loop's thread, from a libuv callback (no JavaScript on the stack); `f` belongs to `g.env`.
unsafe fn call(g: &Guard, f: napi_ref) {
    let mut scope: napi_handle_scope = null_mut();
    // SAFETY: on `g.env`'s thread from a libuv callback (the caller's contract), where Node-API
    // may be called with a scope of our own; `scope` a live local.
    if unsafe { napi_open_handle_scope(g.env, &mut scope) } != NAPI_OK {
        return;
    }
    let mut func: napi_value = null_mut();
    let mut recv: napi_value = null_mut();
    // SAFETY: as above, inside the scope; `f` is a live reference of `g.env` and `g.context` the
    // async context made with it; no JavaScript is on the stack, so `napi_make_callback` is a
    // top-level call. Out-parameters are live locals; no arguments (null argv with argc 0).
    unsafe {
        if napi_get_reference_value(g.env, f, &mut func) == NAPI_OK
            && !func.is_null()
            && napi_get_global(g.env, &mut recv) == NAPI_OK
        {
            let mut result: napi_value = null_mut();
            let status =
                napi_make_callback(g.env, g.context, recv, func, 0, null_mut(), &mut result);
            if status != NAPI_OK {
                let mut err: napi_value = null_mut();
                if napi_get_and_clear_last_exception(g.env, &mut err) == NAPI_OK && !err.is_null() {
                    napi_fatal_exception(g.env, err);
                }
            }
        }
    }
    // SAFETY: the scope opened above, closed once.
    unsafe { napi_close_handle_scope(g.env, scope) };
}

/// Zeroed memory for a libuv handle of `kind` (null when out of memory).
///
/// # Safety
/// `kind` is a valid `uv_handle_type`.
unsafe fn new_handle(kind: std::os::raw::c_int) -> *mut uv_handle_t {
    // SAFETY: `kind` is a valid handle type (the caller's contract); this only reads a table.
    let size = unsafe { uv_handle_size(kind) };
    // Zeroed, pointer-aligned memory of the handle's size; lives as long as the process.
    // SAFETY: calloc has no precondition; the result is checked for null by the caller.
    unsafe { libc::calloc(1, size.max(1)) as *mut uv_handle_t }
}

/// Installs the guard on `env`'s loop. `before_exit` and `exit` are JavaScript functions. In a
/// process that already has one (inherited through fork), that guard calls them from now on.
///
/// # Safety
/// On `env`'s JavaScript thread, inside a Node-API callback; in a forked child, the main thread's
/// environment (the only one a fork() child has).
pub unsafe fn install(
    env: napi_env,
    before_exit: napi_value,
    exit: napi_value,
) -> Result<(), String> {
    let inherited = INSTALLED.load(Ordering::Acquire);
    if !inherited.is_null() {
        // SAFETY: the guard is leaked, never freed: the copy this process inherited is valid, and
        // its handles are on this loop (the same env and loop as in the process that installed
        // it). Only this thread, the loop's, touches it; the fields replaced are cells.
        let g = unsafe { &*inherited };
        let (mut b, mut e): (napi_ref, napi_ref) = (null_mut(), null_mut());
        // SAFETY: on env's JS thread in a callback (the caller's contract); live locals out.
        let failed = unsafe {
            napi_create_reference(env, before_exit, 1, &mut b) != NAPI_OK
                || napi_create_reference(env, exit, 1, &mut e) != NAPI_OK
        };
        if failed {
            return Err("Node-API call failed".into());
        }
        // SAFETY: as above; the replaced references are the guard's own (made in this env, see
        // the comment above), deleted once, and no call of the guard uses them after this.
        unsafe {
            napi_delete_reference(env, g.before_exit.replace(b));
            napi_delete_reference(env, g.exit.replace(e));
        }
        return Ok(());
    }
    let mut lp: *mut uv_loop_t = null_mut();
    // SAFETY: on env's JS thread (the caller's contract); `lp` a live local.
    if unsafe { napi_get_uv_event_loop(env, &mut lp) } != NAPI_OK || lp.is_null() {
        return Err("no event loop".into());
    }
    let mut g = Box::new(Guard {
        env,
        lp,
        // SAFETY: UV_ASYNC and UV_PREPARE are valid handle types.
        keep_alive: unsafe { new_handle(UV_ASYNC) },
        // SAFETY: as above.
        check: unsafe { new_handle(UV_PREPARE) },
        before_exit: Cell::new(null_mut()),
        exit: Cell::new(null_mut()),
        context: null_mut(),
    });
    if g.keep_alive.is_null() || g.check.is_null() {
        return Err("out of memory".into());
    }
    let mut resource: napi_value = null_mut();
    let mut name: napi_value = null_mut();
    // SAFETY: on env's JS thread in a callback (the caller's contract); the out-parameters are
    // live locals or the boxed guard's fields; the name is NUL-terminated (length usize::MAX).
    let failed = unsafe {
        napi_create_reference(env, before_exit, 1, g.before_exit.as_ptr()) != NAPI_OK
            || napi_create_reference(env, exit, 1, g.exit.as_ptr()) != NAPI_OK
            || napi_create_object(env, &mut resource) != NAPI_OK
            || napi_create_string_utf8(
                env,
                c"loop-helpers:fork-exit".as_ptr(),
                usize::MAX,
                &mut name,
            ) != NAPI_OK
            || napi_async_init(env, resource, name, &mut g.context) != NAPI_OK
    };
    if failed {
        return Err("Node-API call failed".into());
    }
    let g = Box::into_raw(g);
    // The guard is leaked on purpose: the child ends through _exit, never by closing these.
    // SAFETY: `g` is the leaked guard, valid forever; its handles are zeroed memory of libuv's
    // size for their type, initialised here on the loop's thread (env's JS thread), and their
    // data is the guard the callbacks expect.
    let r = unsafe { uv_async_init(lp, (*g).keep_alive, Some(on_dry)) };
    if r != 0 {
        return Err(format!("uv_async_init failed ({r})"));
    }
    // SAFETY: as above.
    unsafe { uv_handle_set_data((*g).keep_alive, g as *mut c_void) };
    // SAFETY: as above.
    let r = unsafe { uv_prepare_init(lp, (*g).check) };
    if r != 0 {
        // The async handle would keep the loop alive with nothing to notice that it ran dry.
        // SAFETY: the handle initialised above, on its loop's thread; closed once, with no
        // callback (its memory stays with the leaked guard).
        unsafe { uv_close((*g).keep_alive, None) };
        return Err(format!("uv_prepare_init failed ({r})"));
    }
    // SAFETY: as above.
    unsafe {
        uv_handle_set_data((*g).check, g as *mut c_void);
        uv_prepare_start((*g).check, Some(on_prepare));
        uv_unref((*g).check);
    }
    INSTALLED.store(g, Ordering::Release);
    Ok(())
}
