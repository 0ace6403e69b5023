//! A block outside JavaScript is named from what the loop thread marks (`LoopProbe::marks`): the
//! Node.js synchronous API or the garbage collection it is in, read when a warning goes out without
//! a stack; and a sample taken inside a synchronous API names it. Virtual time (see
//! `virtual_monitor`): no thread, no signal, no sleep.

// Shared test doubles; this file does not use every one.
#[allow(dead_code)]
mod virtual_monitor;

use std::sync::Arc;

use loop_helpers_core::monitor::SAMPLE_WAIT_NS;
use loop_helpers_core::native_state::Marks;
use loop_helpers_core::report::{Frame, LogTarget};
use virtual_monitor::{config, field, RecordingSink, Rig, VirtualLoop, MS};

fn caller() -> Vec<Frame> {
    vec![Frame {
        function_name: "loadConfig".into(),
        file_name: "/app/config.js".into(),
        line: 12,
        column: 17,
        generated: None,
    }]
}

/// A default (not aggressive) watch on an idle loop, logging to `log`.
fn idle_rig(log: LogTarget) -> (Rig, Arc<VirtualLoop>, Arc<RecordingSink>) {
    let mut rig = Rig::new();
    let lp = VirtualLoop::new(&rig);
    let sink = RecordingSink::new();
    let mut cfg = config();
    cfg.aggressive = false;
    cfg.log = log;
    rig.add(cfg, &lp, &sink);
    lp.turn_and_wait();
    rig.run_for(50 * MS);
    (rig, lp, sink)
}

#[test]
fn a_block_in_a_sync_api_is_named_and_its_late_stack_too() {
    let (mut rig, lp, sink) = idle_rig(LogTarget::StderrText);
    // In fs.readFileSync past the deadline; the stack comes as the call returns (sampled there,
    // naming the API), while the block lasts: 25 ms after it was asked for.
    lp.set_marks(Marks {
        sync_api: Some("fs.readFileSync".into()),
        gc: None,
    });
    lp.wake_up();
    let start = rig.now();
    rig.run_until(start + 100 * MS + SAMPLE_WAIT_NS); // past the wait: written without a stack
    assert_eq!(sink.requests().len(), 1);
    rig.run_for(20 * MS);
    lp.set_marks(Marks::default());
    rig.deliver(&sink.requests(), &caller(), Some("fs.readFileSync"));
    rig.run_for(20 * MS);
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let json = &sink.blocks()[0];
    assert!(json.contains("\"syncApi\":\"fs.readFileSync\""), "{json}");
    assert!(json.contains("\"gc\":null,\"gcMs\":null"), "{json}");
    assert!(json.contains("\"functionName\":\"loadConfig\""), "{json}");
    assert!(
        rig.text.starts_with(
            "(node:1) BlockingWarning: blocking detected after timeout=0.1; blocked for 0.100 s\n    \
             in fs.readFileSync (native)\n"
        ),
        "{}",
        rig.text
    );
    assert!(
        rig.text.contains(
            "BlockingWarning: the stack of the block above, sampled 0.025 s after its warning, \
             where it called fs.readFileSync\n    at loadConfig (/app/config.js:12:17)\n"
        ),
        "{}",
        rig.text
    );
}

#[test]
fn a_block_in_a_garbage_collection_is_named_with_its_length_so_far() {
    let (mut rig, lp, sink) = idle_rig(LogTarget::Deferred);
    // In a mark-compact that began 60 ms into the block: the warning, written when its sample's
    // wait is over (105 ms), names it and its 45 ms so far.
    lp.wake_up();
    let start = rig.now();
    lp.set_marks(Marks {
        sync_api: None,
        gc: Some((4, start + 60 * MS)),
    });
    rig.run_until(start + 100 * MS + SAMPLE_WAIT_NS);
    assert_eq!(sink.requests().len(), 1);
    lp.turn_and_wait();
    rig.run_for(10 * MS);
    let json = &sink.blocks()[0];
    assert!(
        json.contains("\"syncApi\":null,\"gc\":\"mark-compact\",\"gcMs\":"),
        "{json}"
    );
    assert_eq!(field(json, "gcMs"), 45.0, "{json}");
    assert!(
        json.contains("\\n    in a garbage collection (mark-compact, 45 ms so far)"),
        "{json}"
    );
    assert!(json.contains("\"frames\":null"), "{json}");
}
