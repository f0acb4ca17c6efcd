//! Shared by the `fuzz_*` targets: how many cases to run, a deadline per
//! case, and an allocation meter.
//!
//! cargo-fuzz needs a nightly toolchain, so the targets are proptest
//! properties: structured generators plus mutations of valid encodings.
//! `FUZZ_CASES=N` overrides every property's default case count (FUZZING.md
//! has the long-run commands). A case that panics fails its property; one
//! that runs past its deadline fails with its input; one that allocates
//! beyond its budget fails with the numbers.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The case count: `FUZZ_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A proptest configuration with `cases(default)` cases and no regression
/// files written next to the tests (minimized failures are kept as named
/// tests instead).
pub fn config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: cases(default),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..proptest::test_runner::Config::default()
    }
}

/// What one decode cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub elapsed: Duration,
    /// The largest single allocation (or reallocation) requested.
    pub largest_alloc: usize,
    /// All bytes requested, reallocations counted at their new size.
    pub total_alloc: usize,
}

/// Runs `decode` on a fresh thread and waits at most `deadline` for it,
/// metering its allocations. A hang fails the case (the stuck thread is
/// left behind; the property has failed anyway).
pub fn within<T: Send + 'static>(
    deadline: Duration,
    what: &str,
    decode: impl FnOnce() -> T + Send + 'static,
) -> (T, Cost) {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            METERING.with(|on| on.set(true));
            LARGEST.with(|c| c.set(0));
            TOTAL.with(|c| c.set(0));
            let started = Instant::now();
            let value = decode();
            let elapsed = started.elapsed();
            METERING.with(|on| on.set(false));
            let cost = Cost {
                elapsed,
                largest_alloc: LARGEST.with(Cell::get),
                total_alloc: TOTAL.with(Cell::get),
            };
            let _ = tx.send((value, cost));
        })
        .expect("spawn a fuzz case thread");
    match rx.recv_timeout(deadline) {
        Ok(answer) => answer,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {deadline:?} (a hang)")
        }
        // The sender dropped without sending: the decode panicked. Its
        // message is already on stderr; fail the case with the input.
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the decoder panicked"),
    }
}

/// Asserts that a decode of `input_bytes` of input stayed within a budget
/// that does not depend on any length or count written inside the input:
/// a fixed allowance plus a multiple of the input's real size.
pub fn assert_bounded(cost: &Cost, input_bytes: usize, what: &str) {
    let largest_budget = (4 << 20) + 4 * input_bytes;
    let total_budget = (64 << 20) + 16 * input_bytes;
    assert!(
        cost.largest_alloc <= largest_budget,
        "{what}: one allocation of {} bytes for {input_bytes} bytes of input (budget {largest_budget})",
        cost.largest_alloc
    );
    assert!(
        cost.total_alloc <= total_budget,
        "{what}: {} bytes allocated for {input_bytes} bytes of input (budget {total_budget})",
        cost.total_alloc
    );
}

/// The input as hex, for failure messages (long inputs are cut).
pub fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(256).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 256 {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// Runs `check` on `cases(default_cases)` values drawn from `strategy`,
/// shrinking a failure to a minimal input, and prints the case count and
/// time for the record in FUZZING.md (`-- --nocapture` shows it).
pub fn fuzz<S>(name: &str, default_cases: u32, strategy: S, check: impl Fn(S::Value))
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let ran = std::sync::atomic::AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(config(default_cases));
    let result = runner.run(&strategy, |value| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(value);
        Ok(())
    });
    eprintln!(
        "fuzz target {name}: {} cases in {:.1?}",
        ran.into_inner(),
        started.elapsed()
    );
    if let Err(error) = result {
        panic!("fuzz target {name} failed: {error}");
    }
}

thread_local! {
    static METERING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = METERING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|c| c.set(c.get().max(bytes)));
            let _ = TOTAL.try_with(|c| c.set(c.get().saturating_add(bytes)));
        }
    });
}

/// The system allocator, metered on threads that [`within`] runs.
struct Meter;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// meter only reads sizes and updates thread-local counters, which neither
// allocate nor unwind.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static METER: Meter = Meter;
