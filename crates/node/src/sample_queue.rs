//! Stack-sample requests of one environment waiting for its V8 interrupt: however many watches
//! ask while one interrupt is queued, V8 is asked once, and the interrupt callback takes one
//! sample for all of them (a thousand detectors on one loop cost the blocked code one stack
//! capture per deadline, not a thousand).

use std::sync::Mutex;

use loop_helpers_core::monitor::SampleTicket;

#[derive(Default)]
pub struct SampleQueue(Mutex<Vec<SampleTicket>>);

impl SampleQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SampleTicket>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a request. Returns true when it is the first one waiting: the caller must then ask V8
    /// for an interrupt (and [`SampleQueue::cancel`] it if V8 refuses).
    pub fn push(&self, ticket: SampleTicket) -> bool {
        let mut q = self.lock();
        q.push(ticket);
        q.len() == 1
    }

    /// The interrupt could not be requested: forget what was waiting for it.
    pub fn cancel(&self) {
        self.lock().clear();
    }

    /// JS thread, in the interrupt callback: every request waiting, in the order they came.
    pub fn take(&self) -> Vec<SampleTicket> {
        std::mem::take(&mut *self.lock())
    }
}
