//! Daily forecasts of one series with prediction intervals.
//!
//! The model is the `augurs` crates': MSTL with a weekly period
//! decomposes the history into trend, weekly seasonality and remainder,
//! and AutoETS (non-seasonal with a damped trend, chosen by AICc among the
//! error/trend combinations) forecasts the seasonally adjusted series; the
//! weekly pattern is added back. Damping and a slow seasonal smoother are
//! what the backtest in `benches/harness/insights.py` chose: budget changes
//! are steps that an undamped trend extrapolates. Shorter histories fall back to AutoETS alone,
//! then to the mean. Every value is a non-negative amount (spend, clicks,
//! orders), so forecasts and bounds are clamped at zero.

use augurs_core::{Fit, Predict};
use augurs_ets::AutoETS;
use augurs_mstl::MSTLModel;

/// Days of history from which the weekly model is used.
pub const WEEKLY_MIN_DAYS: usize = 28;

/// Days of history from which AutoETS alone is used.
pub const ETS_MIN_DAYS: usize = 10;

/// Days of MSTL's seasonal smoother: a weekly pattern that changes slowly,
/// so the last week's noise is not carried into every forecast week.
const SEASONAL_LENGTH: usize = 35;

/// The longest horizon, in days.
pub const MAX_HORIZON_DAYS: usize = 90;

/// Which model produced a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// MSTL (weekly) with an AutoETS trend.
    MstlEts,
    /// AutoETS, no seasonality.
    Ets,
    /// The mean of a short history, with a normal interval.
    Mean,
    /// A series with no non-zero value: zero.
    Zero,
}

impl Model {
    /// The name in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::MstlEts => "mstl_ets",
            Self::Ets => "ets",
            Self::Mean => "mean",
            Self::Zero => "zero",
        }
    }
}

/// A forecast of the `horizon` days after a history.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesForecast {
    /// Point forecast per day.
    pub point: Vec<f64>,
    /// Lower bound of the interval per day.
    pub lower: Vec<f64>,
    /// Upper bound of the interval per day.
    pub upper: Vec<f64>,
    /// The model used.
    pub model: Model,
}

/// Forecasts the `horizon` days after `history` (one value per day, the
/// last one the day before the first forecast day) with intervals at
/// `level` (0 < level < 1). Days before the series' first non-zero value
/// (before a campaign started) are not part of its history.
pub fn forecast(history: &[f64], horizon: usize, level: f64) -> SeriesForecast {
    let first = history.iter().position(|v| *v != 0.0);
    let Some(first) = first else {
        return SeriesForecast {
            point: vec![0.0; horizon],
            lower: vec![0.0; horizon],
            upper: vec![0.0; horizon],
            model: Model::Zero,
        };
    };
    let y = &history[first..];
    let fitted = if y.len() >= WEEKLY_MIN_DAYS {
        weekly(y, horizon, level)
            .map(|f| (f, Model::MstlEts))
            .or_else(|| ets(y, horizon, level).map(|f| (f, Model::Ets)))
    } else if y.len() >= ETS_MIN_DAYS {
        ets(y, horizon, level).map(|f| (f, Model::Ets))
    } else {
        None
    };
    let (forecast, model) = fitted.unwrap_or_else(|| (mean(y, horizon, level), Model::Mean));
    let clamp = |v: Vec<f64>| -> Vec<f64> {
        v.into_iter()
            .map(|x| if x.is_finite() { x.max(0.0) } else { 0.0 })
            .collect()
    };
    let (lower, upper) = match forecast.intervals {
        Some(i) => (i.lower, i.upper),
        None => (forecast.point.clone(), forecast.point.clone()),
    };
    SeriesForecast {
        point: clamp(forecast.point),
        lower: clamp(lower),
        upper: clamp(upper),
        model,
    }
}

fn usable(f: augurs_core::Forecast, horizon: usize) -> Option<augurs_core::Forecast> {
    let finite = |v: &[f64]| v.len() == horizon && v.iter().all(|x| x.is_finite());
    let intervals_ok = f
        .intervals
        .as_ref()
        .is_none_or(|i| finite(&i.lower) && finite(&i.upper));
    (finite(&f.point) && intervals_ok).then_some(f)
}

fn weekly(y: &[f64], horizon: usize, level: f64) -> Option<augurs_core::Forecast> {
    let trend = AutoETS::non_seasonal()
        .damped(true)
        .ok()?
        .into_trend_model();
    let mut stl = augurs_mstl::stlrs::params();
    stl.seasonal_length(SEASONAL_LENGTH);
    let mut mstl = augurs_mstl::stlrs::MstlParams::new();
    mstl.stl_params(stl);
    let fitted = MSTLModel::new(vec![7], trend)
        .mstl_params(mstl)
        .fit(y)
        .ok()?;
    usable(fitted.predict(horizon, level).ok()?, horizon)
}

fn ets(y: &[f64], horizon: usize, level: f64) -> Option<augurs_core::Forecast> {
    let fitted = AutoETS::non_seasonal().fit(y).ok()?;
    usable(fitted.predict(horizon, level).ok()?, horizon)
}

/// The mean of `y`, with the interval of a normal around it.
fn mean(y: &[f64], horizon: usize, level: f64) -> augurs_core::Forecast {
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sd = if y.len() > 1 {
        (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        mean.abs()
    };
    let z = normal_quantile(0.5 + level / 2.0);
    // The error of a new day and of the estimated mean.
    let half = z * sd * (1.0 + 1.0 / n).sqrt();
    augurs_core::Forecast {
        point: vec![mean; horizon],
        intervals: Some(augurs_core::ForecastIntervals {
            level,
            lower: vec![mean - half; horizon],
            upper: vec![mean + half; horizon],
        }),
    }
}

/// The standard normal quantile of `p`.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    distrs::Normal::ppf(p, 0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weekly pattern on a slow trend, with a little deterministic noise.
    fn weekly_series(days: usize) -> Vec<f64> {
        let week = [1.0, 1.1, 1.05, 1.0, 0.9, 0.6, 0.55];
        (0..days)
            .map(|d| {
                let noise = (((d * 7919) % 13) as f64 - 6.0) / 100.0;
                100.0 * (1.0 + d as f64 / 1000.0) * week[d % 7] * (1.0 + noise)
            })
            .collect()
    }

    #[test]
    fn weekly_model_follows_the_weekly_pattern() {
        let y = weekly_series(140);
        let f = forecast(&y, 14, 0.8);
        assert_eq!(f.model, Model::MstlEts);
        assert_eq!(f.point.len(), 14);
        // Day 140 is a Monday-like day (index 0 of the week), day 145 a
        // weekend day: the forecast keeps the pattern.
        assert!(f.point[0] > f.point[5] * 1.4, "{:?}", f.point);
        for d in 0..14 {
            assert!(f.lower[d] <= f.point[d] && f.point[d] <= f.upper[d]);
            let truth = weekly_series(154)[140 + d];
            assert!(
                (f.point[d] - truth).abs() / truth < 0.1,
                "day {d}: {} vs {truth}",
                f.point[d]
            );
        }
    }

    #[test]
    fn short_histories_fall_back_and_leading_zeros_are_not_history() {
        let mut y = vec![0.0; 200];
        y.extend([5.0, 7.0, 6.0]);
        let f = forecast(&y, 3, 0.8);
        assert_eq!(f.model, Model::Mean);
        assert!((f.point[0] - 6.0).abs() < 1e-9);
        assert!(f.lower[0] < 6.0 && f.upper[0] > 6.0);

        let f = forecast(&[0.0; 30], 2, 0.8);
        assert_eq!(f.model, Model::Zero);
        assert_eq!(f.point, vec![0.0, 0.0]);

        let f = forecast(&weekly_series(15), 2, 0.8);
        assert_eq!(f.model, Model::Ets);
    }

    #[test]
    fn bounds_are_never_negative() {
        let y: Vec<f64> = (0..60)
            .map(|d| if d % 2 == 0 { 0.0 } else { 3.0 })
            .collect();
        let f = forecast(&y, 30, 0.95);
        assert!(f.lower.iter().all(|v| *v >= 0.0));
        assert!(f.point.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile(0.9) - 1.281_551_6).abs() < 1e-5);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
    }
}
