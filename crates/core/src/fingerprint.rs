//! A block's fingerprint: a short, stable string naming the code that blocked, for grouping reports
//! and capping repeats (see `budget`).
//!
//! It is a hash of the innermost [`FRAMES`] application frames of the block's first stack sample
//! (frames as the native layer has them: source-mapped where a map was registered). Per frame: the
//! function name and the file, made machine-independent: the path after the last `node_modules/`
//! (`node_modules/pkg/lib/x.js`), else relative to the working directory the JavaScript layer
//! registered, else as it is. Like Sentry's grouping, line numbers are left out when the function
//! has a name: the line a sample lands on inside a spinning loop varies from block to block, and
//! an edit above the function would change it. Anonymous functions keep their line (otherwise every
//! anonymous function of a file would be one). Columns never count. Consecutive equal frames
//! (recursion) count once.
//!
//! Application frames: not Node's own (`node:`), not this package's, not without a file. With none,
//! the innermost frames are used whatever they are; with no frames at all there is no fingerprint.
//!
//! The hash is FNV-1a, 64 bits, mixed by MurmurHash3's finalizer, as 16 hex digits: defined here,
//! so the same on every machine and Rust version.

use std::sync::Mutex;

use crate::panics::lock_or_recover;
use crate::report::Frame;

/// Application frames that make the fingerprint.
pub const FRAMES: usize = 3;

struct Paths {
    /// The working directory, without a trailing slash.
    root: String,
    /// This package's directory: its frames (guards) are not the blocking code.
    own: String,
}

static PATHS: Mutex<Option<Paths>> = Mutex::new(None);

/// Sets the directory file names are made relative to (the process's working directory when the
/// first detector started) and this package's own directory. Called from JavaScript at `start()`.
pub fn set_paths(root: &str, own: &str) {
    let mut p = lock_or_recover(&PATHS, "fingerprint::PATHS");
    *p = Some(Paths {
        root: root.trim_end_matches('/').to_owned(),
        own: own.to_owned(),
    });
}

/// Whether the innermost frame that is not Node's own (`node:`) is this package's: its own
/// bookkeeping runs there (`stop()`, a delivery, a guard's), perhaps inside Node internals it
/// called. Such code is short and must not be left half done by an interrupt. A frame without a
/// file is the application's (`eval`, `new Function`).
pub fn in_own_code(frames: &[Frame]) -> bool {
    with_own(|own| in_own_code_with(frames, own))
}

/// Calls `f` with this package's directory (empty: not registered yet).
pub fn with_own<R>(f: impl FnOnce(&str) -> R) -> R {
    let p = lock_or_recover(&PATHS, "fingerprint::PATHS");
    f(p.as_ref().map_or("", |p| p.own.as_str()))
}

/// Neither Node's own code (`node:`) nor this package's (`own`, a directory; empty: not known).
pub fn is_user_code(f: &Frame, own: &str) -> bool {
    !f.file_name.starts_with("node:") && (own.is_empty() || !f.file_name.starts_with(own))
}

/// [`in_own_code`] with an explicit package directory (empty: not known, false).
pub fn in_own_code_with(frames: &[Frame], own: &str) -> bool {
    !own.is_empty()
        && frames
            .iter()
            .find(|f| !f.file_name.starts_with("node:"))
            .is_some_and(|f| f.file_name.starts_with(own))
}

/// The fingerprint of the first frames of a sample; None without frames.
pub fn fingerprint(frames: &[Frame]) -> Option<String> {
    let p = lock_or_recover(&PATHS, "fingerprint::PATHS");
    let (root, own) = p
        .as_ref()
        .map_or(("", ""), |p| (p.root.as_str(), p.own.as_str()));
    fingerprint_with(frames, root, own)
}

/// [`fingerprint`] with explicit paths (`root`: no trailing slash; empty: none).
pub fn fingerprint_with(frames: &[Frame], root: &str, own: &str) -> Option<String> {
    if frames.is_empty() {
        return None;
    }
    let is_app = |f: &Frame| !f.file_name.is_empty() && is_user_code(f, own);
    let any_app = frames.iter().any(is_app);
    let mut keys: Vec<String> = Vec::with_capacity(FRAMES);
    for f in frames.iter().filter(|f| !any_app || is_app(f)) {
        let key = frame_key(f, root);
        if keys.last() != Some(&key) {
            keys.push(key);
            if keys.len() == FRAMES {
                break;
            }
        }
    }
    Some(format!(
        "{:016x}",
        fmix64(fnv1a64(keys.join("\n").as_bytes()))
    ))
}

/// `function@file`, or `@file:line` for an anonymous function.
fn frame_key(f: &Frame, root: &str) -> String {
    let file = normalize_file(&f.file_name, root);
    if f.function_name.is_empty() {
        format!("@{file}:{}", f.line)
    } else {
        format!("{}@{file}", f.function_name)
    }
}

/// A file name without what differs between machines: `file://`, the install location of a
/// dependency, the application's directory.
pub fn normalize_file<'a>(file: &'a str, root: &str) -> std::borrow::Cow<'a, str> {
    let path = file.strip_prefix("file://").unwrap_or(file);
    if let Some(i) = path.rfind("/node_modules/") {
        return std::borrow::Cow::Owned(path[i + 1..].to_owned());
    }
    if !root.is_empty() {
        if let Some(rest) = path.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
            return std::borrow::Cow::Borrowed(rest);
        }
    }
    std::borrow::Cow::Borrowed(path)
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: FNV-1a alone leaves inputs that differ only at the end with
/// look-alike hashes; this spreads every bit over the whole value.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function_name: function.into(),
            file_name: file.into(),
            line,
            column: 7,
            generated: None,
        }
    }

    #[test]
    fn fnv_matches_the_reference() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fmix64(0), 0);
        // Pinned: a fingerprint must never change between versions without a note in CHANGELOG.md.
        let f = [frame("spin", "/a/x.js", 1)];
        assert_eq!(
            fingerprint_with(&f, "/a", "").as_deref(),
            Some("d5eac6737382c846")
        );
    }

    #[test]
    fn machine_independent_and_line_free_for_named_functions() {
        let here = [
            frame("spin", "/home/a/app/src/x.js", 10),
            frame("handler", "file:///home/a/app/src/y.js", 3),
        ];
        let there = [
            frame("spin", "/srv/app/src/x.js", 12),
            frame("handler", "/srv/app/src/y.js", 4),
        ];
        let a = fingerprint_with(
            &here,
            "/home/a/app",
            "/home/a/app/node_modules/loop-helpers/",
        );
        let b = fingerprint_with(&there, "/srv/app", "");
        assert_eq!(a, b);
        assert_eq!(a.as_deref().map(str::len), Some(16));
        let other = [frame("spin2", "/srv/app/src/x.js", 12)];
        assert_ne!(fingerprint_with(&other, "/srv/app", ""), b);
    }

    #[test]
    fn dependencies_node_internals_and_own_frames() {
        let a = [
            frame("parse", "/a/node_modules/.pnpm/p@1/node_modules/p/i.js", 1),
            frame("", "node:internal/timers", 5),
            frame("run", "/pkg/dist/lib/detector.js", 9),
            frame("main", "/a/m.js", 2),
        ];
        let b = [
            frame("parse", "/b/node_modules/p/i.js", 1),
            frame("main", "/b/m.js", 2),
        ];
        assert_eq!(
            fingerprint_with(&a, "/a", "/pkg/"),
            fingerprint_with(&b, "/b", "")
        );
        assert_eq!(
            normalize_file("/x/node_modules/p/i.js", ""),
            "node_modules/p/i.js"
        );
        // Only Node's frames: they are used rather than nothing.
        assert!(fingerprint_with(&[frame("f", "node:fs", 1)], "", "").is_some());
        assert_eq!(fingerprint_with(&[], "", ""), None);
    }

    #[test]
    fn own_code_is_the_innermost_frame_that_is_not_nodes() {
        let stop = [
            frame("removeListener", "node:events", 3),
            frame("stop", "/pkg/dist/lib/detector.js", 9),
            frame("onTimer", "/app/m.js", 2),
        ];
        assert!(in_own_code_with(&stop, "/pkg/dist/"));
        // A listener called by a delivery: the application's code, however deep in ours.
        let listener = [
            frame("spin", "/app/m.js", 7),
            frame("emit", "node:events", 3),
            frame("deliver", "/pkg/dist/lib/detector.js", 9),
        ];
        assert!(!in_own_code_with(&listener, "/pkg/dist/"));
        assert!(!in_own_code_with(&stop, ""));
        // Code compiled by `new Function` or `eval` has no file: the application's, run by ours.
        let compiled = [
            frame("anonymous", "", 1),
            frame("run", "/pkg/dist/lib/detector.js", 9),
        ];
        assert!(!in_own_code_with(&compiled, "/pkg/dist/"));
        assert!(!in_own_code_with(&[frame("f", "node:fs", 1)], "/pkg/dist/"));
    }

    #[test]
    fn anonymous_functions_keep_their_line_and_recursion_counts_once() {
        let a = [frame("", "/a/x.js", 1)];
        let b = [frame("", "/a/x.js", 2)];
        assert_ne!(
            fingerprint_with(&a, "/a", ""),
            fingerprint_with(&b, "/a", "")
        );
        let deep = [
            frame("walk", "/a/x.js", 1),
            frame("walk", "/a/x.js", 5),
            frame("walk", "/a/x.js", 5),
            frame("main", "/a/x.js", 9),
        ];
        let shallow = [frame("walk", "/a/x.js", 1), frame("main", "/a/x.js", 9)];
        assert_eq!(
            fingerprint_with(&deep, "/a", ""),
            fingerprint_with(&shallow, "/a", "")
        );
    }
}
