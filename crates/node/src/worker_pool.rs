//! V8's worker threads for a forked child.
//!
//! The child has none of the platform's worker threads. Without them V8's background work never
//! runs: concurrently compiled functions stay unoptimized (up to 11x slower, measured on Node 22),
//! and tasks pile up. `platform::redirect_worker_tasks` points the platform's worker-task entries
//! at [`sink`], and this pool runs the tasks, delayed ones when they are due.
//!
//! Forking again from such a child: [`pause`] waits until no task runs (none may be running at the
//! instant of fork), and the grandchild starts its own threads ([`after_fork_child`]); queued
//! tasks are kept and run there too, on that process's own copy of the heap.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use loop_helpers_core::clock::now_ns;
use loop_helpers_core::panics::{self, lock_or_recover, wait_or_recover, wait_timeout_or_recover};

loop_helpers_core::opaque_types! {
    /// A `v8::Task` (the shim's `PlatformTask`); only ever used behind a pointer.
    pub Task;
}

extern "C" {
    // shim/platform_shim.cc: task->Run(), then delete task.
    fn loop_helpers_run_task(task: *mut Task);
}

/// Node's platform worker threads are started by `uv_thread_create`, whose stack is the stack
/// rlimit (8 MiB on most systems); V8's background compilation can recurse deeply, so ours get as
/// much (Rust's default would be 2 MiB).
const WORKER_STACK_SIZE: usize = 8 << 20;

struct Pool {
    /// (task, due time in ns); tasks are V8 `Task*`s owned by the pool until run.
    queue: Vec<(usize, u64)>,
    threads: usize,
    /// 0 until `activate`: the pool serves this process's worker tasks once it is set.
    max_threads: usize,
    paused: bool,
    running: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    queue: Vec::new(),
    threads: 0,
    max_threads: 0,
    paused: false,
    running: 0,
});
/// Where the pool's threads wait for a task: one is woken per task posted (V8 posts a parallel
/// GC job as several tasks at once, and every thread woken costs a context switch), all of them
/// when the pool is unpaused.
static WORK: Condvar = Condvar::new();
/// Where `drain` and `pause` wait: woken whenever a task ends.
static TASK_ENDED: Condvar = Condvar::new();
const SITE: &str = "worker_pool::POOL";

fn pool() -> MutexGuard<'static, Pool> {
    lock_or_recover(&POOL, SITE)
}

/// Starts serving worker tasks with up to `threads` threads (the parent's worker count).
pub fn activate(threads: usize) {
    pool().max_threads = threads.max(1);
}

/// Whether this process's worker tasks go to the pool (it is a forked child).
pub fn is_active() -> bool {
    pool().max_threads > 0
}

/// Takes a task from the platform. Called by V8 on any thread (the JavaScript thread, GC helpers,
/// pool threads), never from a signal handler.
///
/// # Safety
/// `task` is null or a task the platform shim hands over (a `std::unique_ptr<v8::Task>` released
/// to us): the pool owns it from now on, runs it once and deletes it.
pub unsafe extern "C" fn sink(task: *mut Task, delay_seconds: f64) {
    if task.is_null() {
        return;
    }
    let delay_ns = if delay_seconds.is_finite() && delay_seconds > 0.0 {
        (delay_seconds * 1e9) as u64
    } else {
        0
    };
    let mut p = pool();
    p.queue
        .push((task as usize, now_ns().saturating_add(delay_ns)));
    spawn_if_needed(&mut p);
    WORK.notify_one();
}

/// The platform's drain in a forked child (`NodePlatform::DrainTasks`, redirected by
/// `platform::redirect_worker_tasks`): waits until no task runs and none is due, as Node's own
/// drain waits for its worker threads' outstanding tasks (delayed tasks that are not due yet are
/// not waited for there either). Called by Node on an event loop's thread (a Worker's end, the end
/// of a loop), never on a pool thread.
///
/// # Safety
/// Called by the platform shim only, as above: never on a pool thread, whose own drain would wait
/// for itself.
pub unsafe extern "C" fn drain() {
    let _ = panics::catch("worker_pool::drain", || {
        let mut p = pool();
        loop {
            let now = now_ns();
            let due = p.queue.iter().any(|&(_, at)| at <= now);
            if p.max_threads == 0 || (p.running == 0 && !due) {
                return;
            }
            if due {
                spawn_if_needed(&mut p);
            }
            // Woken when a task ends; the timeout covers a delayed task becoming due meanwhile.
            p = wait_timeout_or_recover(&TASK_ENDED, &POOL, p, Duration::from_millis(5), SITE).0;
        }
    });
}

fn spawn_if_needed(p: &mut Pool) {
    let busy = p.running + p.queue.len();
    if p.threads < p.max_threads && p.threads < busy.max(1) {
        let spawned = std::thread::Builder::new()
            .name("loop-helpers-v8-worker".into())
            .stack_size(WORKER_STACK_SIZE)
            .spawn(work);
        if spawned.is_ok() {
            p.threads += 1;
        }
    }
}

/// The next due task, if any, and otherwise how long to wait.
fn take_due(p: &mut Pool) -> Result<usize, Option<Duration>> {
    if p.paused || p.queue.is_empty() {
        return Err(None);
    }
    let now = now_ns();
    let (i, &(_, due)) = p
        .queue
        .iter()
        .enumerate()
        .min_by_key(|(_, (_, due))| *due)
        .expect("queue is not empty");
    if due > now {
        return Err(Some(Duration::from_nanos(due - now)));
    }
    Ok(p.queue.swap_remove(i).0)
}

fn work() {
    let mut p = pool();
    loop {
        match take_due(&mut p) {
            Ok(task) => {
                p.running += 1;
                drop(p);
                // SAFETY: `task` is a V8 Task* the platform handed over; it is run and deleted
                // exactly once. V8 is built without exceptions, so nothing unwinds out of it.
                let _ = panics::catch("worker_pool::run_task", || unsafe {
                    loop_helpers_run_task(task as *mut Task)
                });
                p = pool();
                p.running -= 1;
                TASK_ENDED.notify_all();
            }
            Err(None) => p = wait_or_recover(&WORK, &POOL, p, SITE),
            Err(Some(wait)) => p = wait_timeout_or_recover(&WORK, &POOL, p, wait, SITE).0,
        }
    }
}

/// No pool task runs while this lives (the pool's threads wait on our own condition variable).
pub struct Paused(());

impl Drop for Paused {
    fn drop(&mut self) {
        pool().paused = false;
        WORK.notify_all();
    }
}

/// Stops the pool from starting tasks and waits (at most `timeout`) until none runs.
pub fn pause(timeout: Duration) -> Result<Paused, String> {
    let deadline = Instant::now() + timeout;
    let mut p = pool();
    p.paused = true;
    while p.running > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let running = p.running;
            p.paused = false;
            WORK.notify_all();
            return Err(format!(
                "{running} V8 background task(s) still running after {} ms",
                timeout.as_millis()
            ));
        }
        p = wait_timeout_or_recover(&TASK_ENDED, &POOL, p, left, SITE).0;
    }
    Ok(Paused(()))
}

/// In a child forked from a process that had the pool: its threads are gone; queued tasks stay and
/// get new threads.
pub fn after_fork_child(paused: Paused) {
    std::mem::forget(paused);
    let mut p = pool();
    p.threads = 0;
    p.running = 0;
    p.paused = false;
    while p.threads < p.queue.len().min(p.max_threads) {
        let before = p.threads;
        spawn_if_needed(&mut p);
        if p.threads == before {
            break;
        }
    }
}
