//! The per-loop heartbeat: what the loop's prepare callback publishes each turn, read by the monitor.
//!
//! A single-writer seqlock. The writer (the loop thread) never waits; the reader (the monitor) retries
//! when it raced with a write. The only other hot-path work is one relaxed load of `notify`.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

/// One consistent heartbeat reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// Loop iterations seen so far (prepare callbacks), or since registration.
    pub iteration: u64,
    /// `uv_hrtime()` when the prepare callback ran (just before the loop polls for I/O).
    pub prepare_ns: u64,
    /// `uv_metrics_idle_time()` at that moment.
    pub idle_ns: u64,
}

#[derive(Debug, Default)]
pub struct Heartbeat {
    seq: AtomicU64,
    prepare_ns: AtomicU64,
    idle_ns: AtomicU64,
    notify: AtomicBool,
}

impl Heartbeat {
    pub fn new(prepare_ns: u64, idle_ns: u64) -> Self {
        let hb = Self::default();
        hb.beat(prepare_ns, idle_ns);
        hb
    }

    /// Publishes a turn of the loop. Called by the loop thread only (single writer).
    /// Returns true when the monitor asked to be told about the next turn (a block just ended).
    #[inline]
    pub fn beat(&self, prepare_ns: u64, idle_ns: u64) -> bool {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.prepare_ns.store(prepare_ns, Ordering::Relaxed);
        self.idle_ns.store(idle_ns, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
        // Relaxed load first: the common case (no block in progress) costs no read-modify-write.
        self.notify.load(Ordering::Relaxed) && self.notify.swap(false, Ordering::AcqRel)
    }

    /// Asks the writer to report its next turn (see [`Heartbeat::beat`]).
    pub fn request_notify(&self, on: bool) {
        self.notify.store(on, Ordering::Release);
    }

    /// A consistent reading; retries while a write is in progress.
    pub fn read(&self) -> Beat {
        let mut spins = 0u32;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let prepare_ns = self.prepare_ns.load(Ordering::Relaxed);
                let idle_ns = self.idle_ns.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return Beat {
                        iteration: s1 / 2,
                        prepare_ns,
                        idle_ns,
                    };
                }
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // The writer was preempted mid-write: let it run.
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reads_what_was_written() {
        let hb = Heartbeat::new(10, 3);
        assert_eq!(
            hb.read(),
            Beat {
                iteration: 1,
                prepare_ns: 10,
                idle_ns: 3
            }
        );
        hb.beat(20, 5);
        assert_eq!(hb.read().iteration, 2);
        assert_eq!(hb.read().prepare_ns, 20);
    }

    #[test]
    fn notify_is_reported_once() {
        let hb = Heartbeat::new(0, 0);
        assert!(!hb.beat(1, 0));
        hb.request_notify(true);
        assert!(hb.beat(2, 0));
        assert!(!hb.beat(3, 0));
    }

    #[test]
    fn concurrent_reads_are_never_torn() {
        let hb = Arc::new(Heartbeat::new(0, 0));
        let writer = {
            let hb = hb.clone();
            std::thread::spawn(move || {
                for i in 1..200_000u64 {
                    hb.beat(i, i * 2);
                }
            })
        };
        for _ in 0..200_000 {
            let b = hb.read();
            assert_eq!(b.idle_ns, b.prepare_ns * 2, "torn read {b:?}");
        }
        writer.join().unwrap();
    }
}
