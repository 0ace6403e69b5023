//! Source maps (v3) for the stack frames written while the loop is blocked.
//!
//! JavaScript cannot run during a block, so the frames of live warnings are mapped here, on the
//! blocked thread right after capture, with maps that the JavaScript layer registered beforehand
//! (`module.findSourceMap()` gives them with absolute `sources`). Lookup follows Node's
//! `SourceMap.findEntry`: the last mapping at or before the position, on that line or an earlier one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::panics::lock_or_recover;
use crate::report::{Frame, Generated};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    column: u32,
    source: u32,
    source_line: u32,
    source_column: u32,
}

/// A decoded map: per generated line (0-based), its segments sorted by column.
#[derive(Debug)]
pub struct SourceMap {
    sources: Vec<String>,
    lines: Vec<Vec<Segment>>,
}

fn base64(c: u8) -> Option<i64> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as i64)
}

/// Decodes the base64 VLQ numbers of one segment.
fn vlq(segment: &[u8], out: &mut Vec<i64>) -> Result<(), String> {
    out.clear();
    let (mut value, mut shift) = (0i64, 0u32);
    for &c in segment {
        let digit =
            base64(c).ok_or_else(|| format!("bad character {:?} in mappings", c as char))?;
        if shift > 60 {
            return Err("number too large in mappings".into());
        }
        value += (digit & 31) << shift;
        if digit & 32 != 0 {
            shift += 5;
        } else {
            out.push(if value & 1 == 1 {
                -(value >> 1)
            } else {
                value >> 1
            });
            value = 0;
            shift = 0;
        }
    }
    if shift != 0 {
        return Err("truncated number in mappings".into());
    }
    Ok(())
}

fn add(base: i64, delta: i64, what: &str) -> Result<i64, String> {
    let v = base + delta;
    if !(0..=i64::from(u32::MAX)).contains(&v) {
        return Err(format!("{what} out of range in mappings"));
    }
    Ok(v)
}

impl SourceMap {
    /// Decodes `mappings`; `sources` are the original files, already resolved.
    pub fn parse(sources: Vec<String>, mappings: &str) -> Result<SourceMap, String> {
        let mut lines = Vec::new();
        let (mut source, mut source_line, mut source_column) = (0i64, 0i64, 0i64);
        let mut fields = Vec::with_capacity(5);
        for line in mappings.as_bytes().split(|&c| c == b';') {
            let mut column = 0i64;
            let mut segments = Vec::new();
            for segment in line.split(|&c| c == b',').filter(|s| !s.is_empty()) {
                vlq(segment, &mut fields)?;
                column = add(column, fields[0], "column")?;
                if fields.len() < 4 {
                    continue; // a generated position without an original one
                }
                source = add(source, fields[1], "source index")?;
                source_line = add(source_line, fields[2], "line")?;
                source_column = add(source_column, fields[3], "column")?;
                if source as usize >= sources.len() {
                    return Err(format!("source index {source} out of range"));
                }
                segments.push(Segment {
                    column: column as u32,
                    source: source as u32,
                    source_line: source_line as u32,
                    source_column: source_column as u32,
                });
            }
            segments.sort_by_key(|s| s.column);
            lines.push(segments);
        }
        Ok(SourceMap { sources, lines })
    }

    /// The original (source, line, column), 0-based, of a 0-based generated position.
    pub fn find(&self, line: u32, column: u32) -> Option<(&str, u32, u32)> {
        let line = line as usize;
        let on_line = self.lines.get(line).and_then(|segs| {
            let n = segs.partition_point(|s| s.column <= column);
            n.checked_sub(1).map(|i| segs[i])
        });
        let seg = on_line.or_else(|| {
            self.lines[..line.min(self.lines.len())]
                .iter()
                .rev()
                .find_map(|segs| segs.last().copied())
        })?;
        Some((
            &self.sources[seg.source as usize],
            seg.source_line,
            seg.source_column,
        ))
    }
}

/// The most maps kept (a process with more source-mapped modules maps the first ones).
const MAX_MAPS: usize = 20_000;

static ANY: AtomicBool = AtomicBool::new(false);
static MAPS: Mutex<Option<HashMap<String, Arc<SourceMap>>>> = Mutex::new(None);

/// Makes `map` the source map of the generated file `file` (as V8 names it in stack frames).
/// Returns false when the registry is full.
pub fn register(file: String, map: SourceMap) -> bool {
    let mut maps = lock_or_recover(&MAPS, "sourcemap::MAPS");
    let maps = maps.get_or_insert_with(HashMap::new);
    if maps.len() >= MAX_MAPS && !maps.contains_key(&file) {
        return false;
    }
    maps.insert(file, Arc::new(map));
    ANY.store(true, Ordering::Release);
    true
}

/// Whether a map is registered for `file`.
pub fn is_registered(file: &str) -> bool {
    lock_or_recover(&MAPS, "sourcemap::MAPS")
        .as_ref()
        .is_some_and(|m| m.contains_key(file))
}

/// Frames with original positions where a registered map has them; others unchanged.
pub fn map_frames(frames: Vec<Frame>) -> Vec<Frame> {
    if !ANY.load(Ordering::Acquire) {
        return frames;
    }
    let maps = lock_or_recover(&MAPS, "sourcemap::MAPS");
    let Some(maps) = maps.as_ref() else {
        return frames;
    };
    frames
        .into_iter()
        .map(|f| {
            if f.line == 0 || f.generated.is_some() {
                return f;
            }
            let Some(map) = maps.get(&f.file_name) else {
                return f;
            };
            let Some((source, line, column)) = map.find(f.line - 1, f.column.saturating_sub(1))
            else {
                return f;
            };
            Frame {
                function_name: f.function_name,
                file_name: source.to_owned(),
                line: line + 1,
                column: column + 1,
                generated: Some(Box::new(Generated {
                    file_name: f.file_name,
                    line: f.line,
                    column: f.column,
                })),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // tsc's map of __test__/fixtures/sourcemap/blocker.js (blocker.ts).
    const MAPPINGS: &str = ";;;AAOA,kBAAyB,EAAU;IACjC,MAAM,IAAI,GAAS,EAAE,KAAK,EAAE,IAAI,CAAC,GAAG,EAAE,GAAG,EAAE,EAAE,KAAK,EAAE,CAAC,EAAE,CAAC;IACxD,OAAO,IAAI,CAAC,GAAG,EAAE,GAAG,IAAI,CAAC,KAAK;QAAE,IAAI,CAAC,KAAK,EAAE,CAAC,CAAC,gBAAgB;IAC9D,OAAO,IAAI,CAAC,KAAK,CAAC;AACpB,CAAC";

    fn map() -> SourceMap {
        SourceMap::parse(vec!["/src/blocker.ts".into()], MAPPINGS).unwrap()
    }

    #[test]
    fn vlq_decodes_signs_and_continuations() {
        let mut out = Vec::new();
        vlq(b"AAgBC", &mut out).unwrap();
        assert_eq!(out, vec![0, 0, 16, 1]);
        vlq(b"D", &mut out).unwrap();
        assert_eq!(out, vec![-1]);
        assert!(vlq(b"g", &mut out).is_err(), "truncated");
        assert!(vlq(b"A!", &mut out).is_err(), "bad character");
    }

    #[test]
    fn finds_what_node_finds() {
        let m = map();
        // blocker.js line 6 (`while (Date.now() < spin.until)`), column 5 → blocker.ts 10:3,
        // as module.findSourceMap().findEntry(5, 4) answers (0-based in, 0-based out).
        assert_eq!(m.find(5, 4), Some(("/src/blocker.ts", 9, 2)));
        // The function line: blocker.js 4 → blocker.ts 8.
        assert_eq!(m.find(3, 0).map(|(_, l, _)| l), Some(7));
        // Before any mapping.
        assert_eq!(m.find(0, 0), None);
        // Past the last line: the last mapping.
        assert!(m.find(1000, 0).is_some());
    }

    #[test]
    fn rejects_broken_maps() {
        assert!(
            SourceMap::parse(vec![], "AACA").is_err(),
            "source index out of range"
        );
        assert!(SourceMap::parse(vec!["a".into()], "AA!A").is_err());
    }

    #[test]
    fn maps_registered_frames_only() {
        assert!(register("/gen/blocker.js".into(), map()));
        let frames = vec![
            Frame {
                function_name: "blockFor".into(),
                file_name: "/gen/blocker.js".into(),
                line: 6,
                column: 5,
                generated: None,
            },
            Frame {
                function_name: "other".into(),
                file_name: "/gen/other.js".into(),
                line: 6,
                column: 5,
                generated: None,
            },
        ];
        let out = map_frames(frames.clone());
        assert_eq!(out[0].file_name, "/src/blocker.ts");
        assert_eq!((out[0].line, out[0].column), (10, 3));
        assert_eq!(
            out[0].generated.as_ref().unwrap().file_name,
            "/gen/blocker.js"
        );
        assert_eq!(out[1], frames[1]);
        assert!(is_registered("/gen/blocker.js"));
    }
}
