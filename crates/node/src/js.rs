//! Small helpers for reading arguments and returning values through Node-API.
//!
//! # Safety (every function here)
//! Call on `env`'s JavaScript thread, inside a Node-API callback (an open handle scope), with
//! values that belong to that `env`. Node-API checks its arguments and reports a status instead of
//! crashing on a wrong type; every status is checked or its failure mapped to a neutral value.

use std::ffi::CString;
use std::os::raw::c_char;

use crate::napi::*;

/// Throws a JavaScript Error with a stable `code`; returns null (which Node reads as undefined).
pub unsafe fn throw(env: napi_env, code: &str, msg: &str) -> napi_value {
    let code = CString::new(code).unwrap_or_default();
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    napi_throw_error(env, code.as_ptr(), msg.as_ptr());
    std::ptr::null_mut()
}

pub unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> [napi_value; N] {
    let mut argv = [std::ptr::null_mut(); N];
    let mut argc = N;
    napi_get_cb_info(
        env,
        info,
        &mut argc,
        argv.as_mut_ptr(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    argv
}

pub unsafe fn f64_arg(env: napi_env, v: napi_value) -> Option<f64> {
    let mut out = 0.0;
    (napi_get_value_double(env, v, &mut out) == NAPI_OK).then_some(out)
}

pub unsafe fn bool_arg(env: napi_env, v: napi_value) -> Option<bool> {
    let mut out = false;
    (napi_get_value_bool(env, v, &mut out) == NAPI_OK).then_some(out)
}

pub unsafe fn string_arg(env: napi_env, v: napi_value) -> Option<String> {
    let mut len = 0usize;
    if napi_get_value_string_utf8(env, v, std::ptr::null_mut(), 0, &mut len) != NAPI_OK {
        return None;
    }
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    if napi_get_value_string_utf8(
        env,
        v,
        buf.as_mut_ptr() as *mut c_char,
        buf.len(),
        &mut written,
    ) != NAPI_OK
    {
        return None;
    }
    buf.truncate(written);
    String::from_utf8(buf).ok()
}

pub unsafe fn is_function(env: napi_env, v: napi_value) -> bool {
    let mut t = 0;
    napi_typeof(env, v, &mut t) == NAPI_OK && t == NAPI_FUNCTION
}

pub unsafe fn string(env: napi_env, s: &str) -> napi_value {
    let mut out = std::ptr::null_mut();
    napi_create_string_utf8(env, s.as_ptr() as *const c_char, s.len(), &mut out);
    out
}

pub unsafe fn number(env: napi_env, n: f64) -> napi_value {
    let mut out = std::ptr::null_mut();
    napi_create_double(env, n, &mut out);
    out
}

pub unsafe fn undefined(env: napi_env) -> napi_value {
    let mut out = std::ptr::null_mut();
    napi_get_undefined(env, &mut out);
    out
}

pub unsafe fn null(env: napi_env) -> napi_value {
    let mut out = std::ptr::null_mut();
    napi_get_null(env, &mut out);
    out
}

/// The elements of a JavaScript array; None when `v` is not an array.
pub unsafe fn array_elements(env: napi_env, v: napi_value) -> Option<Vec<napi_value>> {
    let mut n = 0u32;
    if napi_get_array_length(env, v, &mut n) != NAPI_OK {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut e = std::ptr::null_mut();
        napi_get_element(env, v, i, &mut e);
        out.push(e);
    }
    Some(out)
}

/// An array of numbers.
pub unsafe fn numbers(env: napi_env, values: &[f64]) -> napi_value {
    let mut arr = std::ptr::null_mut();
    napi_create_array_with_length(env, values.len(), &mut arr);
    for (i, v) in values.iter().enumerate() {
        napi_set_element(env, arr, i as u32, number(env, *v));
    }
    arr
}
