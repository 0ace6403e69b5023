//! Warnings and their stack samples in virtual time (see `virtual_monitor`): a warning waits up to
//! `SAMPLE_WAIT_NS` for its sample, warnings go out in order, one whose sample missed the wait is
//! written without a stack and its stack follows if it comes while the block lasts. No thread, no
//! signal, no sleep.

// Shared test doubles; this file does not use every one.
#[allow(dead_code)]
mod virtual_monitor;

use loop_helpers_core::monitor::SAMPLE_WAIT_NS;
use loop_helpers_core::report::{LogTarget, NO_STACK_NATIVE};
use virtual_monitor::{config, spin, RecordingSink, Rig, VirtualLoop, MS};

const WARNING_100: &str =
    "(node:1) BlockingWarning: blocking detected after timeout=0.1; blocked for 0.100 s\n";
const WARNING_200: &str =
    "(node:1) BlockingWarning: blocking detected after timeout=0.1; blocked for 0.200 s\n";
const AT_SPIN: &str = "    at spin (/app/x.js:3:9)\n";

/// A watch writing text to stderr on an idle loop that starts to block now.
fn blocking_text_rig() -> (
    Rig,
    std::sync::Arc<VirtualLoop>,
    std::sync::Arc<RecordingSink>,
    u64,
) {
    let mut rig = Rig::new();
    let lp = VirtualLoop::new(&rig);
    let sink = RecordingSink::new();
    let mut cfg = config();
    cfg.log = LogTarget::StderrText;
    rig.add(cfg, &lp, &sink);
    lp.turn_and_wait();
    rig.run_for(20 * MS);
    lp.wake_up();
    let start = rig.now();
    (rig, lp, sink, start)
}

#[test]
fn warnings_wait_for_their_stack_and_go_out_in_order_then_the_total() {
    let (mut rig, lp, sink, start) = blocking_text_rig();
    rig.run_until(start + 100 * MS);
    rig.run_for(SAMPLE_WAIT_NS - MS);
    assert_eq!(rig.text, "", "the warning waits for its stack");
    let requests = sink.requests();
    rig.deliver(&requests, &spin(), None);
    assert_eq!(rig.text, format!("{WARNING_100}{AT_SPIN}"));

    rig.run_until(start + 200 * MS + MS);
    rig.deliver(&sink.requests()[1..], &spin(), None);
    rig.run_until(start + 250 * MS);
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let fp = sink.blocks()[0]
        .split("\"fingerprint\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(
        rig.text,
        format!(
            "{WARNING_100}{AT_SPIN}{WARNING_200}{AT_SPIN}\
             (node:1) BlockingWarning: blocked for 0.250 s in total [{fp}]\n"
        )
    );
}

#[test]
fn a_sample_that_misses_its_wait_is_written_without_a_stack_and_follows_while_the_block_lasts() {
    let (mut rig, lp, sink, start) = blocking_text_rig();
    rig.run_until(start + 100 * MS + SAMPLE_WAIT_NS - 1);
    assert_eq!(rig.text, "");
    rig.run_until(start + 100 * MS + SAMPLE_WAIT_NS);
    assert_eq!(rig.text, format!("{WARNING_100}    ({NO_STACK_NATIVE})\n"));

    // The stack arrives 20 ms after the warning: a line of its own follows.
    rig.run_until(start + 120 * MS);
    let written = rig.text.len();
    rig.deliver(&sink.requests(), &spin(), None);
    assert_eq!(
        &rig.text[written..],
        format!(
            "(node:1) BlockingWarning: the stack of the block above, sampled 0.020 s after its \
             warning\n{AT_SPIN}"
        )
    );
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let json = &sink.blocks()[0];
    assert!(
        json.contains("\"sampleDelayMs\":20,")
            && json.contains("\"functionName\":\"spin\"")
            && json.contains("\"missingStack\":null"),
        "the record has the stack: {json}"
    );
}

#[test]
fn a_sample_that_comes_after_its_block_ended_is_dropped() {
    let (mut rig, lp, sink, start) = blocking_text_rig();
    rig.run_until(start + 150 * MS);
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let written = rig.text.clone();
    let attached =
        rig.watches
            .deliver_samples(vec![(sink.requests()[0], None)], &spin(), 1_000, None);
    assert!(!attached);
    rig.cycle();
    assert_eq!(rig.text, written, "nothing more is written");
    let json = &sink.blocks()[0];
    assert!(json.contains("\"frames\":null"), "{json}");
    assert!(
        json.contains("did not reach a JavaScript interrupt check"),
        "{json}"
    );
}
