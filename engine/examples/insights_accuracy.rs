//! Accuracy and speed of the insight models on series whose truth is
//! known: injected anomalies of known size and date, campaigns generated
//! from known response curves, and the time a forecast takes.
//!
//! ```sh
//! cargo run --release -p adlake-engine --example insights_accuracy
//! ```
//!
//! Prints a Markdown report (the figures in `benches/README.md`). The
//! forecast backtest on real-shaped data is `benches/harness/insights.py`.

use std::time::Instant;

use adlake_engine::insights::{anomaly, budget, forecast};

/// SplitMix64: a small deterministic generator, so every run sees the
/// same series.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

const WEEK: [f64; 7] = [1.0, 1.08, 1.05, 1.0, 0.95, 0.72, 0.68];

/// A daily series: level × weekly pattern × trend, with normal noise of
/// standard deviation `sigma` (absolute).
fn series(rng: &mut Rng, days: usize, level: f64, sigma: f64) -> Vec<f64> {
    let trend = rng.range(-0.2, 0.4);
    let phase = (rng.next() % 7) as usize;
    (0..days)
        .map(|d| {
            let base = level * WEEK[(d + phase) % 7] * (1.0 + trend * d as f64 / days as f64);
            (base + sigma * rng.normal()).max(0.0)
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn anomalies(rng: &mut Rng) {
    const SERIES: usize = 400;
    const DAYS: usize = 120;
    const EXAMINED: usize = 28;
    println!("## Anomalies\n");
    println!(
        "{SERIES} series of {DAYS} days (level 1000, weekly pattern, trend, normal noise σ = 5% of the level); in the last {EXAMINED} days of each, two one-day deviations of 3–8 σ, up or down. Detection examines those {EXAMINED} days with the {} days before as context.\n",
        DAYS - EXAMINED
    );
    println!(
        "| threshold | injected | flagged | precision | recall (all) | recall (> 3 σ) | recall (> 4 σ) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut cases = Vec::new();
    for _ in 0..SERIES {
        let level = 1000.0;
        let sigma = 0.05 * level;
        let mut y = series(rng, DAYS, level, sigma);
        let mut injected = Vec::new();
        while injected.len() < 2 {
            let day = DAYS - EXAMINED + (rng.next() as usize % EXAMINED);
            if injected.iter().any(|(d, _)| *d == day) {
                continue;
            }
            let size = rng.range(3.0, 8.0);
            let sign = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
            y[day] = (y[day] + sign * size * sigma).max(0.0);
            injected.push((day, size));
        }
        cases.push((y, injected));
    }
    for threshold in [2.5, anomaly::DEFAULT_THRESHOLD, 3.5, 4.0] {
        let (mut flagged, mut true_flags, mut injected_n) = (0usize, 0usize, 0usize);
        let mut found_over = [(0usize, 0usize); 2]; // (> 3σ, > 4σ): (found, total)
        for (y, injected) in &cases {
            let found = anomaly::detect(y, DAYS - EXAMINED, threshold);
            flagged += found.len();
            true_flags += found
                .iter()
                .filter(|a| injected.iter().any(|(d, _)| *d == a.index))
                .count();
            for (day, size) in injected {
                injected_n += 1;
                let hit = found.iter().any(|a| a.index == *day);
                for (k, bound) in [3.0, 4.0].iter().enumerate() {
                    if size > bound {
                        found_over[k].1 += 1;
                        found_over[k].0 += usize::from(hit);
                    }
                }
            }
        }
        let hits: usize = cases
            .iter()
            .map(|(y, injected)| {
                let found = anomaly::detect(y, DAYS - EXAMINED, threshold);
                injected
                    .iter()
                    .filter(|(d, _)| found.iter().any(|a| a.index == *d))
                    .count()
            })
            .sum();
        println!(
            "| {threshold} | {injected_n} | {flagged} | {:.3} | {:.3} | {:.3} | {:.3} |",
            true_flags as f64 / flagged.max(1) as f64,
            hits as f64 / injected_n as f64,
            found_over[0].0 as f64 / found_over[0].1.max(1) as f64,
            found_over[1].0 as f64 / found_over[1].1.max(1) as f64,
        );
    }
    println!();
}

/// The true curve of a campaign and its simulated history.
struct Campaign {
    truth: budget::Curve,
    spend: Vec<f64>,
    value: Vec<f64>,
}

fn campaign(rng: &mut Rng, days: usize) -> Campaign {
    let base = rng.range(50.0, 2000.0);
    let truth = budget::Curve {
        decay: rng.range(0.0, 0.6),
        shape: rng.range(0.7, 1.8),
        half: base * rng.range(0.5, 3.0),
        scale: 0.0,
        r2: 1.0,
    };
    // Scale: a ROAS of 1 to 5 at the usual spend.
    let roas = rng.range(1.0, 5.0);
    let unit = budget::Curve {
        scale: 1.0,
        ..truth
    };
    let truth = budget::Curve {
        scale: roas * base / unit.value(base),
        ..truth
    };
    let mut spend = Vec::with_capacity(days);
    while spend.len() < days {
        let length = 10 + (rng.next() % 26) as usize;
        let level = (0.4 * rng.normal()).exp().clamp(0.3, 2.5);
        for _ in 0..length.min(days - spend.len()) {
            let d = spend.len();
            spend.push(base * level * WEEK[d % 7] * (1.0 + 0.05 * rng.normal()));
        }
    }
    let mut a = spend[0];
    let value = spend
        .iter()
        .map(|x| {
            a = (1.0 - truth.decay) * x + truth.decay * a;
            let p = (a / truth.half).powf(truth.shape);
            truth.scale * p / (1.0 + p) * (0.15 * rng.normal()).exp()
        })
        .collect();
    Campaign {
        truth,
        spend,
        value,
    }
}

fn budgets(rng: &mut Rng) {
    const PORTFOLIOS: usize = 200;
    const CAMPAIGNS: usize = 8;
    const DAYS: usize = 180;
    println!("## Budget advice\n");
    println!(
        "{PORTFOLIOS} portfolios of {CAMPAIGNS} campaigns, each generated from a known Hill-adstock curve (decay 0–0.6, shape 0.7–1.8, half-saturation 0.5–3× the usual spend, ROAS 1–5 at it) over {DAYS} days of budget levels changing every 10–35 days, value with 15% log-normal noise. The budget is today's total (mean of the last 7 days), each campaign within ±50%. Uplift share: (true value of the advice − true value today) ÷ (true value of the best split under the true curves − true value today).\n"
    );
    let mut shares = Vec::new();
    let (mut refused, mut total) = (0usize, 0usize);
    let mut r2s = Vec::new();
    for _ in 0..PORTFOLIOS {
        let campaigns: Vec<Campaign> = (0..CAMPAIGNS).map(|_| campaign(rng, DAYS)).collect();
        let current: Vec<f64> = campaigns
            .iter()
            .map(|c| c.spend[DAYS - 7..].iter().sum::<f64>() / 7.0)
            .collect();
        let budget_total: f64 = current.iter().sum();
        let fits: Vec<Result<budget::Curve, String>> = campaigns
            .iter()
            .map(|c| budget::fit(&c.spend, &c.value))
            .collect();
        total += fits.len();
        refused += fits.iter().filter(|f| f.is_err()).count();
        r2s.extend(fits.iter().filter_map(|f| f.as_ref().ok().map(|c| c.r2)));
        // Ours: refused campaigns stay; the rest share what is left.
        let fixed: f64 = fits
            .iter()
            .zip(&current)
            .filter(|(f, _)| f.is_err())
            .map(|(_, c)| c)
            .sum();
        let (curves, cur): (Vec<budget::Curve>, Vec<f64>) = fits
            .iter()
            .zip(&current)
            .filter_map(|(f, c)| f.as_ref().ok().map(|f| (*f, *c)))
            .unzip();
        let advised = budget::allocate(&curves, &cur, budget_total - fixed, 0.5).spend;
        let mut ours = Vec::with_capacity(CAMPAIGNS);
        let mut next = advised.into_iter();
        for (f, c) in fits.iter().zip(&current) {
            ours.push(if f.is_ok() {
                next.next().unwrap_or(*c)
            } else {
                *c
            });
        }
        let truths: Vec<budget::Curve> = campaigns.iter().map(|c| c.truth).collect();
        let best = budget::allocate(&truths, &current, budget_total, 0.5).spend;
        let value = |x: &[f64]| -> f64 { truths.iter().zip(x).map(|(t, x)| t.value(*x)).sum() };
        let (now, got, top) = (value(&current), value(&ours), value(&best));
        if top - now > 1e-9 * now {
            shares.push((got - now) / (top - now));
        }
    }
    shares.sort_by(f64::total_cmp);
    r2s.sort_by(f64::total_cmp);
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    println!(
        "| portfolios | campaigns refused | median fit R² | uplift share: mean | median | p10 |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {refused} of {total} | {:.2} | {mean:.3} | {:.3} | {:.3} |\n",
        shares.len(),
        percentile(&r2s, 0.5),
        percentile(&shares, 0.5),
        percentile(&shares, 0.1),
    );
}

fn speed(rng: &mut Rng) {
    const SERIES: usize = 1000;
    const DAYS: usize = 365;
    println!("## Forecast speed\n");
    let data: Vec<Vec<f64>> = (0..SERIES)
        .map(|_| {
            let level = rng.range(10.0, 5000.0);
            series(rng, DAYS, level, 0.1 * level)
        })
        .collect();
    let started = Instant::now();
    let mut times: Vec<f64> = data
        .iter()
        .map(|y| {
            let t = Instant::now();
            let f = forecast::forecast(y, 28, 0.8);
            std::hint::black_box(f);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let total = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!("{SERIES} series of {DAYS} days, 28-day horizon, one thread:\n");
    println!("| p50 ms | p95 ms | p99 ms | total s |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {total:.2} |\n",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99)
    );
}

fn main() {
    // `insights_accuracy [anomalies|budget|speed]`: one part, or all.
    let only = std::env::args().nth(1);
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if runs("anomalies") {
        anomalies(&mut Rng(42));
    }
    if runs("budget") {
        budgets(&mut Rng(43));
    }
    if runs("speed") {
        speed(&mut Rng(44));
    }
}
