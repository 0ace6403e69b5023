//! Where a detector's results go: stack-sample requests to its thread's isolate, and finished blocks
//! to its JavaScript callback through a thread-safe function.

use std::os::raw::c_void;
use std::sync::Arc;

use loop_helpers_core::context::ContextCapture;
use loop_helpers_core::interrupt::looks::Look;
use loop_helpers_core::interrupt::{Context, Decision};
use loop_helpers_core::monitor::{self, SampleTicket, WatchSink};
use loop_helpers_core::panics;

use crate::async_context::{self, AsyncContextSpec};
use crate::callback_id;
use crate::channel::JsChannel;
use crate::env_loop::{EnvLoop, WatchOutput};
use crate::napi::*;
use crate::sample_queue::Queued;
use crate::unguarded::{self, Support};
use crate::v8;

/// Frames kept per sample.
pub const MAX_FRAMES: u32 = 64;

pub struct NodeSink {
    env_loop: Arc<EnvLoop>,
    blocks: Arc<JsChannel>,
    /// `asyncContext`: the stores read with each stack sample.
    context: Option<Arc<AsyncContextSpec>>,
}

/// The V8 interrupt that serves an environment's [`crate::sample_queue::SampleQueue`]. `data` is
/// the environment's serial number ([`EnvLoop::by_serial`]), not a pointer: an interrupt that
/// never runs (the isolate was disposed with it queued: a Worker terminated inside a native call)
/// leaves nothing allocated, and one that runs after its environment's teardown finds nothing.
///
/// # Safety
/// Called by V8 only (`RequestInterrupt`), on `isolate`'s thread while it runs JavaScript.
unsafe extern "C" fn on_interrupt(isolate: *mut v8::Isolate, data: *mut c_void) {
    let _ = panics::catch("sink::on_interrupt", || {
        let Some(env_loop) = EnvLoop::by_serial(data as usize as u64) else {
            return;
        };
        let queued = env_loop.samples.take();
        if !env_loop.is_alive() || queued.is_empty() {
            return;
        }
        // One stack for every watch that asked (the code that blocks is the same for all).
        let started = loop_helpers_core::clock::now_ns();
        let (frames, cut, sync_api) = if queued
            .iter()
            .any(|q| q.ticket.capture || q.ticket.interrupt)
        {
            // SAFETY: V8 runs interrupt callbacks on the isolate's own thread, where JS was
            // executing.
            unsafe { blocked_stack(&env_loop, isolate) }
        } else {
            (Vec::new(), false, None)
        };
        // SAFETY: as above, in the isolate's interrupt callback on its thread.
        let captures = unsafe { captures(&env_loop, isolate, &queued, &frames) };
        let cost = loop_helpers_core::clock::now_ns().saturating_sub(started);
        monitor::deliver_samples(captures, &frames, cost, sync_api.as_deref());
        // SAFETY: in the isolate's interrupt callback, on its thread.
        let code_returned = unsafe { look(&env_loop, isolate, &frames, cut) };
        for q in queued.iter().filter(|q| q.ticket.interrupt) {
            // SAFETY: as above; `env_loop` is alive (checked after `take`).
            if unsafe { interrupt(&env_loop, isolate, q.ticket, &frames, code_returned) } {
                // Terminating: the rest are about the same block, and are resolved with it.
                break;
            }
        }
    });
}

/// Whether the code runs inside an Immediate callback that the timer repair cannot repair (where
/// the repair relies on its recorder, Node 24+: one created before the recorder was installed; or
/// no repair at all). Between two Immediate callbacks (ticks and microtasks Node runs there)
/// nothing needs repairing.
fn in_unrepairable_immediate(
    env_loop: &EnvLoop,
    frames: &[loop_helpers_core::report::Frame],
) -> bool {
    let Some(i) = frames.iter().position(|f| {
        f.function_name == "processImmediate" && f.file_name == "node:internal/timers"
    }) else {
        return false;
    };
    let between_callbacks = i > 0 && frames[i - 1].function_name == "runNextTicks";
    !between_callbacks
        && !env_loop
            .support::<Support>()
            .is_some_and(|s| s.immediate_repairable())
}

/// The blocked code's stack; whether it was cut at [`MAX_FRAMES`] (its outermost frames are
/// missing); and the Node.js synchronous API it is inside (`Atomics.wait`, whose wait serves
/// interrupts), if any: then without the frames of that API's wrapper.
///
/// # Safety
/// On the isolate's own thread, in its interrupt callback or a Node-API callback.
unsafe fn blocked_stack(
    env_loop: &EnvLoop,
    isolate: *mut v8::Isolate,
) -> (Vec<loop_helpers_core::report::Frame>, bool, Option<String>) {
    // SAFETY: on the isolate's own thread, in a callback (the caller's contract).
    let (frames, cut) = unsafe { stack(env_loop, isolate) };
    match env_loop.sync.current() {
        Some(api) => (env_loop.sync.without_hook_frames(frames), cut, Some(api)),
        None => (frames, cut, None),
    }
}

/// The loop thread's stack, at most [`MAX_FRAMES`] of it, and whether it was cut there (its
/// outermost frames are missing).
///
/// # Safety
/// On the isolate's own thread, in its interrupt callback or a Node-API callback.
unsafe fn stack(
    env_loop: &EnvLoop,
    isolate: *mut v8::Isolate,
) -> (Vec<loop_helpers_core::report::Frame>, bool) {
    // SAFETY: the caller's contract; `env_loop.env` is this isolate's environment.
    let frames = unsafe { v8::capture_stack(env_loop.env, isolate, MAX_FRAMES) };
    let cut = frames.len() >= MAX_FRAMES as usize;
    (frames, cut)
}

/// Records a look at the loop thread's stack for the interrupt decisions of its turn, and says
/// whether the code the previous look saw has returned since
/// ([`loop_helpers_core::interrupt::Interrupts::look`]).
///
/// # Safety
/// On the isolate's own thread, in its interrupt callback or a Node-API callback.
unsafe fn look(
    env_loop: &EnvLoop,
    isolate: *mut v8::Isolate,
    frames: &[loop_helpers_core::report::Frame],
    cut: bool,
) -> bool {
    if frames.is_empty() {
        return false;
    }
    env_loop.interrupts.look(Look {
        iteration: env_loop.iteration(),
        // SAFETY: on the isolate's thread, in a callback (the caller's contract).
        callback_id: unsafe { callback_id::current(isolate) },
        frames: frames.to_vec(),
        cut,
    })
}

/// The samples to hand to the watches of the requests that capture, each with the
/// AsyncLocalStorage store read for it.
///
/// # Safety
/// On the isolate's own thread, in its interrupt callback or a Node-API callback.
unsafe fn captures(
    env_loop: &EnvLoop,
    isolate: *mut v8::Isolate,
    queued: &[Queued],
    frames: &[loop_helpers_core::report::Frame],
) -> Vec<(SampleTicket, Option<ContextCapture>)> {
    let no_javascript = frames.is_empty() && v8::stack_capture_support().is_ok();
    queued
        .iter()
        .filter(|q| q.ticket.capture)
        .map(|q| {
            let context = q.context.as_ref().and_then(|spec| {
                if no_javascript {
                    // No JavaScript on the stack: whatever store is current now is not the
                    // blocked code's.
                    Some(ContextCapture::Missing(async_context::NO_JAVASCRIPT.into()))
                } else {
                    // Once per block: later samples of the block carry no context fields.
                    // SAFETY: on the isolate's own thread, in a callback (the caller's contract).
                    unsafe { spec.capture_once(env_loop.env, isolate, q.ticket.block_serial) }
                }
            });
            (q.ticket, context)
        })
        .collect()
}

/// A Node.js synchronous API (number `api`, see `sync_marker`) returned while a stack sample was
/// waiting: takes it here, in its wrapper, where the stack is the caller's (V8's interrupt would
/// run at the next interrupt check, often after the caller returned). Requests that also
/// interrupt stay queued for that interrupt.
///
/// # Safety
/// On `env_loop`'s JS thread, inside a Node-API callback (the wrapper's call of
/// `sampleAtSyncReturn`); `isolate` is its isolate.
pub unsafe fn sample_at_sync_return(env_loop: &EnvLoop, isolate: *mut v8::Isolate, api: i32) {
    let queued = env_loop.samples.take_captures();
    if !env_loop.is_alive() || queued.is_empty() {
        return;
    }
    let started = loop_helpers_core::clock::now_ns();
    // SAFETY: on `env_loop`'s JS thread in a Node-API callback, `isolate` its isolate (the
    // caller's contract), which `stack`, `look` and `captures` need.
    let (frames, captures) = unsafe {
        let (frames, cut) = stack(env_loop, isolate);
        let frames = env_loop.sync.without_hook_frames(frames);
        look(env_loop, isolate, &frames, cut);
        let captures = captures(env_loop, isolate, &queued, &frames);
        (frames, captures)
    };
    let cost = loop_helpers_core::clock::now_ns().saturating_sub(started);
    monitor::deliver_samples(captures, &frames, cost, env_loop.sync.name(api).as_deref());
}

/// Decides on one interrupt request, in the interrupt callback; true when it terminated.
/// `code_returned`: what [`loop_helpers_core::interrupt::Interrupts::look`] said of `frames`.
///
/// # Safety
/// On the isolate's own thread, inside its interrupt callback; `env_loop` is alive.
unsafe fn interrupt(
    env_loop: &Arc<EnvLoop>,
    isolate: *mut v8::Isolate,
    ticket: SampleTicket,
    frames: &[loop_helpers_core::report::Frame],
    code_returned: bool,
) -> bool {
    // SAFETY: on the isolate's thread.
    let running_microtasks = unsafe { v8::is_running_microtasks(isolate) };
    let cx = Context {
        // Only known when stacks can be captured at all.
        no_javascript: frames.is_empty() && v8::stack_capture_support().is_ok(),
        iteration: env_loop.iteration(),
        block_open: monitor::block_open(&ticket),
        running_microtasks,
        unguarded_immediate: in_unrepairable_immediate(env_loop, frames),
        in_async_hook: frames.iter().any(|f| {
            f.file_name == "node:internal/async_hooks" && f.function_name.starts_with("emit")
        }),
        in_node_machinery: loop_helpers_core::node_code::in_node_machinery(frames),
        in_own_code: loop_helpers_core::fingerprint::in_own_code(frames),
        in_builtin_loader: frames.iter().any(|f| {
            f.function_name == "compileForInternalLoader"
                && f.file_name.starts_with("node:internal/bootstrap/")
        }),
        code_returned,
        now_ns: loop_helpers_core::clock::now_ns(),
        // On the loop thread: the wait that ended when this callback got the CPU is counted.
        turn_cpu_wait_ns: env_loop.turn_cpu_wait_ns(),
    };
    match env_loop
        .interrupts
        .on_interrupt(ticket, frames.to_vec(), cx)
    {
        // SAFETY (both arms): our own isolate, alive (checked by the caller). A guard frame below
        // us on the stack, or the callbacks `arm` registers, cancel this termination.
        Decision::Terminate => {
            // SAFETY: see both arms, above.
            unsafe { v8::terminate_execution(isolate) };
            true
        }
        Decision::TerminateUnguarded => {
            // SAFETY: in the interrupt callback on the isolate's thread, as `arm` needs.
            if unsafe { unguarded::arm(env_loop) } {
                // SAFETY: see both arms, above.
                unsafe { v8::terminate_execution(isolate) };
                true
            } else {
                env_loop.interrupts.take_unguarded();
                false
            }
        }
        Decision::Later(after_ns) => {
            // At least 0.25 ms on: each retry interrupts the blocked thread (a stack walk).
            monitor::interrupt_again_after(&ticket, after_ns.max(250_000));
            false
        }
        Decision::Nothing => false,
    }
}

impl NodeSink {
    /// # Safety
    /// On `env`'s JS thread, inside a Node-API callback; `callback` is a function value.
    pub unsafe fn new(
        env: napi_env,
        env_loop: Arc<EnvLoop>,
        callback: napi_value,
        context: Option<AsyncContextSpec>,
    ) -> Result<Arc<Self>, String> {
        // SAFETY: the caller's contract (env's JS thread in a callback, `callback` a function).
        let blocks = unsafe { JsChannel::new(env, callback, "loop-helpers:blocked") }?;
        Ok(Arc::new(NodeSink {
            env_loop,
            blocks,
            context: context.map(Arc::new),
        }))
    }
}

impl WatchOutput for NodeSink {
    /// Releases the thread-safe function (the detector stopped); returns the block records it had
    /// not delivered yet, oldest first. Later deliveries are dropped.
    ///
    /// # Safety
    /// On the environment's JS thread, while the environment is alive: it also releases the
    /// references to the `asyncContext` instances.
    unsafe fn close(&self) -> Vec<String> {
        let undelivered = self.blocks.close();
        if let Some(spec) = &self.context {
            // SAFETY: this function's contract (the JS thread, the environment alive).
            unsafe { spec.close(self.env_loop.env) };
        }
        undelivered
    }

    fn context(&self) -> Option<&Arc<AsyncContextSpec>> {
        self.context.as_ref()
    }
}

impl NodeSink {
    /// Whether the turn has used less than half a timeout of CPU (where that can be read) outside
    /// `run()`/`wrap()`: the rest was the thread waiting for a CPU (a loaded machine) or in a
    /// system call, and an interrupt would land in whatever innocent code runs next. The block is
    /// reported, not interrupted.
    ///
    /// Inside a guard, the request goes out: a thread asleep in a system call is what a guard is
    /// for (`execSync`, a slow disk), and the time the thread waited for a CPU is left out where
    /// the request is decided, on the loop thread, with the wait counted to that moment: in the
    /// interrupt callback, or in the guard's late path when the call returns first
    /// ([`loop_helpers_core::interrupt::Interrupts::exit_guard`]). (The scheduler's run-queue
    /// wait of `schedstat` counts a wait only once the thread runs again, so read from here it
    /// would miss the wait in progress, most of it when a thread barely gets a CPU.)
    fn held_back(&self, ticket: &SampleTicket) -> bool {
        if self.env_loop.interrupts.in_explicit_guard() {
            return false;
        }
        self.env_loop
            .used_in_turn()
            .is_some_and(|used| used.cpu_ns < ticket.timeout_ns / 2)
    }
}

impl WatchSink for NodeSink {
    fn request_sample(&self, ticket: SampleTicket) -> bool {
        if !self.env_loop.is_alive() || self.env_loop.isolate.is_null() {
            return false;
        }
        let mut ticket = ticket;
        if ticket.interrupt && self.held_back(&ticket) {
            // The turn has not held the thread for half a timeout itself: it is reported, not
            // interrupted (see `held_back`). The monitor asks again every timeout while the block
            // lasts.
            ticket.interrupt = false;
            if !ticket.capture {
                return false;
            }
        }
        if ticket.interrupt {
            let iteration = self.env_loop.iteration();
            let now = loop_helpers_core::clock::now_ns();
            if self.env_loop.interrupts.recently_resolved(
                iteration,
                now,
                ticket.timeout_ns,
                self.env_loop.cpu_ns(),
            ) {
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
        let request = Queued {
            ticket,
            context: self.context.clone().filter(|_| ticket.capture),
        };
        if !self.env_loop.samples.push(request) {
            // An interrupt is already queued; its callback serves this request too.
            return true;
        }
        // SAFETY: the isolate is alive: the monitor calls this under its registry lock, and the
        // environment's cleanup unregisters its watches under that lock before the isolate goes.
        let ok = unsafe {
            v8::request_interrupt(
                self.env_loop.isolate,
                on_interrupt,
                self.env_loop.serial as usize as *mut c_void,
            )
        };
        if !ok {
            self.env_loop.samples.cancel();
        }
        ok
    }

    fn block_ended(&self, record_json: String) {
        self.blocks.send(0, record_json);
    }
}
