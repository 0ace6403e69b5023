//! The few libuv functions used directly. Node exports every public `uv_*` symbol.

#![allow(non_camel_case_types)]

use std::os::raw::{c_int, c_void};

loop_helpers_core::opaque_types! {
    /// A libuv event loop; only ever used behind a pointer (its public head is [`uv_loop_head`]).
    pub uv_loop_t;
    /// A libuv handle of any type; only ever used behind a pointer.
    pub uv_handle_t;
}

/// `UV_ASYNC` and `UV_PREPARE` in `uv_handle_type` (stable since libuv 1.0).
pub const UV_ASYNC: c_int = 1;
pub const UV_PREPARE: c_int = 9;

/// The public head of `uv_loop_t` (uv.h, unchanged through libuv 1.x): enough to read how many
/// requests are active, and where libuv keeps its internal fields.
#[repr(C)]
pub struct uv_loop_head {
    pub data: *mut c_void,
    pub active_handles: std::os::raw::c_uint,
    pub handle_queue: [*mut c_void; 2],
    /// `union { void* unused; unsigned int count; } active_reqs`
    pub active_reqs: ActiveReqs,
    /// `void* internal_fields` (libuv >= 1.39): a `uv__loop_internal_fields_t`.
    pub internal_fields: *mut c_void,
}

/// `uv_metrics_t` (uv.h, libuv >= 1.45).
#[repr(C)]
#[derive(Default)]
pub struct uv_metrics_t {
    pub loop_count: u64,
    pub events: u64,
    pub events_waiting: u64,
    pub reserved: [u64; 13],
}

/// `uv_metrics_info()`: libuv >= 1.45 only (Node.js >= 20.3), so resolved at run time.
pub type uv_metrics_info_fn = unsafe extern "C" fn(*mut uv_loop_t, *mut uv_metrics_t) -> c_int;

/// `uv_metrics_info` in the running node executable, if its libuv has it.
pub fn uv_metrics_info_fn() -> Option<uv_metrics_info_fn> {
    let p = loop_helpers_core::symbols::lookup(c"uv_metrics_info")?;
    // SAFETY: `uv_metrics_info` is libuv's function of exactly this signature.
    Some(unsafe { std::mem::transmute::<*mut c_void, uv_metrics_info_fn>(p.as_ptr()) })
}

/// Where libuv keeps a loop's iteration counter (`uv_metrics_t.loop_count`), found from the layout
/// libuv has used since 1.45 and checked against `uv_metrics_info()`, or None.
///
/// libuv (src/uv-common.h, 1.45 to 1.52 and master) keeps `struct uv__loop_internal_fields_s {
/// unsigned int flags; uv__loop_metrics_t loop_metrics; ... }` behind `loop->internal_fields`,
/// and `uv__loop_metrics_t` begins with the public `uv_metrics_t`: the counter is the 8-byte word
/// at offset 8 (after `flags` and its padding).
///
/// # Safety
/// `lp` is a live loop, and this runs on its thread (nothing writes the counters meanwhile).
/// `info` is libuv's `uv_metrics_info` (from [`uv_metrics_info_fn`]).
pub unsafe fn loop_count_ptr(lp: *mut uv_loop_t, info: uv_metrics_info_fn) -> Option<*const u64> {
    // SAFETY: uv_version takes nothing and reads a constant.
    if unsafe { uv_version() } >> 16 != 1 {
        return None;
    }
    // SAFETY: `lp` is a live uv_loop_t (the caller's contract), whose public head `uv_loop_head`
    // mirrors (libuv 1.x, checked above).
    let internal = unsafe { (*(lp as *const uv_loop_head)).internal_fields };
    if internal.is_null() {
        return None;
    }
    let mut m = uv_metrics_t::default();
    // SAFETY: `info` is uv_metrics_info (the caller's contract), `lp` a live loop on this thread,
    // `m` a live local of the layout it fills.
    if unsafe { info(lp, &mut m) } != 0 {
        return None;
    }
    // SAFETY: libuv allocates the internal fields (far more than 32 bytes) for the loop's
    // lifetime, so these three aligned words are readable; on the loop's thread (the caller's
    // contract) nothing writes them meanwhile.
    unsafe {
        let p = (internal as *const u8).add(8) as *const u64;
        // The three public counters must read back the same: loop_count, events, events_waiting.
        (*p == m.loop_count && *p.add(1) == m.events && *p.add(2) == m.events_waiting).then_some(p)
    }
}

#[repr(C)]
pub union ActiveReqs {
    pub unused: *mut c_void,
    pub count: std::os::raw::c_uint,
}

pub type uv_async_cb = Option<unsafe extern "C" fn(*mut uv_handle_t)>;

/// Active requests of a loop: threadpool work (fs, dns.lookup, crypto, zlib, addons' async work)
/// and pending stream writes, connects and shutdowns.
///
/// # Safety
/// `lp` is a live loop, read on its own thread.
pub unsafe fn active_requests(lp: *mut uv_loop_t) -> u32 {
    // SAFETY: `lp` is a live loop read on its thread (the caller's contract); libuv 1.x keeps
    // `active_reqs.count` in the public head, and only ever uses the union as the count.
    unsafe { (*(lp as *const uv_loop_head)).active_reqs.count }
}

pub type uv_prepare_cb = Option<unsafe extern "C" fn(*mut uv_handle_t)>;
pub type uv_close_cb = Option<unsafe extern "C" fn(*mut uv_handle_t)>;

extern "C" {
    pub fn uv_handle_size(kind: c_int) -> usize;
    pub fn uv_prepare_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t) -> c_int;
    pub fn uv_prepare_start(handle: *mut uv_handle_t, cb: uv_prepare_cb) -> c_int;
    pub fn uv_prepare_stop(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_close(handle: *mut uv_handle_t, cb: uv_close_cb);
    pub fn uv_unref(handle: *mut uv_handle_t);
    pub fn uv_handle_set_data(handle: *mut uv_handle_t, data: *mut c_void);
    pub fn uv_handle_get_data(handle: *const uv_handle_t) -> *mut c_void;
    pub fn uv_default_loop() -> *mut uv_loop_t;
    pub fn uv_metrics_idle_time(lp: *mut uv_loop_t) -> u64;
    pub fn uv_now(lp: *const uv_loop_t) -> u64;
    pub fn uv_version() -> std::os::raw::c_uint;
    pub fn uv_loop_fork(lp: *mut uv_loop_t) -> c_int;
    pub fn uv_loop_alive(lp: *const uv_loop_t) -> c_int;
    pub fn uv_async_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t, cb: uv_async_cb) -> c_int;
    pub fn uv_async_send(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_ref(handle: *mut uv_handle_t);
}
