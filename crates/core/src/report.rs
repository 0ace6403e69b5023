//! What a block looks like to users: stack frames, warnings (text or JSON lines) and the block record
//! handed to JavaScript when the loop resumes. JSON is written by hand: there is no serde offline.

use std::fmt::Write as _;

use crate::budget::Verdict;
use crate::clock::mono_to_wall_ms;
use crate::context::{self, ContextCapture};
use crate::native_state::{self, NativeState};
use crate::thread_times::ThreadTimes;

/// One JavaScript stack frame. Line and column are 1-based; 0 means unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub function_name: String,
    pub file_name: String,
    pub line: u32,
    pub column: u32,
    /// Where V8 ran it, when a source map moved the frame to its original source.
    pub generated: Option<Box<Generated>>,
}

/// A frame's position in the generated JavaScript (see [`Frame::generated`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    pub file_name: String,
    pub line: u32,
    pub column: u32,
}

/// A stack sample taken on the blocked thread.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub frames: Vec<Frame>,
    /// When it was captured (monotonic ns).
    pub captured_ns: u64,
    /// From the monitor's request to the capture.
    pub delay_ns: u64,
    /// Time the capture itself took on the blocked thread.
    pub cost_ns: u64,
    /// The Node.js synchronous API the thread was inside when the sample was taken (in
    /// `Atomics.wait`, or as the API returned), when the JavaScript layer marks them.
    pub sync_api: Option<String>,
}

/// How warnings are written while the loop is blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Nothing is written.
    Silent,
    /// Node-style text on stderr.
    StderrText,
    /// One JSON object per line on stderr.
    StderrJson,
    /// Nothing is written during the block; JavaScript receives the texts afterwards.
    Deferred,
}

/// Identity of the detector a warning belongs to.
#[derive(Clone, Debug)]
pub struct Origin {
    pub pid: u32,
    /// `worker_threads.threadId` (0 on the main thread).
    pub thread_id: u32,
    /// The timeout as the user wrote it, e.g. "1" or "0.05".
    pub timeout_label: String,
    pub timeout_ns: u64,
}

/// One warning: the loop has been blocked for `elapsed_ns` when it was given.
#[derive(Clone, Debug)]
pub struct Warning {
    pub index: u32,
    pub start_ns: u64,
    pub elapsed_ns: u64,
    pub detected_ns: u64,
    pub sample: Option<Sample>,
    /// Why there is no sample, when there is none.
    pub missing_reason: Option<&'static str>,
    /// The blocked code's AsyncLocalStorage store (None: the detector has no `asyncContext`).
    pub context: Option<ContextCapture>,
    /// Where the thread was when the warning went out without a stack (its system call, or
    /// running native code), where that can be read (Linux).
    pub thread_state: Option<String>,
    /// Where the thread was outside JavaScript, as typed fields: the garbage collection or the
    /// Node.js synchronous API it was in, its system call and file. Read when the warning went
    /// out without a stack, or given by a sample taken inside a synchronous API.
    pub native: Option<NativeState>,
}

pub const NO_STACK_NATIVE: &str =
    "no JavaScript stack yet: the thread did not reach a JavaScript interrupt check within 5 ms (native code, a system call, or a long garbage collection); if it does while the block lasts, the stack follows";
pub const NO_STACK_LATE: &str =
    "no JavaScript stack: the block had ended when the monitor got to run (the machine was busy); reported late";
pub const NO_STACK_UNSUPPORTED: &str =
    "no JavaScript stack: stack capture is not available on this Node.js build";

fn fmt_seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

fn fmt_frame(out: &mut String, f: &Frame) {
    let loc = if f.file_name.is_empty() {
        "<anonymous>".to_string()
    } else if f.line == 0 {
        f.file_name.clone()
    } else {
        format!("{}:{}:{}", f.file_name, f.line, f.column)
    };
    if f.function_name.is_empty() {
        let _ = writeln!(out, "    at {loc}");
    } else {
        let _ = writeln!(out, "    at {} ({loc})", f.function_name);
    }
}

/// The Node-style text of a warning, ending in a newline.
pub fn warning_text(o: &Origin, w: &Warning) -> String {
    let mut s = format!(
        "(node:{}) BlockingWarning: blocking detected after timeout={}; blocked for {}",
        o.pid,
        o.timeout_label,
        fmt_seconds(w.elapsed_ns)
    );
    if o.thread_id != 0 {
        let _ = write!(s, " in worker thread {}", o.thread_id);
    }
    s.push('\n');
    if let Some(line) = w.native.as_ref().and_then(NativeState::line) {
        let _ = writeln!(s, "    {line}");
    }
    match &w.sample {
        Some(sample) if !sample.frames.is_empty() => {
            for f in &sample.frames {
                fmt_frame(&mut s, f);
            }
        }
        Some(_) => s.push_str("    (no JavaScript frames on the stack)\n"),
        None => {
            let _ = writeln!(s, "    ({})", w.missing_reason.unwrap_or(NO_STACK_NATIVE));
            if let Some(state) = &w.thread_state {
                let _ = writeln!(s, "    ({state})");
            }
        }
    }
    if let Some(line) = context::text_line(w) {
        s.push_str(&line);
    }
    s
}

/// The follow-up of a warning that was written without a stack, once its sample arrived while the
/// block still lasted (the thread was in native code or a long GC at the warning): the Node-style
/// text, ending in a newline.
pub fn late_stack_text(o: &Origin, w: &Warning) -> String {
    let delay = w.sample.as_ref().map_or(0, |s| s.delay_ns);
    let mut s = format!(
        "(node:{}) BlockingWarning: the stack of the block above, sampled {} after its warning",
        o.pid,
        fmt_seconds(delay)
    );
    if let Some(api) = w.sample.as_ref().and_then(|s| s.sync_api.as_deref()) {
        let _ = write!(s, ", where it called {api}");
    }
    if o.thread_id != 0 {
        let _ = write!(s, " in worker thread {}", o.thread_id);
    }
    s.push('\n');
    if let Some(sample) = &w.sample {
        for f in &sample.frames {
            fmt_frame(&mut s, f);
        }
    }
    if let Some(line) = context::text_line(w) {
        s.push_str(&line);
    }
    s
}

/// The JSON follow-up of a warning written without a stack (see [`late_stack_text`]):
/// `{"type":"BlockingStack", ..., "index", "frames", ...}`, one line.
pub fn late_stack_json(o: &Origin, w: &Warning, r: &Reported) -> String {
    let mut s = String::from("{\"type\":\"BlockingStack\",");
    json_origin(&mut s, o);
    let _ = write!(s, ",\"index\":{}", w.index);
    json_start(&mut s, w.start_ns);
    json_sample_fields(&mut s, w);
    json_reported(&mut s, r);
    context::warning_fields(&mut s, w);
    s.push('}');
    s
}

/// Appends `v` as a JSON string literal.
pub fn json_str(out: &mut String, v: &str) {
    out.reserve(v.len() + 2);
    out.push('"');
    // Runs of bytes that need no escape are copied whole. Every byte that does is ASCII, so the
    // cuts fall on character boundaries.
    let mut start = 0;
    for (i, &b) in v.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&v[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&v[start..]);
    out.push('"');
}

fn json_num(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Appends frames as a JSON array of `{functionName, fileName, lineNumber, columnNumber,
/// generated?}`.
pub fn json_frames(out: &mut String, frames: &[Frame]) {
    out.push('[');
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"functionName\":");
        json_str(out, &f.function_name);
        out.push(',');
        json_position(out, &f.file_name, f.line, f.column);
        if let Some(g) = &f.generated {
            out.push_str(",\"generated\":{");
            json_position(out, &g.file_name, g.line, g.column);
            out.push('}');
        }
        out.push('}');
    }
    out.push(']');
}

/// `"fileName":…,"lineNumber":…,"columnNumber":…`
fn json_position(out: &mut String, file: &str, line: u32, column: u32) {
    out.push_str("\"fileName\":");
    json_str(out, file);
    let _ = write!(out, ",\"lineNumber\":{line},\"columnNumber\":{column}");
}

/// What the log knows about a block besides its warnings: its fingerprint (the first stack sample's,
/// once there is one) and the report budget's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub fingerprint: Option<String>,
    pub verdict: Verdict,
}

fn json_opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.push_str("null"),
    }
}

/// `,"fingerprint":…,"suppressedSinceLastLog":…`
fn json_reported(s: &mut String, r: &Reported) {
    s.push_str(",\"fingerprint\":");
    json_opt_str(s, r.fingerprint.as_deref());
    let _ = write!(s, ",\"suppressedSinceLastLog\":{}", r.verdict.suppressed);
}

/// `"pid":…,"threadId":…,"timeout":…` of a log line.
fn json_origin(s: &mut String, o: &Origin) {
    let _ = write!(
        s,
        "\"pid\":{},\"threadId\":{},\"timeout\":",
        o.pid, o.thread_id
    );
    json_num(s, o.timeout_ns as f64 / 1e9);
}

/// `,"startTime":…,"startHrtimeMs":…` of a block starting at `start_ns`.
fn json_start(s: &mut String, start_ns: u64) {
    s.push_str(",\"startTime\":");
    json_num(s, mono_to_wall_ms(start_ns));
    s.push_str(",\"startHrtimeMs\":");
    json_num(s, ms(start_ns));
}

/// The JSON object of one warning (also a JSON log line, without the newline). `r`: the block's
/// fingerprint as known when the warning is written (null while no sample has frames).
pub fn warning_json(o: &Origin, w: &Warning, r: &Reported) -> String {
    let mut s = String::from("{\"type\":\"BlockingWarning\",");
    json_origin(&mut s, o);
    let _ = write!(s, ",\"index\":{},\"blockedMs\":", w.index);
    json_num(&mut s, ms(w.elapsed_ns));
    json_start(&mut s, w.start_ns);
    s.push_str(",\"detectedAt\":");
    json_num(&mut s, mono_to_wall_ms(w.detected_ns));
    json_sample_fields(&mut s, w);
    json_reported(&mut s, r);
    context::warning_fields(&mut s, w);
    s.push('}');
    s
}

/// `,"sampleDelayMs":…,"sampleCostMs":…,"frames":…,"missingStack":…` of a warning.
fn json_sample_fields(s: &mut String, w: &Warning) {
    match &w.sample {
        Some(sample) => {
            s.push_str(",\"sampleDelayMs\":");
            json_num(s, ms(sample.delay_ns));
            s.push_str(",\"sampleCostMs\":");
            json_num(s, ms(sample.cost_ns));
            s.push_str(",\"frames\":");
            json_frames(s, &sample.frames);
            s.push_str(",\"missingStack\":null");
        }
        None => {
            s.push_str(
                ",\"sampleDelayMs\":null,\"sampleCostMs\":null,\"frames\":null,\"missingStack\":",
            );
            json_str(s, w.missing_reason.unwrap_or(NO_STACK_NATIVE));
        }
    }
    s.push_str(",\"threadState\":");
    match &w.thread_state {
        Some(state) => json_str(s, state),
        None => s.push_str("null"),
    }
    native_state::json_fields(s, w.native.as_ref());
}

/// A whole block, delivered to JavaScript when the loop resumes (or when the detector stops).
#[derive(Clone, Debug)]
pub struct BlockRecord {
    pub start_ns: u64,
    pub end_ns: u64,
    /// False when the detector stopped before the loop turned.
    pub ended: bool,
    pub warnings: Vec<Warning>,
    /// The block's fingerprint (its first stack sample with frames) and the budget's verdict.
    pub reported: Reported,
    /// How the blocked thread spent the block (from the monitor's first look at its turn to the
    /// look that saw it end), where that can be read.
    pub times: Option<ThreadTimes>,
}

impl BlockRecord {
    fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The text line that ends a logged block: its total duration (and fingerprint), ending in a newline.
pub fn end_text(o: &Origin, b: &BlockRecord) -> String {
    let mut s = format!(
        "(node:{}) BlockingWarning: blocked for {} in total",
        o.pid,
        fmt_seconds(b.duration_ns())
    );
    if !b.ended {
        s.push_str(" (the detector stopped before the loop turned)");
    }
    if o.thread_id != 0 {
        let _ = write!(s, " in worker thread {}", o.thread_id);
    }
    if let Some(wait) = b.times.and_then(|t| t.cpu_wait_ns) {
        // Only when it matters: then the machine, not the code, held much of the block.
        if wait.saturating_mul(4) >= b.duration_ns() {
            let _ = write!(
                s,
                "; the thread waited {} of it for a CPU (the machine was overloaded)",
                fmt_seconds(wait)
            );
        }
    }
    if let Some(fp) = &b.reported.fingerprint {
        let _ = write!(s, " [{fp}]");
    }
    let n = b.reported.verdict.suppressed;
    if n > 0 {
        let _ = write!(
            s,
            "; {n} more block{} here since its last report, not logged",
            if n == 1 { "" } else { "s" }
        );
    }
    s.push('\n');
    s
}

/// The JSON log line that ends a logged block (without the newline): `type` `BlockingEnded`, with
/// its final duration and fingerprint.
pub fn end_json(o: &Origin, b: &BlockRecord) -> String {
    let mut s = String::from("{\"type\":\"BlockingEnded\",");
    json_origin(&mut s, o);
    json_start(&mut s, b.start_ns);
    s.push_str(",\"durationMs\":");
    json_num(&mut s, ms(b.duration_ns()));
    let _ = write!(
        s,
        ",\"ended\":{},\"warnings\":{}",
        b.ended,
        b.warnings.len()
    );
    json_times(&mut s, b.times);
    json_reported(&mut s, &b.reported);
    s.push('}');
    s
}

/// `"cpuMs"` and `"cpuWaitMs"` of a block (null where not known).
fn json_times(s: &mut String, times: Option<ThreadTimes>) {
    s.push_str(",\"cpuMs\":");
    match times {
        Some(t) => json_num(s, ms(t.cpu_ns)),
        None => s.push_str("null"),
    }
    s.push_str(",\"cpuWaitMs\":");
    match times.and_then(|t| t.cpu_wait_ns) {
        Some(w) => json_num(s, ms(w)),
        None => s.push_str("null"),
    }
}

/// The JSON handed to JavaScript; its fields are those of `BlockEvent` in the TypeScript API, and
/// `warnings` (the samples, with each warning's `text` when `texts`) and `endText`. `texts`: the
/// log is a JavaScript function, and this block is logged.
pub fn block_json(o: &Origin, b: &BlockRecord, texts: bool) -> String {
    let mut s = String::from("{\"threadId\":");
    let _ = write!(s, "{},\"timeout\":", o.thread_id);
    json_num(&mut s, o.timeout_ns as f64 / 1e9);
    json_start(&mut s, b.start_ns);
    s.push_str(",\"durationMs\":");
    json_num(&mut s, ms(b.duration_ns()));
    let _ = write!(s, ",\"ended\":{}", b.ended);
    json_times(&mut s, b.times);
    json_reported(&mut s, &b.reported);
    let _ = write!(s, ",\"logSuppressed\":{}", !b.reported.verdict.log);
    if texts {
        s.push_str(",\"endText\":");
        json_str(&mut s, &end_text(o, b));
    }
    s.push_str(",\"warnings\":[");
    for (i, w) in b.warnings.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"index\":{},\"blockedMs\":", w.index);
        json_num(&mut s, ms(w.elapsed_ns));
        s.push_str(",\"detectedAt\":");
        json_num(&mut s, mono_to_wall_ms(w.detected_ns));
        json_sample_fields(&mut s, w);
        context::warning_fields(&mut s, w);
        if texts {
            s.push_str(",\"text\":");
            json_str(&mut s, &warning_text(o, w));
        }
        s.push('}');
    }
    s.push(']');
    context::event_fields(&mut s, &b.warnings);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_str_escapes_what_json_requires_and_copies_the_rest() {
        let cases = [
            ("", "\"\""),
            ("plain ascii", "\"plain ascii\""),
            (
                "quote \" and \\ backslash",
                "\"quote \\\" and \\\\ backslash\"",
            ),
            ("lines\n\r\ttab", "\"lines\\n\\r\\ttab\""),
            ("\u{0}\u{1f}\u{7f}", "\"\\u0000\\u001f\u{7f}\""),
            ("é€😀 \"x\" é", "\"é€😀 \\\"x\\\" é\""),
            ("\\", "\"\\\\\""),
        ];
        for (input, want) in cases {
            let mut out = String::from("prefix:");
            json_str(&mut out, input);
            assert_eq!(out, format!("prefix:{want}"), "{input:?}");
        }
    }

    fn origin(thread_id: u32) -> Origin {
        Origin {
            pid: 42,
            thread_id,
            timeout_label: "1".into(),
            timeout_ns: 1_000_000_000,
        }
    }

    fn warning(sample: Option<Sample>) -> Warning {
        Warning {
            index: 0,
            start_ns: 1_000,
            elapsed_ns: 1_002_000_000,
            detected_ns: 1_002_001_000,
            sample,
            missing_reason: None,
            context: None,
            thread_state: None,
            native: None,
        }
    }

    #[test]
    fn text_names_each_frame() {
        let w = warning(Some(Sample {
            frames: vec![
                Frame {
                    function_name: "spin".into(),
                    file_name: "/app/x.js".into(),
                    line: 3,
                    column: 9,
                    generated: None,
                },
                Frame {
                    function_name: String::new(),
                    file_name: "/app/y.js".into(),
                    line: 10,
                    column: 1,
                    generated: None,
                },
            ],
            captured_ns: 0,
            delay_ns: 100_000,
            cost_ns: 50_000,
            sync_api: None,
        }));
        assert_eq!(
            warning_text(&origin(0), &w),
            "(node:42) BlockingWarning: blocking detected after timeout=1; blocked for 1.002 s\n    at spin (/app/x.js:3:9)\n    at /app/y.js:10:1\n"
        );
        assert!(warning_text(&origin(3), &w).contains("s in worker thread 3\n"));
    }

    #[test]
    fn text_without_stack_says_why() {
        let t = warning_text(&origin(0), &warning(None));
        assert!(t.ends_with(&format!("    ({NO_STACK_NATIVE})\n")), "{t}");
    }

    #[test]
    fn json_escapes_and_is_flat() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let j = warning_json(&origin(0), &warning(None), &Reported::default());
        assert!(
            j.starts_with("{\"type\":\"BlockingWarning\",\"pid\":42,\"threadId\":0,\"timeout\":1,")
        );
        assert!(!j.contains('\n'));
    }

    fn sampled() -> Warning {
        warning(Some(Sample {
            frames: vec![Frame {
                function_name: "spin".into(),
                file_name: "/app/x.js".into(),
                line: 3,
                column: 9,
                generated: None,
            }],
            captured_ns: 0,
            delay_ns: 100_000,
            cost_ns: 50_000,
            sync_api: None,
        }))
    }

    fn record(reported: Reported) -> BlockRecord {
        BlockRecord {
            start_ns: 2_000_000_123,
            end_ns: 3_088_000_123,
            ended: true,
            warnings: vec![sampled()],
            reported,
            times: None,
        }
    }

    fn fp() -> Reported {
        Reported {
            fingerprint: Some("0123456789abcdef".into()),
            verdict: Verdict {
                log: true,
                suppressed: 4,
            },
        }
    }

    #[test]
    fn warning_json_units_in_names_and_fingerprint() {
        let j = warning_json(&origin(0), &sampled(), &fp());
        for part in [
            "\"blockedMs\":1002,",
            "\"startHrtimeMs\":0.001,",
            "\"sampleDelayMs\":0.1,",
            "\"sampleCostMs\":0.05,",
            "\"frames\":[{\"functionName\":\"spin\",\"fileName\":\"/app/x.js\",\"lineNumber\":3,\"columnNumber\":9}]",
            "\"fingerprint\":\"0123456789abcdef\",\"suppressedSinceLastLog\":4}",
        ] {
            assert!(j.contains(part), "{part} in {j}");
        }
        assert!(!j.contains("Us\"") && !j.contains("\"startHrtime\""), "{j}");
        let none = warning_json(&origin(0), &warning(None), &Reported::default());
        assert!(
            none.contains("\"sampleCostMs\":null,\"frames\":null,")
                && none.ends_with("\"fingerprint\":null,\"suppressedSinceLastLog\":0}"),
            "{none}"
        );
    }

    #[test]
    fn closing_record_has_the_final_duration() {
        let b = record(fp());
        let j = end_json(&origin(3), &b);
        // startTime is on the wall clock, read anew for each conversion.
        let (head, tail) = j.split_once(",\"startHrtimeMs\"").expect("startHrtimeMs");
        assert!(
            head.starts_with("{\"type\":\"BlockingEnded\",\"pid\":42,\"threadId\":3,\"timeout\":1,\"startTime\":"),
            "{j}"
        );
        assert_eq!(
            tail,
            ":2000.000123,\"durationMs\":1088,\"ended\":true,\"warnings\":1,\"cpuMs\":null,\"cpuWaitMs\":null,\"fingerprint\":\"0123456789abcdef\",\"suppressedSinceLastLog\":4}"
        );
        assert_eq!(
            end_text(&origin(0), &b),
            "(node:42) BlockingWarning: blocked for 1.088 s in total [0123456789abcdef]; 4 more blocks here since its last report, not logged\n"
        );
        let mut stopped = record(Reported::default());
        stopped.ended = false;
        assert_eq!(
            end_text(&origin(2), &stopped),
            "(node:42) BlockingWarning: blocked for 1.088 s in total (the detector stopped before the loop turned) in worker thread 2\n"
        );
    }

    #[test]
    fn the_threads_times_in_records() {
        let mut b = record(Reported::default());
        b.times = Some(ThreadTimes {
            cpu_ns: 200_500_000,
            cpu_wait_ns: Some(880_000_000),
        });
        assert!(
            end_json(&origin(0), &b).contains(",\"cpuMs\":200.5,\"cpuWaitMs\":880,"),
            "{}",
            end_json(&origin(0), &b)
        );
        assert!(block_json(&origin(0), &b, false).contains(",\"cpuMs\":200.5,\"cpuWaitMs\":880,"));
        assert_eq!(
            end_text(&origin(0), &b),
            "(node:42) BlockingWarning: blocked for 1.088 s in total; the thread waited 0.880 s of it for a CPU (the machine was overloaded)\n"
        );
        // A wait under a quarter of the block is not worth a word; an unknown one is null.
        b.times = Some(ThreadTimes {
            cpu_ns: 1_000_000_000,
            cpu_wait_ns: Some(200_000_000),
        });
        assert_eq!(
            end_text(&origin(0), &b),
            "(node:42) BlockingWarning: blocked for 1.088 s in total\n"
        );
        b.times = Some(ThreadTimes {
            cpu_ns: 1_000_000_000,
            cpu_wait_ns: None,
        });
        assert!(block_json(&origin(0), &b, false).contains(",\"cpuMs\":1000,\"cpuWaitMs\":null,"));
    }

    #[test]
    fn block_json_lists_warnings() {
        let b = BlockRecord {
            start_ns: 1_000,
            end_ns: 3_500_001_000,
            ended: true,
            warnings: vec![warning(None)],
            reported: Reported::default(),
            times: None,
        };
        let j = block_json(&origin(0), &b, true);
        assert!(j.contains("\"durationMs\":3500"), "{j}");
        assert!(j.contains("\"ended\":true"));
        assert!(
            j.contains("\"fingerprint\":null,\"suppressedSinceLastLog\":0,\"logSuppressed\":false"),
            "{j}"
        );
        assert!(
            j.contains(
                "\"endText\":\"(node:42) BlockingWarning: blocked for 3.500 s in total\\n\""
            ),
            "{j}"
        );
        assert!(j.contains("\"text\":\"(node:42) BlockingWarning"));
        let j = block_json(&origin(0), &record(fp()), false);
        assert!(
            j.contains("\"startHrtimeMs\":2000.000123,\"durationMs\":1088,"),
            "{j}"
        );
        assert!(
            j.contains("\"logSuppressed\":false") && !j.contains("\"text\""),
            "{j}"
        );
    }
}
