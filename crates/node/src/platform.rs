//! Node's V8 platform and process exit handler, for fork(): the one place where C++ objects are
//! involved. Like `v8.rs`, every entry point is resolved with dlsym at run time, and a missing one
//! makes `support()` report why instead of failing to load. The calls that need C++ (a task object
//! with a vtable owned by `std::unique_ptr`, a `std::function`) go through the shim in
//! `shim/platform_shim.cc`.
//!
//! Parking: V8's platform worker threads wait on a condition variable and run background tasks
//! (GC, compilation). A child made by fork() inherits that state without the threads, and its
//! first parallel GC then waits forever (`../shared/docs/background.md` §5). Posting one blocking
//! task per worker and waiting until all of them run makes every worker hold no lock, wait on
//! nothing of V8's and run no V8 task at the instant of fork().

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use loop_helpers_core::panics::{self, lock_or_recover, wait_or_recover, wait_timeout_or_recover};
use loop_helpers_core::symbol_table;
use loop_helpers_core::symbols::Address;

use crate::v8::{self, Isolate, Local};
use crate::worker_pool::Task;

loop_helpers_core::opaque_types! {
    /// A `node::Environment`; only ever used behind a pointer.
    pub Environment;
    /// A `node::MultiIsolatePlatform` (checked to be a `node::NodePlatform` before use); only ever
    /// used behind a pointer.
    pub Platform;
}

type TaskFn = unsafe extern "C" fn(*mut c_void);

extern "C" {
    // shim/platform_shim.cc
    fn loop_helpers_post_worker_task(
        kind: c_int,
        post: *mut c_void,
        platform: *mut Platform,
        run: TaskFn,
        drop: TaskFn,
        data: *mut c_void,
    ) -> c_int;
    fn loop_helpers_redirect_worker_tasks(
        platform: *mut Platform,
        vtable_symbol: *mut c_void,
        kind: c_int,
        post: *mut c_void,
        delayed: *mut c_void,
        sink: unsafe extern "C" fn(*mut Task, f64),
        drain: *mut c_void,
        flush: *mut c_void,
        pool_drain: unsafe extern "C" fn(),
    ) -> c_int;
    fn loop_helpers_symbol_size(address: *mut c_void) -> usize;
    fn loop_helpers_set_process_exit_handler(
        set: *mut c_void,
        env: *mut Environment,
        on_exit: unsafe extern "C" fn(c_int),
    );
}

type GetCurrentContextFn = unsafe extern "C" fn(*mut Isolate) -> Local;
type GetCurrentEnvironmentFn = unsafe extern "C" fn(Local) -> *mut Environment;
type GetMultiIsolatePlatformFn = unsafe extern "C" fn(*mut Environment) -> *mut Platform;
type NumberOfWorkerThreadsFn = unsafe extern "C" fn(*mut Platform) -> c_int;

symbol_table! {
    /// What fork() needs of Node's platform and environment. The functions called from Rust take
    /// and return only pointers (`Local<Context>` and the C++ `this` are one pointer each); the
    /// rest are `Address`es for the shim, which calls them with their C++ signatures.
    struct Api in "V8" {
        get_current_context: GetCurrentContextFn = c"_ZN2v87Isolate17GetCurrentContextEv",
        get_current_environment: GetCurrentEnvironmentFn =
            c"_ZN4node21GetCurrentEnvironmentEN2v85LocalINS0_7ContextEEE",
        get_platform: GetMultiIsolatePlatformFn =
            c"_ZN4node23GetMultiIsolatePlatformEPNS_11EnvironmentE",
        /// `node::NodePlatform`'s vtable symbol: a platform object of that class points 2 words in.
        node_platform_vtable: Address = c"_ZTVN4node12NodePlatformE",
        worker_threads: NumberOfWorkerThreadsFn =
            c"_ZN4node12NodePlatform21NumberOfWorkerThreadsEv",
        set_exit_handler: Address =
            c"_ZN4node21SetProcessExitHandlerEPNS_11EnvironmentEOSt8functionIFvS1_iEE",
    }
    // One of the two ways to post a worker task is required (see `posting`); which one decides
    // how the shim calls it and its delayed variant, so they are two entries, not one with two
    // names.
    optional {
        /// Node 22+ (V8 12+): `PostTaskOnWorkerThreadImpl(priority, task, location)`.
        post_task_impl: Address = c"_ZN4node12NodePlatform26PostTaskOnWorkerThreadImplEN2v812TaskPriorityESt10unique_ptrINS1_4TaskESt14default_deleteIS4_EERKNS1_14SourceLocationE",
        post_delayed_task_impl: Address = c"_ZN4node12NodePlatform33PostDelayedTaskOnWorkerThreadImplEN2v812TaskPriorityESt10unique_ptrINS1_4TaskESt14default_deleteIS4_EEdRKNS1_14SourceLocationE",
        /// Node 20: `CallOnWorkerThread(task)`.
        call_on_worker_thread: Address = c"_ZN4node12NodePlatform18CallOnWorkerThreadESt10unique_ptrIN2v84TaskESt14default_deleteIS3_EE",
        call_delayed_on_worker_thread: Address = c"_ZN4node12NodePlatform25CallDelayedOnWorkerThreadESt10unique_ptrIN2v84TaskESt14default_deleteIS3_EEd",
        /// `DrainTasks(Isolate*)` and `FlushForegroundTasks(Isolate*)`: a forked child's drain.
        drain_tasks: Address = c"_ZN4node12NodePlatform10DrainTasksEPN2v87IsolateE",
        flush_foreground_tasks: Address =
            c"_ZN4node12NodePlatform20FlushForegroundTasksEPN2v87IsolateE",
    }
    // The mangled names are libstdc++'s; macOS builds use libc++ (std::__1) and were not tested,
    // so fork() reports itself unavailable there rather than guess.
    requires: [linux_only(), v8::enabled()];
}

fn linux_only() -> Result<(), &'static str> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err("fork() is implemented for Linux only")
    }
}

/// How this Node posts a task to a platform worker.
#[derive(Clone, Copy)]
struct Posting {
    /// For the shim: 1 `PostTaskOnWorkerThreadImpl`, 0 `CallOnWorkerThread`.
    kind: c_int,
    post: Address,
    /// The delayed variant of the same kind, where exported.
    delayed: Option<Address>,
}

impl Api {
    fn posting(&self) -> Option<Posting> {
        match (self.post_task_impl, self.call_on_worker_thread) {
            (Some(post), _) => Some(Posting {
                kind: 1,
                post,
                delayed: self.post_delayed_task_impl,
            }),
            (None, Some(post)) => Some(Posting {
                kind: 0,
                post,
                delayed: self.call_delayed_on_worker_thread,
            }),
            (None, None) => None,
        }
    }
}

/// The table and its way to post worker tasks; or why fork() cannot have them.
fn api() -> Result<(&'static Api, Posting), &'static str> {
    let api = Api::get()?;
    let posting = api
        .posting()
        .ok_or("missing V8 platform symbol: NodePlatform worker task posting")?;
    Ok((api, posting))
}

/// The vtable pointer given to the platform object by [`redirect_worker_tasks`] (0: none).
static REDIRECTED_VPTR: AtomicUsize = AtomicUsize::new(0);

/// Whether the platform entry points fork() needs were found (and why not).
pub fn support() -> Result<(), &'static str> {
    api().map(|_| ())
}

/// The running Node's platform and environment, checked to be Node's own `NodePlatform`.
pub struct Handles {
    environment: *mut Environment,
    platform: *mut Platform,
}

/// # Safety
/// Call on the JavaScript thread of the main environment, inside a Node-API callback (a handle scope
/// is open and the isolate has a current context).
pub unsafe fn current() -> Result<Handles, String> {
    let (api, _) = api().map_err(str::to_owned)?;
    let isolate = v8::current_isolate();
    if isolate.is_null() {
        return Err("no current V8 isolate".into());
    }
    // SAFETY: `isolate` is this thread's, inside a callback with a handle scope open (the
    // caller's contract), as `GetCurrentContext` needs.
    let context = unsafe { (api.get_current_context)(isolate) };
    if context.is_null() {
        return Err("no current V8 context".into());
    }
    // SAFETY: `context` is the isolate's current context, non-null.
    let environment = unsafe { (api.get_current_environment)(context) };
    if environment.is_null() {
        return Err("no Node.js environment for the current context".into());
    }
    // SAFETY: `environment` is the live environment of that context, non-null.
    let platform = unsafe { (api.get_platform)(environment) };
    if platform.is_null() {
        return Err("the environment has no platform".into());
    }
    // An embedder may bring its own MultiIsolatePlatform; only Node's NodePlatform has the member
    // functions resolved above. Its objects' vtable pointer is the vtable symbol + 2 words
    // (offset-to-top, type info).
    // SAFETY: only address arithmetic within the vtable symbol (a vtable has those 2 words).
    let expected = unsafe { (api.node_platform_vtable.as_ptr() as *const *const c_void).add(2) }
        as *const c_void;
    // SAFETY: `platform` is a live, non-null C++ object (a MultiIsolatePlatform), whose first word
    // is its vtable pointer.
    let vptr = unsafe { *(platform as *const *const c_void) };
    if vptr != expected && vptr as usize != REDIRECTED_VPTR.load(Ordering::Acquire) {
        return Err("the V8 platform is not Node's NodePlatform (embedder platform)".into());
    }
    Ok(Handles {
        environment,
        platform,
    })
}

/// The platform's threads: `NumberOfWorkerThreads()`, which counts the task workers and the
/// delayed-task scheduler thread.
pub fn platform_threads(h: &Handles) -> usize {
    let Ok((api, _)) = api() else { return 0 };
    // SAFETY: `platform` was checked to be a NodePlatform in `current`.
    let n = unsafe { (api.worker_threads)(h.platform) };
    usize::try_from(n).unwrap_or(0)
}

/// The platform's worker threads that run tasks: all but the delayed-task scheduler thread, which
/// never runs a posted task.
fn task_workers(h: &Handles) -> usize {
    platform_threads(h).saturating_sub(1)
}

/// The size in bytes of the ELF symbol at `address` (0 when unknown).
pub fn symbol_size(address: *mut c_void) -> usize {
    // SAFETY: dladdr1 only reads the loader's tables for the address.
    unsafe { loop_helpers_symbol_size(address) }
}

struct ParkState {
    lock: Mutex<(usize, bool)>, // (workers parked, released)
    changed: Condvar,
    /// The thread ids of the parked workers (fork() accounts for every thread of the process).
    tids: Mutex<Vec<i32>>,
}

impl ParkState {
    fn state(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        lock_or_recover(&self.lock, "platform::lock")
    }
}

/// A parking task's body, run by a platform worker.
///
/// # Safety
/// `data` is the pointer `Arc::into_raw` gave for the task, not yet passed to [`park_drop`].
unsafe extern "C" fn park_run(data: *mut c_void) {
    // SAFETY: `data` is the Arc pointer given to the task; the task owns one count until dropped.
    let park = unsafe { &*(data as *const ParkState) };
    let _ = panics::catch("platform::park_run", || {
        let mut st = park.state();
        if st.1 {
            return; // released before this worker got here (a park that timed out)
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        lock_or_recover(&park.tids, "platform::tids").push(tid);
        st.0 += 1;
        park.changed.notify_all();
        while !st.1 {
            st = wait_or_recover(&park.changed, &park.lock, st, "platform::lock");
        }
        st.0 -= 1;
    });
}

/// A parking task's destructor.
///
/// # Safety
/// Called once per task, with its `data` (an `Arc::into_raw` pointer).
unsafe extern "C" fn park_drop(data: *mut c_void) {
    // SAFETY: gives back the count taken with Arc::into_raw when the task was posted.
    drop(unsafe { Arc::from_raw(data as *const ParkState) });
}

/// Every task worker is running one of our tasks and waits for this to be dropped.
pub struct Parked {
    state: Arc<ParkState>,
    pub workers: usize,
}

impl Parked {
    /// The thread ids of the parked workers.
    pub fn tids(&self) -> Vec<i32> {
        lock_or_recover(&self.state.tids, "platform::tids").clone()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let mut st = self.state.state();
        st.1 = true;
        self.state.changed.notify_all();
    }
}

/// Parks all task workers of the platform, waiting at most `timeout` (a worker may be finishing a
/// long GC task).
pub fn park_workers(h: &Handles, timeout: Duration) -> Result<Parked, String> {
    let (_, posting) = api().map_err(str::to_owned)?;
    let n = task_workers(h);
    let parked = Parked {
        state: Arc::new(ParkState {
            lock: Mutex::new((0, false)),
            changed: Condvar::new(),
            tids: Mutex::new(Vec::with_capacity(n)),
        }),
        workers: n,
    };
    for _ in 0..n {
        let data = Arc::into_raw(parked.state.clone()) as *mut c_void;
        // SAFETY: `post` is the resolved NodePlatform member (kind tells which), `h.platform` a
        // checked NodePlatform; the shim hands ownership of the task to the platform, which calls
        // park_run and then park_drop (or only park_drop if it never runs it).
        let r = unsafe {
            loop_helpers_post_worker_task(
                posting.kind,
                posting.post.as_ptr(),
                h.platform,
                park_run,
                park_drop,
                data,
            )
        };
        if r != 0 {
            // SAFETY: not posted, so the count is still ours.
            unsafe { park_drop(data) };
            return Err("out of memory posting a platform task".into());
        }
    }
    let deadline = Instant::now() + timeout;
    let mut st = parked.state.state();
    while st.0 < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let got = st.0;
            drop(st);
            return Err(format!(
                "only {got} of {n} V8 platform workers became free within {} ms (a long background \
                 task such as a GC of a large heap is running)",
                timeout.as_millis()
            ));
        }
        st = wait_timeout_or_recover(
            &parked.state.changed,
            &parked.state.lock,
            st,
            left,
            "platform::lock",
        )
        .0;
    }
    drop(st);
    Ok(parked)
}

/// Installs `on_exit` as the environment's process exit handler: Node calls it instead of its own
/// teardown, after 'exit' listeners ran and a fatal error was printed.
///
/// # Safety
/// `h` comes from [`current`] on this thread.
pub unsafe fn set_process_exit_handler(h: &Handles, on_exit: unsafe extern "C" fn(c_int)) {
    if let Ok((api, _)) = api() {
        // SAFETY: `h.environment` is the live environment from `current` on this thread (the
        // caller's contract); `set_exit_handler` is the symbol the shim expects.
        unsafe {
            loop_helpers_set_process_exit_handler(
                api.set_exit_handler.as_ptr(),
                h.environment,
                on_exit,
            )
        };
    }
}

/// In a forked child: sends the platform's worker tasks (and delayed worker tasks, where that entry
/// exists) to `sink` instead of the queue of threads that do not exist here, and makes the
/// platform's drain (`DrainTasks`: a Worker's end, the end of a loop) wait for `pool_drain` instead
/// of for the parent's tasks, which never complete here. Returns whether the drain was redirected.
///
/// # Safety
/// `h` comes from [`current`]; call while this is the process's only thread (right after fork),
/// so that no other thread makes a virtual call on the platform while its vtable pointer changes.
pub unsafe fn redirect_worker_tasks(
    h: &Handles,
    sink: unsafe extern "C" fn(*mut Task, f64),
    pool_drain: unsafe extern "C" fn(),
) -> Result<bool, String> {
    let (api, posting) = api().map_err(str::to_owned)?;
    // Both, or neither.
    let (drain, flush) = api
        .drain_tasks
        .zip(api.flush_foreground_tasks)
        .map_or((std::ptr::null_mut(), std::ptr::null_mut()), |(d, f)| {
            (d.as_ptr(), f.as_ptr())
        });
    // SAFETY: `h.platform` is a NodePlatform checked by `current`, and this is the process's only
    // thread (the caller's contract), so the shim may swap its vtable pointer; the addresses are
    // the resolved NodePlatform members (or null where the shim accepts that).
    let r = unsafe {
        loop_helpers_redirect_worker_tasks(
            h.platform,
            api.node_platform_vtable.as_ptr(),
            posting.kind,
            posting.post.as_ptr(),
            posting
                .delayed
                .map_or(std::ptr::null_mut(), Address::as_ptr),
            sink,
            drain,
            flush,
            pool_drain,
        )
    };
    match r {
        1..=7 => {
            // Our copy of the vtable: still a NodePlatform for `current` in this process.
            // SAFETY: `h.platform` is the live platform object; its first word, the vtable
            // pointer the shim just set.
            let vptr = unsafe { *(h.platform as *const *const c_void) };
            REDIRECTED_VPTR.store(vptr as usize, Ordering::Release);
            Ok(r & 4 != 0)
        }
        -1 => Err("the NodePlatform vtable's size is unknown".into()),
        -2 => Err("the platform object is not a NodePlatform".into()),
        -3 => Err("the worker-task entry is not in the NodePlatform vtable".into()),
        _ => Err("out of memory".into()),
    }
}
