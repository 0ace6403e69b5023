//! The current AsyncContextFrame, saved when `run()`/`wrap()` enter their guard and put back when
//! an interrupt of ours unwinds to it.
//!
//! A termination skips `finally` blocks, among them `AsyncLocalStorage.run()`'s, which puts the
//! caller's frame back. Without this, the guard's caller (and everything it schedules: a timer, a
//! promise) would go on with the store the interrupted code had entered: another request's
//! context, as far as an APM tool can tell. Where Node keeps AsyncLocalStorage stores in
//! AsyncContextFrames (Node 24+, and 22 with `--experimental-async-context-frame`), the frame is
//! V8's continuation-preserved embedder data; the two entry points below read and replace it
//! (Node's own `AsyncContextFrame.current()` / `.set()` call the same). Elsewhere the stores hang
//! off async resources, and `lib/guard-context.ts` puts them back.
//!
//! ABI: `Isolate::GetContinuationPreservedEmbedderData()` returns a `Local<Value>` (one pointer),
//! `SetContinuationPreservedEmbedderData(Local<Value>)` takes one (the `V2` versions of V8 14: a
//! `Local<Data>`, one pointer too); all are plain member functions (`this` first). None allocates
//! on the V8 heap beyond the returned handle, or runs JavaScript. Node 20's V8 has only
//! `Context`-level versions: there this table is unavailable, and nothing is saved or read (its
//! AsyncLocalStorage does not use frames).

use loop_helpers_core::symbol_table;

use crate::v8::{Isolate, Local};

type GetFrameFn = unsafe extern "C" fn(*mut Isolate) -> Local;
type SetFrameFn = unsafe extern "C" fn(*mut Isolate, Local);

symbol_table! {
    /// Reading and replacing the isolate's current AsyncContextFrame.
    pub struct FrameApi in "V8" {
        /// V8 14 (Node 26) added `...V2` versions over `Local<Data>` (also one pointer): those
        /// first, should the `Local<Value>` ones go. Both fields come from the same generation in
        /// any V8 that has both.
        get: GetFrameFn = c"_ZN2v87Isolate38GetContinuationPreservedEmbedderDataV2Ev"
            | c"_ZN2v87Isolate36GetContinuationPreservedEmbedderDataEv",
        set: SetFrameFn =
            c"_ZN2v87Isolate38SetContinuationPreservedEmbedderDataV2ENS_5LocalINS_4DataEEE"
            | c"_ZN2v87Isolate36SetContinuationPreservedEmbedderDataENS_5LocalINS_5ValueEEE",
    }
    requires: [crate::v8::enabled()];
}

/// The isolate's current frame (V8's continuation-preserved embedder data: undefined when never
/// set); None where the entry points are missing, or V8 gave no handle. The blocked code's, when
/// read in the sampling interrupt (crates/node/src/async_context.rs).
///
/// # Safety
/// On `isolate`'s thread, inside an open handle scope that outlives the returned value.
pub unsafe fn current(isolate: *mut Isolate) -> Option<Local> {
    let api = FrameApi::get().ok()?;
    // SAFETY: on the isolate's thread in an open handle scope (the caller's contract), where the
    // getter may create its Local; it only reads the isolate's field.
    let frame = unsafe { (api.get)(isolate) };
    (!frame.is_null()).then_some(frame)
}

/// The frame current at a guard's entry, to put back should an interrupt unwind to it.
pub struct SavedFrame {
    api: &'static FrameApi,
    frame: Local,
}

impl SavedFrame {
    /// The current frame (None where the entry points are missing, or V8 gave no handle).
    ///
    /// # Safety
    /// On `isolate`'s thread, inside an open handle scope that outlives the returned value (a
    /// Node-API callback's), with no termination in progress.
    pub unsafe fn current(isolate: *mut Isolate) -> Option<SavedFrame> {
        let api = FrameApi::get().ok()?;
        // SAFETY: the caller's contract, which is `current`'s.
        let frame = unsafe { current(isolate) }?;
        Some(SavedFrame { api, frame })
    }

    /// Makes the saved frame current again.
    ///
    /// # Safety
    /// On the isolate's thread, inside the handle scope [`SavedFrame::current`] was called in, with
    /// no termination in progress (cancelled before this call).
    pub unsafe fn restore(&self, isolate: *mut Isolate) {
        // SAFETY: `frame` is a live handle of this isolate (its scope is still open: the caller's
        // contract); the setter only stores it in the isolate.
        unsafe { (self.api.set)(isolate, self.frame) };
    }
}
