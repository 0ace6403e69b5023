//! Panics and poisoned locks that were recovered from, counted so that they are visible.
//!
//! A panic never crosses into Node: the FFI entry points, the callbacks Node or V8 call, and the
//! monitor's cycle catch it (`catch_unwind`) and carry on, because one bug must not take the
//! application down with it. Carrying on silently would hide the bug, so every such site calls
//! [`record`], and every lock that is taken after a panic poisoned it goes through
//! [`lock_or_recover`] (or [`wait_or_recover`]). [`stats`] is what `nativeInfo()` reports, and
//! `capabilities().panics` in JavaScript.
//!
//! Recording allocates (the message) but never blocks: the last message is kept only when its lock
//! is free (two panics recorded at the same instant keep one message; the count keeps both), so
//! that a record in the child of a fork() cannot wait for a thread that is gone.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, LockResult, Mutex, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

static PANICS: AtomicU64 = AtomicU64::new(0);
static POISONED: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);
static LAST_POISONED: Mutex<Option<&'static str>> = Mutex::new(None);

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn payload_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic payload that is not a string)"
    }
}

/// Runs `f`; when it panics, records the panic (see [`record`]) and returns None.
///
/// The callers' state stays usable after a panic in `f` (locks recover, see [`lock_or_recover`]),
/// which is what asserting unwind safety here claims.
pub fn catch<R>(site: &'static str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            record(site, payload.as_ref());
            None
        }
    }
}

/// Counts a panic caught at `site` (a short name: `"exports::start"`, `"monitor cycle"`), with its
/// payload's message.
pub fn record(site: &'static str, payload: &(dyn Any + Send)) {
    PANICS.fetch_add(1, Ordering::Relaxed);
    let message = format!("{site}: {}", payload_message(payload));
    if let Ok(mut last) = LAST_PANIC.try_lock() {
        *last = Some(message);
    }
}

fn record_poisoned(site: &'static str) {
    POISONED.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = LAST_POISONED.try_lock() {
        *last = Some(site);
    }
}

/// The value of a lock operation on `m`; when a panic poisoned `m`, counts that, clears the poison
/// (so that one panic counts once) and goes on with the data as the panicking thread left it.
fn recover<T, G>(r: LockResult<G>, m: &Mutex<T>, site: &'static str) -> G {
    r.unwrap_or_else(|poisoned| {
        record_poisoned(site);
        m.clear_poison();
        poisoned.into_inner()
    })
}

/// Locks `m`, recovering from (and counting) poison. Our locked sections keep their data
/// consistent at every point a panic can happen (they hold counters, queues and handles, never a
/// half-done invariant), which is why going on is right here.
pub fn lock_or_recover<'a, T>(m: &'a Mutex<T>, site: &'static str) -> MutexGuard<'a, T> {
    recover(m.lock(), m, site)
}

/// `cv.wait(guard)` on the lock `m` of `guard`, recovering from (and counting) poison as
/// [`lock_or_recover`] does.
pub fn wait_or_recover<'a, T>(
    cv: &Condvar,
    m: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    site: &'static str,
) -> MutexGuard<'a, T> {
    recover(cv.wait(guard), m, site)
}

/// `cv.wait_timeout(guard, timeout)`, recovering from (and counting) poison as
/// [`lock_or_recover`] does.
pub fn wait_timeout_or_recover<'a, T>(
    cv: &Condvar,
    m: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    site: &'static str,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    recover(cv.wait_timeout(guard, timeout), m, site)
}

/// What was recovered from since the process started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Panics caught (and recovered from).
    pub panics: u64,
    /// `"<site>: <message>"` of the last one.
    pub last_panic: Option<String>,
    /// Locks found poisoned (by a panic while held) and used anyway.
    pub poisoned_locks: u64,
    /// The site of the last one.
    pub last_poisoned_lock: Option<&'static str>,
}

/// The counts so far.
pub fn stats() -> Stats {
    Stats {
        panics: PANICS.load(Ordering::Relaxed),
        last_panic: LAST_PANIC.try_lock().ok().and_then(|l| l.clone()),
        poisoned_locks: POISONED.load(Ordering::Relaxed),
        last_poisoned_lock: LAST_POISONED.try_lock().ok().and_then(|l| *l),
    }
}

/// `{"count":…,"last":…,"poisonedLocks":…,"lastPoisonedLock":…}`
pub fn stats_json(s: &mut String) {
    let st = stats();
    s.push_str(&format!("{{\"count\":{},\"last\":", st.panics));
    match &st.last_panic {
        Some(m) => crate::report::json_str(s, m),
        None => s.push_str("null"),
    }
    s.push_str(&format!(
        ",\"poisonedLocks\":{},\"lastPoisonedLock\":",
        st.poisoned_locks
    ));
    match st.last_poisoned_lock {
        Some(m) => crate::report::json_str(s, m),
        None => s.push_str("null"),
    }
    s.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;

    // The counters are process-wide and tests run in parallel: each test checks that its own
    // events were added, not exact totals.

    #[test]
    fn a_caught_panic_is_counted_with_its_site_and_message() {
        let before = stats().panics;
        let Err(payload) = catch_unwind(|| panic!("boom {}", 42)) else {
            unreachable!()
        };
        record("test site", payload.as_ref());
        let st = stats();
        assert!(st.panics > before);
        // The only test that records panics, so the last message is this one.
        assert_eq!(st.last_panic.as_deref(), Some("test site: boom 42"));
        let Err(payload) = catch_unwind(|| panic!("static message")) else {
            unreachable!()
        };
        assert_eq!(payload_message(payload.as_ref()), "static message");
        assert_eq!(
            payload_message(&42u32),
            "(a panic payload that is not a string)"
        );
    }

    #[test]
    fn a_poisoned_lock_is_counted_once_and_cleared() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        let before = stats().poisoned_locks;
        *lock_or_recover(&m, "test lock") += 1;
        assert!(!m.is_poisoned(), "the poison is cleared");
        assert!(stats().poisoned_locks > before);
        assert_eq!(*lock_or_recover(&m, "test lock"), 2);
    }

    #[test]
    fn a_poisoned_wait_is_recovered() {
        let m = Mutex::new(0);
        let cv = Condvar::new();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _g = m.lock().unwrap();
            panic!("poison");
        }));
        let g = lock_or_recover(&m, "test wait");
        let (g, r) = wait_timeout_or_recover(&cv, &m, g, Duration::from_millis(1), "test wait");
        assert!(r.timed_out());
        assert_eq!(*g, 0);
    }

    #[test]
    fn the_json_names_every_field() {
        let mut s = String::new();
        stats_json(&mut s);
        for k in [
            "\"count\":",
            "\"last\":",
            "\"poisonedLocks\":",
            "\"lastPoisonedLock\":",
        ] {
            assert!(s.contains(k), "{s}");
        }
    }
}
