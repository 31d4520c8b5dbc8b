//! Budget advice: a diminishing-returns curve per campaign, and the split
//! of a total daily budget that equalises the marginal return.
//!
//! The curve is the one marketing-mix models use (Google's Meridian,
//! Meta's Robyn): spend carries over into later days through a geometric
//! adstock, and the adstocked spend saturates through a Hill function,
//!
//! ```text
//! a[t]     = (1 − θ)·x[t] + θ·a[t−1]
//! value[t] = β · a[t]^s / (a[t]^s + k^s)
//! ```
//!
//! The decay θ, the shape s and the half-saturation k are searched on a
//! grid; for each, the scale β is the least-squares one. At a constant
//! daily spend x the adstock settles at x, so a campaign's daily value is
//! `β·x^s/(x^s + k^s)`. The split of the budget moves money in small steps
//! to the campaign whose next step returns the most (water-filling: at the
//! end the marginal returns are as equal as the bounds allow).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Days with spend a curve needs.
pub const MIN_DAYS: usize = 28;

/// The smallest day-to-day variation of spend (coefficient of variation)
/// from which a curve can be told apart from a straight line.
pub const MIN_SPEND_VARIATION: f64 = 0.1;

/// The weakest fit still used for advice (share of the daily value's
/// variance the curve explains).
pub const MIN_R2: f64 = 0.2;

/// The default bound on a campaign's change, as a share of its spend.
pub const DEFAULT_MAX_CHANGE: f64 = 0.5;

const DECAYS: [f64; 6] = [0.0, 0.15, 0.3, 0.45, 0.6, 0.75];
const SHAPES: [f64; 8] = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0];
/// Half-saturation points, as multiples of the mean daily spend.
const HALVES: [f64; 11] = [0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 5.0, 8.0, 13.0];

/// A fitted response curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    /// Adstock decay θ (0: no carry-over).
    pub decay: f64,
    /// Hill shape s.
    pub shape: f64,
    /// Half-saturation k, in spend per day.
    pub half: f64,
    /// Scale β: the value per day at full saturation.
    pub scale: f64,
    /// Share of the daily value's variance explained.
    pub r2: f64,
}

impl Curve {
    fn hill(&self, a: f64) -> f64 {
        if a <= 0.0 {
            return 0.0;
        }
        let p = (a / self.half).powf(self.shape);
        p / (1.0 + p)
    }

    /// The daily value at a constant daily spend.
    pub fn value(&self, spend: f64) -> f64 {
        self.scale * self.hill(spend)
    }

    /// The value of one more unit of daily spend at `spend` (marginal
    /// ROAS when the value is revenue).
    pub fn marginal(&self, spend: f64) -> f64 {
        if spend <= 0.0 {
            // The slope at zero: infinite for s < 1, β/k for s = 1, 0 above.
            return match self.shape.partial_cmp(&1.0) {
                Some(Ordering::Less) => f64::INFINITY,
                Some(Ordering::Equal) => self.scale / self.half,
                _ => 0.0,
            };
        }
        let p = (spend / self.half).powf(self.shape);
        self.scale * self.shape * p / (spend * (1.0 + p).powi(2))
    }
}

/// Fits a curve to daily `spend` and `value` (the same days), or says why
/// the data cannot identify one.
pub fn fit(spend: &[f64], value: &[f64]) -> Result<Curve, String> {
    let days = spend.iter().filter(|x| **x > 0.0).count();
    if days < MIN_DAYS {
        return Err(format!(
            "only {days} days with spend; a response curve needs at least {MIN_DAYS}"
        ));
    }
    let positive: Vec<f64> = spend.iter().copied().filter(|x| *x > 0.0).collect();
    let mean = positive.iter().sum::<f64>() / positive.len() as f64;
    let sd = (positive.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
        / (positive.len() - 1) as f64)
        .sqrt();
    let variation = sd / mean;
    if variation < MIN_SPEND_VARIATION {
        return Err(format!(
            "daily spend varied by only {:.1}% (coefficient of variation); at least {:.0}% is needed to identify a response curve",
            variation * 100.0,
            MIN_SPEND_VARIATION * 100.0
        ));
    }
    let y_mean = value.iter().sum::<f64>() / value.len() as f64;
    let total: f64 = value.iter().map(|y| (y - y_mean).powi(2)).sum();
    if y_mean <= 0.0 || total <= 0.0 {
        return Err("no variation in the value: nothing to fit".into());
    }
    let mut best: Option<Curve> = None;
    let mut adstocked = vec![0.0; spend.len()];
    let mut h = vec![0.0; spend.len()];
    for decay in DECAYS {
        let mut a = spend[0];
        for (t, x) in spend.iter().enumerate() {
            a = (1.0 - decay) * x + decay * a;
            adstocked[t] = a;
        }
        for shape in SHAPES {
            for multiple in HALVES {
                let mut curve = Curve {
                    decay,
                    shape,
                    half: mean * multiple,
                    scale: 1.0,
                    r2: 0.0,
                };
                for (t, a) in adstocked.iter().enumerate() {
                    h[t] = curve.hill(*a);
                }
                let hh: f64 = h.iter().map(|v| v * v).sum();
                if hh <= 0.0 {
                    continue;
                }
                let hy: f64 = h.iter().zip(value).map(|(a, b)| a * b).sum();
                curve.scale = (hy / hh).max(0.0);
                let sse: f64 = h
                    .iter()
                    .zip(value)
                    .map(|(a, b)| (b - curve.scale * a).powi(2))
                    .sum();
                curve.r2 = 1.0 - sse / total;
                if best.is_none_or(|b| curve.r2 > b.r2) {
                    best = Some(curve);
                }
            }
        }
    }
    let best = best.ok_or("no curve could be fitted")?;
    if best.r2 < MIN_R2 {
        return Err(format!(
            "the best response curve explains only {:.0}% of the daily value (at least {:.0}% is needed)",
            best.r2.max(0.0) * 100.0,
            MIN_R2 * 100.0
        ));
    }
    Ok(best)
}

/// A recommended split of a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Daily spend per campaign, in the order given.
    pub spend: Vec<f64>,
    /// Why the split is not the unconstrained best, if it is not.
    pub note: Option<String>,
}

#[derive(Debug, PartialEq)]
struct Step {
    gain: f64,
    campaign: usize,
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.campaign.cmp(&self.campaign))
    }
}

/// Steps the budget to share is cut into.
const STEPS: usize = 4000;

/// Splits `total` daily spend across campaigns with `curves`, each kept
/// within `max_change` (a share) of its `current` spend.
pub fn allocate(curves: &[Curve], current: &[f64], total: f64, max_change: f64) -> Allocation {
    let lower: Vec<f64> = current.iter().map(|c| c * (1.0 - max_change)).collect();
    let upper: Vec<f64> = current.iter().map(|c| c * (1.0 + max_change)).collect();
    let floor: f64 = lower.iter().sum();
    let ceiling: f64 = upper.iter().sum();
    if total <= floor {
        return Allocation {
            spend: lower,
            note: Some(format!(
                "the budget {total:.2} is below what the bounds allow ({floor:.2}): every campaign is cut by the most allowed"
            )),
        };
    }
    if total >= ceiling {
        return Allocation {
            spend: upper,
            note: Some(format!(
                "the budget {total:.2} is above what the bounds allow ({ceiling:.2}): every campaign is raised by the most allowed"
            )),
        };
    }
    let step = (total - floor) / STEPS as f64;
    let mut spend = lower;
    let mut left = total - floor;
    let gain = |i: usize, x: f64| -> Option<Step> {
        let d = step.min(upper[i] - x);
        (d > step * 1e-9).then(|| Step {
            gain: (curves[i].value(x + d) - curves[i].value(x)) / d,
            campaign: i,
        })
    };
    let mut heap: BinaryHeap<Step> = (0..curves.len())
        .filter_map(|i| gain(i, spend[i]))
        .collect();
    while left > step * 1e-9 {
        let Some(Step { campaign: i, .. }) = heap.pop() else {
            break;
        };
        let d = step.min(upper[i] - spend[i]).min(left);
        spend[i] += d;
        left -= d;
        if let Some(next) = gain(i, spend[i]) {
            heap.push(next);
        }
    }
    Allocation { spend, note: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulate(curve: &Curve, days: usize, base: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut spend = Vec::with_capacity(days);
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut level = base;
        for d in 0..days {
            if d % 14 == 0 {
                level = base * (0.4 + 1.4 * next());
            }
            spend.push(level * (0.9 + 0.2 * next()));
        }
        let mut a = spend[0];
        let value = spend
            .iter()
            .map(|x| {
                a = (1.0 - curve.decay) * x + curve.decay * a;
                curve.scale * curve.hill(a) * (0.95 + 0.1 * next())
            })
            .collect();
        (spend, value)
    }

    #[test]
    fn recovers_a_curve_from_varied_spend() {
        let truth = Curve {
            decay: 0.3,
            shape: 1.0,
            half: 400.0,
            scale: 3000.0,
            r2: 1.0,
        };
        let (spend, value) = simulate(&truth, 180, 300.0, 7);
        let fitted = fit(&spend, &value).expect("fits");
        assert!(fitted.r2 > 0.9, "{fitted:?}");
        for x in [150.0, 300.0, 450.0] {
            let (a, b) = (fitted.value(x), truth.value(x));
            assert!((a - b).abs() / b < 0.1, "at {x}: {a} vs {b}");
        }
    }

    #[test]
    fn refuses_flat_or_short_spend_with_a_reason() {
        let spend = vec![100.0; 90];
        let value: Vec<f64> = (0..90).map(|d| 300.0 + (d % 5) as f64).collect();
        let why = fit(&spend, &value).unwrap_err();
        assert!(why.contains("varied by only 0.0%"), "{why}");
        let why = fit(&spend[..10], &value[..10]).unwrap_err();
        assert!(why.contains("only 10 days with spend"), "{why}");
    }

    #[test]
    fn moves_budget_to_the_higher_marginal_return_within_bounds() {
        let saturated = Curve {
            decay: 0.0,
            shape: 1.0,
            half: 50.0,
            scale: 1000.0,
            r2: 1.0,
        };
        let linear = Curve {
            decay: 0.0,
            shape: 1.0,
            half: 10_000.0,
            scale: 60_000.0,
            r2: 1.0,
        };
        let current = [200.0, 200.0];
        let a = allocate(&[saturated, linear], &current, 400.0, 0.5);
        assert!(a.note.is_none());
        assert!((a.spend.iter().sum::<f64>() - 400.0).abs() < 1e-6);
        // The saturated campaign goes to its floor, the other takes the rest.
        assert!((a.spend[0] - 100.0).abs() < 1e-6, "{:?}", a.spend);
        assert!((a.spend[1] - 300.0).abs() < 1e-6);

        // Equal curves: the marginal returns end equal.
        let a = allocate(&[saturated, saturated], &[150.0, 250.0], 400.0, 0.9);
        let (m0, m1) = (
            saturated.marginal(a.spend[0]),
            saturated.marginal(a.spend[1]),
        );
        assert!((m0 - m1).abs() / m0 < 0.02, "{:?} {m0} {m1}", a.spend);

        let a = allocate(&[saturated, linear], &current, 1000.0, 0.5);
        assert_eq!(a.spend, vec![300.0, 300.0]);
        assert!(a.note.unwrap().contains("above what the bounds allow"));
    }

    #[test]
    fn marginal_is_the_slope() {
        let c = Curve {
            decay: 0.2,
            shape: 1.7,
            half: 120.0,
            scale: 900.0,
            r2: 1.0,
        };
        for x in [10.0, 100.0, 400.0] {
            let numeric = (c.value(x + 1e-4) - c.value(x - 1e-4)) / 2e-4;
            assert!((numeric - c.marginal(x)).abs() / numeric < 1e-4);
        }
    }
}
