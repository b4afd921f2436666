//! A robust, slowly adapting baseline: an exponentially weighted level and scale whose updates are
//! clamped (Huber style), so a short incident barely moves it and a lasting change is absorbed only
//! gradually.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RobustBaseline {
    level: f64,
    scale: f64,
    /// Minimum scale, relative to |level| (noise floor).
    rel_floor: f64,
    abs_floor: f64,
    n: u32,
}

/// A residual beyond this many scales is "anomalous": it updates the baseline only clamped and slowly.
const CLAMP_Z: f64 = 3.0;
const ALPHA_NORMAL: f64 = 0.1;
const ALPHA_ANOMALOUS: f64 = 0.02;

impl RobustBaseline {
    pub fn new(first: f64, rel_floor: f64, abs_floor: f64) -> Self {
        let mut b = RobustBaseline {
            level: first,
            scale: 0.0,
            rel_floor,
            abs_floor,
            n: 1,
        };
        b.scale = b.floor();
        b
    }

    fn floor(&self) -> f64 {
        (self.level.abs() * self.rel_floor).max(self.abs_floor)
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    /// Never negative or NaN (whatever a checkpoint held): `update` clamps with it.
    pub fn scale(&self) -> f64 {
        self.scale.max(self.floor()).max(0.0)
    }

    /// Robust z-score of `x` against the current baseline.
    pub fn z(&self, x: f64) -> f64 {
        (x - self.level) / self.scale()
    }

    /// Absorbs one observation.
    pub fn update(&mut self, x: f64) {
        let s = self.scale();
        let r = x - self.level;
        // The first few observations seed the level quickly; after that it adapts slowly.
        let warm = self.n < 4;
        let (alpha, r_used) = if r.abs() <= CLAMP_Z * s || warm {
            (if warm { 0.5 } else { ALPHA_NORMAL }, r)
        } else {
            (ALPHA_ANOMALOUS, r.clamp(-CLAMP_Z * s, CLAMP_Z * s))
        };
        self.level += alpha * r_used;
        let dev = r_used.abs().min(CLAMP_Z * s);
        self.scale = (1.0 - alpha) * self.scale + alpha * dev;
        self.n = self.n.saturating_add(1);
    }
}

/// One-sided upper CUSUM with geometric decay on in-control windows, so the score rises quickly on a
/// sustained upward shift and falls back within a few windows once the shift is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpperCusum {
    s: f64,
}

/// Allowance: shifts smaller than this many scales are ignored.
pub const CUSUM_K: f64 = 0.5;
const CUSUM_CAP: f64 = 100.0;
const CUSUM_DECAY: f64 = 0.5;

impl UpperCusum {
    pub fn update(&mut self, z: f64) -> f64 {
        self.s = if z >= CUSUM_K {
            (self.s + z - CUSUM_K).min(CUSUM_CAP)
        } else {
            self.s * CUSUM_DECAY
        };
        self.s
    }

    pub fn value(&self) -> f64 {
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_spike_barely_moves_level() {
        let mut b = RobustBaseline::new(100.0, 0.02, 0.0);
        for _ in 0..10 {
            b.update(100.0);
        }
        b.update(1000.0);
        assert!(b.level() < 101.0, "{}", b.level());
    }

    /// A baseline restored from a corrupt watch checkpoint (negative floors and scale) made
    /// `update` call `f64::clamp` with min > max, which panics. Found with the watch_state target.
    #[test]
    fn a_corrupt_checkpointed_baseline_does_not_panic() {
        let bytes = postcard::to_allocvec(&(1.0f64, -1.0f64, -1.0f64, -1.0f64, 10u32)).unwrap();
        let mut b: RobustBaseline = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(b.scale(), 0.0);
        b.update(100.0);
        assert!(b.level().is_finite());
        let mut nan: RobustBaseline = postcard::from_bytes(
            &postcard::to_allocvec(&(f64::NAN, f64::NAN, 0.0f64, f64::NAN, 9u32)).unwrap(),
        )
        .unwrap();
        nan.update(1.0);
    }

    #[test]
    fn cusum_rises_and_decays() {
        let mut c = UpperCusum::default();
        for _ in 0..5 {
            c.update(3.0);
        }
        assert!((c.value() - 12.5).abs() < 1e-9);
        for _ in 0..6 {
            c.update(0.0);
        }
        assert!(c.value() < 0.25);
    }
}
