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

use std::os::raw::c_int;

use loop_helpers_core::symbol_table;

use crate::v8::Isolate;

pub use crate::v8::Local;

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

symbol_table! {
    /// What reading the store needs. Each entry is an exported function whose mangled name encodes
    /// the signature declared beside it (module comment: `this` first, Locals as one pointer).
    pub struct ValueApi in "V8" {
        pub current_context: IsolateLocalFn = c"_ZN2v87Isolate17GetCurrentContextEv",
        pub is_proxy: PredicateFn = c"_ZNK2v85Value7IsProxyEv",
        pub is_map: PredicateFn = c"_ZNK2v85Value5IsMapEv",
        pub is_set: PredicateFn = c"_ZNK2v85Value5IsSetEv",
        pub map_as_array: LocalGetterFn = c"_ZNK2v83Map7AsArrayEv",
        pub set_as_array: LocalGetterFn = c"_ZNK2v83Set7AsArrayEv",
        pub map_size: SizeFn = c"_ZNK2v83Map4SizeEv",
        pub set_size: SizeFn = c"_ZNK2v83Set4SizeEv",
        pub constructor_name: LocalGetterFn = c"_ZN2v86Object18GetConstructorNameEv",
        /// `Object::HasRealNamedCallbackProperty(context, key)`: whether an own property is an
        /// accessor (JavaScript getter/setter or native accessor), without calling it.
        pub has_accessor: HasAccessorFn =
            c"_ZN2v86Object28HasRealNamedCallbackPropertyENS_5LocalINS_7ContextEEENS1_INS_4NameEEE",
        /// `Value::StrictEquals`: identity for objects and symbols, never calls anything.
        pub strict_equals: EqualsFn = c"_ZNK2v85Value12StrictEqualsENS_5LocalIS0_EE",
        /// `Object::Get(context, key)` / `(context, index)`: only ever called for an own data
        /// property (checked first), which the lookup finds on the object itself.
        pub get: GetFn = c"_ZN2v86Object3GetENS_5LocalINS_7ContextEEENS1_INS_5ValueEEE",
        pub get_index: GetIndexFn = c"_ZN2v86Object3GetENS_5LocalINS_7ContextEEEj",
        /// `Object::GetPropertyNames(context, mode, filter, index filter, conversion)`.
        pub property_names: PropertyNamesFn =
            c"_ZN2v86Object16GetPropertyNamesENS_5LocalINS_7ContextEEENS_17KeyCollectionModeENS_14PropertyFilterENS_11IndexFilterENS_17KeyConversionModeE",
        pub array_length: LengthFn = c"_ZNK2v85Array6LengthEv",
        /// `Object::HasOwnProperty(context, index)` / `(context, name)`.
        pub has_own_index: HasIndexFn = c"_ZN2v86Object14HasOwnPropertyENS_5LocalINS_7ContextEEEj",
        pub has_own_name: HasNameFn =
            c"_ZN2v86Object14HasOwnPropertyENS_5LocalINS_7ContextEEENS1_INS_4NameEEE",
        /// `Object::GetPrototypeV2()` (V8 13+) or `GetPrototype()` (V8 11-13): `[[GetPrototypeOf]]`
        /// of an ordinary object (never asked of a proxy).
        pub prototype: LocalGetterFn =
            c"_ZN2v86Object14GetPrototypeV2Ev" | c"_ZN2v86Object12GetPrototypeEv",
        pub number_value: NumberFn = c"_ZNK2v86Number5ValueEv",
        /// `Object::CreateDataProperty(context, index, value)`: defines an own element, never
        /// calling a setter (`napi_set_element` is `[[Set]]`, which may find one on a prototype).
        create_data_index: DefineIndexFn =
            c"_ZN2v86Object18CreateDataPropertyENS_5LocalINS_7ContextEEEjNS1_INS_5ValueEEE",
        pub boolean_value: PredicateFn = c"_ZNK2v87Boolean5ValueEv",
        pub is_string: PredicateFn = c"_ZNK2v85Value12FullIsStringEv",
        pub is_number: PredicateFn = c"_ZNK2v85Value8IsNumberEv",
        pub is_boolean: PredicateFn = c"_ZNK2v85Value9IsBooleanEv",
        pub is_null: PredicateFn = c"_ZNK2v85Value10FullIsNullEv",
        pub is_undefined: PredicateFn = c"_ZNK2v85Value15FullIsUndefinedEv",
        pub is_object: PredicateFn = c"_ZNK2v85Value8IsObjectEv",
        pub is_function: PredicateFn = c"_ZNK2v85Value10IsFunctionEv",
        pub is_external: PredicateFn = c"_ZNK2v85Value10IsExternalEv",
        pub is_bigint: PredicateFn = c"_ZNK2v85Value8IsBigIntEv",
        pub is_symbol: PredicateFn = c"_ZNK2v85Value8IsSymbolEv",
        pub is_array: PredicateFn = c"_ZNK2v85Value7IsArrayEv",
        pub is_date: PredicateFn = c"_ZNK2v85Value6IsDateEv",
        pub is_typed_array: PredicateFn = c"_ZNK2v85Value12IsTypedArrayEv",
        pub is_array_buffer: PredicateFn = c"_ZNK2v85Value13IsArrayBufferEv",
        pub is_data_view: PredicateFn = c"_ZNK2v85Value10IsDataViewEv",
        pub is_promise: PredicateFn = c"_ZNK2v85Value9IsPromiseEv",
        try_catch_new: TryCatchNewFn = c"_ZN2v88TryCatchC1EPNS_7IsolateE",
        try_catch_drop: TryCatchDropFn = c"_ZN2v88TryCatchD1Ev",
        try_catch_caught: TryCatchCaughtFn = c"_ZNK2v88TryCatch9HasCaughtEv",
    }
    requires: [
        crate::v8::enabled(),
        crate::v8::stack_capture_support().map_err(|e| format!("needs stack capture ({e})")),
    ];
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
}
