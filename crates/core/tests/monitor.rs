//! The monitor thread end to end, with a simulated loop instead of libuv: real SIGALRM wake-ups,
//! real time, a fake heartbeat and idle counter. One test function (process-wide state).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loop_helpers_core::clock::now_ns;
use loop_helpers_core::heartbeat::Heartbeat;
use loop_helpers_core::monitor::{self, LoopProbe, SampleTicket, WatchConfig, WatchSink};
use loop_helpers_core::report::{Frame, LogTarget, Origin};

/// A loop that is either waiting for I/O (idle time grows) or busy.
struct FakeLoop {
    hb: Heartbeat,
    idle_ns: AtomicU64,
    waiting_since: AtomicU64,
    waiting: AtomicBool,
}

impl FakeLoop {
    fn new() -> Self {
        Self {
            hb: Heartbeat::new(now_ns(), 0),
            idle_ns: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
    }
    /// A loop turn (prepare), then a wait for I/O.
    fn turn_and_wait(&self) {
        self.hb.beat(now_ns(), self.idle_time_ns());
        self.waiting_since.store(now_ns(), Ordering::SeqCst);
        self.waiting.store(true, Ordering::SeqCst);
    }
    /// I/O arrived: a callback starts running.
    fn wake_up(&self) {
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
struct RecordingSink {
    requests: Mutex<Vec<SampleTicket>>,
    blocks: Mutex<Vec<String>>,
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

fn wait_for(pred: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn detects_samples_and_delivers_a_block_of_a_simulated_loop() {
    let lp = Arc::new(FakeLoop::new());
    let sink = Arc::new(RecordingSink::default());
    let cfg = WatchConfig {
        timeout_ns: 100_000_000,
        aggressive: true,
        log: LogTarget::Deferred,
        origin: Origin {
            pid: 1,
            thread_id: 0,
            timeout_label: "0.1".into(),
            timeout_ns: 100_000_000,
        },
        capture_stacks: true,
        interrupt: false,
        microtask_grace_ns: u64::MAX,
    };
    let id = monitor::register(cfg, lp.clone(), sink.clone()).unwrap();
    assert_eq!(monitor::watch_count(), 1);

    // Idle for 3 timeouts: nothing.
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.requests.lock().unwrap().is_empty());

    // Busy for 250 ms: two warnings (at 100 and 200 ms), each with a sample.
    lp.wake_up();
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
        .split("\"duration\":")
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
    assert_eq!(monitor::unregister(id).unwrap(), None);
    assert_eq!(monitor::watch_count(), 0);
    assert!(!loop_helpers_core::alarm::is_installed());
    let (wakes, _) = monitor::wake_stats();
    assert!(wakes > 10);
}
