//! The private parsers, reachable for the fuzz targets in `fuzz/` (not a stable API). Each function
//! is a thin call into the module that owns the parser, so the targets test the real code.

use std::sync::Arc;

use super::record::{Sample, parse_json_object_general};
use super::record_fast::parse_flat_object;
use super::stats::SkipReason;

/// The fast path's answer and the general parser's answer for one JSON payload, or `None` when the
/// fast path declines it (then only the general parser is used, and there is nothing to compare).
pub fn fast_and_general(
    payload: &[u8],
) -> Option<(Result<Sample, SkipReason>, Result<Sample, SkipReason>)> {
    let intern = &mut |n: &str| Arc::from(n);
    let fast = parse_flat_object(payload)?.finish(intern);
    Some((
        fast,
        parse_json_object_general(payload).and_then(|b| b.finish(intern)),
    ))
}

/// The `…T…Z` fast timestamp reader (`None`: not that form, chrono decides).
pub fn utc_rfc3339_ms(b: &[u8]) -> Option<i64> {
    super::timestamp::utc_rfc3339_ms(b)
}

/// Whether `name` is a telemetry field name or alias (docs/telemetry.md).
pub fn is_field_name(name: &str) -> bool {
    super::field::Field::from_name(name).is_some()
}
