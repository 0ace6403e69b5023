//! The monitor across a real fork(): paused in the parent, restarted in the child with its watch
//! and a timer of its own (timers are not inherited): every deadline in the child is kept by that
//! timer's signal, none by the wait's backstop timeout. Simulated loop as in tests/monitor.rs. One
//! test function (process-wide state; fork from a test binary whose other threads are idle).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, wait_for, FakeLoop, RecordingSink};
use loop_helpers_core::monitor;

/// A 250 ms block on `lp`: returns the block record the monitor delivered.
fn block(lp: &FakeLoop, sink: &RecordingSink) -> Option<String> {
    let before = sink.blocks.lock().unwrap().len();
    lp.wake_up();
    std::thread::sleep(Duration::from_millis(250));
    lp.turn_and_wait();
    if !wait_for(|| sink.blocks.lock().unwrap().len() > before) {
        return None;
    }
    sink.blocks.lock().unwrap().last().cloned()
}

#[test]
fn the_monitor_survives_fork_in_parent_and_child() {
    let lp = Arc::new(FakeLoop::new());
    let sink = Arc::new(RecordingSink::default());
    let id = monitor::register(config(std::process::id()), lp.clone(), sink.clone()).unwrap();
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(20));

    let backstops = monitor::wake_stats().1;
    fork_and_check(
        "(10: restart, 11: no block, 12: pid, 13: no sample, 14: no timer)",
        || match block(&lp, &sink) {
            None => 11,
            Some(json) if !json.contains(&format!("(node:{})", std::process::id())) => 12,
            Some(json) if !json.contains("\"functionName\":\"spin\"") => 13,
            Some(_) if cfg!(target_os = "linux") && monitor::wake_stats().1 != backstops => 14,
            Some(_) => 0,
        },
    );

    // The parent's monitor goes on as before.
    let json = block(&lp, &sink).expect("the parent still detects blocks");
    assert!(
        json.contains(&format!("(node:{})", std::process::id())),
        "{json}"
    );
    block_across_fork(&lp, &sink);
    assert_eq!(monitor::unregister(id).unwrap(), None);
    // Linux: the parent's deadlines too were all kept by its timer.
    #[cfg(target_os = "linux")]
    assert_eq!(
        monitor::wake_stats().1,
        0,
        "deadlines kept by the backstop, not the timer"
    );
}

/// The record of a block that ends after `lp.turn_and_wait()` (after `settle`).
fn end_block(lp: &FakeLoop, sink: &RecordingSink, settle: Duration) -> Option<String> {
    let before = sink.blocks.lock().unwrap().len();
    std::thread::sleep(settle);
    lp.turn_and_wait();
    if !wait_for(|| sink.blocks.lock().unwrap().len() > before) {
        return None;
    }
    sink.blocks.lock().unwrap().last().cloned()
}

/// A block that goes on across fork(): begun (and reported) in the parent, it ends in the child on
/// a thread whose CPU clocks start again from zero, so there its CPU times are not known (null),
/// never the difference of two threads' readings; the parent's record counts from its start.
fn block_across_fork(lp: &FakeLoop, sink: &RecordingSink) {
    lp.set_times(100, 10);
    lp.wake_up();
    // Past the 100 ms deadline: the block is current, its start times read.
    std::thread::sleep(Duration::from_millis(150));
    fork_and_check(
        "(10: restart, 21: no block, 22: CPU times not null)",
        || {
            // The child's thread: a new clock, far below the parent's reading.
            lp.set_times(5, 0);
            match end_block(lp, sink, Duration::from_millis(50)) {
                None => 21,
                Some(json) if !json.contains("\"cpuMs\":null,\"cpuWaitMs\":null") => 22,
                Some(_) => 0,
            }
        },
    );
    lp.set_times(160, 10);
    let json = end_block(lp, sink, Duration::ZERO).expect("the parent ends its block");
    assert!(json.contains("\"cpuMs\":60,\"cpuWaitMs\":0"), "{json}");
}

/// Pauses the monitor and forks. In the child: restarts the monitor (exit code 10 if that fails),
/// runs `child` and exits with its code. In the parent: lets the monitor go on and asserts that the
/// child exited with 0 (`codes` says what the others mean).
fn fork_and_check(codes: &str, child: impl FnOnce() -> i32) {
    let paused = monitor::fork_pause::pause(Duration::from_secs(1)).unwrap();
    // SAFETY: the monitor is paused at a point where it holds no lock, the registry lock is held by
    // this thread, and the test harness's other threads are idle; the child only runs this thread,
    // then the monitor thread it starts, and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match monitor::fork_pause::after_fork_child(paused) {
            Err(_) => 10,
            Ok(()) => child(),
        };
        // SAFETY: ends the child without running the test harness's teardown.
        unsafe { libc::_exit(code) };
    }
    drop(paused);
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child exit code {codes}");
}
