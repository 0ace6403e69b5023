//! Wall time during which a thread's code did not hold the thread, for `loop-helpers/test`, which
//! attributes each block to the code that held the loop thread.
//!
//! Between two readings of one thread, its wall time is made of CPU time, time waiting for a CPU
//! (the run queue), time asleep in the kernel (a system call, a futex, a page read from disk), and
//! time it was neither: on a virtual machine, the hypervisor ran something else while the thread
//! was current (steal time, which the CPU clock and the run-queue wait both leave out). Sleeping
//! is the code's (`Atomics.wait`, a synchronous read, blocks the loop); the run-queue wait and
//! stolen time are the machine's. The kernel does not say how long a thread slept, but it counts
//! the times it went to sleep (voluntary context switches): between two readings with none, the
//! thread never slept, so all of its wall time that was not CPU time was the machine's. With
//! some, only the run-queue wait is known to be the machine's.
//!
//! Measured on this project's 2-vCPU virtual machine under load: a 5 ms CPU spin took 17 ms of
//! wall time with 0.2 ms in the run queue and no voluntary switch. Counting that as the spin's
//! own time made a neighbour's block look like the spinning code's.

use crate::thread_times::{current_thread_times, ThreadTimes};

/// One reading of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Monotonic clock, ns.
    pub wall_ns: u64,
    pub times: ThreadTimes,
    /// Voluntary context switches since the thread started; None where they cannot be read.
    pub voluntary_switches: Option<u64>,
}

/// Wall time between `earlier` and `now` (readings of one thread) that the thread's code did not
/// hold it; None where the run-queue wait is not known.
pub fn not_held_between(earlier: &Reading, now: &Reading) -> Option<u64> {
    let spent = now.times.since(earlier.times);
    let wait = spent.cpu_wait_ns?;
    let never_slept = matches!(
        (earlier.voluntary_switches, now.voluntary_switches),
        (Some(a), Some(b)) if a == b
    );
    if !never_slept {
        return Some(wait);
    }
    let wall = now.wall_ns.saturating_sub(earlier.wall_ns);
    Some(wall.saturating_sub(spent.cpu_ns).max(wait))
}

/// A running total of [`not_held_between`] over successive readings of one thread.
#[derive(Debug, Default)]
pub struct NotHeldTotal {
    last: Option<Reading>,
    total_ns: u64,
}

impl NotHeldTotal {
    /// Adds the time not held since the previous reading; returns the total so far (ns since the
    /// first reading), or None where it cannot be known (then the total is not advanced).
    pub fn advance(&mut self, now: Reading) -> Option<u64> {
        let add = match &self.last {
            Some(earlier) => not_held_between(earlier, &now),
            None => now.times.cpu_wait_ns.map(|_| 0),
        };
        self.last = Some(now);
        let add = add?;
        self.total_ns = self.total_ns.saturating_add(add);
        Some(self.total_ns)
    }
}

/// The calling thread's voluntary context switches since it started (Linux), or None.
fn voluntary_switches() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{getrusage, UsageWho};
        getrusage(UsageWho::RUSAGE_THREAD)
            .ok()
            .and_then(|u| u64::try_from(u.voluntary_context_switches()).ok())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The calling thread reading itself now; None where its times cannot be read.
///
/// The CPU time comes from the thread's CPU clock, not from `schedstat`: the kernel brings the
/// running thread's `schedstat` CPU time up to date only at its scheduler ticks, so between two
/// readings a few microseconds apart it would seem not to have run at all. The run-queue wait in
/// `schedstat` is up to date for a running thread (it grows only while the thread is queued, and
/// is added when it next runs).
///
/// A reading is taken whole: if the thread lost the CPU between its first and last clock read (a
/// time slice ended at one of its system calls), the parts would belong to different moments (the
/// wait read before the pause, the wall clock after it: the pause charged to the code), so it is
/// taken again, up to three times.
pub fn read_current_thread() -> Option<Reading> {
    let mut reading = None;
    for _ in 0..3 {
        let before = crate::clock::now_ns();
        // None of these reads sleeps (a voluntary switch needs a blocking call), so no switch of
        // the thread's own falls between them: their order does not matter to the count.
        let voluntary_switches = voluntary_switches();
        let wait = current_thread_times()?.cpu_wait_ns;
        // CPU time, then wall time, at both ends of every interval: the small gap between the two
        // reads cancels out instead of adding up over many short intervals.
        let cpu_ns = crate::clock::thread_cpu_ns();
        let wall_ns = crate::clock::now_ns();
        reading = Some(Reading {
            wall_ns,
            times: ThreadTimes {
                cpu_ns,
                cpu_wait_ns: wait,
            },
            voluntary_switches,
        });
        if wall_ns.saturating_sub(before) < WHOLE_READING_NS {
            break;
        }
    }
    reading
}

/// A reading that took longer than this was interrupted (it takes a few microseconds).
const WHOLE_READING_NS: u64 = 200_000;

/// The wall time the calling thread's code has not held it (ns), since the thread's first call
/// (None where that cannot be known: not Linux, or no scheduler accounting), and the monotonic
/// time of the reading it comes from (`clock::now_ns`, the clock of `process.hrtime`): a caller
/// that timestamps a change of owner with this time, rather than reading the clock again after,
/// leaves no gap in which a pause would be charged to the wrong side. Kept per thread; a child of
/// `fork()` starts its own total (its first interval counts as nothing).
pub fn current_thread_not_held() -> (Option<u64>, u64) {
    thread_local! {
        static TOTAL: std::cell::RefCell<NotHeldTotal> = std::cell::RefCell::new(NotHeldTotal::default());
    }
    match read_current_thread() {
        Some(now) => (TOTAL.with(|t| t.borrow_mut().advance(now)), now.wall_ns),
        None => (None, crate::clock::now_ns()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(wall_ms: u64, cpu_ms: u64, wait_ms: Option<u64>, switches: Option<u64>) -> Reading {
        Reading {
            wall_ns: wall_ms * 1_000_000,
            times: ThreadTimes {
                cpu_ns: cpu_ms * 1_000_000,
                cpu_wait_ns: wait_ms.map(|w| w * 1_000_000),
            },
            voluntary_switches: switches,
        }
    }

    #[test]
    fn a_thread_that_never_slept_held_only_its_cpu_time() {
        // 17 ms of wall time, 5 ms on a CPU, 1 ms in the run queue, no sleep: 12 ms not held.
        let a = reading(100, 50, Some(10), Some(7));
        let b = reading(117, 55, Some(11), Some(7));
        assert_eq!(not_held_between(&a, &b), Some(12_000_000));
    }

    #[test]
    fn a_thread_that_slept_held_all_but_its_run_queue_wait() {
        // Atomics.wait: 150 ms asleep, one voluntary switch, 2 ms in the run queue after it.
        let a = reading(0, 10, Some(5), Some(3));
        let b = reading(152, 10, Some(7), Some(4));
        assert_eq!(not_held_between(&a, &b), Some(2_000_000));
    }

    #[test]
    fn without_the_switch_count_only_the_run_queue_wait_is_known() {
        let a = reading(0, 0, Some(0), None);
        let b = reading(20, 5, Some(1), None);
        assert_eq!(not_held_between(&a, &b), Some(1_000_000));
        let c = reading(0, 0, Some(0), Some(1));
        assert_eq!(not_held_between(&c, &b), Some(1_000_000));
    }

    #[test]
    fn without_the_run_queue_wait_nothing_is_known() {
        let a = reading(0, 0, None, Some(1));
        let b = reading(20, 5, None, Some(1));
        assert_eq!(not_held_between(&a, &b), None);
        let mut total = NotHeldTotal::default();
        assert_eq!(total.advance(a), None);
        assert_eq!(total.advance(b), None);
    }

    #[test]
    fn clock_skew_never_makes_time_negative() {
        // CPU time read a little later than the wall clock: more CPU than wall.
        let a = reading(0, 0, Some(0), Some(1));
        let b = reading(5, 6, Some(0), Some(1));
        assert_eq!(not_held_between(&a, &b), Some(0));
        // Counters that went back (a fork child's first reading of its own thread).
        let c = reading(10, 1, Some(0), Some(0));
        assert_eq!(not_held_between(&b, &c), Some(0));
    }

    #[test]
    fn the_total_adds_each_interval() {
        let mut total = NotHeldTotal::default();
        assert_eq!(total.advance(reading(0, 0, Some(0), Some(0))), Some(0));
        assert_eq!(
            total.advance(reading(10, 4, Some(1), Some(0))),
            Some(6_000_000)
        );
        assert_eq!(
            total.advance(reading(30, 6, Some(3), Some(1))),
            Some(8_000_000)
        );
    }

    #[test]
    fn the_calling_thread_reads_itself() {
        let Some(a) = read_current_thread() else {
            return; // no scheduler accounting here: nothing to compare
        };
        let end = std::time::Instant::now() + std::time::Duration::from_millis(30);
        while std::time::Instant::now() < end {}
        let b = read_current_thread().expect("readable once readable");
        assert!(b.wall_ns > a.wall_ns);
        if cfg!(target_os = "linux") {
            assert!(
                b.voluntary_switches.is_some(),
                "getrusage(RUSAGE_THREAD) on Linux"
            );
            let not_held = not_held_between(&a, &b).expect("the run-queue wait on Linux");
            assert!(not_held <= b.wall_ns - a.wall_ns, "{a:?} {b:?}");
        }
    }
}
