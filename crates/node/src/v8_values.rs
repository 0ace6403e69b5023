//! The V8 entry points the `asyncContext` snapshot needs on top of Node-API, resolved at run time
//! like those of [`crate::v8`] (same ABI facts; see that module's comment), plus:
//! - `Isolate::GetContinuationPreservedEmbedderData()` returns `Local<Value>`: where Node keeps the
//!   current AsyncContextFrame (Node 24+, and 22 with `--experimental-async-context-frame`);
//! - `Maybe<bool>` (`{ bool has_value_; bool value_; }`, trivially copyable) is returned in a
//!   register like a `#[repr(C)]` struct of two bools, and `MaybeLocal<T>` (one `Local`, trivially
//!   copyable) like a pointer, null when empty;
//! - the enums of `Object::GetPropertyNames` are C++ `int`s;
//! - `Map::Size()` / `Set::Size()` return `size_t`, `Array::Length()` `uint32_t`,
//!   `Number::Value()` a `double`;
//! - `v8::TryCatch` is constructed in place in a stack buffer larger than the class in any V8
//!   (48 bytes in 11.3 to 14.6): its constructor registers the address, the destructor
//!   unregisters it, and the object never moves in between.
//!
//! Why V8 directly rather than Node-API for the reads (`Object::Get`, the `Is*` predicates,
//! `StrictEquals`...): the store is read once per block, inside the sampling interrupt, with cold
//! caches, and there every distinct function touched costs a cache miss or several. A Node-API
//! call adds its own wrapper (its `TryCatch`, a fresh `Local` of the context, `ToObject`) around
//! the same V8 call, and `napi_typeof` runs up to nine predicates. Strings, dates and BigInts still
//! go through Node-API, which hides how their V8 signatures changed between versions.
//!
//! Every entry point used here only reads V8's own data structures or allocates plain arrays and
//! strings; none runs JavaScript (see `context_snapshot.rs` for why each is safe to call).

use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

use crate::napi::napi_value;
use crate::v8::{lookup, lookup_all, Isolate, DISABLE_ENV};

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
type EqualsFn = unsafe extern "C" fn(Local, Local) -> bool;
type GetFn = unsafe extern "C" fn(Local, Local, Local) -> Local;
type GetIndexFn = unsafe extern "C" fn(Local, Local, u32) -> Local;
type PropertyNamesFn = unsafe extern "C" fn(Local, Local, c_int, c_int, c_int, c_int) -> Local;
type LengthFn = unsafe extern "C" fn(Local) -> u32;
type HasIndexFn = unsafe extern "C" fn(Local, Local, u32) -> MaybeBool;
type HasNameFn = unsafe extern "C" fn(Local, Local, Local) -> MaybeBool;
type NumberFn = unsafe extern "C" fn(Local) -> f64;
type DefineIndexFn = unsafe extern "C" fn(Local, Local, u32, Local) -> MaybeBool;
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
    /// `Value::StrictEquals`: identity for objects and symbols, never calls anything.
    pub strict_equals: EqualsFn,
    /// `Object::Get(context, key)` / `(context, index)`: only ever called for an own data
    /// property (checked first), which the lookup finds on the object itself.
    pub get: GetFn,
    pub get_index: GetIndexFn,
    /// `Object::GetPropertyNames(context, mode, filter, index filter, conversion)`.
    pub property_names: PropertyNamesFn,
    pub array_length: LengthFn,
    /// `Object::HasOwnProperty(context, index)` / `(context, name)`.
    pub has_own_index: HasIndexFn,
    pub has_own_name: HasNameFn,
    /// `Object::GetPrototypeV2()` (V8 13+) or `GetPrototype()` (V8 11-13): `[[GetPrototypeOf]]`
    /// of an ordinary object (never asked of a proxy).
    pub prototype: LocalGetterFn,
    pub number_value: NumberFn,
    /// `Object::CreateDataProperty(context, index, value)`: defines an own element, never
    /// calling a setter (`napi_set_element` is `[[Set]]`, which may find one on a prototype).
    create_data_index: DefineIndexFn,
    pub boolean_value: PredicateFn,
    pub is_string: PredicateFn,
    pub is_number: PredicateFn,
    pub is_boolean: PredicateFn,
    pub is_null: PredicateFn,
    pub is_undefined: PredicateFn,
    pub is_object: PredicateFn,
    pub is_function: PredicateFn,
    pub is_external: PredicateFn,
    pub is_bigint: PredicateFn,
    pub is_symbol: PredicateFn,
    pub is_array: PredicateFn,
    pub is_date: PredicateFn,
    pub is_typed_array: PredicateFn,
    pub is_array_buffer: PredicateFn,
    pub is_data_view: PredicateFn,
    pub is_promise: PredicateFn,
    try_catch_new: TryCatchNewFn,
    try_catch_drop: TryCatchDropFn,
    try_catch_caught: TryCatchCaughtFn,
}

/// Room for a `v8::TryCatch`.
#[repr(C, align(16))]
pub struct TryCatchBuf([u8; 256]);

/// What a value is, as far as the snapshot cares (`typeof`, with null apart).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    String,
    Number,
    Boolean,
    Null,
    Undefined,
    /// An object that is neither a function nor an External (may be a proxy).
    Object,
    Function,
    External,
    BigInt,
    Symbol,
}

/// `Object::GetPropertyNames` arguments: own properties only (`KeyCollectionMode::kOwnOnly`),
/// enumerable string keys (`ONLY_ENUMERABLE | SKIP_SYMBOLS`), indices included
/// (`IndexFilter::kIncludeIndices`), as strings (`KeyConversionMode::kConvertToString`).
const OWN_ONLY: c_int = 0;
const ENUMERABLE_STRINGS: c_int = 2 | 16;
const INCLUDE_INDICES: c_int = 0;
const CONVERT_TO_STRING: c_int = 0;

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
        c"_ZNK2v85Value12StrictEqualsENS_5LocalIS0_EE",
        c"_ZN2v86Object3GetENS_5LocalINS_7ContextEEENS1_INS_5ValueEEE",
        c"_ZN2v86Object3GetENS_5LocalINS_7ContextEEEj",
        c"_ZN2v86Object16GetPropertyNamesENS_5LocalINS_7ContextEEENS_17KeyCollectionModeENS_14PropertyFilterENS_11IndexFilterENS_17KeyConversionModeE",
        c"_ZNK2v85Array6LengthEv",
        c"_ZN2v86Object14HasOwnPropertyENS_5LocalINS_7ContextEEEj",
        c"_ZN2v86Object14HasOwnPropertyENS_5LocalINS_7ContextEEENS1_INS_4NameEEE",
        c"_ZNK2v86Number5ValueEv",
        c"_ZNK2v87Boolean5ValueEv",
        c"_ZNK2v85Value12FullIsStringEv",
        c"_ZNK2v85Value8IsNumberEv",
        c"_ZNK2v85Value9IsBooleanEv",
        c"_ZNK2v85Value10FullIsNullEv",
        c"_ZNK2v85Value15FullIsUndefinedEv",
        c"_ZNK2v85Value8IsObjectEv",
        c"_ZNK2v85Value10IsFunctionEv",
        c"_ZNK2v85Value10IsExternalEv",
        c"_ZNK2v85Value8IsBigIntEv",
        c"_ZNK2v85Value8IsSymbolEv",
        c"_ZNK2v85Value7IsArrayEv",
        c"_ZN2v86Object18CreateDataPropertyENS_5LocalINS_7ContextEEEjNS1_INS_5ValueEEE",
        c"_ZNK2v85Value6IsDateEv",
        c"_ZNK2v85Value12IsTypedArrayEv",
        c"_ZNK2v85Value13IsArrayBufferEv",
        c"_ZNK2v85Value10IsDataViewEv",
        c"_ZNK2v85Value9IsPromiseEv",
    ])?;
    // Renamed in V8 13 (the old name was removed in 14).
    let prototype = lookup(c"_ZN2v86Object14GetPrototypeV2Ev")
        .or_else(|| lookup(c"_ZN2v86Object12GetPrototypeEv"))
        .ok_or("missing V8 symbol: v8::Object::GetPrototypeV2 (or GetPrototype)")?;
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
            strict_equals: t::<*mut c_void, EqualsFn>(p[14]),
            get: t::<*mut c_void, GetFn>(p[15]),
            get_index: t::<*mut c_void, GetIndexFn>(p[16]),
            property_names: t::<*mut c_void, PropertyNamesFn>(p[17]),
            array_length: t::<*mut c_void, LengthFn>(p[18]),
            has_own_index: t::<*mut c_void, HasIndexFn>(p[19]),
            has_own_name: t::<*mut c_void, HasNameFn>(p[20]),
            number_value: t::<*mut c_void, NumberFn>(p[21]),
            boolean_value: t::<*mut c_void, PredicateFn>(p[22]),
            is_string: t::<*mut c_void, PredicateFn>(p[23]),
            is_number: t::<*mut c_void, PredicateFn>(p[24]),
            is_boolean: t::<*mut c_void, PredicateFn>(p[25]),
            is_null: t::<*mut c_void, PredicateFn>(p[26]),
            is_undefined: t::<*mut c_void, PredicateFn>(p[27]),
            is_object: t::<*mut c_void, PredicateFn>(p[28]),
            is_function: t::<*mut c_void, PredicateFn>(p[29]),
            is_external: t::<*mut c_void, PredicateFn>(p[30]),
            is_bigint: t::<*mut c_void, PredicateFn>(p[31]),
            is_symbol: t::<*mut c_void, PredicateFn>(p[32]),
            is_array: t::<*mut c_void, PredicateFn>(p[33]),
            create_data_index: t::<*mut c_void, DefineIndexFn>(p[34]),
            is_date: t::<*mut c_void, PredicateFn>(p[35]),
            is_typed_array: t::<*mut c_void, PredicateFn>(p[36]),
            is_array_buffer: t::<*mut c_void, PredicateFn>(p[37]),
            is_data_view: t::<*mut c_void, PredicateFn>(p[38]),
            is_promise: t::<*mut c_void, PredicateFn>(p[39]),
            prototype: t::<*mut c_void, LocalGetterFn>(prototype),
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
        // SAFETY: on `isolate`'s thread with V8 usable (the caller's contract); `buf` is sized and
        // aligned for a `v8::TryCatch` and stays in this frame, unmoved, until the destructor.
        unsafe { (self.try_catch_new)(tc, isolate) };
        // Nothing between the constructor and the destructor may unwind past this frame (the
        // buffer is registered with V8): the caller's closures are wrapped in catch_unwind.
        let out = loop_helpers_core::panics::catch("v8_values::try_catch", f);
        // SAFETY: `tc` is the TryCatch constructed above, destroyed once here, innermost (any
        // inner one of `f` was destroyed before `f` returned).
        let caught = unsafe {
            let caught = (self.try_catch_caught)(tc);
            (self.try_catch_drop)(tc);
            caught
        };
        if caught {
            None
        } else {
            out
        }
    }

    /// What `v` is (None for an empty handle). The common kinds are asked first.
    ///
    /// # Safety
    /// `v` is null or a live handle, on the isolate's thread.
    pub unsafe fn kind(&self, v: Local) -> Option<Kind> {
        if v.is_null() {
            return None;
        }
        // SAFETY: `v` is a live, non-empty handle on the isolate's thread (the caller's
        // contract), which V8's `Value::Is*` predicates take.
        Some(unsafe {
            if (self.is_string)(v) {
                Kind::String
            } else if (self.is_number)(v) {
                Kind::Number
            } else if (self.is_object)(v) {
                // Functions (callable proxies too) and Externals are objects to V8.
                if (self.is_function)(v) {
                    Kind::Function
                } else if (self.is_external)(v) {
                    Kind::External
                } else {
                    Kind::Object
                }
            } else if (self.is_boolean)(v) {
                Kind::Boolean
            } else if (self.is_null)(v) {
                Kind::Null
            } else if (self.is_undefined)(v) {
                Kind::Undefined
            } else if (self.is_bigint)(v) {
                Kind::BigInt
            } else if (self.is_symbol)(v) {
                Kind::Symbol
            } else {
                return None;
            }
        })
    }

    /// Whether `a` and `b` are the same value (`===`); false if either handle is empty.
    ///
    /// # Safety
    /// Live handles, on the isolate's thread.
    pub unsafe fn same(&self, a: Local, b: Local) -> bool {
        // SAFETY: both handles are live (the caller's contract) and non-empty, on the isolate's
        // thread.
        !a.is_null() && !b.is_null() && unsafe { (self.strict_equals)(a, b) }
    }

    /// The own enumerable string keys of `obj` (a non-proxy object), as a fresh array of strings
    /// (indices first, as strings); None on failure.
    ///
    /// # Safety
    /// As for [`ValueApi::kind`]; `context` is the current context.
    pub unsafe fn own_keys(&self, context: Local, obj: Local) -> Option<Local> {
        // SAFETY: live handles and the current context, on the isolate's thread (the caller's
        // contract); the flags are valid `KeyCollectionMode`/`PropertyFilter`/... values.
        let keys = unsafe {
            (self.property_names)(
                obj,
                context,
                OWN_ONLY,
                ENUMERABLE_STRINGS,
                INCLUDE_INDICES,
                CONVERT_TO_STRING,
            )
        };
        (!keys.is_null()).then_some(keys)
    }

    /// Element `i` of `arr`, an array V8 made (`Map::AsArray`, `GetPropertyNames`): packed,
    /// with no accessors, so this is a plain read. Null on failure.
    ///
    /// # Safety
    /// As for [`ValueApi::own_keys`].
    pub unsafe fn element(&self, context: Local, arr: Local, i: u32) -> Local {
        // SAFETY: live handles and the current context, on the isolate's thread (the caller's
        // contract).
        unsafe { (self.get_index)(arr, context, i) }
    }

    /// Appends `v` to `arr`, an array of ours of length `len` (defined as an own element: no
    /// setter runs); whether it was.
    ///
    /// # Safety
    /// As for [`ValueApi::own_keys`]; `v` a live handle.
    pub unsafe fn push(&self, context: Local, arr: Local, len: u32, v: Local) -> bool {
        // SAFETY: live handles and the current context, on the isolate's thread (the caller's
        // contract).
        let r = unsafe { (self.create_data_index)(arr, context, len, v) };
        r.has_value && r.value
    }

    /// The isolate's continuation-preserved embedder data (undefined when never set).
    ///
    /// # Safety
    /// On `isolate`'s thread, inside an open handle scope.
    pub unsafe fn current_frame(&self, isolate: *mut Isolate) -> napi_value {
        // SAFETY: on `isolate`'s thread in an open handle scope (the caller's contract), where
        // the getter may create its Local.
        unsafe { (self.embedder_data)(isolate) }
    }
}
