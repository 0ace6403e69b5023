//! The monitor's decision logic over a set of watches, apart from its thread and its signals: one
//! cycle looks at every loop once, at the time that loop's sample carries, and returns when to look
//! again and the effects (text to write, block records to deliver), which the caller performs.
//!
//! The process-wide monitor keeps one `Watches<Monotonic>` behind its registry lock and performs
//! the effects on its thread; the virtual-time tests (`tests/monitor_virtual.rs`) own one with a
//! clock they move, drive cycles at chosen times and look at the effects, without sleeping.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use super::{lock, Effects, LoopProbe, SampleTicket, Watch, WatchConfig, WatchSink, WatchState};
use crate::budget::LogBudget;
use crate::clock::{Clock, Monotonic};
use crate::context::ContextCapture;
use crate::heartbeat::LoopSample;
use crate::report::{Frame, Sample};
use crate::tracker::{Tracker, TrackerConfig};

/// Watches in id order (ids only grow, and removal keeps the order), and the clock read where no
/// loop sample gives the time: stopping or flushing a watch, a stack sample arriving.
pub struct Watches<C: Clock = Monotonic> {
    clock: C,
    pub(super) list: Vec<Arc<Watch>>,
    next_id: u64,
}

impl<C: Clock> Watches<C> {
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            list: Vec::new(),
            next_id: 1,
        }
    }

    /// Number of watches.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Adds a watch whose loop looked like `first` when it started; returns its id.
    pub fn add(
        &mut self,
        cfg: WatchConfig,
        probe: Arc<dyn LoopProbe>,
        sink: Arc<dyn WatchSink>,
        first: LoopSample,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let tracker = Tracker::new(TrackerConfig::new(cfg.timeout_ns, cfg.aggressive), first);
        let pid = AtomicU32::new(cfg.origin.pid);
        self.list.push(Arc::new(Watch {
            id,
            pid,
            cfg,
            probe,
            sink,
            state: Mutex::new(WatchState {
                tracker,
                next_serial: 0,
                current: None,
                next_interrupt_ns: 0,
                budget: LogBudget::default(),
            }),
        }));
        id
    }

    /// One look at every loop (one sample per loop, shared by its watches). Returns when to look
    /// again (`u64::MAX`: no deadline; None: nothing to watch).
    pub fn cycle(&self, fx: &mut Effects) -> Option<u64> {
        if self.list.is_empty() {
            return None;
        }
        // The loops looked at in this cycle (usually one or a few: a linear search is fine).
        let mut looked: Vec<(*const (), LoopSample)> = Vec::new();
        self.list
            .iter()
            .map(|w| {
                let sample = w.sample(&mut looked);
                w.cycle(sample, fx)
            })
            .min()
    }

    /// Removes a watch. Returns the record of a block that was in progress (warned about, not yet
    /// over), after adding its pending warnings' text to `fx`; the record is not delivered.
    pub fn remove(&mut self, id: u64, fx: &mut Effects) -> Option<String> {
        let pos = self.list.iter().position(|w| w.id == id)?;
        let w = self.list.remove(pos);
        self.end_in_progress(&w, false, fx)
    }

    /// Ends the block in progress now, if one was warned about, and returns its record (its text
    /// goes to `fx`; the record is not delivered). The watch keeps running.
    pub fn flush(&self, id: u64, fx: &mut Effects) -> Option<String> {
        let w = self.find(id)?;
        self.end_in_progress(&w, true, fx)
    }

    /// Ends `w`'s block in progress now, if one was warned about (`ended`: the loop is done, rather
    /// than the detector stopped), and returns its record; its text goes to `fx`.
    fn end_in_progress(&self, w: &Watch, ended: bool, fx: &mut Effects) -> Option<String> {
        let now = self.clock.now_ns();
        let mut st = lock(&w.state);
        let e = st.tracker.finish(now)?;
        let mut inner = Effects::default();
        w.finish_block(&mut st, e, ended, now, &mut inner);
        fx.text.push_str(&inner.text);
        inner.deliveries.into_iter().next().map(|(_, json)| json)
    }

    /// The watch with this id: a binary search, so that a thousand watches on one loop do not
    /// make every lookup a scan.
    pub(super) fn find(&self, id: u64) -> Option<Arc<Watch>> {
        self.list
            .binary_search_by_key(&id, |w| w.id)
            .ok()
            .map(|i| self.list[i].clone())
    }

    /// Sets a watch's report budget (see [`super::set_log_repeats_after`]).
    pub fn set_log_repeats_after(&self, id: u64, interval_ns: u64) -> bool {
        self.find(id).is_some_and(|w| {
            lock(&w.state).budget.set_interval(interval_ns);
            true
        })
    }

    /// Whether the block a ticket belongs to is still in progress.
    pub fn block_open(&self, ticket: &SampleTicket) -> bool {
        self.find(ticket.watch_id)
            .is_some_and(|w| w.block_open(ticket))
    }

    /// Asks for the next interrupt of a ticket's block at `at_ns`, if that is sooner than planned
    /// (see [`super::interrupt_again_after`]). Returns whether the plan changed (a cycle is then
    /// due).
    pub fn interrupt_again_at(&self, ticket: &SampleTicket, at_ns: u64) -> bool {
        self.find(ticket.watch_id)
            .is_some_and(|w| w.interrupt_sooner(ticket, at_ns))
    }

    /// Hands a stack sample, captured now, to every watch that asked for it (see
    /// [`super::deliver_samples`]). Returns whether one was attached (a cycle is then due).
    pub fn deliver_samples(
        &self,
        tickets: Vec<(SampleTicket, Option<ContextCapture>)>,
        frames: &[Frame],
        cost_ns: u64,
        sync_api: Option<&str>,
    ) -> bool {
        let watches = tickets.iter().map(|(t, _)| self.find(t.watch_id)).collect();
        attach_samples(
            tickets,
            watches,
            frames,
            cost_ns,
            sync_api,
            self.clock.now_ns(),
        )
    }
}

/// Attaches one stack sample, captured at `now`, to each of `watches` (found for `tickets`, in
/// the same order; None: stopped since). Returns whether one was attached.
pub(super) fn attach_samples(
    tickets: Vec<(SampleTicket, Option<ContextCapture>)>,
    watches: Vec<Option<Arc<Watch>>>,
    frames: &[Frame],
    cost_ns: u64,
    sync_api: Option<&str>,
    now: u64,
) -> bool {
    let mut attached = false;
    for ((ticket, context), w) in tickets.into_iter().zip(watches) {
        let Some(w) = w else { continue };
        let sample = Sample {
            frames: frames.to_vec(),
            captured_ns: now,
            delay_ns: now.saturating_sub(ticket.requested_ns),
            cost_ns,
            sync_api: sync_api.map(str::to_string),
        };
        attached |= w.attach_sample(ticket, sample, context);
    }
    attached
}
