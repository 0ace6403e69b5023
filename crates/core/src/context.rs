//! The `asyncContext` fields of reports: the AsyncLocalStorage store of the blocked code, as the
//! binding captured it next to each stack sample (a JSON text), or why it could not.
//!
//! Per warning (`BlockSample` in the TypeScript API): `"context"` and `"contextMissing"`. Per block
//! (`BlockEvent`): the same two fields, from the first warning whose sample carried a store.
//! Neither field is written when the detector has no `asyncContext`.

use crate::report::{json_str, Warning, NO_STACK_NATIVE};

/// The store of one warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextCapture {
    /// Wanted, and not captured (yet): no stack sample arrived. The warning's missing-stack reason
    /// says why.
    Pending,
    /// Read: a JSON text (`null` when no store was active).
    Value(String),
    /// Could not be read, and why.
    Missing(String),
}

/// Prefix of the reason when no sample of the blocked code was taken at all.
pub const NO_SAMPLE: &str =
    "the store is read in the V8 interrupt that takes the stack sample, and none was taken";

fn missing_reason(w: &Warning, c: &ContextCapture) -> Option<String> {
    match c {
        ContextCapture::Value(_) => None,
        ContextCapture::Missing(r) => Some(r.clone()),
        ContextCapture::Pending => Some(format!(
            "{NO_SAMPLE} ({})",
            w.missing_reason.unwrap_or(NO_STACK_NATIVE)
        )),
    }
}

fn push_fields(out: &mut String, w: &Warning, c: &ContextCapture) {
    out.push_str(",\"context\":");
    match c {
        ContextCapture::Value(json) => out.push_str(json),
        _ => out.push_str("null"),
    }
    out.push_str(",\"contextMissing\":");
    match missing_reason(w, c) {
        Some(r) => json_str(out, &r),
        None => out.push_str("null"),
    }
}

/// `,"context":…,"contextMissing":…` of one warning; nothing without `asyncContext`.
pub fn warning_fields(out: &mut String, w: &Warning) {
    if let Some(c) = &w.context {
        push_fields(out, w, c);
    }
}

/// `,"context":…,"contextMissing":…` of a block: the first store read, else the first reason.
/// Nothing without `asyncContext`.
pub fn event_fields(out: &mut String, warnings: &[Warning]) {
    let read = warnings
        .iter()
        .find(|w| matches!(w.context, Some(ContextCapture::Value(_))));
    let first = read.or_else(|| warnings.iter().find(|w| w.context.is_some()));
    if let Some(w) = first {
        if let Some(c) = &w.context {
            push_fields(out, w, c);
        }
    }
}

/// The line a text warning adds for the store, e.g. `    context: {"requestId":"r2"}`.
pub fn text_line(w: &Warning) -> Option<String> {
    match &w.context {
        Some(ContextCapture::Value(json)) if json != "null" => {
            Some(format!("    context: {json}\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(context: Option<ContextCapture>) -> Warning {
        Warning {
            index: 0,
            start_ns: 0,
            elapsed_ns: 0,
            detected_ns: 0,
            sample: None,
            missing_reason: None,
            context,
            thread_state: None,
            native: None,
        }
    }

    #[test]
    fn off_writes_nothing() {
        let mut s = String::new();
        warning_fields(&mut s, &warning(None));
        event_fields(&mut s, &[warning(None)]);
        assert_eq!(s, "");
    }

    #[test]
    fn event_takes_first_read_store() {
        let ws = [
            warning(Some(ContextCapture::Pending)),
            warning(Some(ContextCapture::Value("{\"id\":2}".into()))),
            warning(Some(ContextCapture::Value("{\"id\":3}".into()))),
        ];
        let mut s = String::new();
        event_fields(&mut s, &ws);
        assert_eq!(s, ",\"context\":{\"id\":2},\"contextMissing\":null");
    }

    #[test]
    fn pending_says_why() {
        let mut s = String::new();
        event_fields(&mut s, &[warning(Some(ContextCapture::Pending))]);
        assert!(s.starts_with(",\"context\":null,\"contextMissing\":\"the store is read"));
        assert!(s.contains("native code"), "{s}");
    }
}
