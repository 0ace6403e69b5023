//! Small helpers for reading arguments and returning values through Node-API.
//!
//! # Safety (every function here)
//! Call on `env`'s JavaScript thread, inside a Node-API callback (an open handle scope), with
//! values that belong to that `env`. Node-API checks its arguments and reports a status instead of
//! crashing on a wrong type; every status is checked or its failure mapped to a neutral value.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use crate::napi::*;

/// Throws a JavaScript Error with a stable `code`; returns null (which Node reads as undefined).
pub unsafe fn throw(env: napi_env, code: &str, msg: &str) -> napi_value {
    let code = CString::new(code).unwrap_or_default();
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: this module's contract (env's JavaScript thread, inside a callback); both strings
    // are NUL-terminated and outlive the call.
    unsafe { napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
    std::ptr::null_mut()
}

pub unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> [napi_value; N] {
    let mut argv = [std::ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: this module's contract; `info` is the callback's own. `argv` has room for `argc` (N)
    // values, and Node-API writes no more than that (missing arguments read as undefined).
    unsafe {
        napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    argv
}

/// (data pointer, element count) of a typed array of the expected kind (`napi_typedarray_type`),
/// or None for anything else.
///
/// # Safety
/// This module's contract, with `v` a value of env. `T` must be the element type of `kind`.
pub unsafe fn typed_array<T>(env: napi_env, v: napi_value, kind: i32) -> Option<(*mut T, usize)> {
    let mut k = -1;
    let mut len = 0usize;
    let mut data = std::ptr::null_mut();
    // SAFETY: the caller's contract; live locals out, null for the outputs not wanted.
    let status = unsafe {
        napi_get_typedarray_info(
            env,
            v,
            &mut k,
            &mut len,
            &mut data,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (status == NAPI_OK && k == kind && !data.is_null()).then_some((data as *mut T, len))
}

pub unsafe fn f64_arg(env: napi_env, v: napi_value) -> Option<f64> {
    let mut out = 0.0;
    // SAFETY: this module's contract; `out` is a live local.
    (unsafe { napi_get_value_double(env, v, &mut out) } == NAPI_OK).then_some(out)
}

pub unsafe fn bool_arg(env: napi_env, v: napi_value) -> Option<bool> {
    let mut out = false;
    // SAFETY: this module's contract; `out` is a live local.
    (unsafe { napi_get_value_bool(env, v, &mut out) } == NAPI_OK).then_some(out)
}

pub unsafe fn string_arg(env: napi_env, v: napi_value) -> Option<String> {
    let mut len = 0usize;
    // SAFETY: this module's contract; a null buffer asks for the length only.
    if unsafe { napi_get_value_string_utf8(env, v, std::ptr::null_mut(), 0, &mut len) } != NAPI_OK {
        return None;
    }
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    // SAFETY: this module's contract; `buf` holds `buf.len()` bytes (the string and its NUL), the
    // most Node-API writes.
    if unsafe {
        napi_get_value_string_utf8(
            env,
            v,
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            &mut written,
        )
    } != NAPI_OK
    {
        return None;
    }
    buf.truncate(written);
    String::from_utf8(buf).ok()
}

pub unsafe fn is_function(env: napi_env, v: napi_value) -> bool {
    let mut t = 0;
    // SAFETY: this module's contract; `t` is a live local.
    let status = unsafe { napi_typeof(env, v, &mut t) };
    status == NAPI_OK && t == NAPI_FUNCTION
}

pub unsafe fn string(env: napi_env, s: &str) -> napi_value {
    let mut out = std::ptr::null_mut();
    // SAFETY: this module's contract; `s` is `s.len()` bytes of UTF-8 (no NUL needed with a length).
    unsafe { napi_create_string_utf8(env, s.as_ptr() as *const c_char, s.len(), &mut out) };
    out
}

pub unsafe fn number(env: napi_env, n: f64) -> napi_value {
    let mut out = std::ptr::null_mut();
    // SAFETY: this module's contract; `out` is a live local.
    unsafe { napi_create_double(env, n, &mut out) };
    out
}

pub unsafe fn undefined(env: napi_env) -> napi_value {
    let mut out = std::ptr::null_mut();
    // SAFETY: this module's contract; `out` is a live local.
    unsafe { napi_get_undefined(env, &mut out) };
    out
}

pub unsafe fn null(env: napi_env) -> napi_value {
    let mut out = std::ptr::null_mut();
    // SAFETY: this module's contract; `out` is a live local.
    unsafe { napi_get_null(env, &mut out) };
    out
}

/// The elements of a JavaScript array; None when `v` is not an array.
pub unsafe fn array_elements(env: napi_env, v: napi_value) -> Option<Vec<napi_value>> {
    let mut n = 0u32;
    // SAFETY: this module's contract; `n` is a live local.
    if unsafe { napi_get_array_length(env, v, &mut n) } != NAPI_OK {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut e = std::ptr::null_mut();
        // SAFETY: as above; `v` is an array (its length was read), `e` a live local.
        unsafe { napi_get_element(env, v, i, &mut e) };
        out.push(e);
    }
    Some(out)
}

/// An array of numbers.
pub unsafe fn numbers(env: napi_env, values: &[f64]) -> napi_value {
    let mut arr = std::ptr::null_mut();
    // SAFETY: this module's contract, which `number` shares; `arr` is a live local.
    unsafe {
        napi_create_array_with_length(env, values.len(), &mut arr);
        for (i, v) in values.iter().enumerate() {
            napi_set_element(env, arr, i as u32, number(env, *v));
        }
    }
    arr
}

/// A JavaScript array of strings.
pub unsafe fn strings(env: napi_env, values: &[String]) -> napi_value {
    let mut arr = std::ptr::null_mut();
    // SAFETY: this module's contract, which `string` shares; `arr` is a live local.
    unsafe {
        napi_create_array_with_length(env, values.len(), &mut arr);
        for (i, v) in values.iter().enumerate() {
            napi_set_element(env, arr, i as u32, string(env, v));
        }
    }
    arr
}

/// JavaScript's name for the type of `v` (`typeof`, with `null` and arrays told apart), for error
/// messages.
pub unsafe fn type_name(env: napi_env, v: napi_value) -> &'static str {
    let mut t = 0;
    // SAFETY: this module's contract; `t` is a live local.
    if unsafe { napi_typeof(env, v, &mut t) } != NAPI_OK {
        return "unknown";
    }
    match t {
        NAPI_UNDEFINED => "undefined",
        NAPI_NULL => "null",
        NAPI_BOOLEAN => "boolean",
        NAPI_NUMBER => "number",
        NAPI_STRING => "string",
        NAPI_SYMBOL => "symbol",
        NAPI_FUNCTION => "function",
        NAPI_EXTERNAL => "external",
        NAPI_BIGINT => "bigint",
        NAPI_OBJECT => {
            let mut array = false;
            // SAFETY: as above; `array` is a live local.
            if unsafe { napi_is_array(env, v, &mut array) } == NAPI_OK && array {
                "array"
            } else {
                "object"
            }
        }
        _ => "unknown",
    }
}

/// The Node-API callback running on this thread, as a token its function holds as a local: what
/// is read through a borrow of it ([`Options`]) cannot be kept past the callback, because the
/// borrow cannot outlive the local. Neither `Clone` nor `Send` (the env pointer is neither).
pub struct Callback {
    env: napi_env,
}

impl Callback {
    /// The token of the callback running now on `env`'s thread.
    ///
    /// # Safety
    /// This module's contract, and the token stays a local of the exported function whose call
    /// this is (not returned, stored or leaked): everything borrowed from it relies on that.
    pub unsafe fn enter(env: napi_env) -> Self {
        Callback { env }
    }

    pub fn env(&self) -> napi_env {
        self.env
    }
}

/// An options object passed to a native function, read by property name. Each getter's error
/// names the call, the property and the type it received (`start(): options.timeoutSeconds must
/// be a number, got string`), so that a TypeScript caller out of step with the Rust side fails
/// with a message saying where.
///
/// It borrows the [`Callback`] it was read in, so keeping it past that callback does not compile;
/// that is why its getters are safe.
pub struct Options<'a> {
    cb: &'a Callback,
    obj: napi_value,
    call: &'static str,
    /// What the object is called in messages: `options`, or a nested one's path
    /// (`options.asyncContext`).
    what: &'static str,
}

impl<'a> Options<'a> {
    /// `v` as the object named `what` (`"options"`) of `call` (`"start()"`); an error when it is
    /// not an object.
    ///
    /// # Safety
    /// `v` is a value of `cb`'s env, made or received in this callback (so live until it
    /// returns, which `'a` cannot outlast).
    pub unsafe fn new(
        cb: &'a Callback,
        v: napi_value,
        call: &'static str,
        what: &'static str,
    ) -> Result<Self, String> {
        // SAFETY: in the callback `cb` stands for (its contract), `v` a value of its env (ours).
        match unsafe { type_name(cb.env, v) } {
            "object" => Ok(Options {
                cb,
                obj: v,
                call,
                what,
            }),
            other => Err(format!("{call}: {what} must be an object, got {other}")),
        }
    }

    /// The property's value (undefined when it is absent).
    pub fn get(&self, name: &CStr) -> napi_value {
        let env = self.cb.env;
        let mut out = std::ptr::null_mut();
        // SAFETY: `self` borrows the callback's token, so this runs in that callback, on its
        // thread (`Callback::enter`'s contract), and `obj` is a live value of its env (`new`'s);
        // `name` is NUL-terminated.
        unsafe {
            if napi_get_named_property(env, self.obj, name.as_ptr(), &mut out) != NAPI_OK {
                return undefined(env);
            }
        }
        out
    }

    /// What the value `v` read from this object is (`type_name`).
    fn type_of(&self, v: napi_value) -> &'static str {
        // SAFETY: as in `get`; `v` was read from `obj` in this callback.
        unsafe { type_name(self.cb.env, v) }
    }

    /// The property's value, None when it is undefined or null.
    pub fn optional(&self, name: &CStr) -> Option<napi_value> {
        let v = self.get(name);
        match self.type_of(v) {
            "undefined" | "null" => None,
            _ => Some(v),
        }
    }

    fn wrong(&self, name: &CStr, want: &str, got: &str) -> String {
        format!(
            "{}: {}.{} must be {want}, got {got}",
            self.call,
            self.what,
            name.to_string_lossy()
        )
    }

    pub fn number(&self, name: &CStr) -> Result<f64, String> {
        let v = self.get(name);
        // SAFETY: as in `get`; `v` was read from `obj` in this callback.
        unsafe { f64_arg(self.cb.env, v) }
            .ok_or_else(|| self.wrong(name, "a number", self.type_of(v)))
    }

    pub fn boolean(&self, name: &CStr) -> Result<bool, String> {
        let v = self.get(name);
        // SAFETY: as in `number`.
        unsafe { bool_arg(self.cb.env, v) }
            .ok_or_else(|| self.wrong(name, "a boolean", self.type_of(v)))
    }

    pub fn string(&self, name: &CStr) -> Result<String, String> {
        let v = self.get(name);
        // SAFETY: as in `number`.
        unsafe { string_arg(self.cb.env, v) }
            .ok_or_else(|| self.wrong(name, "a string", self.type_of(v)))
    }

    /// A string property that must be one of `allowed` (an enum): an unknown value is an error
    /// listing the known ones, never a default.
    pub fn one_of<T: Copy>(&self, name: &CStr, allowed: &[(&str, T)]) -> Result<T, String> {
        let s = self.string(name)?;
        allowed
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<String> = allowed.iter().map(|(n, _)| format!("'{n}'")).collect();
                format!(
                    "{}: unknown {}.{} '{s}' (expected {})",
                    self.call,
                    self.what,
                    name.to_string_lossy(),
                    names.join(", ")
                )
            })
    }

    /// A function property.
    pub fn function(&self, name: &CStr) -> Result<napi_value, String> {
        let v = self.get(name);
        // SAFETY: as in `number`.
        if unsafe { is_function(self.cb.env, v) } {
            Ok(v)
        } else {
            Err(self.wrong(name, "a function", self.type_of(v)))
        }
    }
}

/// A strong reference to `v` (null if it cannot be made, or `v` is null).
///
/// # Safety
/// On `env`'s JS thread.
pub unsafe fn strong_ref(env: napi_env, v: napi_value) -> napi_ref {
    let mut r = std::ptr::null_mut();
    if !v.is_null() {
        // SAFETY: on env's JS thread (the caller's contract); `v` non-null, `r` a live local.
        unsafe { napi_create_reference(env, v, 1, &mut r) };
    }
    r
}

/// The value of reference `r` in the current handle scope (null if `r` is null).
///
/// # Safety
/// On `env`'s JS thread, inside a handle scope.
pub unsafe fn ref_value(env: napi_env, r: napi_ref) -> napi_value {
    let mut v = std::ptr::null_mut();
    if !r.is_null() {
        // SAFETY: on env's JS thread inside a handle scope (the caller's contract), which holds
        // `v`; `r` non-null.
        unsafe { napi_get_reference_value(env, r, &mut v) };
    }
    v
}

/// Deletes reference `r` if it is not null.
///
/// # Safety
/// On env's JS thread; `r` ours, deleted once.
pub unsafe fn drop_ref(env: napi_env, r: napi_ref) {
    if !r.is_null() {
        // SAFETY: the caller's contract.
        unsafe { napi_delete_reference(env, r) };
    }
}
