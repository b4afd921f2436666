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

/// The `q` quantile of `v` with the same definition as [`quantile_sorted`], by selection instead of
/// a full sort (linear time; `v` is reordered). Bit for bit the value `quantile_sorted` gives.
pub fn quantile_in_place(v: &mut [f64], q: f64) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        1 => Some(v[0]),
        _ => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let frac = pos - lo as f64;
            let (_, at, right) = v.select_nth_unstable_by(lo, f64::total_cmp);
            let lo_v = *at;
            let hi_v = right.iter().copied().min_by(f64::total_cmp).unwrap_or(lo_v);
            Some(lo_v + (hi_v - lo_v) * frac)
        }
    }
}

/// The median, by selection (`v` is reordered).
pub fn median_in_place(v: &mut [f64]) -> Option<f64> {
    quantile_in_place(v, 0.5)
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

    #[test]
    fn selection_gives_the_sorted_answer_bit_for_bit() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..80 {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 10_000) as f64 / 7.0
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            for q in [0.0, 0.25, 0.5, 0.95, 0.99, 1.0] {
                let mut w = v.clone();
                let a = quantile_in_place(&mut w, q).map(f64::to_bits);
                assert_eq!(
                    a,
                    quantile_sorted(&sorted, q).map(f64::to_bits),
                    "n={n} q={q}"
                );
            }
        }
    }
}
