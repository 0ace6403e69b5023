//! Which of Node.js's synchronous APIs an environment's thread is inside, for warnings of blocks
//! in native code.
//!
//! While a BlockingDetector runs, the JavaScript layer (lib/sync-api-hooks.ts) wraps those APIs;
//! a wrapper writes the API's number into a cell of native memory as the call begins and 0 as it
//! ends: a plain store into an `Int32Array` over that memory, the cheapest write JavaScript has.
//! The monitor reads the cell when a warning goes out without a stack.
//!
//! A second cell tells the wrappers that a stack sample is waiting. A wrapper that sees it as its
//! call returns takes the sample right there (`sampleAtSyncReturn`), where the stack is the
//! caller's; V8's interrupt would run at the next interrupt check instead, often after the caller
//! has returned into Node's own code. So the caller's frames reach the block's event, and the log
//! while the block lasts (as a follow-up of a warning that had to go out without them).
//!
//! The cells are shared with JavaScript through an external ArrayBuffer, which holds a reference
//! to them: they live as long as the buffer or the environment's state, whichever is longer.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use loop_helpers_core::panics::lock_or_recover;
use loop_helpers_core::report::Frame;

use crate::napi::*;

/// The cells JavaScript sees as `Int32Array` elements 0 and 1 (lib/sync-api-hooks.ts `API`,
/// `SAMPLE_WAITING`).
///
/// JavaScript reads and writes them with plain typed-array accesses, which compile to single
/// aligned 4-byte loads and stores; the other threads use atomics. A plain store racing an atomic
/// load is outside Rust's memory model, but on the targets we build for (x86-64, AArch64) an
/// aligned 4-byte access is single-copy atomic: a reader sees a value that was written, at worst
/// a moment old. Nothing is inferred from the order of the two cells.
#[repr(C, align(8))]
#[derive(Default)]
pub struct SyncCells {
    /// 1 + the number of the API the thread is inside (the outermost one), 0: none.
    api: AtomicI32,
    /// 1 while a stack sample is queued for this environment (set with the queue's lock held).
    sample_waiting: AtomicI32,
    /// Room to grow without a new layout.
    _room: [AtomicI32; 2],
}

/// Bytes JavaScript sees.
const BYTES: usize = 16;
const _: () = assert!(std::mem::size_of::<SyncCells>() == BYTES);

/// The cells and what their numbers mean.
pub struct SyncMarker {
    cells: Arc<SyncCells>,
    /// The API names, by number - 1 (set by the JavaScript layer).
    names: Mutex<Vec<String>>,
    /// The directory of the JavaScript layer's files: its frames on top of a sample taken inside a
    /// wrapper (the wrapper's, the sampling call's) are not the caller's, and are left out.
    own_dir: Mutex<String>,
}

impl SyncCells {
    /// The number the thread marked (0: none). Any thread.
    fn api(&self) -> i32 {
        self.api.load(Ordering::Relaxed)
    }

    /// A stack sample is queued (or no longer).
    pub fn set_sample_waiting(&self, on: bool) {
        self.sample_waiting.store(on as i32, Ordering::Relaxed);
    }
}

/// The external buffer's finalizer.
///
/// # Safety
/// Called by Node-API once, with the `hint` that [`SyncMarker::array_buffer`] passed.
unsafe extern "C" fn release_cells(_env: napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the reference `array_buffer` leaked for this buffer, released once here.
    drop(unsafe { Arc::from_raw(hint as *const SyncCells) });
}

impl Default for SyncMarker {
    fn default() -> Self {
        SyncMarker {
            cells: Arc::new(SyncCells::default()),
            names: Mutex::new(Vec::new()),
            own_dir: Mutex::new(String::new()),
        }
    }
}

impl SyncMarker {
    /// The cells, shared with the sample queue (which flags a waiting sample).
    pub fn cells(&self) -> Arc<SyncCells> {
        self.cells.clone()
    }

    /// The API names, by number - 1.
    pub fn set_names(&self, names: Vec<String>) {
        *lock_or_recover(&self.names, "sync_marker::names") = names;
    }

    /// The directory of the JavaScript layer's files (ending in a separator).
    pub fn set_own_dir(&self, dir: String) {
        *lock_or_recover(&self.own_dir, "sync_marker::own_dir") = dir;
    }

    /// The name of API number `n` (1-based), if there is one.
    pub fn name(&self, n: i32) -> Option<String> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        lock_or_recover(&self.names, "sync_marker::names")
            .get(i)
            .cloned()
    }

    /// The API the thread is inside now, if it marked one. Any thread.
    pub fn current(&self) -> Option<String> {
        match self.cells.api() {
            0 => None,
            n => self.name(n),
        }
    }

    /// `frames`, taken inside a marked call, without the JavaScript layer's own frames: the
    /// wrapper's, and the sampling call's on top.
    pub fn without_hook_frames(&self, mut frames: Vec<Frame>) -> Vec<Frame> {
        let dir = lock_or_recover(&self.own_dir, "sync_marker::own_dir");
        if dir.is_empty() {
            return frames;
        }
        let own = |f: &Frame| {
            f.file_name.starts_with(dir.as_str())
                || f.generated
                    .as_ref()
                    .is_some_and(|g| g.file_name.starts_with(dir.as_str()))
        };
        frames.retain(|f| !own(f));
        frames
    }

    /// A new external ArrayBuffer over the cells (it holds a reference to them).
    ///
    /// # Safety
    /// On `env`'s JS thread, inside a Node-API callback.
    pub unsafe fn array_buffer(&self, env: napi_env) -> Result<napi_value, napi_status> {
        let hint = Arc::into_raw(self.cells.clone());
        let mut result = std::ptr::null_mut();
        // SAFETY: the caller is on `env`'s JS thread in a callback. The buffer's `BYTES` bytes are
        // the cells', kept alive by the reference in `hint` until `release_cells` drops it.
        let status = unsafe {
            napi_create_external_arraybuffer(
                env,
                hint as *mut c_void,
                BYTES,
                Some(release_cells),
                hint as *mut c_void,
                &mut result,
            )
        };
        if status != NAPI_OK {
            // Not handed to Node (a build that refuses external buffers): still ours.
            // SAFETY: `hint` came from `Arc::into_raw` above and Node-API did not take it.
            drop(unsafe { Arc::from_raw(hint) });
            return Err(status);
        }
        Ok(result)
    }
}

/// Whether this Node.js lets JavaScript see native memory (external ArrayBuffers; a build with
/// V8's sandbox does not). Tried with a buffer of its own, dropped at once.
///
/// # Safety
/// On `env`'s JS thread, inside a Node-API callback.
pub unsafe fn external_buffers_support(env: napi_env) -> Result<(), &'static str> {
    let probe = SyncMarker::default();
    // SAFETY: the caller's contract, the same as `array_buffer`'s.
    match unsafe { probe.array_buffer(env) } {
        Ok(_) => Ok(()),
        Err(_) => Err("this Node.js build does not allow external ArrayBuffers (V8 sandbox), through which the JavaScript layer marks its synchronous calls"),
    }
}
