//! The insight functions over a real Delta warehouse, through SQL, under
//! two scopes. Expected series are computed here from the rows written,
//! not through the engine.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type};
use chrono::{Days, NaiveDate};
use futures::TryStreamExt;

use super::{anomaly, budget, forecast};
use crate::schema::AD_PERFORMANCE;
use crate::semantic::MetricsConfig;
use crate::semantic::tests::{batch, dates, floats, ints, money, text, write};
use crate::{Engine, EngineOptions, Error, Scope};

const DAYS: u64 = 120;

fn first_day() -> NaiveDate {
    "2026-06-01".parse().unwrap()
}

/// One row per (client, campaign, day). acme's `search` campaign has
/// spend that changes level every two weeks, a saturating value and a
/// spend spike on day 110; its `brand` campaign spends the same every
/// day. globex has one campaign of its own.
fn rows() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    NaiveDate,
    f64,
    f64,
)> {
    let week = [1.0, 1.1, 1.05, 1.0, 0.95, 0.7, 0.65];
    let mut out = Vec::new();
    for d in 0..DAYS {
        let date = first_day() + Days::new(d);
        let wobble = 1.0 + (((d * 7919) % 11) as f64 - 5.0) / 100.0;
        let level = [1.0, 1.6, 0.6, 1.3, 0.8, 1.9, 0.7, 1.2, 1.5][(d / 14) as usize];
        let mut spend = 200.0 * level * week[(d % 7) as usize] * wobble;
        if d == 110 {
            spend *= 3.0;
        }
        let value = 2400.0 * spend / (spend + 300.0) * wobble;
        out.push(("acme", "USD", "search", date, spend, value));
        out.push(("acme", "USD", "brand", date, 100.0, 250.0 * wobble));
        out.push(("globex", "EUR", "display", date, 50.0 * wobble, 80.0));
    }
    out
}

async fn warehouse() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let n = rows.len();
    let day_text: Vec<String> = rows.iter().map(|r| r.3.to_string()).collect();
    let day_refs: Vec<&str> = day_text.iter().map(String::as_str).collect();
    let b = batch(
        &AD_PERFORMANCE,
        n,
        vec![
            (
                "client_id",
                text(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            ),
            (
                "currency",
                text(&rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            ),
            ("date", dates(&day_refs)),
            ("platform", text(&vec!["google_ads"; n])),
            (
                "campaign_id",
                text(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            ),
            (
                "spend",
                money(&rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            ),
            ("impressions", ints(&vec![1000; n])),
            ("clicks", ints(&vec![10; n])),
            ("conversions", floats(&vec![1.0; n])),
            (
                "conversion_value",
                money(&rows.iter().map(|r| r.5).collect::<Vec<_>>()),
            ),
        ],
    );
    write(dir.path(), &AD_PERFORMANCE, b).await;
    let options = EngineOptions {
        metrics_config: MetricsConfig::from_toml_str("").unwrap(),
        clock: crate::clock::Clock::fixed("2026-09-29T12:00:00Z".parse().unwrap()),
        ..Default::default()
    };
    let engine = Engine::open_with(dir.path().to_str().unwrap(), options)
        .await
        .unwrap();
    (dir, engine)
}

async fn run(engine: &Engine, scope: &Scope, sql: &str) -> Vec<RecordBatch> {
    let answer = engine
        .execute_sql(scope, sql, false)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    answer.batches.try_collect().await.unwrap()
}

async fn fails(engine: &Engine, sql: &str) -> String {
    let error = match engine.execute_sql(&Scope::AllClients, sql, true).await {
        Err(e) => e,
        Ok(answer) => match answer.batches.try_collect::<Vec<_>>().await {
            Err(e) => Error::from_execution(e),
            Ok(_) => panic!("{sql}: expected an error"),
        },
    };
    match error {
        Error::InvalidSql(m) => m,
        other => panic!("{sql}: expected an invalid-argument error, got {other:?}"),
    }
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let c = batch.column_by_name(name).unwrap();
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
    let c = c.as_string::<i32>();
    (0..c.len()).map(|i| c.value(i).to_string()).collect()
}

fn numbers(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let c = batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>();
    (0..c.len()).map(|i| c.value(i)).collect()
}

/// The daily series of one campaign's column, from the rows written.
fn daily(campaign: &str, value: bool) -> Vec<f64> {
    rows()
        .into_iter()
        .filter(|r| r.2 == campaign)
        .map(|r| if value { r.5 } else { r.4 })
        .collect()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

#[tokio::test]
async fn forecasts_are_the_models_forecast_of_the_callers_own_series() {
    let (_dir, engine) = warehouse().await;
    let acme = Scope::clients(["acme"]);
    let sql = "SELECT * FROM forecast('spend', 'client_id,campaign_id', 14, 'as_of=2026-09-28;history_days=120;interval=0.8')";
    let got = concat(&run(&engine, &acme, sql).await);
    let columns: Vec<String> = got
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        columns,
        [
            "client_id",
            "campaign_id",
            "date",
            "forecast",
            "lower",
            "upper",
            "model"
        ]
    );
    // Two acme campaigns × 14 days, none of globex's.
    assert_eq!(got.num_rows(), 28);
    assert!(strings(&got, "client_id").iter().all(|c| c == "acme"));
    let campaigns = strings(&got, "campaign_id");
    let first: Vec<NaiveDate> = {
        let d = got
            .column_by_name("date")
            .unwrap()
            .as_primitive::<Date32Type>();
        (0..d.len()).map(|i| d.value_as_date(i).unwrap()).collect()
    };
    assert_eq!(first[0], "2026-09-29".parse::<NaiveDate>().unwrap());
    assert_eq!(first[13], "2026-10-12".parse::<NaiveDate>().unwrap());
    // Keys in order: brand then search; each the model's own forecast of
    // the series summed here.
    for (offset, campaign) in [(0, "brand"), (14, "search")] {
        assert!(campaigns[offset..offset + 14].iter().all(|c| c == campaign));
        let want = forecast::forecast(&daily(campaign, false), 14, 0.8);
        let point = &numbers(&got, "forecast")[offset..offset + 14];
        for (g, w) in point.iter().zip(&want.point) {
            assert!(
                (g - w).abs() < 1e-6 * w.abs().max(1.0),
                "{campaign}: {g} vs {w}"
            );
        }
        assert_eq!(strings(&got, "model")[offset], "mstl_ets");
    }
    // The flat campaign forecasts its flat spend.
    assert!(
        numbers(&got, "forecast")[..14]
            .iter()
            .all(|v| (v - 100.0).abs() < 1.0)
    );

    // The agency sees both clients, in two currencies: never summed
    // together, so the currency is a dimension of the series.
    let mixed = fails(&engine, sql).await;
    assert!(mixed.contains("mix currencies EUR, USD"), "{mixed}");
    let sql = sql.replace(
        "'client_id,campaign_id'",
        "'client_id,campaign_id,currency'",
    );
    let all = concat(&run(&engine, &Scope::AllClients, &sql).await);
    assert_eq!(all.num_rows(), 42);
    assert!(strings(&all, "client_id").contains(&"globex".to_string()));
}

#[tokio::test]
async fn anomalies_find_the_injected_spike_within_scope() {
    let (_dir, engine) = warehouse().await;
    let sql = "SELECT * FROM anomalies('spend,conversion_value', 'client_id,campaign_id', '2026-09-01', '2026-09-28')";
    let got = concat(&run(&engine, &Scope::clients(["acme"]), sql).await);
    let day: NaiveDate = first_day() + Days::new(110);
    let dates: Vec<String> = strings(&got, "date");
    let metrics = strings(&got, "metric");
    let spikes: Vec<usize> = (0..got.num_rows())
        .filter(|&i| dates[i] == day.to_string() && metrics[i] == "spend")
        .collect();
    assert_eq!(spikes.len(), 1, "{got:?}");
    let i = spikes[0];
    assert_eq!(strings(&got, "campaign_id")[i], "search");
    assert_eq!(strings(&got, "direction")[i], "spike");
    // The series runs from 56 days of context before 1 September: from
    // 7 July, day 36 of the rows.
    let want = anomaly::detect(
        &daily("search", false)[36..],
        56,
        anomaly::DEFAULT_THRESHOLD,
    );
    let spike = want.iter().find(|a| a.index == 110 - 36).unwrap();
    assert!((numbers(&got, "actual")[i] - spike.actual).abs() < 1e-6);
    assert!((numbers(&got, "score")[i] - spike.score).abs() < 1e-6);
    assert!(numbers(&got, "expected")[i] < spike.actual / 2.0);
    assert!(strings(&got, "client_id").iter().all(|c| c == "acme"));

    let globex = concat(&run(&engine, &Scope::clients(["globex"]), sql).await);
    assert!(strings(&globex, "client_id").iter().all(|c| c == "globex"));
}

#[tokio::test]
async fn budget_advice_splits_the_budget_and_refuses_flat_spend() {
    let (_dir, engine) = warehouse().await;
    let sql = "SELECT * FROM budget_advice('campaign_id', '2026-06-01', '2026-09-28', 900)";
    let got = concat(&run(&engine, &Scope::clients(["acme"]), sql).await);
    assert_eq!(strings(&got, "campaign_id"), ["brand", "search"]);
    let note = got.column_by_name("note").unwrap().as_string::<i32>();
    // The flat campaign is left where it is, with the reason.
    assert!(
        note.value(0).contains("varied by only"),
        "{}",
        note.value(0)
    );
    let current = numbers(&got, "current_daily_spend");
    let advised = numbers(&got, "recommended_daily_spend");
    assert!((current[0] - 100.0).abs() < 1e-6);
    assert_eq!(current[0], advised[0]);
    assert!(got.column_by_name("fit_r2").unwrap().is_null(0));
    // The other takes the rest of the budget, within ±50% of its spend.
    let search = daily("search", false);
    let recent = search[search.len() - 7..].iter().sum::<f64>() / 7.0;
    assert!((current[1] - recent).abs() < 1e-6);
    let want = (900.0 - 100.0_f64).clamp(recent * 0.5, recent * 1.5);
    assert!((advised[1] - want).abs() < 1e-6, "{advised:?} vs {want}");
    let fit = budget::fit(&search, &daily("search", true)).unwrap();
    assert!((numbers(&got, "fit_r2")[1] - fit.r2).abs() < 1e-9);
    assert!((numbers(&got, "expected_value")[1] - fit.value(advised[1])).abs() < 1e-6);
}

#[tokio::test]
async fn bad_calls_name_the_problem() {
    let (_dir, engine) = warehouse().await;
    let cases: &[(&str, &str)] = &[
        (
            "SELECT * FROM forecast('ctr', '', 7)",
            "'ctr' is not additive",
        ),
        (
            "SELECT * FROM forecast('spend', 'week', 7)",
            "'week' is a date grain",
        ),
        (
            "SELECT * FROM forecast('spend', '', 91)",
            "horizon_days must be a whole number of days from 1 to 90",
        ),
        ("SELECT * FROM forecast('spend', '', 0)", "from 1 to 90"),
        (
            "SELECT * FROM forecast('spend', '', 7, 'interval=2')",
            "interval must be a number from 0.5 to 0.99",
        ),
        (
            "SELECT * FROM forecast('spend', '', 7, 'bogus=1')",
            "unknown option 'bogus'",
        ),
        (
            "SELECT * FROM forecast('spend', '')",
            "takes 3 or 4 arguments",
        ),
        (
            "SELECT * FROM forecast('nope', '', 7)",
            "unknown metric 'nope'",
        ),
        (
            "SELECT * FROM anomalies('spend', '', '2026-09-01')",
            "needs an end date",
        ),
        (
            "SELECT * FROM anomalies('spend', '', 'last_7_days', 'threshold=0')",
            "threshold must be a number",
        ),
        (
            "SELECT * FROM budget_advice('campaign_id', 'last_30_days', -5)",
            "total_daily_budget must be a number",
        ),
        (
            "SELECT * FROM budget_advice('campaign_id', 'last_30_days', 100, 'value=clicks')",
            "value is conversion_value or conversions",
        ),
        // Dates at chrono's limits: an error naming them, never a panic.
        (
            "SELECT * FROM forecast('spend', '', 7, 'as_of=-262143-01-01')",
            "moved by",
        ),
        (
            "SELECT * FROM forecast('spend', '', 7, 'as_of=+262142-12-31;history_days=14')",
            "moved by",
        ),
        (
            "SELECT * FROM anomalies('spend', '', '-262143-01-01', '-262143-01-02')",
            "moved by",
        ),
        ("SELECT * FROM data_quality('-262143-01-01')", "moved by"),
    ];
    for (sql, want) in cases {
        let got = fails(&engine, sql).await;
        assert!(got.contains(want), "{sql}: {got}");
    }
}

#[tokio::test]
async fn forecasts_from_yesterday_are_never_served_from_the_cache() {
    let (_dir, engine) = warehouse().await;
    let acme = Scope::clients(["acme"]);
    let relative = "SELECT * FROM forecast('spend', '', 7)";
    let fixed = "SELECT * FROM forecast('spend', '', 7, 'as_of=2026-09-28')";
    let mut statuses = BTreeMap::new();
    for sql in [relative, relative, fixed, fixed] {
        let answer = engine.execute_sql(&acme, sql, false).await.unwrap();
        statuses
            .entry(sql)
            .or_insert_with(Vec::new)
            .push(answer.cache);
        let _: Vec<RecordBatch> = answer.batches.try_collect().await.unwrap();
    }
    use crate::CacheStatus::{Bypass, Hit, Miss};
    assert_eq!(statuses[relative], [Bypass, Bypass]);
    assert_eq!(statuses[fixed], [Miss, Hit]);
}
