//! Interrupting code that no guard of ours covers, and recovering from it.
//!
//! Three pieces (see `../shared/docs/background.md` §4b):
//! - a callback guard: every `queueMicrotask` callback runs through `guardApply` (exports.rs),
//!   which turns our termination into a normal return (V8 would otherwise drop the checkpoint's
//!   other microtasks), and delivers the error;
//! - for everything else (timer, immediate and nextTick callbacks, promise reactions, `await`
//!   continuations, I/O callbacks, top-level code), the interrupt callback registers V8's
//!   call-completed and microtasks-completed callbacks for this one termination; whichever runs
//!   first cancels it, and
//! - then calls `afterTermination` (`lib/unguarded.ts`), which repairs Node's async-id stack (the
//!   levels JavaScript pushed and the termination never popped) and the Timeout or Immediate whose
//!   callback was cut short. Without that repair Node exits with "async hook stack has become
//!   corrupted" (or aborts when a promise hook is on). Two ways, in order of preference, both in
//!   JavaScript (`lib/async-id-stack.ts`, which the guards use too):
//!   - precise: pop exactly the levels JavaScript pushed, through `process.binding('async_wrap')`
//!     (Node 20 and 22);
//!   - Node's own recovery: where that binding is gone (Node 24+), take the path Node takes after
//!     an uncaught exception that a handler caught, which empties the whole stack
//!     (`napi_fatal_exception`, handed over as `triggerUncaught`, with a one-shot capture callback
//!     set by `lib/unguarded.ts`, so no user handler sees it).
//!
//! The error reaches JavaScript afterwards, from a fresh callback (a thread-safe function).

use std::any::Any;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use loop_helpers_core::interrupt::{Delivery, Pending};
use loop_helpers_core::panics::{self, lock_or_recover};

use crate::channel::JsChannel;
use crate::env_loop::{EnvLoop, InterruptSupport};
use crate::js;
use crate::napi::*;
use crate::v8;

/// A flag JavaScript sets and native code reads on the same thread: the first element of an
/// Int32Array over a SharedArrayBuffer (its memory never moves and cannot be detached), kept alive
/// by a reference.
pub struct RunningCell {
    _keep_alive: napi_ref,
    cell: *const AtomicI32,
}

impl RunningCell {
    /// # Safety
    /// On `env`'s JS thread.
    pub unsafe fn new(env: napi_env, v: napi_value) -> Result<Self, String> {
        // SAFETY: on env's JS thread (the caller's contract), `v` a value of this env.
        let Some((data, len)) = (unsafe { js::typed_array::<i32>(env, v, NAPI_INT32_ARRAY) })
        else {
            // SAFETY: as above.
            let got = unsafe { js::type_name(env, v) };
            return Err(format!("must be an Int32Array, got {got}"));
        };
        if len == 0 || !(data as usize).is_multiple_of(std::mem::align_of::<AtomicI32>()) {
            return Err("must have an aligned first element".into());
        }
        let mut array = std::ptr::null_mut();
        // SAFETY: as above; `array` a live local.
        if unsafe { napi_create_reference(env, v, 1, &mut array) } != NAPI_OK {
            return Err("could not be referenced".into());
        }
        Ok(RunningCell {
            _keep_alive: array,
            cell: data as *const AtomicI32,
        })
    }

    fn is_set(&self) -> bool {
        // SAFETY: `cell` points into the typed array's backing store, which our reference keeps
        // alive; a SharedArrayBuffer's memory never moves, and AtomicI32 has i32's layout and
        // alignment (checked in `new`).
        unsafe { (*self.cell).load(Ordering::Relaxed) != 0 }
    }
}

/// Per-environment support, installed by `installInterrupts`.
pub struct Support {
    /// `afterTermination` pops the interrupted code's async-id levels one by one (Node 20/22).
    pub precise_async_ids: bool,
    /// `afterTermination(trigger)` of `lib/unguarded.ts`, called once an unguarded termination was
    /// cancelled: it repairs Node's async-id stack (precisely, or through Node's uncaught-exception
    /// path with `trigger`), drops interrupted `require()` loads from the module cache, and
    /// repairs Node's timer lists.
    pub after_termination: Option<napi_ref>,
    /// Set while an Immediate callback that `afterTermination` can repair runs, where the
    /// Immediates' recorder does that (Node 24+: see [`Support::immediate_repairable`]). Node
    /// cannot go on after an unrepaired one was cut short (its check phase would throw at every
    /// turn), so no other is terminated.
    immediate_running: Option<RunningCell>,
    deliver: Arc<JsChannel>,
}

// SAFETY: napi_refs are only used on the environment's thread (the repair runs there); the channel
// is thread-safe by design.
unsafe impl Send for Support {}
// SAFETY: as for Send: shared references reach the napi_refs only on that thread too.
unsafe impl Sync for Support {}

/// Environments with an unguarded termination in flight, by isolate: the call-completed callback
/// gets no data pointer, only the isolate.
static ARMED: Mutex<Vec<(usize, Arc<EnvLoop>)>> = Mutex::new(Vec::new());

fn armed() -> std::sync::MutexGuard<'static, Vec<(usize, Arc<EnvLoop>)>> {
    lock_or_recover(&ARMED, "unguarded::ARMED")
}

impl Support {
    /// # Safety
    /// On `env`'s JS thread; `deliver` is a function.
    pub unsafe fn new(
        env: napi_env,
        precise_async_ids: bool,
        after_termination: Option<napi_ref>,
        immediate_running: Option<RunningCell>,
        deliver: napi_value,
    ) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Support {
            precise_async_ids,
            after_termination,
            immediate_running: immediate_running.filter(|_| after_termination.is_some()),
            // SAFETY: the caller's contract (env's JS thread; `deliver` a function).
            deliver: unsafe { JsChannel::new(env, deliver, "loop-helpers:interrupt") }?,
        }))
    }

    /// Queues the interrupt's error for JavaScript (runs from a fresh callback). The loop stays
    /// alive until it has run: the interrupted code may have been the loop's last work.
    ///
    /// # Safety
    /// On the environment's JS thread.
    pub unsafe fn deliver(&self, p: &Pending, kind: Delivery) {
        let json = p.delivery_json(kind);
        // SAFETY: on the environment's JS thread (the caller's contract), where the channel was
        // made.
        unsafe { self.deliver.send_holding_loop(p.ticket.watch_id, json) };
    }

    /// Whether the Immediate callback running now (if any) can be repaired after a termination.
    /// With the precise async-id repair, `afterTermination` knows the resources of every level it
    /// popped, and Node pushed the running Immediate as one of them, whoever made it
    /// (lib/timer-repair.ts, mode `'resources'`): every one can be. Otherwise only one that the
    /// recorder saw start can be.
    pub fn immediate_repairable(&self) -> bool {
        (self.precise_async_ids && self.after_termination.is_some())
            || self
                .immediate_running
                .as_ref()
                .is_some_and(RunningCell::is_set)
    }

    /// Can the async-id stack be repaired after an unguarded termination (by `afterTermination`,
    /// one way or the other)?
    pub fn can_repair(&self) -> bool {
        self.after_termination.is_some()
    }

    /// Repairs what an unguarded termination left behind, through `afterTermination`: Node's
    /// async-id stack, the module cache and Node's timer lists.
    ///
    /// # Safety
    /// On the environment's JS thread, with no termination in progress.
    unsafe fn repair(&self, env: napi_env) {
        let mut scope = std::ptr::null_mut();
        // SAFETY: on env's JS thread (the caller's contract); `scope` a live local.
        if unsafe { napi_open_handle_scope(env, &mut scope) } != NAPI_OK {
            return;
        }
        // SAFETY: on env's JS thread, no termination in progress (the caller's contract), inside
        // the scope just opened.
        unsafe { self.call_after_termination(env) };
        // SAFETY: the scope opened above, closed once; the call in between closed its own.
        unsafe { napi_close_handle_scope(env, scope) };
    }

    /// Calls `afterTermination(trigger)`, `trigger` being `napi_fatal_exception`: where the levels
    /// cannot be popped one by one, it empties Node's async-id stack the way Node does after an
    /// uncaught exception was handled (its `clearAsyncIdStack()`), with a one-shot capture
    /// callback. Every level goes, native ones too; the native scopes still open then find an
    /// empty stack and pop nothing (`AsyncHooks::pop_async_context`), exactly as after a handled
    /// uncaught exception.
    ///
    /// # Safety
    /// On the environment's JS thread, inside a handle scope, with no termination in progress.
    unsafe fn call_after_termination(&self, env: napi_env) {
        let Some(r) = self.after_termination else {
            return;
        };
        let mut f = std::ptr::null_mut();
        // SAFETY: on env's JS thread inside a handle scope with no termination in progress (the
        // caller's contract), so JavaScript may run; `r` is our live reference to
        // `afterTermination`, the name is NUL-terminated (15 bytes before it), `argv` holds
        // `argv.len()` values of this env, and every out-parameter is a live local.
        unsafe {
            if napi_get_reference_value(env, r, &mut f) == NAPI_OK && !f.is_null() {
                let mut trigger = std::ptr::null_mut();
                if napi_create_function(
                    env,
                    c"triggerUncaught".as_ptr(),
                    15,
                    Some(trigger_uncaught_cb),
                    std::ptr::null_mut(),
                    &mut trigger,
                ) == NAPI_OK
                {
                    let mut result = std::ptr::null_mut();
                    let argv = [trigger];
                    let status = napi_call_function(
                        env,
                        js::undefined(env),
                        f,
                        argv.len(),
                        argv.as_ptr(),
                        &mut result,
                    );
                    if status == NAPI_PENDING_EXCEPTION {
                        // Our JavaScript does not throw; should it, nothing may escape into the
                        // native caller that V8 just returned to.
                        let mut e = std::ptr::null_mut();
                        napi_get_and_clear_last_exception(env, &mut e);
                    }
                }
            }
        }
    }
}

impl InterruptSupport for Support {
    unsafe fn take_deliveries(&self, watch_id: u64) -> Vec<String> {
        // SAFETY: on the environment's JS thread (the trait's contract), where the channel was
        // made.
        unsafe { self.deliver.take(watch_id) }
    }

    unsafe fn env_teardown(&self, env_loop: &Arc<EnvLoop>) {
        // SAFETY: the trait's contract (the JS thread, the isolate alive) is `disarm`'s.
        unsafe { disarm(env_loop) }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// `triggerUncaught(error)`: hands `error` to Node's uncaught-exception path
/// (`napi_fatal_exception`), which `clearAsyncIdStack` (lib/async-id-stack.ts) has pointed at a
/// one-shot capture callback. Handed to `afterTermination` here (through [`trigger_uncaught_cb`]),
/// and exported for the guards' repair on Node.js 24+.
///
/// # Safety
/// A Node-API function callback's contract: on `env`'s JS thread, with this call's `info`.
pub unsafe fn trigger_uncaught(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: the caller's contract.
    unsafe {
        let [err] = js::args::<1>(env, info);
        napi_fatal_exception(env, err);
        js::undefined(env)
    }
}

/// [`trigger_uncaught`] as the callback of a function made here, with no panic crossing into Node.
///
/// # Safety
/// A Node-API function callback: called by Node with its `env` and `info`.
unsafe extern "C" fn trigger_uncaught_cb(env: napi_env, info: napi_callback_info) -> napi_value {
    // SAFETY: Node-API calls this on env's JS thread with this call's `info`.
    panics::catch("unguarded::trigger_uncaught", || unsafe {
        trigger_uncaught(env, info)
    })
    // SAFETY: as above.
    .unwrap_or_else(|| unsafe { js::undefined(env) })
}

/// Interrupt callback, about to terminate unguarded code: register the callbacks that will
/// resolve it. Returns false if they could not be registered (then do not terminate).
///
/// # Safety
/// On `env_loop`'s JS thread, inside V8's interrupt callback.
pub unsafe fn arm(env_loop: &Arc<EnvLoop>) -> bool {
    let isolate = env_loop.isolate;
    armed().push((isolate as usize, env_loop.clone()));
    let data = Arc::as_ptr(env_loop) as *mut c_void;
    // SAFETY: on the isolate's thread (the caller's contract). `data` stays valid while the
    // callbacks are registered: ARMED holds a reference until `resolve` or `disarm` removes them.
    if unsafe {
        v8::set_after_termination_callbacks(
            isolate,
            true,
            on_call_completed,
            on_microtasks_completed,
            data,
        )
    } {
        true
    } else {
        armed().retain(|(i, _)| *i != isolate as usize);
        false
    }
}

/// The environment is going away: forget its armed termination, if any, and its callbacks.
///
/// # Safety
/// On `env_loop`'s JS thread, while its isolate is still alive.
unsafe fn disarm(env_loop: &Arc<EnvLoop>) {
    let mut list = armed();
    let before = list.len();
    list.retain(|(_, e)| !Arc::ptr_eq(e, env_loop));
    if list.len() != before {
        let data = Arc::as_ptr(env_loop) as *mut c_void;
        // SAFETY: on the isolate's thread, while it is alive (the caller's contract).
        unsafe {
            v8::set_after_termination_callbacks(
                env_loop.isolate,
                false,
                on_call_completed,
                on_microtasks_completed,
                data,
            )
        };
    }
}

/// V8's call-completed callback, registered by [`arm`].
///
/// # Safety
/// Called by V8 only, on `isolate`'s thread, after the outermost call into JavaScript returned.
unsafe extern "C" fn on_call_completed(isolate: *mut v8::Isolate) {
    // SAFETY: V8 calls this on `isolate`'s thread, with no JavaScript on the stack.
    let _ = panics::catch("unguarded::on_call_completed", || unsafe {
        resolve(isolate)
    });
}

/// V8's microtasks-completed callback, registered by [`arm`].
///
/// # Safety
/// Called by V8 only, on `isolate`'s thread, at the end of a microtask checkpoint.
unsafe extern "C" fn on_microtasks_completed(isolate: *mut v8::Isolate, _data: *mut c_void) {
    let _ = panics::catch("unguarded::on_microtasks_completed", || {
        // A checkpoint that ended normally is not ours to act on.
        // SAFETY: V8 calls this on `isolate`'s thread, with the checkpoint's JavaScript unwound.
        unsafe {
            if v8::is_terminating(isolate) {
                resolve(isolate);
            }
        }
    });
}

/// The terminated code has unwound: cancel, unregister, repair, deliver.
///
/// # Safety
/// On `isolate`'s thread, from one of the callbacks [`arm`] registered (the terminated JavaScript
/// has unwound: no termination is still running through it).
unsafe fn resolve(isolate: *mut v8::Isolate) {
    let env_loop = {
        let mut list = armed();
        let Some(pos) = list.iter().position(|(i, _)| *i == isolate as usize) else {
            return;
        };
        list.remove(pos).1
    };
    // Cancel only what we fired (armed implies we did, unless the environment forgot it since);
    // a Worker termination that coincided with ours is renewed, and then nothing is repaired or
    // delivered: the Worker is ending.
    let p = env_loop.interrupts.take_unguarded();
    // SAFETY: on the JS thread of `env_loop.env`, whose isolate this is (ARMED pairs them), and
    // alive (checked just before).
    let go_on = p.is_some()
        && env_loop.is_alive()
        && unsafe { v8::resolve_own_termination(env_loop.env, isolate) };
    let data = Arc::as_ptr(&env_loop) as *mut c_void;
    // SAFETY: on `isolate`'s thread; removing needs no live `data`.
    unsafe {
        v8::set_after_termination_callbacks(
            isolate,
            false,
            on_call_completed,
            on_microtasks_completed,
            data,
        )
    };
    let (Some(p), true) = (p, go_on) else {
        return;
    };
    if let Some(support) = env_loop.support::<Support>() {
        // SAFETY: on the environment's JS thread, and our termination was cancelled (`go_on`).
        unsafe {
            support.repair(env_loop.env);
            support.deliver(&p, Delivery::Unguarded);
        }
    }
}
