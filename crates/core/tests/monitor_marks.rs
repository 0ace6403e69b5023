//! A block outside JavaScript is named from what the loop thread marks (`LoopProbe::marks`): the
//! Node.js synchronous API or the garbage collection it is in, read when a warning goes out without
//! a stack; and a sample taken inside a synchronous API names it. Simulated loop, real monitor
//! thread. One test function (process-wide state).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Shared test doubles; this file does not use the recording sink.
#[allow(dead_code)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, wait_for, FakeLoop};
use loop_helpers_core::clock::now_ns;
use loop_helpers_core::heartbeat::LoopSample;
use loop_helpers_core::monitor::{self, LoopProbe, SampleTicket, WatchSink};
use loop_helpers_core::native_state::Marks;
use loop_helpers_core::report::Frame;

/// The simulated loop, with the marks its thread would write.
struct MarkedLoop {
    lp: FakeLoop,
    marks: Mutex<Marks>,
}

impl LoopProbe for MarkedLoop {
    fn sample(&self) -> LoopSample {
        self.lp.sample()
    }
    fn marks(&self) -> Marks {
        self.marks.lock().unwrap().clone()
    }
}

/// A sink whose samples come only when the test says (a thread in native code).
#[derive(Default)]
struct HeldSink {
    requests: Mutex<Vec<SampleTicket>>,
    blocks: Mutex<Vec<String>>,
}

impl WatchSink for HeldSink {
    fn request_sample(&self, ticket: SampleTicket) -> bool {
        self.requests.lock().unwrap().push(ticket);
        true
    }
    fn block_ended(&self, record_json: String) {
        self.blocks.lock().unwrap().push(record_json);
    }
}

fn caller() -> Vec<Frame> {
    vec![Frame {
        function_name: "loadConfig".into(),
        file_name: "/app/config.js".into(),
        line: 12,
        column: 17,
        generated: None,
    }]
}

#[test]
fn names_the_sync_api_or_the_gc_a_blocked_thread_is_in() {
    let lp = Arc::new(MarkedLoop {
        lp: FakeLoop::new(),
        marks: Mutex::new(Marks::default()),
    });
    let sink = Arc::new(HeldSink::default());
    let mut cfg = config(1);
    cfg.aggressive = false;
    monitor::register(cfg, lp.clone(), sink.clone()).unwrap();
    lp.lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(50));

    // In fs.readFileSync past the deadline; the stack comes as the call returns (sampled there,
    // naming the API), while the block lasts.
    *lp.marks.lock().unwrap() = Marks {
        sync_api: Some("fs.readFileSync".into()),
        gc: None,
    };
    lp.lp.wake_up();
    assert!(wait_for(|| !sink.requests.lock().unwrap().is_empty()));
    std::thread::sleep(Duration::from_millis(30)); // past the 5 ms wait: written without a stack
    let ticket = sink.requests.lock().unwrap()[0];
    *lp.marks.lock().unwrap() = Marks::default();
    monitor::deliver_samples(
        vec![(ticket, None)],
        &caller(),
        1_000,
        Some("fs.readFileSync"),
    );
    std::thread::sleep(Duration::from_millis(20));
    lp.lp.turn_and_wait();
    assert!(wait_for(|| sink.blocks.lock().unwrap().len() == 1));
    let json = sink.blocks.lock().unwrap()[0].clone();
    assert!(json.contains("\"syncApi\":\"fs.readFileSync\""), "{json}");
    assert!(json.contains("\"gc\":null,\"gcMs\":null"), "{json}");
    assert!(json.contains("\"functionName\":\"loadConfig\""), "{json}");
    assert!(
        json.contains("BlockingWarning: blocking detected after timeout=0.1; blocked for 0.1"),
        "{json}"
    );
    assert!(
        json.contains("s\\n    in fs.readFileSync (native"),
        "{json}"
    );

    // In a mark-compact that began 40 ms before the deadline: the warning names it and its length
    // so far.
    std::thread::sleep(Duration::from_millis(50));
    lp.lp.wake_up();
    let gc_start = now_ns() + 60_000_000;
    *lp.marks.lock().unwrap() = Marks {
        sync_api: None,
        gc: Some((4, gc_start)),
    };
    assert!(wait_for(|| sink.requests.lock().unwrap().len() == 2));
    std::thread::sleep(Duration::from_millis(30));
    lp.lp.turn_and_wait();
    assert!(wait_for(|| sink.blocks.lock().unwrap().len() == 2));
    let json = sink.blocks.lock().unwrap()[1].clone();
    assert!(
        json.contains("\"syncApi\":null,\"gc\":\"mark-compact\",\"gcMs\":"),
        "{json}"
    );
    assert!(
        json.contains("\\n    in a garbage collection (mark-compact, "),
        "{json}"
    );
    assert!(json.contains("\"frames\":null"), "{json}");
}
