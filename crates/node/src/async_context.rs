//! `asyncContext`: which AsyncLocalStorage stores a detector reads, and reading them on the blocked
//! thread, inside the V8 interrupt that samples its stack, running no JavaScript.
//!
//! Where the store is: with AsyncContextFrame (Node 24+ by default, Node 22 with
//! `--experimental-async-context-frame`), Node keeps the current frame as V8's
//! continuation-preserved embedder data: a `Map` (subclass) from each AsyncLocalStorage instance to
//! its store, which V8 saves and restores across `await`s and Node across callbacks. So in the
//! interrupt, the embedder data is the blocked code's own frame, never a neighbour request's.
//! `Map::AsArray` copies its entries without calling anything, and each instance is found by
//! identity (`Value::StrictEquals`). The store is then written by `context_snapshot::Walker`.
//!
//! Cost: the read runs once per block, in the interrupt, with cold caches. What can be made
//! before is made when the detector starts ([`AsyncContextSpec::from_options`]): the picked keys
//! as V8 strings, and the `Object.prototype` / `Array.prototype` the walk compares with.
//!
//! Without AsyncContextFrame (Node 22 by default, 20), AsyncLocalStorage keeps its store on the
//! current async resource: [`crate::hooks_store`] finds it there, with what `lib/hooks-store.ts`
//! hands over as `asyncContext.hooks`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use loop_helpers_core::context::ContextCapture;

use crate::context_snapshot::{self, Pick, Prepared, Protos, Walker};
use crate::hooks_store::{Hooks, Located};
use crate::js::{self, ref_value, strong_ref};
use loop_helpers_core::panics::lock_or_recover;

use crate::napi::*;
use crate::v8::{self, Isolate};
use crate::v8_values::{self, Kind};
use loop_helpers_core::snapshot_json::MAX_KEYS;

struct Storage {
    /// A strong reference to the AsyncLocalStorage instance (the frame's key).
    instance: napi_ref,
    /// Keys of the store to keep (None: all of it): a reference to an array of their strings made
    /// when the detector started (Node-API references hold objects only), and how many.
    keys: Option<(napi_ref, u32)>,
    /// Internal (`lib/otel.ts`): keys kept, the same way, of the objects found under `keys`.
    inner_keys: Option<(napi_ref, u32)>,
    /// Internal (`lib/otel.ts`): a reference to an array of keys (strings or symbols) followed
    /// from the store before it is written, each step a Map entry or an own data property
    /// ([`Walker::step`]); the object found at its end is written (with `keys`) and kept as an
    /// anchor (see [`AsyncContextSpec::take_anchors`]). None: the store itself.
    path: Option<napi_ref>,
}

/// Anchors kept at most per detector, until JavaScript takes them (the oldest go first).
const MAX_ANCHORS: usize = 64;

/// The stores a detector reads.
pub struct AsyncContextSpec {
    storages: Vec<Storage>,
    /// What the walk takes from the detector's start ([`Prepared`]): `Object.prototype` and
    /// `Array.prototype` of the context it started in, and the array of index names.
    prepared: [napi_ref; 3],
    /// One storage given alone: the snapshot is its store; otherwise an array, one per storage.
    single: bool,
    /// Where stores hang off async resources: how to find them (None: in frames).
    hooks: Option<Hooks>,
    closed: AtomicBool,
    /// The block whose store was read (the monitor's block serial, from 1): the store is read
    /// once per block, at the first sample that finds JavaScript on the stack.
    read_block: AtomicU64,
    /// Strong references to the objects found at the end of a storage's `path` by the reads since
    /// JavaScript last took them (`takeContextAnchors`): for OpenTelemetry, the span that was
    /// active in the blocked code, which the `'blocked'` delivery then annotates.
    anchors: Mutex<Vec<napi_ref>>,
}

// SAFETY: the references are created, read and deleted only on the environment's JavaScript
// thread (start(), the interrupt callback, close()); other threads only move the Arc around.
unsafe impl Send for AsyncContextSpec {}
// SAFETY: as above; `closed` is atomic.
unsafe impl Sync for AsyncContextSpec {}

/// Stores read in sampling interrupts, and the time they took (`nativeInfo()`, for the bench).
static READS: AtomicU64 = AtomicU64::new(0);
static READ_NS: AtomicU64 = AtomicU64::new(0);
static LAST_READ_NS: AtomicU64 = AtomicU64::new(0);

/// (reads, total ns, ns of the last one) of the stores read in sampling interrupts so far.
pub fn read_stats() -> (u64, u64, u64) {
    (
        READS.load(Ordering::Relaxed),
        READ_NS.load(Ordering::Relaxed),
        LAST_READ_NS.load(Ordering::Relaxed),
    )
}

pub const CLOSED: &str = "the detector was stopped before the stack sample was taken";
pub const TERMINATING: &str = "JavaScript was being terminated when the stack sample was taken";
pub const NO_JAVASCRIPT: &str = "no JavaScript was on the stack when the sample was taken: the thread was blocked inside native code, and V8 ran the interrupt only once that code had returned, when the blocked code's store was no longer current";
pub const THREW: &str = "reading the store raised an exception in V8 (it was discarded)";

impl AsyncContextSpec {
    /// From the `asyncContext` option of `start()` (lib/native.ts `AsyncContextOptions`):
    /// `{ storages, keys, single, paths? }`, `storages` an array of AsyncLocalStorage instances
    /// (checked in TypeScript), `keys` an array of the same length of `null` or arrays of strings,
    /// `single` whether the user gave one instance alone, `paths` (internal, lib/otel.ts) undefined
    /// or an array of the same length of `null` or arrays of strings and symbols (see
    /// [`Storage::path`]). None when `spec` is undefined or null (asyncContext off).
    ///
    /// # Safety
    /// `spec` is a value of `cb`'s env, made or received in that callback.
    pub unsafe fn from_options(
        cb: &js::Callback,
        spec: napi_value,
        call: &'static str,
        what: &'static str,
    ) -> Result<Option<Self>, String> {
        let env = cb.env();
        // SAFETY: in `cb`'s callback, on env's JS thread (`Callback::enter`'s contract), with
        // `spec` a value of env (the caller's): the `js` helpers' contract, for `spec` and the
        // values read from it.
        let (single, instances, key_lists, path_lists, inner_lists, hooks) = unsafe {
            if matches!(js::type_name(env, spec), "undefined" | "null") {
                return Ok(None);
            }
            let o = js::Options::new(cb, spec, call, what)?;
            let single = o.boolean(c"single")?;
            let storages = o.get(c"storages");
            let Some(instances) = js::array_elements(env, storages) else {
                return Err(format!(
                    "{call}: {what}.storages must be an array, got {}",
                    js::type_name(env, storages)
                ));
            };
            let keys = o.get(c"keys");
            let Some(key_lists) = js::array_elements(env, keys) else {
                return Err(format!(
                    "{call}: {what}.keys must be an array, got {}",
                    js::type_name(env, keys)
                ));
            };
            let path_lists = js::array_elements(env, o.get(c"paths")).unwrap_or_default();
            let inner_lists = js::array_elements(env, o.get(c"innerKeys")).unwrap_or_default();
            let hooks = Hooks::from_options(cb, o.get(c"hooks"))?;
            (single, instances, key_lists, path_lists, inner_lists, hooks)
        };
        // SAFETY: as above; a Node-API callback has a handle scope open.
        let protos = unsafe { Protos::of_current_context(env) };
        let mut index_names = std::ptr::null_mut();
        // SAFETY: as above; `index_names` a live local.
        unsafe { napi_create_array_with_length(env, 0, &mut index_names) };
        let mut spec = AsyncContextSpec {
            storages: Vec::new(),
            // SAFETY: as above; the values were just made in this env.
            prepared: [protos.object, protos.array, index_names]
                .map(|v| unsafe { strong_ref(env, v) }),
            single: single && instances.len() == 1,
            hooks,
            closed: AtomicBool::new(false),
            read_block: AtomicU64::new(0),
            anchors: Mutex::new(Vec::new()),
        };
        for (i, inst) in instances.into_iter().enumerate() {
            let mut t = 0;
            // SAFETY: as above (env's JS thread, in a callback); `t` a live local.
            if unsafe { napi_typeof(env, inst, &mut t) } != NAPI_OK || t != NAPI_OBJECT {
                // SAFETY: as above.
                unsafe { spec.close(env) };
                return Err("asyncContext: not an object".into());
            }
            // SAFETY: as above, for the key lists read from `spec`.
            let (keys, inner_keys) = unsafe {
                let keys = key_lists
                    .get(i)
                    .and_then(|&k| js::array_elements(env, k))
                    .map(|ks| key_array(env, &ks));
                let inner_keys = inner_lists
                    .get(i)
                    .and_then(|&k| js::array_elements(env, k))
                    .map(|ks| key_array(env, &ks));
                (keys, inner_keys)
            };
            let mut r = std::ptr::null_mut();
            // SAFETY: as above; `inst` is an object (checked), `r` a live local.
            if unsafe { napi_create_reference(env, inst, 1, &mut r) } != NAPI_OK {
                // SAFETY: as above.
                unsafe { spec.close(env) };
                return Err("asyncContext: napi_create_reference failed".into());
            }
            let mut path = None;
            if let Some(&p) = path_lists.get(i) {
                let mut pt = 0;
                let mut is_array = false;
                // SAFETY: as above; live locals out. On failure, `r` (made above, not yet in
                // `spec`) is deleted once, and `spec` closed.
                unsafe {
                    if napi_typeof(env, p, &mut pt) == NAPI_OK
                        && pt == NAPI_OBJECT
                        && napi_is_array(env, p, &mut is_array) == NAPI_OK
                        && is_array
                    {
                        let mut pr = std::ptr::null_mut();
                        if napi_create_reference(env, p, 1, &mut pr) != NAPI_OK {
                            napi_delete_reference(env, r);
                            spec.close(env);
                            return Err("asyncContext: napi_create_reference failed".into());
                        }
                        path = Some(pr);
                    }
                }
            }
            spec.storages.push(Storage {
                instance: r,
                keys,
                inner_keys,
                path,
            });
        }
        Ok(Some(spec))
    }

    /// Releases the instances (the detector stopped). Later captures report [`CLOSED`].
    ///
    /// # Safety
    /// On `env`'s JS thread.
    pub unsafe fn close(&self, env: napi_env) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: on env's JS thread (the caller's contract). Each reference is ours, made in
        // this env, and deleted once: `closed` lets only the first call through, and the anchors
        // are drained from their list. Null ones (not made) are skipped, where a slot may be.
        unsafe {
            for s in &self.storages {
                napi_delete_reference(env, s.instance);
                if let Some(p) = s.path {
                    napi_delete_reference(env, p);
                }
                for (k, _) in [s.keys, s.inner_keys].into_iter().flatten() {
                    napi_delete_reference(env, k);
                }
            }
            for &p in self.prepared.iter().filter(|p| !p.is_null()) {
                napi_delete_reference(env, p);
            }
            if let Some(h) = &self.hooks {
                h.close(env);
            }
            for r in lock_or_recover(&self.anchors, "async_context anchors").drain(..) {
                napi_delete_reference(env, r);
            }
        }
    }

    /// The anchors kept since the last call (oldest first), released.
    ///
    /// # Safety
    /// On `env`'s JS thread, in a Node-API callback.
    pub unsafe fn take_anchors(&self, env: napi_env) -> Vec<napi_value> {
        let refs = std::mem::take(&mut *lock_or_recover(
            &self.anchors,
            "async_context anchors",
        ));
        refs.into_iter()
            .filter_map(|r| {
                let mut v = std::ptr::null_mut();
                // SAFETY: on env's JS thread in a callback (the caller's contract), whose scope
                // holds `v`; `r` is an anchor reference of this env, taken from the list, so
                // deleted once.
                unsafe {
                    napi_get_reference_value(env, r, &mut v);
                    napi_delete_reference(env, r);
                }
                (!v.is_null()).then_some(v)
            })
            .collect()
    }

    /// Keeps `v` (an object) as an anchor; the oldest goes when there are too many.
    ///
    /// # Safety
    /// On `env`'s JS thread; `v` a live value of that env.
    unsafe fn keep_anchor(&self, env: napi_env, v: napi_value) {
        let mut r = std::ptr::null_mut();
        // SAFETY: the caller's contract; `r` a live local.
        if unsafe { napi_create_reference(env, v, 1, &mut r) } != NAPI_OK {
            return;
        }
        let mut anchors = lock_or_recover(&self.anchors, "async_context anchors");
        if anchors.len() >= MAX_ANCHORS {
            // SAFETY: on env's JS thread; the oldest anchor, removed from the list: deleted once.
            unsafe { napi_delete_reference(env, anchors.remove(0)) };
        }
        anchors.push(r);
    }

    /// Follows `path` (a reference to an array of keys) from `v`; None when a step finds nothing.
    ///
    /// # Safety
    /// As for [`Walker::new`], which made `w`; `path` is a reference of this spec.
    unsafe fn follow(
        &self,
        env: napi_env,
        api: &v8_values::ValueApi,
        context: v8_values::Local,
        w: &mut Walker,
        mut v: napi_value,
        path: napi_ref,
    ) -> Option<napi_value> {
        // SAFETY: on the isolate's thread inside a handle scope (the caller's contract).
        let steps = unsafe { ref_value(env, path) };
        if steps.is_null() {
            return None;
        }
        // Our own array (made by lib/detector.ts, never handed out): plain element reads.
        // SAFETY: `steps` is a live, non-empty array handle, `context` the current context, on the
        // isolate's thread, inside `w`'s scope and try_catch (the caller's contract).
        unsafe {
            for i in 0..(api.array_length)(steps) {
                v = w.step(v, api.element(context, steps, i))?;
            }
        }
        Some(v)
    }

    /// In the sampling interrupt of block `serial`: the stores of the blocked code, or None when
    /// they were read at an earlier sample of this block.
    ///
    /// # Safety
    /// As for [`AsyncContextSpec::capture`].
    pub unsafe fn capture_once(
        &self,
        env: napi_env,
        isolate: *mut Isolate,
        serial: u64,
    ) -> Option<ContextCapture> {
        if self.read_block.load(Ordering::Relaxed) == serial {
            return None;
        }
        let started = loop_helpers_core::clock::now_ns();
        // SAFETY: the caller's contract, which is `capture`'s.
        let c = unsafe { self.capture(env, isolate) };
        READS.fetch_add(1, Ordering::Relaxed);
        let took = loop_helpers_core::clock::now_ns().saturating_sub(started);
        READ_NS.fetch_add(took, Ordering::Relaxed);
        LAST_READ_NS.store(took, Ordering::Relaxed);
        if matches!(c, ContextCapture::Value(_)) {
            self.read_block.store(serial, Ordering::Relaxed);
        }
        Some(c)
    }

    /// Reads the stores of the code running now.
    ///
    /// # Safety
    /// On `env`'s JS thread, in a Node-API callback or in an interrupt callback of `isolate`.
    pub unsafe fn capture(&self, env: napi_env, isolate: *mut Isolate) -> ContextCapture {
        if self.closed.load(Ordering::Acquire) {
            return ContextCapture::Missing(CLOSED.into());
        }
        let api = match v8_values::ValueApi::get() {
            Ok(a) => a,
            Err(e) => {
                return ContextCapture::Missing(format!(
                    "asyncContext is not available on this Node.js: {e}"
                ))
            }
        };
        // SAFETY: on `isolate`'s thread (the caller's contract: env's JS thread, its isolate).
        if unsafe { v8::is_terminating(isolate) } {
            return ContextCapture::Missing(TERMINATING.into());
        }
        let mut scope: napi_handle_scope = std::ptr::null_mut();
        // SAFETY: on env's JS thread, in a callback (the caller's contract); `scope` a live local.
        if unsafe { napi_open_handle_scope(env, &mut scope) } != NAPI_OK {
            return ContextCapture::Missing("no handle scope".into());
        }
        // SAFETY: on the isolate's thread with V8 usable; `write` runs inside the scope just
        // opened and inside the try_catch, as `Walker::new` requires.
        let json = unsafe { api.try_catch(isolate, || self.write(env, isolate, api)) };
        // SAFETY: the scope opened above, closed once.
        unsafe { napi_close_handle_scope(env, scope) };
        // A Node-API call that failed may have left an exception for this module's next call.
        let mut discarded = std::ptr::null_mut();
        // SAFETY: on env's JS thread; `discarded` a live local.
        unsafe { napi_get_and_clear_last_exception(env, &mut discarded) };
        match json {
            Some(Ok(j)) => ContextCapture::Value(j),
            Some(Err(why)) => ContextCapture::Missing(why.into()),
            None => ContextCapture::Missing(THREW.into()),
        }
    }

    /// The stores as JSON, or why one of them cannot be found.
    ///
    /// # Safety
    /// On `isolate`'s thread (`env`'s), inside an open handle scope and a `ValueApi::try_catch`,
    /// with no termination in progress.
    unsafe fn write(
        &self,
        env: napi_env,
        isolate: *mut Isolate,
        api: &v8_values::ValueApi,
    ) -> Result<String, &'static str> {
        // SAFETY: on the isolate's thread, inside a handle scope (the caller's contract); the
        // references are this spec's (null ones give null).
        let (context, [object, array, index_names]) = unsafe {
            (
                (api.current_context)(isolate),
                self.prepared.map(|r| ref_value(env, r)),
            )
        };
        let prepared = Prepared {
            protos: Protos { object, array },
            index_names,
        };
        let mut out = String::with_capacity(256);
        // SAFETY: the caller's contract is `Walker::new`'s; `context` is the current context, and
        // the prepared handles live (just read into this scope) or null.
        let mut w = unsafe { Walker::new(env, api, context, prepared, &mut out) };
        // The blocked code's frame, when there is one (a Map subclass; never a proxy, whose
        // IsMap is false).
        // SAFETY: on the isolate's thread in a handle scope; `frame` is checked for null before
        // `IsMap`.
        let frame = unsafe {
            let frame = match self.hooks {
                Some(_) => None,
                None => crate::context_frame::current(isolate),
            };
            frame.filter(|&f| (api.is_map)(f))
        };
        if !self.single {
            w.out.push('[');
        }
        let (mut picked, mut inner) = (
            [std::ptr::null_mut(); MAX_KEYS as usize],
            [std::ptr::null_mut(); MAX_KEYS as usize],
        );
        for (i, s) in self.storages.iter().enumerate() {
            if i > 0 {
                w.out.push(',');
            }
            // SAFETY: the caller's contract is `Walker::new`'s, with `w` made under it and
            // `context` the current context; every handle used in this iteration comes from this
            // scope (`frame`, the references' values, what `map_entry` and `follow` return).
            unsafe {
                let instance = ref_value(env, s.instance);
                let mut store = match (&self.hooks, frame, instance.is_null()) {
                    (_, _, true) => None,
                    (Some(h), _, false) => {
                        match h.locate(env, api, context, &mut w, i as u32, instance) {
                            Located::Store(store) => store,
                            Located::Unknown => return Err(crate::hooks_store::NATIVE_LEVEL),
                        }
                    }
                    (None, Some(f), false) => {
                        context_snapshot::map_entry(api, context, f, instance)
                    }
                    (None, None, false) => None,
                };
                if let (Some(v), Some(path)) = (store, s.path) {
                    store = self.follow(env, api, context, &mut w, v, path);
                    if let Some(target) = store {
                        if api.kind(target) == Some(Kind::Object) {
                            self.keep_anchor(env, target);
                        }
                    }
                }
                let pick = s.keys.map(|keys| Pick {
                    keys: read_keys(env, api, context, keys, &mut picked),
                    inner: s
                        .inner_keys
                        .map(|keys| read_keys(env, api, context, keys, &mut inner)),
                });
                match store.map(|v| (v, api.kind(v))) {
                    Some((v, Some(Kind::Object))) => w.object(v, pick),
                    // Not entered (or exited: Node keeps the key with undefined).
                    None | Some((_, Some(Kind::Undefined))) => w.out.push_str("null"),
                    Some((v, _)) => w.value(v),
                }
            }
        }
        if !self.single {
            w.out.push(']');
        }
        Ok(out)
    }
}

/// A new array of the strings among `keys` (at most MAX_KEYS; TypeScript checked them), held by a
/// reference, and its length. Empty without the V8 entry points (nothing is read then).
///
/// # Safety
/// On `env`'s JS thread, inside a Node-API callback.
unsafe fn key_array(env: napi_env, keys: &[napi_value]) -> (napi_ref, u32) {
    let mut arr = std::ptr::null_mut();
    let (Ok(api), true) = (
        v8_values::ValueApi::get(),
        // SAFETY: on env's JS thread in a callback (the caller's contract); `arr` a live local.
        unsafe { napi_create_array_with_length(env, 0, &mut arr) } == NAPI_OK,
    ) else {
        return (std::ptr::null_mut(), 0);
    };
    // SAFETY: on the JS thread, whose isolate has a context entered inside a callback, and a
    // handle scope open for the Local.
    let context = unsafe { (api.current_context)(v8::current_isolate()) };
    let mut len = 0u32;
    for &k in keys.iter().take(MAX_KEYS as usize) {
        // SAFETY: as above; `k` a value of this env, `arr` our array of length `len`, `context`
        // the current context.
        if unsafe { js::type_name(env, k) == "string" && api.push(context, arr, len, k) } {
            len += 1;
        }
    }
    // SAFETY: as above.
    (unsafe { strong_ref(env, arr) }, len)
}

/// The strings of a key array made by [`key_array`], read into `buf`.
///
/// # Safety
/// On the isolate's thread, inside an open handle scope; `context` is the current context.
unsafe fn read_keys<'b>(
    env: napi_env,
    api: &v8_values::ValueApi,
    context: v8_values::Local,
    (keys, len): (napi_ref, u32),
    buf: &'b mut [napi_value; MAX_KEYS as usize],
) -> &'b [napi_value] {
    // SAFETY: on the isolate's thread inside a handle scope (the caller's contract).
    let keys = unsafe { ref_value(env, keys) };
    let len = if keys.is_null() {
        0
    } else {
        (len as usize).min(buf.len())
    };
    for (i, slot) in buf[..len].iter_mut().enumerate() {
        // Our own array of strings, never handed out: plain element reads.
        // SAFETY: `keys` is live and non-null, `context` the current context (the caller's
        // contract); `i` is below the length it was made with.
        *slot = unsafe { api.element(context, keys, i as u32) };
    }
    &buf[..len]
}
