//! Stack-sample requests of one environment waiting for its V8 interrupt: however many watches
//! ask while one interrupt is queued, V8 is asked once, and the interrupt callback takes one
//! sample for all of them (a thousand detectors on one loop cost the blocked code one stack
//! capture per deadline, not a thousand).
//!
//! While a request that captures a stack waits, the environment's sync-call cells say so (see
//! `sync_marker`): a synchronous API returning meanwhile takes the sample itself.
//!
//! While requests wait, the environment counts in `counts::SAMPLES_WAITING`. An environment torn
//! down with its interrupt still queued in V8 (a Worker terminated inside a native call) drops its
//! requests at teardown; the interrupt itself carries no allocation (see `sink.rs`).

use std::sync::{Arc, Mutex};

use loop_helpers_core::monitor::SampleTicket;
use loop_helpers_core::panics::lock_or_recover;

use crate::async_context::AsyncContextSpec;
use crate::counts;
use crate::sync_marker::SyncCells;

/// One watch's request.
pub struct Queued {
    pub ticket: SampleTicket,
    /// The watch's `asyncContext` stores, when this request captures a stack and it has some.
    pub context: Option<Arc<AsyncContextSpec>>,
}

pub struct SampleQueue {
    queue: Mutex<Vec<Queued>>,
    /// Flagged while a request that captures waits.
    cells: Arc<SyncCells>,
}

impl SampleQueue {
    pub fn new(cells: Arc<SyncCells>) -> Self {
        SampleQueue {
            queue: Mutex::new(Vec::new()),
            cells,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        lock_or_recover(&self.queue, "sample_queue")
    }

    /// Adds a request. Returns true when it is the first one waiting: the caller must then ask V8
    /// for an interrupt (and [`SampleQueue::cancel`] it if V8 refuses).
    pub fn push(&self, request: Queued) -> bool {
        let mut q = self.lock();
        if request.ticket.capture {
            self.cells.set_sample_waiting(true);
        }
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
        let mut q = self.lock();
        self.cells.set_sample_waiting(false);
        let taken = std::mem::take(&mut *q);
        if !taken.is_empty() {
            counts::SAMPLES_WAITING.down();
        }
        taken
    }

    /// JS thread, outside the interrupt (a synchronous API returned): the requests that capture a
    /// stack. What they also ask for (an interrupt) stays queued, without the capture, for the
    /// V8 interrupt already requested for them.
    pub fn take_captures(&self) -> Vec<Queued> {
        let mut q = self.lock();
        self.cells.set_sample_waiting(false);
        let was_waiting = !q.is_empty();
        let mut captures = Vec::new();
        q.retain_mut(|r| {
            if !r.ticket.capture {
                return true;
            }
            captures.push(Queued {
                ticket: r.ticket,
                context: r.context.take(),
            });
            r.ticket.capture = false;
            r.ticket.interrupt
        });
        if was_waiting && q.is_empty() {
            counts::SAMPLES_WAITING.down();
        }
        captures
    }
}

impl Drop for SampleQueue {
    fn drop(&mut self) {
        self.cancel();
    }
}
