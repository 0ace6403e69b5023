//! Block tracking for one detector on one loop: pure logic over heartbeat and idle-time readings.
//!
//! The loop is *blocked* from the moment it last came back from waiting for I/O (`start`) until its
//! next turn. `start` is derived as `prepare_ns + (idle_now - idle_at_prepare)`: the prepare callback
//! runs right before the poll phase, and libuv's idle counter only grows while the loop waits in it.
//!
//! libuv drops a wait from the idle counter when `epoll_pwait` returns EINTR. Such a loss can only
//! make `start` look earlier than it was. The floor guards against that: when the idle counter moved
//! since our previous reading in the same iteration, the loop was still waiting after that reading,
//! so `start` cannot be earlier than it. While the loop waits, readings come every `quantum`, which
//! bounds the error of a lost wait by `quantum` (at most a tenth of the timeout: a block of 0.9 x
//! timeout can never look like a full one).

use crate::heartbeat::Beat;

/// Nanoseconds.
pub type Ns = u64;

const MS: Ns = 1_000_000;

/// How often an idle loop is looked at: max(2 ms, timeout/50), but never more than timeout/10.
pub fn idle_quantum(timeout_ns: Ns) -> Ns {
    (2 * MS).max(timeout_ns / 50).min(timeout_ns / 10).max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    pub timeout_ns: Ns,
    pub aggressive: bool,
    pub quantum_ns: Ns,
}

impl TrackerConfig {
    pub fn new(timeout_ns: Ns, aggressive: bool) -> Self {
        Self {
            timeout_ns,
            aggressive,
            quantum_ns: idle_quantum(timeout_ns),
        }
    }
}

/// One look at the loop.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub now_ns: Ns,
    pub beat: Beat,
    /// `uv_metrics_idle_time()` now.
    pub idle_ns: Ns,
}

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
    /// A block is in progress (a warning was given and the loop has not turned yet).
    pub in_block: bool,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    start_ns: Ns,
    warnings: u32,
    next_fire_ns: Ns,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    iteration: Option<u64>,
    last_idle_ns: Ns,
    last_read_ns: Ns,
    floor_ns: Ns,
    block: Option<Block>,
    /// The heartbeat of our previous reading (to measure a turn we only saw begin and end).
    last_beat: Option<Beat>,
    /// The last iteration in which a block was warned about: its turn must not be reported again
    /// as a late block once that block was ended another way (`finish`, a wait seen mid-turn).
    warned_iteration: Option<u64>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            iteration: None,
            last_idle_ns: 0,
            last_read_ns: 0,
            floor_ns: 0,
            block: None,
            last_beat: None,
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
        let mut ended = None;
        let mut late = None;
        let same_iteration = self.iteration == Some(o.beat.iteration);
        // `busy`: certainly not waiting for I/O since the previous reading.
        let mut busy = false;
        if !same_iteration {
            // The loop turned: any block is over. It ended when the new turn's prepare ran.
            if let Some(b) = self.block.take() {
                ended = Some(Ended {
                    start_ns: b.start_ns,
                    end_ns: o.beat.prepare_ns.max(b.start_ns),
                    warnings: b.warnings,
                });
            } else if let Some(prev) = self.last_beat.filter(|p| {
                p.iteration + 1 == o.beat.iteration && self.warned_iteration != Some(p.iteration)
            }) {
                // We saw the previous turn begin and now its end, but never looked while it was
                // past its deadline (the monitor woke late). Measure it from the heartbeats: the
                // idle counter at this prepare is the previous turn's total wait.
                let start = prev
                    .prepare_ns
                    .saturating_add(o.beat.idle_ns.saturating_sub(prev.idle_ns))
                    .max(self.floor_ns);
                let end = o.beat.prepare_ns;
                if end >= start.saturating_add(t) {
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
                }
            }
            self.iteration = Some(o.beat.iteration);
            self.floor_ns = 0;
        } else if o.idle_ns != self.last_idle_ns {
            // The loop waited for I/O after our previous reading (the counter can also go back
            // when libuv lost a wait to EINTR: that is a wait too).
            self.floor_ns = self.last_read_ns;
            if let Some(b) = self.block.take() {
                let waited = o.idle_ns.saturating_sub(self.last_idle_ns);
                ended = Some(Ended {
                    start_ns: b.start_ns,
                    end_ns: o.now_ns.saturating_sub(waited).max(b.start_ns),
                    warnings: b.warnings,
                });
            }
        } else {
            busy = true;
        }

        let idle_since_prepare = o.idle_ns.saturating_sub(o.beat.idle_ns);
        let start = o
            .beat
            .prepare_ns
            .saturating_add(idle_since_prepare)
            .max(self.floor_ns)
            .min(o.now_ns);
        let blocked = o.now_ns - start;
        self.last_idle_ns = o.idle_ns;
        self.last_read_ns = o.now_ns;
        self.last_beat = Some(o.beat);

        let mut fire = late;
        if blocked >= t {
            let b = self.block.get_or_insert(Block {
                start_ns: start,
                warnings: 0,
                next_fire_ns: start.saturating_add(t),
            });
            if fire.is_none()
                && o.now_ns >= b.next_fire_ns
                && (self.cfg.aggressive || b.warnings == 0)
            {
                fire = Some(Fire {
                    start_ns: b.start_ns,
                    elapsed_ns: o.now_ns - b.start_ns,
                    index: b.warnings,
                    late: false,
                });
                self.warned_iteration = self.iteration;
                b.warnings += 1;
                b.next_fire_ns = b
                    .start_ns
                    .saturating_add(t.saturating_mul(u64::from(b.warnings) + 1));
            }
        }

        let deadline = start.saturating_add(t);
        let next_wake_ns = match self.block {
            Some(b) if self.cfg.aggressive => b.next_fire_ns,
            // Warned once; the heartbeat tells us when the loop turns. This is only a backstop.
            Some(_) => o.now_ns.saturating_add(t.max(50 * MS)),
            None if busy => deadline,
            None => deadline.min(o.now_ns.saturating_add(self.cfg.quantum_ns)),
        };
        Step {
            fire,
            ended,
            next_wake_ns,
            in_block: self.block.is_some(),
        }
    }

    /// Ends tracking (the detector stopped): the block in progress, if it was warned about.
    pub fn finish(&mut self, now_ns: Ns) -> Option<Ended> {
        self.block.take().map(|b| Ended {
            start_ns: b.start_ns,
            end_ns: now_ns.max(b.start_ns),
            warnings: b.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ns = 100 * MS;

    /// A simulated loop: time, iterations and an idle counter that grows only while "waiting".
    struct Sim {
        now: Ns,
        beat: Beat,
        idle: Ns,
        tracker: Tracker,
        fires: Vec<Fire>,
        ends: Vec<Ended>,
    }

    impl Sim {
        fn new(aggressive: bool) -> Self {
            Self {
                now: 1_000 * MS,
                beat: Beat {
                    iteration: 1,
                    prepare_ns: 1_000 * MS,
                    idle_ns: 0,
                },
                idle: 0,
                tracker: Tracker::new(TrackerConfig::new(T, aggressive)),
                fires: vec![],
                ends: vec![],
            }
        }
        fn look(&mut self) -> Step {
            let s = self.tracker.observe(Observation {
                now_ns: self.now,
                beat: self.beat,
                idle_ns: self.idle,
            });
            self.fires.extend(s.fire);
            self.ends.extend(s.ended);
            s
        }
        /// Advances time to `until`, looking whenever the tracker asked to.
        fn run_until(&mut self, until: Ns, waiting: bool) {
            loop {
                let s = self.look();
                let next = s.next_wake_ns.max(self.now + 1);
                if next > until {
                    if waiting {
                        self.idle += until - self.now;
                    }
                    self.now = until;
                    return;
                }
                if waiting {
                    self.idle += next - self.now;
                }
                self.now = next;
            }
        }
        fn turn(&mut self) {
            self.beat = Beat {
                iteration: self.beat.iteration + 1,
                prepare_ns: self.now,
                idle_ns: self.idle,
            };
        }
        fn wait(&mut self, d: Ns) {
            let end = self.now + d;
            self.run_until(end, true);
        }
        fn block(&mut self, d: Ns) {
            let end = self.now + d;
            self.run_until(end, false);
            self.turn();
            self.look();
        }
    }

    #[test]
    fn quantum_is_bounded_by_a_tenth_of_the_timeout() {
        assert_eq!(idle_quantum(1_000 * MS), 20 * MS);
        assert_eq!(idle_quantum(50 * MS), 2 * MS);
        assert_eq!(idle_quantum(10 * MS), MS);
        assert_eq!(idle_quantum(MS), MS / 10);
    }

    #[test]
    fn idle_loop_is_never_reported() {
        let mut s = Sim::new(true);
        s.wait(60 * T);
        assert!(s.fires.is_empty());
    }

    #[test]
    fn short_block_is_not_reported_and_long_one_is() {
        let mut s = Sim::new(true);
        s.wait(T);
        s.block(T * 9 / 10);
        assert!(s.fires.is_empty(), "{:?}", s.fires);
        s.wait(T / 3);
        let start = s.now;
        s.block(T * 105 / 100);
        assert_eq!(s.fires.len(), 1);
        assert_eq!(s.fires[0].start_ns, start);
        assert_eq!(s.fires[0].elapsed_ns, T);
        assert_eq!(s.ends.len(), 1);
        assert_eq!(s.ends[0].start_ns, start);
        assert_eq!(s.ends[0].end_ns, start + T * 105 / 100);
    }

    #[test]
    fn aggressive_warns_once_per_elapsed_timeout() {
        let mut s = Sim::new(true);
        s.wait(T / 2);
        s.block(T * 35 / 10);
        assert_eq!(s.fires.len(), 3);
        assert_eq!(
            s.fires.iter().map(|f| f.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(s.ends[0].warnings, 3);
    }

    #[test]
    fn non_aggressive_warns_once_per_block() {
        let mut s = Sim::new(false);
        s.wait(T / 2);
        s.block(T * 35 / 10);
        assert_eq!(s.fires.len(), 1);
        assert_eq!(s.ends[0].warnings, 1);
        s.wait(T);
        s.block(T * 2);
        assert_eq!(s.fires.len(), 2);
    }

    #[test]
    fn busy_but_turning_loop_is_not_reported() {
        let mut s = Sim::new(true);
        for _ in 0..10_000 {
            s.now += T / 20;
            s.turn();
            s.look();
        }
        assert!(s.fires.is_empty());
    }

    #[test]
    fn lost_idle_accounting_is_bounded_by_the_quantum() {
        // A long wait whose accounting libuv lost (EINTR), then a block of 0.9 T.
        let mut s = Sim::new(true);
        s.wait(10 * T);
        // The loss: libuv restarts its wait and forgets what it had accrued (the counter goes back).
        s.idle -= 10 * T;
        s.wait(T / 100);
        s.block(T * 9 / 10);
        assert!(s.fires.is_empty(), "{:?}", s.fires);
    }

    #[test]
    fn a_block_the_monitor_slept_through_is_reported_late() {
        let mut s = Sim::new(true);
        s.wait(T);
        // The monitor is descheduled for the whole block: nobody looks until the next turn.
        let start = s.now;
        s.now += T * 12 / 10;
        s.turn();
        s.look();
        assert_eq!(s.fires.len(), 1, "{:?}", s.fires);
        assert!(s.fires[0].late);
        assert_eq!(s.fires[0].start_ns, start);
        assert_eq!(s.fires[0].elapsed_ns, T * 12 / 10);
        assert_eq!(s.ends.len(), 1);
        // A short block slept through is not.
        s.wait(T);
        s.now += T * 9 / 10;
        s.turn();
        s.look();
        assert_eq!(s.fires.len(), 1);
    }

    #[test]
    fn a_block_ended_by_finish_is_not_reported_again_late_when_the_loop_turns() {
        // An interrupted block: warned, then the detector flushes it (the loop ran dry) before the
        // monitor sees the next turn.
        let mut s = Sim::new(true);
        s.wait(T);
        s.run_until(s.now + T + MS, false);
        assert_eq!(s.fires.len(), 1);
        assert!(s.tracker.finish(s.now).is_some());
        s.now += MS;
        s.turn();
        s.look();
        assert_eq!(s.fires.len(), 1, "{:?}", s.fires);
        assert!(s.ends.is_empty(), "{:?}", s.ends);
        // A later block slept through is still reported late.
        s.wait(T);
        s.now += T * 12 / 10;
        s.turn();
        s.look();
        assert_eq!(s.fires.len(), 2);
        assert!(s.fires[1].late);
    }

    #[test]
    fn finish_returns_the_warned_block() {
        let mut s = Sim::new(true);
        s.wait(T);
        s.run_until(s.now + 2 * T, false);
        assert_eq!(s.fires.len(), 2);
        let e = s.tracker.finish(s.now).unwrap();
        assert_eq!(e.warnings, 2);
        assert!(s.tracker.finish(s.now).is_none());
    }
}
