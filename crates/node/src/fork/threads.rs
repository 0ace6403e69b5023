//! Accounting for every thread of the process before fork().
//!
//! Only the calling thread exists in a forked child. A thread fork() knows about is either held
//! still (V8's platform workers, parked; loop-helpers' monitor and pool) or idle at a point Node
//! recovers from (libuv's threadpool: no request is in flight, and libuv restarts it in the child;
//! the delayed-task scheduler and the SIGUSR1 inspector thread, whose work the child never needs).
//! Any other thread, such as a native addon's (librdkafka's, libvips'), may hold a lock or own
//! state the child would wait on forever: fork() refuses while one runs.
//!
//! Threads are classified by their name in `/proc/self/task/<tid>/comm`. From Node 24 on, Node names
//! all of its threads; libuv names its threadpool's from 1.50 (Node 22 on); before that they carry
//! the name of the thread that created them, usually the process's (`node`). Those unnamed Node
//! threads are counted instead: the scheduler is one (the platform's count less its parked task
//! workers), the inspector's signal thread at most one, the threadpool none or all of its
//! `UV_THREADPOOL_SIZE` threads. A foreign thread that carries the process's name is found when the
//! count of such threads does not fit those numbers (on Node 20 and 22 it can hide in that slack:
//! one where the signal thread is absent, `UV_THREADPOOL_SIZE` of them on Node 20 before the
//! threadpool starts).

use std::collections::HashSet;
use std::os::raw::c_uint;

/// What the classification found.
pub enum Verdict {
    /// Every thread is accounted for.
    Known,
    /// A CPU profiler or trace recorder is running (V8's or Node's thread, named).
    Profiler(String),
    /// Threads that neither Node nor loop-helpers started, by name: those with a name of their own
    /// (`named`), and those that carry the name of the thread that started them (`unnamed`), which
    /// may be short-lived (Node's root-certificate loader, started by `require('tls')` from Node 22
    /// on, is one).
    Unknown {
        named: Vec<String>,
        unnamed: Vec<String>,
    },
}

/// What the caller knows about the process.
pub struct Context<'a> {
    /// Thread ids of V8's parked platform workers.
    pub parked: &'a [i32],
    /// The platform's thread count (task workers and the delayed-task scheduler); 0 when this
    /// process is a forked child, whose platform threads are gone (and so is the inspector's
    /// signal thread).
    pub platform_threads: usize,
}

/// loop-helpers' own threads (Rust truncates names to the kernel's 15 bytes).
const OURS: [&str; 2] = ["loop-helpers-mo", "loop-helpers-v8"];
/// Node's and libuv's named threads that fork() accounts for.
const SCHEDULER: &str = "DelayedTaskSche";
const THREADPOOL: &str = "libuv-worker";
const SIGNAL: &str = "SignalInspector";
/// Names Node 24+ gives its V8 platform workers (parked, found by thread id anyway).
const V8_WORKER: [&str; 2] = ["V8Worker", "node-V8Worker"];
/// A CPU profile (`Profiler.start`, `--cpu-prof`), `--prof`'s two threads, the trace-events agent:
/// (thread name, what runs, what started it).
const PROFILERS: [(&str, &str, &str); 4] = [
    (
        "v8:ProfEvntProc",
        "a CPU profile is being recorded",
        "an inspector Session's Profiler.start, or --cpu-prof",
    ),
    ("v8:Profiler", "V8's profiler is running", "--prof"),
    ("SamplingThread", "V8's profiler is running", "--prof"),
    (
        "TraceEventWorke",
        "trace events are being recorded",
        "--trace-events-enabled, or trace_events.createTracing().enable()",
    ),
];

extern "C" {
    fn uv_version() -> c_uint;
}

fn read_comm(tid: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(String::from_utf8_lossy(&raw).trim_end().to_owned())
}

/// libuv's threadpool size, read from the environment as libuv reads it when the pool starts.
fn threadpool_size() -> usize {
    let n: i64 = std::env::var("UV_THREADPOOL_SIZE")
        .ok()
        // libuv uses atoi: leading digits, an optional sign; anything else is 0.
        .map(|v| {
            let v = v.trim_start();
            let (neg, digits) = match v.as_bytes().first() {
                Some(b'-') => (true, &v[1..]),
                Some(b'+') => (false, &v[1..]),
                _ => (false, v),
            };
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            let n = digits[..end].parse::<i64>().unwrap_or(0);
            if neg {
                -n
            } else {
                n
            }
        })
        .unwrap_or(4);
    // nthreads is unsigned in libuv: 0 becomes 1, a negative value a huge one, capped at 1024.
    match n {
        0 => 1,
        n if !(0..=1024).contains(&n) => 1024,
        n => n as usize,
    }
}

/// Classifies every thread of this process. Called while the platform workers are parked and the
/// monitor is paused, on the main thread.
pub fn classify(cx: &Context<'_>) -> Result<Verdict, String> {
    // SAFETY: getpid has no preconditions.
    let main = unsafe { libc::getpid() };
    let parked: HashSet<i32> = cx.parked.iter().copied().collect();
    let entries = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("cannot list /proc/self/task: {e}"))?;
    let mut main_name = String::new();
    let mut default_names: HashSet<String> = HashSet::new();
    let mut others: Vec<String> = Vec::new();
    let (mut schedulers, mut signals, mut pool_named, mut named_v8) =
        (0usize, 0usize, 0usize, 0usize);
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(tid_str) = file_name.to_str() else {
            continue;
        };
        let Ok(tid) = tid_str.parse::<i32>() else {
            continue;
        };
        // A thread that ended meanwhile has no comm any more: it is gone, nothing to account for.
        let Some(name) = read_comm(tid_str) else {
            continue;
        };
        if tid == main {
            main_name = name;
            continue;
        }
        if parked.contains(&tid) {
            if V8_WORKER.contains(&name.as_str()) {
                named_v8 += 1;
            } else {
                // Created before anything renamed the process: the name unnamed threads carry.
                default_names.insert(name);
            }
            continue;
        }
        if let Some((_, what, how)) = PROFILERS.iter().find(|(n, _, _)| *n == name) {
            return Ok(Verdict::Profiler(format!(
                "{what} (thread {name}, started by {how})"
            )));
        }
        match name.as_str() {
            n if OURS.contains(&n) => {}
            SCHEDULER => schedulers += 1,
            SIGNAL => signals += 1,
            THREADPOOL => pool_named += 1,
            _ => others.push(name),
        }
    }
    default_names.insert(main_name);
    // Threads carrying a name nobody gave them could be Node's unnamed ones; any other name is a
    // foreign thread for sure.
    let (unnamed, named): (Vec<String>, Vec<String>) =
        others.into_iter().partition(|n| default_names.contains(n));
    // Node names all of its threads (24+): its V8 workers are named.
    let node_names_threads = named_v8 > 0;
    let allowance_scheduler = cx
        .platform_threads
        .saturating_sub(cx.parked.len())
        .saturating_sub(schedulers);
    // Started at start-up unless the build has no inspector or `--disable-sigusr1` was given:
    // where Node does not name it, one unnamed thread may be it.
    let allowance_signal =
        usize::from(signals == 0 && !node_names_threads && cx.platform_threads > 0);
    // SAFETY: uv_version has no preconditions.
    let pool_unnamed = unsafe { uv_version() } < 0x01_32_00 && pool_named == 0;
    let allowance_pool = if pool_unnamed { threadpool_size() } else { 0 };
    // The unnamed threads Node may have: the scheduler, maybe the signal thread, and the threadpool
    // (all of it or none).
    let u = unnamed.len();
    let mut fits = 0usize;
    for pool in [0, allowance_pool] {
        for signal in [0, allowance_signal] {
            let n = allowance_scheduler + pool + signal;
            if n <= u {
                fits = fits.max(n);
            }
        }
    }
    let unnamed: Vec<String> = unnamed.into_iter().take(u - fits).collect();
    if named.is_empty() && unnamed.is_empty() {
        Ok(Verdict::Known)
    } else {
        Ok(Verdict::Unknown { named, unnamed })
    }
}
