//! The monitor's decisions in virtual time (see `virtual_monitor`): when a block is detected and
//! warned about, what its record holds, what is not reported, the report budget, many watches on
//! one loop, interrupting watches, stopping during a block. No thread, no signal, no sleep: every
//! time below is exact. The monitor thread and its signals are tested for real in tests/monitor.rs.

// Shared test doubles; this file does not use every one.
#[allow(dead_code)]
mod virtual_monitor;

use loop_helpers_core::monitor::Effects;
use loop_helpers_core::report::LogTarget;
use virtual_monitor::{config, field, spin, RecordingSink, Rig, VirtualLoop, MS};

/// A rig with one idle watched loop (waiting for I/O since the watch started).
fn idle_rig(
    cfg: loop_helpers_core::monitor::WatchConfig,
) -> (
    Rig,
    std::sync::Arc<VirtualLoop>,
    std::sync::Arc<RecordingSink>,
    u64,
) {
    let mut rig = Rig::new();
    let lp = VirtualLoop::new(&rig);
    let sink = RecordingSink::new();
    let id = rig.add(cfg, &lp, &sink);
    lp.turn_and_wait();
    (rig, lp, sink, id)
}

/// Blocks the loop for `ms`, answering every sample request 1 ms after it is made.
fn block_answering(rig: &mut Rig, lp: &VirtualLoop, sink: &RecordingSink, ms: u64) {
    lp.wake_up();
    let end = rig.now() + ms * MS;
    let mut answered = sink.requests().len();
    while rig.now() < end {
        rig.run_for(MS);
        let requests = sink.requests();
        if requests.len() > answered {
            rig.deliver(&requests[answered..], &spin(), None);
            answered = requests.len();
        }
    }
    lp.turn_and_wait();
}

#[test]
fn a_block_is_warned_about_at_each_timeout_and_delivered_with_its_samples_and_times() {
    let (mut rig, lp, sink, _) = idle_rig(config());

    // Idle for 3 timeouts: nothing asked, nothing delivered.
    rig.run_for(300 * MS);
    assert!(sink.requests().is_empty());

    // Busy for 250 ms: warnings at 100 and 200 ms, each asking for a sample. The loop thread uses
    // 200 ms of CPU meanwhile and waits 40 ms for one (the probe's readings, made up).
    lp.set_times(5, 1);
    lp.wake_up();
    lp.set_times(205, 41);
    let start = rig.now();
    rig.run_until(start + 100 * MS - 1);
    assert!(sink.requests().is_empty(), "nothing before the timeout");
    rig.run_until(start + 100 * MS);
    let first = sink.requests();
    assert_eq!(first.len(), 1, "the warning is due at the timeout exactly");
    assert_eq!(
        (first[0].index, first[0].requested_ns, first[0].blocked_ns),
        (0, start + 100 * MS, 100 * MS)
    );
    rig.run_for(2 * MS);
    rig.deliver(&first, &spin(), None);
    rig.run_until(start + 200 * MS);
    let second = sink.requests()[1];
    assert_eq!(
        (second.index, second.requested_ns, second.blocked_ns),
        (1, start + 200 * MS, 200 * MS)
    );
    assert_eq!(second.block_serial, first[0].block_serial);
    rig.run_for(MS);
    rig.deliver(&[second], &spin(), None);
    rig.run_until(start + 250 * MS);
    assert!(sink.blocks().is_empty(), "no record while the block lasts");

    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 1);
    let json = &blocks[0];
    assert!(json.contains("\"ended\":true"), "{json}");
    assert_eq!(field(json, "startHrtimeMs"), (start / MS) as f64, "{json}");
    assert_eq!(field(json, "durationMs"), 250.0, "{json}");
    assert!(
        json.contains("\"cpuMs\":200,\"cpuWaitMs\":40,"),
        "the block's times, counted from its turn's start: {json}"
    );
    assert_eq!(
        json.matches("\"functionName\":\"spin\"").count(),
        2,
        "{json}"
    );
    assert!(
        json.contains("\"index\":0,\"blockedMs\":100,")
            && json.contains("\"index\":1,\"blockedMs\":200,"),
        "{json}"
    );
    assert!(json.contains("\"sampleDelayMs\":2,") && json.contains("\"sampleDelayMs\":1,"));
    assert!(json.contains("blocked for 0.100 s") && json.contains("blocked for 0.250 s in total"));
    assert!(json.contains("\"fingerprint\":\""), "{json}");
    assert!(json.contains("\"endText\":\""), "{json}");
}

#[test]
fn a_block_of_half_the_timeout_is_not_reported() {
    let (mut rig, lp, sink, _) = idle_rig(config());
    rig.run_for(50 * MS);
    lp.wake_up();
    rig.run_for(50 * MS);
    lp.turn_and_wait();
    rig.run_for(300 * MS);
    assert!(sink.requests().is_empty());
    assert!(sink.blocks().is_empty());
}

#[test]
fn a_block_the_monitor_slept_through_is_delivered_late_and_the_next_block_is_its_own() {
    let (mut rig, lp, sink, _) = idle_rig(config());
    rig.run_for(50 * MS);

    // The monitor is kept off the CPU while the loop blocks for 250 ms and goes back to waiting:
    // its next look finds exactly one turn ended. The block is warned about late (no stack: it is
    // over) and its record delivered in the same cycle.
    let start = rig.now();
    lp.wake_up();
    rig.sleep_through(250 * MS);
    lp.turn_and_wait();
    rig.sleep_through(20 * MS);
    rig.cycle();
    assert!(
        sink.requests().is_empty(),
        "nothing to sample or stop: the block is over"
    );
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let late = &blocks[0];
    assert!(late.contains("\"ended\":true"), "{late}");
    // Its length is exact (the idle time says how long the loop did not wait); where it lies in
    // the gap, to the loop time's millisecond.
    assert_eq!(field(late, "durationMs"), 250.0, "{late}");
    let from = field(late, "startHrtimeMs") - (start / MS) as f64;
    assert!((0.0..=1.0).contains(&from), "{late}");
    assert_eq!(
        late.matches("\"index\":").count(),
        1,
        "one late warning: {late}"
    );
    assert!(late.contains("\"sampleDelayMs\":null"), "{late}");
    assert!(late.contains("blocked for 0.250 s in total"), "{late}");

    // The next block, watched on time, is a record of its own: its own start, its own warning.
    rig.run_for(100 * MS);
    let next = rig.now();
    block_answering(&mut rig, &lp, &sink, 150);
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let json = &blocks[1];
    assert_eq!(field(json, "startHrtimeMs"), (next / MS) as f64, "{json}");
    assert_eq!(field(json, "durationMs"), 150.0, "{json}");
    assert_eq!(json.matches("\"index\":").count(), 1, "{json}");
}

#[test]
fn aggressive_mode_warns_every_timeout_the_default_once() {
    for (aggressive, warnings) in [(true, 3), (false, 1)] {
        let mut cfg = config();
        cfg.aggressive = aggressive;
        let (mut rig, lp, sink, _) = idle_rig(cfg);
        rig.run_for(50 * MS);
        block_answering(&mut rig, &lp, &sink, 350);
        rig.run_for(10 * MS);
        let times: Vec<u64> = sink.requests().iter().map(|r| r.blocked_ns / MS).collect();
        assert_eq!(
            times,
            [100, 200, 300][..warnings],
            "aggressive: {aggressive}"
        );
        let json = &sink.blocks()[0];
        assert_eq!(json.matches("\"blockedMs\":").count(), warnings, "{json}");
        assert_eq!(field(json, "durationMs"), 350.0, "{json}");
    }
}

#[test]
fn the_report_budget_keeps_a_repeated_block_out_of_the_log() {
    let mut cfg = config();
    cfg.log = LogTarget::StderrText;
    let (mut rig, lp, sink, id) = idle_rig(cfg);
    assert!(rig.watches.set_log_repeats_after(id, 60_000 * MS));
    for _ in 0..3 {
        rig.run_for(30 * MS);
        block_answering(&mut rig, &lp, &sink, 150);
    }
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 3);
    assert!(
        blocks[0].contains("\"suppressedSinceLastLog\":0,\"logSuppressed\":false"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[1].contains("\"suppressedSinceLastLog\":1,\"logSuppressed\":true"),
        "{}",
        blocks[1]
    );
    assert!(
        blocks[2].contains("\"suppressedSinceLastLog\":2,\"logSuppressed\":true"),
        "{}",
        blocks[2]
    );
    // Only the first block is in the log: one warning and its total.
    assert_eq!(
        rig.text.matches("BlockingWarning").count(),
        2,
        "{}",
        rig.text
    );
    assert_eq!(rig.text.matches(" in total").count(), 1, "{}", rig.text);
    // A watch delivering to JavaScript gives the log function no text for a suppressed block.
    let mut cfg = config();
    cfg.log = LogTarget::Deferred;
    let (mut rig, lp, sink, id) = idle_rig(cfg);
    assert!(rig.watches.set_log_repeats_after(id, 60_000 * MS));
    for _ in 0..2 {
        rig.run_for(30 * MS);
        block_answering(&mut rig, &lp, &sink, 150);
    }
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert!(blocks[0].contains("\"text\"") && blocks[0].contains("endText"));
    assert!(
        !blocks[1].contains("\"text\"") && !blocks[1].contains("endText"),
        "{}",
        blocks[1]
    );
    assert!(
        !rig.watches.set_log_repeats_after(id + 1, 0),
        "no such watch"
    );
}

#[test]
fn many_watches_on_one_loop_share_one_look_per_cycle() {
    let mut rig = Rig::new();
    let lp = VirtualLoop::new(&rig);
    let sink = RecordingSink::new();
    for _ in 0..100 {
        rig.add(config(), &lp, &sink);
    }
    lp.turn_and_wait();
    let before = lp.looks();
    rig.cycle();
    assert_eq!(lp.looks() - before, 1, "one look for 100 watches");

    // A block: each watch asks for its sample at the same deadline; one sample serves them all.
    rig.run_for(40 * MS);
    lp.wake_up();
    let looks_before_block = lp.looks();
    rig.run_for(100 * MS);
    let cycles = lp.looks() - looks_before_block;
    let requests = sink.requests();
    assert_eq!(requests.len(), 100);
    assert!(requests.iter().all(|r| r.blocked_ns == 100 * MS));
    rig.deliver(&requests, &spin(), None);
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 100);
    assert!(blocks
        .iter()
        .all(|b| b.contains("\"functionName\":\"spin\"")));
    // One look per cycle: a 100 ms block is followed every 2 ms, not 100 times as often.
    assert!(cycles <= 51, "{cycles} looks in 100 ms");
}

/// A rig with one watch that interrupts everywhere (warning once per block, no stacks), whose
/// loop has been blocked since the returned time (after 20 ms idle).
fn interrupting_rig_blocked() -> (
    Rig,
    std::sync::Arc<VirtualLoop>,
    std::sync::Arc<RecordingSink>,
    u64,
) {
    let mut cfg = config();
    cfg.aggressive = false;
    cfg.capture_stacks = false;
    cfg.interrupt = true;
    cfg.interrupt_unguarded = true;
    let (mut rig, lp, sink, _) = idle_rig(cfg);
    rig.run_for(20 * MS);
    lp.wake_up();
    let start = rig.now();
    (rig, lp, sink, start)
}

#[test]
fn an_interrupting_watch_asks_again_every_timeout_while_the_block_lasts() {
    let (mut rig, lp, sink, start) = interrupting_rig_blocked();
    rig.run_for(350 * MS);
    let asked: Vec<(u32, u64, bool, bool, bool)> = sink
        .requests()
        .iter()
        .map(|r| {
            let at = (r.requested_ns - start) / MS;
            (r.index, at, r.capture, r.interrupt, r.unguarded)
        })
        .collect();
    assert_eq!(
        asked,
        [
            (0, 100, false, true, true),
            (u32::MAX, 200, false, true, true),
            (u32::MAX, 300, false, true, true)
        ]
    );
    assert!(rig.watches.block_open(&sink.requests()[2]));
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    assert!(!rig.watches.block_open(&sink.requests()[2]));
    // No stack was asked for: the warning says why it has none.
    let json = &sink.blocks()[0];
    assert!(json.contains("stack capture is not available"), "{json}");
}

#[test]
fn an_interrupt_declined_for_the_machines_time_is_asked_again_when_the_codes_own_time_is_up() {
    let (mut rig, lp, sink, start) = interrupting_rig_blocked();
    rig.run_until(start + 100 * MS);
    let first = sink.requests()[0];
    // The loop thread ran the interrupt 1 ms later: 101 ms of block, 41 of them waiting for a
    // CPU, so 40 ms short of the code's own 100.
    rig.run_for(MS);
    rig.interrupt_again_after(&first, 40 * MS);
    // A later time than planned changes nothing.
    rig.interrupt_again_after(&first, 500 * MS);
    rig.run_for(250 * MS);
    let at: Vec<u64> = sink
        .requests()
        .iter()
        .map(|r| (r.requested_ns - start) / MS)
        .collect();
    // Asked again at 141 ms, then every timeout from there.
    assert_eq!(at, [100, 141, 241, 341]);
    // Once the block is over, nothing is asked again.
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let last = *sink.requests().last().expect("asked");
    rig.interrupt_again_after(&last, MS);
    rig.run_for(200 * MS);
    assert_eq!(sink.requests().len(), 4);
}

#[test]
fn stopping_a_watch_during_a_block_returns_the_block_unended() {
    let mut cfg = config();
    cfg.log = LogTarget::StderrText;
    let (mut rig, lp, sink, id) = idle_rig(cfg);
    rig.run_for(20 * MS);
    lp.wake_up();
    rig.run_for(130 * MS);
    let partial = rig.remove(id).expect("a block was in progress");
    assert!(partial.contains("\"ended\":false"), "{partial}");
    assert_eq!(field(&partial, "durationMs"), 130.0, "{partial}");
    assert!(
        sink.blocks().is_empty(),
        "the caller gets the record, not the sink"
    );
    assert!(
        rig.text
            .contains("blocked for 0.130 s in total (the detector stopped before the loop turned)"),
        "{}",
        rig.text
    );
    assert!(rig.watches.is_empty());
    assert_eq!(rig.remove(id), None, "stopped already");
}

#[test]
fn flushing_ends_the_block_in_progress_and_the_watch_goes_on() {
    let (mut rig, lp, sink, id) = idle_rig(config());
    rig.run_for(20 * MS);
    lp.wake_up();
    rig.run_for(120 * MS);
    let mut fx = Effects::default();
    let record = rig
        .watches
        .flush(id, &mut fx)
        .expect("a block was in progress");
    assert!(record.contains("\"ended\":true"), "{record}");
    assert_eq!(field(&record, "durationMs"), 120.0, "{record}");
    assert_eq!(
        rig.watches.flush(id, &mut fx),
        None,
        "nothing more to flush"
    );
    assert!(
        sink.blocks().is_empty(),
        "the caller gets the record, not the sink"
    );
    // The watch goes on: the next block is reported as usual.
    lp.turn_and_wait();
    rig.run_for(30 * MS);
    block_answering(&mut rig, &lp, &sink, 150);
    rig.run_for(10 * MS);
    let blocks = sink.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(field(&blocks[0], "durationMs"), 150.0, "{}", blocks[0]);
}
