//! Where AsyncLocalStorage is built on async_hooks (Node.js 22 by default, 20): finding the
//! blocked code's store in the sampling interrupt, running no JavaScript. `lib/hooks-store.ts`
//! says where it is and what JavaScript records for this; in short, `getStore()` there is
//! `lookupPublicResource(executionAsyncResource())[kResourceStore]`, and:
//! - the current level is `async_hook_fields[kStackLength]`, the current async id
//!   `async_id_fields[kExecutionAsyncId]` (Node's typed arrays, read as memory);
//! - where JavaScript entered that level, its resource is the last of Node's
//!   `execution_async_resources`: its own data property under Node's `resource_symbol`, if any, is
//!   the public resource, and the store is that one's own data property under the storage's
//!   `kResourceStore` symbol: exactly what `getStore()` reads;
//! - where native code entered it (the array has a hole there), the newest record of the
//!   storage's `run()`/`enterWith()` made at this level and async id answers;
//! - with neither, or past a marker that the records' cap was reached, the store is not known:
//!   [`Located::Unknown`], never an older store.
//!
//! Every property is read as the snapshot reads (`Walker::step`, `Walker::own_element`): own
//! data properties only, never a getter, a prototype or a proxy trap.

use crate::context_snapshot::Walker;
use crate::js::{self, ref_value, strong_ref};
use crate::napi::*;
use crate::v8_values::{Kind, Local, ValueApi};

/// Why a store could not be found (the event's `contextMissing`).
pub const NATIVE_LEVEL: &str = "the blocked code runs in an async resource that Node.js entered from native code (an HTTP server's request callback, for one), which cannot be read without running JavaScript; AsyncLocalStorage is async_hooks-based on this Node.js, and a store is found there only when the blocked code entered it with run() or enterWith() while the detector ran";

/// Stride of the flat records: storage, level, async id, store.
const STRIDE: u32 = 4;

/// The parts of `asyncContext.hooks` (lib/hooks-store.ts `NativeHooks`), held by references.
pub struct Hooks {
    fields: napi_ref,
    stack_length: usize,
    ids: napi_ref,
    execution_async_id: usize,
    resources: napi_ref,
    /// `['enabled', resource_symbol]`.
    names: napi_ref,
    /// Per storage, its `kResourceStore` symbol.
    symbols: napi_ref,
    records: napi_ref,
    /// `[0]`: the slots of `records` in use.
    records_top: napi_ref,
}

/// Where a storage's store was looked for.
pub enum Located {
    /// Found: the store (None: not entered, or the storage is disabled).
    Store(Option<napi_value>),
    /// Not known ([`NATIVE_LEVEL`]): the level was entered natively with no record of it (or past
    /// the records' cap), or the storage's key cannot be looked up.
    Unknown,
}

impl Hooks {
    /// From `asyncContext.hooks`; None when it is undefined (stores in frames).
    ///
    /// # Safety
    /// In `cb`'s callback, with `v` a value of its env.
    pub unsafe fn from_options(cb: &js::Callback, v: napi_value) -> Result<Option<Hooks>, String> {
        let env = cb.env();
        // SAFETY: in `cb`'s callback on env's JS thread, `v` and what is read from it values of
        // env (the caller's contract): the `js` helpers' contract.
        unsafe {
            if matches!(js::type_name(env, v), "undefined" | "null") {
                return Ok(None);
            }
            let o = js::Options::new(cb, v, "start()", "asyncContext.hooks")?;
            let index = |name: &std::ffi::CStr| -> Result<usize, String> {
                let n = o.number(name)?;
                if (0.0..64.0).contains(&n) && n.fract() == 0.0 {
                    Ok(n as usize)
                } else {
                    Err(format!("asyncContext.hooks: bad index {n}"))
                }
            };
            let stack_length = index(c"stackLength")?;
            let execution_async_id = index(c"executionAsyncId")?;
            let mut refs = [std::ptr::null_mut(); 7];
            // Node's typed arrays (their kind is checked at each read), then arrays.
            for (slot, (name, want)) in refs.iter_mut().zip([
                (c"fields", "object"),
                (c"ids", "object"),
                (c"resources", "array"),
                (c"names", "array"),
                (c"symbols", "array"),
                (c"records", "array"),
                (c"recordsTop", "object"),
            ]) {
                let value = o.get(name);
                let got = js::type_name(env, value);
                if got != want {
                    refs.iter().for_each(|&r| js::drop_ref(env, r));
                    return Err(format!(
                        "asyncContext.hooks.{}: must be an {want}, got {got}",
                        name.to_string_lossy()
                    ));
                }
                *slot = strong_ref(env, value);
            }
            let [fields, ids, resources, names, symbols, records, records_top] = refs;
            Ok(Some(Hooks {
                fields,
                stack_length,
                ids,
                execution_async_id,
                resources,
                names,
                symbols,
                records,
                records_top,
            }))
        }
    }

    /// Releases the references.
    ///
    /// # Safety
    /// On env's JS thread, once.
    pub unsafe fn close(&self, env: napi_env) {
        for r in [
            self.fields,
            self.ids,
            self.resources,
            self.names,
            self.symbols,
            self.records,
            self.records_top,
        ] {
            // SAFETY: on env's JS thread (the caller's contract); each reference ours, once.
            unsafe { js::drop_ref(env, r) };
        }
    }

    /// The store of storage `index` (the AsyncLocalStorage `instance`) for the code running now.
    ///
    /// # Safety
    /// As for `Walker::step`, with `w` made under that contract and `cx` the current context.
    pub unsafe fn locate(
        &self,
        env: napi_env,
        api: &ValueApi,
        cx: Local,
        w: &mut Walker,
        index: u32,
        instance: napi_value,
    ) -> Located {
        // SAFETY: the walker's contract (the caller's): on the isolate's thread in a handle scope
        // and try_catch. The references are ours; the arrays read with `element` (names,
        // symbols, records) are our own plain arrays, never handed out; Node's typed arrays are
        // read through Node-API; Node's resource array and the objects found through it only
        // with `Walker::own_element`/`step` (own data properties).
        unsafe {
            let names = ref_value(env, self.names);
            let symbols = ref_value(env, self.symbols);
            let records = ref_value(env, self.records);
            if names.is_null() || symbols.is_null() || records.is_null() {
                return Located::Unknown;
            }
            // exit() and disable() turn the flag off: getStore() gives undefined.
            let enabled = w.step(instance, api.element(cx, names, 0));
            if !enabled
                .is_some_and(|v| api.kind(v) == Some(Kind::Boolean) && (api.boolean_value)(v))
            {
                return Located::Store(None);
            }
            let (Some(level), Some(id)) = (
                typed_element::<u32>(
                    env,
                    ref_value(env, self.fields),
                    NAPI_UINT32_ARRAY,
                    self.stack_length,
                ),
                typed_element::<f64>(
                    env,
                    ref_value(env, self.ids),
                    NAPI_FLOAT64_ARRAY,
                    self.execution_async_id,
                ),
            ) else {
                return Located::Unknown;
            };
            let level = level as f64;
            // The storage's key: a symbol (or a string) of ours, else nothing can be looked up.
            let key = if index < (api.array_length)(symbols) {
                api.element(cx, symbols, index)
            } else {
                std::ptr::null_mut()
            };
            if !matches!(api.kind(key), Some(Kind::Symbol | Kind::String)) {
                return Located::Unknown;
            }
            let resources = ref_value(env, self.resources);
            let resource = (level >= 1.0 && !resources.is_null())
                .then(|| w.own_element(resources, level as u32 - 1))
                .flatten()
                .filter(|&r| api.kind(r) == Some(Kind::Object));
            // A level JavaScript entered: its resource is what getStore() reads, and a store on
            // it answers. With none there, the records still answer if they have this level:
            // Node's async-hooks trampoline can put a resource in a slot whose level native code
            // entered, and the stores entered there may then sit on another object (CI, Node 20
            // and 22, 300 nested run()s in an HTTP request callback gave no store where the cap's
            // marker was on record).
            let on_resource = resource.map(|resource| {
                let public = w
                    .step(resource, api.element(cx, names, 1))
                    .filter(|&p| api.kind(p) == Some(Kind::Object))
                    .unwrap_or(resource);
                w.step(public, key)
                    .filter(|&s| api.kind(s) != Some(Kind::Undefined))
            });
            if let Some(Some(store)) = on_resource {
                return Located::Store(Some(store));
            }
            // A level native code entered: the newest record at this level and async id (older
            // levels below end the search; a marker of the cap at or below this level leaves it
            // unknown, and so does finding none, unless a resource said there is no store).
            let in_use =
                typed_element::<u32>(env, ref_value(env, self.records_top), NAPI_UINT32_ARRAY, 0)
                    .unwrap_or(0)
                    .min((api.array_length)(records));
            let mut i = in_use / STRIDE;
            while i > 0 {
                i -= 1;
                let at = |k: u32| api.element(cx, records, i * STRIDE + k);
                let l = js::f64_arg(env, at(1)).unwrap_or(f64::NAN);
                let storage = at(0);
                if api.kind(storage) == Some(Kind::Null) && l <= level {
                    return Located::Unknown;
                }
                if l < level {
                    break;
                }
                if l == level && js::f64_arg(env, at(2)) == Some(id) && api.same(storage, instance)
                {
                    let store = at(3);
                    return Located::Store(
                        (api.kind(store) != Some(Kind::Undefined)).then_some(store),
                    );
                }
            }
            // Nothing on record: the resource's answer (no store) where there is a resource.
            if on_resource.is_some() {
                Located::Store(None)
            } else {
                Located::Unknown
            }
        }
    }
}

/// Element `i` of `ta`, a typed array of `kind` whose elements are `T`; None if it is not one, or
/// too short.
///
/// # Safety
/// On env's JS thread in a handle scope; `ta` live or null; `T` the element type of `kind`.
unsafe fn typed_element<T: Copy>(env: napi_env, ta: napi_value, kind: i32, i: usize) -> Option<T> {
    if ta.is_null() {
        return None;
    }
    // SAFETY: the caller's contract, which is `typed_array`'s.
    let (data, len) = unsafe { js::typed_array::<T>(env, ta, kind) }?;
    // SAFETY: `data` points at `len` elements of T (Node-API's answer for a typed array of
    // `kind`, whose buffer the live handle `ta` keeps), and `i < len`. Read unaligned: no
    // assumption about the buffer's alignment is needed.
    (i < len).then(|| unsafe { data.add(i).read_unaligned() })
}
