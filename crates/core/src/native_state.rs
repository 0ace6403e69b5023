//! Where a blocked thread is when it is outside JavaScript, as the typed fields and the one line a
//! warning carries: in a garbage collection (which kind, for how long), inside one of Node.js's
//! synchronous APIs (`fs.readFileSync`), in which system call, on which file.
//!
//! Two sources, read on the monitor thread when a warning goes out without a stack:
//! - what the blocked thread marks itself ([`Marks`], through `LoopProbe::marks`): V8's GC
//!   prologue and epilogue callbacks, and the marker the JavaScript layer sets around Node's
//!   synchronous APIs (the binding keeps both in memory the monitor reads);
//! - what `/proc` says about it ([`crate::thread_state`]).
//!
//! A stack sample taken inside a synchronous API (in `Atomics.wait`, whose wait serves V8
//! interrupts, or as the API returned) carries the API's name too ([`NativeState::sampled_in`]).

use std::fmt::Write as _;

use crate::report::json_str;
use crate::thread_state::ThreadState;

/// V8's `GCType` bits (v8-callbacks.h, the same from V8 11.3 to 14.6).
const GC_SCAVENGE: u32 = 1;
const GC_MINOR_MARK_SWEEP: u32 = 1 << 1;
const GC_MARK_SWEEP_COMPACT: u32 = 1 << 2;
const GC_INCREMENTAL_MARKING: u32 = 1 << 3;
const GC_PROCESS_WEAK_CALLBACKS: u32 = 1 << 4;

/// The name reports give V8's `GCType` `bits`.
pub fn gc_kind(bits: u32) -> &'static str {
    match bits {
        GC_SCAVENGE => "scavenge",
        GC_MINOR_MARK_SWEEP => "minor mark-sweep",
        GC_MARK_SWEEP_COMPACT => "mark-compact",
        GC_INCREMENTAL_MARKING => "incremental marking start",
        GC_PROCESS_WEAK_CALLBACKS => "weak callbacks",
        _ => "unknown kind",
    }
}

/// What the loop thread marks about itself, read from another thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The Node.js synchronous API it is inside (the outermost one), e.g. `fs.readFileSync`.
    pub sync_api: Option<String>,
    /// The garbage collection in progress: V8's `GCType` bits, and when it began (monotonic ns).
    pub gc: Option<(u32, u64)>,
}

/// A garbage collection in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gc {
    /// See [`gc_kind`].
    pub kind: &'static str,
    /// How long it had been running when the warning went out.
    pub elapsed_ns: u64,
}

/// Where the thread was, outside JavaScript, at a warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeState {
    /// The Node.js synchronous API it was inside.
    pub sync_api: Option<String>,
    /// The garbage collection it was in.
    pub gc: Option<Gc>,
    /// The system call it was in, by name.
    pub syscall: Option<&'static str>,
    /// The file that system call works on.
    pub file: Option<String>,
    /// Running (not in a system call).
    pub running: bool,
}

impl NativeState {
    /// The state of a thread found without a stack: its marks and what `/proc` says; None when
    /// neither says anything.
    pub fn from_parts(marks: Marks, proc_state: Option<&ThreadState>, now_ns: u64) -> Option<Self> {
        let s = NativeState {
            sync_api: marks.sync_api,
            gc: marks.gc.map(|(bits, since)| Gc {
                kind: gc_kind(bits),
                elapsed_ns: now_ns.saturating_sub(since),
            }),
            syscall: proc_state.and_then(|p| p.syscall),
            file: proc_state.and_then(|p| p.file.clone()),
            running: proc_state.is_some_and(|p| p.running),
        };
        (s != NativeState::default()).then_some(s)
    }

    /// A stack sample taken inside the synchronous API `api`.
    pub fn sampled_in(api: String) -> Self {
        NativeState {
            sync_api: Some(api),
            ..NativeState::default()
        }
    }

    /// The line the text warning gives it, without indentation or newline: `in fs.readFileSync
    /// (native, a system call read on /data/big.json)`, `in a garbage collection (mark-compact,
    /// 230 ms so far)`. None when neither a garbage collection nor a synchronous API is known
    /// (the `threadState` line says the rest).
    pub fn line(&self) -> Option<String> {
        if let Some(gc) = &self.gc {
            let mut s = format!(
                "in a garbage collection ({}, {:.0} ms so far)",
                gc.kind,
                gc.elapsed_ns as f64 / 1e6
            );
            if let Some(api) = &self.sync_api {
                let _ = write!(s, " inside {api}");
            }
            return Some(s);
        }
        let api = self.sync_api.as_ref()?;
        let how = match (self.syscall, &self.file) {
            (Some(call), Some(file)) => format!("native, a system call {call} on {file}"),
            (Some(call), None) => format!("native, a system call {call}"),
            (None, _) if self.running => "native code, running".to_string(),
            (None, _) => "native".to_string(),
        };
        Some(format!("in {api} ({how})"))
    }
}

fn opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.push_str("null"),
    }
}

/// `,"syncApi":…,"gc":…,"gcMs":…,"syscall":…,"syscallFile":…` of a warning (each null when not
/// known).
pub fn json_fields(out: &mut String, s: Option<&NativeState>) {
    out.push_str(",\"syncApi\":");
    opt_str(out, s.and_then(|s| s.sync_api.as_deref()));
    out.push_str(",\"gc\":");
    opt_str(out, s.and_then(|s| s.gc.as_ref()).map(|g| g.kind));
    out.push_str(",\"gcMs\":");
    match s.and_then(|s| s.gc.as_ref()) {
        Some(g) => {
            let _ = write!(out, "{}", g.elapsed_ns as f64 / 1e6);
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"syscall\":");
    opt_str(out, s.and_then(|s| s.syscall));
    out.push_str(",\"syscallFile\":");
    opt_str(out, s.and_then(|s| s.file.as_deref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_in(call: &'static str, file: Option<&str>) -> ThreadState {
        ThreadState {
            words: format!("the thread is in the system call {call}"),
            syscall: Some(call),
            file: file.map(str::to_string),
            running: false,
        }
    }

    #[test]
    fn names_the_api_its_system_call_and_file() {
        let s = NativeState::from_parts(
            Marks {
                sync_api: Some("fs.readFileSync".into()),
                gc: None,
            },
            Some(&proc_in("read", Some("/data/big.json"))),
            0,
        )
        .expect("known");
        assert_eq!(
            s.line().as_deref(),
            Some("in fs.readFileSync (native, a system call read on /data/big.json)")
        );
        let mut j = String::new();
        json_fields(&mut j, Some(&s));
        assert_eq!(
            j,
            ",\"syncApi\":\"fs.readFileSync\",\"gc\":null,\"gcMs\":null,\"syscall\":\"read\",\"syscallFile\":\"/data/big.json\""
        );
    }

    #[test]
    fn a_running_api_and_one_without_proc() {
        let running = ThreadState {
            running: true,
            ..ThreadState::default()
        };
        let marks = || Marks {
            sync_api: Some("crypto.pbkdf2Sync".into()),
            gc: None,
        };
        let s = NativeState::from_parts(marks(), Some(&running), 0).unwrap();
        assert_eq!(
            s.line().as_deref(),
            Some("in crypto.pbkdf2Sync (native code, running)")
        );
        let s = NativeState::from_parts(marks(), None, 0).unwrap();
        assert_eq!(s.line().as_deref(), Some("in crypto.pbkdf2Sync (native)"));
        assert_eq!(
            NativeState::sampled_in("Atomics.wait".into())
                .line()
                .as_deref(),
            Some("in Atomics.wait (native)")
        );
    }

    #[test]
    fn a_garbage_collection_comes_first() {
        let s = NativeState::from_parts(
            Marks {
                sync_api: None,
                gc: Some((GC_MARK_SWEEP_COMPACT, 1_000_000)),
            },
            Some(&ThreadState {
                running: true,
                ..ThreadState::default()
            }),
            231_400_000,
        )
        .unwrap();
        assert_eq!(
            s.line().as_deref(),
            Some("in a garbage collection (mark-compact, 230 ms so far)")
        );
        let mut j = String::new();
        json_fields(&mut j, Some(&s));
        assert!(
            j.contains("\"gc\":\"mark-compact\",\"gcMs\":230.4,\"syscall\":null"),
            "{j}"
        );
        let inside = NativeState {
            sync_api: Some("zlib.gzipSync".into()),
            ..s
        };
        assert_eq!(
            inside.line().as_deref(),
            Some("in a garbage collection (mark-compact, 230 ms so far) inside zlib.gzipSync")
        );
    }

    #[test]
    fn nothing_known_is_nothing_said() {
        assert_eq!(NativeState::from_parts(Marks::default(), None, 5), None);
        // A system call outside any known API: the threadState line says it; no line here.
        let s =
            NativeState::from_parts(Marks::default(), Some(&proc_in("futex", None)), 5).unwrap();
        assert_eq!(s.line(), None);
        let mut j = String::new();
        json_fields(&mut j, None);
        assert_eq!(
            j,
            ",\"syncApi\":null,\"gc\":null,\"gcMs\":null,\"syscall\":null,\"syscallFile\":null"
        );
        assert_eq!(gc_kind(GC_SCAVENGE), "scavenge");
        assert_eq!(gc_kind(3), "unknown kind");
    }
}
