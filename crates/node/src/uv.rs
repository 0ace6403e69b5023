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

/// `UV_PREPARE` in `uv_handle_type` (stable since libuv 1.0).
pub const UV_PREPARE: c_int = 9;

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
}
