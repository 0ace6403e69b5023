//! Per-environment interrupt bookkeeping: which interrupt the monitor asked for, whether the
//! interrupt callback terminated JavaScript for it, and how deep the native guard frames are.
//!
//! The order of events for one interrupt:
//! 1. the monitor (its thread) records the request, then asks V8 for an interrupt;
//! 2. the interrupt callback (the JS thread, inside the blocking code) samples the stack, takes the
//!    request and, where it can be resolved (inside a guard), calls `TerminateExecution`;
//! 3. the innermost guard frame sees its call return, cancels the termination, and throws the
//!    detector's error as an ordinary exception.
//!
//! If the blocking code was native (no interrupt check until it returned) and a guard returns while
//! the request is still pending, the guard takes the request itself (the code did block past the
//! deadline), and the late interrupt callback then finds nothing to do: a termination never lands
//! after its guard has gone. Node's `vm` timeout behaves the same way.

use std::sync::Mutex;

use loop_helpers_core::monitor::SampleTicket;
use loop_helpers_core::report::Frame;

/// An interrupt the monitor asked for.
#[derive(Clone, Debug)]
pub struct Pending {
    pub ticket: SampleTicket,
    /// The loop iteration the block belongs to (a request never outlives its block).
    pub iteration: u64,
    /// The blocking code's stack, once the interrupt callback captured it.
    pub frames: Option<Vec<Frame>>,
}

#[derive(Default)]
struct State {
    requested: Option<Pending>,
    fired: Option<Pending>,
    guard_depth: u32,
}

#[derive(Default)]
pub struct Interrupts {
    state: Mutex<State>,
}

/// What the interrupt callback should do.
pub enum Decision {
    /// Terminate the running JavaScript: a guard is on the stack to resolve it.
    Terminate,
    /// Nothing to interrupt here (no request, or no way to resolve it).
    Nothing,
}

impl Interrupts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Monitor thread: an interrupt is wanted for this block (the first request of a block wins).
    pub fn request(&self, ticket: SampleTicket, iteration: u64) {
        let mut st = self.lock();
        let stale = st
            .requested
            .as_ref()
            .is_some_and(|p| p.iteration != iteration);
        if st.requested.is_none() || stale {
            st.requested = Some(Pending {
                ticket,
                iteration,
                frames: None,
            });
        }
    }

    /// JS thread, in the interrupt callback.
    pub fn on_interrupt(&self, ticket: SampleTicket, frames: Vec<Frame>) -> Decision {
        let mut st = self.lock();
        let matches = st
            .requested
            .as_ref()
            .is_some_and(|p| p.ticket.watch_id == ticket.watch_id);
        if !matches || st.fired.is_some() {
            return Decision::Nothing;
        }
        if st.guard_depth == 0 {
            // Unguarded code: left running (only logged) until unguarded interrupts exist.
            st.requested = None;
            return Decision::Nothing;
        }
        let mut p = st.requested.take().expect("checked above");
        p.frames = Some(frames);
        st.fired = Some(p);
        Decision::Terminate
    }

    /// JS thread: a guard frame starts.
    pub fn enter_guard(&self) {
        self.lock().guard_depth += 1;
    }

    /// JS thread: a guard frame ends. Returns the interrupt it must turn into an exception.
    pub fn exit_guard(&self, current_iteration: u64) -> Option<Pending> {
        let mut st = self.lock();
        st.guard_depth = st.guard_depth.saturating_sub(1);
        if let Some(p) = st.fired.take() {
            return Some(p);
        }
        match st.requested.take() {
            Some(p) if p.iteration == current_iteration => Some(p),
            Some(_) | None => None,
        }
    }

    /// Forgets every request (the environment is going away, or its last interrupting detector
    /// stopped).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.requested = None;
        st.fired = None;
    }
}
