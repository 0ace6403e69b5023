//! The interval-timer fallback (platforms without `SIGEV_THREAD_ID`, e.g. macOS) against the real
//! kernel: handler, chaining, self-pipe. One test function: signal dispositions and the interval
//! timer are process-wide, and cargo runs test functions of one binary in parallel. (Linux uses a
//! timer aimed at the monitor thread instead: see tests/alarm.rs.)

#![cfg(not(target_os = "linux"))]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use loop_helpers_core::alarm;
use loop_helpers_core::clock::now_ns;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

static PREVIOUS_HANDLER_CALLS: AtomicU32 = AtomicU32::new(0);

extern "C" fn previous_handler(_: c_int) {
    PREVIOUS_HANDLER_CALLS.fetch_add(1, Ordering::SeqCst);
}

fn wait_for_wake(fd: c_int, ms: i32) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let woke = poll(&mut fds, ms).unwrap() == 1;
    alarm::drain_wakes(fd);
    woke
}

fn wait_until(pred: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn timer_wakes_the_pipe_and_foreign_signals_reach_the_previous_handler() {
    // A handler that was there before us.
    let prev = SigAction::new(
        SigHandler::Handler(previous_handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the test handler only increments an atomic.
    unsafe { signal::sigaction(Signal::SIGALRM, &prev) }.unwrap();

    alarm::install().unwrap();
    assert!(alarm::is_installed());
    let fd = alarm::wake_read_fd().unwrap();
    alarm::drain_wakes(fd);

    // Our timer: the pipe wakes, the previous handler is not called.
    let armed = now_ns();
    alarm::arm_at(armed + 20_000_000).unwrap();
    assert!(wait_for_wake(fd, 1000), "the timer did not wake the pipe");
    let late = now_ns() - armed;
    assert!(late >= 19_000_000, "woke too early: {late} ns");
    assert_eq!(PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst), 0);

    // A SIGALRM from kill(2) goes to the previous handler while ours is installed.
    signal::kill(nix::unistd::getpid(), Signal::SIGALRM).unwrap();
    assert!(wait_until(
        || PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst) == 1
    ));
    assert_eq!(alarm::forwarded_count(), 1);

    // Someone replaces our handler (as libuv does for process.on('SIGALRM')): we notice and put
    // ourselves in front again, forwarding to the newcomer.
    // SAFETY: as above.
    unsafe { signal::sigaction(Signal::SIGALRM, &prev) }.unwrap();
    assert!(alarm::ensure_installed());
    assert!(!alarm::ensure_installed());
    alarm::arm_at(now_ns() + 5_000_000).unwrap();
    assert!(wait_for_wake(fd, 1000));
    assert_eq!(PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst), 1);

    // Uninstall restores the previous handler: it now gets every SIGALRM, and a timer that was
    // still armed is cancelled.
    alarm::arm_at(now_ns() + 5_000_000).unwrap();
    alarm::uninstall().unwrap();
    assert!(!alarm::is_installed());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst), 1);
    signal::kill(nix::unistd::getpid(), Signal::SIGALRM).unwrap();
    assert!(wait_until(
        || PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst) == 2
    ));

    // A handler installed after ours (libuv's, for process.on('SIGALRM')) survives uninstall: the
    // older action is not restored over it. The timer is off, and kill(2) reaches the newcomer.
    alarm::install().unwrap();
    // SAFETY: as above.
    unsafe { signal::sigaction(Signal::SIGALRM, &prev) }.unwrap();
    let newcomer_calls = PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst);
    alarm::uninstall().unwrap();
    signal::kill(nix::unistd::getpid(), Signal::SIGALRM).unwrap();
    assert!(wait_until(
        || PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst) == newcomer_calls + 1
    ));
    // Arming after uninstall does nothing (a timer firing into SIG_DFL would kill the process).
    alarm::arm_at(now_ns() + 1_000_000).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        PREVIOUS_HANDLER_CALLS.load(Ordering::SeqCst),
        newcomer_calls + 1
    );

    // Blocking in a thread reports whether it was unblocked before.
    assert!(alarm::block_in_this_thread().unwrap());
    assert!(!alarm::block_in_this_thread().unwrap());
    alarm::unblock_in_this_thread().unwrap();
}
