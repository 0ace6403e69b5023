//! A JSON-safe snapshot of a JavaScript value, taken without running any JavaScript: the
//! `asyncContext` store of the blocked code, read inside the V8 interrupt that samples its stack.
//!
//! What is read, and why no JavaScript can run:
//! - primitives directly (`Number::Value`, `Boolean::Value`, `napi_get_value_string_utf8`);
//!   strings at most [`MAX_STRING_BYTES`] bytes, BigInts as decimal strings, symbols as
//!   `"[Symbol]"`;
//! - a Proxy is never looked into (`Value::IsProxy` first, before anything else about an object):
//!   every operation on a proxy may call a trap. It is written `"[Proxy]"`;
//! - objects: own enumerable string keys (`Object::GetPropertyNames` with `kOwnOnly`: for an
//!   ordinary object V8 lists its keys from its own maps and dictionaries), and for each key,
//!   `Object::HasRealNamedCallbackProperty` tells whether it is an accessor (a getter, or a native
//!   accessor like `error.stack` whose getter may call `Error.prepareStackTrace`) without calling
//!   it: accessors are written `"[Getter]"`. Only then is the value read with `Object::Get`: the
//!   key is an own data property, found on the object itself, so the lookup stops there and
//!   nothing is called. Keys that may be missing (array holes, picked keys) are checked with
//!   `Object::HasOwnProperty` first, so a lookup never reaches a prototype (whose getters it could
//!   run);
//! - plain objects (prototype `Object.prototype` or null) and arrays (prototype
//!   `Array.prototype`) are written as such; any other object as `{"[class Name]": {own data
//!   properties}}` (the name from `Object::GetConstructorName`, which reads the constructor's
//!   `name` only if it is a data property), so class instances show their own fields and never
//!   run their methods, getters, `toJSON` or `Symbol.toPrimitive`;
//! - Date (`napi_get_date_value`: the internal time value) as its ISO string; Map and Set entries
//!   through `Map::AsArray` / `Set::AsArray`, which copy V8's hash table without calling anything
//!   (not `Map.prototype.entries`, which a user could replace); typed arrays, ArrayBuffers,
//!   DataViews and promises by their constructor name; functions as `"[Function]"`.
//!
//! Limits: depth [`MAX_DEPTH`], [`MAX_KEYS`] keys or items per container, [`MAX_VALUES`] values in
//! all, cycles written `"[Circular]"` (each object is compared with those on its path).
//!
//! Cost: this runs once per block with cold caches, where each distinct V8 function touched costs
//! cache misses, so the walk allocates nothing of its own but the output, asks the common
//! questions first, and takes the prototypes it compares with from the detector's start
//! ([`Protos`]) instead of making objects to find them.
//!
//! Objects with native interceptors (created by addons from `ObjectTemplate`s) may call those
//! interceptors (native code, not JavaScript) when their keys or values are read.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::os::raw::{c_char, c_int};

use loop_helpers_core::report::json_str;
use loop_helpers_core::snapshot_json::{
    bigint_decimal, iso_date, push_number, push_string, MAX_BIGINT_WORDS, MAX_DEPTH, MAX_KEYS,
    MAX_STRING_BYTES, MAX_VALUES,
};

use crate::napi::*;
use crate::v8_values::{Kind, Local, MaybeBool, ValueApi};

/// A property read without calling anything.
enum Prop {
    Missing,
    Accessor,
    Value(napi_value),
}

/// Keys to keep of an object, instead of all its own enumerable ones: the store's top level
/// (`asyncContextKeys`), and, internally (`lib/otel.ts`), of the objects found under those keys.
#[derive(Clone, Copy)]
pub struct Pick<'p> {
    pub keys: &'p [napi_value],
    pub inner: Option<&'p [napi_value]>,
}

/// A key of an object or array, as the walk looks it up.
#[derive(Clone, Copy)]
enum Key {
    Name(napi_value),
    Index(u32),
}

/// `Object.prototype` and `Array.prototype`: what tells plain objects and arrays from instances of
/// other classes. Either may be null (not known).
#[derive(Clone, Copy)]
pub struct Protos {
    pub object: napi_value,
    pub array: napi_value,
}

impl Protos {
    /// The current context's, found as the prototypes of a fresh object and array, without
    /// reading any property (when the detector starts: making objects in the interrupt costs).
    ///
    /// # Safety
    /// On the isolate's thread, inside an open handle scope.
    pub unsafe fn of_current_context(env: napi_env) -> Protos {
        let mut p = Protos {
            object: std::ptr::null_mut(),
            array: std::ptr::null_mut(),
        };
        let mut o = std::ptr::null_mut();
        let mut a = std::ptr::null_mut();
        // SAFETY: on the isolate's (env's) thread inside an open handle scope (the caller's
        // contract); the out-parameters are live locals. A fresh object and array are ordinary,
        // so reading their prototypes runs nothing.
        unsafe {
            if napi_create_object(env, &mut o) == NAPI_OK {
                napi_get_prototype(env, o, &mut p.object);
            }
            if napi_create_array_with_length(env, 0, &mut a) == NAPI_OK {
                napi_get_prototype(env, a, &mut p.array);
            }
        }
        p
    }
}

/// What the walk takes from the detector's start rather than making it with cold caches.
#[derive(Clone, Copy)]
pub struct Prepared {
    pub protos: Protos,
    /// An array of ours holding the strings `"0"`, `"1"`... (the names of array items, for their
    /// accessor check), grown the first time an index is needed; null: make them each time.
    pub index_names: napi_value,
}

/// What an object's prototype makes it.
#[derive(PartialEq, Eq)]
enum Shape {
    Plain,
    Array,
    Other,
}

/// Writes values as JSON, reading them without running JavaScript.
///
/// # Safety (its `unsafe` methods)
/// Each has [`Walker::new`]'s contract: it runs on the isolate's thread, inside the handle scope
/// and the `ValueApi::try_catch` the walker was made in, and its `napi_value` arguments are live
/// handles of that isolate (from that scope or an outer one). The SAFETY comments below call this
/// "the walker's contract".
pub struct Walker<'a> {
    env: napi_env,
    api: &'a ValueApi,
    context: Local,
    /// Those of the context the detector started in (the usual case: one context).
    protos: Protos,
    /// See [`Prepared::index_names`].
    index_names: napi_value,
    /// The objects being written, outermost first (cycle check).
    path: [napi_value; MAX_DEPTH as usize],
    depth: usize,
    values: u32,
    pub out: &'a mut String,
}

impl<'a> Walker<'a> {
    /// # Safety
    /// On the isolate's thread, inside an open handle scope and the `ValueApi::try_catch` of the
    /// caller; `context` is the isolate's current context; the handles of `prepared` are live or
    /// null.
    pub unsafe fn new(
        env: napi_env,
        api: &'a ValueApi,
        context: Local,
        prepared: Prepared,
        out: &'a mut String,
    ) -> Self {
        Walker {
            env,
            api,
            context,
            protos: prepared.protos,
            index_names: prepared.index_names,
            path: [std::ptr::null_mut(); MAX_DEPTH as usize],
            depth: 0,
            values: 0,
            out,
        }
    }

    /// Whether `v`, an object (not a proxy) whose prototype is `proto`, is a plain object, an
    /// array, or an instance of something else. Plain: its prototype is `Object.prototype` or
    /// null; array: an array whose prototype is `Array.prototype`. The usual case is answered by
    /// comparing with the prototypes of the detector's context ([`Prepared::protos`]); those of
    /// another context (`vm`) are recognised by where their chain ends: an `Object.prototype` has
    /// a null prototype itself, and an `Array.prototype` is an array.
    unsafe fn shape(&self, v: napi_value, proto: napi_value) -> Shape {
        let api = self.api;
        // SAFETY: the walker's contract; `v` is live.
        let is_array = || unsafe { (api.is_array)(v) };
        // SAFETY: the walker's contract: `v`, `proto` and the prepared prototypes are live or
        // null, which `same` and `kind` accept. `proto` is asked for its own prototype only once
        // it is known to be an object that is not a proxy (an ordinary [[GetPrototypeOf]]).
        unsafe {
            if api.same(proto, self.protos.object) {
                return Shape::Plain;
            }
            if api.same(proto, self.protos.array) {
                return if is_array() {
                    Shape::Array
                } else {
                    Shape::Other
                };
            }
            match api.kind(proto) {
                Some(Kind::Null) => return Shape::Plain,
                // Asking a proxy for its prototype may run a trap.
                Some(Kind::Object) if !(api.is_proxy)(proto) => {}
                _ => return Shape::Other,
            }
            if is_array() && (api.is_array)(proto) {
                return Shape::Array;
            }
            if api.kind((api.prototype)(proto)) == Some(Kind::Null) && !self.is_special(v) {
                Shape::Plain
            } else {
                Shape::Other
            }
        }
    }

    /// Whether `v` is an object V8 gives a meaning beyond its properties (written by
    /// [`Walker::special`] whatever its prototype).
    unsafe fn is_special(&self, v: napi_value) -> bool {
        let api = self.api;
        // SAFETY: the walker's contract; `v` is live. The predicates only look at its type.
        unsafe {
            (api.is_date)(v)
                || (api.is_map)(v)
                || (api.is_set)(v)
                || (api.is_typed_array)(v)
                || (api.is_array_buffer)(v)
                || (api.is_data_view)(v)
                || (api.is_promise)(v)
        }
    }

    /// A string's text, at most MAX_STRING_BYTES bytes of it (a cut one fills the buffer but for
    /// at most one character), read into `buf`, with the number of bytes Node-API wrote; None if
    /// it cannot be read. `buf` need not be initialised (zeroing 1 KiB per string was a tenth of
    /// a whole store's read): only what Node-API wrote is read back.
    unsafe fn utf8_prefix<'b>(
        &self,
        v: napi_value,
        buf: &'b mut [MaybeUninit<u8>; MAX_STRING_BYTES + 1],
    ) -> Option<(Cow<'b, str>, usize)> {
        let mut written = 0usize;
        // SAFETY: the walker's contract; `buf` holds `buf.len()` bytes, the most Node-API writes
        // (it writes, never reads, them).
        if unsafe {
            napi_get_value_string_utf8(
                self.env,
                v,
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
                &mut written,
            )
        } != NAPI_OK
        {
            return None;
        }
        let written = written.min(MAX_STRING_BYTES);
        // SAFETY: Node-API wrote `written` bytes (at most the buffer's length less its NUL) at
        // the start of `buf`, so they are initialised; `u8` and `MaybeUninit<u8>` share a layout.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, written) };
        // V8 writes whole characters as UTF-8: the checked conversion is the fast one; the lossy
        // one only guards against the unexpected.
        let text = std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes));
        Some((text, written))
    }

    /// Writes a string as JSON: at most MAX_STRING_BYTES bytes of it, and a note when it is longer.
    unsafe fn push_js_string(&mut self, v: napi_value) {
        let mut buf = [MaybeUninit::uninit(); MAX_STRING_BYTES + 1];
        // SAFETY: the walker's contract, passed on.
        let Some((s, written)) = (unsafe { self.utf8_prefix(v, &mut buf) }) else {
            self.out.push_str("null");
            return;
        };
        if written + 4 <= MAX_STRING_BYTES {
            // All of it.
            json_str(self.out, &s);
            return;
        }
        // With no buffer, Node-API answers the length in UTF-16 code units (O(1)).
        let mut units = 0usize;
        // SAFETY: the walker's contract; a null buffer asks for the length only.
        unsafe { napi_get_value_string_utf16(self.env, v, std::ptr::null_mut(), 0, &mut units) };
        push_string(self.out, &s, units);
    }

    /// A string's text, at most MAX_STRING_BYTES bytes of it (constructor names, Map keys).
    unsafe fn read_string(&self, v: napi_value) -> String {
        let mut buf = [MaybeUninit::uninit(); MAX_STRING_BYTES + 1];
        // SAFETY: the walker's contract, passed on.
        unsafe { self.utf8_prefix(v, &mut buf) }
            .map(|(s, _)| s.into_owned())
            .unwrap_or_default()
    }

    fn push_label(&mut self, s: &str) {
        json_str(self.out, s);
    }

    /// The constructor name V8 records for an object (`"Object"` when it has none).
    unsafe fn constructor_name(&self, v: napi_value) -> String {
        // SAFETY: the walker's contract; `v` is a live object (not a proxy: the callers checked).
        let name = unsafe { (self.api.constructor_name)(v) };
        if name.is_null() {
            return "Object".into();
        }
        // SAFETY: the walker's contract; `name` is a live string handle, just made.
        let s = unsafe { self.read_string(name) };
        if s.is_empty() {
            "Object".into()
        } else {
            s
        }
    }

    /// Reads own property `key` of `obj` (a non-proxy object) without calling a getter.
    /// `check_own`: a name that may not exist (else it came from the object's own key list);
    /// indices are always checked.
    unsafe fn prop(&self, obj: napi_value, key: Key, check_own: bool) -> Prop {
        let (api, cx) = (self.api, self.context);
        // SAFETY: the walker's contract; `obj` is a live non-proxy object, `cx` the current
        // context. HasOwnProperty consults the object alone (no prototype, so no getter).
        let own = unsafe {
            match key {
                Key::Name(name) if check_own => (api.has_own_name)(obj, cx, name),
                Key::Name(_) => MaybeBool {
                    has_value: true,
                    value: true,
                },
                // Holes and missing indices are answered here, before making a name.
                Key::Index(i) => (api.has_own_index)(obj, cx, i),
            }
        };
        if !own.has_value || !own.value {
            return Prop::Missing;
        }
        let name = match key {
            Key::Name(name) => name,
            // SAFETY: the walker's contract.
            Key::Index(i) => unsafe { self.index_name(i) },
        };
        if name.is_null() {
            return Prop::Missing;
        }
        // SAFETY: as above; `name` is a live, non-null name.
        let accessor = unsafe { (api.has_accessor)(obj, cx, name) };
        if !accessor.has_value {
            return Prop::Missing;
        }
        if accessor.value {
            return Prop::Accessor;
        }
        // SAFETY: as above. The key is an own data property (checked just before), so the lookup
        // stops at `obj` and calls nothing.
        let v = unsafe {
            match key {
                Key::Name(name) => (api.get)(obj, cx, name),
                Key::Index(i) => (api.get_index)(obj, cx, i),
            }
        };
        if v.is_null() {
            Prop::Missing
        } else {
            Prop::Value(v)
        }
    }

    /// Index `i` as a property name (for the accessor check of an array item), from
    /// [`Prepared::index_names`], which gets the names up to `i` the first time.
    unsafe fn index_name(&self, i: u32) -> napi_value {
        let (api, cx, names) = (self.api, self.context, self.index_names);
        // SAFETY: the walker's contract, inside its handle scope; `names`, when not
        // null, is our live array (see `Prepared::index_names`), `cx` the current context.
        unsafe {
            if names.is_null() {
                return make_index_name(self.env, i);
            }
            // Our own packed array of strings, never handed out: plain element reads.
            let len = (api.array_length)(names);
            if i < len {
                return api.element(cx, names, i);
            }
            let mut name = std::ptr::null_mut();
            for j in len..=i {
                name = make_index_name(self.env, j);
                if name.is_null() || !api.push(cx, names, j, name) {
                    break;
                }
            }
            name
        }
    }

    /// One step of an internal `asyncContext` path (`lib/otel.ts`): from object `v`, the value of
    /// `key` (a string or a symbol), read as the snapshot reads: the entry of a Map found by
    /// identity (`Map::AsArray`), or an own data property (never a getter, never the prototype).
    /// None when `v` is not an object, is a proxy, or has no such entry.
    ///
    /// # Safety
    /// As for [`Walker::value`].
    pub unsafe fn step(&mut self, v: napi_value, key: napi_value) -> Option<napi_value> {
        let api = self.api;
        // SAFETY: the walker's contract; `v` and `key` are live. A Map's entry is read, and an
        // own property looked up, only once `v` is known to be an object that is not a proxy.
        unsafe {
            if api.kind(v) != Some(Kind::Object) || (api.is_proxy)(v) {
                return None;
            }
            if (api.is_map)(v) {
                return map_entry(api, self.context, v, key);
            }
            match self.prop(v, Key::Name(key), true) {
                Prop::Value(value) => Some(value),
                _ => None,
            }
        }
    }

    /// Own element `i` of `v` when it is an object (not a proxy) with an own data property there;
    /// None otherwise (a hole is never looked up on the prototype).
    ///
    /// # Safety
    /// As for [`Walker::value`].
    pub unsafe fn own_element(&mut self, v: napi_value, i: u32) -> Option<napi_value> {
        let api = self.api;
        // SAFETY: the walker's contract; `v` is live, and read only once known to be an object
        // that is not a proxy.
        unsafe {
            if api.kind(v) != Some(Kind::Object) || (api.is_proxy)(v) {
                return None;
            }
            match self.prop(v, Key::Index(i), true) {
                Prop::Value(value) => Some(value),
                _ => None,
            }
        }
    }

    /// Writes any value.
    ///
    /// # Safety
    /// As for [`Walker::new`]; `v` is a live handle.
    pub unsafe fn value(&mut self, v: napi_value) {
        // SAFETY: the walker's contract; `v` is live.
        unsafe {
            let k = self.api.kind(v);
            self.typed(v, k);
        }
    }

    /// [`Walker::value`] of a value whose kind is known.
    unsafe fn typed(&mut self, v: napi_value, k: Option<Kind>) {
        self.values += 1;
        if self.values > MAX_VALUES {
            self.push_label("[Truncated]");
            return;
        }
        // SAFETY: the walker's contract; `v` is live and of kind `k`, which each arm's reader
        // expects.
        unsafe {
            match k {
                Some(Kind::String) => self.push_js_string(v),
                Some(Kind::Number) => push_number(self.out, (self.api.number_value)(v)),
                Some(Kind::Boolean) => {
                    let b = (self.api.boolean_value)(v);
                    self.out.push_str(if b { "true" } else { "false" });
                }
                Some(Kind::Object) => self.object(v, None),
                Some(Kind::BigInt) => self.bigint(v),
                Some(Kind::Symbol) => self.push_label("[Symbol]"),
                Some(Kind::Function) => self.push_label("[Function]"),
                Some(Kind::External) => self.push_label("[External]"),
                // undefined, null, unknown: like JSON.stringify in an array.
                Some(Kind::Null | Kind::Undefined) | None => self.out.push_str("null"),
            }
        }
    }

    /// Writes a BigInt (`v`) as its decimal string, or its size when it is too large.
    unsafe fn bigint(&mut self, v: napi_value) {
        let mut sign: c_int = 0;
        let mut count = 0usize;
        // Sign and words both null: Node-API answers the word count only.
        // SAFETY: the walker's contract; `count` a live local.
        if unsafe {
            napi_get_value_bigint_words(
                self.env,
                v,
                std::ptr::null_mut(),
                &mut count,
                std::ptr::null_mut(),
            )
        } != NAPI_OK
        {
            self.out.push_str("null");
            return;
        }
        if count > MAX_BIGINT_WORDS {
            self.push_label(&format!("[BigInt of {} bits]", count * 64));
            return;
        }
        let mut words = [0u64; MAX_BIGINT_WORDS];
        let mut n = count.max(1);
        // SAFETY: the walker's contract; `words` has room for `n` words (count <=
        // MAX_BIGINT_WORDS, checked above), the most Node-API writes.
        if unsafe {
            napi_get_value_bigint_words(self.env, v, &mut sign, &mut n, words.as_mut_ptr())
        } != NAPI_OK
        {
            self.out.push_str("null");
            return;
        }
        self.push_label(&bigint_decimal(
            sign != 0,
            &words[..n.min(MAX_BIGINT_WORDS)],
        ));
    }

    /// Writes an object; `pick`: write only these keys (the store's top level), as a plain object.
    ///
    /// # Safety
    /// As for [`Walker::value`]; `v` is an object.
    pub unsafe fn object(&mut self, v: napi_value, pick: Option<Pick>) {
        let api = self.api;
        // Before anything else: every other question about a proxy may run a trap.
        // SAFETY: the walker's contract; `v` is a live object.
        if unsafe { (api.is_proxy)(v) } {
            self.push_label("[Proxy]");
            return;
        }
        if self.depth >= MAX_DEPTH as usize {
            // SAFETY: as above.
            let label = if unsafe { (api.is_array)(v) } {
                "[Array]"
            } else {
                "[Object]"
            };
            self.push_label(label);
            return;
        }
        if self.path[..self.depth]
            .iter()
            // SAFETY: as above; the path holds live objects of this walk.
            .any(|&p| unsafe { api.same(p, v) })
        {
            self.push_label("[Circular]");
            return;
        }
        // Not a proxy, so [[GetPrototypeOf]] is the ordinary one: nothing runs.
        // SAFETY: as above.
        let proto = unsafe { (api.prototype)(v) };
        // Every handle made below stays in the caller's scope: at most a few per value, and
        // MAX_VALUES values.
        self.path[self.depth] = v;
        self.depth += 1;
        // SAFETY: the walker's contract; `v` is a live object that is not a proxy, `proto` its
        // prototype (live or null), as each writer expects.
        unsafe {
            match self.shape(v, proto) {
                // A plain object (the common case): no other question needed.
                Shape::Plain => self.props(v, pick),
                Shape::Array => match pick {
                    Some(_) => self.props(v, pick),
                    None => self.array(v),
                },
                Shape::Other => self.special(v, pick),
            }
        }
        self.depth -= 1;
    }

    /// An object whose prototype is not Object.prototype, null or Array.prototype.
    unsafe fn special(&mut self, v: napi_value, pick: Option<Pick>) {
        let api = self.api;
        // SAFETY: the walker's contract; `v` is a live object, not a proxy.
        if unsafe { (api.is_date)(v) } {
            let mut ms = f64::NAN;
            // SAFETY: as above; `v` is a Date, `ms` a live local.
            unsafe { napi_get_date_value(self.env, v, &mut ms) };
            match iso_date(ms) {
                Some(s) => self.push_label(&s),
                None => self.push_label("Invalid Date"),
            }
            return;
        }
        // SAFETY: as above.
        let (is_map, is_set) = unsafe { ((api.is_map)(v), (api.is_set)(v)) };
        if is_map || is_set {
            // SAFETY: as above; `v` is a Map or a Set, as `is_map` says.
            unsafe { self.collection(v, is_map, pick.map(|p| p.keys)) };
            return;
        }
        // SAFETY: as above.
        if unsafe {
            (api.is_typed_array)(v)
                || (api.is_array_buffer)(v)
                || (api.is_data_view)(v)
                || (api.is_promise)(v)
        } {
            // SAFETY: as above.
            let name = unsafe { self.constructor_name(v) };
            self.push_label(&format!("[{name}]"));
            return;
        }
        if pick.is_some() {
            // SAFETY: as above.
            unsafe { self.props(v, pick) };
            return;
        }
        // SAFETY: as above.
        let name = unsafe { self.constructor_name(v) };
        self.out.push('{');
        json_str(self.out, &format!("[class {name}]"));
        self.out.push(':');
        // SAFETY: as above.
        unsafe { self.props(v, None) };
        self.out.push('}');
    }

    /// `{"key":value,...}` of own enumerable data properties (or of the picked keys).
    unsafe fn props(&mut self, obj: napi_value, pick: Option<Pick>) {
        let (api, cx) = (self.api, self.context);
        // The keys: the picked ones, or a fresh array of the own enumerable string keys.
        let (listed, count) = match pick {
            Some(p) => (std::ptr::null_mut(), p.keys.len() as u32),
            // SAFETY: the walker's contract; `obj` is a live object, not a proxy, `cx` the
            // current context.
            None => match unsafe { api.own_keys(cx, obj) } {
                // SAFETY: as above; `arr` is a live array V8 just made.
                Some(arr) => (arr, unsafe { (api.array_length)(arr) }),
                None => {
                    self.out.push_str("{}");
                    return;
                }
            },
        };
        self.out.push('{');
        let mut written = 0u32;
        let mut skipped = 0u32;
        for i in 0..count {
            if written >= MAX_KEYS {
                skipped += 1;
                continue;
            }
            let key = match pick {
                Some(p) => p.keys[i as usize],
                // SAFETY: as above; `i` is below the length of `listed`, V8's packed array.
                None => unsafe { api.element(cx, listed, i) },
            };
            if key.is_null() {
                continue;
            }
            // SAFETY: as above; `key` a live name (picked strings are live for the walk).
            let value = match unsafe { self.prop(obj, Key::Name(key), pick.is_some()) } {
                Prop::Missing => continue,
                Prop::Accessor => None,
                // SAFETY: as above; `v` was just read.
                Prop::Value(v) => match unsafe { api.kind(v) } {
                    // Left out, as JSON.stringify does.
                    Some(Kind::Undefined) => continue,
                    k => Some((v, k)),
                },
            };
            if written > 0 {
                self.out.push(',');
            }
            // SAFETY: as above; own keys are strings (V8 converted them), and picked ones are
            // strings (checked when the detector started).
            unsafe { self.push_js_string(key) };
            self.out.push(':');
            // SAFETY: the walker's contract; `v` is live and of kind `k`.
            unsafe {
                match (value, pick.and_then(|p| p.inner)) {
                    (Some((v, Some(Kind::Object))), Some(inner)) => {
                        self.values += 1;
                        let keys = Pick {
                            keys: inner,
                            inner: None,
                        };
                        self.object(v, Some(keys));
                    }
                    (Some((v, k)), _) => self.typed(v, k),
                    (None, _) => self.push_label("[Getter]"),
                }
            }
            written += 1;
        }
        if skipped > 0 {
            if written > 0 {
                self.out.push(',');
            }
            self.out.push_str("\"[truncated]\":");
            self.push_label(&format!("{skipped} more keys"));
        }
        self.out.push('}');
    }

    /// `[...]` of an array's first MAX_KEYS items (holes: null).
    unsafe fn array(&mut self, arr: napi_value) {
        // SAFETY: the walker's contract; `arr` is a live array, not a proxy.
        let len = unsafe { (self.api.array_length)(arr) };
        self.out.push('[');
        let shown = len.min(MAX_KEYS);
        for i in 0..shown {
            if i > 0 {
                self.out.push(',');
            }
            // SAFETY: as above; `v` was just read.
            unsafe {
                match self.prop(arr, Key::Index(i), false) {
                    Prop::Missing => self.out.push_str("null"),
                    Prop::Accessor => self.push_label("[Getter]"),
                    Prop::Value(v) => self.value(v),
                }
            }
        }
        if len > shown {
            if shown > 0 {
                self.out.push(',');
            }
            self.push_label(&format!("[{} more items]", len - shown));
        }
        self.out.push(']');
    }

    /// Map: `{"[Map]":[[key,value],...]}`; Set: `{"[Set]":[value,...]}`. With `pick` (a Map
    /// store): `{"key":value}` of the picked string keys.
    unsafe fn collection(&mut self, v: napi_value, is_map: bool, pick: Option<&[napi_value]>) {
        /// Larger collections are not copied, only counted.
        const MAX_COPIED: usize = 1000;
        let (api, cx) = (self.api, self.context);
        // SAFETY: the walker's contract; `v` is a live Map when `is_map`, else a live Set.
        let size = unsafe {
            if is_map {
                (api.map_size)(v)
            } else {
                (api.set_size)(v)
            }
        };
        let label = if is_map { "[Map]" } else { "[Set]" };
        if size > MAX_COPIED {
            self.out.push('{');
            json_str(self.out, label);
            self.out.push(':');
            self.push_label(&format!("{size} entries"));
            self.out.push('}');
            return;
        }
        // SAFETY: as above.
        let flat = unsafe {
            if is_map {
                (api.map_as_array)(v)
            } else {
                (api.set_as_array)(v)
            }
        };
        if flat.is_null() {
            self.push_label(label);
            return;
        }
        // SAFETY: the walker's contract; `flat` is V8's fresh, packed copy of the entries
        // (`[k0, v0, k1, v1, ...]` for a Map), read at indices below its length with `cx` the
        // current context; the values read are live handles of the walk's scope.
        let len = unsafe { (api.array_length)(flat) };
        let step = if is_map { 2 } else { 1 };
        if let (Some(names), true) = (pick, is_map) {
            self.out.push('{');
            let mut written = 0;
            for i in (0..len).step_by(2) {
                // SAFETY: as above (`i + 1 < len`: a Map's copy has an even length).
                unsafe {
                    let k = api.element(cx, flat, i);
                    if api.kind(k) != Some(Kind::String) || !names.iter().any(|&n| api.same(n, k)) {
                        continue;
                    }
                    if written > 0 {
                        self.out.push(',');
                    }
                    self.push_js_string(k);
                    self.out.push(':');
                    self.value(api.element(cx, flat, i + 1));
                }
                written += 1;
            }
            self.out.push('}');
            return;
        }
        self.out.push('{');
        json_str(self.out, label);
        self.out.push_str(":[");
        let entries = len / step;
        let shown = entries.min(MAX_KEYS);
        for e in 0..shown {
            if e > 0 {
                self.out.push(',');
            }
            // SAFETY: as above; `e < entries`, so every index read is below `len`.
            unsafe {
                if is_map {
                    self.out.push('[');
                    self.value(api.element(cx, flat, e * 2));
                    self.out.push(',');
                    self.value(api.element(cx, flat, e * 2 + 1));
                    self.out.push(']');
                } else {
                    self.value(api.element(cx, flat, e));
                }
            }
        }
        if entries > shown {
            if shown > 0 {
                self.out.push(',');
            }
            self.push_label(&format!("[{} more entries]", entries - shown));
        }
        self.out.push_str("]}");
    }
}

/// The value a Map holds for `key` (found by identity, `===`), copied out of V8's table with
/// `Map::AsArray` (which calls nothing; `Map.prototype.get` is a user-replaceable method); None
/// when it has no such entry.
///
/// # Safety
/// On the isolate's thread, inside an open handle scope; `map` is a Map (not a proxy), `context`
/// the current context.
pub unsafe fn map_entry(
    api: &ValueApi,
    context: Local,
    map: napi_value,
    key: napi_value,
) -> Option<napi_value> {
    // SAFETY: the caller's contract (isolate's thread, handle scope open, `map` a Map).
    let flat = unsafe { (api.map_as_array)(map) };
    if flat.is_null() {
        return None;
    }
    // SAFETY: `flat` is V8's fresh, packed `[k0, v0, ...]` copy (an even length), read below its
    // length with the current context; `key` a live handle.
    unsafe {
        let len = (api.array_length)(flat);
        (0..len)
            .step_by(2)
            .find(|&i| api.same(api.element(context, flat, i), key))
            .map(|i| api.element(context, flat, i + 1))
            .filter(|v| !v.is_null())
    }
}

/// The decimal string of `i`, made anew (null on failure).
///
/// # Safety
/// On `env`'s thread, inside an open handle scope.
unsafe fn make_index_name(env: napi_env, i: u32) -> napi_value {
    let digits = i.to_string();
    let mut name = std::ptr::null_mut();
    // SAFETY: on env's thread in an open handle scope (the caller's contract); `digits` is
    // `digits.len()` bytes of UTF-8, `name` a live local.
    unsafe {
        napi_create_string_utf8(
            env,
            digits.as_ptr() as *const c_char,
            digits.len(),
            &mut name,
        )
    };
    name
}
