//! Per-environment interrupt bookkeeping: which interrupt the monitor asked for, whether the
//! interrupt callback terminated JavaScript for it, and how deep the native guard frames are.
//! Pure state (the Node binding keeps one [`Interrupts`] per environment and acts on its answers),
//! so its rules are unit-tested here on simulated values.
//!
//! The order of events for one interrupt:
//! 1. the monitor (its thread) records the request, then asks V8 for an interrupt;
//! 2. the interrupt callback (the JS thread, inside the blocking code) samples the stack, takes the
//!    request and decides (see [`Interrupts::on_interrupt`]) whether to call `TerminateExecution`;
//! 3. the termination is resolved by the innermost guard frame (`detector.run()`, or the guards
//!    around queueMicrotask callbacks), or, for unguarded code, by
//!    V8's call-completed / microtasks-completed callbacks (the binding's `unguarded.rs`).
//!
//! If the blocking code was native (no interrupt check until it returned) and a throwing guard
//! (`run()`) returns normally while the request is still pending, the guard takes the request
//! itself (the code did block past the deadline), and the late interrupt callback then finds
//! nothing to do: a termination never lands after its guard has gone. Node's `vm` timeout behaves
//! the same way.
//!
//! # Terminations that are not ours
//!
//! Others terminate JavaScript too: `worker.terminate()` (and `process.exit()` in a Worker), and
//! Node's `vm` timeouts. V8 has one termination flag, so a termination does not say whose it is;
//! what we know is whether *we* called `TerminateExecution` ([`Taken::Fired`]). The rules:
//! - only a resolver that fired may cancel, and only once the termination reached it;
//! - a guard that finds a termination unwinding that we did not fire leaves it alone: it neither
//!   cancels it nor takes a late request (the termination keeps unwinding to its owner);
//! - a late request ([`Taken::Late`]) never cancels anything (nothing of ours is in flight), so a
//!   termination requested meanwhile still lands; and it only replaces a normal return: an
//!   exception the guarded code threw (a `vm` timeout's, say) stands;
//! - a cancel also clears a foreign termination that coincided with ours (requested while ours was
//!   in flight). For the one that must never be lost, the environment stopping (Worker
//!   termination), every resolver checks after cancelling (the binding's `v8::env_stopping`) and then
//!   terminates again: the Worker still ends, and no error of ours is thrown or delivered.
//!
//! Which error wins when a `vm` timeout and ours race (deterministic, whoever's termination stops
//! the code first):
//! - `vm` call inside `run()`: the vm resolves its own timeout before the guard sees anything, so
//!   if the vm's termination stopped the script, its `ERR_SCRIPT_EXECUTION_TIMEOUT` comes out of
//!   `run()` (a request of ours still pending is consumed, not thrown); if ours stopped it first,
//!   `run()` throws ours, even if the vm timeout fired while ours unwound (the vm then cancelled
//!   both and threw its error, which the guard replaces);
//! - `run()` inside a `vm` script with a timeout: if the vm's termination reaches the guard first,
//!   it is left alone and the vm throws its error; if ours stopped the code first, `run()` throws
//!   ours into the script, and the vm, should its timeout have fired meanwhile, turns whatever
//!   leaves the script into its own error.
//!
//! The one case no public V8 API can tell apart: a vm timeout that fires while our own
//! termination is in flight (from the start of our interrupt callback, which samples the stack
//! first, to the guard's cancel: a few hundred microseconds at most) merges with it, and is
//! cancelled with it. The vm still reports its timeout when the script ends; but a script that
//! swallows our error and loops forever is then ended only by a later foreign termination.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use crate::monitor::SampleTicket;
use crate::panics::lock_or_recover;
use crate::report::{json_frames, Frame};

pub mod looks;
#[cfg(test)]
mod tests;

/// Where a termination is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// A guard frame on the stack (run/wrap, or a queueMicrotask callback guard).
    Guard,
    /// No guard: V8's call-completed or microtasks-completed callback.
    Unguarded,
}

/// Who put a guard frame on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardKind {
    /// The application: `detector.run()` / `wrap()`.
    Explicit,
    /// The guard around queueMicrotask callbacks.
    Callback,
}

/// An interrupt the monitor asked for.
#[derive(Clone, Debug)]
pub struct Pending {
    pub ticket: SampleTicket,
    /// The loop iteration the block belongs to (a request never outlives its block).
    pub iteration: u64,
    /// The blocking code's stack, once the interrupt callback captured it.
    pub frames: Option<Vec<Frame>>,
    pub resolver: Resolver,
    /// The termination hit a promise reaction / await continuation: the other microtasks of that
    /// checkpoint were dropped.
    pub microtask: bool,
}

/// Which resolver delivers an interrupt's error to JavaScript from a fresh callback (`run()`
/// throws its own instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The guard around a queueMicrotask callback, which returned normally.
    Callback,
    /// V8's after-termination callbacks, for code no guard covered.
    Unguarded,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::Callback => "callback",
            Delivery::Unguarded => "unguarded",
        }
    }
}

impl Pending {
    /// The time the thread itself has held the loop in this block at `now`: the block counted to
    /// that moment, less the thread's wait for a CPU in the turn.
    fn held_ns(&self, now: &GuardExit) -> u64 {
        self.ticket
            .blocked_at(now.now_ns)
            .saturating_sub(now.turn_cpu_wait_ns)
    }

    /// The error delivered to JavaScript (`installInterrupts`' `deliver` receives it):
    /// `{watchId, kind, microtask, blockedMs, frames}`, `frames` null when no stack was taken.
    pub fn delivery_json(&self, kind: Delivery) -> String {
        let mut json = format!(
            "{{\"watchId\":{},\"kind\":\"{}\",\"microtask\":{},\"blockedMs\":{},\"frames\":",
            self.ticket.watch_id,
            kind.as_str(),
            self.microtask,
            self.ticket.blocked_ns as f64 / 1e6
        );
        frames_or_null(&mut json, self.frames.as_deref());
        json.push('}');
        json
    }

    /// The error `run()` throws: `{watchId, late, blockedMs, frames}`. `late`: the interrupt never
    /// ran (the code blocked inside a native call), so there is no stack (`frames` null).
    pub fn thrown_json(&self) -> String {
        let mut json = format!(
            "{{\"watchId\":{},\"late\":{},\"blockedMs\":{},\"frames\":",
            self.ticket.watch_id,
            self.frames.is_none(),
            self.ticket.blocked_ns as f64 / 1e6
        );
        frames_or_null(&mut json, self.frames.as_deref());
        json.push('}');
        json
    }
}

fn frames_or_null(out: &mut String, frames: Option<&[Frame]>) {
    match frames {
        Some(frames) => json_frames(out, frames),
        None => out.push_str("null"),
    }
}

#[derive(Default)]
struct State {
    requested: Option<Pending>,
    fired: Option<Pending>,
    /// (loop iteration, monotonic ns) of the last interrupt resolved: the code after it is not
    /// the code that blocked, so the block is counted again from there.
    last_resolved: Option<Resolved>,
    /// The loop thread's stack at the last look in this turn (a sample or an interrupt), cleared
    /// when an interrupt is resolved (the code after it is new).
    last_look: Option<looks::Look>,
    /// The loop iteration in which an interrupt was declined because the code had returned since
    /// the previous look ([`Context::code_returned`]): once per block, so that code which keeps
    /// moving (a chain of short callbacks that never ends, a stack whose callback id changes) is
    /// stopped one timeout late at most.
    declined_as_returned: Option<u64>,
}

/// When an interrupt was last resolved.
#[derive(Clone, Copy, Debug)]
struct Resolved {
    iteration: u64,
    /// Monotonic clock.
    at_ns: u64,
    /// The loop thread's CPU time then (resolvers run on it).
    cpu_ns: u64,
}

#[derive(Default)]
pub struct Interrupts {
    state: Mutex<State>,
    /// A request or a termination is outstanding (the guards' fast path reads only this).
    outstanding: AtomicBool,
    /// Guard frames on the stack: `run()`/`wrap()` ([`GuardKind::Explicit`]) and the callback
    /// guard of queueMicrotask callbacks ([`GuardKind::Callback`]).
    guard_depth: AtomicU32,
    /// Of those, the explicit ones: the only guards a `'guarded'` watch interrupts in (the
    /// callback guards exist for `'everywhere'` watches).
    explicit_depth: AtomicU32,
    /// Unguarded code may be terminated (the after-termination callbacks and the async-id stack
    /// repair are available, and an interrupting detector runs).
    unguarded: AtomicBool,
}

/// The interrupt a guard frame resolves.
#[derive(Debug)]
pub enum Taken {
    /// We called `TerminateExecution` for it: the guard cancels the termination.
    Fired(Pending),
    /// Only requested: the code blocked inside a native call and the interrupt never ran, so
    /// nothing of ours was terminated and nothing may be cancelled.
    Late(Pending),
}

/// What the interrupt callback should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Terminate: a guard frame on the stack resolves it.
    Terminate,
    /// Terminate: no guard, so register the after-termination callbacks first.
    TerminateUnguarded,
    /// Leave the code running (no request; or unguarded interrupts are off, or not wanted by the
    /// requesting watch (`interrupt: 'guarded'`); or a context that cannot be recovered).
    Nothing,
    /// Leave the code running for now: its own time (the block less the time its thread waited
    /// for a CPU) is this much short of its deadline (the timeout, or a promise reaction's grace).
    /// The watch asks again once that much more time has passed.
    Later(u64),
}

/// Facts about the point where the interrupt callback runs.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// The loop iteration now, and whether the monitor still sees the request's block open: a
    /// request whose block ended before V8 ran the interrupt must not stop whatever runs now.
    pub iteration: u64,
    pub block_open: bool,
    pub running_microtasks: bool,
    /// An Immediate callback, where the timer repair is not installed (Node's Immediate prototype
    /// was not found, e.g. fake timers): Node cannot go on after interrupting it.
    pub unguarded_immediate: bool,
    /// Inside an async_hooks callback (`init`, `before`, `after`, `destroy`, `promiseResolve`),
    /// called from Node's own code in the middle of its bookkeeping (a Timeout counted but not
    /// yet scheduled, say). Node treats a hook that throws as fatal; a termination there would
    /// leave that half done. Only reported, like an `'exit'` listener.
    pub in_async_hook: bool,
    /// Node is compiling and running one of its own built-in modules (its internal loader): a
    /// termination there would leave that module half-initialised for the rest of the process,
    /// and nothing can repair it. The interrupt waits for the next request (one timeout later).
    pub in_builtin_loader: bool,
    /// The innermost JavaScript is Node's own callback machinery (`node:internal/timers`:
    /// `processTimers`, `listOnTimeout`, `processImmediate`; its async hooks; its nextTick queue),
    /// between or around callbacks: a termination there would leave a timer list or the tick
    /// queue half-processed, at a point no repair can know (seen under load: timers lost, the
    /// process ran dry and exited 0 early). Blocking code is never there for long; the monitor
    /// asks again one timeout later.
    pub in_node_machinery: bool,
    /// The innermost JavaScript (Node's internals aside) is this package's own: `stop()`, a
    /// delivery, a guard's bookkeeping. Stopped half way, a detector could be left stopped in
    /// JavaScript and running natively. It is short; the monitor asks again one timeout later.
    pub in_own_code: bool,
    /// No JavaScript frame is on the stack: V8 ran the interrupt between two calls into
    /// JavaScript (the block, if any, is in native code). A termination now would land on
    /// whatever JavaScript runs next, code that did not block.
    pub no_javascript: bool,
    /// The code that the previous look in this loop turn saw (a sample, or an interrupt not
    /// taken) has returned since ([`Interrupts::look`]): what runs now started later and has not
    /// blocked for a timeout itself. (A bounded block ended just as the monitor asked, and V8 ran
    /// the interrupt in the next JavaScript of the turn.) Unless a `run()`/`wrap()` is on the
    /// stack, the interrupt waits for the monitor's next request, one timeout later; once per
    /// block, then whatever runs is stopped.
    pub code_returned: bool,
    /// The clock in this callback ([`crate::clock::now_ns`]): the block is counted to this moment
    /// ([`SampleTicket::blocked_at`]); 0 where unknown, and then the request's own count is used.
    pub now_ns: u64,
    /// How long the loop thread has waited for a CPU in this turn so far (Linux's run-queue wait,
    /// read on the loop thread itself, so the wait before this callback is counted; 0 where it
    /// cannot be read). No deadline counts it, neither the timeout nor a promise reaction's
    /// grace: on a loaded machine the wait stretched a 150 ms reaction's turn past a 200 ms grace
    /// (CI, Node 20), and a 200 ms spin's turn past a 300 ms timeout (Node 20, ava's parallel
    /// files on 2 cores). The machine, not the code, held the loop for that time.
    pub turn_cpu_wait_ns: u64,
}

/// What a guard frame that ends with a request outstanding knows of its thread, read on that
/// thread (the loop's): the guard's late path applies the interrupt callback's rule with it.
#[derive(Clone, Copy, Debug)]
pub struct GuardExit {
    /// The loop iteration now: a request of an earlier turn is not this guard's.
    pub iteration: u64,
    /// The clock now ([`crate::clock::now_ns`]): the block is counted to this moment.
    pub now_ns: u64,
    /// As [`Context::turn_cpu_wait_ns`]: how long the thread has waited for a CPU in this turn.
    pub turn_cpu_wait_ns: u64,
}

impl Interrupts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock_or_recover(&self.state, "interrupt::state")
    }

    fn update_outstanding(&self, st: &State) {
        self.outstanding.store(
            st.requested.is_some() || st.fired.is_some(),
            Ordering::Release,
        );
    }

    /// Whether an interrupt was resolved in this iteration less than `timeout_ns` ago: the code
    /// running now has not blocked for a full timeout yet.
    ///
    /// Also while the loop thread has used less than half a timeout of CPU since, up to three
    /// timeouts after it (`loop_cpu_ns`: its CPU time now, where it can be read): Node's own code
    /// that runs after an interrupt in the same turn (delivering the error, timers' bookkeeping)
    /// is short, but on a loaded machine its thread may wait for a CPU for longer than a timeout,
    /// and that is not blocking. Code that really blocks again uses the CPU.
    pub fn recently_resolved(
        &self,
        iteration: u64,
        now_ns: u64,
        timeout_ns: u64,
        loop_cpu_ns: Option<u64>,
    ) -> bool {
        self.lock().last_resolved.is_some_and(|r| {
            let wall = now_ns.saturating_sub(r.at_ns);
            r.iteration == iteration
                && (wall < timeout_ns
                    || (wall < timeout_ns.saturating_mul(3)
                        && loop_cpu_ns
                            .is_some_and(|cpu| cpu.saturating_sub(r.cpu_ns) < timeout_ns / 2)))
        })
    }

    /// JS thread, at each look at the stack (an interrupt callback, a synchronous API's return):
    /// records `look` as the turn's latest, and says whether the code the previous look of the
    /// same turn saw has returned since (see [`looks::returned`]).
    pub fn look(&self, look: looks::Look) -> bool {
        if look.frames.is_empty() {
            // No JavaScript on the stack: nothing to compare later looks with.
            return false;
        }
        let mut st = self.lock();
        let returned = st.last_look.as_ref().is_some_and(|earlier| {
            earlier.iteration == look.iteration
                && crate::fingerprint::with_own(|own| looks::returned(earlier, &look, own))
        });
        st.last_look = Some(look);
        returned
    }

    fn resolved(st: &mut State, p: &Pending) {
        st.last_look = None;
        st.declined_as_returned = None;
        // Resolvers run on the loop thread: its own CPU clock is the one to read.
        st.last_resolved = Some(Resolved {
            iteration: p.iteration,
            at_ns: crate::clock::now_ns(),
            cpu_ns: crate::clock::thread_cpu_ns(),
        });
        // Requests that arrived while the termination was in flight were about the same code.
        if st
            .requested
            .as_ref()
            .is_some_and(|r| r.iteration == p.iteration)
        {
            st.requested = None;
        }
    }

    /// Monitor thread: an interrupt is wanted for this block (the first request of a block wins).
    pub fn request(&self, ticket: SampleTicket, iteration: u64) {
        let mut st = self.lock();
        let stale = st
            .requested
            .as_ref()
            .is_some_and(|p| p.iteration != iteration);
        // A watch that may interrupt unguarded code takes over a same-block request of one that
        // may not (`'guarded'` and `'everywhere'` detectors on one loop): otherwise the guarded
        // watch's request would be declined outside a guard and the other's dropped meanwhile.
        let upgrade =
            ticket.unguarded && st.requested.as_ref().is_some_and(|p| !p.ticket.unguarded);
        if st.requested.is_none() || stale || upgrade {
            st.requested = Some(Pending {
                ticket,
                iteration,
                frames: None,
                resolver: Resolver::Guard,
                microtask: false,
            });
        } else if let Some(p) = st.requested.as_mut() {
            // A retry: keep the first request, with the newest block length (and the time it
            // was counted at, with which the block is counted on: `Pending::held_ns`).
            p.ticket.blocked_ns = ticket.blocked_ns;
            p.ticket.requested_ns = ticket.requested_ns;
        }
        self.update_outstanding(&st);
    }

    /// JS thread, in the interrupt callback.
    pub fn on_interrupt(&self, ticket: SampleTicket, frames: Vec<Frame>, cx: Context) -> Decision {
        let mut st = self.lock();
        let matches = st
            .requested
            .as_ref()
            .is_some_and(|p| p.ticket.watch_id == ticket.watch_id);
        if !matches || st.fired.is_some() {
            return Decision::Nothing;
        }
        let mut p = st.requested.take().expect("checked above");
        if p.iteration != cx.iteration || !cx.block_open {
            self.update_outstanding(&st);
            return Decision::Nothing;
        }
        p.ticket.blocked_ns = p.ticket.blocked_ns.max(ticket.blocked_at(cx.now_ns));
        p.frames = Some(frames);
        // The time the thread itself held the loop: the block less the thread's wait for a CPU.
        let held_ns = p.ticket.blocked_ns.saturating_sub(cx.turn_cpu_wait_ns);
        let explicit_guard = self.explicit_depth.load(Ordering::Relaxed) > 0;
        let mut decision =
            if cx.in_builtin_loader || cx.no_javascript || cx.in_node_machinery || cx.in_own_code {
                // Not now: the monitor asks again every timeout while the block lasts.
                Decision::Nothing
            } else if explicit_guard {
                // The application's guard resolves it: the code under it is what it guards.
                Decision::Terminate
            } else if p.ticket.unguarded && self.guard_depth.load(Ordering::Relaxed) > 0 {
                // A callback guard resolves it (a watch that interrupts everywhere).
                Decision::Terminate
            } else if !p.ticket.unguarded
                || !self.unguarded.load(Ordering::Acquire)
                || cx.unguarded_immediate
                || cx.in_async_hook
            {
                Decision::Nothing
            } else if cx.running_microtasks && held_ns < p.ticket.microtask_grace_ns {
                // Within its grace, not counting time the thread waited for a CPU: asked again
                // when the grace could be over (never, for a reaction that is never interrupted).
                match p.ticket.microtask_grace_ns {
                    u64::MAX => Decision::Nothing,
                    grace => Decision::Later(grace - held_ns),
                }
            } else {
                Decision::TerminateUnguarded
            };
        let terminates = matches!(decision, Decision::Terminate | Decision::TerminateUnguarded);
        if terminates && held_ns < p.ticket.timeout_ns {
            // The machine held the loop for part of the timeout, not the code (a thread waiting
            // for a CPU): asked again when the code's own time could be up.
            decision = Decision::Later(p.ticket.timeout_ns - held_ns);
        } else if terminates
            && !explicit_guard
            && cx.code_returned
            && st.declined_as_returned != Some(p.iteration)
        {
            // Not this code: the interrupt waits for the monitor's next request, one timeout
            // later; once per block.
            st.declined_as_returned = Some(p.iteration);
            decision = Decision::Nothing;
        }
        match decision {
            Decision::Terminate => st.fired = Some(p),
            Decision::TerminateUnguarded => {
                p.resolver = Resolver::Unguarded;
                p.microtask = cx.running_microtasks;
                st.fired = Some(p);
            }
            Decision::Nothing | Decision::Later(_) => {}
        }
        self.update_outstanding(&st);
        decision
    }

    /// Whether `run()`/`wrap()` is on the loop thread's stack now (any thread: a hint, the
    /// interrupt callback decides on the loop thread).
    pub fn in_explicit_guard(&self) -> bool {
        self.explicit_depth.load(Ordering::Relaxed) > 0
    }

    /// JS thread: a guard frame starts.
    #[inline]
    pub fn enter_guard(&self, kind: GuardKind) {
        self.guard_depth.fetch_add(1, Ordering::Relaxed);
        if kind == GuardKind::Explicit {
            self.explicit_depth.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// JS thread: a guard frame ends. Returns the interrupt it must resolve. `take_late`: also take
    /// a request whose interrupt has not run yet (the guarded code blocked inside a native call);
    /// never while a termination that we did not fire is unwinding through the guard. `now`: the
    /// thread's facts, read only when a request is outstanding.
    ///
    /// A late request is taken only once the block, counted to now, less the time the thread
    /// waited for a CPU, has reached the timeout: the rule the interrupt callback applies
    /// ([`Interrupts::on_interrupt`]). A guarded call that returns on a starved thread before V8
    /// ran the interrupt is not what held the loop; the request stays for its interrupt, which
    /// decides where it lands.
    #[inline]
    pub fn exit_guard(
        &self,
        kind: GuardKind,
        take_late: bool,
        now: impl FnOnce() -> GuardExit,
    ) -> Option<Taken> {
        self.guard_depth.fetch_sub(1, Ordering::Relaxed);
        if kind == GuardKind::Explicit {
            self.explicit_depth.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.outstanding.load(Ordering::Acquire) {
            return None;
        }
        // Read before the lock: it may make a system call (the thread's run-queue wait).
        let facts = take_late.then(now);
        let mut st = self.lock();
        let out = if let Some(p) = Self::take_fired(&mut st, Resolver::Guard) {
            Some(Taken::Fired(p))
        } else if facts.is_some_and(|f| {
            st.requested
                .as_ref()
                .is_some_and(|p| p.iteration == f.iteration && p.held_ns(&f) >= p.ticket.timeout_ns)
        }) {
            st.requested.take().map(Taken::Late)
        } else {
            None
        };
        if let Some(Taken::Fired(p) | Taken::Late(p)) = &out {
            Self::resolved(&mut st, p);
        }
        self.update_outstanding(&st);
        out
    }

    /// The fired termination, if the given resolver is the one to resolve it.
    fn take_fired(st: &mut State, resolver: Resolver) -> Option<Pending> {
        if st.fired.as_ref().is_some_and(|p| p.resolver == resolver) {
            st.fired.take()
        } else {
            None
        }
    }

    /// JS thread, in a V8 after-termination callback: the unguarded termination, if one is ours.
    pub fn take_unguarded(&self) -> Option<Pending> {
        let mut st = self.lock();
        let out = Self::take_fired(&mut st, Resolver::Unguarded);
        if let Some(p) = &out {
            Self::resolved(&mut st, p);
        }
        self.update_outstanding(&st);
        out
    }

    pub fn set_unguarded(&self, on: bool) {
        self.unguarded.store(on, Ordering::Release);
    }

    /// Forgets the request of a watch that stopped (a termination in flight stays: it is already
    /// stopping code).
    pub fn forget(&self, watch_id: u64) {
        let mut st = self.lock();
        if st
            .requested
            .as_ref()
            .is_some_and(|p| p.ticket.watch_id == watch_id)
        {
            st.requested = None;
        }
        self.update_outstanding(&st);
    }

    /// Forgets every request (the environment is going away).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.requested = None;
        st.fired = None;
        st.last_look = None;
        st.declined_as_returned = None;
        self.update_outstanding(&st);
    }
}
