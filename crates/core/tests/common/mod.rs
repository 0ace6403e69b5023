//! Test doubles shared by the monitor tests: a simulated loop (no libuv) and a sink that records
//! what the monitor asks for and delivers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use loop_helpers_core::clock::now_ns;
use loop_helpers_core::heartbeat::LoopSample;
use loop_helpers_core::monitor::{self, LoopProbe, SampleTicket, WatchConfig, WatchSink};
use loop_helpers_core::report::{Frame, LogTarget, Origin};
use loop_helpers_core::thread_times::ThreadTimes;

/// A loop that is either waiting for I/O (idle time grows) or busy, with libuv's iteration counter
/// and loop time.
pub struct FakeLoop {
    iteration: AtomicU64,
    idle_ns: AtomicU64,
    waiting_since: AtomicU64,
    waiting: AtomicBool,
    loop_time_ms: AtomicU64,
    /// The loop thread's times now, as the test sets them (None: not known).
    times: Mutex<Option<ThreadTimes>>,
    /// Its times when the current turn started running.
    turn_times: Mutex<Option<ThreadTimes>>,
}

impl FakeLoop {
    pub fn new() -> Self {
        Self {
            iteration: AtomicU64::new(1),
            idle_ns: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            loop_time_ms: AtomicU64::new(now_ns() / 1_000_000),
            times: Mutex::new(None),
            turn_times: Mutex::new(None),
        }
    }
    /// The loop thread's CPU time and CPU wait from now on.
    // Not every test binary that includes this module uses it.
    #[allow(dead_code)]
    pub fn set_times(&self, cpu_ms: u64, cpu_wait_ms: u64) {
        *self.times.lock().unwrap() = Some(ThreadTimes {
            cpu_ns: cpu_ms * 1_000_000,
            cpu_wait_ns: Some(cpu_wait_ms * 1_000_000),
        });
    }
    /// A loop turn (the iteration counter goes up before the poll), then a wait for I/O.
    pub fn turn_and_wait(&self) {
        self.iteration.fetch_add(1, Ordering::SeqCst);
        let now = now_ns();
        self.loop_time_ms.store(now / 1_000_000, Ordering::SeqCst);
        self.waiting_since.store(now, Ordering::SeqCst);
        self.waiting.store(true, Ordering::SeqCst);
    }
    /// I/O arrived: a callback starts running.
    pub fn wake_up(&self) {
        let now = now_ns();
        let waited = now - self.waiting_since.load(Ordering::SeqCst);
        self.idle_ns.fetch_add(waited, Ordering::SeqCst);
        self.waiting.store(false, Ordering::SeqCst);
        self.loop_time_ms.store(now / 1_000_000, Ordering::SeqCst);
        *self.turn_times.lock().unwrap() = *self.times.lock().unwrap();
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

impl LoopProbe for FakeLoop {
    fn sample(&self) -> LoopSample {
        let now_ns = now_ns();
        let iteration = self.iteration.load(Ordering::SeqCst);
        let idle_ns = self.idle_time_ns();
        LoopSample {
            now_ns,
            iteration,
            idle_ns,
            waiting: self.waiting.load(Ordering::SeqCst),
            loop_time_ns: Some(self.loop_time_ms.load(Ordering::SeqCst) * 1_000_000),
            loop_time_slack_ns: 1_000_000,
        }
    }
    fn thread_times(&self) -> Option<ThreadTimes> {
        *self.times.lock().unwrap()
    }
    fn turn_times(&self) -> Option<ThreadTimes> {
        *self.turn_times.lock().unwrap()
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
        interrupt_unguarded: false,
        microtask_grace_ns: u64::MAX,
        async_context: false,
    }
}
