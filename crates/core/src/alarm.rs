//! The monitor's precise wake-up: a deadline signal (SIGALRM) that reaches the monitor thread and
//! nobody else, and the wake-ups other threads send it.
//!
//! # Linux: a timer aimed at the monitor thread
//!
//! The monitor thread is created with every asynchronous signal blocked ([`spawn_monitor_thread`])
//! and keeps them blocked for its whole life. Its deadline is a POSIX timer on `CLOCK_MONOTONIC`
//! whose expiry the kernel queues as a SIGALRM for that one thread, never for the process
//! (`timer_create` with `SIGEV_THREAD_ID`). The thread takes it with `sigtimedwait(2)`
//! ([`Waiter::wait`]). Other threads wake it with `rt_tgsigqueueinfo(2)`: SIGALRM again, aimed at
//! it alone. No handler of ours is installed and the process-wide disposition of SIGALRM is never
//! read or changed. So:
//!
//! - `process.on('SIGALRM')` / `process.off('SIGALRM')` change a disposition we do not use: a
//!   listener never gets our signal, and a restored SIG_DFL never meets it (a signal blocked in its
//!   target thread is only queued, and the kernel applies no fatal default action to a signal that
//!   its target waits for in `sigtimedwait`).
//! - No loop's `epoll_wait` is interrupted by us (libuv would drop that wait from its idle time,
//!   and `performance.eventLoopUtilization()` would read the loop as busy).
//! - Every copy of this library in a process (two installed versions of the package) has its own
//!   thread and its own timer, and tells its signals from the other's.
//! - `fork()` does not copy timers or threads: the child's new monitor thread creates its own timer
//!   ([`after_fork_child`] forgets the parent's thread first).
//!
//! What `sigtimedwait` brings that a handler did not: while the monitor waits in it, SIGALRM counts
//! as unblocked for that thread, so a *process-directed* SIGALRM (`kill(2)` and `process.kill`,
//! `alarm(2)`, another library's process-wide timer) can be dequeued by the monitor if it looks
//! before the thread the kernel chose does (Node's main thread, which the sender names and which
//! takes it within microseconds; with the monitor waiting for deadlines 200 µs apart, about 2% of
//! them were dequeued by the monitor first in tests/alarm.rs). Ours are told apart by their
//! `siginfo`: our timer's (`SI_TIMER`) and our wake-ups (`SI_QUEUE`) carry a value unique to this
//! copy of the library. (A wake-up is not a `tgkill`: glibc's `sigtimedwait` reports `SI_TKILL` as
//! `SI_USER`, which `kill(2)` also sends.) Anything else is handed back to the process at once,
//! unchanged where the kernel allows it (`rt_sigqueueinfo(2)` keeps the whole `siginfo` of a
//! `sigqueue` or a timer signal) and otherwise as a `kill(2)` from this process, which is what
//! `process.kill(process.pid, 'SIGALRM')` sends anyway (a signal another process sent then names
//! this process as its sender). The monitor then leaves SIGALRM alone for a moment (1 ms, doubling
//! up to 16 ms while it keeps happening; its deadlines are kept by a plain sleep meanwhile) so that
//! the thread that takes the signal gets it first. [`forwarded_count`] counts these hand-backs.
//!
//! Standard signals do not queue: a wake-up sent while our timer's signal is queued merges into it,
//! which [`Waiter`] accounts for (see there).
//!
//! # Elsewhere (macOS): the process-wide interval timer and a handler
//!
//! Without `SIGEV_THREAD_ID`, the deadline is the process's one `ITIMER_REAL`, and a SIGALRM
//! handler of ours wakes the monitor. Discipline (as in the `signal-hook` crate): the handler only
//! records and wakes. It writes one byte into a non-blocking self-pipe that the monitor thread
//! polls; everything else happens on that thread. The handler reads nothing but atomics.
//!
//! The previous SIGALRM disposition is saved when the handler is installed, honoured while it is
//! installed (a SIGALRM that our timer did not send is passed on to it), and restored when the last
//! detector stops. If other code replaces our handler later (for example `process.on('SIGALRM')`,
//! which makes libuv install its own), `ensure_installed` notices, treats that handler as the new
//! previous one, and installs ours in front of it again. Loop threads block SIGALRM
//! ([`shield_loop_thread`]) so that the timer's signal lands on the monitor thread, which alone
//! leaves it unblocked.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

#[cfg(target_os = "linux")]
pub use thread_timer::*;

#[cfg(not(target_os = "linux"))]
pub use itimer::*;

/// Why [`Waiter::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// Our timer expired: the deadline is reached.
    Timer,
    /// Another thread called [`wake`].
    Wake,
    /// The wait's own timeout, a little past the deadline (the timer's signal was lost).
    Backstop,
    /// A SIGALRM that was not ours was taken and handed back to the process.
    Foreign,
    /// Anything else (a pause after a hand-back, an interrupted wait).
    Other,
}

/// Starts the monitor thread with the signal mask it keeps for its whole life: every asynchronous
/// signal blocked (a new thread inherits its creator's mask, so the mask is set around the spawn
/// and restored after, as Node's watchdog does). No handler of anyone else ever runs on it, and no
/// process-directed signal is delivered to it (on Linux its wait can dequeue a process-directed
/// SIGALRM, and hands it back: see the module docs). Synchronous fault signals stay deliverable, so
/// that a fault on it is reported as what it is (blocked, the kernel would force their default
/// action), and glibc keeps its two internal signals deliverable whatever is asked. Where a handler
/// of ours takes the timer's signal (not Linux), SIGALRM stays unblocked on this thread.
pub fn spawn_monitor_thread(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    before_spawn()?;
    let mut mask = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        mask.remove(s);
    }
    if !MONITOR_BLOCKS_SIGALRM {
        mask.remove(Signal::SIGALRM);
    }
    let old = mask.thread_swap_mask(SigmaskHow::SIG_SETMASK)?;
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    // Cannot fail (a valid `how`, a set the kernel handed out). Not an error even if it did: the
    // thread runs, and the caller must not start another.
    let _ = old.thread_set_mask();
    spawned.map(drop)
}

#[cfg(target_os = "linux")]
mod thread_timer {
    use std::io;
    use std::os::raw::c_int;
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
    use std::time::Duration;

    use nix::sys::signal::{SigEvent, SigSet, SigevNotify, Signal};

    use super::Woke;
    use crate::clock::now_ns;

    /// The monitor thread keeps SIGALRM blocked: it only ever takes it with `sigtimedwait`.
    pub(super) const MONITOR_BLOCKS_SIGALRM: bool = true;

    // `si_code`s (Linux ABI, <asm-generic/siginfo.h>; libc 0.2.139 does not define them).
    /// `sigqueue(3)`, and our wake-ups.
    const SI_QUEUE: c_int = -1;
    /// A POSIX timer's expiry.
    const SI_TIMER: c_int = -2;
    /// `tgkill(2)` / `pthread_kill(3)` (the kernel refuses to let a process queue it itself).
    const SI_TKILL: c_int = -6;
    /// `kill(2)`; also what a signal whose information the kernel dropped reads as.
    const SI_USER: c_int = 0;

    /// The head of a `siginfo_t` as the kernel reads it for `SI_QUEUE` (its `_rt` member): the
    /// union of fields after the three ints is pointer-aligned in the kernel's layout, as
    /// `#[repr(C)]` aligns `fields` here.
    #[repr(C)]
    struct QueuedInfo {
        signo: c_int,
        errno: c_int,
        code: c_int,
        fields: QueuedFields,
    }

    #[repr(C)]
    struct QueuedFields {
        pid: libc::pid_t,
        uid: libc::uid_t,
        value: libc::sigval,
    }

    const _: () = assert!(
        std::mem::size_of::<QueuedInfo>() <= std::mem::size_of::<libc::siginfo_t>()
            && std::mem::align_of::<QueuedInfo>() <= std::mem::align_of::<libc::siginfo_t>()
    );

    /// How far past the deadline the wait's own timeout lies: the backstop should our timer's
    /// signal ever be lost (it is discarded, for instance, if other code sets SIGALRM to SIG_IGN
    /// while it is pending).
    const BACKSTOP_NS: u64 = 2_000_000;
    /// After handing a foreign SIGALRM back, leave SIGALRM alone this long (doubled while
    /// hand-backs follow each other within `BACKOFF_RESET_NS`, up to `BACKOFF_MAX_NS`).
    const BACKOFF_MIN_NS: u64 = 1_000_000;
    const BACKOFF_MAX_NS: u64 = 16_000_000;
    const BACKOFF_RESET_NS: u64 = 100_000_000;

    /// The monitor thread's id (0: none), which [`wake`] aims at. Set by [`Waiter::new`] on that
    /// thread before its first cycle; cleared when its `Waiter` goes away and in a forked child.
    static MONITOR_TID: AtomicI32 = AtomicI32::new(0);
    /// A watch is registered (see [`is_installed`]).
    static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// Foreign SIGALRMs the monitor took and handed back.
    static FORWARDED: AtomicU64 = AtomicU64::new(0);
    /// Wake-ups being sent right now, and sent in all. When the user's queued signals are at their
    /// limit (RLIMIT_SIGPENDING), the kernel still sends a standard signal queued with
    /// `rt_tgsigqueueinfo` but drops its information: it arrives as a bare `SI_USER` with no
    /// sender, which [`Waiter`] takes for a wake-up of ours if one was sent since it last took a
    /// signal of ours (handing it back instead sent the process a SIGALRM it died of).
    static WAKES_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
    static WAKES_SENT: AtomicU64 = AtomicU64::new(0);

    /// Our timer's signals and our wake-ups carry this static's address in `si_value`: unique to
    /// this copy of the library in this process, so that another copy's signal is never taken for
    /// ours.
    static COOKIE: u8 = 0;

    fn cookie() -> usize {
        std::ptr::addr_of!(COOKIE) as usize
    }

    fn gettid() -> libc::pid_t {
        // SAFETY: gettid(2) takes no arguments and cannot fail. (A raw syscall: the libc wrapper
        // needs glibc 2.30.)
        unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
    }

    fn sigalrm_only() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGALRM);
        set
    }

    pub(super) fn before_spawn() -> io::Result<()> {
        Ok(())
    }

    /// A POSIX timer on `CLOCK_MONOTONIC` whose expiry queues SIGALRM for one thread.
    struct ThreadTimer(libc::timer_t);

    impl ThreadTimer {
        fn new(tid: libc::pid_t) -> io::Result<ThreadTimer> {
            let mut event = SigEvent::new(SigevNotify::SigevThreadId {
                signal: Signal::SIGALRM,
                thread_id: tid,
                si_value: cookie() as libc::intptr_t,
            })
            .sigevent();
            let mut id: libc::timer_t = std::ptr::null_mut();
            // SAFETY: `event` is a valid sigevent (SIGEV_THREAD_ID, a thread of this process) and
            // `id` a valid out-pointer.
            if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(ThreadTimer(id))
        }

        /// Arms it for the monotonic instant `at_ns` (0: disarms it). Returns whether it had
        /// expired (a one-shot timer with nothing left to run), atomically with the change.
        fn set(&self, at_ns: u64) -> io::Result<bool> {
            let new = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
                },
            };
            let flags = if at_ns > 0 { libc::TIMER_ABSTIME } else { 0 };
            // SAFETY: an all-zero itimerspec is a valid value.
            let mut old: libc::itimerspec = unsafe { std::mem::zeroed() };
            // SAFETY: `self.0` is a live timer of this process; `new` and `old` are valid.
            if unsafe { libc::timer_settime(self.0, flags, &new, &mut old) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(old.it_value.tv_sec == 0 && old.it_value.tv_nsec == 0)
        }
    }

    impl Drop for ThreadTimer {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a live timer of this process, deleted once.
            unsafe { libc::timer_delete(self.0) };
        }
    }

    /// The monitor thread's wait: its own timer, armed for each deadline, and `sigtimedwait`.
    ///
    /// One subtlety of standard signals: one SIGALRM at most is queued for the thread, so a wake-up
    /// sent while our timer's signal is queued merges into it. That is harmless when the timer's
    /// signal is then taken (the monitor wakes either way), but the kernel drops a timer's signal
    /// when it is dequeued after the timer was set again (Linux 6.13 on), which would lose the
    /// merged wake-up. So when setting the timer finds that it had expired without its signal
    /// being taken, the wait takes that signal out of the queue at once and returns, and the
    /// monitor looks at every loop again before it waits.
    pub struct Waiter {
        tid: libc::pid_t,
        pid: libc::pid_t,
        /// None if `timer_create` refused (EAGAIN under a low limit of queued signals): the wait's
        /// own timeout then keeps the deadline, with the scheduler's timer slack.
        timer: Option<ThreadTimer>,
        /// The timer was armed and its signal has not been taken since.
        unconsumed: bool,
        /// [`WAKES_SENT`] before the wait in which the monitor last took a signal of ours: later
        /// wake-ups are owed a signal (standard signals merge, so one signal answers every
        /// wake-up sent before it).
        wakes_answered: u64,
        /// Until when SIGALRM is left alone after a hand-back (monotonic ns).
        backoff_until: u64,
        backoff_ns: u64,
        last_foreign: u64,
    }

    impl Waiter {
        /// Creates the timer aimed at the calling thread, which must keep SIGALRM blocked for its
        /// whole life: call it on the thread [`super::spawn_monitor_thread`] started, before its
        /// first cycle (a wake-up sent before then is not needed, and one sent after is kept queued
        /// until the wait takes it).
        pub fn new() -> io::Result<Waiter> {
            if !SigSet::thread_get_mask()?.contains(Signal::SIGALRM) {
                return Err(io::Error::other(
                    "the monitor thread must keep SIGALRM blocked",
                ));
            }
            let tid = gettid();
            let timer = ThreadTimer::new(tid).ok();
            MONITOR_TID.store(tid, Ordering::Release);
            Ok(Waiter {
                tid,
                pid: nix::unistd::getpid().as_raw(),
                timer,
                unconsumed: false,
                wakes_answered: WAKES_SENT.load(Ordering::SeqCst),
                backoff_until: 0,
                backoff_ns: 0,
                last_foreign: 0,
            })
        }

        /// Waits until the deadline (monotonic ns; None: no deadline) or a wake-up.
        pub fn wait(&mut self, deadline_ns: Option<u64>) -> Woke {
            let now = now_ns();
            if now < self.backoff_until {
                // A SIGALRM that is not ours was just handed back: leave SIGALRM alone, so that
                // the thread that takes it gets it first, and keep the deadline with a plain sleep.
                // The timer is left as it is (setting it could leave a signal to take out of the
                // queue). Our own signals stay queued for this thread meanwhile.
                let until = deadline_ns.map_or(self.backoff_until, |d| d.min(self.backoff_until));
                std::thread::sleep(Duration::from_nanos(until.saturating_sub(now)));
                return Woke::Other;
            }
            if self.arm(deadline_ns) {
                // A signal of the timer's previous expiry was still queued: take it out now (a
                // wake-up may have merged into it), and let the monitor look again.
                return match self.sigwait(Some(0)) {
                    Woke::Backstop => Woke::Other,
                    w => w,
                };
            }
            let margin = if self.timer.is_some() { BACKSTOP_NS } else { 0 };
            self.sigwait(deadline_ns.map(|d| d.saturating_sub(now).saturating_add(margin)))
        }

        /// Sets the timer for the deadline, or disarms it. Returns true when it had expired
        /// without its signal being taken: that signal is still queued, and stale now.
        fn arm(&mut self, deadline_ns: Option<u64>) -> bool {
            let Some(timer) = self.timer.as_ref() else {
                return false;
            };
            // Absolute on CLOCK_MONOTONIC, the clock of `now_ns`; a deadline already past expires
            // at once; 0 would mean "disarm", hence at least 1.
            let at = match deadline_ns {
                Some(d) => d.max(1),
                None if self.unconsumed => 0,
                None => return false,
            };
            let expired = timer.set(at).unwrap_or(false);
            let stale = expired && self.unconsumed;
            self.unconsumed = at > 0;
            stale
        }

        /// `sigtimedwait` for SIGALRM, at most `timeout_ns` (None: without limit).
        fn sigwait(&mut self, timeout_ns: Option<u64>) -> Woke {
            let timeout = timeout_ns.map(|ns| libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            });
            let timeout_ptr = timeout
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            let set = sigalrm_only();
            // The wake-ups counted before the wait: the signal it takes answers all of them (they
            // were sent before it, and standard signals merge). One counted later may have sent
            // its signal after the one taken here, and stays owed.
            let sent_before = WAKES_SENT.load(Ordering::SeqCst);
            // SAFETY: an all-zero siginfo_t is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a valid sigset, `info` a valid out-pointer, `timeout_ptr` null (wait
            // without limit) or a valid timespec that outlives the call. SIGALRM is blocked in this
            // thread (checked in `new`), as sigtimedwait requires.
            let r = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, timeout_ptr) };
            if r == libc::SIGALRM {
                self.take(&info, sent_before)
            } else if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                Woke::Backstop
            } else {
                Woke::Other
            }
        }

        /// Classifies a SIGALRM this thread took; `sent_before`: [`WAKES_SENT`] before the wait.
        fn take(&mut self, info: &libc::siginfo_t, sent_before: u64) -> Woke {
            let code = info.si_code;
            // SAFETY: for SI_TIMER and SI_QUEUE the sender filled si_value (at the same place in
            // both layouts); it is only read for them.
            let tagged = (code == SI_TIMER || code == SI_QUEUE)
                && unsafe { info.si_value().sival_ptr } as usize == cookie();
            // SAFETY: for SI_USER the kernel filled si_pid (the sender's, or 0 when it dropped the
            // signal's information); it is only read for SI_USER.
            let bare = code == SI_USER && unsafe { info.si_pid() } == 0;
            let ours = tagged
                || (bare
                    && (WAKES_SENT.load(Ordering::SeqCst) > self.wakes_answered
                        || WAKES_IN_FLIGHT.load(Ordering::SeqCst) > 0));
            if ours {
                // Not the count now: a wake-up that sent its signal after this one was taken, and
                // counted itself since, is still owed that signal.
                self.wakes_answered = self.wakes_answered.max(sent_before);
            }
            match (ours, code) {
                (true, SI_TIMER) => {
                    self.unconsumed = false;
                    Woke::Timer
                }
                (true, _) => Woke::Wake,
                (false, _) => {
                    self.hand_back(info);
                    Woke::Foreign
                }
            }
        }

        /// Gives a SIGALRM that is not ours back to the process, then leaves SIGALRM alone a while.
        fn hand_back(&mut self, info: &libc::siginfo_t) {
            FORWARDED.fetch_add(1, Ordering::Relaxed);
            let code = info.si_code;
            // The kernel lets a process queue a siginfo of its own choosing to itself only for
            // negative codes other than SI_TKILL (it refuses to forge kill(2)'s or its own).
            let requeued = code < 0
                && code != SI_TKILL
                // SAFETY: `info` is a valid siginfo_t, read by the kernel only for this call.
                && unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigqueueinfo,
                        self.pid,
                        libc::SIGALRM,
                        info as *const libc::siginfo_t,
                    )
                } == 0;
            if !requeued {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGALRM);
            }
            let now = now_ns();
            self.backoff_ns = if now.saturating_sub(self.last_foreign) < BACKOFF_RESET_NS {
                (self.backoff_ns * 2).clamp(BACKOFF_MIN_NS, BACKOFF_MAX_NS)
            } else {
                BACKOFF_MIN_NS
            };
            self.last_foreign = now;
            self.backoff_until = now.saturating_add(self.backoff_ns);
        }
    }

    impl Drop for Waiter {
        fn drop(&mut self) {
            // Its thread is about to end: its id may be reused by another thread of the process,
            // which must never get a wake-up (it would meet the process's SIGALRM disposition).
            let _ = MONITOR_TID.compare_exchange(self.tid, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Wakes the monitor: queues a SIGALRM carrying our cookie for its thread alone.
    /// Async-signal-safe (`getpid`, `getuid`, `rt_tgsigqueueinfo`).
    pub fn wake() {
        let tid = MONITOR_TID.load(Ordering::Acquire);
        if tid <= 0 {
            return;
        }
        // SAFETY: getpid and getuid cannot fail.
        let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
        // SAFETY: an all-zero siginfo_t is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: QueuedInfo fits in a siginfo_t and needs no stricter alignment (asserted above),
        // so the write stays inside `info`.
        unsafe {
            (&mut info as *mut libc::siginfo_t)
                .cast::<QueuedInfo>()
                .write(QueuedInfo {
                    signo: libc::SIGALRM,
                    errno: 0,
                    code: SI_QUEUE,
                    fields: QueuedFields {
                        pid,
                        uid,
                        value: libc::sigval {
                            sival_ptr: cookie() as *mut libc::c_void,
                        },
                    },
                })
        };
        WAKES_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `info` is a valid siginfo_t, read by the kernel during the call only. The thread
        // group is this process as it is now (in a child forked without `after_fork_child`, the
        // parent's monitor thread is not in it, and the call fails with ESRCH); the thread is the
        // monitor, which keeps SIGALRM blocked and runs until the process ends (its Waiter clears
        // the id before its thread could end).
        unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                tid,
                libc::SIGALRM,
                &info as *const libc::siginfo_t,
            );
        }
        WAKES_SENT.fetch_add(1, Ordering::SeqCst);
        WAKES_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }

    /// In a child made by `fork()`, on its only thread, before any monitor thread runs: the
    /// parent's monitor thread and its timer were not copied. The child's monitor thread, started
    /// next, creates its own.
    pub fn after_fork_child() -> io::Result<()> {
        MONITOR_TID.store(0, Ordering::Release);
        // A thread of the parent may have been inside `wake` at the fork: it is not in the child.
        WAKES_IN_FLIGHT.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// The first watch is registered. Nothing process-wide to install.
    pub fn activate() -> io::Result<()> {
        ACTIVE.store(true, Ordering::Release);
        Ok(())
    }

    /// The last watch is gone: the monitor disarms its timer when it next finds nothing to watch.
    pub fn deactivate() -> io::Result<()> {
        ACTIVE.store(false, Ordering::Release);
        Ok(())
    }

    /// The process is exiting: the monitor disarms its timer when it next looks (and a signal of
    /// its timer can only ever reach the monitor thread, which keeps it blocked).
    pub fn on_exit() {
        wake();
    }

    /// Nothing to do for a loop thread: our signal never reaches it. Returns false (nothing to
    /// undo).
    pub fn shield_loop_thread() -> io::Result<bool> {
        Ok(false)
    }

    /// Nothing to undo (see [`shield_loop_thread`]).
    pub fn unshield_loop_thread() -> io::Result<()> {
        Ok(())
    }

    /// Whether our SIGALRM machinery is in use: a watch is registered, so the monitor's timer may
    /// be armed. (There is no handler to install here; the name is that of the handler platforms.)
    pub fn is_installed() -> bool {
        ACTIVE.load(Ordering::Acquire)
    }

    /// How many foreign SIGALRMs the monitor took and handed back to the process.
    pub fn forwarded_count() -> u64 {
        FORWARDED.load(Ordering::Relaxed)
    }
}

#[cfg(not(target_os = "linux"))]
mod itimer {
    /// A handler of ours takes the timer's signal on the monitor thread, which leaves it unblocked.
    pub(super) const MONITOR_BLOCKS_SIGALRM: bool = false;

    /// The self-pipe must exist before the monitor thread starts, so that no wake-up is lost.
    pub(super) fn before_spawn() -> std::io::Result<()> {
        wake_read_fd().map(drop)
    }

    use std::io;
    use std::os::raw::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use nix::poll::{poll, PollFd, PollFlags};
    use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

    use super::Woke;
    use crate::clock::now_ns;

    extern "C" {
        // Neither nix 0.26 nor libc 0.2.139 (for linux-gnu) declares setitimer; its C signature is
        // stable POSIX, and `libc::itimerval` has the platform's layout.
        fn setitimer(which: c_int, new: *const libc::itimerval, old: *mut libc::itimerval)
            -> c_int;
    }

    /// `si_code` of a signal sent by the kernel itself, which is how Linux delivers ITIMER_REAL
    /// expiry.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SI_KERNEL: c_int = 0x80;

    /// The self-pipe's read end (-1: not created yet). Non-blocking and close-on-exec, like the
    /// write end.
    static READ_FD: AtomicI32 = AtomicI32::new(-1);
    /// The write end, read by the handler (an atomic load is async-signal-safe).
    static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
    /// Serialises creating (and, in a forked child, re-creating) the pipe.
    static PIPE_INIT: Mutex<()> = Mutex::new(());
    /// Our handler is installed.
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    /// The monotonic deadline the timer is armed for (0: disarmed).
    static ARMED_AT: AtomicU64 = AtomicU64::new(0);
    /// SIGALRMs our handler passed on to the previous disposition (diagnostics and tests).
    static FORWARDED: AtomicU64 = AtomicU64::new(0);

    /// The previous disposition, as the handler needs it: 0 = SIG_DFL, 1 = SIG_IGN, otherwise the
    /// handler's address. `PREV_SIGINFO` tells which calling convention it has.
    static PREV_HANDLER: AtomicUsize = AtomicUsize::new(0);
    static PREV_SIGINFO: AtomicBool = AtomicBool::new(false);
    /// The full previous action, restored on uninstall (only touched from normal threads).
    static PREV_ACTION: Mutex<Option<SigAction>> = Mutex::new(None);
    /// Serialises install, arming and uninstall (normal threads only; the handler never takes it),
    /// so that the monitor can never arm the timer after the last detector restored SIG_DFL.
    static CONTROL: Mutex<()> = Mutex::new(());

    fn control() -> std::sync::MutexGuard<'static, ()> {
        lock_or_recover(&CONTROL, "alarm::CONTROL")
    }

    fn lock_prev() -> std::sync::MutexGuard<'static, Option<SigAction>> {
        lock_or_recover(&PREV_ACTION, "alarm::PREV_ACTION")
    }

    fn set_nonblocking_cloexec(fd: c_int) -> nix::Result<()> {
        let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(())
    }

    /// The self-pipe's read end (created on first use).
    pub fn wake_read_fd() -> io::Result<c_int> {
        let fd = READ_FD.load(Ordering::Acquire);
        if fd >= 0 {
            return Ok(fd);
        }
        let _g = lock_or_recover(&PIPE_INIT, "alarm::PIPE_INIT");
        let fd = READ_FD.load(Ordering::Acquire);
        if fd >= 0 {
            return Ok(fd);
        }
        let (r, w) = new_pipe()?;
        WAKE_FD.store(w, Ordering::Release);
        READ_FD.store(r, Ordering::Release);
        Ok(r)
    }

    fn new_pipe() -> io::Result<(c_int, c_int)> {
        let (r, w) = nix::unistd::pipe()?;
        if let Err(e) = set_nonblocking_cloexec(r).and_then(|()| set_nonblocking_cloexec(w)) {
            let _ = nix::unistd::close(r);
            let _ = nix::unistd::close(w);
            return Err(e.into());
        }
        Ok((r, w))
    }

    /// In a child made by `fork()`, on its only thread, before any monitor thread runs: the pipe is
    /// shared with the parent (a wake-up here would wake the parent's monitor), so the child gets
    /// its own; the interval timer is not inherited, so nothing is armed. The SIGALRM disposition
    /// and the remembered previous one are inherited unchanged.
    pub fn after_fork_child() -> io::Result<()> {
        let _g = lock_or_recover(&PIPE_INIT, "alarm::PIPE_INIT");
        ARMED_AT.store(0, Ordering::Release);
        let old_r = READ_FD.swap(-1, Ordering::AcqRel);
        let old_w = WAKE_FD.swap(-1, Ordering::AcqRel);
        for fd in [old_r, old_w] {
            if fd >= 0 {
                let _ = nix::unistd::close(fd);
            }
        }
        if old_r < 0 {
            return Ok(());
        }
        let (r, w) = new_pipe()?;
        WAKE_FD.store(w, Ordering::Release);
        READ_FD.store(r, Ordering::Release);
        Ok(())
    }

    /// Wakes the monitor. Async-signal-safe: one `write(2)` of one byte to a non-blocking pipe.
    #[inline]
    pub fn wake() {
        let fd = WAKE_FD.load(Ordering::Acquire);
        if fd >= 0 {
            // A full pipe means the monitor is already due to wake: the byte may be dropped.
            let _ = nix::unistd::write(fd, &[1u8]);
        }
    }

    /// Reads and discards pending wake bytes.
    pub fn drain_wakes(fd: c_int) {
        let mut buf = [0u8; 64];
        while let Ok(n) = nix::unistd::read(fd, &mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn errno_location() -> *mut c_int {
        // SAFETY: returns the calling thread's errno slot; always valid.
        unsafe { libc::__errno_location() }
    }

    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    fn errno_location() -> *mut c_int {
        // SAFETY: returns the calling thread's errno slot; always valid.
        unsafe { libc::__error() }
    }

    /// Whether this SIGALRM came from our interval timer rather than from kill(2) or another
    /// source.
    fn sent_by_our_timer(info: *const libc::siginfo_t) -> bool {
        let armed = ARMED_AT.load(Ordering::Acquire);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; null is
            // checked.
            let code = if info.is_null() {
                0
            } else {
                unsafe { (*info).si_code }
            };
            let _ = armed;
            code == SI_KERNEL
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            // No reliable si_code for timer expiry: ours if the timer was armed for about now.
            // clock_gettime is async-signal-safe (POSIX.1-2008).
            let _ = info;
            armed != 0 && now_ns().saturating_add(2_000_000) >= armed
        }
    }

    extern "C" fn on_sigalrm(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        // Only async-signal-safe work below: atomics, write(2), sigaction(2), raise(3).
        let errno = errno_location();
        // SAFETY: errno_location() is this thread's errno; saved and restored so that the
        // interrupted code never sees our write's errno.
        let saved = unsafe { *errno };
        if sent_by_our_timer(info) {
            ARMED_AT.store(0, Ordering::Release);
            wake();
        } else {
            FORWARDED.fetch_add(1, Ordering::Relaxed);
            forward(sig, info, ctx);
        }
        // SAFETY: see above.
        unsafe { *errno = saved };
    }

    /// Passes a SIGALRM that is not ours to the disposition that was there before us.
    fn forward(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        match PREV_HANDLER.load(Ordering::Acquire) {
            0 => {
                // SIG_DFL terminates the process: do what would have happened without us. Reset the
                // disposition and re-raise; the signal is blocked while we run and is delivered,
                // with its default action, when we return. SAFETY: sigaction(2) and raise(3) are
                // async-signal-safe; the zeroed struct is a valid SIG_DFL action with an empty
                // mask.
                unsafe {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                    libc::raise(sig);
                }
            }
            1 => {}
            addr => {
                if PREV_SIGINFO.load(Ordering::Acquire) {
                    // SAFETY: `addr` was read from the previous sigaction with SA_SIGINFO set, so
                    // it is a three-argument handler; we call it as the kernel would have.
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                        unsafe { std::mem::transmute(addr) };
                    f(sig, info, ctx);
                } else {
                    // SAFETY: without SA_SIGINFO the previous handler takes the signal number only.
                    let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(addr) };
                    f(sig);
                }
            }
        }
    }

    fn our_handler_addr() -> usize {
        on_sigalrm as *const () as usize
    }

    fn our_action() -> SigAction {
        SigAction::new(
            SigHandler::SigAction(on_sigalrm),
            SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
            SigSet::empty(),
        )
    }

    fn remember_previous(prev: SigAction) {
        let (addr, siginfo) = match prev.handler() {
            SigHandler::SigDfl => (0, false),
            SigHandler::SigIgn => (1, false),
            SigHandler::Handler(f) => (f as usize, false),
            SigHandler::SigAction(f) => (f as usize, true),
        };
        PREV_SIGINFO.store(siginfo, Ordering::Release);
        PREV_HANDLER.store(addr, Ordering::Release);
        *lock_prev() = Some(prev);
    }

    fn current_handler_is_ours() -> bool {
        // SAFETY: querying with a null new action changes nothing; `cur` is a valid out-pointer.
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut cur) != 0 {
                return false;
            }
            cur.sa_sigaction == our_handler_addr()
        }
    }

    /// Installs our SIGALRM handler, remembering the previous disposition.
    pub fn install() -> io::Result<()> {
        wake_read_fd()?;
        let _c = control();
        if INSTALLED.load(Ordering::Acquire) && current_handler_is_ours() {
            return Ok(());
        }
        // SAFETY: our handler is async-signal-safe (see on_sigalrm) and stays in memory for the
        // life of the process (this library is never unloaded while a handler may run: see
        // uninstall).
        let prev = unsafe { signal::sigaction(Signal::SIGALRM, &our_action()) }?;
        if let SigHandler::SigAction(f) = prev.handler() {
            if f as usize == our_handler_addr() {
                // Already ours (a racing install): keep the remembered previous action.
                INSTALLED.store(true, Ordering::Release);
                return Ok(());
            }
        }
        remember_previous(prev);
        INSTALLED.store(true, Ordering::Release);
        Ok(())
    }

    /// Re-installs our handler if other code replaced it; returns true when it had been replaced.
    pub fn ensure_installed() -> bool {
        let _c = control();
        if !INSTALLED.load(Ordering::Acquire) || current_handler_is_ours() {
            return false;
        }
        // SAFETY: as in install.
        if let Ok(prev) = unsafe { signal::sigaction(Signal::SIGALRM, &our_action()) } {
            remember_previous(prev);
        }
        true
    }

    /// Arms the one-shot real-time timer to fire at the monotonic instant `deadline_ns`. Does
    /// nothing unless our handler is installed (a timer firing into a restored SIG_DFL would kill
    /// the process).
    pub fn arm_at(deadline_ns: u64) -> io::Result<()> {
        let _c = control();
        if !INSTALLED.load(Ordering::Acquire) {
            return Ok(());
        }
        let delta = deadline_ns.saturating_sub(now_ns()).max(1_000);
        ARMED_AT.store(deadline_ns, Ordering::Release);
        set_timer(delta)
    }

    /// Stops the timer.
    pub fn disarm() -> io::Result<()> {
        ARMED_AT.store(0, Ordering::Release);
        set_timer(0)
    }

    fn set_timer(delta_ns: u64) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: (delta_ns / 1_000_000_000) as libc::time_t,
            tv_usec: ((delta_ns % 1_000_000_000) / 1_000) as libc::suseconds_t,
        };
        // A nonzero value under 1 µs would be rounded to 0, which disarms: keep at least 1 µs.
        let tv = if delta_ns > 0 && tv.tv_sec == 0 && tv.tv_usec == 0 {
            libc::timeval {
                tv_sec: 0,
                tv_usec: 1,
            }
        } else {
            tv
        };
        let new = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: tv,
        };
        // SAFETY: `new` is a valid itimerval; a null old value is allowed.
        if unsafe { setitimer(libc::ITIMER_REAL, &new, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Disarms the timer, consumes a SIGALRM of ours that may still be pending, and restores the
    /// previous disposition. A foreign SIGALRM consumed on the way is re-sent to it.
    pub fn uninstall() -> io::Result<()> {
        let _c = control();
        if !INSTALLED.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        disarm()?;
        // Block SIGALRM here while we look for a pending one: it must not reach SIG_DFL after
        // restore.
        let mut only_alrm = SigSet::empty();
        only_alrm.add(Signal::SIGALRM);
        let old_mask = only_alrm.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let mut foreign = 0u32;
        while let Some(ours) = take_pending_sigalrm() {
            if !ours {
                foreign += 1;
            }
        }
        let prev = lock_prev().take();
        let result = match prev {
            // A handler installed after ours (e.g. libuv's for process.on('SIGALRM')) stays:
            // restoring the older one would silently drop it.
            Some(_) if !current_handler_is_ours() => Ok(()),
            // SAFETY: restoring the action that was there before ours.
            Some(p) => unsafe { signal::sigaction(Signal::SIGALRM, &p) }.map(|_| ()),
            None => Ok(()),
        };
        old_mask.thread_set_mask()?;
        for _ in 0..foreign {
            signal::kill(nix::unistd::getpid(), Signal::SIGALRM)?;
        }
        result.map_err(io::Error::from)
    }

    /// Consumes one pending SIGALRM (blocked in this thread); Some(true) when our timer sent it.
    fn take_pending_sigalrm() -> Option<bool> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut set = SigSet::empty();
            set.add(Signal::SIGALRM);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `set` is a valid sigset, `info` a valid out-pointer, `zero` a valid timeout.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, &zero) };
            if r == libc::SIGALRM {
                Some(info.si_code == SI_KERNEL)
            } else {
                None
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            // SAFETY: sigpending fills a valid sigset.
            let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe { libc::sigpending(&mut pending) };
            if unsafe { libc::sigismember(&pending, libc::SIGALRM) } == 1 {
                let mut set = SigSet::empty();
                set.add(Signal::SIGALRM);
                // It is pending and blocked here, so sigwait returns at once. No siginfo: assume
                // ours.
                let _ = set.wait();
                Some(true)
            } else {
                None
            }
        }
    }

    /// Blocks SIGALRM in the calling thread; returns whether it was unblocked before (so that
    /// [`unblock_in_this_thread`] restores exactly what was there).
    ///
    /// Loop threads block it so that our timer never interrupts their `epoll_wait` (libuv then
    /// loses idle-time accounting for that wait).
    pub fn block_in_this_thread() -> io::Result<bool> {
        let mut only_alrm = SigSet::empty();
        only_alrm.add(Signal::SIGALRM);
        let old = only_alrm.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        Ok(!old.contains(Signal::SIGALRM))
    }

    pub fn unblock_in_this_thread() -> io::Result<()> {
        let mut only_alrm = SigSet::empty();
        only_alrm.add(Signal::SIGALRM);
        signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&only_alrm), None)?;
        Ok(())
    }

    /// Whether our handler is installed now.
    pub fn is_installed() -> bool {
        INSTALLED.load(Ordering::Acquire)
    }

    /// How many SIGALRMs were passed on to the previous disposition.
    pub fn forwarded_count() -> u64 {
        FORWARDED.load(Ordering::Relaxed)
    }

    /// The monitor's wait: arm the interval timer for the deadline (re-installing our handler first
    /// if other code replaced it), then poll the self-pipe, with a poll timeout a little past the
    /// deadline as the backstop should a SIGALRM ever be lost.
    pub struct Waiter {
        fd: c_int,
    }

    /// How far past the deadline the poll backstop lies.
    const BACKSTOP_MS: i32 = 2;

    impl Waiter {
        /// On the monitor thread (started by [`super::spawn_monitor_thread`], SIGALRM unblocked).
        pub fn new() -> io::Result<Waiter> {
            Ok(Waiter {
                fd: wake_read_fd()?,
            })
        }

        /// Waits until the deadline (monotonic ns; None: no deadline) or a wake-up.
        pub fn wait(&mut self, deadline_ns: Option<u64>) -> Woke {
            let timeout_ms = match deadline_ns {
                None => {
                    let _ = disarm();
                    -1
                }
                Some(next) => {
                    ensure_installed();
                    let _ = arm_at(next);
                    let wait = next.saturating_sub(now_ns());
                    i32::try_from(wait.div_ceil(1_000_000))
                        .unwrap_or(i32::MAX - BACKSTOP_MS)
                        .saturating_add(BACKSTOP_MS)
                }
            };
            let mut fds = [PollFd::new(self.fd, PollFlags::POLLIN)];
            let woke = match poll(&mut fds, timeout_ms) {
                Ok(0) if timeout_ms >= 0 => Woke::Backstop,
                Ok(_) => Woke::Wake,
                Err(_) => Woke::Other,
            };
            drain_wakes(self.fd);
            woke
        }
    }

    /// The first watch is registered: install our handler.
    pub fn activate() -> io::Result<()> {
        install()
    }

    /// The last watch is gone: disarm, and restore the previous disposition.
    pub fn deactivate() -> io::Result<()> {
        uninstall()
    }

    /// The process is exiting: no deadline is wanted any more.
    pub fn on_exit() {
        let _ = disarm();
    }

    /// Loop threads block SIGALRM, so that the process-directed timer signal goes to the monitor
    /// thread rather than interrupt their `epoll_wait` (libuv then loses idle-time accounting for
    /// that wait). Returns whether it was unblocked before (see [`unshield_loop_thread`]).
    pub fn shield_loop_thread() -> io::Result<bool> {
        block_in_this_thread()
    }

    /// Undoes [`shield_loop_thread`] when it returned true.
    pub fn unshield_loop_thread() -> io::Result<()> {
        unblock_in_this_thread()
    }
}
