//! Block tracking for one detector on one loop: pure logic over samples of the loop's state (see
//! `heartbeat` for what a [`LoopSample`] holds and where it comes from).
//!
//! The loop is *blocked* from the moment it last came back from waiting for I/O (the turn's start)
//! until its next turn. The loop writes nothing for us; the monitor samples it every
//! [`sample_step`] (`timeout/20`) while it waits, every [`busy_step`] (`timeout/50`, 2 ms to
//! `timeout/20`) while it runs, and brackets each turn's start between two bounds:
//!
//! - **lower**, `lo = previous sample + idle time since`: every wait since the previous sample lies
//!   between it and the turn's start. Exact when the turn began by the end of a wait the previous
//!   sample saw in progress, which is how a loop that was idle starts to block. libuv drops a wait
//!   from the idle counter when `epoll_wait` returns EINTR; that only makes `lo` earlier, never
//!   later than the truth, and never earlier than the previous sample.
//! - **upper**, `hi = min(this sample, loop time + slack)`: libuv sets the loop time on every
//!   return from the poll, in whole milliseconds; it may have been set again since (timers,
//!   JavaScript scheduling a timer), which only makes it later.
//!
//! `hi - lo` never exceeds the sampling step (plus however late the monitor woke). The estimate
//! inside the bracket is `lo` when the turn began with the end of the one wait the previous sample
//! saw (to the nanosecond), otherwise the loop time (to the millisecond, never later than the
//! turn's start unless the turn set the loop time again before the monitor looked), and it is always kept
//! within `[hi - timeout/10, lo + timeout/20]`, which holds both floors whatever the estimate: with
//! a bracket no wider than `timeout * 0.15`, a turn of 0.9 x timeout is never measured at a full
//! timeout, and a turn of 1.05 x timeout always is.
//!
//! A turn's end is bracketed the same way: after the last sample that saw it running, and before
//! the first wait that follows; it is reported at the latest, so that a reported block contains
//! the real one. While a reported block lasts the loop is looked at every
//! [`end_step`] (growing with the block to 1% of its length), so its end is known to that step,
//! and to the microsecond when the loop then waits.

use crate::heartbeat::LoopSample;

/// Nanoseconds.
pub type Ns = u64;

const MS: Ns = 1_000_000;

/// A decrease of the idle counter smaller than this is the race inside `uv_metrics_idle_time`
/// (it reads the clock after releasing its lock), not a wait that libuv lost.
const IDLE_JITTER_NS: Ns = 50_000;

/// How often the monitor looks at a loop that waits for I/O: timeout/20, from 50 µs to 500 ms.
pub fn sample_step(timeout_ns: Ns) -> Ns {
    (timeout_ns / 20).clamp(50_000, 500 * MS)
}

/// How often the monitor looks at a loop that is running: timeout/50 (at least 2 ms, or the
/// sampling step if smaller), at most the sampling step. A turn that begins while the loop runs
/// is bracketed by the looks around it (its loop time usually narrows that to a millisecond, but
/// the turn's own code may have moved the loop time already), so this bounds the worst error of a
/// block's start by 2% of the timeout.
pub fn busy_step(timeout_ns: Ns) -> Ns {
    let step = sample_step(timeout_ns);
    (timeout_ns / 50).max(step.min(2 * MS)).min(step)
}

/// How often a reported block is looked at until it ends, at first: timeout/50, at least 1 ms (or
/// the sampling step, if smaller), at most the sampling step. Later every 1% of the block's length.
pub fn end_step(timeout_ns: Ns) -> Ns {
    let step = sample_step(timeout_ns);
    (timeout_ns / 50).max(step.min(MS)).min(step)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    pub timeout_ns: Ns,
    pub aggressive: bool,
    /// Sampling step while the loop waits for I/O.
    pub step_ns: Ns,
    /// Sampling step while the loop runs.
    pub busy_step_ns: Ns,
    /// First sampling step while a reported block lasts.
    pub end_step_ns: Ns,
}

impl TrackerConfig {
    pub fn new(timeout_ns: Ns, aggressive: bool) -> Self {
        Self {
            timeout_ns,
            aggressive,
            step_ns: sample_step(timeout_ns),
            busy_step_ns: busy_step(timeout_ns),
            end_step_ns: end_step(timeout_ns),
        }
    }
}

/// One look at the loop.
pub type Observation = LoopSample;

/// A warning is due: the loop has been blocked for `elapsed_ns` since `start_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fire {
    pub start_ns: Ns,
    pub elapsed_ns: Ns,
    /// 0 for the first warning of this block, then 1, 2, ... (aggressive mode).
    pub index: u32,
    /// The block had already ended when the monitor looked (it woke late: the machine was busy).
    /// It is still reported, without a stack sample.
    pub late: bool,
}

/// A block that produced at least one warning has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub start_ns: Ns,
    pub end_ns: Ns,
    pub warnings: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub fire: Option<Fire>,
    pub ended: Option<Ended>,
    /// When this tracker wants to be looked at again.
    pub next_wake_ns: Ns,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    start_ns: Ns,
    warnings: u32,
    next_fire_ns: Ns,
}

/// What the loop was doing at the previous sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for I/O.
    Waiting,
    /// Running a turn that began within `[lo, hi]`, estimated at `start`.
    Busy { lo: Ns, hi: Ns, start: Ns },
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    last: LoopSample,
    phase: Phase,
    block: Option<Block>,
    /// The last iteration in which a block was warned about: its turn must not be reported again
    /// as a late block once that block was ended another way (`finish`).
    warned_iteration: Option<u64>,
}

impl Tracker {
    /// Starts tracking from `first`, a sample taken when the detector started. A loop that is not
    /// waiting then (the detector is started from JavaScript, on the loop's own thread) is taken to
    /// be busy from that moment.
    pub fn new(cfg: TrackerConfig, first: LoopSample) -> Self {
        let t = first.now_ns;
        Self {
            cfg,
            last: first,
            phase: if first.waiting {
                Phase::Waiting
            } else {
                Phase::Busy {
                    lo: t,
                    hi: t,
                    start: t,
                }
            },
            block: None,
            warned_iteration: None,
        }
    }

    pub fn config(&self) -> TrackerConfig {
        self.cfg
    }

    /// The block in progress, if a warning was given for it: (start, warnings so far).
    pub fn current_block(&self) -> Option<(Ns, u32)> {
        self.block.map(|b| (b.start_ns, b.warnings))
    }

    pub fn observe(&mut self, o: Observation) -> Step {
        let t = self.cfg.timeout_ns;
        let p = self.last;
        let now = o.now_ns.max(p.now_ns);
        let turned = o.iteration != p.iteration;
        // The loop waited for I/O since the previous sample: its idle time moved (it can also go
        // back, when libuv lost a wait to EINTR: that was a wait too), or it was waiting then.
        let waited = o.idle_ns != p.idle_ns || p.waiting;
        let lost = o.idle_ns.saturating_add(IDLE_JITTER_NS) < p.idle_ns;
        // Every wait since the previous sample lies between it and now; together they took `d`.
        let d = o.idle_ns.saturating_sub(p.idle_ns).min(now - p.now_ns);
        let mut ended = None;
        let mut late = None;

        if turned || waited || o.waiting {
            if let Some(b) = self.block.take() {
                // The block was running at the previous sample and ended before any of those
                // waits began. Take the latest it can have ended (so that the block reported
                // contains the real one): when the loop went back to waiting, the start of that
                // wait, give or take the short turns in between.
                ended = Some(Ended {
                    start_ns: b.start_ns,
                    end_ns: (now - d).max(b.start_ns),
                    warnings: b.warnings,
                });
            } else if let Some((start, end)) = self.missed_turn(&p, &o, now, d) {
                // A whole turn went by between two samples (the monitor woke late) and lasted a
                // timeout or more: report it now, late and without a stack.
                if end.saturating_sub(start) >= t {
                    late = Some(Fire {
                        start_ns: start,
                        elapsed_ns: end - start,
                        index: 0,
                        late: true,
                    });
                    ended = Some(Ended {
                        start_ns: start,
                        end_ns: end,
                        warnings: 1,
                    });
                    self.warned_iteration = Some(p.iteration);
                }
            }
        }

        if o.waiting {
            self.phase = Phase::Waiting;
        } else if turned || waited {
            self.phase = self.new_turn(&p, &o, now, d, turned, lost);
        }
        self.last = o;

        let mut fire = late;
        if let Phase::Busy { start, .. } = self.phase {
            if now.saturating_sub(start) >= t {
                let b = self.block.get_or_insert(Block {
                    start_ns: start,
                    warnings: 0,
                    next_fire_ns: start.saturating_add(t),
                });
                if fire.is_none()
                    && now >= b.next_fire_ns
                    && (self.cfg.aggressive || b.warnings == 0)
                {
                    fire = Some(Fire {
                        start_ns: b.start_ns,
                        elapsed_ns: now - b.start_ns,
                        index: b.warnings,
                        late: false,
                    });
                    self.warned_iteration = Some(o.iteration);
                    b.warnings += 1;
                    b.next_fire_ns = b
                        .start_ns
                        .saturating_add(t.saturating_mul(u64::from(b.warnings) + 1));
                }
            }
        }

        let next_wake_ns = match (self.block, self.phase) {
            (Some(b), _) => {
                // Time the block's end to 1% of its length (at least `end_step`).
                let every = self
                    .cfg
                    .end_step_ns
                    .max(now.saturating_sub(b.start_ns) / 100);
                let at = now.saturating_add(every);
                if self.cfg.aggressive {
                    at.min(b.next_fire_ns)
                } else {
                    at
                }
            }
            (None, Phase::Busy { start, .. }) => start
                .saturating_add(t)
                .min(now.saturating_add(self.cfg.busy_step_ns)),
            (None, Phase::Waiting) => now.saturating_add(self.cfg.step_ns),
        };
        Step {
            fire,
            ended,
            next_wake_ns: next_wake_ns.max(now + 1),
        }
    }

    /// The loop is running a turn that began since the previous sample `p`: bracket its start.
    fn new_turn(
        &self,
        p: &LoopSample,
        o: &LoopSample,
        now: Ns,
        d: Ns,
        turned: bool,
        lost: bool,
    ) -> Phase {
        let t = self.cfg.timeout_ns;
        let lo = (p.now_ns + d).min(now);
        let slack = o.loop_time_slack_ns;
        // The loop time is usable if it is consistent with the bracket (the loop sets it on every
        // return from its poll, so it can only be stale where libuv skipped the poll).
        let lt = o
            .loop_time_ns
            .filter(|&lt| lt <= now && lt.saturating_add(slack) >= lo);
        let hi = lt.map_or(now, |lt| now.min(lt + slack));
        // The turn began with the end of the one wait the previous sample saw: `lo` is exact.
        // Otherwise the loop time, which was set when the poll returned unless the turn set it
        // again since. Either way the earliest the turn can have begun (within the loop time's
        // millisecond), so that the block reported contains the real one.
        let exact = waited_once(p, o, turned, lost);
        let guess = match lt {
            Some(lt) if !exact => lt.max(lo),
            _ => lo,
        };
        let mut start = guess.clamp(lo, hi);
        // Whatever the estimate, keep both floors: never more than timeout/10 before the latest
        // possible start (a 0.9 x timeout turn is never measured at a timeout), never more than
        // timeout/20 after the earliest (a 1.05 x timeout turn always is). Both hold together as
        // long as the bracket is at most timeout * 0.15 wide.
        let (floor, ceil) = (hi.saturating_sub(t / 10), lo.saturating_add(t / 20));
        if floor <= ceil {
            start = start.clamp(floor, ceil);
        }
        Phase::Busy { lo, hi, start }
    }

    /// The turn that ended between the previous sample `p` and this one `o` (the monitor woke
    /// late, after its end), if it can be measured: (start, end).
    fn missed_turn(&self, p: &LoopSample, o: &LoopSample, now: Ns, d: Ns) -> Option<(Ns, Ns)> {
        if self.warned_iteration == Some(p.iteration) {
            return None;
        }
        let one_turn = o.iteration == p.iteration.wrapping_add(1) && o.waiting;
        match self.phase {
            // The turn was already running at `p`. When exactly one turn ended and the loop is
            // waiting again, it ended when that wait began (give or take the few microseconds
            // before the poll).
            Phase::Busy { start, .. } if one_turn => Some((start, (now - d).max(start))),
            // Otherwise it ended after `p` and before the first wait since, and before the loop
            // time was last set (at the latest poll, after it). Only measured when `p` saw it
            // run for more than 0.9 x timeout for certain (from the latest it can have begun):
            // then, whatever came after it, reporting it cannot break the 0.9 x floor.
            Phase::Busy { start, hi, .. }
                if p.now_ns.saturating_sub(hi) > self.cfg.timeout_ns / 10 * 9 =>
            {
                let mut end = now - d;
                if let Some(lt) = o.loop_time_ns {
                    end = end.min(lt.saturating_add(o.loop_time_slack_ns));
                }
                Some((start, end.max(p.now_ns)))
            }
            Phase::Busy { .. } => None,
            // The turn began when the wait `p` saw ended, and ran for `busy` (all of the time the
            // loop did not wait between the samples, but the few microseconds before the next
            // poll). The loop time was last set when that poll began (libuv's first, non-blocking
            // poll), i.e. when the turn ended.
            Phase::Waiting if one_turn => {
                let busy = (now - p.now_ns) - d;
                let earliest = p.now_ns + busy;
                let end = match o.loop_time_ns {
                    Some(lt) => (lt + o.loop_time_slack_ns / 2).clamp(earliest, now),
                    None => earliest + (now - earliest) / 2,
                };
                Some((end - busy, end))
            }
            Phase::Waiting => None,
        }
    }

    /// Ends the block in progress, if it was warned about, at `now_ns`: the detector stopped, or
    /// the loop is done (Node's exit path, which runs in the blocked turn itself: libuv's loop
    /// returned without another poll). Whatever the turn runs after that is timed from `now_ns`,
    /// as a block of its own, so that the ended block is never reported again.
    pub fn finish(&mut self, now_ns: Ns) -> Option<Ended> {
        let b = self.block.take()?;
        let now = now_ns.max(b.start_ns);
        if matches!(self.phase, Phase::Busy { .. }) {
            self.phase = Phase::Busy {
                lo: now,
                hi: now,
                start: now,
            };
        }
        Some(Ended {
            start_ns: b.start_ns,
            end_ns: now,
            warnings: b.warnings,
        })
    }
}

/// The loop was waiting at `p`, is in the same turn at `o`, and its idle counter only grew: the
/// turn began when that wait ended, `d` after `p`.
fn waited_once(p: &LoopSample, o: &LoopSample, turned: bool, lost: bool) -> bool {
    p.waiting && !turned && !lost && o.idle_ns >= p.idle_ns
}

#[cfg(test)]
mod tests;
