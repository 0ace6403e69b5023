//! What a block looks like to users: stack frames, warnings (text or JSON lines) and the block record
//! handed to JavaScript when the loop resumes. JSON is written by hand: there is no serde offline.

use std::fmt::Write as _;

use crate::clock::mono_to_wall_ms;
use crate::context::{self, ContextCapture};

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
}

pub const NO_STACK_NATIVE: &str =
    "no JavaScript stack: the thread did not reach a JavaScript interrupt check in time; it is probably inside native code or a system call";
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
    match &w.sample {
        Some(sample) if !sample.frames.is_empty() => {
            for f in &sample.frames {
                fmt_frame(&mut s, f);
            }
        }
        Some(_) => s.push_str("    (no JavaScript frames on the stack)\n"),
        None => {
            let _ = writeln!(s, "    ({})", w.missing_reason.unwrap_or(NO_STACK_NATIVE));
        }
    }
    if let Some(line) = context::text_line(w) {
        s.push_str(&line);
    }
    s
}

/// Appends `v` as a JSON string literal.
pub fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
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

/// The JSON object of one warning (also a JSON log line, without the newline).
pub fn warning_json(o: &Origin, w: &Warning) -> String {
    let mut s = String::from("{\"type\":\"BlockingWarning\",\"pid\":");
    let _ = write!(s, "{},\"threadId\":{},\"timeout\":", o.pid, o.thread_id);
    json_num(&mut s, o.timeout_ns as f64 / 1e9);
    let _ = write!(s, ",\"index\":{},\"blockedMs\":", w.index);
    json_num(&mut s, ms(w.elapsed_ns));
    s.push_str(",\"startTime\":");
    json_num(&mut s, mono_to_wall_ms(w.start_ns));
    s.push_str(",\"startHrtime\":");
    json_str(&mut s, &w.start_ns.to_string());
    s.push_str(",\"detectedAt\":");
    json_num(&mut s, mono_to_wall_ms(w.detected_ns));
    json_sample_fields(&mut s, w);
    context::warning_fields(&mut s, w);
    s.push('}');
    s
}

/// `,"sampleDelayMs":…,"sampleCostUs":…,"frames":…,"missingStack":…` of a warning.
fn json_sample_fields(s: &mut String, w: &Warning) {
    match &w.sample {
        Some(sample) => {
            s.push_str(",\"sampleDelayMs\":");
            json_num(s, ms(sample.delay_ns));
            s.push_str(",\"sampleCostUs\":");
            json_num(s, sample.cost_ns as f64 / 1e3);
            s.push_str(",\"frames\":");
            json_frames(s, &sample.frames);
            s.push_str(",\"missingStack\":null");
        }
        None => {
            s.push_str(
                ",\"sampleDelayMs\":null,\"sampleCostUs\":null,\"frames\":null,\"missingStack\":",
            );
            json_str(s, w.missing_reason.unwrap_or(NO_STACK_NATIVE));
        }
    }
}

/// A whole block, delivered to JavaScript when the loop resumes (or when the detector stops).
#[derive(Clone, Debug)]
pub struct BlockRecord {
    pub start_ns: u64,
    pub end_ns: u64,
    /// False when the detector stopped before the loop turned.
    pub ended: bool,
    pub warnings: Vec<Warning>,
}

/// The JSON handed to JavaScript; its fields are those of `BlockEvent` in the TypeScript API.
pub fn block_json(o: &Origin, b: &BlockRecord, texts: bool) -> String {
    let mut s = String::from("{\"threadId\":");
    let _ = write!(s, "{},\"timeout\":", o.thread_id);
    json_num(&mut s, o.timeout_ns as f64 / 1e9);
    s.push_str(",\"startTime\":");
    json_num(&mut s, mono_to_wall_ms(b.start_ns));
    s.push_str(",\"startHrtime\":");
    json_str(&mut s, &b.start_ns.to_string());
    s.push_str(",\"duration\":");
    json_num(&mut s, ms(b.end_ns.saturating_sub(b.start_ns)));
    let _ = write!(s, ",\"ended\":{},\"warnings\":[", b.ended);
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
        let j = warning_json(&origin(0), &warning(None));
        assert!(
            j.starts_with("{\"type\":\"BlockingWarning\",\"pid\":42,\"threadId\":0,\"timeout\":1,")
        );
        assert!(!j.contains('\n'));
    }

    #[test]
    fn block_json_lists_warnings() {
        let b = BlockRecord {
            start_ns: 1_000,
            end_ns: 3_500_001_000,
            ended: true,
            warnings: vec![warning(None)],
        };
        let j = block_json(&origin(0), &b, true);
        assert!(j.contains("\"duration\":3500"), "{j}");
        assert!(j.contains("\"ended\":true"));
        assert!(j.contains("\"text\":\"(node:42) BlockingWarning"));
    }
}
