//! Test doubles shared by the monitor tests: a simulated loop (no libuv) and a sink that records
//! what the monitor asks for and delivers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use loop_helpers_core::clock::now_ns;
use loop_helpers_core::heartbeat::Heartbeat;
use loop_helpers_core::monitor::{self, LoopProbe, SampleTicket, WatchConfig, WatchSink};
use loop_helpers_core::report::{Frame, LogTarget, Origin};

/// A loop that is either waiting for I/O (idle time grows) or busy.
pub struct FakeLoop {
    hb: Heartbeat,
    idle_ns: AtomicU64,
    waiting_since: AtomicU64,
    waiting: AtomicBool,
}

impl FakeLoop {
    pub fn new() -> Self {
        Self {
            hb: Heartbeat::new(now_ns(), 0),
            idle_ns: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
    }
    /// A loop turn (prepare), then a wait for I/O.
    pub fn turn_and_wait(&self) {
        self.hb.beat(now_ns(), self.idle_time_ns());
        self.waiting_since.store(now_ns(), Ordering::SeqCst);
        self.waiting.store(true, Ordering::SeqCst);
    }
    /// I/O arrived: a callback starts running.
    pub fn wake_up(&self) {
        let waited = now_ns() - self.waiting_since.load(Ordering::SeqCst);
        self.idle_ns.fetch_add(waited, Ordering::SeqCst);
        self.waiting.store(false, Ordering::SeqCst);
    }
}

impl LoopProbe for FakeLoop {
    fn heartbeat(&self) -> &Heartbeat {
        &self.hb
    }
    fn idle_time_ns(&self) -> u64 {
        let base = self.idle_ns.load(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            base + (now_ns() - self.waiting_since.load(Ordering::SeqCst))
        } else {
            base
        }
    }
}

#[derive(Default)]
pub struct RecordingSink {
    pub requests: Mutex<Vec<SampleTicket>>,
    pub blocks: Mutex<Vec<String>>,
}

impl WatchSink for RecordingSink {
    fn request_sample(&self, ticket: SampleTicket) -> bool {
        self.requests.lock().unwrap().push(ticket);
        // Answer from another thread, as V8's interrupt would from the loop thread.
        std::thread::spawn(move || {
            monitor::deliver_sample(
                ticket,
                vec![Frame {
                    function_name: "spin".into(),
                    file_name: "/app/x.js".into(),
                    line: 3,
                    column: 9,
                    generated: None,
                }],
                1_000,
            )
        });
        true
    }
    fn block_ended(&self, record_json: String) {
        self.blocks.lock().unwrap().push(record_json);
    }
}

pub fn wait_for(pred: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A 100 ms, aggressive, stack-capturing watch whose reports name `pid`, delivered to JavaScript.
pub fn config(pid: u32) -> WatchConfig {
    WatchConfig {
        timeout_ns: 100_000_000,
        aggressive: true,
        log: LogTarget::Deferred,
        origin: Origin {
            pid,
            thread_id: 0,
            timeout_label: "0.1".into(),
            timeout_ns: 100_000_000,
        },
        capture_stacks: true,
        interrupt: false,
        microtask_grace_ns: u64::MAX,
    }
}
