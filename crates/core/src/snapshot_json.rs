//! JSON pieces of an `asyncContext` snapshot that need no V8: limits, numbers, truncated strings,
//! BigInt digits and Date strings. The walk over V8 values is in the binding
//! (`crates/node/src/context_snapshot.rs`).

use std::fmt::Write as _;

use crate::report::json_str;

/// Containers nested deeper than this are summarised (`"[Object]"`, `"[Array(3)]"`).
pub const MAX_DEPTH: u32 = 4;
/// Keys of an object, items of an array / Map / Set, written at most.
pub const MAX_KEYS: u32 = 50;
/// UTF-8 bytes of a string written at most.
pub const MAX_STRING_BYTES: usize = 1024;
/// Values written at most in one snapshot; the rest become `"[Truncated]"`.
pub const MAX_VALUES: u32 = 500;
/// BigInts longer than this (64-bit words) are summarised by their size.
pub const MAX_BIGINT_WORDS: usize = 64;

/// A number as `JSON.stringify` writes it (non-finite: `null`).
pub fn push_number(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
    } else if v == v.trunc() && v.abs() < 1e21 {
        // Integral: no ".0", and -0 as 0.
        let _ = write!(out, "{}", v as i128);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A string read with at most [`MAX_STRING_BYTES`] bytes; `total_units` is its full length in
/// UTF-16 code units, to tell whether `read` is all of it.
pub fn push_string(out: &mut String, read: &str, total_units: usize) {
    let read_units = read.encode_utf16().count();
    if read_units >= total_units {
        json_str(out, read);
    } else {
        let s = format!(
            "{read}…[truncated, {} of {total_units} characters]",
            read_units
        );
        json_str(out, &s);
    }
}

/// A BigInt's decimal digits from its sign and little-endian 64-bit words (Node-API's form).
pub fn bigint_decimal(negative: bool, words: &[u64]) -> String {
    let mut w: Vec<u64> = words.to_vec();
    while w.last() == Some(&0) {
        w.pop();
    }
    if w.is_empty() {
        return "0".into();
    }
    // Repeated division by 10^19, most significant word first.
    const BASE: u64 = 10_000_000_000_000_000_000;
    let mut chunks = Vec::new();
    while !w.is_empty() {
        let mut rem: u128 = 0;
        for word in w.iter_mut().rev() {
            let cur = (rem << 64) | *word as u128;
            *word = (cur / BASE as u128) as u64;
            rem = cur % BASE as u128;
        }
        chunks.push(rem as u64);
        while w.last() == Some(&0) {
            w.pop();
        }
    }
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    let mut it = chunks.iter().rev();
    if let Some(first) = it.next() {
        let _ = write!(s, "{first}");
    }
    for c in it {
        let _ = write!(s, "{c:019}");
    }
    s
}

/// `Date.prototype.toISOString()` of a time value (ms since the epoch); None for an invalid date.
pub fn iso_date(ms: f64) -> Option<String> {
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return None;
    }
    let ms = ms.trunc() as i64;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{}{:06}", if y < 0 { '-' } else { '+' }, y.abs())
    };
    Some(format!(
        "{year}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_json_stringify() {
        let mut s = String::new();
        for v in [
            1.0,
            -0.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            1e21,
            123456789012.0,
        ] {
            push_number(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0 1.5 null null 1000000000000000000000 123456789012 ");
    }

    #[test]
    fn bigints_in_decimal() {
        assert_eq!(bigint_decimal(false, &[0]), "0");
        assert_eq!(bigint_decimal(true, &[42]), "-42");
        assert_eq!(
            bigint_decimal(false, &[u64::MAX, u64::MAX]),
            u128::MAX.to_string()
        );
        // 2^128
        assert_eq!(
            bigint_decimal(false, &[0, 0, 1]),
            "340282366920938463463374607431768211456"
        );
    }

    #[test]
    fn dates_like_to_iso_string() {
        assert_eq!(iso_date(0.0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso_date(1_700_000_000_123.0).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(iso_date(-1.0).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            iso_date(951_782_400_000.0).unwrap(),
            "2000-02-29T00:00:00.000Z"
        );
        assert!(iso_date(f64::NAN).is_none());
    }

    #[test]
    fn strings_say_when_truncated() {
        let mut s = String::new();
        push_string(&mut s, "abc", 3);
        assert_eq!(s, "\"abc\"");
        s.clear();
        push_string(&mut s, "ab", 5000);
        assert_eq!(s, "\"ab…[truncated, 2 of 5000 characters]\"");
    }
}
