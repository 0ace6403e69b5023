//! A SIGALRM that only the monitor's wait could take (every other thread blocks it) is handed back
//! to the process, unchanged where the kernel allows it, until a thread takes it; the monitor keeps
//! its deadlines meanwhile. Run in a forked child, whose only thread's mask the test controls.
#![cfg(target_os = "linux")]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_helpers_core::alarm::{self, Waiter, Woke};
use loop_helpers_core::clock::now_ns;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

extern "C" {
    // glibc's; not declared by libc 0.2.139. `union sigval` is one pointer, passed as one.
    fn sigqueue(pid: libc::pid_t, sig: c_int, value: libc::sigval) -> c_int;
}

const SI_USER: c_int = 0;
const SI_QUEUE: c_int = -1;

static APP_SIGNALS: AtomicU32 = AtomicU32::new(0);
static LAST_CODE: AtomicI32 = AtomicI32::new(i32::MIN);
static LAST_VALUE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn app_handler(_: c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let info = unsafe { &*info };
    LAST_CODE.store(info.si_code, Ordering::SeqCst);
    if info.si_code == SI_QUEUE {
        LAST_VALUE.store(
            // SAFETY: si_value is only meaningful for SI_QUEUE, and only read then.
            unsafe { info.si_value().sival_ptr } as usize,
            Ordering::SeqCst,
        );
    }
    APP_SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn wait_until(limit: Duration, pred: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    pred()
}

fn sigalrm_only() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGALRM);
    s
}

/// The child's checks; the exit code names the first that failed.
fn child() -> i32 {
    let action = SigAction::new(
        SigHandler::SigAction(app_handler),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores into atomics.
    if unsafe { signal::sigaction(Signal::SIGALRM, &action) }.is_err() {
        return 20;
    }
    // This thread (the only one besides the waiter) refuses SIGALRM for now.
    if sigalrm_only().thread_block().is_err() {
        return 21;
    }
    let returns = Arc::new(AtomicU64::new(0));
    let wakes = Arc::new(AtomicU64::new(0));
    let foreign = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadlines = Arc::new(AtomicBool::new(true));
    {
        let deadlines = deadlines.clone();
        let (returns, wakes, foreign, stop) = (
            returns.clone(),
            wakes.clone(),
            foreign.clone(),
            stop.clone(),
        );
        if alarm::spawn_monitor_thread("test-waiter", move || {
            let mut w = Waiter::new().unwrap();
            while !stop.load(Ordering::SeqCst) {
                returns.fetch_add(1, Ordering::SeqCst);
                let d = deadlines
                    .load(Ordering::SeqCst)
                    .then(|| now_ns() + 1_000_000);
                match w.wait(d) {
                    Woke::Wake => wakes.fetch_add(1, Ordering::SeqCst),
                    Woke::Foreign => foreign.fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
            }
        })
        .is_err()
        {
            return 22;
        }
    }
    std::thread::sleep(Duration::from_millis(20));

    // kill(2): the waiter is the only thread that can take it. It is handed back again and again
    // (the waiter backs off meanwhile), never lost and never delivered twice.
    signal::kill(nix::unistd::getpid(), Signal::SIGALRM).unwrap();
    if !wait_until(Duration::from_secs(2), || {
        foreign.load(Ordering::SeqCst) >= 2
    }) {
        return 1;
    }
    // The waiter keeps its 1 ms deadlines meanwhile (with a plain sleep while it backs off: a
    // timer signal queued before the timer was armed again is dropped by the kernel) and takes its
    // wake-ups.
    let returns_before = returns.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    if returns.load(Ordering::SeqCst) < returns_before + 20 {
        return 2;
    }
    // Without a deadline, a wake-up is taken as such (before the foreign signal: the kernel
    // dequeues the signals aimed at the thread first). (With 1 ms deadlines it merges into the
    // timer's signal, and the waiter returns all the same.)
    deadlines.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    let wakes_before = wakes.load(Ordering::SeqCst);
    alarm::wake();
    if !wait_until(Duration::from_secs(2), || {
        wakes.load(Ordering::SeqCst) > wakes_before
    }) {
        return 3;
    }
    if APP_SIGNALS.load(Ordering::SeqCst) != 0 {
        return 4;
    }
    // Now this thread takes SIGALRM: the application gets the signal, once, as kill(2) sent it.
    if sigalrm_only().thread_unblock().is_err() {
        return 23;
    }
    if !wait_until(Duration::from_secs(2), || {
        APP_SIGNALS.load(Ordering::SeqCst) == 1
    }) {
        return 5;
    }
    std::thread::sleep(Duration::from_millis(100));
    if APP_SIGNALS.load(Ordering::SeqCst) != 1 {
        return 6;
    }
    if LAST_CODE.load(Ordering::SeqCst) != SI_USER {
        return 7;
    }

    // sigqueue(3) with a value: handed back with its whole siginfo (rt_sigqueueinfo).
    if sigalrm_only().thread_block().is_err() {
        return 24;
    }
    let handed_back = foreign.load(Ordering::SeqCst);
    let value = libc::sigval {
        sival_ptr: 4242 as *mut c_void,
    };
    // SAFETY: plain values; the signal goes to this process, whose handler is the test's.
    if unsafe { sigqueue(libc::getpid(), libc::SIGALRM, value) } != 0 {
        return 25;
    }
    if !wait_until(Duration::from_secs(2), || {
        foreign.load(Ordering::SeqCst) > handed_back
    }) {
        return 8;
    }
    if sigalrm_only().thread_unblock().is_err() {
        return 26;
    }
    if !wait_until(Duration::from_secs(2), || {
        APP_SIGNALS.load(Ordering::SeqCst) == 2
    }) {
        return 9;
    }
    std::thread::sleep(Duration::from_millis(50));
    if APP_SIGNALS.load(Ordering::SeqCst) != 2
        || LAST_CODE.load(Ordering::SeqCst) != SI_QUEUE
        || LAST_VALUE.load(Ordering::SeqCst) != 4242
    {
        return 10;
    }
    if alarm::forwarded_count() != foreign.load(Ordering::SeqCst) {
        return 11;
    }
    stop.store(true, Ordering::SeqCst);
    0
}

#[test]
fn a_sigalrm_that_only_the_waiter_could_take_is_handed_back_until_a_thread_takes_it() {
    // The child starts with this thread alone. Its mask is what the test sets; the waiter thread is
    // started as the monitor's is.
    let _ = SigSet::empty().thread_swap_mask(SigmaskHow::SIG_SETMASK);
    // SAFETY: the test harness's other threads are idle; the child runs only this thread and the
    // waiter it starts, and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(child).unwrap_or(30);
        // SAFETY: ends the child without running the test harness's teardown.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child check (1: not taken by the waiter, 2: deadlines stopped, 3: wake-up lost, 4: \
         delivered while blocked, 5: never delivered, 6: delivered twice, 7: kill(2)'s si_code \
         changed, 8-10: sigqueue not handed back whole, 11: forwarded_count, 20+: setup)"
    );
}
