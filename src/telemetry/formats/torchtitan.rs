//! torchtitan: `step: 10  loss:  7.8123  memory: 30.12GiB(31.7%)  tps: 5,123  tflops: 250.1
//! mfu: 25.3%`, usually wrapped in ANSI colour codes (stripped before this sees the line). It prints no
//! step time: records carry loss and tokens/s.

use super::text::{as_step, find, key, num_after};
use super::{Role, TextReader, TrainerLine};

pub fn parse(b: &[u8]) -> Option<TrainerLine> {
    let at = find(b, key!(b"step:"))?;
    let rest = &b[at..];
    if find(rest, key!(b"loss:")).is_none()
        || (find(rest, key!(b"tps:")).is_none() && find(rest, key!(b"memory:")).is_none())
    {
        return None;
    }
    let mut t = TrainerLine::new(TextReader::Torchtitan, Role::Iteration);
    t.step = Some(num_after(rest, key!(b"step:")).and_then(as_step)?);
    t.loss = num_after(rest, key!(b"loss:"));
    t.tokens_per_s = num_after(rest, key!(b"tps:"));
    Some(t)
}
