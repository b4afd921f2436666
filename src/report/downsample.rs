//! Downsampling for drawing only: a series of any length becomes at most a fixed number of points
//! that keep every bucket's minimum and maximum, so a single slow step in a week of telemetry still
//! shows as a spike. Decisions and tables never see downsampled data.

/// A point of a series: x (step) and y (value).
pub type Point = (f64, f64);

/// Splits a series with gaps (`None`) into runs of consecutive present values.
pub fn segments(xs: &[f64], ys: &[Option<f64>]) -> Vec<Vec<Point>> {
    let mut out: Vec<Vec<Point>> = Vec::new();
    let mut cur: Vec<Point> = Vec::new();
    for (x, y) in xs.iter().zip(ys) {
        match y {
            Some(v) if v.is_finite() && x.is_finite() => cur.push((*x, *v)),
            _ => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Min/max-preserving bucketing of one run of points (sorted by x): when there are more than
/// `max_points`, they are cut into `max_points / 2` buckets of consecutive points and each bucket keeps
/// its minimum and its maximum, in x order. The first and last points are always kept.
pub fn minmax(points: &[Point], max_points: usize) -> Vec<Point> {
    let max_points = max_points.max(4);
    if points.len() <= max_points {
        return points.to_vec();
    }
    let buckets = (max_points - 2) / 2;
    let inner = &points[1..points.len() - 1];
    let mut out = Vec::with_capacity(max_points);
    out.push(points[0]);
    for b in 0..buckets {
        let lo = b * inner.len() / buckets;
        let hi = ((b + 1) * inner.len() / buckets)
            .max(lo + 1)
            .min(inner.len());
        if lo >= hi {
            continue;
        }
        let chunk = &inner[lo..hi];
        let (mut imin, mut imax) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[imin].1 {
                imin = i;
            }
            if p.1 > chunk[imax].1 {
                imax = i;
            }
        }
        let (a, b) = if imin <= imax {
            (imin, imax)
        } else {
            (imax, imin)
        };
        out.push(chunk[a]);
        if b != a {
            out.push(chunk[b]);
        }
    }
    out.push(points[points.len() - 1]);
    out
}

/// Downsamples a series with gaps: each run gets a share of `max_points` proportional to its length
/// (at least 2), so the whole series draws with about `max_points` points.
pub fn series(xs: &[f64], ys: &[Option<f64>], max_points: usize) -> Vec<Vec<Point>> {
    let runs = segments(xs, ys);
    let total: usize = runs.iter().map(Vec::len).sum();
    if total <= max_points {
        return runs;
    }
    runs.iter()
        .map(|r| {
            let budget = (max_points as u128 * r.len() as u128 / total as u128) as usize;
            minmax(r, budget.max(2))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_is_unchanged() {
        let p: Vec<Point> = (0..10).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(minmax(&p, 1500), p);
    }

    #[test]
    fn keeps_spikes_and_ends_within_budget() {
        let mut p: Vec<Point> = (0..100_000).map(|i| (i as f64, 100.0)).collect();
        p[54_321].1 = 25_000.0; // a near-hang
        p[77_777].1 = 1.0; // a dip
        let d = minmax(&p, 1500);
        assert!(d.len() <= 1500, "{}", d.len());
        assert!(d.contains(&(54_321.0, 25_000.0)));
        assert!(d.contains(&(77_777.0, 1.0)));
        assert_eq!(d.first(), p.first());
        assert_eq!(d.last(), p.last());
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "x order kept");
    }

    #[test]
    fn gaps_split_runs_and_budget_is_shared() {
        let xs: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let ys: Vec<Option<f64>> = (0..10_000)
            .map(|i| {
                if (4000..4010).contains(&i) {
                    None
                } else {
                    Some((i % 7) as f64)
                }
            })
            .collect();
        let s = series(&xs, &ys, 1000);
        assert_eq!(s.len(), 2);
        let n: usize = s.iter().map(Vec::len).sum();
        assert!(n <= 1000 && n > 900, "{n}");
        assert!(s[0].last().unwrap().0 < 4000.0 && s[1][0].0 >= 4010.0);
        let nan = series(
            &[0.0, 1.0, 2.0],
            &[Some(1.0), Some(f64::NAN), Some(2.0)],
            10,
        );
        assert_eq!(nan.len(), 2, "non-finite values are gaps");
    }
}
