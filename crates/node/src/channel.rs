//! A one-way channel of strings from any thread to a JavaScript function: a thread-safe function
//! that does not keep the process alive by itself. Used for finished blocks (`sink.rs`) and for
//! interrupt errors (`unguarded.rs`), whose delivery keeps the loop alive until it has run: an
//! interrupted callback may have been the loop's last work, and its error must not be lost.
//!
//! The messages wait in the channel's own queue, not in Node's: the thread-safe function carries
//! only wake-ups, one per message, without data. So a detector that stops takes its undelivered
//! messages back ([`JsChannel::take`], [`JsChannel::close`]) and emits them itself, and nothing of
//! it is delivered after `stop()` has returned; and the messages still queued when an environment
//! goes away are freed with the channel, whatever Node does with the wake-ups left in its queue.

use std::collections::VecDeque;
use std::os::raw::c_void;
use std::sync::{Arc, Mutex};

use loop_helpers_core::panics::{self, lock_or_recover};

use crate::counts;
use crate::js;
use crate::napi::*;

struct Tsfn(napi_threadsafe_function);
// SAFETY: thread-safe functions are made to be called from any thread; the mutex around the state
// orders every call before the release or finalisation that invalidates the pointer.
unsafe impl Send for Tsfn {}

/// One message for JavaScript. Counted while it exists (`counts::PENDING_DELIVERIES`).
struct Message {
    /// What [`JsChannel::take`] selects by (a watch id, or 0).
    tag: u64,
    text: String,
    /// The loop stays alive until this message is delivered or taken back.
    holds_loop: bool,
}

impl Message {
    fn new(tag: u64, text: String, holds_loop: bool) -> Self {
        counts::PENDING_DELIVERIES.up();
        Message {
            tag,
            text,
            holds_loop,
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        counts::PENDING_DELIVERIES.down();
    }
}

struct State {
    /// None once closed or finalised: messages are dropped, not queued.
    tsfn: Option<Tsfn>,
    queue: VecDeque<Message>,
    /// Messages in `queue` that hold the loop; the function is ref'd while there are any.
    holding: usize,
}

pub struct JsChannel {
    state: Mutex<State>,
    env: napi_env,
}

// SAFETY: `env` is only used on its own JavaScript thread (the ref/unref calls of messages that
// hold the loop, which are queued, delivered and taken there).
unsafe impl Send for JsChannel {}
// SAFETY: as for Send; the rest of the state is behind the mutex.
unsafe impl Sync for JsChannel {}

/// The thread-safe function's call_js.
///
/// # Safety
/// Called by Node-API only, on `env`'s JS thread (or with a null `env` at teardown), with the
/// context `JsChannel::new` gave.
unsafe extern "C" fn call_js(
    env: napi_env,
    js_cb: napi_value,
    ctx: *mut c_void,
    _data: *mut c_void,
) {
    if env.is_null() {
        // The environment is going away: Node calls once for each wake-up still in its queue,
        // after the finaliser has released its reference to the channel. Touch nothing; the
        // messages are freed with the channel.
        return;
    }
    let _ = panics::catch("channel::call_js", || {
        // SAFETY: with an env, Node calls this before the finaliser (`on_finalize`), which releases
        // the channel reference that keeps `ctx` alive.
        let channel = unsafe { &*(ctx as *const JsChannel) };
        let Some(msg) = channel.pop() else {
            // Taken back by a detector that stopped.
            return;
        };
        if js_cb.is_null() {
            return;
        }
        // SAFETY: Node-API calls this on `env`'s JS thread with a handle scope open, and
        // `js_cb` is the channel's function, non-null.
        unsafe {
            let arg = js::string(env, &msg.text);
            drop(msg);
            let mut result = std::ptr::null_mut();
            if napi_call_function(env, js::undefined(env), js_cb, 1, &arg, &mut result)
                == NAPI_PENDING_EXCEPTION
            {
                forget_cancelled_termination(env);
            }
        }
    });
}

/// After our callback returned with an exception pending. The JavaScript side catches listener
/// exceptions and rethrows them from a tick, so what is left is usually a termination: a Worker's
/// (Node ignores the exception then) or one of ours, an interrupt of the callback itself (a
/// listener that blocked), already cancelled and delivered as the detector's error. V8 reports a
/// termination as an exception whose value is not a JavaScript value; left pending, Node-API would
/// treat it as an uncaught exception of ours (a DEP0168 warning, or with
/// `--force-node-api-uncaught-exceptions-policy` a fatal `null` exception). Anything else is put
/// back for Node-API's usual handling.
///
/// # Safety
/// On `env`'s JavaScript thread, in a Node-API callback.
unsafe fn forget_cancelled_termination(env: napi_env) {
    let mut e = std::ptr::null_mut();
    // SAFETY: the caller's contract (env's JS thread, in a callback); `e` is a live local.
    if unsafe { napi_get_and_clear_last_exception(env, &mut e) } != NAPI_OK || e.is_null() {
        return;
    }
    // SAFETY: as above; `e` is a value of this env, just taken from it.
    unsafe {
        if !matches!(js::type_name(env, e), "null" | "undefined" | "unknown") {
            napi_throw(env, e);
        }
    }
}

/// The thread-safe function's finalizer.
///
/// # Safety
/// Called by Node-API once, with the `finalize_data` `JsChannel::new` gave.
unsafe extern "C" fn on_finalize(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: the Arc reference leaked in `JsChannel::new`, released here exactly once.
    let channel = unsafe { Arc::from_raw(data as *const JsChannel) };
    counts::CHANNELS.down();
    let _ = panics::catch("channel::on_finalize", || {
        channel.lock().tsfn = None;
    });
}

impl JsChannel {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock_or_recover(&self.state, "channel::state")
    }

    /// # Safety
    /// On `env`'s JS thread, inside a Node-API callback; `func` is a function value.
    pub unsafe fn new(env: napi_env, func: napi_value, name: &str) -> Result<Arc<Self>, String> {
        let channel = Arc::new(JsChannel {
            state: Mutex::new(State {
                tsfn: None,
                queue: VecDeque::new(),
                holding: 0,
            }),
            env,
        });
        let finalize_ref = Arc::into_raw(channel.clone()) as *mut c_void;
        let mut tsfn = std::ptr::null_mut();
        // SAFETY: the caller's contract (env's JS thread in a callback, `func` a function).
        // `finalize_ref` is a counted reference to the channel, which `on_finalize` releases.
        let status = unsafe {
            napi_create_threadsafe_function(
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
            )
        };
        if status != NAPI_OK {
            // SAFETY: Node-API did not take `finalize_ref` (no function, no finalizer): ours to
            // release, once.
            drop(unsafe { Arc::from_raw(finalize_ref as *const JsChannel) });
            return Err(format!("napi_create_threadsafe_function failed ({status})"));
        }
        counts::CHANNELS.up();
        // Delivering must never keep the process alive.
        // SAFETY: on env's JS thread (the caller's contract), with the function just created.
        unsafe { napi_unref_threadsafe_function(env, tsfn) };
        channel.lock().tsfn = Some(Tsfn(tsfn));
        Ok(channel)
    }

    /// Queues `text` for the JavaScript function; dropped once the channel is closed or gone.
    pub fn send(&self, tag: u64, text: String) {
        self.queue(Message::new(tag, text, false));
    }

    /// Like `send`, and the loop stays alive until `text` was delivered (or taken back).
    ///
    /// # Safety
    /// On the JavaScript thread of the environment the channel was created in.
    pub unsafe fn send_holding_loop(&self, tag: u64, text: String) {
        self.queue(Message::new(tag, text, true));
    }

    fn queue(&self, msg: Message) {
        let mut st = self.lock();
        let Some(f) = st.tsfn.as_ref().map(|f| f.0) else {
            return;
        };
        let holds_loop = msg.holds_loop;
        if holds_loop {
            if st.holding == 0 {
                // SAFETY: on the env's thread (send_holding_loop's contract); `f` is live under
                // the lock.
                unsafe { napi_ref_threadsafe_function(self.env, f) };
            }
            st.holding += 1;
        }
        st.queue.push_back(msg);
        // SAFETY: `f` is live while the lock is held (close and finalisation take it first).
        if unsafe { napi_call_threadsafe_function(f, std::ptr::null_mut(), TSFN_NONBLOCKING) }
            != NAPI_OK
        {
            // Not queued (the function is closing): no wake-up will come for it.
            st.queue.pop_back();
            if holds_loop {
                self.release_hold(&mut st);
            }
        }
    }

    /// One message held the loop and no longer does.
    fn release_hold(&self, st: &mut State) {
        st.holding -= 1;
        if st.holding == 0 {
            if let Some(f) = &st.tsfn {
                // SAFETY: messages that hold the loop are queued, delivered and taken on the env's
                // thread, where this runs; `f` is live under the lock.
                unsafe { napi_unref_threadsafe_function(self.env, f.0) };
            }
        }
    }

    /// JS thread, in `call_js`: the oldest message.
    fn pop(&self) -> Option<Message> {
        let mut st = self.lock();
        let msg = st.queue.pop_front()?;
        if msg.holds_loop {
            self.release_hold(&mut st);
        }
        Some(msg)
    }

    /// Takes back the undelivered messages tagged `tag`, oldest first.
    ///
    /// # Safety
    /// On the JavaScript thread of the environment the channel was created in.
    pub unsafe fn take(&self, tag: u64) -> Vec<String> {
        let mut st = self.lock();
        let (mine, rest): (VecDeque<Message>, VecDeque<Message>) = std::mem::take(&mut st.queue)
            .into_iter()
            .partition(|m| m.tag == tag);
        st.queue = rest;
        mine.into_iter()
            .map(|mut m| {
                if m.holds_loop {
                    self.release_hold(&mut st);
                }
                std::mem::take(&mut m.text)
            })
            .collect()
    }

    /// Releases the thread-safe function and returns the undelivered messages, oldest first;
    /// later sends are dropped.
    pub fn close(&self) -> Vec<String> {
        let mut st = self.lock();
        if let Some(f) = st.tsfn.take() {
            // SAFETY: `f` is a live thread-safe function we created and have not released.
            unsafe { napi_release_threadsafe_function(f.0, TSFN_RELEASE) };
        }
        // Released: whether it was ref'd no longer matters (Node closes it once its queue of
        // wake-ups is empty, and those find nothing).
        st.holding = 0;
        std::mem::take(&mut st.queue)
            .into_iter()
            .map(|mut m| std::mem::take(&mut m.text))
            .collect()
    }
}
