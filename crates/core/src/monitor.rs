//! The process-wide monitor: one thread that watches every registered loop (the main thread's and
//! each Worker's), decides when a loop is blocked, asks for stack samples, writes warnings while the
//! block lasts, and hands each finished block to its detector.
//!
//! Like Node's own `Watchdog` (src/node_watchdog.cc) it is a plain thread, created with every
//! asynchronous signal blocked, that sleeps until a deadline; unlike it, one thread serves every
//! loop. It looks at each loop every `timeout/20` (see `tracker`), reading the state libuv keeps
//! anyway (see `heartbeat`): the loops do no work for it. It sleeps in [`alarm::Waiter::wait`]: on
//! Linux, in `sigtimedwait` for the SIGALRM of a timer aimed at this thread alone; the wake-ups
//! other threads send ([`alarm::wake`]: samples arriving, (un)registration, a fork pausing it) are
//! SIGALRMs queued for this thread alone too. Elsewhere it sleeps in `poll` on the self-pipe that
//! the process-wide SIGALRM handler and those wake-ups write to. A wait timeout a little past the
//! deadline is the backstop should the timer's signal ever be lost. No other thread ever receives
//! the timer's signal (see `alarm`). Every return from the wait is followed by a full cycle, so a
//! wake-up that merged into the timer's signal is served all the same.
//!
//! What a cycle decides is kept apart from the thread in [`Watches`] (monitor/watches.rs): it reads
//! the time from the loops' samples and a [`crate::clock::Clock`], and returns its effects instead
//! of performing them, so that the tests run it in virtual time.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::alarm;
use crate::budget::{LogBudget, Verdict};
use crate::clock::{now_ns, Monotonic};
use crate::context::ContextCapture;
use crate::fingerprint::fingerprint;
use crate::heartbeat::LoopSample;
use crate::native_state::{Marks, NativeState};
use crate::panics::lock_or_recover;
use crate::report::{
    block_json, end_json, end_text, late_stack_json, late_stack_text, warning_json, warning_text,
    BlockRecord, LogTarget, Origin, Reported, Sample, Warning, NO_STACK_LATE, NO_STACK_NATIVE,
    NO_STACK_UNSUPPORTED,
};
use crate::stderr;
use crate::thread_times::ThreadTimes;
use crate::tracker::{Ended, Fire, Tracker};

mod watches;
pub use watches::Watches;

/// How long a warning waits for its stack sample before it is written without one.
pub const SAMPLE_WAIT_NS: u64 = 5_000_000;

/// What the monitor needs to know about a loop. Implemented by the Node binding over libuv.
pub trait LoopProbe: Send + Sync {
    /// The loop's state now. Called on the monitor thread, and once on the registering thread
    /// (the loop's own, when a detector starts from JavaScript); must not wait for the loop.
    fn sample(&self) -> LoopSample;
    /// The loop thread's kernel thread id, where there is one to read its state by (Linux).
    fn thread_id(&self) -> Option<i32> {
        None
    }
    /// What the loop thread marks about itself now: the garbage collection or the Node.js
    /// synchronous API it is in. Called on the monitor thread; must not wait for the loop.
    fn marks(&self) -> Marks {
        Marks::default()
    }
    /// The loop thread's CPU time and CPU wait now (any thread), where they can be read.
    fn thread_times(&self) -> Option<ThreadTimes> {
        None
    }
    /// The same, as read at the first look at the loop's current turn (None if no look has seen
    /// this turn running yet). Called on the monitor thread.
    fn turn_times(&self) -> Option<ThreadTimes> {
        None
    }
}

/// Identifies a requested stack sample, so that a late one is never attached to the wrong block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleTicket {
    pub watch_id: u64,
    pub block_serial: u64,
    pub index: u32,
    pub requested_ns: u64,
    /// Capture the stack (stack capture is available).
    pub capture: bool,
    /// The detector interrupts blocking code (its `raiseExc` is set).
    pub interrupt: bool,
    /// ... anywhere (`interrupt: 'everywhere'`), not only inside guards (`'guarded'`).
    pub unguarded: bool,
    /// How long the loop had been blocked when this was requested.
    pub blocked_ns: u64,
    /// The detector's timeout.
    pub timeout_ns: u64,
    /// Interrupt a promise reaction only once the block is this long (`u64::MAX`: never).
    pub microtask_grace_ns: u64,
}

impl SampleTicket {
    /// How long the loop has been blocked at `now_ns` ([`crate::clock::now_ns`]): the count at the
    /// request plus the time since. A `now_ns` before the request (0: unknown) gives the count at
    /// the request.
    pub fn blocked_at(&self, now_ns: u64) -> u64 {
        self.blocked_ns
            .saturating_add(now_ns.saturating_sub(self.requested_ns))
    }
}

/// Where a detector's results go. Implemented by the Node binding.
pub trait WatchSink: Send + Sync {
    /// Asks the loop's JavaScript thread for a stack sample, to be handed to [`deliver_sample`].
    /// Returns false when that is impossible.
    fn request_sample(&self, ticket: SampleTicket) -> bool;
    /// A block is over (or the detector stopped during one): its record as JSON.
    fn block_ended(&self, record_json: String);
}

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub timeout_ns: u64,
    pub aggressive: bool,
    pub log: LogTarget,
    pub origin: Origin,
    /// Whether stack samples can be requested at all.
    pub capture_stacks: bool,
    /// Whether the blocking code is to be interrupted (the binding decides where it can be).
    pub interrupt: bool,
    /// Whether it may be interrupted outside guards too (`interrupt: 'everywhere'`); a `'guarded'`
    /// watch interrupts only code inside `run()`/`wrap()` and the timer guards, even while
    /// another watch on the same loop interrupts everywhere.
    pub interrupt_unguarded: bool,
    /// Interrupting a promise reaction drops the other microtasks of its checkpoint: only do it
    /// once the block lasts this long (`u64::MAX`: never).
    pub microtask_grace_ns: u64,
    /// Reports carry the blocked code's AsyncLocalStorage store (the sink reads it with each
    /// sample and hands it to [`deliver_samples`]).
    pub async_context: bool,
}

struct CurrentBlock {
    serial: u64,
    warnings: Vec<Warning>,
    /// Per warning: until when to wait for its sample before writing it.
    sample_deadlines: Vec<u64>,
    /// Warnings already written (in order).
    written: usize,
    /// The report budget's verdict, taken when the first warning was written.
    verdict: Option<Verdict>,
    /// Warnings written without a stack whose sample arrived later, while the block lasted: their
    /// stack is written as a follow-up line.
    late_stacks: Vec<usize>,
    /// The loop thread's times at the first look at the blocked turn (see `LoopProbe::turn_times`):
    /// what the block's CPU time and CPU wait are counted from, with the process id they were
    /// read in. A block that goes on across `fork()` ends on the child's thread, whose clocks
    /// start again from zero: its times are then not known (null), never the difference of two
    /// threads' readings.
    times_at_start: Option<(u32, ThreadTimes)>,
}

/// The fingerprint of the first of `warnings` whose sample has frames.
fn block_fingerprint(warnings: &[Warning]) -> Option<String> {
    warnings
        .iter()
        .filter_map(|w| w.sample.as_ref())
        .find(|s| !s.frames.is_empty())
        .and_then(|s| fingerprint(&s.frames))
}

struct WatchState {
    tracker: Tracker,
    next_serial: u64,
    current: Option<CurrentBlock>,
    /// Interrupting watches ask again every timeout while a block lasts (the interrupt may have
    /// been declined: no guard yet, a promise reaction within its grace, a native call).
    next_interrupt_ns: u64,
    /// At most one logged block per fingerprint per interval (the detector's `logRepeatsAfterMs`).
    budget: LogBudget,
}

pub struct Watch {
    id: u64,
    cfg: WatchConfig,
    probe: Arc<dyn LoopProbe>,
    sink: Arc<dyn WatchSink>,
    state: Mutex<WatchState>,
    /// The process id reports carry: `cfg.origin.pid`, changed in the child of a fork().
    pid: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our locks is caught at the thread or FFI boundary; the data is
    // still consistent enough to keep serving other loops.
    lock_or_recover(m, "monitor")
}

/// Held while a monitor cycle runs and performs its effects (stderr writes, deliveries), and while
/// a watch is unregistered or flushed: once [`unregister`] has returned, nothing more of that watch
/// is written or delivered, and what a cycle delivered before is already queued in its sink. Taken
/// before the registry lock, never while holding it. The stack-sample path (`deliver_samples`, on
/// a blocked JavaScript thread) does not take it, so the blocked code never waits for stderr.
static OUTPUT: Mutex<()> = Mutex::new(());

/// What a monitor cycle produced, performed after the registry lock is released (the process-wide
/// monitor), or looked at by a test ([`Effects::text`], [`Effects::deliver`]).
#[derive(Default)]
pub struct Effects {
    text: String,
    deliveries: Vec<(Arc<dyn WatchSink>, String)>,
    /// Where each loop's thread was, read once per loop in this cycle (see [`Effects::whereabouts`]).
    whereabouts: Vec<(*const (), Marks, Option<crate::thread_state::ThreadState>)>,
    /// Each loop thread's times, read once per loop in this cycle (a block's end is seen by every
    /// watch of its loop in the same cycle).
    times: Vec<(*const (), Option<ThreadTimes>)>,
}

impl Effects {
    /// Where the loop thread of `probe` is now: its own marks and its state in `/proc`. Read once
    /// per loop per cycle and shared by the watches of that loop, as the loop's sample is: with
    /// 2,000 detectors on one loop whose samples all missed their wait (a thread kept off the CPU),
    /// reading it per watch made a cycle thousands of `/proc` reads long, and the blocked thread,
    /// whose stack samples wait for the cycle's registry lock, could not end its block while the
    /// next cycles did the same again (a livelock, seen beside a busy-loop process).
    fn whereabouts(
        &mut self,
        probe: &Arc<dyn LoopProbe>,
    ) -> (Marks, Option<crate::thread_state::ThreadState>) {
        let key = Arc::as_ptr(probe) as *const ();
        if let Some((_, marks, state)) = self.whereabouts.iter().find(|(k, ..)| *k == key) {
            return (marks.clone(), state.clone());
        }
        let marks = probe.marks();
        let state = probe.thread_id().and_then(crate::thread_state::read);
        self.whereabouts.push((key, marks.clone(), state.clone()));
        (marks, state)
    }

    /// The loop thread's times now (see [`LoopProbe::thread_times`]), read once per loop per cycle.
    fn thread_times(&mut self, probe: &Arc<dyn LoopProbe>) -> Option<ThreadTimes> {
        let key = Arc::as_ptr(probe) as *const ();
        if let Some((_, t)) = self.times.iter().find(|(k, _)| *k == key) {
            return *t;
        }
        let t = probe.thread_times();
        self.times.push((key, t));
        t
    }

    /// The text to write to stderr, in order.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The block records to hand to the sinks, in order.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        self.deliveries.iter().map(|(_, json)| json.as_str())
    }

    /// Hands the block records to their sinks and returns the text, without writing it.
    pub fn deliver(self) -> String {
        for (sink, json) in self.deliveries {
            sink.block_ended(json);
        }
        self.text
    }

    /// Writes the text to stderr, then hands the block records to their sinks.
    fn perform(self) {
        if !self.text.is_empty() {
            stderr::write_all(&self.text);
        }
        for (sink, json) in self.deliveries {
            sink.block_ended(json);
        }
    }
}

impl Watch {
    /// Who reports: the configured origin with this process's id.
    fn origin(&self) -> Origin {
        let mut o = self.cfg.origin.clone();
        o.pid = self.pid.load(Ordering::Relaxed);
        o
    }

    /// Takes the loop's sample of this cycle: one look per loop per cycle, shared by all the
    /// watches of that loop (a thousand detectors on one loop cost one look, not a thousand).
    fn sample(&self, looked: &mut Vec<(*const (), LoopSample)>) -> LoopSample {
        let key = Arc::as_ptr(&self.probe) as *const ();
        if let Some((_, s)) = looked.iter().find(|(k, _)| *k == key) {
            return *s;
        }
        let s = self.probe.sample();
        looked.push((key, s));
        s
    }

    /// Looks at the loop once; returns when it wants to be looked at again.
    fn cycle(&self, sample: LoopSample, fx: &mut Effects) -> u64 {
        let now = sample.now_ns;
        let mut st = lock(&self.state);
        let step = st.tracker.observe(sample);
        match (step.fire, step.ended) {
            // A block the monitor slept through comes as its late warning and its end in one
            // step: the warning opens the block's record, the end closes and delivers it. (Ended
            // first, the end found no record, and the warning opened one that nothing closed: the
            // block was never delivered, and the next block's record took in its warning.)
            (Some(f), Some(e)) if f.late => {
                self.fire(&mut st, f, now);
                self.finish_block(&mut st, e, true, now, fx);
            }
            (fire, ended) => {
                // A block ended, and maybe a new one is already due (the monitor woke late).
                if let Some(e) = ended {
                    self.finish_block(&mut st, e, true, now, fx);
                }
                if let Some(f) = fire {
                    self.fire(&mut st, f, now);
                    st.next_interrupt_ns = now.saturating_add(self.cfg.timeout_ns);
                }
            }
        }
        let mut next = step.next_wake_ns;
        if self.cfg.interrupt {
            if let (Some((start, _)), Some(cur)) = (st.tracker.current_block(), st.current.as_ref())
            {
                if step.fire.is_none() && now >= st.next_interrupt_ns {
                    self.sink.request_sample(SampleTicket {
                        watch_id: self.id,
                        block_serial: cur.serial,
                        index: u32::MAX,
                        requested_ns: now,
                        capture: false,
                        interrupt: true,
                        unguarded: self.cfg.interrupt_unguarded,
                        blocked_ns: now.saturating_sub(start),
                        timeout_ns: self.cfg.timeout_ns,
                        microtask_grace_ns: self.cfg.microtask_grace_ns,
                    });
                    st.next_interrupt_ns = now.saturating_add(self.cfg.timeout_ns);
                }
                next = next.min(st.next_interrupt_ns);
            }
        }
        if let Some(d) = self.write_ready(&mut st, now, false, fx) {
            next = next.min(d);
        }
        next
    }

    fn fire(&self, st: &mut WatchState, f: Fire, now: u64) {
        if st.current.is_none() {
            st.next_serial += 1;
            st.current = Some(CurrentBlock {
                serial: st.next_serial,
                warnings: Vec::new(),
                sample_deadlines: Vec::new(),
                written: 0,
                verdict: None,
                late_stacks: Vec::new(),
                // A late report is of a turn that is over: the current turn is another one.
                times_at_start: if f.late {
                    None
                } else {
                    let pid = self.pid.load(Ordering::Relaxed);
                    self.probe.turn_times().map(|t| (pid, t))
                },
            });
        }
        let cur = st.current.as_mut().expect("current block was just set");
        let mut w = Warning {
            index: f.index,
            start_ns: f.start_ns,
            elapsed_ns: f.elapsed_ns,
            detected_ns: now,
            sample: None,
            missing_reason: None,
            context: self.cfg.async_context.then_some(ContextCapture::Pending),
            thread_state: None,
            native: None,
        };
        let mut deadline = now;
        if f.late {
            // The block is over: a stack now would show other code, and there is nothing to stop.
            w.missing_reason = Some(NO_STACK_LATE);
            cur.warnings.push(w);
            cur.sample_deadlines.push(now);
            return;
        }
        let requested = (self.cfg.capture_stacks || self.cfg.interrupt)
            && self.sink.request_sample(SampleTicket {
                watch_id: self.id,
                block_serial: cur.serial,
                index: f.index,
                requested_ns: now,
                capture: self.cfg.capture_stacks,
                interrupt: self.cfg.interrupt,
                unguarded: self.cfg.interrupt && self.cfg.interrupt_unguarded,
                blocked_ns: f.elapsed_ns,
                timeout_ns: self.cfg.timeout_ns,
                microtask_grace_ns: self.cfg.microtask_grace_ns,
            });
        if requested && self.cfg.capture_stacks {
            deadline = now + SAMPLE_WAIT_NS;
        } else {
            w.missing_reason = Some(NO_STACK_UNSUPPORTED);
        }
        cur.warnings.push(w);
        cur.sample_deadlines.push(deadline);
    }

    /// Writes the warnings whose sample arrived or whose wait is over, in order. Returns the next
    /// sample deadline to wake for, if one is still pending. The first one written takes the report
    /// budget's verdict for the whole block (its fingerprint is known by then, if it has a stack).
    fn write_ready(
        &self,
        st: &mut WatchState,
        now: u64,
        flush: bool,
        fx: &mut Effects,
    ) -> Option<u64> {
        let WatchState {
            current, budget, ..
        } = st;
        let cur = current.as_mut()?;
        for i in std::mem::take(&mut cur.late_stacks) {
            let verdict = cur.verdict.unwrap_or_default();
            if !verdict.log {
                continue;
            }
            let w = &cur.warnings[i];
            match self.cfg.log {
                LogTarget::StderrText => fx.text.push_str(&late_stack_text(&self.origin(), w)),
                LogTarget::StderrJson => {
                    let r = Reported {
                        fingerprint: block_fingerprint(&cur.warnings),
                        verdict,
                    };
                    fx.text.push_str(&late_stack_json(&self.origin(), w, &r));
                    fx.text.push('\n');
                }
                LogTarget::Silent | LogTarget::Deferred => {}
            }
        }
        while cur.written < cur.warnings.len() {
            let i = cur.written;
            let w = &cur.warnings[i];
            if w.sample.is_none() && !flush && now < cur.sample_deadlines[i] {
                return Some(cur.sample_deadlines[i]);
            }
            if w.sample.is_none() && w.missing_reason.is_none() {
                // No interrupt check in time: say where the thread is instead (read now, while
                // it still is there): its own marks (a garbage collection, a Node.js sync API),
                // and its system call.
                let (marks, state) = fx.whereabouts(&self.probe);
                let w = &mut cur.warnings[i];
                w.missing_reason = Some(NO_STACK_NATIVE);
                w.native = NativeState::from_parts(marks, state.as_ref(), now);
                w.thread_state = state.map(|s| s.words);
            }
            let fingerprint = block_fingerprint(&cur.warnings[..=i]);
            let verdict = *cur
                .verdict
                .get_or_insert_with(|| budget.decide(fingerprint.as_deref(), now));
            let w = &cur.warnings[i];
            if verdict.log {
                let r = Reported {
                    fingerprint,
                    verdict,
                };
                match self.cfg.log {
                    LogTarget::StderrText => fx.text.push_str(&warning_text(&self.origin(), w)),
                    LogTarget::StderrJson => {
                        fx.text.push_str(&warning_json(&self.origin(), w, &r));
                        fx.text.push('\n');
                    }
                    LogTarget::Silent | LogTarget::Deferred => {}
                }
            }
            cur.written += 1;
        }
        None
    }

    /// Hands a finished block to JavaScript, after writing its pending warnings and, when it is
    /// logged, its closing line (text: the total; JSON: a `BlockingEnded` record). `now`: the
    /// time of the cycle (or of the stop or flush) that ends it.
    fn finish_block(&self, st: &mut WatchState, e: Ended, ended: bool, now: u64, fx: &mut Effects) {
        self.write_ready(st, now, true, fx);
        let Some(cur) = st.current.take() else {
            return;
        };
        let verdict = cur.verdict.unwrap_or_default();
        let fingerprint = block_fingerprint(&cur.warnings);
        if let (Some(fp), true) = (&fingerprint, verdict.log) {
            // Its first warning had no stack yet: the closing record names the culprit.
            st.budget.logged_late(fp, now);
        }
        let pid = self.pid.load(Ordering::Relaxed);
        let times = cur
            .times_at_start
            .filter(|&(read_in, _)| read_in == pid)
            .and_then(|(_, start)| Some(fx.thread_times(&self.probe)?.since(start)));
        let record = BlockRecord {
            start_ns: e.start_ns,
            end_ns: e.end_ns,
            ended,
            times,
            reported: Reported {
                fingerprint,
                verdict,
            },
            warnings: cur.warnings,
        };
        let o = self.origin();
        if verdict.log {
            match self.cfg.log {
                LogTarget::StderrText => fx.text.push_str(&end_text(&o, &record)),
                LogTarget::StderrJson => {
                    fx.text.push_str(&end_json(&o, &record));
                    fx.text.push('\n');
                }
                LogTarget::Silent | LogTarget::Deferred => {}
            }
        }
        let texts = self.cfg.log == LogTarget::Deferred && verdict.log;
        fx.deliveries
            .push((self.sink.clone(), block_json(&o, &record, texts)));
    }

    /// Whether the block a ticket belongs to is still in progress.
    fn block_open(&self, ticket: &SampleTicket) -> bool {
        lock(&self.state)
            .current
            .as_ref()
            .is_some_and(|c| c.serial == ticket.block_serial)
    }

    /// Asks for the block's next interrupt at `at_ns` if that is sooner than planned (see
    /// [`interrupt_again_after`]). Returns whether the plan changed.
    fn interrupt_sooner(&self, ticket: &SampleTicket, at_ns: u64) -> bool {
        let mut st = lock(&self.state);
        let open = st
            .current
            .as_ref()
            .is_some_and(|c| c.serial == ticket.block_serial);
        if !open || at_ns >= st.next_interrupt_ns {
            return false;
        }
        st.next_interrupt_ns = at_ns;
        true
    }

    fn attach_sample(
        &self,
        ticket: SampleTicket,
        sample: Sample,
        context: Option<ContextCapture>,
    ) -> bool {
        let mut st = lock(&self.state);
        let Some(cur) = st.current.as_mut() else {
            return false;
        };
        if cur.serial != ticket.block_serial {
            return false;
        }
        let written = (ticket.index as usize) < cur.written;
        match cur.warnings.get_mut(ticket.index as usize) {
            Some(w) if w.sample.is_none() => {
                if written {
                    // Its warning went out without a stack; the block still lasts (this is its
                    // current block), so the stack follows in a line of its own, and the event
                    // gets it.
                    if !sample.frames.is_empty() {
                        w.missing_reason = None;
                        cur.late_stacks.push(ticket.index as usize);
                    } else {
                        return false;
                    }
                }
                if w.native.is_none() {
                    w.native = sample.sync_api.clone().map(NativeState::sampled_in);
                }
                w.sample = Some(sample);
                // None: the store was read at an earlier sample of this block.
                if w.context.is_some() {
                    w.context = context;
                }
                true
            }
            _ => false,
        }
    }
}

struct Registry {
    watches: Watches<Monotonic>,
    exiting: bool,
}

struct Monitor {
    registry: Mutex<Registry>,
}

static MONITOR: OnceLock<Monitor> = OnceLock::new();
/// The monitor thread runs (set once it is spawned; cleared in a forked child, which has no threads).
static THREAD_RUNNING: Mutex<bool> = Mutex::new(false);
static WAKES: AtomicU64 = AtomicU64::new(0);
static BACKSTOP_WAKES: AtomicU64 = AtomicU64::new(0);

fn monitor() -> &'static Monitor {
    MONITOR.get_or_init(|| Monitor {
        registry: Mutex::new(Registry {
            watches: Watches::new(Monotonic),
            exiting: false,
        }),
    })
}

fn ensure_thread() -> io::Result<()> {
    let mut running = lock(&THREAD_RUNNING);
    if *running {
        return Ok(());
    }
    // The thread makes its waiter first and says whether it could: a monitor thread that ended
    // there would leave every detector started, and none of them watching.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    alarm::spawn_monitor_thread("loop-helpers-monitor", move || {
        // Before the first cycle: from here on a wake-up is kept until the wait takes it.
        match alarm::Waiter::new() {
            Ok(waiter) => {
                let _ = ready_tx.send(Ok(()));
                run(waiter);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("the monitor thread cannot wait for its deadlines: {e}"),
            ))
        }
        // The thread ended before it said anything (it cannot panic there, but never hang).
        Err(_) => return Err(io::Error::other("the monitor thread ended as it started")),
    }
    *running = true;
    Ok(())
}

fn run(mut waiter: alarm::Waiter) {
    loop {
        fork_pause::pause_point();
        let next = match catch_unwind(AssertUnwindSafe(cycle_all)) {
            Ok(Some(next)) => next,
            Ok(None) => u64::MAX,
            // A bug in one cycle must not end monitoring for every loop: it is counted (visible in
            // `nativeInfo()` and `capabilities().panics`), and the cycle is tried again shortly.
            Err(payload) => {
                crate::panics::record("monitor cycle", payload.as_ref());
                now_ns() + 10_000_000
            }
        };
        let deadline = (next != u64::MAX).then_some(next);
        if waiter.wait(deadline) == alarm::Woke::Backstop {
            BACKSTOP_WAKES.fetch_add(1, Ordering::Relaxed);
        }
        WAKES.fetch_add(1, Ordering::Relaxed);
    }
}

/// One pass over every watch. None when there is nothing to watch.
fn cycle_all() -> Option<u64> {
    let _output = lock(&OUTPUT);
    let mut fx = Effects::default();
    let next = {
        let reg = lock(&monitor().registry);
        if reg.exiting {
            None
        } else {
            reg.watches.cycle(&mut fx)
        }
    };
    fx.perform();
    next
}

/// Starts watching a loop. Activates the deadline signal with the first watch (see `alarm`).
pub fn register(
    cfg: WatchConfig,
    probe: Arc<dyn LoopProbe>,
    sink: Arc<dyn WatchSink>,
) -> io::Result<u64> {
    ensure_thread()?;
    // The first look, on the registering thread: the loop is busy from this moment unless it waits.
    let first = probe.sample();
    let id = {
        let mut reg = lock(&monitor().registry);
        if reg.exiting {
            return Err(io::Error::other("the process is exiting"));
        }
        alarm::activate()?;
        reg.watches.add(cfg, probe, sink, first)
    };
    alarm::wake();
    Ok(id)
}

/// Stops a watch. Returns the record of a block that was in progress (warned about, not yet over),
/// after writing its pending warnings. Deactivates the deadline signal with the last watch (where a
/// handler of ours was installed, the previous SIGALRM disposition is restored).
pub fn unregister(id: u64) -> io::Result<Option<String>> {
    let _output = lock(&OUTPUT);
    let mut fx = Effects::default();
    let (partial, result) = {
        let mut reg = lock(&monitor().registry);
        let partial = reg.watches.remove(id, &mut fx);
        let result = if reg.watches.is_empty() {
            alarm::deactivate()
        } else {
            Ok(())
        };
        (partial, result)
    };
    fx.perform();
    alarm::wake();
    result.map(|()| partial)
}

/// Sets a watch's report budget: at most one logged block per fingerprint per `interval_ns` (0: every
/// block is logged). Returns false when there is no such watch.
pub fn set_log_repeats_after(id: u64, interval_ns: u64) -> bool {
    find_watch(id).is_some_and(|w| {
        lock(&w.state).budget.set_interval(interval_ns);
        true
    })
}

/// The registered watch with this id (the registry lock is released on return).
fn find_watch(id: u64) -> Option<Arc<Watch>> {
    lock(&monitor().registry).watches.find(id)
}

/// Whether the block a ticket belongs to is still in progress (its interrupt is still wanted).
pub fn block_open(ticket: &SampleTicket) -> bool {
    find_watch(ticket.watch_id).is_some_and(|w| w.block_open(ticket))
}

/// The interrupt a ticket asked for was declined because the blocked code's own time (the block
/// less the time its thread waited for a CPU) had not reached its deadline yet: its watch asks
/// again once that time could have, `after_ns` from now, instead of one timeout later. Called on
/// the loop's JavaScript thread, in the interrupt callback.
pub fn interrupt_again_after(ticket: &SampleTicket, after_ns: u64) {
    let at_ns = now_ns().saturating_add(after_ns);
    let sooner = lock(&monitor().registry)
        .watches
        .interrupt_again_at(ticket, at_ns);
    if sooner {
        alarm::wake();
    }
}

/// Ends the block in progress now, if one was warned about, and returns its record: the loop is
/// done (Node emits 'beforeExit' or 'exit'), so its next turn, which would end the block, will not
/// come. The watch keeps running.
pub fn flush(id: u64) -> Option<String> {
    let _output = lock(&OUTPUT);
    let mut fx = Effects::default();
    // The watch is found under the registry lock, and its block ended after it is released, as
    // before: a flush never holds the registry while it reads the loop thread's state.
    let record = {
        let w = find_watch(id)?;
        let now = now_ns();
        let mut st = lock(&w.state);
        let e = st.tracker.finish(now)?;
        let mut inner = Effects::default();
        w.finish_block(&mut st, e, true, now, &mut inner);
        fx.text = inner.text;
        inner.deliveries.into_iter().next().map(|(_, json)| json)
    };
    fx.perform();
    record
}

/// Hands a stack sample to the watch that asked for it. Called on the loop's JavaScript thread.
pub fn deliver_sample(ticket: SampleTicket, frames: Vec<crate::report::Frame>, cost_ns: u64) {
    deliver_samples(vec![(ticket, None)], &frames, cost_ns, None);
}

/// Hands one stack sample to every watch that asked for it (one interrupt serves all the watches
/// of a loop), each with the AsyncLocalStorage store read for it in the same interrupt (for
/// watches with [`WatchConfig::async_context`]; None: read at an earlier sample of the block, and
/// this warning carries no context fields). Takes the registry lock once, not once per watch: the
/// blocked thread must not queue behind the monitor a thousand times. `sync_api`: the Node.js
/// synchronous API the thread was inside at the capture. Called on the loop's JavaScript thread.
pub fn deliver_samples(
    tickets: Vec<(SampleTicket, Option<ContextCapture>)>,
    frames: &[crate::report::Frame],
    cost_ns: u64,
    sync_api: Option<&str>,
) {
    if tickets.is_empty() {
        return;
    }
    // The registry lock is held only to find the watches, not while samples are attached.
    let found: Vec<Option<Arc<Watch>>> = {
        let reg = lock(&monitor().registry);
        tickets
            .iter()
            .map(|(t, _)| reg.watches.find(t.watch_id))
            .collect()
    };
    let attached = watches::attach_samples(tickets, found, frames, cost_ns, sync_api, now_ns());
    if attached {
        alarm::wake();
    }
}

/// The process is exiting: stop touching loops and isolates that are being torn down.
pub fn shutdown() {
    if let Some(m) = MONITOR.get() {
        let mut reg = lock(&m.registry);
        reg.exiting = true;
        reg.watches.list.clear();
        alarm::on_exit();
    }
}

/// Number of registered watches.
pub fn watch_count() -> usize {
    MONITOR
        .get()
        .map(|m| lock(&m.registry).watches.len())
        .unwrap_or(0)
}

/// (monitor wake-ups, wake-ups by the wait's backstop timeout rather than the timer or an event).
pub fn wake_stats() -> (u64, u64) {
    (
        WAKES.load(Ordering::Relaxed),
        BACKSTOP_WAKES.load(Ordering::Relaxed),
    )
}

/// Holding the monitor still across `fork()`.
///
/// The monitor thread takes locks that the child would inherit held: the registry, a watch's
/// state, V8's interrupt queue (`RequestInterrupt`), Node's thread-safe function queue, stderr. So
/// before forking, the forking thread asks it to stop at the top of its loop, where it holds none,
/// and waits until it has; it holds the output and registry locks itself until the fork is done.
pub mod fork_pause {
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use crate::panics::{lock_or_recover, wait_or_recover, wait_timeout_or_recover};

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Running,
        Requested,
        Paused,
    }

    static STATE: Mutex<State> = Mutex::new(State::Running);
    static CHANGED: Condvar = Condvar::new();

    fn state() -> std::sync::MutexGuard<'static, State> {
        lock_or_recover(&STATE, "monitor::STATE")
    }

    /// Called by the monitor thread between cycles: parks it while a fork is being prepared.
    pub(super) fn pause_point() {
        let mut st = state();
        if *st != State::Requested {
            return;
        }
        *st = State::Paused;
        CHANGED.notify_all();
        while *st != State::Running {
            st = wait_or_recover(&CHANGED, &STATE, st, "monitor::fork_pause");
        }
    }

    /// The monitor is held still; dropping this (in the parent) lets it go on.
    pub struct Paused {
        _registry: std::sync::MutexGuard<'static, super::Registry>,
        _output: std::sync::MutexGuard<'static, ()>,
    }

    impl Drop for Paused {
        fn drop(&mut self) {
            *state() = State::Running;
            CHANGED.notify_all();
        }
    }

    /// Asks the monitor thread to stop between cycles and waits (at most `timeout`) until it has.
    /// Without a monitor thread there is nothing to wait for.
    pub fn pause(timeout: Duration) -> std::io::Result<Paused> {
        let running = *super::lock(&super::THREAD_RUNNING);
        if running {
            let deadline = Instant::now() + timeout;
            let mut st = state();
            *st = State::Requested;
            drop(st);
            crate::alarm::wake();
            st = state();
            while *st != State::Paused {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    *st = State::Running;
                    CHANGED.notify_all();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the loop-helpers monitor thread did not pause",
                    ));
                }
                st = wait_timeout_or_recover(&CHANGED, &STATE, st, left, "monitor::fork_pause").0;
            }
        }
        // The output lock before the registry's (their order everywhere): no other thread is
        // stopping or flushing a watch across the fork.
        let output = super::lock(&super::OUTPUT);
        Ok(Paused {
            _registry: super::lock(&super::monitor().registry),
            _output: output,
        })
    }

    /// In the child of a fork(), on its only thread: the monitor thread is gone, and so is its timer
    /// (timers are not inherited). Forget it (where wake-ups go through a self-pipe, give the child
    /// its own), and start a new thread if anything is watched; it creates its own timer, picks up
    /// every registered watch with its configuration and arms the timer again.
    pub fn after_fork_child(paused: Paused) -> std::io::Result<()> {
        // Releases the registry lock this thread took before fork() and resets the pause state;
        // the futex-based std locks need no other repair, and nobody waits on them here.
        drop(paused);
        let pid = std::process::id();
        for w in &super::lock(&super::monitor().registry).watches.list {
            w.pid.store(pid, std::sync::atomic::Ordering::Relaxed);
        }
        *super::lock(&super::THREAD_RUNNING) = false;
        crate::alarm::after_fork_child()?;
        if super::watch_count() > 0 {
            super::ensure_thread()?;
        }
        Ok(())
    }
}
