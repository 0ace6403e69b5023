//! How a loop thread spent a block, read from the monitor thread: the CPU time it used, and (Linux)
//! the time it was ready to run but waited for a CPU.
//!
//! A block is wall time during which the loop did not turn. Most blocks are code that runs (CPU
//! time), some are a synchronous call that sleeps in the kernel (`execSync`, `Atomics.wait`, a
//! slow disk), and on a loaded machine some are the thread kept off the CPU by the scheduler: the
//! code was not blocking, the machine was. The third kind is what `cpu_wait_ns` measures, from the
//! second field of `/proc/<pid>/task/<tid>/schedstat` ("time spent waiting on a runqueue"), which
//! the kernel keeps for every task whenever it is built with `CONFIG_SCHED_INFO` (independent of
//! the `sched_schedstats` switch). Its first field is the same CPU time as the thread's CPU clock.
//!
//! The file is opened once, on the thread itself (`/proc/thread-self/schedstat`), and re-read with
//! `pread` at offset 0 (the kernel formats it afresh on every read): one system call per reading,
//! as a CPU clock read is. Where it cannot be opened (not Linux, `/proc` not mounted) the thread's
//! CPU clock (`pthread_getcpuclockid`) gives the CPU time alone.

use std::os::fd::{AsRawFd, OwnedFd};

/// CPU time a thread has used, and the time it has waited for a CPU, both since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    pub cpu_ns: u64,
    /// None where the scheduler's accounting cannot be read.
    pub cpu_wait_ns: Option<u64>,
}

impl ThreadTimes {
    /// What was used between `earlier` and `self` (readings of one thread).
    pub fn since(self, earlier: ThreadTimes) -> ThreadTimes {
        ThreadTimes {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            cpu_wait_ns: self
                .cpu_wait_ns
                .zip(earlier.cpu_wait_ns)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// The two first fields of a schedstat line (`"<cpu ns> <run-queue wait ns> <timeslices>\n"`).
pub fn parse_schedstat(text: &[u8]) -> Option<ThreadTimes> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let cpu_ns = fields.next()?.parse().ok()?;
    let cpu_wait_ns = fields.next()?.parse().ok()?;
    Some(ThreadTimes {
        cpu_ns,
        cpu_wait_ns: Some(cpu_wait_ns),
    })
}

/// Where a thread's times are read from.
#[derive(Debug)]
enum Source {
    /// Its `schedstat` file, open.
    Schedstat(OwnedFd),
    /// Its CPU clock (CPU time only).
    CpuClock(libc::clockid_t),
}

/// One thread's times, readable from any thread of the process. Made on that thread.
#[derive(Debug)]
pub struct ThreadClock {
    source: Source,
}

impl ThreadClock {
    /// The calling thread's; None when neither its schedstat file nor its CPU clock can be had.
    pub fn of_current_thread() -> Option<ThreadClock> {
        if let Some(fd) = open_own_schedstat() {
            let c = ThreadClock {
                source: Source::Schedstat(fd),
            };
            // Only if it reads as expected (a kernel without CONFIG_SCHED_INFO has no such file,
            // and one could format it differently).
            if c.read().is_some() {
                return Some(c);
            }
        }
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() is the calling, live thread; `clock` is a valid out pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        (rc == 0).then_some(ThreadClock {
            source: Source::CpuClock(clock),
        })
    }

    /// The thread's times now; None if they cannot be read (the thread ended, or, after `fork()`,
    /// the clock belongs to a thread of the parent).
    pub fn read(&self) -> Option<ThreadTimes> {
        match &self.source {
            Source::Schedstat(fd) => {
                let mut buf = [0u8; 96];
                // SAFETY: `fd` is open (owned by self); `buf` is writable for its length.
                let n = unsafe {
                    libc::pread(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n <= 0 {
                    return None;
                }
                parse_schedstat(&buf[..n as usize])
            }
            Source::CpuClock(clock) => {
                crate::clock::cpu_clock_ns(*clock).map(|cpu_ns| ThreadTimes {
                    cpu_ns,
                    cpu_wait_ns: None,
                })
            }
        }
    }

    /// Whether the run-queue wait is known (Linux with the scheduler's accounting).
    pub fn knows_cpu_wait(&self) -> bool {
        matches!(self.source, Source::Schedstat(_))
    }
}

/// The calling thread's times now, from a clock kept per thread (made at its first call, and made
/// again in a child of `fork()`, whose thread is not the one the old clock read); None where they
/// cannot be read.
pub fn current_thread_times() -> Option<ThreadTimes> {
    thread_local! {
        static CLOCK: std::cell::RefCell<Option<(u64, Option<ThreadClock>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let generation = fork_generation();
    CLOCK.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(g, _)| *g != generation) {
            *c = Some((generation, ThreadClock::of_current_thread()));
        }
        c.as_ref()?.1.as_ref()?.read()
    })
}

/// How many times this process is a child of `fork()` removed from the one that first asked: a
/// clock made before a fork reads a thread of the parent.
fn fork_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Once;
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static HANDLER: Once = Once::new();
    extern "C" fn in_child() {
        // Async-signal-safe: one atomic add (pthread_atfork child handlers run in the child of a
        // multithreaded process, where only such work is allowed).
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic; `None` for the other two.
        // A failure (ENOMEM) leaves clocks unrenewed in fork children: their reads are then of the
        // parent's thread, or fail once it ended.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    GENERATION.load(Ordering::Relaxed)
}

#[cfg(target_os = "linux")]
fn open_own_schedstat() -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated path; open has no other preconditions. O_CLOEXEC: a child process
    // must not inherit it.
    let fd = unsafe {
        libc::open(
            c"/proc/thread-self/schedstat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a file descriptor open() just returned, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn open_own_schedstat() -> Option<OwnedFd> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn the_calling_threads_times() {
        let a = current_thread_times().expect("readable");
        let end = Instant::now() + Duration::from_millis(20);
        while Instant::now() < end {}
        let b = current_thread_times().expect("readable");
        assert!(b.cpu_ns > a.cpu_ns, "{a:?} {b:?}");
        if cfg!(target_os = "linux") {
            assert!(b.cpu_wait_ns.is_some() && b.cpu_wait_ns >= a.cpu_wait_ns);
        }
    }

    #[test]
    fn parses_the_kernel_line() {
        assert_eq!(
            parse_schedstat(b"109114 148649 2\n"),
            Some(ThreadTimes {
                cpu_ns: 109_114,
                cpu_wait_ns: Some(148_649)
            })
        );
        assert_eq!(parse_schedstat(b""), None);
        assert_eq!(parse_schedstat(b"12\n"), None);
        assert_eq!(parse_schedstat(b"x 1 2"), None);
    }

    #[test]
    fn since_subtracts_and_keeps_unknown_waits_unknown() {
        let a = ThreadTimes {
            cpu_ns: 10,
            cpu_wait_ns: Some(5),
        };
        let b = ThreadTimes {
            cpu_ns: 25,
            cpu_wait_ns: Some(9),
        };
        assert_eq!(
            b.since(a),
            ThreadTimes {
                cpu_ns: 15,
                cpu_wait_ns: Some(4)
            }
        );
        let c = ThreadTimes {
            cpu_ns: 30,
            cpu_wait_ns: None,
        };
        assert_eq!(c.since(a).cpu_wait_ns, None);
        assert_eq!(a.since(b).cpu_ns, 0, "never negative");
    }

    /// A thread that computes, then sleeps, read from this one: its CPU time grows by what it
    /// computed (by its own clock), never by more than the wall time, and not while it sleeps.
    #[test]
    fn reads_another_threads_cpu_time() {
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(ThreadClock::of_current_thread()).unwrap();
            go_rx.recv().unwrap();
            // 20 ms of CPU, however long a loaded machine makes that take.
            let end = crate::clock::thread_cpu_ns() + 20_000_000;
            while crate::clock::thread_cpu_ns() < end {}
            tx.send(None).unwrap();
            go_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap().expect("a clock for the thread");
        if cfg!(target_os = "linux") {
            assert!(clock.knows_cpu_wait(), "schedstat on Linux");
        }
        let before = clock.read().expect("readable");
        let wall = Instant::now();
        go_tx.send(()).unwrap();
        rx.recv().unwrap();
        let spun = clock.read().expect("readable").since(before);
        let wall_ns = wall.elapsed().as_nanos() as u64;
        assert!(spun.cpu_ns >= 20_000_000, "{spun:?}");
        // CPU and waiting for one are parts of the wall time (the kernel's clocks tick at
        // slightly different points: a millisecond of slack).
        let waited = spun.cpu_wait_ns.unwrap_or(0);
        assert!(
            spun.cpu_ns + waited <= wall_ns + 1_000_000,
            "{spun:?} in {wall_ns} ns"
        );
        let idle_from = clock.read().expect("readable");
        std::thread::sleep(Duration::from_millis(50));
        let idle = clock.read().expect("readable").since(idle_from);
        assert!(
            idle.cpu_ns < 5_000_000,
            "a sleeping thread uses no CPU: {idle:?}"
        );
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
