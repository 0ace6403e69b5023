//! Virtual time for the monitor's decision logic (`monitor::Watches`): a clock the test moves, a
//! loop the test turns, a sink that records what the monitor asks for and delivers, and a rig that
//! runs the monitor's cycles when its thread would (at each deadline it asks for, and right after a
//! sample arrives), without the thread, without signals and without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use loop_helpers_core::clock::Clock;
use loop_helpers_core::heartbeat::LoopSample;
use loop_helpers_core::monitor::{
    Effects, LoopProbe, SampleTicket, WatchConfig, WatchSink, Watches,
};
use loop_helpers_core::native_state::Marks;
use loop_helpers_core::report::{Frame, LogTarget, Origin};
use loop_helpers_core::thread_times::ThreadTimes;

pub const MS: u64 = 1_000_000;

/// Where virtual time starts (any value far from 0 would do: nothing may assume it starts at 0).
const START_NS: u64 = 1_000 * MS;

/// The time of a virtual-time test, shared by the rig and its loops.
#[derive(Clone)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    fn set(&self, ns: u64) {
        let before = self.0.swap(ns, Ordering::SeqCst);
        assert!(ns >= before, "virtual time went back from {before} to {ns}");
    }
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct LoopState {
    iteration: u64,
    idle_ns: u64,
    /// Since when the loop waits for I/O (None: running a turn).
    waiting_since: Option<u64>,
    loop_time_ms: u64,
    times: Option<ThreadTimes>,
    turn_times: Option<ThreadTimes>,
    marks: Marks,
}

/// A libuv loop in virtual time: it waits for I/O or runs a turn when the test says, and keeps
/// the iteration counter, idle time and loop time as libuv does.
pub struct VirtualLoop {
    clock: VirtualClock,
    st: Mutex<LoopState>,
    /// How many times the monitor looked at it.
    looks: AtomicU64,
}

impl VirtualLoop {
    pub fn new(rig: &Rig) -> Arc<Self> {
        Arc::new(Self {
            clock: rig.clock.clone(),
            st: Mutex::new(LoopState {
                iteration: 1,
                idle_ns: 0,
                waiting_since: None,
                loop_time_ms: rig.now() / MS,
                times: None,
                turn_times: None,
                marks: Marks::default(),
            }),
            looks: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The turn ends (the iteration counter goes up before the poll), and the loop waits for I/O.
    pub fn turn_and_wait(&self) {
        let now = self.now();
        let mut st = self.st.lock().unwrap();
        st.iteration += 1;
        st.loop_time_ms = now / MS;
        st.waiting_since = Some(now);
    }

    /// I/O arrives: a callback starts running (a block starts, if it runs long).
    pub fn wake_up(&self) {
        let now = self.now();
        let mut st = self.st.lock().unwrap();
        let since = st.waiting_since.take().expect("the loop was waiting");
        st.idle_ns += now - since;
        st.loop_time_ms = now / MS;
        st.turn_times = st.times;
    }

    /// The loop thread's CPU time and CPU wait from now on, as the probe reads them.
    pub fn set_times(&self, cpu_ms: u64, cpu_wait_ms: u64) {
        self.st.lock().unwrap().times = Some(ThreadTimes {
            cpu_ns: cpu_ms * MS,
            cpu_wait_ns: Some(cpu_wait_ms * MS),
        });
    }

    /// What the loop thread marks about itself from now on (a sync API, a garbage collection).
    pub fn set_marks(&self, marks: Marks) {
        self.st.lock().unwrap().marks = marks;
    }

    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::SeqCst)
    }
}

impl LoopProbe for VirtualLoop {
    fn sample(&self) -> LoopSample {
        self.looks.fetch_add(1, Ordering::SeqCst);
        let now = self.now();
        let st = self.st.lock().unwrap();
        LoopSample {
            now_ns: now,
            iteration: st.iteration,
            idle_ns: st.idle_ns + st.waiting_since.map_or(0, |since| now - since),
            waiting: st.waiting_since.is_some(),
            loop_time_ns: Some(st.loop_time_ms * MS),
            loop_time_slack_ns: MS,
        }
    }
    fn marks(&self) -> Marks {
        self.st.lock().unwrap().marks.clone()
    }
    fn thread_times(&self) -> Option<ThreadTimes> {
        self.st.lock().unwrap().times
    }
    fn turn_times(&self) -> Option<ThreadTimes> {
        self.st.lock().unwrap().turn_times
    }
}

/// Records the sample requests and the block records; a sample comes only when the test hands
/// it over ([`Rig::deliver`]).
#[derive(Default)]
pub struct RecordingSink {
    requests: Mutex<Vec<SampleTicket>>,
    blocks: Mutex<Vec<String>>,
}

impl RecordingSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn requests(&self) -> Vec<SampleTicket> {
        self.requests.lock().unwrap().clone()
    }
    pub fn blocks(&self) -> Vec<String> {
        self.blocks.lock().unwrap().clone()
    }
}

impl WatchSink for RecordingSink {
    fn request_sample(&self, ticket: SampleTicket) -> bool {
        self.requests.lock().unwrap().push(ticket);
        true
    }
    fn block_ended(&self, record_json: String) {
        self.blocks.lock().unwrap().push(record_json);
    }
}

/// The monitor's cycles in virtual time: it looks when the monitor thread would, and keeps what
/// the cycles wrote.
pub struct Rig {
    clock: VirtualClock,
    pub watches: Watches<VirtualClock>,
    /// What the cycles wrote to stderr so far.
    pub text: String,
    /// When the last cycle asked to look again.
    next_wake_ns: u64,
}

impl Rig {
    pub fn new() -> Self {
        let clock = VirtualClock(Arc::new(AtomicU64::new(START_NS)));
        Self {
            watches: Watches::new(clock.clone()),
            clock,
            text: String::new(),
            next_wake_ns: u64::MAX,
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Starts a watch; its first look is taken now, and a cycle follows (registering wakes the
    /// monitor).
    pub fn add(
        &mut self,
        cfg: WatchConfig,
        lp: &Arc<VirtualLoop>,
        sink: &Arc<RecordingSink>,
    ) -> u64 {
        let first = lp.sample();
        let id = self.watches.add(cfg, lp.clone(), sink.clone(), first);
        self.cycle();
        id
    }

    /// One monitor cycle now: its text is kept, its records are delivered to their sinks.
    pub fn cycle(&mut self) {
        let mut fx = Effects::default();
        self.next_wake_ns = self.watches.cycle(&mut fx).unwrap_or(u64::MAX);
        self.text.push_str(&fx.deliver());
    }

    /// Lets virtual time run to `t`, the monitor waking at every deadline it asks for on the way.
    pub fn run_until(&mut self, t: u64) {
        let mut cycles = 0;
        while self.next_wake_ns <= t {
            cycles += 1;
            assert!(cycles < 100_000, "the monitor spins at {}", self.now());
            self.clock.set(self.next_wake_ns.max(self.now()));
            self.cycle();
        }
        self.clock.set(t.max(self.now()));
    }

    /// Lets `ns` of virtual time pass with no cycle at all: the machine keeps the monitor thread
    /// off the CPU, whatever deadline it asked for.
    pub fn sleep_through(&mut self, ns: u64) {
        self.clock.set(self.now() + ns);
    }

    /// Lets `ns` of virtual time pass (see [`Rig::run_until`]).
    pub fn run_for(&mut self, ns: u64) {
        self.run_until(self.now() + ns);
    }

    /// A stack sample taken now for `tickets`; a cycle follows when one was taken (the sample's
    /// arrival wakes the monitor).
    pub fn deliver(&mut self, tickets: &[SampleTicket], frames: &[Frame], sync_api: Option<&str>) {
        let tickets = tickets.iter().map(|t| (*t, None)).collect();
        if self
            .watches
            .deliver_samples(tickets, frames, 1_000, sync_api)
        {
            self.cycle();
        }
    }

    /// The loop thread declined a ticket's interrupt for `ns` more of the code's own time (see
    /// `monitor::interrupt_again_after`); a cycle follows when that changed the plan (the monitor
    /// is woken).
    pub fn interrupt_again_after(&mut self, ticket: &SampleTicket, ns: u64) {
        if self
            .watches
            .interrupt_again_at(ticket, self.now().saturating_add(ns))
        {
            self.cycle();
        }
    }

    /// Stops a watch now; returns the record of a block in progress. Its text is kept.
    pub fn remove(&mut self, id: u64) -> Option<String> {
        let mut fx = Effects::default();
        let partial = self.watches.remove(id, &mut fx);
        self.text.push_str(&fx.deliver());
        partial
    }
}

/// The frame of a busy loop in /app/x.js.
pub fn spin() -> Vec<Frame> {
    vec![Frame {
        function_name: "spin".into(),
        file_name: "/app/x.js".into(),
        line: 3,
        column: 9,
        generated: None,
    }]
}

/// A 100 ms, aggressive, stack-capturing watch whose reports name process 1, delivered to
/// JavaScript.
pub fn config() -> WatchConfig {
    WatchConfig {
        timeout_ns: 100 * MS,
        aggressive: true,
        log: LogTarget::Deferred,
        origin: Origin {
            pid: 1,
            thread_id: 0,
            timeout_label: "0.1".into(),
            timeout_ns: 100 * MS,
        },
        capture_stacks: true,
        interrupt: false,
        interrupt_unguarded: false,
        microtask_grace_ns: u64::MAX,
        async_context: false,
    }
}

/// A number field of a JSON record, e.g. `field(json, "durationMs")`.
pub fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    json.split(&key)
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {json}"))
}
