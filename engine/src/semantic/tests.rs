//! Metric semantics over small hand-built Delta tables. Every expected
//! number is worked out by hand from the rows below.
//!
//! ad_performance (spend, impressions, clicks, conversions, conversion_value):
//!   acme   USD 2026-01-30 google_ads  10  1000  10  1  30
//!   acme   USD 2026-01-31 google_ads  20  1000  40  2  10
//!   acme   USD 2026-02-01 meta_ads     5     0   0  0   0
//!   acme   USD 2026-02-02 meta_ads    15  3000  30  0  60
//!   globex EUR 2026-01-31 google_ads 100 10000 100 10 500
//! orders: acme USD 2026-01-31 two orders of 40 and 60.
//! web_sessions: acme USD 2026-01-31 25 sessions.
//! fx_rates: 2026-01-31 EUR→USD 1.1.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use url::Url;

use super::*;
use crate::schema::{AD_PERFORMANCE, FX_RATES, ORDERS, TableDef, WEB_SESSIONS};
use crate::{CacheStatus, Engine, EngineOptions, Error, ResultCache, Scope};

fn day(s: &str) -> i32 {
    let d: NaiveDate = s.parse().unwrap();
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

pub(crate) fn text(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values.iter().copied()))
}

pub(crate) fn money(values: &[f64]) -> ArrayRef {
    Arc::new(
        Decimal128Array::from_iter_values(values.iter().map(|v| (v * 1e6).round() as i128))
            .with_precision_and_scale(18, 6)
            .unwrap(),
    )
}

pub(crate) fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values.iter().copied()))
}

pub(crate) fn floats(values: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values.iter().copied()))
}

pub(crate) fn dates(values: &[&str]) -> ArrayRef {
    Arc::new(Date32Array::from_iter_values(values.iter().map(|d| day(d))))
}

/// A batch of `def` with the given columns; other columns are NULL when
/// nullable, else a placeholder value.
pub(crate) fn batch(def: &TableDef, n: usize, given: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = def.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            if let Some((_, a)) = given.iter().find(|(name, _)| name == f.name()) {
                return Arc::clone(a);
            }
            if f.is_nullable() {
                return new_null_array(f.data_type(), n);
            }
            match f.data_type() {
                DataType::Utf8 => text(&vec!["x"; n]),
                DataType::Int64 => ints(&vec![0; n]),
                DataType::Float64 => floats(&vec![0.0; n]),
                DataType::Decimal128(_, _) => money(&vec![0.0; n]),
                DataType::Date32 => dates(&vec!["2026-01-01"; n]),
                DataType::Timestamp(_, _) => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(vec![0; n]).with_timezone("UTC"),
                ) as ArrayRef,
                other => panic!("no placeholder for {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

pub(crate) async fn write(warehouse: &std::path::Path, def: &TableDef, batch: RecordBatch) {
    let dir = warehouse.join(def.name);
    std::fs::create_dir_all(&dir).unwrap();
    let table = DeltaTable::try_from_url(Url::from_directory_path(dir).unwrap())
        .await
        .unwrap();
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(def.partition_columns.iter().map(|c| c.to_string()))
        .await
        .unwrap();
}

pub(super) type AdRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    i64,
    i64,
    f64,
    f64,
);

pub(super) fn ads(rows: &[AdRow]) -> RecordBatch {
    let col = |f: fn(&AdRow) -> &'static str| rows.iter().map(f).collect::<Vec<_>>();
    batch(
        &AD_PERFORMANCE,
        rows.len(),
        vec![
            ("client_id", text(&col(|r| r.0))),
            ("currency", text(&col(|r| r.1))),
            ("date", dates(&col(|r| r.2))),
            ("platform", text(&col(|r| r.3))),
            ("campaign_id", text(&col(|r| r.3))),
            (
                "spend",
                money(&rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            ),
            (
                "impressions",
                ints(&rows.iter().map(|r| r.5).collect::<Vec<_>>()),
            ),
            (
                "clicks",
                ints(&rows.iter().map(|r| r.6).collect::<Vec<_>>()),
            ),
            (
                "conversions",
                floats(&rows.iter().map(|r| r.7).collect::<Vec<_>>()),
            ),
            (
                "conversion_value",
                money(&rows.iter().map(|r| r.8).collect::<Vec<_>>()),
            ),
        ],
    )
}

const CONFIG: &str = r#"
[[client]]
id = "acme"
time_zone = "America/New_York"

[[metric]]
client = "acme"
name = "profit"
expression = "conversion_value - spend"
"#;

async fn fixture(cache_bytes: u64) -> (tempfile::TempDir, Engine) {
    fixture_at(cache_bytes, crate::clock::Clock::system()).await
}

async fn fixture_at(cache_bytes: u64, clock: crate::clock::Clock) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    write(
        w,
        &AD_PERFORMANCE,
        ads(&[
            (
                "acme",
                "USD",
                "2026-01-30",
                "google_ads",
                10.0,
                1000,
                10,
                1.0,
                30.0,
            ),
            (
                "acme",
                "USD",
                "2026-01-31",
                "google_ads",
                20.0,
                1000,
                40,
                2.0,
                10.0,
            ),
            ("acme", "USD", "2026-02-01", "meta_ads", 5.0, 0, 0, 0.0, 0.0),
            (
                "acme",
                "USD",
                "2026-02-02",
                "meta_ads",
                15.0,
                3000,
                30,
                0.0,
                60.0,
            ),
            (
                "globex",
                "EUR",
                "2026-01-31",
                "google_ads",
                100.0,
                10000,
                100,
                10.0,
                500.0,
            ),
        ]),
    )
    .await;
    write(
        w,
        &ORDERS,
        batch(
            &ORDERS,
            2,
            vec![
                ("client_id", text(&["acme", "acme"])),
                ("date", dates(&["2026-01-31", "2026-01-31"])),
                ("order_id", text(&["o1", "o2"])),
                ("currency", text(&["USD", "USD"])),
                ("total_price", money(&[40.0, 60.0])),
            ],
        ),
    )
    .await;
    write(
        w,
        &WEB_SESSIONS,
        batch(
            &WEB_SESSIONS,
            1,
            vec![
                ("client_id", text(&["acme"])),
                ("date", dates(&["2026-01-31"])),
                ("currency", text(&["USD"])),
                ("sessions", ints(&[25])),
            ],
        ),
    )
    .await;
    write(
        w,
        &FX_RATES,
        batch(
            &FX_RATES,
            1,
            vec![
                ("date", dates(&["2026-01-31"])),
                ("base", text(&["EUR"])),
                ("quote", text(&["USD"])),
                ("rate", floats(&[1.1])),
            ],
        ),
    )
    .await;
    let options = EngineOptions {
        cache_bytes,
        metrics_config: MetricsConfig::from_toml_str(CONFIG).unwrap(),
        clock,
        ..Default::default()
    };
    let engine = Engine::open_with(w.to_str().unwrap(), options)
        .await
        .unwrap();
    (dir, engine)
}

fn range(start: &str, end: &str) -> DateRange {
    DateRange::Absolute {
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

fn acme() -> Scope {
    Scope::clients(["acme"])
}

async fn ask(engine: &Engine, scope: &Scope, q: &MetricQuery) -> Arc<MetricResult> {
    engine
        .query_metrics(scope, q, true)
        .await
        .unwrap_or_else(|e| panic!("{q:?}: {e}"))
        .0
}

async fn ask_err(engine: &Engine, scope: &Scope, q: &MetricQuery) -> String {
    match engine.query_metrics(scope, q, true).await {
        Err(Error::InvalidSql(m)) => m,
        other => panic!("{q:?}: expected an invalid-argument error, got {other:?}"),
    }
}

/// The value of `column` in each row, as `Option<f64>`.
fn values(r: &MetricResult, column: &str) -> Vec<Option<f64>> {
    let i = r
        .column(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    r.rows.iter().map(|row| row[i].as_f64()).collect()
}

fn total(r: &MetricResult, column: &str) -> Option<f64> {
    r.totals[r.column(column).unwrap()].as_f64()
}

fn labels(r: &MetricResult, column: &str) -> Vec<String> {
    let i = r.column(column).unwrap();
    r.rows
        .iter()
        .map(|row| match &row[i] {
            Cell::Text(t) => t.clone(),
            Cell::Date(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn close(got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "got {got:?}, want {want:?}"),
            _ => assert_eq!(g, w, "got {got:?}, want {want:?}"),
        }
    }
}

#[tokio::test]
async fn ratios_are_ratios_of_sums_at_every_grain() {
    let (_dir, engine) = fixture(1 << 20).await;
    let all = [
        "spend",
        "impressions",
        "clicks",
        "ctr",
        "cpc",
        "cpm",
        "cpa",
        "roas",
        "cvr",
    ];
    let q = MetricQuery::new(all, range("2026-01-30", "2026-02-02"));
    let r = ask(&engine, &acme(), &q).await;
    assert_eq!(r.rows.len(), 1);
    // Totals: spend 50, impressions 5000, clicks 80, conversions 3, value 100.
    // The average of the daily CTRs would be (0.01 + 0.04 + 0.01) / 3 = 0.02.
    for (metric, want) in [
        ("spend", 50.0),
        ("impressions", 5000.0),
        ("clicks", 80.0),
        ("ctr", 0.016),
        ("cpc", 0.625),
        ("cpm", 10.0),
        ("cpa", 50.0 / 3.0),
        ("roas", 2.0),
        ("cvr", 0.0375),
    ] {
        close(&values(&r, metric), &[Some(want)]);
        close(&[total(&r, metric)], &[Some(want)]);
    }

    let by_day = ask(&engine, &acme(), &q.clone().with_dimensions(["date"])).await;
    assert_eq!(
        labels(&by_day, "date"),
        ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
    );
    // 2026-02-01 has no impressions: CTR and CPM are NULL, not 0 or inf.
    close(
        &values(&by_day, "ctr"),
        &[Some(0.01), Some(0.04), None, Some(0.01)],
    );
    close(
        &values(&by_day, "cpm"),
        &[Some(10.0), Some(20.0), None, Some(5.0)],
    );
    close(&[total(&by_day, "ctr")], &[Some(0.016)]);

    // ISO weeks start on Monday: Jan 26 (30, 31, Feb 1) and Feb 2.
    let by_week = ask(&engine, &acme(), &q.clone().with_dimensions(["week"])).await;
    assert_eq!(labels(&by_week, "week"), ["2026-01-26", "2026-02-02"]);
    close(&values(&by_week, "ctr"), &[Some(0.025), Some(0.01)]);
    close(&values(&by_week, "spend"), &[Some(35.0), Some(15.0)]);

    let by_month = ask(&engine, &acme(), &q.clone().with_dimensions(["month"])).await;
    assert_eq!(labels(&by_month, "month"), ["2026-01-01", "2026-02-01"]);
    close(&values(&by_month, "ctr"), &[Some(0.025), Some(0.01)]);

    let by_quarter = ask(&engine, &acme(), &q.clone().with_dimensions(["quarter"])).await;
    assert_eq!(labels(&by_quarter, "quarter"), ["2026-01-01"]);
    close(&values(&by_quarter, "ctr"), &[Some(0.016)]);

    let by_platform = ask(&engine, &acme(), &q.with_dimensions(["platform"])).await;
    assert_eq!(labels(&by_platform, "platform"), ["google_ads", "meta_ads"]);
    close(&values(&by_platform, "ctr"), &[Some(0.025), Some(0.01)]);
}

#[tokio::test]
async fn comparison_columns_prev_delta_pct() {
    let (_dir, engine) = fixture(1 << 20).await;
    // Feb 1–2 against the previous 2 days, Jan 30–31 (across a month end).
    let q = MetricQuery::new(["spend", "ctr"], range("2026-02-01", "2026-02-02"))
        .with_comparison(Comparison::PreviousPeriod);
    let r = ask(&engine, &acme(), &q).await;
    assert_eq!(
        r.comparison,
        Some(("2026-01-30".parse().unwrap(), "2026-01-31".parse().unwrap()))
    );
    close(&values(&r, "spend"), &[Some(20.0)]);
    close(&values(&r, "spend_prev"), &[Some(30.0)]);
    close(&values(&r, "spend_delta"), &[Some(-10.0)]);
    close(&values(&r, "spend_pct"), &[Some(-1.0 / 3.0)]);
    close(&values(&r, "ctr"), &[Some(0.01)]);
    close(&values(&r, "ctr_prev"), &[Some(0.025)]);
    close(&values(&r, "ctr_delta"), &[Some(-0.015)]);
    close(&values(&r, "ctr_pct"), &[Some(-0.6)]);

    // By day, the previous period's days line up with the current ones.
    let r = ask(&engine, &acme(), &q.clone().with_dimensions(["date"])).await;
    assert_eq!(labels(&r, "date"), ["2026-02-01", "2026-02-02"]);
    close(&values(&r, "spend_prev"), &[Some(10.0), Some(20.0)]);
    close(&values(&r, "spend_pct"), &[Some(-0.5), Some(-0.25)]);
    close(&values(&r, "ctr_prev"), &[Some(0.01), Some(0.04)]);
    close(&values(&r, "ctr"), &[None, Some(0.01)]);
    close(&values(&r, "ctr_delta"), &[None, Some(-0.03)]);

    // A year earlier there is nothing: prev 0, pct NULL (0 denominator).
    let mut last_year = q;
    last_year.comparison = Some(Comparison::SamePeriodLastYear);
    let r = ask(&engine, &acme(), &last_year).await;
    assert_eq!(
        r.comparison,
        Some(("2025-02-01".parse().unwrap(), "2025-02-02".parse().unwrap()))
    );
    close(&values(&r, "spend_prev"), &[Some(0.0)]);
    close(&values(&r, "spend_pct"), &[None]);
}

#[tokio::test]
async fn currencies_are_never_mixed_silently() {
    let (_dir, engine) = fixture(1 << 20).await;
    let q = MetricQuery::new(["spend"], range("2026-01-30", "2026-02-02"));
    let err = ask_err(&engine, &Scope::AllClients, &q).await;
    assert!(
        err.contains("EUR, USD") && err.contains("reporting currency"),
        "{err}"
    );

    // Counts are not money: no error.
    let clicks = MetricQuery::new(["clicks"], range("2026-01-30", "2026-02-02"));
    close(
        &values(&*ask(&engine, &Scope::AllClients, &clicks).await, "clicks"),
        &[Some(180.0)],
    );

    let by_currency = ask(
        &engine,
        &Scope::AllClients,
        &q.clone().with_dimensions(["currency"]),
    )
    .await;
    assert_eq!(labels(&by_currency, "currency"), ["EUR", "USD"]);
    close(&values(&by_currency, "spend"), &[Some(100.0), Some(50.0)]);

    // 100 EUR at 1.1 on 2026-01-31 + 50 USD.
    let usd = ask(
        &engine,
        &Scope::AllClients,
        &q.clone().with_reporting_currency("USD"),
    )
    .await;
    close(&values(&usd, "spend"), &[Some(160.0)]);

    let err = ask_err(
        &engine,
        &Scope::AllClients,
        &q.with_reporting_currency("GBP"),
    )
    .await;
    // The error names each currency and the dates it lacks a rate on.
    assert!(
        err.contains("no rate for EUR to GBP on 2026-01-31; USD to GBP on 4 dates from 2026-01-30 to 2026-02-02"),
        "{err}"
    );
}

#[tokio::test]
async fn filters_blends_custom_metrics_and_spine() {
    let (_dir, engine) = fixture(1 << 20).await;
    let r = range("2026-01-30", "2026-02-02");
    let meta = || Filter::Condition {
        dimension: "platform".into(),
        op: FilterOp::Equals,
        values: vec!["meta_ads".into()],
    };
    let q = MetricQuery::new(["spend"], r.clone());
    close(
        &values(
            &*ask(&engine, &acme(), &q.clone().with_filter(meta())).await,
            "spend",
        ),
        &[Some(20.0)],
    );
    let not_meta = Filter::Not(Box::new(meta()));
    close(
        &values(
            &*ask(&engine, &acme(), &q.clone().with_filter(not_meta)).await,
            "spend",
        ),
        &[Some(30.0)],
    );
    let either = Filter::Or(vec![
        meta(),
        Filter::Condition {
            dimension: "campaign_id".into(),
            op: FilterOp::In,
            values: vec!["google_ads".into(), "nope".into()],
        },
    ]);
    close(
        &values(
            &*ask(&engine, &acme(), &q.clone().with_filter(either)).await,
            "spend",
        ),
        &[Some(50.0)],
    );

    // Blended: Shopify revenue 100 / ad spend 50; spend 50 / 25 sessions.
    let blended = MetricQuery::new(["mer", "cost_per_session", "orders"], r.clone());
    let b = ask(&engine, &acme(), &blended).await;
    close(&values(&b, "mer"), &[Some(2.0)]);
    close(&values(&b, "cost_per_session"), &[Some(2.0)]);
    close(&values(&b, "orders"), &[Some(2.0)]);
    // By day: revenue only lands on Jan 31 (100 / 20).
    let b = ask(&engine, &acme(), &blended.with_dimensions(["date"])).await;
    close(
        &values(&b, "mer"),
        &[Some(0.0), Some(5.0), Some(0.0), Some(0.0)],
    );

    // Custom metric of acme: conversion_value - spend = 100 - 50.
    let profit = MetricQuery::new(["profit"], r.clone());
    close(
        &values(&*ask(&engine, &acme(), &profit).await, "profit"),
        &[Some(50.0)],
    );
    let err = ask_err(&engine, &Scope::clients(["globex"]), &profit).await;
    assert!(
        err.contains("unknown metric 'profit'") && err.contains("ctr"),
        "{err}"
    );

    // Zero-filled spine: Jan 29 has no rows.
    let spine = MetricQuery::new(["spend", "ctr"], range("2026-01-29", "2026-02-02"))
        .with_dimensions(["date"])
        .with_zero_fill();
    let s = ask(&engine, &acme(), &spine).await;
    assert_eq!(labels(&s, "date")[0], "2026-01-29");
    close(
        &values(&s, "spend"),
        &[Some(0.0), Some(10.0), Some(20.0), Some(5.0), Some(15.0)],
    );
    close(&values(&s, "ctr")[..1], &[None]);

    // Order and limit.
    let top = MetricQuery::new(["spend"], r)
        .with_dimensions(["date"])
        .with_order_by("spend", true)
        .with_limit(2);
    let t = ask(&engine, &acme(), &top).await;
    assert_eq!(labels(&t, "date"), ["2026-01-31", "2026-02-02"]);
}

#[tokio::test]
async fn bad_questions_name_the_problem_and_the_choices() {
    let (_dir, engine) = fixture(1 << 20).await;
    let r = range("2026-01-30", "2026-02-02");
    let err = ask_err(&engine, &acme(), &MetricQuery::new(["ctrr"], r.clone())).await;
    assert!(err.contains("'ctrr'") && err.contains("ctr, cpc"), "{err}");
    let err = ask_err(
        &engine,
        &acme(),
        &MetricQuery::new(["spend"], r.clone()).with_dimensions(["colour"]),
    )
    .await;
    assert!(
        err.contains("'colour'") && err.contains("platform"),
        "{err}"
    );
    // GA4 sessions have no platform.
    let err = ask_err(
        &engine,
        &acme(),
        &MetricQuery::new(["sessions"], r.clone()).with_dimensions(["platform"]),
    )
    .await;
    assert!(
        err.contains("'platform'") && err.contains("web_sessions"),
        "{err}"
    );
    let err = ask_err(
        &engine,
        &acme(),
        &MetricQuery::new(["spend"], range("2026-02-02", "2026-01-30")),
    )
    .await;
    assert!(err.contains("inverted"), "{err}");
    let err = ask_err(
        &engine,
        &acme(),
        &MetricQuery::new(["spend"], r.clone()).with_filter(Filter::And(vec![])),
    )
    .await;
    assert!(err.contains("malformed filter"), "{err}");
    let err = ask_err(
        &engine,
        &acme(),
        &MetricQuery::new(["spend"], DateRange::Relative("someday".into())),
    )
    .await;
    assert!(
        err.contains("someday") && err.contains("last_7_days"),
        "{err}"
    );

    for (config, want) in [
        (
            "[[metric]]\nclient = \"a\"\nname = \"x\"\nexpression = \"spend /\"\n",
            "does not parse",
        ),
        (
            "[[metric]]\nclient = \"a\"\nname = \"x\"\nexpression = \"spend / visits\"\n",
            "unknown measure 'visits'",
        ),
        (
            "[[metric]]\nclient = \"a\"\nname = \"ctr\"\nexpression = \"clicks\"\n",
            "built-in",
        ),
        (
            "[[client]]\nid = \"a\"\ntime_zone = \"Mars/Olympus\"\n",
            "unknown time zone",
        ),
    ] {
        let err = MetricsConfig::from_toml_str(config).unwrap_err();
        assert!(err.contains(want), "{config}: {err}");
    }
}

#[tokio::test]
async fn cache_is_per_scope_and_version_exact() {
    let (dir, engine) = fixture(1 << 20).await;
    let q = MetricQuery::new(["clicks"], range("2026-01-30", "2026-02-02"));
    let globex = Scope::clients(["globex"]);
    let (a1, s1) = engine.query_metrics(&acme(), &q, false).await.unwrap();
    let (a2, s2) = engine.query_metrics(&acme(), &q, false).await.unwrap();
    assert_eq!((s1, s2), (CacheStatus::Miss, CacheStatus::Hit));
    assert_eq!(a1, a2);
    close(&values(&a2, "clicks"), &[Some(80.0)]);
    // The same question from another client is its own entry.
    let (g, sg) = engine.query_metrics(&globex, &q, false).await.unwrap();
    assert_eq!(sg, CacheStatus::Miss);
    close(&values(&g, "clicks"), &[Some(100.0)]);
    let (_, sg) = engine.query_metrics(&globex, &q, false).await.unwrap();
    assert_eq!(sg, CacheStatus::Hit);

    // A bypass neither reads nor writes the cache.
    let before = engine.cache().stats();
    let (_, sb) = engine.query_metrics(&acme(), &q, true).await.unwrap();
    assert_eq!(sb, CacheStatus::Bypass);
    let after = engine.cache().stats();
    assert_eq!((before.hits, before.misses), (after.hits, after.misses));

    // A new Delta version misses and gives the new numbers.
    let v0 = a1.table_versions["ad_performance"];
    write(
        dir.path(),
        &AD_PERFORMANCE,
        ads(&[(
            "acme",
            "USD",
            "2026-02-02",
            "meta_ads",
            1.0,
            100,
            7,
            0.0,
            0.0,
        )]),
    )
    .await;
    engine.refresh().await.unwrap();
    let (a3, s3) = engine.query_metrics(&acme(), &q, false).await.unwrap();
    assert_eq!(s3, CacheStatus::Miss);
    close(&values(&a3, "clicks"), &[Some(87.0)]);
    assert_eq!(a3.table_versions["ad_performance"], v0.map(|v| v + 1));
}

#[tokio::test]
async fn sql_statements_share_the_cache() {
    let (_dir, engine) = fixture(1 << 20).await;
    let sql = "SELECT sum(clicks) AS c FROM ad_performance";
    let run = |scope: Scope| {
        let engine = &engine;
        async move {
            let query = engine.plan(&scope, sql).await.unwrap();
            let (stream, status) = engine
                .execute_cached(&scope, sql, query, false)
                .await
                .unwrap();
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(stream).await.unwrap();
            let c = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                batches[0].column(0),
            )
            .value(0);
            (c, status)
        }
    };
    assert_eq!(run(acme()).await, (80, CacheStatus::Miss));
    assert_eq!(run(acme()).await, (80, CacheStatus::Hit));
    assert_eq!(
        run(Scope::clients(["globex"])).await,
        (100, CacheStatus::Miss)
    );
    assert_eq!(
        run(Scope::clients(["globex"])).await,
        (100, CacheStatus::Hit)
    );
}

#[tokio::test]
async fn sql_cache_is_version_exact_and_bypass_leaves_it_alone() {
    let (dir, engine) = fixture(1 << 20).await;
    let sql = "SELECT sum(clicks) AS c FROM ad_performance";
    let run = |bypass: bool| {
        let engine = &engine;
        async move {
            let query = engine.plan(&acme(), sql).await.unwrap();
            let (stream, status) = engine
                .execute_cached(&acme(), sql, query, bypass)
                .await
                .unwrap();
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(stream).await.unwrap();
            let c = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                batches[0].column(0),
            )
            .value(0);
            (c, status)
        }
    };
    assert_eq!(run(false).await, (80, CacheStatus::Miss));
    engine.cache().settle().await;
    let stored = engine.cache().stats();
    assert_eq!(stored.entries, 1);
    assert_eq!(run(false).await, (80, CacheStatus::Hit));

    // A bypass neither reads (no hit, no miss counted) nor writes.
    let before = engine.cache().stats();
    assert_eq!(run(true).await, (80, CacheStatus::Bypass));
    engine.cache().settle().await;
    let after = engine.cache().stats();
    assert_eq!(
        (after.hits, after.misses, after.entries),
        (before.hits, before.misses, stored.entries)
    );

    // A new ingest: the next query reads the new version, a miss by key.
    write(
        dir.path(),
        &AD_PERFORMANCE,
        ads(&[(
            "acme",
            "USD",
            "2026-02-02",
            "meta_ads",
            1.0,
            100,
            7,
            0.0,
            0.0,
        )]),
    )
    .await;
    engine.refresh().await.unwrap();
    assert_eq!(run(false).await, (87, CacheStatus::Miss));
    assert_eq!(run(false).await, (87, CacheStatus::Hit));
}

#[test]
fn sliced_batches_are_compacted_before_caching() {
    let big = RecordBatch::try_from_iter([("v", ints(&(0..100_000).collect::<Vec<_>>()))]).unwrap();
    let slice = big.slice(10, 5);
    // The slice still holds the whole buffer.
    assert!(slice.get_array_memory_size() >= 800_000);
    let own = crate::cache::compact(&slice);
    assert!(
        own.get_array_memory_size() < 4_096,
        "{}",
        own.get_array_memory_size()
    );
    assert_eq!(own, slice);
}

#[tokio::test]
async fn byte_bound_evicts() {
    use crate::cache::{CacheKey, Cached};
    let cache = ResultCache::new(64 * 1024);
    let big = RecordBatch::try_from_iter([("v", ints(&vec![7; 2000]))]).unwrap();
    let one = crate::cache::batches_bytes(std::slice::from_ref(&big)) as u64;
    assert!(one > 8 * 1024 && one < 32 * 1024, "{one}");
    for i in 0..10 {
        let key = CacheKey {
            scope: Scope::clients([format!("c{i}")]),
            kind: "sql",
            question: "q".into(),
            versions: Default::default(),
        };
        cache
            .insert(
                key,
                Cached::Batches(big.schema(), Arc::new(vec![big.clone()])),
            )
            .await;
        cache.settle().await;
    }
    let stats = cache.stats();
    assert!(stats.bytes <= 64 * 1024, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.entries < 10, "{stats:?}");
}

#[tokio::test]
async fn time_relative_statements_are_answered_for_the_instant_they_are_asked() {
    // Noon in New York (acme's zone) on 1 February, then on 3 February: the
    // same statements must give each day's yesterday, never the answer
    // cached the day before. acme's clicks: 40 on 31 January, 30 on
    // 2 February (the fixture).
    let clock = crate::clock::Clock::fixed("2026-02-01T17:00:00Z".parse().unwrap());
    let (_dir, engine) = fixture_at(1 << 20, clock.clone()).await;
    let statements = [
        "SELECT sum(clicks) AS c FROM ad_performance WHERE date = current_date - INTERVAL '1 day'",
        "SELECT CAST(sum(clicks) AS BIGINT) AS c FROM ad_performance \
         WHERE CAST(date AS TIMESTAMP) >= date_trunc('day', now()) - INTERVAL '1 day' \
         AND CAST(date AS TIMESTAMP) < date_trunc('day', now())",
        "SELECT CAST(clicks AS BIGINT) AS c FROM metric_query('clicks', '', 'yesterday')",
    ];
    let run = |sql: &'static str| {
        let engine = &engine;
        async move {
            let crate::SqlAnswer {
                batches: stream,
                cache: status,
                ..
            } = engine.execute_sql(&acme(), sql, false).await.unwrap();
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(stream).await.unwrap();
            let c = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                batches[0].column(0),
            )
            .value(0);
            (c, status)
        }
    };
    for sql in statements {
        for _ in 0..2 {
            assert_eq!(run(sql).await, (40, CacheStatus::Bypass), "{sql}");
        }
    }
    clock.set("2026-02-03T17:00:00Z".parse().unwrap());
    for sql in statements {
        assert_eq!(run(sql).await, (30, CacheStatus::Bypass), "{sql}");
    }
    // A statement that does not depend on the time is still cached.
    let fixed = "SELECT sum(clicks) AS c FROM ad_performance WHERE date = DATE '2026-02-02'";
    assert_eq!(run(fixed).await, (30, CacheStatus::Miss));
    assert_eq!(run(fixed).await, (30, CacheStatus::Hit));
}
