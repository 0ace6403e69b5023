//! SIGALRM and the real-time interval timer: the monitor's precise wake-up.
//!
//! Discipline (as in the `signal-hook` crate): the handler only records and wakes. It writes one byte
//! into a non-blocking self-pipe that the monitor thread polls; everything else happens on that
//! thread. The handler reads nothing but atomics.
//!
//! The previous SIGALRM disposition is saved when the handler is installed, honoured while it is
//! installed (a SIGALRM that our timer did not send is passed on to it), and restored when the last
//! detector stops. If other code replaces our handler later (for example `process.on('SIGALRM')`,
//! which makes libuv install its own), [`ensure_installed`] notices, treats that handler as the new
//! previous one, and installs ours in front of it again.

use std::io;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::clock::now_ns;

extern "C" {
    // Neither nix 0.26 nor libc 0.2.139 (for linux-gnu) declares setitimer; its C signature is
    // stable POSIX, and `libc::itimerval` has the platform's layout.
    fn setitimer(which: c_int, new: *const libc::itimerval, old: *mut libc::itimerval) -> c_int;
}

/// `si_code` of a signal sent by the kernel itself, which is how Linux delivers ITIMER_REAL expiry.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SI_KERNEL: c_int = 0x80;

/// The self-pipe's read end (-1: not created yet). Non-blocking and close-on-exec, like the write end.
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
/// Serialises install, arming and uninstall (normal threads only; the handler never takes it), so
/// that the monitor can never arm the timer after the last detector restored SIG_DFL.
static CONTROL: Mutex<()> = Mutex::new(());

fn control() -> std::sync::MutexGuard<'static, ()> {
    CONTROL.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_prev() -> std::sync::MutexGuard<'static, Option<SigAction>> {
    PREV_ACTION.lock().unwrap_or_else(|e| e.into_inner())
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
    let _g = PIPE_INIT.lock().unwrap_or_else(|e| e.into_inner());
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
/// shared with the parent (a wake-up here would wake the parent's monitor), so the child gets its
/// own; the interval timer is not inherited, so nothing is armed. The SIGALRM disposition and the
/// remembered previous one are inherited unchanged.
pub fn after_fork_child() -> io::Result<()> {
    let _g = PIPE_INIT.lock().unwrap_or_else(|e| e.into_inner());
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

/// Whether this SIGALRM came from our interval timer rather than from kill(2) or another source.
fn sent_by_our_timer(info: *const libc::siginfo_t) -> bool {
    let armed = ARMED_AT.load(Ordering::Acquire);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; null is checked.
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
    // SAFETY: errno_location() is this thread's errno; saved and restored so that the interrupted
    // code never sees our write's errno.
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
            // disposition and re-raise; the signal is blocked while we run and is delivered, with
            // its default action, when we return.
            // SAFETY: sigaction(2) and raise(3) are async-signal-safe; the zeroed struct is a valid
            // SIG_DFL action with an empty mask.
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
                // SAFETY: `addr` was read from the previous sigaction with SA_SIGINFO set, so it is
                // a three-argument handler; we call it as the kernel would have.
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
    // SAFETY: our handler is async-signal-safe (see on_sigalrm) and stays in memory for the life of
    // the process (this library is never unloaded while a handler may run: see uninstall).
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

/// Arms the one-shot real-time timer to fire at the monotonic instant `deadline_ns`. Does nothing
/// unless our handler is installed (a timer firing into a restored SIG_DFL would kill the process).
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
    // Block SIGALRM here while we look for a pending one: it must not reach SIG_DFL after restore.
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
        // A handler installed after ours (e.g. libuv's for process.on('SIGALRM')) stays: restoring
        // the older one would silently drop it.
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
            // It is pending and blocked here, so sigwait returns at once. No siginfo: assume ours.
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
/// Loop threads block it so that our timer never interrupts their `epoll_wait` (libuv then loses
/// idle-time accounting for that wait).
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
