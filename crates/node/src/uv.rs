//! The few libuv functions used directly. Node exports every public `uv_*` symbol.

#![allow(non_camel_case_types)]

use std::os::raw::{c_int, c_void};

#[repr(C)]
pub struct uv_loop_t {
    _opaque: [u8; 0],
}

/// A libuv handle of any type; only ever used behind a pointer.
#[repr(C)]
pub struct uv_handle_t {
    _opaque: [u8; 0],
}

/// `UV_ASYNC` and `UV_PREPARE` in `uv_handle_type` (stable since libuv 1.0).
pub const UV_ASYNC: c_int = 1;
pub const UV_PREPARE: c_int = 9;

/// The public head of `uv_loop_t` (uv.h, unchanged through libuv 1.x): enough to read how many
/// requests are active.
#[repr(C)]
pub struct uv_loop_head {
    pub data: *mut c_void,
    pub active_handles: std::os::raw::c_uint,
    pub handle_queue: [*mut c_void; 2],
    /// `union { void* unused; unsigned int count; } active_reqs`
    pub active_reqs: ActiveReqs,
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
    (*(lp as *const uv_loop_head)).active_reqs.count
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
    pub fn uv_hrtime() -> u64;
    pub fn uv_default_loop() -> *mut uv_loop_t;
    pub fn uv_metrics_idle_time(lp: *mut uv_loop_t) -> u64;
    pub fn uv_loop_fork(lp: *mut uv_loop_t) -> c_int;
    pub fn uv_loop_alive(lp: *const uv_loop_t) -> c_int;
    pub fn uv_async_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t, cb: uv_async_cb) -> c_int;
    pub fn uv_async_send(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_ref(handle: *mut uv_handle_t);
}
