//! The report budget: at most one logged block per fingerprint per interval (the detector's
//! `logRepeatsAfterMs`). A new fingerprint is always logged at once; the blocks kept out of the log
//! are counted, and the next logged block of that fingerprint says how many there were.
//!
//! The decision is taken once per block, when its first warning is written (its fingerprint is
//! known then, from the stack sampled for that warning), and holds for all of the block's lines: its
//! later live warnings and its closing record. A block without a stack then (its first sample
//! missed the 5 ms wait: a native call, a busy machine) has no fingerprint yet and is logged: a
//! budget needs a culprit to count against. When its stack comes later, the closing record names the
//! culprit, which then counts as logged.

use std::collections::HashMap;

/// Fingerprints remembered before the expired ones are dropped.
const MAX_ENTRIES: usize = 4096;

/// What the budget decided for one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The block is written to the log.
    pub log: bool,
    /// Blocks of this fingerprint kept out of the log since the last logged one; when this block is
    /// kept out too, it is counted.
    pub suppressed: u64,
}

impl Default for Verdict {
    /// Logged, nothing suppressed (no budget).
    fn default() -> Self {
        Verdict {
            log: true,
            suppressed: 0,
        }
    }
}

#[derive(Debug)]
struct Entry {
    last_logged_ns: u64,
    suppressed: u64,
}

/// Per detector: when each fingerprint was last logged.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// 0: no budget, every block is logged.
    interval_ns: u64,
    seen: HashMap<String, Entry>,
}

impl LogBudget {
    /// Sets the interval (0: no budget). Forgets what was logged.
    pub fn set_interval(&mut self, interval_ns: u64) {
        self.interval_ns = interval_ns;
        self.seen.clear();
    }

    /// Decides for a block whose first warning is written at `now_ns`.
    pub fn decide(&mut self, fingerprint: Option<&str>, now_ns: u64) -> Verdict {
        let logged = Verdict::default();
        let (Some(fp), true) = (fingerprint, self.interval_ns > 0) else {
            return logged;
        };
        if let Some(e) = self.seen.get_mut(fp) {
            if now_ns.saturating_sub(e.last_logged_ns) < self.interval_ns {
                e.suppressed += 1;
                return Verdict {
                    log: false,
                    suppressed: e.suppressed,
                };
            }
            let suppressed = std::mem::take(&mut e.suppressed);
            e.last_logged_ns = now_ns;
            return Verdict {
                log: true,
                suppressed,
            };
        }
        self.insert(fp, now_ns);
        logged
    }

    /// A block decided without a fingerprint (no stack when its first warning was written) was
    /// logged, and its fingerprint came with a later sample: its closing record names it, so the
    /// culprit counts as logged now, unless it already was.
    pub fn logged_late(&mut self, fingerprint: &str, now_ns: u64) {
        if self.interval_ns > 0 && !self.seen.contains_key(fingerprint) {
            self.insert(fingerprint, now_ns);
        }
    }

    fn insert(&mut self, fp: &str, now_ns: u64) {
        if self.seen.len() >= MAX_ENTRIES {
            let interval = self.interval_ns;
            self.seen
                .retain(|_, e| now_ns.saturating_sub(e.last_logged_ns) < interval);
            if self.seen.len() >= MAX_ENTRIES {
                self.seen.clear();
            }
        }
        self.seen.insert(
            fp.to_owned(),
            Entry {
                last_logged_ns: now_ns,
                suppressed: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn no_budget_logs_everything() {
        let mut b = LogBudget::default();
        for t in 0..3 {
            assert_eq!(
                b.decide(Some("a"), t),
                Verdict {
                    log: true,
                    suppressed: 0
                }
            );
        }
    }

    #[test]
    fn repeats_are_counted_and_new_fingerprints_logged_at_once() {
        let mut b = LogBudget::default();
        b.set_interval(60 * S);
        assert!(b.decide(Some("a"), 0).log);
        assert_eq!(
            b.decide(Some("a"), S),
            Verdict {
                log: false,
                suppressed: 1
            }
        );
        assert_eq!(
            b.decide(Some("a"), 2 * S),
            Verdict {
                log: false,
                suppressed: 2
            }
        );
        assert!(b.decide(Some("b"), 3 * S).log);
        assert!(b.decide(None, 4 * S).log);
        assert_eq!(
            b.decide(Some("a"), 61 * S),
            Verdict {
                log: true,
                suppressed: 2
            }
        );
        assert_eq!(
            b.decide(Some("a"), 62 * S),
            Verdict {
                log: false,
                suppressed: 1
            }
        );
    }

    #[test]
    fn a_fingerprint_known_late_counts_as_logged() {
        let mut b = LogBudget::default();
        b.set_interval(60 * S);
        assert!(b.decide(None, 0).log);
        b.logged_late("a", S);
        assert_eq!(
            b.decide(Some("a"), 2 * S),
            Verdict {
                log: false,
                suppressed: 1
            }
        );
        b.logged_late("a", 3 * S);
        assert!(b.decide(Some("a"), 62 * S).log);
    }

    #[test]
    fn bounded() {
        let mut b = LogBudget::default();
        b.set_interval(S);
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            b.decide(Some(&i.to_string()), i * S);
        }
        assert!(b.seen.len() <= MAX_ENTRIES);
    }
}
