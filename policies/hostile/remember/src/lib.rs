//! Hostile: looks for traces of earlier evaluations in its memory (a static counter, a large heap
//! block, a stack buffer), then leaves traces of its own. Every evaluation runs in a fresh instance,
//! so it must never find any, however the host recycles memory between instances.
use std::sync::atomic::{AtomicU32, Ordering};

use modekeeper_policy_sdk::{ChordPolicy, Decision, Evaluation, Input, export_policy};

static CALLS: AtomicU32 = AtomicU32::new(0);

pub struct Remember;

/// Counts non-zero bytes in a fresh stack buffer, then dirties it.
#[inline(never)]
fn stack_leftovers() -> usize {
    let mut buf = std::hint::black_box([0u8; 32 << 10]);
    let n = buf.iter().filter(|b| **b != 0).count();
    buf.fill(0xa5);
    std::hint::black_box(&buf);
    n
}

impl ChordPolicy for Remember {
    fn evaluate(_input: &Input) -> Evaluation {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed);
        // Large enough to come straight from `memory.grow`, which the allocator trusts to be zeroed.
        // A byte every 1 KiB is enough to see a page that was not reset, and stays within fuel.
        let mut heap = std::hint::black_box(vec![0u8; 3 << 20]);
        let heap_left = heap.iter().step_by(1024).filter(|b| **b != 0).count();
        heap.iter_mut().step_by(1024).for_each(|b| *b = 0x5a);
        std::hint::black_box(&heap);
        let stack_left = stack_leftovers();
        Evaluation {
            decision: Decision::hold(1.0).note(format!(
                "calls-before={calls} heap-leftovers={heap_left} stack-leftovers={stack_left}"
            )),
            next_state: Vec::new(),
        }
    }
}

export_policy!(Remember);
