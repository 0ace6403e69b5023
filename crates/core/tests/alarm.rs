//! The deadline signal against the real kernel (Linux): a timer aimed at one thread and taken there
//! with `sigtimedwait`, wake-ups aimed at the same thread, and every SIGALRM that is not ours still
//! reaching the process's own handler. One test function: signal dispositions are process-wide.
#![cfg(target_os = "linux")]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_helpers_core::alarm::{self, Waiter, Woke};
use loop_helpers_core::clock::now_ns;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

extern "C" {
    // Declared by neither nix 0.26 nor libc 0.2.139 for linux-gnu; stable POSIX signatures.
    fn setitimer(which: c_int, new: *const libc::itimerval, old: *mut libc::itimerval) -> c_int;
}

/// SIGALRMs the application's handler got.
static APP_SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn app_handler(_: c_int) {
    APP_SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn set_disposition(h: SigHandler) {
    // SAFETY: the test handler only increments an atomic; SIG_DFL and SIG_IGN need nothing.
    unsafe {
        signal::sigaction(
            Signal::SIGALRM,
            &SigAction::new(h, SaFlags::SA_RESTART, SigSet::empty()),
        )
    }
    .unwrap();
}

fn wait_until(limit: Duration, pred: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    pred()
}

/// Counts of what the waiter's waits returned.
#[derive(Default)]
struct Counts {
    timer: AtomicU64,
    wake: AtomicU64,
    backstop: AtomicU64,
    foreign: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn add(&self, w: Woke) {
        match w {
            Woke::Timer => &self.timer,
            Woke::Wake => &self.wake,
            Woke::Backstop => &self.backstop,
            Woke::Foreign => &self.foreign,
            Woke::Other => &self.other,
        }
        .fetch_add(1, Ordering::SeqCst);
    }
}

enum Command {
    /// One wait; the answer is what it returned and when.
    Wait(Option<u64>),
    /// Waits for deadlines `step` apart, as the monitor does during a block, until `stop` is set.
    Cycle { step_ns: u64, stop: Arc<AtomicBool> },
}

/// A thread started as the monitor thread is, with a `Waiter` of its own.
fn start_waiter(counts: Arc<Counts>) -> (mpsc::Sender<Command>, mpsc::Receiver<(Woke, u64)>) {
    let (tx, rx) = mpsc::channel::<Command>();
    let (rtx, rrx) = mpsc::channel();
    alarm::spawn_monitor_thread("test-waiter", move || {
        let mut w = Waiter::new().expect("Waiter::new on a thread that blocks SIGALRM");
        for c in rx {
            match c {
                Command::Wait(d) => {
                    let r = w.wait(d);
                    counts.add(r);
                    rtx.send((r, now_ns())).unwrap();
                }
                Command::Cycle { step_ns, stop } => {
                    while !stop.load(Ordering::SeqCst) {
                        counts.add(w.wait(Some(now_ns() + step_ns)));
                    }
                    rtx.send((Woke::Other, now_ns())).unwrap();
                }
            }
        }
    })
    .unwrap();
    (tx, rrx)
}

#[test]
fn our_signal_reaches_the_waiter_alone_and_every_other_sigalrm_reaches_the_application() {
    set_disposition(SigHandler::Handler(app_handler));
    let counts = Arc::new(Counts::default());
    let (cmd, answers) = start_waiter(counts.clone());
    let answer = || {
        answers
            .recv_timeout(Duration::from_secs(5))
            .expect("the waiter answers")
    };

    // The waiter's thread keeps every asynchronous signal blocked; its creator's mask is as before.
    assert!(!SigSet::thread_get_mask().unwrap().contains(Signal::SIGALRM));

    // The timer: on time, to the waiter only.
    let armed = now_ns();
    cmd.send(Command::Wait(Some(armed + 20_000_000))).unwrap();
    let (woke, at) = answer();
    assert_eq!(woke, Woke::Timer);
    let late_ms = (at as f64 - (armed + 20_000_000) as f64) / 1e6;
    assert!(late_ms >= -0.1, "woke {late_ms} ms before the deadline");
    assert!(late_ms < 100.0, "woke {late_ms} ms after the deadline");
    // A wake-up, with no deadline.
    cmd.send(Command::Wait(None)).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    alarm::wake();
    assert_eq!(answer().0, Woke::Wake);
    // A wake-up sent before the wait is kept until it.
    alarm::wake();
    cmd.send(Command::Wait(Some(now_ns() + 1_000_000_000)))
        .unwrap();
    assert_eq!(answer().0, Woke::Wake);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        APP_SIGNALS.load(Ordering::SeqCst),
        0,
        "the application got our signal"
    );

    // A wake-up that merged into a queued signal of the timer is not lost when the timer is set
    // again (the kernel drops a timer's signal dequeued after the timer was set again).
    for next in [None, Some(10_000_000_000)] {
        cmd.send(Command::Wait(Some(now_ns() + 2_000_000))).unwrap();
        alarm::wake();
        assert_eq!(answer().0, Woke::Wake);
        std::thread::sleep(Duration::from_millis(10)); // the timer expires: its signal is queued
        alarm::wake(); // merges into it
        cmd.send(Command::Wait(next.map(|n| now_ns() + n))).unwrap();
        let (woke, _) = answers
            .recv_timeout(Duration::from_secs(2))
            .expect("a wake-up merged into a stale timer signal was lost");
        assert!(
            matches!(woke, Woke::Timer | Woke::Wake | Woke::Other),
            "{woke:?}"
        );
    }

    // Whatever the disposition (SIG_DFL: libuv restores it when the last listener goes; SIG_IGN
    // discards what reaches it), our timer wakes the waiter and nothing else happens.
    for h in [SigHandler::SigDfl, SigHandler::SigIgn] {
        set_disposition(h);
        cmd.send(Command::Wait(Some(now_ns() + 5_000_000))).unwrap();
        assert_eq!(answer().0, Woke::Timer);
        alarm::wake();
        cmd.send(Command::Wait(None)).unwrap();
        assert_eq!(answer().0, Woke::Wake);
    }
    set_disposition(SigHandler::Handler(app_handler));
    // A wait without a deadline disarms the timer of the previous one: nothing comes.
    cmd.send(Command::Wait(Some(now_ns() + 30_000_000)))
        .unwrap();
    alarm::wake();
    assert_eq!(answer().0, Woke::Wake);
    cmd.send(Command::Wait(None)).unwrap();
    assert!(answers.recv_timeout(Duration::from_millis(80)).is_err());
    alarm::wake();
    assert_eq!(answer().0, Woke::Wake);

    // The waiter now waits for deadlines 200 µs apart, as the monitor does during a block, while
    // the application's SIGALRMs arrive: kill(2) (process.kill), an interval timer (alarm(2)), each
    // after the previous one was handled (standard signals do not queue). Every one of them reaches
    // the application's handler exactly once, whether or not the waiter dequeued it first.
    let stop = Arc::new(AtomicBool::new(false));
    cmd.send(Command::Cycle {
        step_ns: 200_000,
        stop: stop.clone(),
    })
    .unwrap();
    let before = APP_SIGNALS.load(Ordering::SeqCst);
    let forwarded_before = alarm::forwarded_count();
    let kills = 300;
    for i in 0..kills {
        signal::kill(nix::unistd::getpid(), Signal::SIGALRM).unwrap();
        assert!(
            wait_until(Duration::from_secs(2), || APP_SIGNALS
                .load(Ordering::SeqCst)
                == before + i + 1),
            "kill {i} did not reach the application"
        );
    }
    let itimers = 20;
    for i in 0..itimers {
        let new = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: 2_000,
            },
        };
        assert_eq!(
            // SAFETY: `new` is a valid itimerval; a null old value is allowed.
            unsafe { setitimer(libc::ITIMER_REAL, &new, std::ptr::null_mut()) },
            0
        );
        assert!(
            wait_until(Duration::from_secs(2), || {
                APP_SIGNALS.load(Ordering::SeqCst) == before + kills + i + 1
            }),
            "interval timer {i} did not reach the application"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    answer();
    assert_eq!(
        APP_SIGNALS.load(Ordering::SeqCst),
        before + kills + itimers,
        "extra deliveries"
    );
    let handed_back = alarm::forwarded_count() - forwarded_before;
    assert_eq!(handed_back, counts.foreign.load(Ordering::SeqCst));
    eprintln!(
        "while cycling: {} timer, {} other wake-ups; {handed_back} of {} foreign SIGALRMs \
         taken by the waiter and handed back",
        counts.timer.load(Ordering::SeqCst),
        counts.other.load(Ordering::SeqCst),
        kills + itimers,
    );
    assert!(counts.timer.load(Ordering::SeqCst) > 100);
    // The timer kept every deadline: the wait's backstop timeout never had to.
    assert_eq!(counts.backstop.load(Ordering::SeqCst), 0);

    // Loop threads need no shield from a signal that never reaches them: their mask stays as is.
    let mask = SigSet::thread_get_mask().unwrap();
    assert!(!alarm::shield_loop_thread().unwrap());
    assert_eq!(
        SigSet::thread_get_mask().unwrap().contains(Signal::SIGALRM),
        mask.contains(Signal::SIGALRM)
    );
    alarm::unshield_loop_thread().unwrap();

    // Waiter::new refuses a thread that would let SIGALRM meet the process's disposition.
    let mut unblocked = SigSet::empty();
    unblocked.add(Signal::SIGALRM);
    unblocked.thread_swap_mask(SigmaskHow::SIG_UNBLOCK).unwrap();
    assert!(std::thread::spawn(|| Waiter::new().is_err())
        .join()
        .unwrap());
}
