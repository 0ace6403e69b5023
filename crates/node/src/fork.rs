//! fork(): prepare the parent, fork, and repair the child before it returns to JavaScript.
//!
//! The order follows `../shared/docs/background.md` §5 and its research notes: refuse while
//! requests or DNS queries are in flight; hold the monitor thread still; park V8's platform
//! workers; refuse while a thread runs that is not accounted for (`threads`); clear
//! `MADV_DONTFORK` on V8's memory; fork. In the child: the child's copies of TLS connections cut
//! (`handles`), own blocking stdio pipes, `uv_loop_fork`, a new monitor thread, and a process exit
//! handler that ends the child with `_exit` (Node's own exit would join platform threads that do
//! not exist in the child).

mod handles;
mod threads;

use std::os::raw::c_int;
use std::time::{Duration, Instant};

use loop_helpers_core::fork_prep;
use loop_helpers_core::monitor::fork_pause;

use crate::env_loop::EnvLoop;
use crate::napi::*;
use crate::platform;
use crate::uv::{self, uv_loop_t};
use crate::worker_pool;

/// How long the parent waits for V8's platform workers to finish their current task.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long it waits for the monitor thread to reach a point where it holds no lock.
const MONITOR_PAUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long it waits for unnamed threads it cannot account for to end (they may be short-lived,
/// such as the root-certificate loader that `require('tls')` starts), and how often it looks.
const THREAD_WAIT: Duration = Duration::from_secs(1);
const THREAD_RETRY: Duration = Duration::from_millis(10);

/// A refusal or failure, with the stable code the TypeScript layer turns into a `ForkError`.
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// What the parent measured (milliseconds), for benchmarks and the parent's stall.
#[derive(Default)]
pub struct Timing {
    pub park_ms: f64,
    pub memory_ms: f64,
    pub fork_ms: f64,
    pub mappings: usize,
    /// V8 platform workers parked.
    pub workers: usize,
}

pub enum Forked {
    Parent {
        pid: i32,
        timing: Timing,
    },
    Child {
        /// V8's worker tasks run on threads of ours (else they are never run in the child).
        workers_restored: bool,
        /// The child's copies of TLS connections that were cut.
        tls_cut: usize,
    },
}

/// The parent's background threads held still across fork().
enum Quiet {
    /// Node's platform workers, each running a task of ours.
    Parked(platform::Parked),
    /// This process is itself a forked child: its V8 worker tasks run in our pool.
    Pool(worker_pool::Paused),
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Whether fork() can work on this Node.js at all, and why not.
pub fn support() -> Result<(), &'static str> {
    platform::support()
}

/// The loop's active requests (see [`uv::active_requests`]).
///
/// # Safety
/// On `env`'s JavaScript thread.
pub unsafe fn active_requests(env: napi_env) -> Option<u32> {
    // SAFETY: on env's JS thread (the caller's contract), which is its loop's thread, and
    // `event_loop` gives that loop, live and non-null.
    unsafe {
        let lp = event_loop(env)?;
        Some(uv::active_requests(lp))
    }
}

/// # Safety
/// On `env`'s JavaScript thread.
unsafe fn event_loop(env: napi_env) -> Option<*mut uv_loop_t> {
    let mut lp: *mut uv_loop_t = std::ptr::null_mut();
    // SAFETY: on env's JS thread (the caller's contract); `lp` a live local.
    let status = unsafe { napi_get_uv_event_loop(env, &mut lp) };
    (status == NAPI_OK && !lp.is_null()).then_some(lp)
}

/// The file descriptors of the loop's streams that carry TLS, whose copies the child cuts.
///
/// # Safety
/// On `env`'s JavaScript thread.
pub unsafe fn tls_streams(env: napi_env) -> Option<Vec<c_int>> {
    // SAFETY: on env's JS thread (the caller's contract).
    let lp = unsafe { event_loop(env) }?;
    handles::prepare();
    // SAFETY: `lp` is env's loop, and this its thread.
    Some(unsafe { handles::tls_streams(lp) })
}

/// Runs `check` (the JavaScript refusals) while every handle of the loop is ref'd, so that the
/// JavaScript views of the loop, which list ref'd handles only, show the unref'd ones too (an
/// unref'd child process is alive all the same). The handles are unref'd again before this
/// returns.
///
/// # Safety
/// On `env`'s JavaScript thread, inside a Node-API callback; `check` must not run the loop.
pub unsafe fn with_all_handles_visible<T>(env: napi_env, check: impl FnOnce() -> T) -> Option<T> {
    // SAFETY: on env's JS thread (the caller's contract).
    let lp = unsafe { event_loop(env) }?;
    // SAFETY: `lp` is env's loop, and this its thread; `restore` is called below, before the
    // loop can run again (`check` does not run it: the caller's contract).
    let visible = unsafe { handles::make_visible(lp) };
    let r = check();
    // SAFETY: as above.
    unsafe { visible.restore() };
    Some(r)
}

/// Forks the process. The caller (TypeScript) has already refused Workers, child processes, the
/// inspector and non-main threads; requests in flight are checked again here, where nothing can
/// start one before the fork.
///
/// # Safety
/// On the main thread's JavaScript thread, inside a Node-API callback.
pub unsafe fn fork(env: napi_env, tls: &[c_int]) -> Result<Forked, Refused> {
    support().map_err(|e| refuse("ERR_FORK_UNSUPPORTED", e))?;
    // SAFETY: on env's JS thread (the caller's contract).
    let lp =
        unsafe { event_loop(env) }.ok_or_else(|| refuse("ERR_FORK_FAILED", "no event loop"))?;
    // SAFETY: `lp` is env's loop, read on its thread.
    let reqs = unsafe { uv::active_requests(lp) };
    if reqs > 0 {
        return Err(refuse(
            "ERR_FORK_REQUESTS_IN_FLIGHT",
            format!("{reqs} libuv request(s) in flight"),
        ));
    }
    handles::prepare();
    // SAFETY: as above.
    let dns = unsafe { handles::dns_sockets(lp) };
    if dns > 0 {
        return Err(refuse(
            "ERR_FORK_DNS_IN_FLIGHT",
            format!(
                "{dns} DNS socket(s) of dns.resolve*() / dns.Resolver are open: a query is waiting \
                 for its answer. The child would share the socket and the query with the parent \
                 (either may read the other's answer, and both would retry with the same query \
                 ids). Fork once the queries have settled (await them), or cancel them with \
                 resolver.cancel()"
            ),
        ));
    }
    // SAFETY: on the main environment's JS thread inside a Node-API callback (the caller's
    // contract), as `current` requires.
    let handles = unsafe { platform::current() }.map_err(|e| refuse("ERR_FORK_UNSUPPORTED", e))?;
    let mut timing = Timing::default();

    // Hold the monitor and V8's workers still, and account for every other thread. A thread that
    // carries its creator's name may be short-lived (Node's root-certificate loader, started by
    // `require('tls')`): let go, wait a little and look again, up to THREAD_WAIT.
    let deadline = Instant::now() + THREAD_WAIT;
    let (paused, quiet) = loop {
        let paused = fork_pause::pause(MONITOR_PAUSE_TIMEOUT)
            .map_err(|e| refuse("ERR_FORK_PLATFORM_BUSY", e.to_string()))?;
        let t = Instant::now();
        let quiet = if worker_pool::is_active() {
            Quiet::Pool(
                worker_pool::pause(PARK_TIMEOUT)
                    .map_err(|e| refuse("ERR_FORK_PLATFORM_BUSY", e))?,
            )
        } else {
            let parked = platform::park_workers(&handles, PARK_TIMEOUT)
                .map_err(|e| refuse("ERR_FORK_PLATFORM_BUSY", e))?;
            timing.workers = parked.workers;
            Quiet::Parked(parked)
        };
        timing.park_ms = ms(t);
        let (parked_tids, platform_threads) = match &quiet {
            Quiet::Parked(p) => (p.tids(), platform::platform_threads(&handles)),
            // A forked child: the platform's threads are gone.
            Quiet::Pool(_) => (Vec::new(), 0),
        };
        let verdict = threads::classify(&threads::Context {
            parked: &parked_tids,
            platform_threads,
        })
        .map_err(|e| refuse("ERR_FORK_FAILED", e))?;
        match verdict {
            threads::Verdict::Known => break (paused, quiet),
            threads::Verdict::Profiler(what) => {
                return Err(refuse(
                    "ERR_FORK_PROFILER_ACTIVE",
                    format!(
                        "{what}. Its thread does not exist in the child, where stopping the \
                         profile or trace would wait for it forever. Stop it first \
                         (Profiler.stop, tracing.disable()), or run without --cpu-prof, --prof or \
                         --trace-events-enabled"
                    ),
                ));
            }
            threads::Verdict::Unknown { named, unnamed } => {
                if named.is_empty() && Instant::now() < deadline {
                    drop(quiet);
                    drop(paused);
                    std::thread::sleep(THREAD_RETRY);
                    continue;
                }
                return Err(unknown_threads(&named, &unnamed));
            }
        }
    };

    // After parking: no V8 thread can map new don't-fork memory between this walk and fork().
    let t = Instant::now();
    let cleared = fork_prep::clear_dont_fork().map_err(|e| {
        refuse(
            "ERR_FORK_FAILED",
            format!("giving the process's memory MADV_DOFORK failed: {e}"),
        )
    })?;
    timing.memory_ms = ms(t);
    timing.mappings = cleared.mappings;

    // C stdio buffers would otherwise be written twice.
    // SAFETY: fflush(NULL) flushes every open C stream; no precondition.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    let t = Instant::now();
    // SAFETY: every thread of this process that could hold a lock the child needs is stopped at a
    // point where it holds none: the monitor (paused; its registry lock is held by us), V8's
    // platform workers (parked in our task), no Worker threads (refused by the caller), no
    // threadpool work (checked above). The child only runs this thread; see `repair_child`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        drop(quiet);
        drop(paused);
        return Err(refuse("ERR_FORK_FAILED", format!("fork(2) failed: {e}")));
    }
    if pid > 0 {
        timing.fork_ms = ms(t);
        drop(quiet);
        drop(paused);
        return Ok(Forked::Parent { pid, timing });
    }
    // First, while this is still the child's only thread: V8's worker tasks (the redirection
    // swaps the platform object's vtable pointer, which no other thread may be reading).
    let workers_restored = match quiet {
        // A child of a child: the pool's threads are gone, its queue and redirection are not.
        Quiet::Pool(p) => {
            worker_pool::after_fork_child(p);
            true
        }
        Quiet::Parked(parked) => {
            // The parked workers do not exist here; their park state is left alone (the
            // platform's drain, which would wait for their tasks, is redirected to the pool).
            let workers = parked.workers;
            std::mem::forget(parked);
            // SAFETY: `handles` came from `current` in the parent (the same objects here), and
            // this is the child's only thread.
            match unsafe {
                platform::redirect_worker_tasks(&handles, worker_pool::sink, worker_pool::drain)
            } {
                Ok(_) => {
                    worker_pool::activate(workers);
                    true
                }
                Err(_) => false,
            }
        }
    };
    // The loop thread's id and clock were those of the parent's thread: a detector's "where is
    // the thread" and its CPU accounting must read this one. Before the child's monitor thread
    // starts (in `repair_child`): its first look at the turn in progress would otherwise read the
    // parent's thread clock, and a block it reported at once (the parent's turn had already lasted
    // a timeout, as under load) counted its CPU time from that reading (cpuMs 0). The monitor is
    // paused holding none of this state's locks (`fork_pause`), so they are free here.
    // SAFETY: `env` is this callback's environment (fork's contract), on its JS thread.
    if let Some(e) = unsafe { EnvLoop::get(env) } {
        e.renew_thread_after_fork();
    }
    // SAFETY: in the child right after fork(), on the thread that forked; `lp` is its loop.
    let tls_cut = unsafe { repair_child(lp, &handles, paused, tls) };
    Ok(Forked::Child {
        workers_restored,
        tls_cut,
    })
}

/// The child's repairs, on its only thread. A failure leaves a process that cannot run Node safely:
/// it says so on stderr and ends with status 70 (EX_SOFTWARE) rather than return a broken clone.
///
/// # Safety
/// In the child, right after fork(), on the thread that forked; `lp` is its loop.
unsafe fn repair_child(
    lp: *mut uv_loop_t,
    handles: &platform::Handles,
    paused: fork_pause::Paused,
    tls: &[c_int],
) -> usize {
    // Before the child's loop polls: its copies of TLS connections must never send a byte (the
    // same keys and sequence numbers as the parent's: AES-GCM nonces would repeat).
    // SAFETY: in the child before its loop polls again (the caller's contract), so
    // no libuv call uses the replaced fds; `die` is for exactly this broken child.
    let tls_cut = unsafe {
        match handles::cut(tls) {
            Ok(n) => n,
            Err(e) => die(&format!(
                "cutting the child's copies of TLS connections failed: {e}"
            )),
        }
    };
    // SAFETY: in the child, before `uv_loop_fork` below.
    unsafe { own_stdio_pipes() };
    // SAFETY: `lp` is the child's loop, on its thread, right after fork() (libuv's requirement).
    let r = unsafe { uv::uv_loop_fork(lp) };
    if r != 0 {
        // SAFETY: a broken forked child, as `die` requires.
        unsafe { die(&format!("uv_loop_fork failed ({r})")) };
    }
    if let Err(e) = fork_pause::after_fork_child(paused) {
        // SAFETY: as above.
        unsafe { die(&format!("restarting the blocking monitor failed: {e}")) };
    }
    // SAFETY: `handles` came from `current` on this thread (in the parent, before the fork).
    unsafe { platform::set_process_exit_handler(handles, child_exit) };
    tls_cut
}

/// The refusal for threads that neither Node nor loop-helpers started.
fn unknown_threads(named: &[String], unnamed: &[String]) -> Refused {
    let mut listed: Vec<&str> = Vec::new();
    for name in named {
        if !listed.contains(&name.as_str()) {
            listed.push(name);
        }
    }
    let mut what = Vec::new();
    if !listed.is_empty() {
        what.push(format!("named {}", listed.join(", ")));
    }
    if !unnamed.is_empty() {
        what.push(format!(
            "{} without a name of its own (it carries its creator's, {}), still running after {} ms",
            unnamed.len(),
            unnamed[0],
            THREAD_WAIT.as_millis()
        ));
    }
    refuse(
        "ERR_FORK_UNKNOWN_THREADS",
        format!(
            "{} thread(s) that neither Node.js nor loop-helpers started are running ({}). A native \
             addon's own threads (such as librdkafka's or libvips') do not exist in the child, and \
             a lock or a task one of them holds would stay held there forever. Fork before loading \
             such an addon, or stop its threads first",
            named.len() + unnamed.len(),
            what.join("; ")
        ),
    )
}

/// # Safety
/// Ends the process at once (no destructors, no Node teardown): only for a broken forked child.
unsafe fn die(what: &str) -> ! {
    let msg = format!("loop-helpers: fork() child cannot continue: {what}\n");
    // SAFETY: `msg` is `msg.len()` readable bytes; then the process ends without running
    // anything of Node's or ours (the caller's contract: a broken child).
    unsafe {
        let _ = libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(70);
    }
}

/// The child's process exit handler: Node has run the 'exit' listeners and printed a fatal error;
/// its own teardown would join threads that exist only in the parent. Output written through
/// process.stdout/stderr is already out (the child's stdio pipes are blocking); C stdio is flushed.
///
/// # Safety
/// Called by Node as the process exit handler of the child's environment.
unsafe extern "C" fn child_exit(code: c_int) {
    // SAFETY: Node calls this in place of its own teardown (the contract), so ending the process
    // here skips nothing that must run; fflush(NULL) has no precondition.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code);
    }
}

/// Gives the child its own open file description for stdout and stderr when they are pipes. The
/// shared one would be switched to non-blocking by the child's libuv (for the parent too), and
/// output still queued in libuv would be lost at `_exit`. A blocking pipe of its own makes every
/// write complete before it returns. Not possible for sockets (ENXIO): those stay shared.
///
/// # Safety
/// In the child before `uv_loop_fork`: fds 1 and 2 are replaced under libuv's handles, which keep
/// their fd numbers.
unsafe fn own_stdio_pipes() {
    for fd in [1, 2] {
        // SAFETY: `stat` is plain data, for which all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a live local for fstat to fill.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            continue;
        }
        let path = format!("/proc/self/fd/{fd}\0");
        // O_NONBLOCK: opening a FIFO for writing must not wait for a reader (ENXIO without one).
        // SAFETY: `path` is NUL-terminated.
        let nfd = unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_NONBLOCK) };
        if nfd < 0 {
            continue;
        }
        // SAFETY: `nfd` is ours, just opened. dup2 replaces `fd` under libuv's handle, which is
        // sound before `uv_loop_fork` (the caller's contract): nothing uses it meanwhile.
        unsafe {
            let fl = libc::fcntl(nfd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(nfd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
            libc::dup2(nfd, fd);
            libc::close(nfd);
        }
    }
}

/// How a child ended: (exit code, terminating signal), one of them None.
pub type Ended = (Option<i32>, Option<i32>);

/// Status of a forked child: Ok(None) while it runs, Ok(Some(ended)) once it ended (it is reaped
/// then), Err(errno) when it is not a child of this process (ECHILD) or waiting failed.
pub fn wait(pid: i32, block: bool) -> Result<Option<Ended>, i32> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, if block { 0 } else { libc::WNOHANG }) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some((Some(libc::WEXITSTATUS(status)), None)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some((None, Some(libc::WTERMSIG(status)))));
        }
        // Stopped or continued (only reported with WUNTRACED/WCONTINUED, which are not asked for).
        return Ok(None);
    }
}
