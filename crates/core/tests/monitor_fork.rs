//! The monitor across a real fork(): paused in the parent, restarted in the child with its watch,
//! its own wake-up pipe and timer. Simulated loop as in tests/monitor.rs. One test function
//! (process-wide state; fork from a test binary whose other threads are idle).

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

fn config() -> WatchConfig {
    WatchConfig {
        timeout_ns: 100_000_000,
        aggressive: true,
        log: LogTarget::Deferred,
        origin: Origin {
            pid: std::process::id(),
            thread_id: 0,
            timeout_label: "0.1".into(),
            timeout_ns: 100_000_000,
        },
        capture_stacks: true,
        interrupt: false,
        microtask_grace_ns: u64::MAX,
    }
}

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
    let id = monitor::register(config(), lp.clone(), sink.clone()).unwrap();
    lp.turn_and_wait();
    std::thread::sleep(Duration::from_millis(20));

    let paused = monitor::fork_pause::pause(Duration::from_secs(1)).unwrap();
    // SAFETY: the monitor is paused at a point where it holds no lock, the registry lock is held by
    // this thread, and the test harness's other threads are idle; the child only runs this thread,
    // then the monitor thread it starts, and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match monitor::fork_pause::after_fork_child(paused) {
            Err(_) => 10,
            Ok(()) => match block(&lp, &sink) {
                None => 11,
                Some(json) if !json.contains(&format!("(node:{})", std::process::id())) => 12,
                Some(json) if !json.contains("\"functionName\":\"spin\"") => 13,
                Some(_) => 0,
            },
        };
        // SAFETY: ends the child without running the test harness's teardown.
        unsafe { libc::_exit(code) };
    }
    drop(paused);
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child exit code (10: restart, 11: no block, 12: pid, 13: no sample)"
    );

    // The parent's monitor goes on as before.
    let json = block(&lp, &sink).expect("the parent still detects blocks");
    assert!(
        json.contains(&format!("(node:{})", std::process::id())),
        "{json}"
    );
    assert_eq!(monitor::unregister(id).unwrap(), None);
}
