//! A one-way channel of strings from any thread to a JavaScript function: a thread-safe function
//! that does not keep the process alive by itself. Used for finished blocks (`sink.rs`) and for
//! interrupt errors (`unguarded.rs`), whose delivery keeps the loop alive until it has run: an
//! interrupted callback may have been the loop's last work, and its error must not be lost.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use loop_helpers_core::panics::{self, lock_or_recover};

use crate::js;
use crate::napi::*;

struct Tsfn(napi_threadsafe_function);
// SAFETY: thread-safe functions are made to be called from any thread; the mutex around the Option
// orders every call before the release or finalisation that invalidates the pointer.
unsafe impl Send for Tsfn {}

pub struct JsChannel {
    tsfn: Mutex<Option<Tsfn>>,
    env: napi_env,
    /// Messages queued with `send_holding_loop` and not yet delivered (only touched on the JS
    /// thread). The function is ref'd while this is above zero.
    holding: AtomicUsize,
}

// SAFETY: `env` is only used on its own JavaScript thread (send_holding_loop and call_js run there).
unsafe impl Send for JsChannel {}
unsafe impl Sync for JsChannel {}

struct Message {
    text: String,
    holds_loop: bool,
}

unsafe extern "C" fn call_js(
    env: napi_env,
    js_cb: napi_value,
    ctx: *mut c_void,
    data: *mut c_void,
) {
    // SAFETY: `data` is the Box<Message> leaked in `queue`; Node passes it to us exactly once.
    let msg = Box::from_raw(data as *mut Message);
    if msg.holds_loop && !ctx.is_null() {
        // SAFETY: `ctx` is the channel, kept alive by the reference the finalizer releases.
        let channel = &*(ctx as *const JsChannel);
        if channel.holding.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(f) = channel.lock().as_ref() {
                napi_unref_threadsafe_function(env, f.0);
            }
        }
    }
    if env.is_null() || js_cb.is_null() {
        return; // the function is being torn down
    }
    let _ = panics::catch("channel::call_js", || {
        let arg = js::string(env, &msg.text);
        let mut result = std::ptr::null_mut();
        // The JavaScript side rethrows listener exceptions from a tick (Node-API would only warn).
        napi_call_function(env, js::undefined(env), js_cb, 1, &arg, &mut result);
    });
}

unsafe extern "C" fn on_finalize(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: the Arc reference leaked in `JsChannel::new`, released here exactly once.
    let channel = Arc::from_raw(data as *const JsChannel);
    let _ = panics::catch("channel::on_finalize", || {
        channel.lock().take();
    });
}

impl JsChannel {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Tsfn>> {
        lock_or_recover(&self.tsfn, "channel::tsfn")
    }

    /// # Safety
    /// On `env`'s JS thread, inside a Node-API callback; `func` is a function value.
    pub unsafe fn new(env: napi_env, func: napi_value, name: &str) -> Result<Arc<Self>, String> {
        let channel = Arc::new(JsChannel {
            tsfn: Mutex::new(None),
            env,
            holding: AtomicUsize::new(0),
        });
        let finalize_ref = Arc::into_raw(channel.clone()) as *mut c_void;
        let mut tsfn = std::ptr::null_mut();
        let status = napi_create_threadsafe_function(
            env,
            func,
            std::ptr::null_mut(),
            js::string(env, name),
            0,
            1,
            finalize_ref,
            Some(on_finalize),
            // The context: the same channel, alive until on_finalize releases that reference.
            finalize_ref,
            Some(call_js),
            &mut tsfn,
        );
        if status != NAPI_OK {
            drop(Arc::from_raw(finalize_ref as *const JsChannel));
            return Err(format!("napi_create_threadsafe_function failed ({status})"));
        }
        // Delivering must never keep the process alive.
        napi_unref_threadsafe_function(env, tsfn);
        *channel.lock() = Some(Tsfn(tsfn));
        Ok(channel)
    }

    /// Queues `text` for the JavaScript function; dropped once the channel is closed or gone.
    pub fn send(&self, text: String) {
        self.queue(text, false);
    }

    /// Like `send`, and the loop stays alive until `text` was delivered.
    ///
    /// # Safety
    /// On the JavaScript thread of the environment the channel was created in.
    pub unsafe fn send_holding_loop(&self, text: String) {
        self.queue(text, true);
    }

    fn queue(&self, text: String, holds_loop: bool) {
        let guard = self.lock();
        if let Some(f) = guard.as_ref() {
            if holds_loop && self.holding.fetch_add(1, Ordering::AcqRel) == 0 {
                // SAFETY: on the env's thread (the caller's contract); `f` is live under the lock.
                unsafe { napi_ref_threadsafe_function(self.env, f.0) };
            }
            let data = Box::into_raw(Box::new(Message { text, holds_loop })) as *mut c_void;
            // SAFETY: `f` is live while the lock is held (close and finalisation take it first).
            if unsafe { napi_call_threadsafe_function(f.0, data, TSFN_NONBLOCKING) } != NAPI_OK {
                // SAFETY: not queued, so still ours.
                drop(unsafe { Box::from_raw(data as *mut Message) });
                if holds_loop && self.holding.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // SAFETY: as above.
                    unsafe { napi_unref_threadsafe_function(self.env, f.0) };
                }
            }
        }
    }

    /// Releases the thread-safe function; later sends are dropped.
    pub fn close(&self) {
        if let Some(f) = self.lock().take() {
            // SAFETY: `f` is a live thread-safe function we created and have not released.
            unsafe { napi_release_threadsafe_function(f.0, TSFN_RELEASE) };
        }
    }
}
