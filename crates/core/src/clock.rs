//! Clocks shared by the monitor, the heartbeats and the reports.
//!
//! `CLOCK_MONOTONIC` is the clock libuv's `uv_hrtime()` and Node's `process.hrtime()` read, so a
//! nanosecond value taken here can be compared with one taken by the loop's prepare callback.

use nix::time::{clock_gettime, ClockId};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds on the monotonic clock (the `uv_hrtime()` scale).
pub fn now_ns() -> u64 {
    // clock_gettime(CLOCK_MONOTONIC) cannot fail on the platforms we build for; 0 is a harmless
    // fallback that only makes one reading look old.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * NS_PER_SEC + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Where the monitor's decision logic reads "now" (see `monitor::Watches`): the monotonic clock in
/// the process, a clock the test moves in the virtual-time tests. A cycle reads it at most once per
/// loop (the loop's sample carries its time), so a trait call is nothing next to the look itself;
/// the process-wide monitor's `Watches<Monotonic>` is dispatched statically.
pub trait Clock {
    /// Nanoseconds on this clock (the `uv_hrtime()` scale for [`Monotonic`]).
    fn now_ns(&self) -> u64;
}

/// [`now_ns`] as a [`Clock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Monotonic;

impl Clock for Monotonic {
    #[inline]
    fn now_ns(&self) -> u64 {
        now_ns()
    }
}

/// CPU time the calling thread has used, in nanoseconds (0 if it cannot be read).
pub fn thread_cpu_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * NS_PER_SEC + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// CPU time used so far by the thread whose CPU clock is `clock` (from `pthread_getcpuclockid`),
/// read from any thread of the process; None if it cannot be read.
pub fn cpu_clock_ns(clock: libc::clockid_t) -> Option<u64> {
    clock_gettime(ClockId::from_raw(clock))
        .ok()
        .map(|t| t.tv_sec() as u64 * NS_PER_SEC + t.tv_nsec() as u64)
}

/// How far past libuv's loop time (`uv_now()`, whole milliseconds) the moment it was taken can lie:
/// the millisecond it truncates, plus one tick of the coarse clock where libuv reads one for it
/// (Linux, when `CLOCK_MONOTONIC_COARSE` ticks every millisecond or faster; it can lag that much).
pub fn loop_time_slack_ns() -> u64 {
    static SLACK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SLACK.get_or_init(|| {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use nix::time::clock_getres;
            if let Ok(res) = clock_getres(ClockId::CLOCK_MONOTONIC_COARSE) {
                let ns = res.tv_sec() as u64 * NS_PER_SEC + res.tv_nsec() as u64;
                if ns <= 1_000_000 {
                    return 1_000_000 + ns;
                }
            }
        }
        1_000_000
    })
}

/// Milliseconds since the Unix epoch, as JavaScript's `Date.now()` counts, with a fraction.
pub fn wall_ms() -> f64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// Converts a monotonic instant to wall-clock milliseconds, using the current offset between the two.
pub fn mono_to_wall_ms(mono_ns: u64) -> f64 {
    let now = now_ns();
    let wall = wall_ms();
    wall - (now as f64 - mono_ns as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 2_000_000, "{a} -> {b}");
    }

    #[test]
    fn another_threads_cpu_clock_counts_its_work_not_its_waiting() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let mut clock: libc::clockid_t = 0;
            // SAFETY: pthread_self() is this live thread; `clock` is a valid out pointer.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
            assert_eq!(rc, 0);
            tx.send(clock).unwrap();
            go_rx.recv().unwrap();
            // 30 ms of CPU, however long that takes on a busy machine.
            let end = thread_cpu_ns() + 30_000_000;
            while thread_cpu_ns() < end {}
            done_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap();
        let before = cpu_clock_ns(clock).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let idle = cpu_clock_ns(clock).unwrap();
        assert!(
            idle - before < 5_000_000,
            "a waiting thread used {} ns",
            idle - before
        );
        go_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        let busy = cpu_clock_ns(clock).unwrap();
        go_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(busy >= idle + 30_000_000, "{idle} -> {busy}");
    }

    #[test]
    fn loop_time_slack_is_one_or_two_milliseconds() {
        let s = loop_time_slack_ns();
        assert!((1_000_000..=2_000_000).contains(&s), "{s}");
    }

    #[test]
    fn wall_conversion_is_consistent() {
        let now = now_ns();
        let wall = wall_ms();
        let converted = mono_to_wall_ms(now - 1_000_000_000);
        assert!(
            (wall - converted - 1000.0).abs() < 5.0,
            "{wall} {converted}"
        );
    }
}
