//! Which callback the loop thread runs: the async id Node runs it under, read with
//! `node::AsyncHooksGetExecutionAsyncId(v8::Isolate*)` (Node's C++ embedder API, `node.h`; exported
//! by Node 20 to 26). Every timer, Immediate, nextTick and I/O callback runs under its own id, set
//! by Node whether or not async hooks are enabled; promise reactions share the id of their turn.
//! It tells two callbacks of one function apart where their stack frames cannot (see
//! `loop_helpers_core::interrupt::looks`).

use loop_helpers_core::symbol_table;

use crate::v8;

/// `async_id` is a C++ `double`, returned in a floating-point register like Rust's `f64`.
type ExecutionAsyncIdFn = unsafe extern "C" fn(*mut v8::Isolate) -> f64;

symbol_table! {
    struct Api in "Node.js" {
        execution_async_id: ExecutionAsyncIdFn =
            c"_ZN4node29AsyncHooksGetExecutionAsyncIdEPN2v87IsolateE",
    }
    requires: [v8::enabled()];
}

/// The async id of the callback running on `isolate`'s thread; None where Node lacks the entry
/// point or the thread has no Node environment (Node returns -1 then).
///
/// # Safety
/// On `isolate`'s thread, while it is alive.
pub unsafe fn current(isolate: *mut v8::Isolate) -> Option<f64> {
    let api = Api::get().ok()?;
    // SAFETY: an exported function taking the isolate (the caller's contract: its own thread,
    // alive); it finds the current environment (in a handle scope of its own) and reads its
    // async-id fields, running no JavaScript and changing no state.
    let id = unsafe { (api.execution_async_id)(isolate) };
    (id >= 0.0).then_some(id)
}
