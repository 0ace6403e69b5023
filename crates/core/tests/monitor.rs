//! The monitor thread end to end, with a simulated loop instead of libuv: real timer signals,
//! real time, a fake heartbeat and idle counter. This checks the machinery (the thread, its timer
//! signal, wake-ups when samples arrive, registration and its undoing); what the monitor decides
//! and reports is tested in virtual time (tests/monitor_virtual.rs, monitor_samples.rs,
//! monitor_marks.rs). One test function (process-wide state).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, wait_for, FakeLoop, RecordingSink};
use loop_helpers_core::monitor;

#[test]
fn the_monitor_thread_detects_samples_and_delivers_a_block_of_a_simulated_loop() {
    let lp = Arc::new(FakeLoop::new());
    let sink = Arc::new(RecordingSink::default());
    let id = monitor::register(config(1), lp.clone(), sink.clone()).unwrap();
    assert_eq!(monitor::watch_count(), 1);
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(20));

    // Busy for 150 ms: a warning at 100 ms, its sample answered from another thread (as V8's
    // interrupt would be), and the block's record once the loop turns.
    lp.wake_up();
    std::thread::sleep(Duration::from_millis(150));
    assert!(wait_for(|| !sink.requests.lock().unwrap().is_empty()));
    lp.turn_and_wait();
    assert!(wait_for(|| sink.blocks.lock().unwrap().len() == 1));
    let json = sink.blocks.lock().unwrap()[0].clone();
    assert!(json.contains("\"ended\":true"), "{json}");
    assert!(json.contains("\"functionName\":\"spin\""), "{json}");

    assert_eq!(monitor::unregister(id).unwrap(), None);
    assert_eq!(monitor::watch_count(), 0);
    assert!(!loop_helpers_core::alarm::is_installed());
    let (wakes, backstops) = monitor::wake_stats();
    assert!(wakes > 10, "{wakes} wake-ups");
    // Every deadline was kept by the timer's signal, none by the wait's backstop timeout.
    #[cfg(target_os = "linux")]
    assert_eq!(backstops, 0);
    #[cfg(not(target_os = "linux"))]
    let _ = backstops;
}
