//! Micro-benchmarks of the hot paths: platform payload parsing, metric
//! planning (a metric query over a tiny warehouse, bypassing the cache),
//! the result-cache lookup that answers a repeated dashboard query, and
//! for a SQL statement: planning, describing it again from the memo, and
//! answering it again from the cache.
//!
//! ```sh
//! cargo bench -p adlake-ingest --bench hot_paths
//! ```
//!
//! `harness = false`: CI only type-checks this file (clippy
//! `--all-targets`); `cargo nextest run` does not build it.

use std::hint::black_box;

use adlake_engine::Engine;
use adlake_engine::scope::Scope;
use adlake_engine::semantic::{Comparison, DateRange, MetricQuery};
use adlake_ingest::connectors::{
    DEFAULT_CANONICAL_ACTION, ParseContext, SourceKind, parse_payload,
};
use adlake_ingest::{DemoOptions, Progress, run_demo};
use chrono::{NaiveDate, TimeZone as _, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A Google Ads SearchStream body of `rows` ad-day rows in one batch.
fn google_ads_payload(rows: usize) -> Vec<u8> {
    let results: Vec<serde_json::Value> = (0..rows)
        .map(|i| {
            serde_json::json!({
                "customer": {"id": "1234567890", "descriptiveName": "Northwind", "currencyCode": "EUR"},
                "campaign": {"id": format!("{}", 1000 + i % 20), "name": format!("Campaign {}", i % 20)},
                "adGroup": {"id": format!("{}", 5000 + i % 80), "name": format!("Group {}", i % 80)},
                "adGroupAd": {"ad": {"id": format!("{}", 90000 + i % 400), "name": format!("Ad {}", i % 400)}},
                "metrics": {
                    "costMicros": format!("{}", 1_250_000 + i * 37),
                    "impressions": format!("{}", 1000 + i % 977),
                    "clicks": format!("{}", 10 + i % 53),
                    "conversions": (i % 7) as f64 * 0.5,
                    "conversionsValue": (i % 11) as f64 * 12.25
                },
                "segments": {"date": format!("2026-10-{:02}", 1 + i % 30)}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!([{"results": results, "requestId": "bench"}]))
        .expect("a JSON value serializes")
}

fn payload_parsing(c: &mut Criterion) {
    let ctx = ParseContext {
        account_id: "123-456-7890".to_owned(),
        currency: None,
        canonical_action: DEFAULT_CANONICAL_ACTION.to_owned(),
        customer_hash_key: b"bench".to_vec(),
        time_zone: None,
    };
    let rows = 1_000;
    let body = google_ads_payload(rows);
    let parsed = parse_payload(SourceKind::GoogleAds, &body, &ctx).expect("the payload parses");
    assert_eq!(
        parsed.records.len(),
        rows,
        "rejects: {:?}",
        parsed.rejects.first()
    );
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("google_ads_1000_rows", |b| {
        b.iter(|| parse_payload(SourceKind::GoogleAds, black_box(&body), &ctx))
    });
    group.finish();
}

fn metrics(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let end = NaiveDate::from_ymd_opt(2026, 10, 31).expect("a valid date");
    let opts = DemoOptions {
        warehouse: dir.path().to_str().expect("a UTF-8 path").to_owned(),
        clients: 2,
        days: 60,
        rows: 5_000,
        seed: 7,
        end_date: end,
        commit_per_source: false,
        incidents: false,
    };
    let summary = rt
        .block_on(run_demo(&opts, Progress::Hidden))
        .expect("the demo writes");
    let engine = rt
        .block_on(Engine::open(&opts.warehouse))
        .expect("the engine opens");
    let scope = Scope::clients([summary.clients[0].clone()]);
    let start = end - chrono::Days::new(29);
    let query = MetricQuery::new(
        ["spend", "clicks", "ctr", "cpc", "roas"],
        DateRange::Absolute { start, end },
    )
    .with_dimensions(["platform"])
    .with_comparison(Comparison::PreviousPeriod);
    let now = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("a valid time");

    let mut group = c.benchmark_group("metrics");
    group.bench_function("plan_and_run_uncached", |b| {
        b.iter(|| {
            rt.block_on(engine.query_metrics_at(&scope, black_box(&query), true, now))
                .expect("the query runs")
        })
    });
    // Fills the cache, then every call is a hit: key building and lookup.
    rt.block_on(engine.query_metrics_at(&scope, &query, false, now))
        .expect("the query runs");
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            rt.block_on(engine.query_metrics_at(&scope, black_box(&query), false, now))
                .expect("the query runs")
        })
    });
    group.finish();

    // A dashboard statement over Flight SQL: planning it, describing it
    // again (the memo), and answering it again from the cache.
    let sql = "SELECT platform, sum(spend) AS spend, sum(clicks) AS clicks \
               FROM ad_performance WHERE date > DATE '2026-10-01' \
               GROUP BY platform ORDER BY platform";
    let collect = |stream: datafusion::execution::SendableRecordBatchStream| async move {
        futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .expect("the statement runs")
    };
    let mut group = c.benchmark_group("sql");
    group.bench_function("plan", |b| {
        b.iter(|| {
            rt.block_on(engine.plan(&scope, black_box(sql)))
                .expect("plans")
        })
    });
    group.bench_function("describe_memo", |b| {
        b.iter(|| {
            rt.block_on(engine.describe(&scope, black_box(sql)))
                .expect("describes")
        })
    });
    rt.block_on(async {
        let answer = engine.execute_sql(&scope, sql, false).await.expect("runs");
        collect(answer.batches).await
    });
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let answer = engine
                    .execute_sql(&scope, black_box(sql), false)
                    .await
                    .expect("runs");
                collect(answer.batches).await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, payload_parsing, metrics);
criterion_main!(benches);
