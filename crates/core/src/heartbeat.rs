//! What the monitor reads from a loop: a [`LoopSample`] of the state libuv already keeps for every
//! loop, taken from the monitor thread. The loop itself does no work for us on any turn.
//!
//! libuv maintains, for its own metrics and timers, per-iteration state that another thread can
//! read while the loop runs:
//!
//! - the **iteration counter** behind `uv_metrics_info()` (`loop_count`), incremented right before
//!   each poll for I/O (libuv >= 1.45);
//! - the **idle time**, `uv_metrics_idle_time()` (documented thread-safe): it grows at wall-clock
//!   rate while the loop waits in its poll and is frozen otherwise, so two readings a few
//!   nanoseconds apart also tell whether the loop is waiting right now;
//! - the **loop time**, `uv_now()` (`loop->time`, whole milliseconds), which libuv sets right after
//!   every return from the poll (and again before running timers, and whenever JavaScript schedules
//!   a timer).
//!
//! A monitor that samples these every `timeout/20` knows when each turn began within the sampling
//! step, and usually much closer: the idle counter gives the end of a wait to the nanosecond, the
//! loop time gives the return from the poll to the millisecond (see `tracker`).
//!
//! Where libuv has no iteration counter (libuv < 1.45: Node.js 20.0 to 20.2), the binding keeps one
//! itself with a prepare handle whose callback only bumps a [`TurnCounter`].

use std::sync::atomic::{AtomicU64, Ordering};

/// One look at a loop, taken by the monitor thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopSample {
    /// Monotonic nanoseconds (the `uv_hrtime()` clock) just before the loop's state was read.
    pub now_ns: u64,
    /// The loop's iteration counter: changes once per turn, right before the turn's poll for I/O.
    pub iteration: u64,
    /// `uv_metrics_idle_time()`: nanoseconds spent waiting in the poll so far.
    pub idle_ns: u64,
    /// The loop was waiting in its poll for I/O when sampled (the idle time grew between two
    /// readings taken back to back).
    pub waiting: bool,
    /// `uv_now()` in nanoseconds, if the loop time can be read: the loop's last return from the
    /// poll happened before `loop_time_ns + loop_time_slack_ns`, and, unless the loop time was
    /// set again since (timers, JavaScript), at or after `loop_time_ns`.
    pub loop_time_ns: Option<u64>,
    /// How far past `loop_time_ns` the moment it stands for can be: 1 ms of truncation, plus the
    /// resolution of the coarse clock when libuv uses one.
    pub loop_time_slack_ns: u64,
}

/// An iteration counter the loop keeps itself, for a libuv without `uv_metrics_info`: bumped by a
/// prepare callback (single writer), read by the monitor. One relaxed load and one relaxed store per
/// turn: no clock read, no fence, no read-modify-write.
#[derive(Debug, Default)]
pub struct TurnCounter(AtomicU64);

impl TurnCounter {
    /// One more turn. Called by the loop thread only (single writer).
    #[inline]
    pub fn bump(&self) {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_turns() {
        let c = TurnCounter::default();
        assert_eq!(c.get(), 0);
        c.bump();
        c.bump();
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn a_reader_sees_the_counter_only_grow() {
        let c = Arc::new(TurnCounter::default());
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..200_000u64 {
                    c.bump();
                }
            })
        };
        let mut last = 0;
        for _ in 0..200_000 {
            let n = c.get();
            assert!(n >= last, "{n} < {last}");
            last = n;
        }
        writer.join().unwrap();
        assert_eq!(c.get(), 200_000);
    }
}
