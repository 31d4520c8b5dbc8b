//! Golden tests (`engine/tests/slt/*.slt`: the metric layer, the statement
//! guard, tenancy and the promised types), run by
//! `sqllogictest` against an engine over the small fixed warehouse below.
//! Every expected number in those files was worked out by hand from these
//! rows (the working is written next to each query).
//!
//! Besides SQL, the runner understands statements of its own:
//! `USE SCOPE <client>` (or `USE SCOPE agency`) switches the caller whose
//! scope the next statements run under, `CACHE STATUS` returns what the
//! result cache did for the previous query (`hit`, `miss`), and `RESULT
//! TYPES <sql>` lists the columns of `<sql>`'s streamed answer with their
//! Arrow types.
//!
//! Regenerate the expected output after a deliberate change with
//! `ADLAKE_SLT_COMPLETE=1 cargo nextest run -p adlake-engine golden`, then
//! check every changed number by hand before keeping it.
//!
//! The warehouse (clock fixed at 2026-01-06T03:00:00Z, which is still
//! 2026-01-05 in acme's America/New_York):
//!
//! ```text
//! ad_performance  client currency date        platform   spend  impr  clicks conv value
//!                 acme   USD      2025-01-05  google_ads     8   400      4    1    16
//!                 acme   USD      2025-12-30  google_ads    10  1000     20    2    30
//!                 acme   USD      2025-12-31  meta_ads      30  2000     20    0     0
//!                 acme   USD      2026-01-01  google_ads    20  1000     10    1    50
//!                 acme   USD      2026-01-02  meta_ads       0     0      0    0     0
//!                 acme   USD      2026-01-05  google_ads    40  4000     20    4   120
//!                 globex EUR      2026-01-01  google_ads   100  5000     50    5   200
//!                 globex EUR      2026-01-05  google_ads    50  5000     25    0     0
//! orders          acme   USD      2026-01-01  total_price 90;  2026-01-05  total_price 30
//! web_sessions    acme   USD      2026-01-01  sessions 40
//! fx_rates        EUR→USD 2026-01-01 1.2;  2026-01-05 1.1
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use sqllogictest::{DBOutput, DefaultColumnType};

use super::MetricsConfig;
use super::tests::{AdRow, ads, batch, dates, floats, money, text, write};
use crate::schema::{AD_PERFORMANCE, FX_RATES, ORDERS, WEB_SESSIONS};
use crate::{CacheStatus, Engine, EngineOptions, Error, Scope};

const CONFIG: &str = r#"
[[client]]
id = "acme"
time_zone = "America/New_York"

[[metric]]
client = "acme"
name = "profit"
expression = "conversion_value - spend"
description = "Platform conversion value minus spend"
"#;

const ADS: &[AdRow] = &[
    (
        "acme",
        "USD",
        "2025-01-05",
        "google_ads",
        8.0,
        400,
        4,
        1.0,
        16.0,
    ),
    (
        "acme",
        "USD",
        "2025-12-30",
        "google_ads",
        10.0,
        1000,
        20,
        2.0,
        30.0,
    ),
    (
        "acme",
        "USD",
        "2025-12-31",
        "meta_ads",
        30.0,
        2000,
        20,
        0.0,
        0.0,
    ),
    (
        "acme",
        "USD",
        "2026-01-01",
        "google_ads",
        20.0,
        1000,
        10,
        1.0,
        50.0,
    ),
    ("acme", "USD", "2026-01-02", "meta_ads", 0.0, 0, 0, 0.0, 0.0),
    (
        "acme",
        "USD",
        "2026-01-05",
        "google_ads",
        40.0,
        4000,
        20,
        4.0,
        120.0,
    ),
    (
        "globex",
        "EUR",
        "2026-01-01",
        "google_ads",
        100.0,
        5000,
        50,
        5.0,
        200.0,
    ),
    (
        "globex",
        "EUR",
        "2026-01-05",
        "google_ads",
        50.0,
        5000,
        25,
        0.0,
        0.0,
    ),
];

/// Writes the warehouse above and opens an engine on it.
async fn golden_engine(dir: &Path) -> Engine {
    write(dir, &AD_PERFORMANCE, ads(ADS)).await;
    write(
        dir,
        &ORDERS,
        batch(
            &ORDERS,
            2,
            vec![
                ("client_id", text(&["acme", "acme"])),
                ("date", dates(&["2026-01-01", "2026-01-05"])),
                ("order_id", text(&["o1", "o2"])),
                ("currency", text(&["USD", "USD"])),
                ("total_price", money(&[90.0, 30.0])),
            ],
        ),
    )
    .await;
    write(
        dir,
        &WEB_SESSIONS,
        batch(
            &WEB_SESSIONS,
            1,
            vec![
                ("client_id", text(&["acme"])),
                ("date", dates(&["2026-01-01"])),
                ("currency", text(&["USD"])),
                ("sessions", super::tests::ints(&[40])),
            ],
        ),
    )
    .await;
    write(
        dir,
        &FX_RATES,
        batch(
            &FX_RATES,
            2,
            vec![
                ("date", dates(&["2026-01-01", "2026-01-05"])),
                ("base", text(&["EUR", "EUR"])),
                ("quote", text(&["USD", "USD"])),
                ("rate", floats(&[1.2, 1.1])),
            ],
        ),
    )
    .await;
    let options = EngineOptions {
        metrics_config: MetricsConfig::from_toml_str(CONFIG).unwrap(),
        clock: crate::clock::Clock::fixed("2026-01-06T03:00:00Z".parse().unwrap()),
        ..Default::default()
    };
    Engine::open_with(dir.to_str().unwrap(), options)
        .await
        .unwrap()
}

/// One sqllogictest connection: the shared engine, a current caller.
struct GoldenDb {
    engine: Arc<Engine>,
    scope: Scope,
    last: Option<CacheStatus>,
}

/// Floats to 10 decimals, trailing zeros dropped: the golden files name
/// exact values, not the last bit of a sum's rounding.
fn float_text(v: f64) -> String {
    let s = format!("{v:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn rows_of(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, Error> {
    let Some(first) = batches.first() else {
        return Ok(DBOutput::Rows {
            types: vec![],
            rows: vec![],
        });
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Float32 | DataType::Float64 => DefaultColumnType::FloatingPoint,
            t if t.is_integer() => DefaultColumnType::Integer,
            _ => DefaultColumnType::Text,
        })
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidSql(e.to_string()))?;
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| match c.as_primitive_opt::<Float64Type>() {
                        Some(a) if !a.is_null(r) => float_text(a.value(r)),
                        _ => f.value(r).to_string(),
                    })
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for GoldenDb {
    type Error = Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Error> {
        let trimmed = sql.trim();
        if let Some(who) = trimmed.strip_prefix("USE SCOPE ") {
            self.scope = match who.trim() {
                "agency" => Scope::AllClients,
                client => Scope::clients([client]),
            };
            return Ok(DBOutput::StatementComplete(0));
        }
        if trimmed == "CACHE STATUS" {
            let status = match self.last {
                Some(CacheStatus::Hit) => "hit",
                Some(CacheStatus::Miss) => "miss",
                Some(CacheStatus::Bypass) => "bypass",
                None => "none",
            };
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows: vec![vec![status.to_string()]],
            });
        }
        if let Some(sql) = trimmed.strip_prefix("RESULT TYPES ") {
            let query = self.engine.plan(&self.scope, sql).await?;
            let (stream, _) = self
                .engine
                .execute_cached(&self.scope, sql, query, true)
                .await?;
            let rows = stream
                .schema()
                .fields()
                .iter()
                .map(|f| vec![f.name().clone(), f.data_type().to_string()])
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text, DefaultColumnType::Text],
                rows,
            });
        }
        let query = self.engine.plan(&self.scope, sql).await?;
        let (stream, status) = self
            .engine
            .execute_cached(&self.scope, sql, query, false)
            .await?;
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(Error::from_execution)?;
        self.last = Some(status);
        rows_of(&batches)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "adlake"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt file in {}", dir.display());
    files
}

#[tokio::test]
async fn golden_metric_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(golden_engine(dir.path()).await);
    let complete = std::env::var_os("ADLAKE_SLT_COMPLETE").is_some();
    for file in slt_files() {
        let shared = Arc::clone(&engine);
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = Arc::clone(&shared);
            async move {
                Ok(GoldenDb {
                    engine,
                    scope: Scope::clients(["acme"]),
                    last: None,
                })
            }
        });
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}:\n{}", file.display(), e.display(true));
        }
    }
}
