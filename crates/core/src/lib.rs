//! loop-helpers' core: OS and timing logic with no Node symbols, so that `cargo test` covers it.
//!
//! - [`alarm`]: the monitor's deadline signal, which reaches the monitor thread alone (Linux: a
//!   timer aimed at that thread, taken with `sigtimedwait`; elsewhere: the interval timer, a
//!   handler that records and wakes only, a self-pipe).
//! - [`heartbeat`]: what each loop turn publishes (a single-writer seqlock).
//! - [`tracker`]: when a loop counts as blocked (pure logic, simulated in tests).
//! - [`interrupt`]: an environment's interrupt bookkeeping: requests, terminations, guard frames
//!   (pure state, simulated in tests).
//! - [`monitor`]: the one process-wide thread that watches every registered loop.
//! - [`node_code`]: the places in Node.js's own JavaScript where an interrupt must not land.
//! - [`panics`]: panics and poisoned locks recovered from, counted and reported.
//! - [`report`]: warnings as text and JSON, and the block record handed to JavaScript.
//! - [`thread_state`]: where a thread outside JavaScript is (its system call), for warnings
//!   without a stack; [`native_state`]: that, with the garbage collection or the Node.js
//!   synchronous API the thread marks itself in, as the fields and the line of a warning.
//! - [`thread_times`]: the CPU time a loop thread used during a block and the time it waited for
//!   a CPU (a loaded machine), read from the monitor.
//! - [`fingerprint`]: a stable name for the code that blocked; [`budget`]: at most one logged
//!   block per fingerprint per interval.
//! - [`context`], [`snapshot_json`]: the `asyncContext` fields of reports and the V8-free parts of
//!   the store snapshot.
//! - [`sourcemap`]: original positions for frames of live warnings (maps registered from JS).
//! - [`symbols`]: tables of entry points resolved by name at run time (`symbol_table!`), for the
//!   V8 and Node C++ functions the binding calls.
//! - [`fork_prep`]: memory preparation for `fork()`; [`monitor::fork_pause`] holds the monitor still
//!   across it and restarts it in the child.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod alarm;
pub mod budget;
pub mod clock;
pub mod context;
pub mod fingerprint;
pub mod fork_prep;
pub mod heartbeat;
pub mod interrupt;
pub mod monitor;
pub mod native_state;
pub mod node_code;
pub mod opaque;
pub mod panics;
pub mod report;
pub mod snapshot_json;
pub mod sourcemap;
pub mod stderr;
pub mod symbols;
pub mod thread_state;
pub mod thread_times;
pub mod tracker;
