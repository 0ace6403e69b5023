//! The monitor thread end to end, with a simulated loop instead of libuv: real timer signals,
//! real time, a fake heartbeat and idle counter. One test function (process-wide state).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, wait_for, FakeLoop, RecordingSink};
use loop_helpers_core::clock::now_ns;
use loop_helpers_core::monitor;

#[test]
fn detects_samples_and_delivers_a_block_of_a_simulated_loop() {
    let lp = Arc::new(FakeLoop::new());
    let sink = Arc::new(RecordingSink::default());
    let cfg = config(1);
    let id = monitor::register(cfg, lp.clone(), sink.clone()).unwrap();
    assert_eq!(monitor::watch_count(), 1);

    // Idle for 3 timeouts: nothing.
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.requests.lock().unwrap().is_empty());

    // Busy for 250 ms: two warnings (at 100 and 200 ms), each with a sample. The loop thread uses
    // 200 ms of CPU meanwhile and waits 40 ms for one (the probe's readings, made up).
    lp.set_times(5, 1);
    lp.wake_up();
    lp.set_times(205, 41);
    let busy_start = now_ns();
    std::thread::sleep(Duration::from_millis(250));
    // Two warnings are due by now; a very late monitor (loaded machine) may still be on its way.
    assert!(wait_for(|| sink.requests.lock().unwrap().len() >= 2));
    let warned = sink.requests.lock().unwrap().len();
    let truth_ms = (now_ns() - busy_start) as f64 / 1e6;
    lp.turn_and_wait();
    assert!(wait_for(|| sink.blocks.lock().unwrap().len() == 1));
    let json = sink.blocks.lock().unwrap()[0].clone();
    assert!(json.contains("\"ended\":true"), "{json}");
    assert!(
        json.contains("\"cpuMs\":200,\"cpuWaitMs\":40,"),
        "the block's times, counted from its turn's start: {json}"
    );
    assert_eq!(
        json.matches("\"functionName\":\"spin\"").count(),
        warned,
        "{json}"
    );
    assert!(
        json.contains("blocked for 0.100 s") || json.contains("blocked for 0.101 s"),
        "{json}"
    );
    let duration_ms: f64 = json
        .split("\"durationMs\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        (duration_ms - truth_ms).abs() < 20.0,
        "{duration_ms} vs {truth_ms}"
    );

    // A shorter block (0.5 T) is not reported; stop() leaves nothing running.
    lp.wake_up();
    std::thread::sleep(Duration::from_millis(50));
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(sink.requests.lock().unwrap().len(), warned);
    assert!(json.contains("\"fingerprint\":\""), "{json}");
    assert!(json.contains("\"endText\":\""), "{json}");

    // A report budget: the same fingerprint again within the interval is kept out of the log.
    assert!(monitor::set_log_repeats_after(id, 60_000_000_000));
    for _ in 0..2 {
        lp.wake_up();
        std::thread::sleep(Duration::from_millis(150));
        lp.turn_and_wait();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(wait_for(|| sink.blocks.lock().unwrap().len() == 3));
    let blocks = sink.blocks.lock().unwrap().clone();
    assert!(
        blocks[1].contains("\"suppressedSinceLastLog\":0,\"logSuppressed\":false"),
        "{}",
        blocks[1]
    );
    assert!(
        blocks[2].contains("\"suppressedSinceLastLog\":1,\"logSuppressed\":true"),
        "{}",
        blocks[2]
    );
    // A suppressed block gives the log function no text.
    assert!(
        !blocks[2].contains("\"text\"") && !blocks[2].contains("endText"),
        "{}",
        blocks[2]
    );
    assert_eq!(monitor::unregister(id).unwrap(), None);
    assert_eq!(monitor::watch_count(), 0);
    assert!(!loop_helpers_core::alarm::is_installed());
    let (wakes, backstops) = monitor::wake_stats();
    assert!(wakes > 10);
    // Every deadline was kept by the timer's signal, none by the wait's backstop timeout.
    #[cfg(target_os = "linux")]
    assert_eq!(backstops, 0);
    #[cfg(not(target_os = "linux"))]
    let _ = backstops;
}
