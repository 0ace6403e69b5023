//! Whether an environment's thread is in a garbage collection now, and since when: V8's GC
//! prologue and epilogue callbacks mark it, the monitor reads it when a warning goes out without a
//! stack (the thread did not reach an interrupt check: native code, or a long collection).
//!
//! Registered on the environment's thread while it has a running detector, removed with the
//! last one. Cost: per collection, the two callbacks (a clock read and three atomic stores); per
//! loop turn, nothing (measured in docs/design/native-blocks.md).

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use loop_helpers_core::clock;

use crate::v8;

/// The collection in progress. Written by the callbacks on the environment's thread only; read
/// from the monitor thread.
#[derive(Default)]
pub struct GcState {
    /// Collections in progress: V8 does not nest them, but weak callbacks (a kind of their own)
    /// may run inside another's epilogue; the outermost one is reported.
    depth: AtomicU32,
    /// V8's `GCType` bits of the outermost collection in progress.
    kind: AtomicU32,
    /// When it began (monotonic ns).
    since_ns: AtomicU64,
}

/// V8's GC prologue callback.
///
/// # Safety
/// Registered by [`GcState::watch`] only, with its `data`: a `GcState` that outlives the
/// registration.
unsafe extern "C" fn on_gc_start(
    _isolate: *mut v8::Isolate,
    kind: c_int,
    _flags: c_int,
    data: *mut c_void,
) {
    // SAFETY: `data` is the GcState registered with these callbacks; it is removed before the
    // state is dropped (see `GcState::watch`). Nothing here can panic.
    let s = unsafe { &*(data as *const GcState) };
    if s.depth.load(Ordering::Relaxed) == 0 {
        s.kind.store(kind as u32, Ordering::Relaxed);
        s.since_ns.store(clock::now_ns(), Ordering::Relaxed);
    }
    // Release: a reader that sees the depth sees the kind and start above.
    s.depth.fetch_add(1, Ordering::Release);
}

/// V8's GC epilogue callback.
///
/// # Safety
/// As for [`on_gc_start`].
unsafe extern "C" fn on_gc_end(
    _isolate: *mut v8::Isolate,
    _kind: c_int,
    _flags: c_int,
    data: *mut c_void,
) {
    // SAFETY: as in on_gc_start.
    let s = unsafe { &*(data as *const GcState) };
    // A saturating decrement: callbacks registered while a collection was already running (which
    // cannot happen: registration is on this thread, outside collections) would end one more
    // collection than they began.
    let _ = s
        .depth
        .fetch_update(Ordering::Release, Ordering::Relaxed, |d| d.checked_sub(1));
}

impl GcState {
    /// The collection in progress: (V8's `GCType` bits, when it began), or None. Any thread.
    pub fn current(&self) -> Option<(u32, u64)> {
        if self.depth.load(Ordering::Acquire) == 0 {
            return None;
        }
        // A collection that ended and another that began between these loads give the newer
        // one's kind and start: still a collection in progress, as the depth said.
        Some((
            self.kind.load(Ordering::Relaxed),
            self.since_ns.load(Ordering::Relaxed),
        ))
    }

    /// Starts (or stops) marking `isolate`'s collections here. Returns false when V8's entry points
    /// are missing (see `v8::gc_callbacks_support`).
    ///
    /// # Safety
    /// On `isolate`'s thread, outside a collection; `self` must stay where it is until the
    /// marking is stopped (it is a field of the environment's `EnvLoop`, which outlives its
    /// watches).
    pub unsafe fn watch(&self, isolate: *mut v8::Isolate, on: bool) -> bool {
        // SAFETY: the caller is on `isolate`'s thread outside a collection, and keeps `self` in
        // place until the callbacks are removed, so their `data` stays valid.
        let done = unsafe {
            v8::set_gc_callbacks(
                isolate,
                on,
                on_gc_start,
                on_gc_end,
                self as *const GcState as *mut c_void,
            )
        };
        if !on {
            self.depth.store(0, Ordering::Relaxed);
        }
        done
    }
}
