//! One percentile definition for the whole product (linear interpolation between closest ranks,
//! "type 7"), so p95 means the same thing in every report.

/// The `q` quantile (0..=1) of an ascending slice; `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    match sorted.len() {
        0 => None,
        1 => Some(sorted[0]),
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
        }
    }
}

/// Sorts in place (total order; inputs are finite) and returns the median.
pub fn median_in_place(v: &mut [f64]) -> Option<f64> {
    v.sort_unstable_by(f64::total_cmp);
    quantile_sorted(v, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&v, 0.5), Some(2.5));
        assert_eq!(quantile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&v, 1.0), Some(4.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        // One straggling worker of four must show in p95 (the reference's floor-index p95 hid it).
        assert!(quantile_sorted(&[1.0, 1.0, 1.0, 10.0], 0.95).unwrap() > 8.0);
    }
}
