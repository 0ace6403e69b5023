//! Stack-sample requests of one environment waiting for its V8 interrupt: however many watches
//! ask while one interrupt is queued, V8 is asked once, and the interrupt callback takes one
//! sample for all of them (a thousand detectors on one loop cost the blocked code one stack
//! capture per deadline, not a thousand).
//!
//! While requests wait, the environment counts in `counts::SAMPLES_WAITING`. An environment torn
//! down with its interrupt still queued in V8 (a Worker terminated inside a native call) drops its
//! requests at teardown; the interrupt itself carries no allocation (see `sink.rs`).

use std::sync::{Arc, Mutex};

use loop_helpers_core::monitor::SampleTicket;
use loop_helpers_core::panics::lock_or_recover;

use crate::async_context::AsyncContextSpec;
use crate::counts;

/// One watch's request.
pub struct Queued {
    pub ticket: SampleTicket,
    /// The watch's `asyncContext` stores, when this request captures a stack and it has some.
    pub context: Option<Arc<AsyncContextSpec>>,
}

#[derive(Default)]
pub struct SampleQueue(Mutex<Vec<Queued>>);

impl SampleQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        lock_or_recover(&self.0, "sample_queue")
    }

    /// Adds a request. Returns true when it is the first one waiting: the caller must then ask V8
    /// for an interrupt (and [`SampleQueue::cancel`] it if V8 refuses).
    pub fn push(&self, request: Queued) -> bool {
        let mut q = self.lock();
        q.push(request);
        let first = q.len() == 1;
        if first {
            counts::SAMPLES_WAITING.up();
        }
        first
    }

    /// The interrupt could not be requested, or will never run (the environment is going away):
    /// forget what was waiting for it.
    pub fn cancel(&self) {
        drop(self.take());
    }

    /// JS thread, in the interrupt callback: every request waiting, in the order they came.
    pub fn take(&self) -> Vec<Queued> {
        let taken = std::mem::take(&mut *self.lock());
        if !taken.is_empty() {
            counts::SAMPLES_WAITING.down();
        }
        taken
    }
}

impl Drop for SampleQueue {
    fn drop(&mut self) {
        self.cancel();
    }
}
