//! Shared by the fuzz targets: an allocator that measures what one input makes the code under test
//! allocate, so a target can assert "no allocation above the documented cap" without ASan.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Live heap bytes, and the highest value since the last [`bounded`] started.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// No single allocation may exceed this: such a request is a length read from the input and trusted.
pub const MAX_SINGLE_ALLOC: usize = 256 << 20;

pub struct Counting;

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
}

fn check(size: usize) {
    if size > MAX_SINGLE_ALLOC {
        // No formatting (it would allocate): a fixed line, then a crash libFuzzer records.
        let _ = std::io::stderr().write_all(b"fuzz: a single allocation above 256 MiB\n");
        std::process::abort();
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        check(l.size());
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        check(l.size());
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        check(new);
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

/// Runs `f` and fails when the heap grew by more than `cap` bytes at any point while it ran.
pub fn bounded<T>(cap: usize, what: &str, f: impl FnOnce() -> T) -> T {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    assert!(
        peak <= cap,
        "{what}: {peak} bytes of heap at the peak, above the cap of {cap}"
    );
    r
}

/// `f64`s compared bit for bit (NaN-safe, -0.0 ≠ 0.0).
pub fn bits(v: impl IntoIterator<Item = f64>) -> Vec<u64> {
    v.into_iter().map(f64::to_bits).collect()
}

use modekeeper::telemetry::Sample;

/// Equal, and every float equal to the bit (`==` would let -0.0 and 0.0 pass).
pub fn same_sample(a: &Sample, b: &Sample) -> bool {
    let floats = |s: &Sample| {
        let opt = [
            s.step_time_ms,
            s.loss,
            s.data_wait_ms,
            s.gpu_util_pct,
            s.gpu_mem_util_pct,
            s.comm_ms,
        ];
        let mut v: Vec<u64> = opt
            .iter()
            .map(|x| x.map_or(u64::MAX, f64::to_bits))
            .collect();
        v.extend(bits(s.worker_latencies_ms.iter().copied()));
        v
    };
    a == b && floats(a) == floats(b)
}
