//! Counts of the native resources that live per environment or per delivery, for `nativeInfo()`:
//! a Worker that ends must give back everything it held, and the churn test
//! (`__test__/churn.test.mjs`) checks that these return to their baseline after a thousand of them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One kind of live resource.
pub struct Count(AtomicUsize);

impl Count {
    const fn new() -> Self {
        Count(AtomicUsize::new(0))
    }

    pub fn up(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn down(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-environment states (`EnvLoop`) not yet freed.
pub static ENVIRONMENTS: Count = Count::new();
/// Thread-safe functions of ours created and not yet finalised by Node.
pub static CHANNELS: Count = Count::new();
/// Messages queued for JavaScript (blocks, interrupt errors) neither delivered nor dropped yet.
pub static PENDING_DELIVERIES: Count = Count::new();
/// Environments whose stack-sample or interrupt requests wait for V8 to run their interrupt.
pub static SAMPLES_WAITING: Count = Count::new();
