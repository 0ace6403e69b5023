//! Per-environment state: one per Node.js environment (the main thread, and each Worker) that
//! started a detector. It knows the loop and the isolate, and is what the monitor samples
//! (`LoopProbe`): libuv's iteration counter, idle time and loop time, read from the monitor thread.
//! The loop does no work for us on its turns.
//!
//! Where libuv has no iteration counter (before 1.45: Node.js 20.0 to 20.2), an unref'd prepare
//! handle counts the turns instead: one relaxed load and store per turn. Elsewhere the handle is
//! initialised (it carries the environment's lifetime, see below) but never started, which costs
//! the loop nothing.
//!
//! Lifetime: created on the environment's first `start()`, kept until the environment is torn down.
//! An async cleanup hook stops the environment's watches and closes the prepare handle before Node
//! closes the loop, so the monitor never reads a freed loop and `uv_loop_close` finds no handle of
//! ours.

use std::any::Any;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use loop_helpers_core::heartbeat::{LoopSample, TurnCounter};
use loop_helpers_core::interrupt::Interrupts;
use loop_helpers_core::monitor::{self, LoopProbe, WatchSink};
use loop_helpers_core::native_state::Marks;
use loop_helpers_core::panics::{self, lock_or_recover};
use loop_helpers_core::thread_times::{ThreadClock, ThreadTimes};
use loop_helpers_core::{alarm, clock};

use crate::async_context::AsyncContextSpec;
use crate::counts;
use crate::gc_state::GcState;
use crate::napi::*;
use crate::sample_queue::SampleQueue;
use crate::sync_marker::SyncMarker;
use crate::uv::*;
use crate::v8;

/// Where the loop's iteration counter is read.
enum Turns {
    /// libuv's own counter (`uv_metrics_t.loop_count`), read in place.
    Libuv(*const u64),
    /// libuv's own counter, through `uv_metrics_info()` (its place could not be confirmed).
    Metrics(uv_metrics_info_fn),
    /// Our prepare handle's count (a libuv without `uv_metrics_info`).
    Prepare,
}

/// Set to `prepare` (or `metrics`) to count turns that way whatever libuv offers (diagnostics,
/// benchmarks of the alternatives).
const TURNS_ENV: &str = "LOOP_HELPERS_TURNS";

/// Every live environment state by serial number (see [`EnvLoop::by_serial`]).
static LIVE: Mutex<Vec<(u64, Weak<EnvLoop>)>> = Mutex::new(Vec::new());
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

fn live() -> std::sync::MutexGuard<'static, Vec<(u64, Weak<EnvLoop>)>> {
    lock_or_recover(&LIVE, "env_loop::LIVE")
}

/// What the environment needs of a watch's sink, besides what the monitor needs ([`WatchSink`]).
/// The layer above implements it (`sink::NodeSink`); the environment keeps its running watches'
/// sinks to close them when they stop. Nothing here is called per loop turn or per sample.
pub trait WatchOutput: WatchSink {
    /// Stops delivering to JavaScript: returns the block records not delivered yet, oldest first.
    /// Later deliveries are dropped.
    ///
    /// # Safety
    /// On the environment's JS thread, while the environment is alive.
    unsafe fn close(&self) -> Vec<String>;

    /// The watch's `asyncContext` stores, if it reads some.
    fn context(&self) -> Option<&Arc<AsyncContextSpec>>;
}

/// The interrupt layer's part of an environment (`unguarded::Support`, installed by
/// `installInterrupts`), as the environment sees it: what it hands back when a watch stops, and
/// undoes when the environment goes away. That layer gets its own type back with
/// [`EnvLoop::support`].
pub trait InterruptSupport: Send + Sync + 'static {
    /// Takes back the interrupt errors of watch `watch_id` not delivered yet (it stopped), as
    /// JSON.
    ///
    /// # Safety
    /// On the environment's JS thread.
    unsafe fn take_deliveries(&self, watch_id: u64) -> Vec<String>;

    /// The environment is going away: forget what is armed for its isolate.
    ///
    /// # Safety
    /// On `env_loop`'s JS thread, while its isolate is still alive.
    unsafe fn env_teardown(&self, env_loop: &Arc<EnvLoop>);

    /// Itself, as `Any`, for [`EnvLoop::support`] to give its own type back.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The data of a guard function handed to JavaScript (`guardApply`): the environment it guards.
///
/// Made only by [`EnvLoop::keep_guard_fn`], which stores it inside the `EnvLoop` it points to
/// (`guard_fns`): a `GuardFn` is dropped with that `EnvLoop` and never before, so whoever holds a
/// `&GuardFn` reaches a live `EnvLoop`. That is the one place the back pointer's lifetime is
/// argued ([`GuardFn::env_loop`]); a `Weak` would cost an atomic increment and decrement per
/// guarded callback for the same answer.
pub struct GuardFn {
    /// Private: only `keep_guard_fn` sets it, from an `Arc<EnvLoop>` (whose target never moves).
    env_loop: *const EnvLoop,
}

impl GuardFn {
    /// The environment this guard function guards.
    pub fn env_loop(&self) -> &EnvLoop {
        // SAFETY: a GuardFn exists only boxed in the `guard_fns` of the EnvLoop it points to
        // (`keep_guard_fn`, the only constructor), which was in an Arc, so its address is stable
        // and it outlives every GuardFn it owns; `&self` is live, so that EnvLoop is too.
        unsafe { &*self.env_loop }
    }
}

pub struct EnvLoop {
    /// Unique in the process, never reused: what the V8 interrupts we request carry.
    pub serial: u64,
    pub env: napi_env,
    pub isolate: *mut v8::Isolate,
    loop_ptr: *mut uv_loop_t,
    /// Who the loop thread is: read from the monitor thread, renewed in a forked child.
    thread: Mutex<LoopThread>,
    /// The loop thread's times at the first look that saw its current turn running: what the
    /// turn has used so far is counted from there.
    turn_start: Mutex<Option<TurnStart>>,
    turns: Turns,
    /// The prepare handle's count (`Turns::Prepare`).
    counter: TurnCounter,
    /// False once the environment is being torn down: nothing may touch env, isolate or loop.
    alive: AtomicBool,
    pub interrupts: Interrupts,
    /// Sample requests waiting for this environment's V8 interrupt (one interrupt for all).
    pub samples: SampleQueue,
    /// Whether the thread is in a garbage collection (marked while a watch runs).
    pub gc: GcState,
    /// Which Node.js synchronous API the thread is inside (marked by the JavaScript layer).
    pub sync: SyncMarker,
    support: Mutex<Option<Arc<dyn InterruptSupport>>>,
    /// Data of the guard functions handed to JavaScript (freed with the environment). Boxed:
    /// JavaScript holds their addresses, which must not move when the Vec grows.
    #[allow(clippy::vec_box)]
    guard_fns: Mutex<Vec<Box<GuardFn>>>,
    /// Unguarded code can be recovered from here (V8's after-termination callbacks and
    /// `afterTermination`).
    unguarded_possible: AtomicBool,
    /// The uv_prepare_t (storage sized by uv_handle_size), owned by libuv between init and close.
    prepare: *mut uv_handle_t,
    inner: Mutex<Inner>,
}

/// What a watch had not delivered to JavaScript when it stopped, oldest first.
#[derive(Default)]
pub struct Undelivered {
    /// Its interrupt errors (JSON, as `installInterrupts`' `deliver` receives them).
    pub interrupts: Vec<String>,
    /// Its block records, then the block in progress (`ended: false`) if one was warned about.
    pub blocks: Vec<String>,
}

struct Inner {
    watches: Vec<(u64, Arc<dyn WatchOutput>)>,
    prepare_running: bool,
    /// The GC callbacks are registered (`gc`).
    gc_marked: bool,
    /// This thread's SIGALRM was unblocked before we blocked it.
    unblock_sigalrm_on_idle: bool,
    cleanup_handle: napi_async_cleanup_hook_handle,
}

// SAFETY: the raw pointers are only dereferenced on the environment's own thread (env, the prepare
// handle, isolate through V8 calls documented as thread-safe: RequestInterrupt), or, for
// `loop_ptr` and the counter in `Turns::Libuv`, by the reads in `EnvLoop::sample` and
// `EnvLoop::iteration`, whose comments say why they are sound from another thread. `alive` and the
// monitor's registry lock order every use before teardown.
unsafe impl Send for EnvLoop {}
// SAFETY: as for Send; the mutable state is atomics or behind mutexes.
unsafe impl Sync for EnvLoop {}

impl Drop for EnvLoop {
    fn drop(&mut self) {
        live().retain(|(s, _)| *s != self.serial);
        counts::ENVIRONMENTS.down();
    }
}

/// The first look that saw a turn running.
#[derive(Clone, Copy)]
struct TurnStart {
    iteration: u64,
    /// The loop thread's times then.
    times: ThreadTimes,
}

/// The loop thread's identity, as other threads read it.
struct LoopThread {
    /// Its kernel thread id (Linux), to say where it is when it blocks outside JavaScript.
    tid: Option<i32>,
    /// Its CPU time and CPU wait (see `loop_helpers_core::thread_times`).
    clock: Option<ThreadClock>,
}

impl LoopThread {
    /// The calling thread's.
    fn current() -> LoopThread {
        LoopThread {
            tid: current_tid(),
            clock: ThreadClock::of_current_thread(),
        }
    }
}

impl LoopProbe for EnvLoop {
    fn thread_id(&self) -> Option<i32> {
        self.thread().tid
    }

    fn thread_times(&self) -> Option<ThreadTimes> {
        self.times_now()
    }

    fn turn_times(&self) -> Option<ThreadTimes> {
        let iteration = self.iteration();
        lock_turn(&self.turn_start)
            .filter(|t| t.iteration == iteration)
            .map(|t| t.times)
    }

    fn marks(&self) -> Marks {
        Marks {
            sync_api: self.sync.current(),
            gc: self.gc.current(),
        }
    }

    fn sample(&self) -> LoopSample {
        let now_ns = clock::now_ns();
        if !self.alive.load(Ordering::Acquire) {
            // Unreachable while watched (teardown unregisters every watch first); reads as idle.
            return LoopSample {
                now_ns,
                waiting: true,
                ..LoopSample::default()
            };
        }
        let iteration = self.iteration();
        // SAFETY: the loop is alive: either this is its own thread (a detector starting), or the
        // monitor thread, which holds its registry lock while it looks, and the cleanup hook
        // unregisters every watch under that lock before the loop is closed.
        // uv_metrics_idle_time is documented thread-safe (it takes the loop's metrics mutex).
        // uv_now returns `loop->time`, an aligned 8-byte word the loop thread sets with plain
        // stores: a racy read, but a single load on the 64-bit targets we build for, so it returns
        // one of the values the loop stored, never a mix (the tracker only ever treats it as a
        // bound it checks against its own clock readings).
        let (idle_ns, idle_again, loop_time_ms) = unsafe {
            let a = uv_metrics_idle_time(self.loop_ptr);
            let b = uv_metrics_idle_time(self.loop_ptr);
            (a, b, uv_now(self.loop_ptr))
        };
        // The idle time grows at wall-clock rate while the loop waits in its poll, and only then:
        // two readings a few nanoseconds apart differ exactly when it is waiting.
        let waiting = idle_again > idle_ns;
        // The turn's times are read at the first look that sees it running, and not at all while
        // the loop waits (no system call per idle look): a turn that runs after a wait has the
        // iteration of that wait, so the baseline is dropped when the loop is seen waiting.
        {
            let mut turn = lock_turn(&self.turn_start);
            if waiting {
                *turn = None;
            } else if turn.is_none_or(|t| t.iteration != iteration) {
                *turn = self.times_now().map(|times| TurnStart { iteration, times });
            }
        }
        LoopSample {
            now_ns,
            iteration,
            idle_ns,
            waiting,
            loop_time_ns: Some(loop_time_ms.saturating_mul(1_000_000)),
            loop_time_slack_ns: clock::loop_time_slack_ns(),
        }
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    lock_or_recover(m, "env_loop")
}

/// The prepare handle's callback.
///
/// # Safety
/// Called by libuv only, on the loop's thread, for the handle `EnvLoop::create` made.
unsafe extern "C" fn on_prepare(handle: *mut uv_handle_t) {
    // The loop's hot path (`Turns::Prepare` only): count the turn. Nothing here can panic.
    // SAFETY: `handle` is our live prepare handle (libuv is running its callback).
    let st = unsafe { uv_handle_get_data(handle) } as *const EnvLoop;
    if st.is_null() {
        return;
    }
    // SAFETY: the handle's data is the EnvLoop whose Arc reference the handle holds until
    // on_prepare_closed; libuv runs this callback on the loop thread before that.
    unsafe { (*st).counter.bump() };
}

/// The calling thread's kernel thread id (Linux only).
fn current_tid() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments and cannot fail.
        Some(unsafe { libc::syscall(libc::SYS_gettid) } as i32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn lock_turn(m: &Mutex<Option<TurnStart>>) -> std::sync::MutexGuard<'_, Option<TurnStart>> {
    lock_or_recover(m, "env_loop turn_start")
}

/// How this loop's turns are counted (on the loop's thread, at creation).
///
/// # Safety
/// `lp` is a live loop and this runs on its thread.
unsafe fn find_turns(lp: *mut uv_loop_t) -> Turns {
    let forced = std::env::var(TURNS_ENV).unwrap_or_default();
    let Some(info) = uv_metrics_info_fn().filter(|_| forced != "prepare") else {
        return Turns::Prepare;
    };
    if forced == "metrics" {
        return Turns::Metrics(info);
    }
    // SAFETY: `lp` is a live loop on this thread (the caller's contract); `info` is libuv's
    // uv_metrics_info, as `uv_metrics_info_fn` resolved it.
    match unsafe { loop_count_ptr(lp, info) } {
        Some(p) => Turns::Libuv(p),
        None => Turns::Metrics(info),
    }
}

/// The prepare handle's close callback: frees the handle and releases its reference.
///
/// # Safety
/// Called by libuv only, once, on the loop's thread, for the handle `EnvLoop::create` made.
unsafe extern "C" fn on_prepare_closed(handle: *mut uv_handle_t) {
    // SAFETY: `handle` is our prepare handle, closed but not yet freed (that is done below).
    let st = unsafe { uv_handle_get_data(handle) } as *const EnvLoop;
    // SAFETY: uv_handle_size only reads a table.
    let words = unsafe { uv_handle_size(UV_PREPARE) }.div_ceil(8);
    // SAFETY: `handle` was allocated in `EnvLoop::create` as a boxed [u64] slice of this length,
    // and libuv is done with it once its close callback runs.
    drop(unsafe {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            handle as *mut u64,
            words,
        ))
    });
    if !st.is_null() {
        // SAFETY: the Arc reference handed to the cleanup hook in `create` is released here, once.
        let st = unsafe { Arc::from_raw(st) };
        let h = lock(&st.inner).cleanup_handle;
        if !h.is_null() {
            // SAFETY: on the environment's thread; `h` is the hook `create` added, removed only
            // here, once (after `teardown`, this removal tells Node the async cleanup is done).
            unsafe { napi_remove_async_cleanup_hook(h) };
        }
    }
}

/// The environment's async cleanup hook.
///
/// # Safety
/// Called by Node-API only, on the environment's thread, with the `arg` `EnvLoop::create` gave.
unsafe extern "C" fn on_env_cleanup(_handle: napi_async_cleanup_hook_handle, arg: *mut c_void) {
    let p = arg as *const EnvLoop;
    // SAFETY: `arg` is the handle's Arc reference (see `create`), alive until on_prepare_closed;
    // borrow it as an Arc without taking it over.
    let st = unsafe {
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
    };
    let _ = panics::catch("env_loop::on_env_cleanup", || st.teardown());
}

impl EnvLoop {
    /// The state of `env`, created on first use.
    ///
    /// # Safety
    /// Must be called on `env`'s JavaScript thread, inside a Node-API callback.
    pub unsafe fn get_or_create(env: napi_env) -> Result<Arc<EnvLoop>, String> {
        // SAFETY: the caller's contract, which is `get`'s (and `create`'s) too.
        if let Some(st) = unsafe { Self::get(env) } {
            return Ok(st);
        }
        // SAFETY: as above.
        let st = unsafe { Self::create(env) }?;
        // The instance data holds one reference, released by Node when the env goes away.
        /// # Safety
        /// Node-API's instance-data finalizer: called once, with the data set below.
        unsafe extern "C" fn release(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
            // SAFETY: `data` is the reference `get_or_create` leaked for the instance data.
            drop(unsafe { Arc::from_raw(data as *const EnvLoop) });
        }
        let raw = Arc::into_raw(st.clone()) as *mut c_void;
        // SAFETY: on env's JS thread in a callback (the caller's contract); `raw` is a counted
        // reference that `release` gives back.
        if unsafe { napi_set_instance_data(env, raw, Some(release), std::ptr::null_mut()) }
            != NAPI_OK
        {
            // SAFETY: not taken by Node-API: ours to give back, once.
            drop(unsafe { Arc::from_raw(raw as *const EnvLoop) });
        }
        Ok(st)
    }

    /// The state of `env`, if it has one.
    ///
    /// # Safety
    /// Must be called on `env`'s JavaScript thread, inside a Node-API callback.
    pub unsafe fn get(env: napi_env) -> Option<Arc<EnvLoop>> {
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: on env's JS thread in a callback (the caller's contract); `data` a live local.
        if unsafe { napi_get_instance_data(env, &mut data) } != NAPI_OK || data.is_null() {
            return None;
        }
        let p = data as *const EnvLoop;
        // The instance data's reference keeps it alive; this one is the caller's.
        // SAFETY: only this addon sets the env's instance data, to an `Arc<EnvLoop>` pointer
        // (`get_or_create`), alive until Node finalizes it with the env.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }

    /// A new state for `env`, with its prepare handle and cleanup hook.
    ///
    /// # Safety
    /// On `env`'s JavaScript thread, inside a Node-API callback.
    unsafe fn create(env: napi_env) -> Result<Arc<EnvLoop>, String> {
        let mut loop_ptr: *mut uv_loop_t = std::ptr::null_mut();
        // SAFETY: the caller's contract; `loop_ptr` a live local.
        if unsafe { napi_get_uv_event_loop(env, &mut loop_ptr) } != NAPI_OK || loop_ptr.is_null() {
            return Err("napi_get_uv_event_loop failed".into());
        }
        // SAFETY: uv_handle_size only reads a table.
        let words = unsafe { uv_handle_size(UV_PREPARE) }.div_ceil(8);
        let prepare = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut uv_handle_t;
        let sync = SyncMarker::default();
        let st = Arc::new(EnvLoop {
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            env,
            isolate: v8::current_isolate(),
            loop_ptr,
            thread: Mutex::new(LoopThread::current()),
            turn_start: Mutex::new(None),
            // SAFETY: `loop_ptr` is env's live loop, and this is its thread.
            turns: unsafe { find_turns(loop_ptr) },
            counter: TurnCounter::default(),
            alive: AtomicBool::new(true),
            interrupts: Interrupts::default(),
            samples: SampleQueue::new(sync.cells()),
            gc: GcState::default(),
            sync,
            support: Mutex::new(None),
            guard_fns: Mutex::new(Vec::new()),
            unguarded_possible: AtomicBool::new(false),
            prepare,
            inner: Mutex::new(Inner {
                watches: Vec::new(),
                prepare_running: false,
                gc_marked: false,
                unblock_sigalrm_on_idle: false,
                cleanup_handle: std::ptr::null_mut(),
            }),
        });
        counts::ENVIRONMENTS.up();
        live().push((st.serial, Arc::downgrade(&st)));
        // SAFETY: on the loop's thread; `prepare` is `words` zeroed, 8-aligned words, at least
        // the size libuv gives for a prepare handle.
        let rc = unsafe { uv_prepare_init(loop_ptr, prepare) };
        if rc != 0 {
            // SAFETY: the failed handle is not the loop's: free the slice made above, once.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    prepare as *mut u64,
                    words,
                ))
            });
            return Err(format!("uv_prepare_init failed ({rc})"));
        }
        // The handle must never keep the process alive.
        // SAFETY: `prepare` is initialized, on its loop's thread.
        unsafe { uv_unref(prepare) };
        // This reference is owned by the handle and released in on_prepare_closed.
        let raw = Arc::into_raw(st.clone());
        // SAFETY: as above.
        unsafe { uv_handle_set_data(prepare, raw as *mut c_void) };
        let mut handle: napi_async_cleanup_hook_handle = std::ptr::null_mut();
        // SAFETY: on env's JS thread (the caller's contract); `raw` stays valid until
        // on_prepare_closed, which removes the hook first if it has not run.
        let added = unsafe {
            napi_add_async_cleanup_hook(env, Some(on_env_cleanup), raw as *mut c_void, &mut handle)
        };
        if added != NAPI_OK {
            // Without the hook a Worker's teardown would find our handle open: do not watch.
            // SAFETY: `prepare` is initialized and not closing; on_prepare_closed frees it and
            // releases `raw`.
            unsafe { uv_close(prepare, Some(on_prepare_closed)) };
            return Err("napi_add_async_cleanup_hook failed".into());
        }
        lock(&st.inner).cleanup_handle = handle;
        Ok(st)
    }

    /// The environment state with this serial number, if it still exists.
    pub fn by_serial(serial: u64) -> Option<Arc<EnvLoop>> {
        live()
            .iter()
            .find(|(s, _)| *s == serial)
            .and_then(|(_, w)| w.upgrade())
    }

    /// The `asyncContext` stores of a running watch of this loop, if it reads some.
    pub fn watch_context(&self, id: u64) -> Option<Arc<AsyncContextSpec>> {
        lock(&self.inner)
            .watches
            .iter()
            .find(|(w, _)| *w == id)
            .and_then(|(_, s)| s.context().cloned())
    }

    /// Registers a watch of this loop with the monitor.
    ///
    /// # Safety
    /// On this environment's JS thread (it starts the loop's prepare handle and the isolate's GC
    /// callbacks), in a Node-API callback, while the environment is alive.
    pub unsafe fn add_watch<S: WatchOutput + 'static>(
        self: &Arc<Self>,
        cfg: monitor::WatchConfig,
        sink: Arc<S>,
    ) -> Result<u64, String> {
        if !self.alive.load(Ordering::Acquire) {
            return Err("the environment is shutting down".into());
        }
        let mut inner = lock(&self.inner);
        if inner.watches.is_empty() {
            // The monitor's deadline signal must not interrupt this loop's epoll_wait (libuv loses
            // idle time on EINTR). On Linux it never reaches this thread: nothing changes here.
            inner.unblock_sigalrm_on_idle =
                alarm::shield_loop_thread().map_err(|e| format!("pthread_sigmask: {e}"))?;
        }
        if !inner.prepare_running && matches!(self.turns, Turns::Prepare) {
            // SAFETY: on the loop's thread; the handle was initialised in `create` and is open.
            unsafe {
                let rc = uv_prepare_start(self.prepare, Some(on_prepare));
                if rc != 0 {
                    // SAFETY: add_watch's contract (the JS thread).
                    self.idle_if_unwatched(&mut inner);
                    return Err(format!("uv_prepare_start failed ({rc})"));
                }
            }
            inner.prepare_running = true;
        }
        if !inner.gc_marked {
            // SAFETY: on the isolate's thread, in a Node-API callback (no collection runs);
            // `self.gc` stays in this EnvLoop until `idle_if_unwatched` removes the callbacks,
            // which the environment's teardown reaches before the isolate goes.
            inner.gc_marked = unsafe { self.gc.watch(self.isolate, true) };
        }
        let probe: Arc<dyn LoopProbe> = self.clone();
        match monitor::register(cfg, probe, sink.clone()) {
            Ok(id) => {
                inner.watches.push((id, sink));
                Ok(id)
            }
            Err(e) => {
                // SAFETY: add_watch's contract (the JS thread).
                unsafe { self.idle_if_unwatched(&mut inner) };
                Err(format!("cannot start the monitor: {e}"))
            }
        }
    }

    /// Stops one watch. Returns what it had not delivered to JavaScript yet: from then on nothing
    /// of it is written or delivered.
    ///
    /// # Safety
    /// On this environment's JS thread (it releases the watch's JavaScript references and stops
    /// the loop's handles), while the environment is alive.
    pub unsafe fn remove_watch(&self, id: u64) -> Result<Undelivered, String> {
        let mut inner = lock(&self.inner);
        let Some(pos) = inner.watches.iter().position(|(w, _)| *w == id) else {
            return Ok(Undelivered::default());
        };
        let (_, sink) = inner.watches.remove(pos);
        // `unregister` waits for a monitor cycle in progress, so what the monitor delivered for
        // this watch is in the sink's queue by now, and it delivers nothing later.
        let partial = monitor::unregister(id).map_err(|e| format!("stopping the monitor: {e}"));
        // SAFETY: remove_watch's contract (the JS thread, the environment alive).
        let mut blocks = unsafe { sink.close() };
        // An interrupt asked for and not run yet is not wanted any more.
        self.interrupts.forget(id);
        let interrupts = match self.installed_support() {
            // SAFETY: remove_watch's contract (the JS thread).
            Some(s) => unsafe { s.take_deliveries(id) },
            None => Vec::new(),
        };
        // SAFETY: remove_watch's contract (the JS thread).
        unsafe { self.idle_if_unwatched(&mut inner) };
        blocks.extend(partial?);
        Ok(Undelivered { interrupts, blocks })
    }

    /// Stops what runs for watches on the loop and the isolate once none is left.
    ///
    /// # Safety
    /// On this environment's JS thread (the loop's and the isolate's), outside a collection, while
    /// the isolate is alive.
    unsafe fn idle_if_unwatched(&self, inner: &mut Inner) {
        if !inner.watches.is_empty() {
            return;
        }
        if inner.prepare_running {
            // SAFETY: on the loop's thread, handle open.
            unsafe { uv_prepare_stop(self.prepare) };
            inner.prepare_running = false;
        }
        if std::mem::take(&mut inner.gc_marked) {
            // SAFETY: on the isolate's thread (stop(), a failed start, or the environment's
            // cleanup hook), outside a collection; the isolate is alive.
            unsafe { self.gc.watch(self.isolate, false) };
        }
        if std::mem::take(&mut inner.unblock_sigalrm_on_idle) {
            let _ = alarm::unshield_loop_thread();
        }
    }

    /// The environment is going away (async cleanup hook, on its thread).
    fn teardown(self: &Arc<Self>) {
        let ids: Vec<u64> = lock(&self.inner)
            .watches
            .iter()
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            // SAFETY: the environment's cleanup hook runs on its JS thread, before it goes.
            let _ = unsafe { self.remove_watch(id) };
        }
        self.interrupts.clear();
        self.interrupts.set_unguarded(false);
        // A V8 interrupt still queued will not run before the isolate goes (or finds nothing).
        self.samples.cancel();
        // Only the interrupt layer arms anything on the isolate (after-termination callbacks),
        // and only once its support is installed (unguarded terminations need it).
        if let Some(s) = self.installed_support() {
            // SAFETY: on our JS thread; the isolate is alive during environment cleanup.
            unsafe { s.env_teardown(self) };
        }
        self.alive.store(false, Ordering::Release);
        // SAFETY: on the loop's thread; the close callback frees the handle and removes the hook.
        unsafe {
            uv_prepare_stop(self.prepare);
            uv_close(self.prepare, Some(on_prepare_closed));
        }
    }

    /// Interrupt support (installed on first use by `installInterrupts`), as its own type `T`.
    pub fn support<T: InterruptSupport>(&self) -> Option<Arc<T>> {
        self.installed_support()?.into_any().downcast::<T>().ok()
    }

    fn installed_support(&self) -> Option<Arc<dyn InterruptSupport>> {
        lock_or_recover(&self.support, "env_loop::support").clone()
    }

    pub fn set_support(&self, s: Arc<dyn InterruptSupport>) {
        *lock_or_recover(&self.support, "env_loop::support") = Some(s);
    }

    /// Makes the data of a guard function of this environment ([`GuardFn`]) and keeps it alive as
    /// long as the environment; returns its address, for JavaScript's function to hold (the
    /// environment's instance data holds this EnvLoop until the environment, and so every
    /// function made in it, is gone).
    pub fn keep_guard_fn(self: &Arc<Self>) -> *const GuardFn {
        let b = Box::new(GuardFn {
            env_loop: Arc::as_ptr(self),
        });
        let p: *const GuardFn = &*b;
        lock_or_recover(&self.guard_fns, "env_loop::guard_fns").push(b);
        p
    }

    pub fn set_unguarded_possible(&self, on: bool) {
        self.unguarded_possible.store(on, Ordering::Release);
    }

    /// An interrupting detector runs (or the last one stopped).
    pub fn set_unguarded_active(&self, on: bool) {
        self.interrupts
            .set_unguarded(on && self.unguarded_possible.load(Ordering::Acquire));
    }

    /// What the loop thread has used in its current turn so far, from the first look that saw
    /// it running (any thread); None where its times cannot be read or no look has seen this
    /// turn running yet.
    pub fn used_in_turn(&self) -> Option<ThreadTimes> {
        let start = (*lock_turn(&self.turn_start))?;
        if start.iteration != self.iteration() {
            return None;
        }
        Some(self.times_now()?.since(start.times))
    }

    /// How long the loop thread has waited for a CPU in its current turn (Linux's run-queue wait;
    /// 0 where it cannot be read). Read on the loop thread itself, the wait that ended when it got
    /// the CPU back is counted (from another thread, a wait in progress is not). One system call:
    /// read only where an interrupt request is decided, never per turn.
    pub fn turn_cpu_wait_ns(&self) -> u64 {
        self.used_in_turn().and_then(|t| t.cpu_wait_ns).unwrap_or(0)
    }

    /// CPU time the loop thread has used so far (any thread), where it can be read.
    pub fn cpu_ns(&self) -> Option<u64> {
        self.times_now().map(|t| t.cpu_ns)
    }

    /// The loop thread's times now (any thread), where they can be read.
    fn times_now(&self) -> Option<ThreadTimes> {
        self.thread().clock.as_ref()?.read()
    }

    fn thread(&self) -> std::sync::MutexGuard<'_, LoopThread> {
        lock_or_recover(&self.thread, "env_loop thread")
    }

    /// In a forked child, on its only thread (the loop thread of this environment, which called
    /// fork()): the thread id and clock were the parent's thread's; take this thread's.
    pub fn renew_thread_after_fork(&self) {
        *self.thread() = LoopThread::current();
        *lock_turn(&self.turn_start) = None;
    }

    /// The loop's iteration counter now (any thread).
    pub fn iteration(&self) -> u64 {
        match self.turns {
            // SAFETY: `p` points into the live loop's internal fields (see `loop_count_ptr`; the
            // loop outlives this state's watches, and the JS thread is the loop's own). On another
            // thread this races with the loop thread's plain increment: formally a data race, in
            // practice a single aligned 8-byte load on the 64-bit targets we build for (x86-64,
            // AArch64: single-copy atomic), which the volatile access keeps whole and unelided. So
            // it reads a value the loop stored, at worst one turn old; the monitor only compares
            // it for change, and sees the next turn at its next look.
            Turns::Libuv(p) => unsafe { std::ptr::read_volatile(p) },
            Turns::Metrics(info) => {
                let mut m = uv_metrics_t::default();
                // SAFETY: a live loop (as above). uv_metrics_info copies the counters with memcpy:
                // the same racy but word-wise reads as above, into our own buffer.
                unsafe { info(self.loop_ptr, &mut m) };
                m.loop_count
            }
            Turns::Prepare => self.counter.get(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}
