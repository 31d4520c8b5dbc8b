//! `adlake.v1.MetricsService` on the real server, through the generated
//! tonic client: numbers against sums computed independently from the
//! synthetic source, tenancy from the token, the cache, bad input.

use adlake_proto::v1::metrics_service_client::MetricsServiceClient;
use adlake_proto::v1::{
    AbsoluteRange, CacheStatus, DateRange, QueryMetricsRequest, QueryMetricsResponse, date_range,
    value,
};
use tonic::{Code, Request};

use super::{AGENCY_TOKEN, CLIENT_A_TOKEN, Fixture, bearer, expected_totals};

fn request(token: &str, dimensions: &[&str]) -> Request<QueryMetricsRequest> {
    let query = QueryMetricsRequest {
        metrics: ["impressions", "clicks", "ctr"].map(String::from).to_vec(),
        dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
        date_range: Some(DateRange {
            range: Some(date_range::Range::Absolute(AbsoluteRange {
                start: "2000-01-01".into(),
                end: super::END_DATE.into(),
            })),
        }),
        ..Default::default()
    };
    bearer(Request::new(query), token)
}

fn text(v: &adlake_proto::v1::Value) -> String {
    match &v.kind {
        Some(value::Kind::Text(t)) => t.clone(),
        other => panic!("not text: {other:?}"),
    }
}

fn number(v: &adlake_proto::v1::Value) -> f64 {
    match &v.kind {
        Some(value::Kind::Number(n)) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

/// (client, impressions, clicks, ctr) per row.
fn rows(r: &QueryMetricsResponse) -> Vec<(String, i64, i64, f64)> {
    r.rows
        .iter()
        .map(|row| {
            (
                text(&row.values[0]),
                number(&row.values[1]) as i64,
                number(&row.values[2]) as i64,
                number(&row.values[3]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn query_metrics_numbers_tenancy_and_cache() {
    let fixture = Fixture::start();
    let mut client = MetricsServiceClient::new(fixture.channel().await);
    let expected = expected_totals();

    let agency = client
        .query_metrics(request(AGENCY_TOKEN, &["client_id"]))
        .await
        .unwrap()
        .into_inner();
    let got = rows(&agency);
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (client_id, impressions, clicks, ctr) in &got {
        let want = &expected[client_id];
        assert_eq!((*impressions, *clicks), (want.1, want.2), "{client_id}");
        let want_ctr = want.2 as f64 / want.1 as f64;
        assert!(
            (ctr - want_ctr).abs() < 1e-12,
            "{client_id}: {ctr} vs {want_ctr}"
        );
    }
    // The total CTR is total clicks over total impressions.
    let (all_imp, all_clicks) = expected
        .values()
        .fold((0, 0), |a, v| (a.0 + v.1, a.1 + v.2));
    let totals = agency.totals.as_ref().unwrap();
    assert!((number(&totals.values[3]) - all_clicks as f64 / all_imp as f64).abs() < 1e-12);
    assert!(
        agency
            .table_versions
            .iter()
            .any(|t| t.table == "ad_performance" && t.version.is_some())
    );
    assert!(!agency.freshness.is_empty());

    // A client's token sees only its own client, whatever it asks.
    let mine = client
        .query_metrics(request(CLIENT_A_TOKEN, &["client_id"]))
        .await
        .unwrap()
        .into_inner();
    let got = rows(&mine);
    let a = &fixture.clients[0];
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0].0, a);
    assert_eq!((got[0].1, got[0].2), (expected[a].1, expected[a].2));
    assert!(mine.freshness.iter().all(|f| &f.client_id == a));

    // The same question again is a cache hit with the same rows.
    let again = client
        .query_metrics(request(CLIENT_A_TOKEN, &["client_id"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.cache_status, CacheStatus::Hit as i32);
    assert_eq!(again.rows, mine.rows);

    // Bad input and missing credentials.
    let mut bad = request(AGENCY_TOKEN, &["colour"]);
    bad.get_mut().metrics = vec!["ctr".into()];
    let err = client.query_metrics(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("'colour'"), "{err:?}");
    let anonymous = Request::new(request(AGENCY_TOKEN, &[]).into_inner());
    let err = client.query_metrics(anonymous).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

/// A fixture whose server loads a metrics configuration: client A in
/// New York time with a custom metric.
fn start_with_metrics_config() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    std::fs::create_dir(&warehouse).unwrap();
    super::fill_warehouse(&warehouse);
    let clients: Vec<String> = expected_totals().keys().cloned().collect();
    let auth = dir.path().join("auth.toml");
    super::write_auth_file(
        &auth,
        &[
            ("agency", AGENCY_TOKEN, &["*"]),
            ("client-a", CLIENT_A_TOKEN, &[clients[0].as_str()]),
            ("client-b", super::CLIENT_B_TOKEN, &[clients[1].as_str()]),
        ],
    );
    let config = dir.path().join("metrics.toml");
    std::fs::write(
        &config,
        format!(
            "[[client]]\nid = \"{a}\"\ntime_zone = \"America/New_York\"\n\n\
             [[metric]]\nclient = \"{a}\"\nname = \"clicks_per_1000\"\n\
             expression = \"1000 * clicks / impressions\"\n",
            a = clients[0]
        ),
    )
    .unwrap();
    let server = super::TestServer::start(
        &warehouse,
        Some(&auth),
        &[
            "--refresh-secs",
            "1",
            "--metrics-config",
            config.to_str().unwrap(),
        ],
    );
    Fixture {
        dir,
        server,
        clients,
    }
}

fn float_of(array: &dyn arrow::array::Array, row: usize) -> Option<f64> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Float64 => Some(array.as_primitive::<Float64Type>().value(row)),
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().value(row) as f64),
        other => panic!("not a number column: {other}"),
    }
}

fn date_text(array: &dyn arrow::array::Array, row: usize) -> String {
    use arrow::array::AsArray;
    use arrow::datatypes::Date32Type;
    array
        .as_primitive::<Date32Type>()
        .value_as_date(row)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_and_flight_sql_give_the_same_metrics() {
    use adlake_proto::v1::{
        Comparison, GetFreshnessRequest, ListDimensionsRequest, ListMetricsRequest,
    };
    let fixture = start_with_metrics_config();
    let mut client = MetricsServiceClient::new(fixture.channel().await);
    let a = fixture.clients[0].clone();

    // Weekly impressions, clicks, CTR and the custom metric of client A.
    let mut ask = request(CLIENT_A_TOKEN, &["week"]);
    ask.get_mut().metrics = ["impressions", "clicks", "ctr", "clicks_per_1000"]
        .map(String::from)
        .to_vec();
    ask.get_mut().date_range = Some(DateRange {
        range: Some(date_range::Range::Absolute(AbsoluteRange {
            start: "2026-10-01".into(),
            end: super::END_DATE.into(),
        })),
    });
    let grpc = client.query_metrics(ask).await.unwrap().into_inner();
    assert!(grpc.rows.len() >= 3, "{:?}", grpc.rows);
    let grpc_rows: Vec<(String, [f64; 4])> = grpc
        .rows
        .iter()
        .map(|r| {
            let date = match &r.values[0].kind {
                Some(value::Kind::Date(d)) => d.clone(),
                other => panic!("not a date: {other:?}"),
            };
            (date, [1, 2, 3, 4].map(|i| number(&r.values[i])))
        })
        .collect();

    // The same question over Flight SQL through metric_query.
    let sql_rows = |batches: &[arrow::array::RecordBatch], width: usize| {
        let mut out = Vec::new();
        for b in batches {
            for row in 0..b.num_rows() {
                let mut values = Vec::new();
                for c in 1..=width {
                    values.push(float_of(b.column(c).as_ref(), row).unwrap_or(f64::NAN));
                }
                out.push((date_text(b.column(0).as_ref(), row), values));
            }
        }
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    };
    let batches = fixture
        .query(
            CLIENT_A_TOKEN,
            &format!(
                "SELECT * FROM metric_query('impressions,clicks,ctr,clicks_per_1000', 'week', '2026-10-01', '{}')",
                super::END_DATE
            ),
        )
        .await
        .unwrap();
    let flight = sql_rows(&batches, 4);
    assert_eq!(flight.len(), grpc_rows.len(), "{flight:?} vs {grpc_rows:?}");
    // Float sums may add up in another order: equal to the last few bits.
    let same = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0);
    for ((fd, fv), (gd, gv)) in flight.iter().zip(&grpc_rows) {
        assert_eq!(fd, gd);
        assert!(
            fv.iter().zip(gv).all(|(x, y)| same(*x, *y)),
            "week {fd}: {fv:?} vs {gv:?}"
        );
    }

    // And from plain SQL sums, independently of the metric layer: the CTR
    // of each week is its clicks over its impressions.
    let batches = fixture
        .query(
            CLIENT_A_TOKEN,
            &format!(
                "SELECT CAST(date_trunc('week', CAST(date AS TIMESTAMP)) AS DATE) AS w, \
                 sum(impressions) AS i, sum(clicks) AS c FROM ad_performance \
                 WHERE date BETWEEN DATE '2026-10-01' AND DATE '{}' GROUP BY 1",
                super::END_DATE
            ),
        )
        .await
        .unwrap();
    let plain = sql_rows(&batches, 2);
    assert_eq!(plain.len(), grpc_rows.len());
    for ((pd, pv), (gd, gv)) in plain.iter().zip(&grpc_rows) {
        assert_eq!(pd, gd);
        assert_eq!((pv[0], pv[1]), (gv[0], gv[1]), "week {pd}");
        assert!((pv[1] / pv[0] - gv[2]).abs() < 1e-12, "week {pd}");
        assert!((1000.0 * pv[1] / pv[0] - gv[3]).abs() < 1e-9, "week {pd}");
    }

    // A comparison with the previous period, over both APIs.
    let mut cmp = request(CLIENT_A_TOKEN, &[]);
    cmp.get_mut().metrics = vec!["ctr".into()];
    cmp.get_mut().comparison = Comparison::PreviousPeriod as i32;
    cmp.get_mut().date_range = Some(DateRange {
        range: Some(date_range::Range::Absolute(AbsoluteRange {
            start: "2026-10-22".into(),
            end: super::END_DATE.into(),
        })),
    });
    let g = client.query_metrics(cmp).await.unwrap().into_inner();
    assert_eq!(
        (
            g.comparison_start_date.as_str(),
            g.comparison_end_date.as_str()
        ),
        ("2026-10-12", "2026-10-21")
    );
    let batches = fixture
        .query(
            CLIENT_A_TOKEN,
            &format!(
                "SELECT * FROM metric_query('ctr', '', '2026-10-22', '{}', 'comparison=previous_period')",
                super::END_DATE
            ),
        )
        .await
        .unwrap();
    for i in 0..4 {
        let (x, y) = (
            float_of(batches[0].column(i).as_ref(), 0).unwrap(),
            number(&g.rows[0].values[i]),
        );
        assert!(same(x, y), "column {i}: {x} vs {y}");
    }

    // The custom metric belongs to client A only.
    let mine = client
        .list_metrics(super::bearer(
            Request::new(ListMetricsRequest {}),
            CLIENT_A_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let custom = mine
        .metrics
        .iter()
        .find(|m| m.name == "clicks_per_1000")
        .expect("custom metric listed");
    assert_eq!(
        (custom.kind.as_str(), custom.client_id.as_str()),
        ("custom", a.as_str())
    );
    let ctr = mine.metrics.iter().find(|m| m.name == "ctr").unwrap();
    assert_eq!(ctr.expression, "clicks / impressions");
    let theirs = client
        .list_metrics(super::bearer(
            Request::new(ListMetricsRequest {}),
            super::CLIENT_B_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.metrics.iter().all(|m| m.name != "clicks_per_1000"));
    let mut b_asks = request(super::CLIENT_B_TOKEN, &[]);
    b_asks.get_mut().metrics = vec!["clicks_per_1000".into()];
    let err = client.query_metrics(b_asks).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("'clicks_per_1000'") && err.message().contains("ctr"),
        "{err:?}"
    );
    let err = fixture
        .query(
            super::CLIENT_B_TOKEN,
            "SELECT * FROM metric_query('clicks_per_1000', '', 'last_7_days')",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let dims = client
        .list_dimensions(super::bearer(
            Request::new(ListDimensionsRequest {}),
            CLIENT_A_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let week = dims.dimensions.iter().find(|d| d.name == "week").unwrap();
    assert_eq!(week.grain, "week");
    assert!(dims.dimensions.iter().any(|d| d.name == "utm_source"));

    // Freshness: client A's sources only, in its own time zone.
    let fresh = client
        .get_freshness(super::bearer(
            Request::new(GetFreshnessRequest {}),
            CLIENT_A_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!fresh.sources.is_empty());
    assert!(fresh.sources.iter().all(|s| s.client_id == a));
    let ads = fresh
        .sources
        .iter()
        .find(|s| s.table == "ad_performance")
        .unwrap();
    assert_eq!(ads.latest_date, super::END_DATE);
    assert_eq!(ads.time_zone, "America/New_York");

    // Bad input names the item and the choices.
    for (metrics, dims, start, end, want) in [
        (
            vec!["ctr"],
            vec!["colour"],
            "2026-10-01",
            "2026-10-31",
            "'colour'",
        ),
        (vec!["ctrr"], vec![], "2026-10-01", "2026-10-31", "'ctrr'"),
        (vec!["ctr"], vec![], "2026-10-31", "2026-10-01", "inverted"),
        (
            vec!["ctr"],
            vec![],
            "2026-13-01",
            "2026-10-01",
            "'2026-13-01'",
        ),
    ] {
        let mut bad = request(AGENCY_TOKEN, &dims);
        bad.get_mut().metrics = metrics.into_iter().map(String::from).collect();
        bad.get_mut().date_range = Some(DateRange {
            range: Some(date_range::Range::Absolute(AbsoluteRange {
                start: start.into(),
                end: end.into(),
            })),
        });
        let err = client.query_metrics(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(want), "{want}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_ingest_is_seen_by_the_next_query_and_bypass_skips_the_cache() {
    let fixture = Fixture::start();
    let mut client = MetricsServiceClient::new(fixture.channel().await);
    let first = client
        .query_metrics(request(CLIENT_A_TOKEN, &["client_id"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.cache_status, CacheStatus::Miss as i32);
    let mut bypass = request(CLIENT_A_TOKEN, &["client_id"]);
    bypass.get_mut().bypass_cache = true;
    let skipped = client.query_metrics(bypass).await.unwrap().into_inner();
    assert_eq!(skipped.cache_status, CacheStatus::Bypass as i32);
    assert_eq!(skipped.rows, first.rows);
    let version = |r: &QueryMetricsResponse| {
        r.table_versions
            .iter()
            .find(|t| t.table == "ad_performance")
            .and_then(|t| t.version)
            .unwrap()
    };
    let v0 = version(&first);

    // Ingest again (more rows replace the slices: a new Delta version); the
    // server follows it within its refresh interval.
    let mut args = super::demo_args(&fixture.warehouse());
    let rows_at = args.iter().position(|a| a == "--rows").unwrap() + 1;
    args[rows_at] = "9000".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = super::run_ingest(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut seen = None;
    for _ in 0..100 {
        let r = client
            .query_metrics(request(CLIENT_A_TOKEN, &["client_id"]))
            .await
            .unwrap()
            .into_inner();
        if version(&r) > v0 {
            seen = Some(r);
            break;
        }
        // Until the server has followed the new version, the old entry
        // answers: its key names the old version.
        assert_eq!(r.cache_status, CacheStatus::Hit as i32);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let seen = seen.expect("the server followed the new version within 20 s");
    assert_eq!(seen.cache_status, CacheStatus::Miss as i32);
    // Its numbers are those of the new data, as plain SQL sums them.
    let batches = fixture
        .query(
            CLIENT_A_TOKEN,
            &format!(
                "SELECT sum(impressions) AS i, sum(clicks) AS c FROM ad_performance \
                 WHERE date <= DATE '{}'",
                super::END_DATE
            ),
        )
        .await
        .unwrap();
    let got = rows(&seen);
    assert_eq!(
        (Some(got[0].1 as f64), Some(got[0].2 as f64)),
        (
            float_of(batches[0].column(0).as_ref(), 0),
            float_of(batches[0].column(1).as_ref(), 0)
        )
    );
}
