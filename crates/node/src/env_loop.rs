//! Per-environment state: one per Node.js environment (the main thread, and each Worker) that
//! started a detector. It owns the loop's prepare handle (the heartbeat) and knows the isolate.
//!
//! Lifetime: created on the environment's first `start()`, kept until the environment is torn down.
//! An async cleanup hook stops the environment's watches and closes the prepare handle before Node
//! closes the loop, so the monitor never reads a freed loop and `uv_loop_close` finds no handle of
//! ours.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use loop_helpers_core::heartbeat::Heartbeat;
use loop_helpers_core::monitor::{self, LoopProbe};
use loop_helpers_core::{alarm, clock};

use crate::exports::GuardFn;
use crate::interrupt::Interrupts;
use crate::napi::*;
use crate::sink::NodeSink;
use crate::unguarded::Support;
use crate::uv::*;
use crate::v8;

pub struct EnvLoop {
    pub env: napi_env,
    pub isolate: *mut v8::Isolate,
    loop_ptr: *mut uv_loop_t,
    heartbeat: Heartbeat,
    /// False once the environment is being torn down: nothing may touch env, isolate or loop.
    alive: AtomicBool,
    pub interrupts: Interrupts,
    support: Mutex<Option<Arc<Support>>>,
    /// Data of the guard functions handed to JavaScript (freed with the environment). Boxed:
    /// JavaScript holds their addresses, which must not move when the Vec grows.
    #[allow(clippy::vec_box)]
    guard_fns: Mutex<Vec<Box<GuardFn>>>,
    /// Unguarded code can be recovered from here (after-termination callbacks, async_wrap).
    unguarded_possible: AtomicBool,
    /// The uv_prepare_t (storage sized by uv_handle_size), owned by libuv between init and close.
    prepare: *mut uv_handle_t,
    inner: Mutex<Inner>,
}

struct Inner {
    watches: Vec<(u64, Arc<NodeSink>)>,
    prepare_running: bool,
    /// This thread's SIGALRM was unblocked before we blocked it.
    unblock_sigalrm_on_idle: bool,
    cleanup_handle: napi_async_cleanup_hook_handle,
}

// SAFETY: the raw pointers are only dereferenced on the environment's own thread (env, loop via
// the prepare handle, isolate through V8 calls documented as thread-safe: RequestInterrupt), or,
// for `loop_ptr`, through uv_metrics_idle_time, which takes the loop's metrics mutex. `alive` and
// the monitor's registry lock order every use before teardown.
unsafe impl Send for EnvLoop {}
unsafe impl Sync for EnvLoop {}

impl LoopProbe for EnvLoop {
    fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }
    fn idle_time_ns(&self) -> u64 {
        if !self.alive.load(Ordering::Acquire) {
            return 0;
        }
        // SAFETY: the loop outlives every registered watch: the cleanup hook unregisters them
        // (under the monitor's registry lock, which the caller holds) before the loop is closed.
        unsafe { uv_metrics_idle_time(self.loop_ptr) }
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" fn on_prepare(handle: *mut uv_handle_t) {
    // The loop's hot path: two clock reads and the seqlock stores. Nothing here can panic.
    let st = uv_handle_get_data(handle) as *const EnvLoop;
    if st.is_null() {
        return;
    }
    // SAFETY: the handle's data is the EnvLoop whose Arc reference the handle holds until
    // on_prepare_closed; libuv runs this callback on the loop thread before that.
    let st = &*st;
    let now = uv_hrtime();
    let idle = uv_metrics_idle_time(st.loop_ptr);
    if st.heartbeat.beat(now, idle) {
        alarm::wake();
    }
}

unsafe extern "C" fn on_prepare_closed(handle: *mut uv_handle_t) {
    let st = uv_handle_get_data(handle) as *const EnvLoop;
    // SAFETY: `handle` was allocated in `EnvLoop::create` as a boxed [u64] slice of this length.
    let words = uv_handle_size(UV_PREPARE).div_ceil(8);
    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
        handle as *mut u64,
        words,
    )));
    if !st.is_null() {
        // SAFETY: the Arc reference handed to the cleanup hook in `create` is released here, once.
        let st = Arc::from_raw(st);
        let h = lock(&st.inner).cleanup_handle;
        if !h.is_null() {
            napi_remove_async_cleanup_hook(h);
        }
    }
}

unsafe extern "C" fn on_env_cleanup(_handle: napi_async_cleanup_hook_handle, arg: *mut c_void) {
    // SAFETY: `arg` is the handle's Arc reference (see `create`), alive until on_prepare_closed;
    // borrow it as an Arc without taking it over.
    let p = arg as *const EnvLoop;
    Arc::increment_strong_count(p);
    let st = Arc::from_raw(p);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.teardown()));
}

impl EnvLoop {
    /// The state of `env`, created on first use.
    ///
    /// # Safety
    /// Must be called on `env`'s JavaScript thread, inside a Node-API callback.
    pub unsafe fn get_or_create(env: napi_env) -> Result<Arc<EnvLoop>, String> {
        let mut data: *mut c_void = std::ptr::null_mut();
        if napi_get_instance_data(env, &mut data) == NAPI_OK && !data.is_null() {
            let p = data as *const EnvLoop;
            Arc::increment_strong_count(p);
            return Ok(Arc::from_raw(p));
        }
        let st = Self::create(env)?;
        // The instance data holds one reference, released by Node when the env goes away.
        unsafe extern "C" fn release(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
            drop(Arc::from_raw(data as *const EnvLoop));
        }
        let raw = Arc::into_raw(st.clone()) as *mut c_void;
        if napi_set_instance_data(env, raw, Some(release), std::ptr::null_mut()) != NAPI_OK {
            drop(Arc::from_raw(raw as *const EnvLoop));
        }
        Ok(st)
    }

    unsafe fn create(env: napi_env) -> Result<Arc<EnvLoop>, String> {
        let mut loop_ptr: *mut uv_loop_t = std::ptr::null_mut();
        if napi_get_uv_event_loop(env, &mut loop_ptr) != NAPI_OK || loop_ptr.is_null() {
            return Err("napi_get_uv_event_loop failed".into());
        }
        let words = uv_handle_size(UV_PREPARE).div_ceil(8);
        let prepare = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut uv_handle_t;
        let st = Arc::new(EnvLoop {
            env,
            isolate: v8::current_isolate(),
            loop_ptr,
            heartbeat: Heartbeat::new(uv_hrtime(), uv_metrics_idle_time(loop_ptr)),
            alive: AtomicBool::new(true),
            interrupts: Interrupts::default(),
            support: Mutex::new(None),
            guard_fns: Mutex::new(Vec::new()),
            unguarded_possible: AtomicBool::new(false),
            prepare,
            inner: Mutex::new(Inner {
                watches: Vec::new(),
                prepare_running: false,
                unblock_sigalrm_on_idle: false,
                cleanup_handle: std::ptr::null_mut(),
            }),
        });
        let rc = uv_prepare_init(loop_ptr, prepare);
        if rc != 0 {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                prepare as *mut u64,
                words,
            )));
            return Err(format!("uv_prepare_init failed ({rc})"));
        }
        // The handle must never keep the process alive.
        uv_unref(prepare);
        // This reference is owned by the handle and released in on_prepare_closed.
        let raw = Arc::into_raw(st.clone());
        uv_handle_set_data(prepare, raw as *mut c_void);
        let mut handle: napi_async_cleanup_hook_handle = std::ptr::null_mut();
        if napi_add_async_cleanup_hook(env, Some(on_env_cleanup), raw as *mut c_void, &mut handle)
            != NAPI_OK
        {
            // Without the hook a Worker's teardown would find our handle open: do not watch.
            uv_close(prepare, Some(on_prepare_closed));
            return Err("napi_add_async_cleanup_hook failed".into());
        }
        lock(&st.inner).cleanup_handle = handle;
        Ok(st)
    }

    /// Registers a watch of this loop with the monitor (on the JS thread).
    pub fn add_watch(
        self: &Arc<Self>,
        cfg: monitor::WatchConfig,
        sink: Arc<NodeSink>,
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
        if !inner.prepare_running {
            // SAFETY: on the loop's thread; the handle was initialised in `create` and is open.
            unsafe {
                self.heartbeat
                    .beat(clock::now_ns(), uv_metrics_idle_time(self.loop_ptr));
                let rc = uv_prepare_start(self.prepare, Some(on_prepare));
                if rc != 0 {
                    self.idle_if_unwatched(&mut inner);
                    return Err(format!("uv_prepare_start failed ({rc})"));
                }
            }
            inner.prepare_running = true;
        }
        let probe: Arc<dyn LoopProbe> = self.clone();
        match monitor::register(cfg, probe, sink.clone()) {
            Ok(id) => {
                inner.watches.push((id, sink));
                Ok(id)
            }
            Err(e) => {
                self.idle_if_unwatched(&mut inner);
                Err(format!("cannot start the monitor: {e}"))
            }
        }
    }

    /// Stops one watch (on the JS thread). Returns the record of a block in progress, if any.
    pub fn remove_watch(&self, id: u64) -> Result<Option<String>, String> {
        let mut inner = lock(&self.inner);
        let Some(pos) = inner.watches.iter().position(|(w, _)| *w == id) else {
            return Ok(None);
        };
        let (_, sink) = inner.watches.remove(pos);
        let partial = monitor::unregister(id).map_err(|e| format!("stopping the monitor: {e}"));
        sink.close();
        self.idle_if_unwatched(&mut inner);
        partial
    }

    fn idle_if_unwatched(&self, inner: &mut Inner) {
        if !inner.watches.is_empty() {
            return;
        }
        if inner.prepare_running {
            // SAFETY: on the loop's thread, handle open.
            unsafe { uv_prepare_stop(self.prepare) };
            inner.prepare_running = false;
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
            let _ = self.remove_watch(id);
        }
        self.interrupts.clear();
        self.interrupts.set_unguarded(false);
        // SAFETY: on our JS thread; the isolate is alive during environment cleanup.
        unsafe { crate::unguarded::disarm(self) };
        self.alive.store(false, Ordering::Release);
        // SAFETY: on the loop's thread; the close callback frees the handle and removes the hook.
        unsafe {
            uv_prepare_stop(self.prepare);
            uv_close(self.prepare, Some(on_prepare_closed));
        }
    }

    /// Interrupt support (installed on first use by `installInterrupts`).
    pub fn support(&self) -> Option<Arc<Support>> {
        self.support
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_support(&self, s: Arc<Support>) {
        *self.support.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// Keeps a guard function's data alive as long as the environment; returns its address.
    pub fn keep_guard_fn(&self, g: GuardFn) -> *const GuardFn {
        let b = Box::new(g);
        let p: *const GuardFn = &*b;
        self.guard_fns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b);
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

    /// The loop iteration now (the latest heartbeat).
    pub fn iteration(&self) -> u64 {
        self.heartbeat.read().iteration
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}
