//! Counter-based randomness.
//!
//! Every synthetic value is a pure function of (seed, what, which row), not of
//! what was generated before it. That is what lets one platform's slice, the
//! GA4 sessions driven by its clicks and the orders driven by its conversions
//! be generated independently, in any order, and still agree.

/// A keyed point in the random space; derive sub-keys with [`Noise::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Noise(u64);

/// SplitMix64's finalizer: a bijective, well-mixing 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Noise {
    pub(crate) fn new(seed: u64) -> Self {
        Self(mix(seed ^ 0x00AD_1A4E))
    }

    /// The sub-key for `key` (an ad, a day, a tag...).
    #[must_use]
    pub(crate) fn at(self, key: u64) -> Self {
        Self(mix(self.0 ^ mix(key.wrapping_add(0x5151_5151))))
    }

    /// The `i`-th raw 64-bit value of this key.
    pub(crate) fn bits(self, i: u64) -> u64 {
        mix(self.0.wrapping_add(mix(i)))
    }

    /// The `i`-th value uniform in `[0, 1)`.
    pub(crate) fn unit(self, i: u64) -> f64 {
        (self.bits(i) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The `i`-th value uniform in `[lo, hi)`.
    pub(crate) fn range(self, i: u64, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit(i)
    }

    /// The `i`-th index uniform in `0..n` (`n > 0`).
    pub(crate) fn index(self, i: u64, n: usize) -> usize {
        // Multiply-shift instead of `%` avoids modulo bias for large n.
        ((u128::from(self.bits(i)) * n as u128) >> 64) as usize
    }

    /// The `i`-th standard normal value (Box–Muller).
    pub(crate) fn normal(self, i: u64) -> f64 {
        let u1 = 1.0 - self.unit(2 * i + 1_000_003); // (0, 1]
        let u2 = self.unit(2 * i + 1_000_004);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `exp(sigma · N(0,1))`: multiplicative noise with median 1.
    pub(crate) fn lognormal(self, i: u64, sigma: f64) -> f64 {
        (sigma * self.normal(i)).exp()
    }

    /// Rounds `x ≥ 0` up or down at random so the expectation is `x`:
    /// 0.3 expected conversions become 1 conversion 30% of the time.
    pub(crate) fn round(self, i: u64, x: f64) -> i64 {
        let floor = x.floor();
        let extra = i64::from(self.unit(i) < x - floor);
        floor as i64 + extra
    }

    /// Picks an index with probability proportional to `weights`.
    pub(crate) fn weighted(self, i: u64, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.unit(i) * total;
        for (idx, w) in weights.iter().enumerate() {
            if target < *w {
                return idx;
            }
            target -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_normal_look_right() {
        let n = Noise::new(7).at(3);
        let count = 20_000u64;
        let mean_u = (0..count).map(|i| n.unit(i)).sum::<f64>() / count as f64;
        assert!((mean_u - 0.5).abs() < 0.01, "{mean_u}");
        let normals: Vec<f64> = (0..count).map(|i| n.normal(i)).collect();
        let mean = normals.iter().sum::<f64>() / count as f64;
        let var = normals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / count as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        let idx = (0..count).map(|i| n.index(i, 10)).max().unwrap();
        assert_eq!(idx, 9);
    }

    #[test]
    fn keys_are_independent_and_stable() {
        let a = Noise::new(1);
        assert_eq!(a.at(5).bits(0), Noise::new(1).at(5).bits(0));
        assert_ne!(a.at(5).bits(0), a.at(6).bits(0));
        assert_ne!(a.bits(0), Noise::new(2).bits(0));
    }
}
