//! A JSON-safe snapshot of a JavaScript value, taken without running any JavaScript: the
//! `asyncContext` store of the blocked code, read inside the V8 interrupt that samples its stack.
//!
//! What is read, and why no JavaScript can run:
//! - primitives through Node-API (`napi_get_value_*`), which reads them directly; strings at most
//!   [`MAX_STRING_BYTES`] bytes, BigInts as decimal strings, symbols as `"[Symbol]"`;
//! - a Proxy is never looked into (`Value::IsProxy` first, before anything else about an object):
//!   every operation on a proxy may call a trap. It is written `"[Proxy]"`;
//! - objects: own enumerable string keys (`napi_get_all_property_names`, own only: for an
//!   ordinary object V8 lists its keys from its own maps and dictionaries), and for each key,
//!   `Object::HasRealNamedCallbackProperty` tells whether it is an accessor (a getter, or a native
//!   accessor like `error.stack` whose getter may call `Error.prepareStackTrace`) without calling
//!   it: accessors are written `"[Getter]"`. Only then is the value read with `napi_get_property`:
//!   the key is an own data property, found on the object itself, so the lookup stops there and
//!   nothing is called. Keys that may be missing (array holes, picked keys) are checked with
//!   `napi_has_own_property` first, so a lookup never reaches a prototype (whose getters it could
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
//! Objects with native interceptors (created by addons from `ObjectTemplate`s) may call those
//! interceptors (native code, not JavaScript) when their keys or values are read.

use std::os::raw::{c_char, c_int};

use loop_helpers_core::report::json_str;
use loop_helpers_core::snapshot_json::{
    bigint_decimal, iso_date, push_number, push_string, MAX_BIGINT_WORDS, MAX_DEPTH, MAX_KEYS,
    MAX_STRING_BYTES, MAX_VALUES,
};

use crate::napi::*;
use crate::v8_values::{Local, ValueApi};

/// A property read without calling anything.
enum Prop {
    Missing,
    Accessor,
    Value(napi_value),
}

pub struct Walker<'a> {
    env: napi_env,
    api: &'a ValueApi,
    context: Local,
    /// (Object.prototype, Array.prototype), see [`Walker::protos`].
    protos: Option<(napi_value, napi_value)>,
    /// The objects being written, outermost first (cycle check).
    path: Vec<napi_value>,
    values: u32,
    pub out: String,
}

impl<'a> Walker<'a> {
    /// # Safety
    /// On the isolate's thread, inside an open handle scope and the `ValueApi::try_catch` of the
    /// caller; `context` is the isolate's current context.
    pub unsafe fn new(env: napi_env, api: &'a ValueApi, context: Local) -> Self {
        Walker {
            env,
            api,
            context,
            protos: None,
            path: Vec::new(),
            values: 0,
            out: String::new(),
        }
    }

    /// This context's Object.prototype and Array.prototype: the prototypes of a fresh object and
    /// array, found without reading any property (once, when the first object is met).
    unsafe fn protos(&mut self) -> (napi_value, napi_value) {
        if let Some(p) = self.protos {
            return p;
        }
        let env = self.env;
        let (mut object_proto, mut array_proto) = (std::ptr::null_mut(), std::ptr::null_mut());
        let mut o = std::ptr::null_mut();
        if napi_create_object(env, &mut o) == NAPI_OK {
            napi_get_prototype(env, o, &mut object_proto);
        }
        let mut a = std::ptr::null_mut();
        if napi_create_array_with_length(env, 0, &mut a) == NAPI_OK {
            napi_get_prototype(env, a, &mut array_proto);
        }
        self.protos = Some((object_proto, array_proto));
        (object_proto, array_proto)
    }

    unsafe fn type_of(&self, v: napi_value) -> Option<napi_valuetype> {
        let mut t = 0;
        (!v.is_null() && napi_typeof(self.env, v, &mut t) == NAPI_OK).then_some(t)
    }

    unsafe fn is(
        &self,
        f: unsafe extern "C" fn(napi_env, napi_value, *mut bool) -> napi_status,
        v: napi_value,
    ) -> bool {
        let mut b = false;
        f(self.env, v, &mut b) == NAPI_OK && b
    }

    unsafe fn same(&self, a: napi_value, b: napi_value) -> bool {
        let mut eq = false;
        !a.is_null() && !b.is_null() && napi_strict_equals(self.env, a, b, &mut eq) == NAPI_OK && eq
    }

    /// A string's text, at most MAX_STRING_BYTES bytes of it (a cut one fills the buffer but for at
    /// most one character), with the number of bytes Node-API wrote; None if it cannot be read.
    unsafe fn utf8_prefix(&self, v: napi_value) -> Option<(String, usize)> {
        let mut buf = std::mem::MaybeUninit::<[u8; MAX_STRING_BYTES + 1]>::uninit();
        let mut written = 0usize;
        if napi_get_value_string_utf8(
            self.env,
            v,
            buf.as_mut_ptr() as *mut c_char,
            MAX_STRING_BYTES + 1,
            &mut written,
        ) != NAPI_OK
        {
            return None;
        }
        let written = written.min(MAX_STRING_BYTES);
        // SAFETY: Node-API wrote `written` bytes at the start of the buffer.
        let bytes = std::slice::from_raw_parts(buf.as_ptr() as *const u8, written);
        Some((String::from_utf8_lossy(bytes).into_owned(), written))
    }

    /// Writes a string as JSON: at most MAX_STRING_BYTES bytes of it, and a note when it is longer.
    unsafe fn push_js_string(&mut self, v: napi_value) {
        let Some((s, written)) = self.utf8_prefix(v) else {
            self.out.push_str("null");
            return;
        };
        if written + 4 <= MAX_STRING_BYTES {
            // All of it.
            json_str(&mut self.out, &s);
            return;
        }
        // With no buffer, Node-API answers the length in UTF-16 code units (O(1)).
        let mut units = 0usize;
        napi_get_value_string_utf16(self.env, v, std::ptr::null_mut(), 0, &mut units);
        push_string(&mut self.out, &s, units);
    }

    /// A string's text, at most MAX_STRING_BYTES bytes of it (constructor names, Map keys).
    unsafe fn read_string(&self, v: napi_value) -> String {
        self.utf8_prefix(v).map(|(s, _)| s).unwrap_or_default()
    }

    fn push_label(&mut self, s: &str) {
        json_str(&mut self.out, s);
    }

    /// The constructor name V8 records for an object (`"Object"` when it has none).
    unsafe fn constructor_name(&self, v: napi_value) -> String {
        let name = (self.api.constructor_name)(v);
        if name.is_null() {
            return "Object".into();
        }
        let s = self.read_string(name);
        if s.is_empty() {
            "Object".into()
        } else {
            s
        }
    }

    /// Reads own property `key` of `obj` (a non-proxy object) without calling a getter.
    /// `check_own`: the key may not exist (else it came from the object's own key list).
    unsafe fn prop(&self, obj: napi_value, key: napi_value, check_own: bool) -> Prop {
        if check_own {
            let mut own = false;
            if napi_has_own_property(self.env, obj, key, &mut own) != NAPI_OK || !own {
                return Prop::Missing;
            }
        }
        let accessor = (self.api.has_accessor)(obj, self.context, key);
        if !accessor.has_value {
            return Prop::Missing;
        }
        if accessor.value {
            return Prop::Accessor;
        }
        let mut v = std::ptr::null_mut();
        if napi_get_property(self.env, obj, key, &mut v) != NAPI_OK {
            return Prop::Missing;
        }
        Prop::Value(v)
    }

    /// One step of an internal `asyncContext` path (`lib/otel.ts`): from object `v`, the value of
    /// `key` (a string or a symbol), read as the snapshot reads: the entry of a Map found by
    /// identity (`Map::AsArray`), or an own data property (never a getter, never the prototype).
    /// None when `v` is not an object, is a proxy, or has no such entry.
    ///
    /// # Safety
    /// As for [`Walker::value`].
    pub unsafe fn step(&mut self, v: napi_value, key: napi_value) -> Option<napi_value> {
        if self.type_of(v) != Some(NAPI_OBJECT) || (self.api.is_proxy)(v) {
            return None;
        }
        if (self.api.is_map)(v) {
            let flat = (self.api.map_as_array)(v);
            let mut len = 0u32;
            if flat.is_null() || napi_get_array_length(self.env, flat, &mut len) != NAPI_OK {
                return None;
            }
            for i in (0..len).step_by(2) {
                let mut k = std::ptr::null_mut();
                // A fresh array without holes: plain element reads.
                napi_get_element(self.env, flat, i, &mut k);
                if self.same(k, key) {
                    let mut value = std::ptr::null_mut();
                    napi_get_element(self.env, flat, i + 1, &mut value);
                    return Some(value);
                }
            }
            return None;
        }
        match self.prop(v, key, true) {
            Prop::Value(value) => Some(value),
            _ => None,
        }
    }

    /// Writes any value.
    ///
    /// # Safety
    /// As for [`Walker::new`]; `v` is a live handle.
    pub unsafe fn value(&mut self, v: napi_value, depth: u32) {
        let t = self.type_of(v);
        self.typed(v, t, depth);
    }

    /// [`Walker::value`] of a value whose type is known.
    unsafe fn typed(&mut self, v: napi_value, t: Option<napi_valuetype>, depth: u32) {
        self.values += 1;
        if self.values > MAX_VALUES {
            self.push_label("[Truncated]");
            return;
        }
        let env = self.env;
        match t {
            Some(NAPI_BOOLEAN) => {
                let mut b = false;
                napi_get_value_bool(env, v, &mut b);
                self.out.push_str(if b { "true" } else { "false" });
            }
            Some(NAPI_NUMBER) => {
                let mut n = 0.0;
                napi_get_value_double(env, v, &mut n);
                push_number(&mut self.out, n);
            }
            Some(NAPI_STRING) => self.push_js_string(v),
            Some(NAPI_BIGINT) => self.bigint(v),
            Some(NAPI_SYMBOL) => self.push_label("[Symbol]"),
            Some(NAPI_FUNCTION) => self.push_label("[Function]"),
            Some(NAPI_EXTERNAL) => self.push_label("[External]"),
            Some(NAPI_OBJECT) => self.object(v, depth, None),
            // undefined, null, unknown: like JSON.stringify in an array.
            _ => self.out.push_str("null"),
        }
    }

    unsafe fn bigint(&mut self, v: napi_value) {
        let mut sign: c_int = 0;
        let mut count = 0usize;
        // Sign and words both null: Node-API answers the word count only.
        if napi_get_value_bigint_words(
            self.env,
            v,
            std::ptr::null_mut(),
            &mut count,
            std::ptr::null_mut(),
        ) != NAPI_OK
        {
            self.out.push_str("null");
            return;
        }
        if count > MAX_BIGINT_WORDS {
            self.push_label(&format!("[BigInt of {} bits]", count * 64));
            return;
        }
        let mut words = vec![0u64; count.max(1)];
        let mut n = words.len();
        if napi_get_value_bigint_words(self.env, v, &mut sign, &mut n, words.as_mut_ptr())
            != NAPI_OK
        {
            self.out.push_str("null");
            return;
        }
        words.truncate(n);
        self.push_label(&bigint_decimal(sign != 0, &words));
    }

    /// Writes an object; `pick`: write only these keys (the store's top level), as a plain object.
    ///
    /// # Safety
    /// As for [`Walker::value`]; `v` is an object.
    pub unsafe fn object(&mut self, v: napi_value, depth: u32, pick: Option<&[String]>) {
        // Before anything else: every other question about a proxy may run a trap.
        if (self.api.is_proxy)(v) {
            self.push_label("[Proxy]");
            return;
        }
        if depth >= MAX_DEPTH {
            let label = if self.is(napi_is_array, v) {
                "[Array]"
            } else {
                "[Object]"
            };
            self.push_label(label);
            return;
        }
        if self.path.iter().any(|&p| self.same(p, v)) {
            self.push_label("[Circular]");
            return;
        }
        // Not a proxy, so [[GetPrototypeOf]] is the ordinary one: nothing runs.
        let (object_proto, array_proto) = self.protos();
        let mut proto = std::ptr::null_mut();
        napi_get_prototype(self.env, v, &mut proto);
        // Every handle made below stays in the caller's scope: at most a few per value, and
        // MAX_VALUES values.
        self.path.push(v);
        if self.same(proto, object_proto) || self.type_of(proto) == Some(NAPI_NULL) {
            // A plain object (the common case): no other question needed.
            self.props(v, depth, pick);
        } else if self.same(proto, array_proto) && self.is(napi_is_array, v) {
            if pick.is_some() {
                self.props(v, depth, pick);
            } else {
                self.array(v, depth);
            }
        } else {
            self.special(v, depth, pick);
        }
        self.path.pop();
    }

    /// An object whose prototype is not Object.prototype, null or Array.prototype.
    unsafe fn special(&mut self, v: napi_value, depth: u32, pick: Option<&[String]>) {
        if self.is(napi_is_date, v) {
            let mut ms = f64::NAN;
            napi_get_date_value(self.env, v, &mut ms);
            match iso_date(ms) {
                Some(s) => self.push_label(&s),
                None => self.push_label("Invalid Date"),
            }
            return;
        }
        let (is_map, is_set) = ((self.api.is_map)(v), (self.api.is_set)(v));
        if is_map || is_set {
            self.collection(v, is_map, depth, pick);
            return;
        }
        if self.is(napi_is_typedarray, v)
            || self.is(napi_is_arraybuffer, v)
            || self.is(napi_is_dataview, v)
            || self.is(napi_is_promise, v)
        {
            let name = self.constructor_name(v);
            self.push_label(&format!("[{name}]"));
            return;
        }
        if pick.is_some() {
            self.props(v, depth, pick);
            return;
        }
        let name = self.constructor_name(v);
        self.out.push('{');
        json_str(&mut self.out, &format!("[class {name}]"));
        self.out.push(':');
        self.props(v, depth, None);
        self.out.push('}');
    }

    unsafe fn key_string(&self, key: &str) -> napi_value {
        let mut k = std::ptr::null_mut();
        napi_create_string_utf8(self.env, key.as_ptr() as *const c_char, key.len(), &mut k);
        k
    }

    /// `{"key":value,...}` of own enumerable data properties (or of the picked keys).
    unsafe fn props(&mut self, obj: napi_value, depth: u32, pick: Option<&[String]>) {
        let env = self.env;
        let keys: Vec<napi_value> = match pick {
            Some(names) => names.iter().map(|n| self.key_string(n)).collect(),
            None => {
                let mut arr = std::ptr::null_mut();
                if napi_get_all_property_names(
                    env,
                    obj,
                    NAPI_KEY_OWN_ONLY,
                    NAPI_KEY_ENUMERABLE_STRINGS,
                    NAPI_KEY_NUMBERS_TO_STRINGS,
                    &mut arr,
                ) != NAPI_OK
                {
                    self.out.push_str("{}");
                    return;
                }
                let mut len = 0u32;
                napi_get_array_length(env, arr, &mut len);
                (0..len)
                    .map(|i| {
                        let mut k = std::ptr::null_mut();
                        // A fresh array of strings without holes: a plain element read.
                        napi_get_element(env, arr, i, &mut k);
                        k
                    })
                    .collect()
            }
        };
        self.out.push('{');
        let mut written = 0u32;
        let mut skipped = 0usize;
        for &key in &keys {
            if key.is_null() {
                continue;
            }
            if written >= MAX_KEYS {
                skipped += 1;
                continue;
            }
            let value = match self.prop(obj, key, pick.is_some()) {
                Prop::Missing => continue,
                Prop::Accessor => None,
                Prop::Value(v) => match self.type_of(v) {
                    // Left out, as JSON.stringify does.
                    Some(NAPI_UNDEFINED) => continue,
                    t => Some((v, t)),
                },
            };
            if written > 0 {
                self.out.push(',');
            }
            self.push_js_string(key);
            self.out.push(':');
            match value {
                Some((v, t)) => self.typed(v, t, depth + 1),
                None => self.push_label("[Getter]"),
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
    unsafe fn array(&mut self, arr: napi_value, depth: u32) {
        let mut len = 0u32;
        napi_get_array_length(self.env, arr, &mut len);
        self.out.push('[');
        let shown = len.min(MAX_KEYS);
        for i in 0..shown {
            if i > 0 {
                self.out.push(',');
            }
            let key = self.key_string(&i.to_string());
            match self.prop(arr, key, true) {
                Prop::Missing => self.out.push_str("null"),
                Prop::Accessor => self.push_label("[Getter]"),
                Prop::Value(v) => self.value(v, depth + 1),
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
    unsafe fn collection(
        &mut self,
        v: napi_value,
        is_map: bool,
        depth: u32,
        pick: Option<&[String]>,
    ) {
        /// Larger collections are not copied, only counted.
        const MAX_COPIED: usize = 1000;
        let size = if is_map {
            (self.api.map_size)(v)
        } else {
            (self.api.set_size)(v)
        };
        let label = if is_map { "[Map]" } else { "[Set]" };
        if size > MAX_COPIED {
            self.out.push('{');
            json_str(&mut self.out, label);
            self.out.push(':');
            self.push_label(&format!("{size} entries"));
            self.out.push('}');
            return;
        }
        let flat = if is_map {
            (self.api.map_as_array)(v)
        } else {
            (self.api.set_as_array)(v)
        };
        let mut len = 0u32;
        if flat.is_null() || napi_get_array_length(self.env, flat, &mut len) != NAPI_OK {
            self.push_label(label);
            return;
        }
        // A fresh array without holes: plain element reads.
        let env = self.env;
        let element = move |i: u32| {
            let mut e = std::ptr::null_mut();
            napi_get_element(env, flat, i, &mut e);
            e
        };
        let step = if is_map { 2 } else { 1 };
        if let (Some(names), true) = (pick, is_map) {
            self.out.push('{');
            let mut written = 0;
            for i in (0..len).step_by(2) {
                let k = element(i);
                if self.type_of(k) != Some(NAPI_STRING) {
                    continue;
                }
                let name = self.read_string(k);
                if !names.contains(&name) {
                    continue;
                }
                if written > 0 {
                    self.out.push(',');
                }
                json_str(&mut self.out, &name);
                self.out.push(':');
                self.value(element(i + 1), depth + 1);
                written += 1;
            }
            self.out.push('}');
            return;
        }
        self.out.push('{');
        json_str(&mut self.out, label);
        self.out.push_str(":[");
        let entries = len / step;
        let shown = entries.min(MAX_KEYS);
        for e in 0..shown {
            if e > 0 {
                self.out.push(',');
            }
            if is_map {
                self.out.push('[');
                self.value(element(e * 2), depth + 1);
                self.out.push(',');
                self.value(element(e * 2 + 1), depth + 1);
                self.out.push(']');
            } else {
                self.value(element(e), depth + 1);
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
