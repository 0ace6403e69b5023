//! Where a detector's results go: stack-sample requests to its thread's isolate, and finished blocks
//! to its JavaScript callback through a thread-safe function.

use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};

use loop_helpers_core::monitor::{self, SampleTicket, WatchSink};

use crate::env_loop::EnvLoop;
use crate::interrupt::{Context, Decision};
use crate::napi::*;
use crate::unguarded;
use crate::v8;

/// Frames kept per sample.
pub const MAX_FRAMES: u32 = 64;

struct Tsfn(napi_threadsafe_function);
// SAFETY: thread-safe functions are made to be called from any thread; the mutex around the Option
// orders every call before the release or finalisation that invalidates the pointer.
unsafe impl Send for Tsfn {}

pub struct NodeSink {
    env_loop: Arc<EnvLoop>,
    tsfn: Mutex<Option<Tsfn>>,
}

struct SampleTask {
    /// Weak: if the isolate goes away with this interrupt still queued, the task leaks but the
    /// environment's state does not.
    env_loop: Weak<EnvLoop>,
    ticket: SampleTicket,
}

unsafe extern "C" fn on_interrupt(isolate: *mut v8::Isolate, data: *mut c_void) {
    // SAFETY: `data` is the Box leaked in request_sample, handed to exactly one interrupt.
    let task = Box::from_raw(data as *mut SampleTask);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(env_loop) = task.env_loop.upgrade() else {
            return;
        };
        if !env_loop.is_alive() {
            return;
        }
        let ticket = task.ticket;
        let started = loop_helpers_core::clock::now_ns();
        let frames = if ticket.capture || ticket.interrupt {
            // SAFETY: V8 runs interrupt callbacks on the isolate's own thread, where JS was
            // executing.
            v8::capture_stack(env_loop.env, isolate, MAX_FRAMES)
        } else {
            Vec::new()
        };
        if ticket.capture {
            let cost = loop_helpers_core::clock::now_ns().saturating_sub(started);
            monitor::deliver_sample(ticket, frames.clone(), cost);
        }
        if ticket.interrupt {
            let cx = Context {
                iteration: env_loop.iteration(),
                block_open: monitor::block_open(&ticket),
                // SAFETY: on the isolate's thread.
                running_microtasks: v8::is_running_microtasks(isolate),
                unguarded_immediate: frames.iter().any(|f| {
                    f.function_name == "processImmediate" && f.file_name == "node:internal/timers"
                }),
            };
            match env_loop.interrupts.on_interrupt(ticket, frames, cx) {
                // SAFETY (both arms): our own isolate, alive (checked above). A guard frame below
                // us on the stack, or the callbacks `arm` registers, cancel this termination.
                Decision::Terminate => {
                    v8::terminate_execution(isolate);
                }
                Decision::TerminateUnguarded => {
                    if unguarded::arm(&env_loop) {
                        v8::terminate_execution(isolate);
                    } else {
                        env_loop.interrupts.take_unguarded();
                    }
                }
                Decision::Nothing => {}
            }
        }
    }));
}

unsafe extern "C" fn call_js(
    env: napi_env,
    js_cb: napi_value,
    _ctx: *mut c_void,
    data: *mut c_void,
) {
    // SAFETY: `data` is the Box<String> leaked in block_ended; Node passes it to us exactly once.
    let json = Box::from_raw(data as *mut String);
    if env.is_null() || js_cb.is_null() {
        return; // the function is being torn down
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut s: napi_value = std::ptr::null_mut();
        let mut undefined: napi_value = std::ptr::null_mut();
        if napi_create_string_utf8(env, json.as_ptr() as *const _, json.len(), &mut s) == NAPI_OK
            && napi_get_undefined(env, &mut undefined) == NAPI_OK
        {
            let mut result: napi_value = std::ptr::null_mut();
            // An exception thrown by a listener stays pending and reaches 'uncaughtException'.
            napi_call_function(env, undefined, js_cb, 1, &s, &mut result);
        }
    }));
}

unsafe extern "C" fn on_tsfn_finalize(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the sink reference leaked in NodeSink::new, released here exactly once.
    let sink = Arc::from_raw(data as *const NodeSink);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        sink.tsfn.lock().unwrap_or_else(|e| e.into_inner()).take();
    }));
}

impl NodeSink {
    /// # Safety
    /// On `env`'s JS thread, inside a Node-API callback; `callback` is a function value.
    pub unsafe fn new(
        env: napi_env,
        env_loop: Arc<EnvLoop>,
        callback: napi_value,
    ) -> Result<Arc<Self>, String> {
        let sink = Arc::new(NodeSink {
            env_loop,
            tsfn: Mutex::new(None),
        });
        let mut name: napi_value = std::ptr::null_mut();
        let label = "loop-helpers:blocked";
        napi_create_string_utf8(env, label.as_ptr() as *const _, label.len(), &mut name);
        let finalize_ref = Arc::into_raw(sink.clone()) as *mut c_void;
        let mut tsfn: napi_threadsafe_function = std::ptr::null_mut();
        let status = napi_create_threadsafe_function(
            env,
            callback,
            std::ptr::null_mut(),
            name,
            0,
            1,
            finalize_ref,
            Some(on_tsfn_finalize),
            std::ptr::null_mut(),
            Some(call_js),
            &mut tsfn,
        );
        if status != NAPI_OK {
            drop(Arc::from_raw(finalize_ref as *const NodeSink));
            return Err(format!("napi_create_threadsafe_function failed ({status})"));
        }
        // Delivering a report must never keep the process alive.
        napi_unref_threadsafe_function(env, tsfn);
        *sink.tsfn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Tsfn(tsfn));
        Ok(sink)
    }

    /// Releases the thread-safe function (the detector stopped). Later deliveries are dropped.
    pub fn close(&self) {
        if let Some(f) = self.tsfn.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SAFETY: `f` is a live thread-safe function we created and have not released.
            unsafe { napi_release_threadsafe_function(f.0, TSFN_RELEASE) };
        }
    }
}

impl WatchSink for NodeSink {
    fn request_sample(&self, ticket: SampleTicket) -> bool {
        if !self.env_loop.is_alive() || self.env_loop.isolate.is_null() {
            return false;
        }
        let mut ticket = ticket;
        if ticket.interrupt {
            let iteration = self.env_loop.iteration();
            let now = loop_helpers_core::clock::now_ns();
            if self
                .env_loop
                .interrupts
                .recently_resolved(iteration, now, ticket.timeout_ns)
            {
                // The blocking code was stopped less than a timeout ago; what runs now is other
                // code of the same loop turn.
                ticket.interrupt = false;
                if !ticket.capture {
                    return false;
                }
            } else {
                self.env_loop.interrupts.request(ticket, iteration);
            }
        }
        let task = Box::into_raw(Box::new(SampleTask {
            env_loop: Arc::downgrade(&self.env_loop),
            ticket,
        }));
        // SAFETY: the isolate is alive: the monitor calls this under its registry lock, and the
        // environment's cleanup unregisters its watches under that lock before the isolate goes.
        // If the isolate is disposed before the interrupt runs, the task leaks (a few bytes).
        let ok = unsafe {
            v8::request_interrupt(self.env_loop.isolate, on_interrupt, task as *mut c_void)
        };
        if !ok {
            // SAFETY: not handed to V8, so still ours.
            drop(unsafe { Box::from_raw(task) });
        }
        ok
    }

    fn block_ended(&self, record_json: String) {
        let guard = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = guard.as_ref() {
            let data = Box::into_raw(Box::new(record_json)) as *mut c_void;
            // SAFETY: `f` is live while we hold the lock (close and finalize take it first).
            let status = unsafe { napi_call_threadsafe_function(f.0, data, TSFN_NONBLOCKING) };
            if status != NAPI_OK {
                // SAFETY: not queued, so still ours.
                drop(unsafe { Box::from_raw(data as *mut String) });
            }
        }
    }
}
