//! The V8 entry points the `asyncContext` snapshot needs on top of Node-API, resolved at run time
//! like those of [`crate::v8`] (same ABI facts; see that module's comment), plus:
//! - `Isolate::GetContinuationPreservedEmbedderData()` returns `Local<Value>`: where Node keeps the
//!   current AsyncContextFrame (Node 24+, and 22 with `--experimental-async-context-frame`);
//! - `Maybe<bool>` (`{ bool has_value_; bool value_; }`, trivially copyable) is returned in a
//!   register like a `#[repr(C)]` struct of two bools;
//! - `Map::Size()` / `Set::Size()` return `size_t`;
//! - `v8::TryCatch` is constructed in place in a stack buffer larger than the class in any V8
//!   (48 bytes in 11.3 to 14.6): its constructor registers the address, the destructor
//!   unregisters it, and the object never moves in between.
//!
//! Every entry point used here only reads V8's own data structures or allocates plain arrays and
//! strings; none runs JavaScript (see `context_snapshot.rs` for why each is safe to call).

use std::os::raw::c_void;
use std::sync::OnceLock;

use crate::napi::napi_value;
use crate::v8::{lookup_all, Isolate, DISABLE_ENV};

/// A `Local<T>`: the handle slot's address.
pub type Local = *mut c_void;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MaybeBool {
    pub has_value: bool,
    pub value: bool,
}

type IsolateLocalFn = unsafe extern "C" fn(*mut Isolate) -> Local;
type PredicateFn = unsafe extern "C" fn(Local) -> bool;
type LocalGetterFn = unsafe extern "C" fn(Local) -> Local;
type SizeFn = unsafe extern "C" fn(Local) -> usize;
type HasAccessorFn = unsafe extern "C" fn(Local, Local, Local) -> MaybeBool;
type TryCatchNewFn = unsafe extern "C" fn(*mut TryCatchBuf, *mut Isolate);
type TryCatchDropFn = unsafe extern "C" fn(*mut TryCatchBuf);
type TryCatchCaughtFn = unsafe extern "C" fn(*const TryCatchBuf) -> bool;

pub struct ValueApi {
    pub embedder_data: IsolateLocalFn,
    pub current_context: IsolateLocalFn,
    pub is_proxy: PredicateFn,
    pub is_map: PredicateFn,
    pub is_set: PredicateFn,
    pub map_as_array: LocalGetterFn,
    pub set_as_array: LocalGetterFn,
    pub map_size: SizeFn,
    pub set_size: SizeFn,
    pub constructor_name: LocalGetterFn,
    /// `Object::HasRealNamedCallbackProperty(context, key)`: whether an own property is an
    /// accessor (JavaScript getter/setter or native accessor), without calling it.
    pub has_accessor: HasAccessorFn,
    try_catch_new: TryCatchNewFn,
    try_catch_drop: TryCatchDropFn,
    try_catch_caught: TryCatchCaughtFn,
}

/// Room for a `v8::TryCatch`.
#[repr(C, align(16))]
pub struct TryCatchBuf([u8; 256]);

static API: OnceLock<Result<ValueApi, String>> = OnceLock::new();

fn resolve() -> Result<ValueApi, String> {
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| v == "1") {
        return Err(format!("disabled by {DISABLE_ENV}=1"));
    }
    crate::v8::stack_capture_support().map_err(|e| format!("needs stack capture ({e})"))?;
    let p = lookup_all([
        c"_ZN2v87Isolate36GetContinuationPreservedEmbedderDataEv",
        c"_ZN2v87Isolate17GetCurrentContextEv",
        c"_ZNK2v85Value7IsProxyEv",
        c"_ZNK2v85Value5IsMapEv",
        c"_ZNK2v85Value5IsSetEv",
        c"_ZNK2v83Map7AsArrayEv",
        c"_ZNK2v83Set7AsArrayEv",
        c"_ZNK2v83Map4SizeEv",
        c"_ZNK2v83Set4SizeEv",
        c"_ZN2v86Object18GetConstructorNameEv",
        c"_ZN2v86Object28HasRealNamedCallbackPropertyENS_5LocalINS_7ContextEEENS1_INS_4NameEEE",
        c"_ZN2v88TryCatchC1EPNS_7IsolateE",
        c"_ZN2v88TryCatchD1Ev",
        c"_ZNK2v88TryCatch9HasCaughtEv",
    ])?;
    // SAFETY: each pointer is the address of the exported function whose mangled name encodes the
    // signature declared for it (module comment: `this` first, Locals as one pointer).
    unsafe {
        use std::mem::transmute as t;
        Ok(ValueApi {
            embedder_data: t::<*mut c_void, IsolateLocalFn>(p[0]),
            current_context: t::<*mut c_void, IsolateLocalFn>(p[1]),
            is_proxy: t::<*mut c_void, PredicateFn>(p[2]),
            is_map: t::<*mut c_void, PredicateFn>(p[3]),
            is_set: t::<*mut c_void, PredicateFn>(p[4]),
            map_as_array: t::<*mut c_void, LocalGetterFn>(p[5]),
            set_as_array: t::<*mut c_void, LocalGetterFn>(p[6]),
            map_size: t::<*mut c_void, SizeFn>(p[7]),
            set_size: t::<*mut c_void, SizeFn>(p[8]),
            constructor_name: t::<*mut c_void, LocalGetterFn>(p[9]),
            has_accessor: t::<*mut c_void, HasAccessorFn>(p[10]),
            try_catch_new: t::<*mut c_void, TryCatchNewFn>(p[11]),
            try_catch_drop: t::<*mut c_void, TryCatchDropFn>(p[12]),
            try_catch_caught: t::<*mut c_void, TryCatchCaughtFn>(p[13]),
        })
    }
}

/// The entry points, or why they are missing.
pub fn api() -> Result<&'static ValueApi, &'static str> {
    API.get_or_init(resolve).as_ref().map_err(|e| e.as_str())
}

impl ValueApi {
    /// Runs `f` inside a `v8::TryCatch`, so that an exception raised by a V8 call in it (none is
    /// expected: see `context_snapshot.rs`) is caught here and never reaches the interrupted
    /// JavaScript. Returns None when one was caught. A termination is not swallowed: V8 rethrows
    /// it from the destructor.
    ///
    /// # Safety
    /// On `isolate`'s thread, with V8 usable (a Node-API callback or an interrupt callback).
    pub unsafe fn try_catch<R>(&self, isolate: *mut Isolate, f: impl FnOnce() -> R) -> Option<R> {
        let mut buf = std::mem::MaybeUninit::<TryCatchBuf>::zeroed();
        let tc = buf.as_mut_ptr();
        (self.try_catch_new)(tc, isolate);
        // Nothing between the constructor and the destructor may unwind past this frame (the
        // buffer is registered with V8): the caller's closures are wrapped in catch_unwind.
        let out = loop_helpers_core::panics::catch("v8_values::try_catch", f);
        let caught = (self.try_catch_caught)(tc);
        (self.try_catch_drop)(tc);
        if caught {
            None
        } else {
            out
        }
    }

    /// The isolate's continuation-preserved embedder data (undefined when never set).
    ///
    /// # Safety
    /// On `isolate`'s thread, inside an open handle scope.
    pub unsafe fn current_frame(&self, isolate: *mut Isolate) -> napi_value {
        (self.embedder_data)(isolate)
    }
}
