//! End-to-end: the real `adlake-ingest` fills a warehouse, the real `adlake`
//! serves it, and the Rust Flight SQL client asks the questions.
//!
//! Expected numbers come from the synthetic generator itself (deterministic
//! for its configuration), summed here in plain Rust: independent of the
//! Delta writer, the engine and the server under test.
//!
//! Each test builds its own warehouse and server, since nextest runs every
//! test in its own process; related checks share one test to pay for that
//! once.

mod flight_sql;
mod metrics;
mod telemetry;

use std::collections::BTreeMap;
use std::path::Path;

use adlake_ingest::Lineage;
use adlake_ingest::synthetic::{Synthetic, SyntheticConfig};
use adlake_tests::{TestServer, run_ingest, run_server_to_exit, write_auth_file};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, HandshakeRequest};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

const CLIENTS: usize = 3;
const DAYS: u32 = 21;
const ROWS: u64 = 6_000;
const SEED: u64 = 11;
const END_DATE: &str = "2026-10-31";

const AGENCY_TOKEN: &str = "agency-token-0123456789abcdef";
const CLIENT_A_TOKEN: &str = "client-a-token-0123456789abcdef";
const CLIENT_B_TOKEN: &str = "client-b-token-0123456789abcdef";

fn config() -> SyntheticConfig {
    SyntheticConfig {
        clients: CLIENTS,
        days: DAYS,
        rows: ROWS,
        seed: SEED,
        end_date: END_DATE.parse().unwrap(),
        incidents: true,
    }
}

/// Per client: (spend in micros, impressions, clicks, rows), summed from the
/// generator's own batches.
fn expected_totals() -> BTreeMap<String, (i128, i64, i64, usize)> {
    let synthetic = Synthetic::new(config());
    let lineage = Lineage::new("e2e/1", "expected");
    let mut totals = BTreeMap::new();
    for (index, client) in synthetic.clients().iter().enumerate() {
        let entry = totals
            .entry(client.id.clone())
            .or_insert((0i128, 0i64, 0i64, 0usize));
        for batch in synthetic.ad_performance(index, &lineage) {
            let spend = batch
                .column_by_name("spend")
                .unwrap()
                .as_primitive::<Decimal128Type>();
            let impressions = batch
                .column_by_name("impressions")
                .unwrap()
                .as_primitive::<Int64Type>();
            let clicks = batch
                .column_by_name("clicks")
                .unwrap()
                .as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                entry.0 += spend.value(i);
                entry.1 += impressions.value(i);
                entry.2 += clicks.value(i);
            }
            entry.3 += batch.num_rows();
        }
    }
    totals
}

fn demo_args(warehouse: &Path) -> Vec<String> {
    [
        "demo",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--clients",
        &CLIENTS.to_string(),
        "--days",
        &DAYS.to_string(),
        "--rows",
        &ROWS.to_string(),
        "--seed",
        &SEED.to_string(),
        "--end-date",
        END_DATE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn fill_warehouse(warehouse: &Path) {
    let args = demo_args(warehouse);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ingest(&args);
    assert_eq!(
        out.code,
        Some(0),
        "adlake-ingest demo failed:\n{}",
        out.stderr
    );
}

/// A warehouse, an auth file (agency, client A, client B) and a server.
struct Fixture {
    dir: tempfile::TempDir,
    server: TestServer,
    clients: Vec<String>,
}

impl Fixture {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = dir.path().join("warehouse");
        std::fs::create_dir(&warehouse).unwrap();
        fill_warehouse(&warehouse);
        let clients: Vec<String> = expected_totals().keys().cloned().collect();
        let auth = dir.path().join("auth.toml");
        write_auth_file(
            &auth,
            &[
                ("agency", AGENCY_TOKEN, &["*"]),
                ("client-a", CLIENT_A_TOKEN, &[clients[0].as_str()]),
                ("client-b", CLIENT_B_TOKEN, &[clients[1].as_str()]),
            ],
        );
        let server = TestServer::start(&warehouse, Some(&auth), &["--refresh-secs", "1"]);
        Self {
            dir,
            server,
            clients,
        }
    }

    fn warehouse(&self) -> std::path::PathBuf {
        self.dir.path().join("warehouse")
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.server.flight_url())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.server.stderr()))
    }

    async fn client(&self, token: &str) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        client.set_token(token.to_string());
        client
    }

    /// Runs `sql` and collects the batches, checking each has the schema
    /// the FlightInfo promised.
    async fn query(&self, token: &str, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        let mut raw = FlightServiceClient::new(self.channel().await);
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let info = raw
            .get_flight_info(bearer(Request::new(descriptor), token))
            .await?
            .into_inner();
        let promised = info
            .clone()
            .try_decode_schema()
            .expect("schema in FlightInfo");
        let mut client = self.client(token).await;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.expect("ticket");
            let stream = client
                .do_get(ticket)
                .await
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            let got: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            for b in &got {
                assert_eq!(
                    *b.schema(),
                    promised,
                    "streamed schema differs from FlightInfo's"
                );
            }
            batches.extend(got);
        }
        Ok(batches)
    }
}

fn bearer<T>(mut request: Request<T>, token: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// (client, spend micros, impressions, clicks, rows) from a grouped query.
fn totals_of(batches: &[RecordBatch]) -> BTreeMap<String, (i128, i64, i64, usize)> {
    let mut out = BTreeMap::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.insert(
                b.column(0).as_string::<i32>().value(i).to_string(),
                (
                    b.column(1).as_primitive::<Decimal128Type>().value(i),
                    b.column(2).as_primitive::<Int64Type>().value(i),
                    b.column(3).as_primitive::<Int64Type>().value(i),
                    b.column(4).as_primitive::<Int64Type>().value(i) as usize,
                ),
            );
        }
    }
    out
}

const TOTALS_SQL: &str = "SELECT client_id, sum(spend), sum(impressions), sum(clicks), count(*) \
                          FROM ad_performance GROUP BY client_id";

#[tokio::test(flavor = "multi_thread")]
async fn served_numbers_and_tenancy() {
    let fx = Fixture::start();
    let expected = expected_totals();
    assert_eq!(expected.len(), CLIENTS);

    // The agency sees every client, with exactly the generated numbers.
    let got = totals_of(&fx.query(AGENCY_TOKEN, TOTALS_SQL).await.unwrap());
    assert_eq!(
        got, expected,
        "agency totals differ from the generated data"
    );

    // A client token sees its own client only, whatever the SQL asks.
    let (a, b) = (&fx.clients[0], &fx.clients[1]);
    let got = totals_of(&fx.query(CLIENT_A_TOKEN, TOTALS_SQL).await.unwrap());
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![a]);
    assert_eq!(got[a], expected[a]);
    let got = totals_of(&fx.query(CLIENT_B_TOKEN, TOTALS_SQL).await.unwrap());
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![b]);
    for table in ["ad_performance", "web_sessions", "orders", "ingest_runs"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE client_id = '{b}'");
        let batches = fx.query(CLIENT_A_TOKEN, &sql).await.unwrap();
        assert_eq!(
            batches[0].column(0).as_primitive::<Int64Type>().value(0),
            0,
            "client A sees client B's rows in {table}"
        );
        let sql = format!("SELECT DISTINCT client_id FROM {table}");
        let seen: Vec<String> = fx
            .query(CLIENT_A_TOKEN, &sql)
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                (0..c.len())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(seen, vec![a.clone()], "{table}");
    }

    // Results come in types every client reads.
    let batches = fx
        .query(AGENCY_TOKEN, "SELECT * FROM ad_performance LIMIT 5")
        .await
        .unwrap();
    let schema = batches[0].schema();
    assert_eq!(
        schema.field_with_name("client_id").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        schema.field_with_name("date").unwrap().data_type(),
        &DataType::Date32
    );
    assert_eq!(
        schema.field_with_name("spend").unwrap().data_type(),
        &DataType::Decimal128(18, 6)
    );

    // Every ad row carries its lineage, and its run is in ingest_runs with
    // the Delta version it produced.
    let batches = fx
        .query(
            AGENCY_TOKEN,
            "SELECT count(*) FROM ad_performance a \
             LEFT JOIN ingest_runs r ON a._run_id = r.run_id AND r.target_table = 'ad_performance' \
             WHERE r.run_id IS NULL OR r.table_version IS NULL OR a._source IS NULL",
        )
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 0);

    // Health.
    assert_eq!(fx.server.http_get("/healthz").0, 200);
    assert_eq!(fx.server.http_get("/readyz").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_get_the_right_status() {
    let fx = Fixture::start();

    for sql in [
        "DROP TABLE ad_performance",
        "INSERT INTO ad_performance SELECT * FROM ad_performance",
        "DELETE FROM orders",
        "COPY ad_performance TO '/tmp/adlake-e2e-leak.parquet'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let status = fx.query(AGENCY_TOKEN, sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::PermissionDenied, "{sql}: {status:?}");
        assert!(
            status.message().contains("not allowed"),
            "{sql}: {}",
            status.message()
        );
    }
    assert!(!Path::new("/tmp/adlake-e2e-leak.parquet").exists());

    for (sql, needle) in [
        ("SELEC spend FROM ad_performance", "SELEC"),
        ("SELECT nope FROM ad_performance", "nope"),
        ("SELECT * FROM no_such_table", "no_such_table"),
    ] {
        let status = fx.query(AGENCY_TOKEN, sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{sql}: {}",
            status.message()
        );
    }

    // A wrong token, a missing one, a wrong password in the handshake.
    let status = fx
        .query("not-a-token", "SELECT 1")
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut raw = FlightServiceClient::new(fx.channel().await);
    let command = CommandStatementQuery {
        query: "SELECT 1".into(),
        transaction_id: None,
    };
    let status = raw
        .get_flight_info(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut client = FlightSqlServiceClient::new(fx.channel().await);
    let err = client
        .handshake("agency", "wrong")
        .await
        .expect_err("bad password");
    // The Rust client folds the status into an Arrow error: the code's
    // description is what remains of it.
    assert!(
        err.to_string()
            .contains("does not have valid authentication credentials"),
        "{err}"
    );
    // Metadata calls check the caller too.
    let mut client = FlightSqlServiceClient::new(fx.channel().await);
    client.set_token("not-a-token".into());
    let err = client
        .get_catalogs()
        .await
        .expect_err("metadata without auth");
    assert!(
        err.to_string().contains("Unauthenticated")
            || err
                .to_string()
                .contains("does not have valid authentication credentials"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_answers_basic_with_a_bearer_token() {
    use base64::Engine as _;
    let fx = Fixture::start();
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        // "agency:<token>" is 46 bytes: padded and unpadded forms differ.
        let credentials = engine.encode(format!("agency:{AGENCY_TOKEN}"));
        let mut raw = FlightServiceClient::new(fx.channel().await);
        let mut request = Request::new(futures::stream::iter([HandshakeRequest::default()]));
        request.metadata_mut().insert(
            "authorization",
            format!("Basic {credentials}").parse().unwrap(),
        );
        let response = raw.handshake(request).await.unwrap();
        let header = response
            .metadata()
            .get("authorization")
            .expect("authorization header")
            .to_str()
            .unwrap()
            .to_string();
        let token = header.strip_prefix("Bearer ").expect("Bearer token");
        // The token works for queries.
        let got = totals_of(&fx.query(token, TOTALS_SQL).await.unwrap());
        assert_eq!(got.len(), CLIENTS);
    }
    // Through the Rust client's own handshake.
    let mut client = FlightSqlServiceClient::new(fx.channel().await);
    client.handshake("client-a", CLIENT_A_TOKEN).await.unwrap();
    assert!(client.token().is_some());
    let info = client.get_catalogs().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let catalogs = batches[0].column(0).as_string::<i32>();
    assert_eq!(catalogs.value(0), "adlake");
}

#[tokio::test(flavor = "multi_thread")]
async fn rerunning_an_ingest_changes_nothing() {
    let fx = Fixture::start();
    let before = totals_of(&fx.query(AGENCY_TOKEN, TOTALS_SQL).await.unwrap());
    let runs_before = fx
        .query(AGENCY_TOKEN, "SELECT count(*) FROM ingest_runs")
        .await
        .unwrap()[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);

    // The same ingest again, while the server serves.
    fill_warehouse(&fx.warehouse());

    // Wait until the server has followed the new versions (ingest_runs grows).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let runs = fx
            .query(AGENCY_TOKEN, "SELECT count(*) FROM ingest_runs")
            .await
            .unwrap()[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0);
        if runs == 2 * runs_before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not follow the new versions: {runs} runs, expected {}",
            2 * runs_before
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let after = totals_of(&fx.query(AGENCY_TOKEN, TOTALS_SQL).await.unwrap());
    assert_eq!(after, before, "a re-run changed the numbers");
    assert_eq!(after, expected_totals());
}

#[test]
fn bad_startup_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    write_auth_file(&auth, &[("agency", AGENCY_TOKEN, &["*"])]);

    // A missing warehouse with an auth file: no demo, a one-line error.
    let missing = dir.path().join("missing");
    let out = run_server_to_exit(&[
        "--warehouse",
        missing.to_str().unwrap(),
        "--auth-file",
        auth.to_str().unwrap(),
        "--flight-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!missing.exists(), "a missing warehouse must not be created");

    // A malformed auth file names the file and the problem.
    let warehouse = dir.path().join("warehouse");
    std::fs::create_dir(&warehouse).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[principal]]\nname = \"x\"\ntoken_sha256 = \"zz\"\nclients = [\"*\"]\n",
    )
    .unwrap();
    let out = run_server_to_exit(&[
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--auth-file",
        bad.to_str().unwrap(),
        "--flight-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);
    assert!(out.stderr.contains("token_sha256"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    // Bad ingest arguments are rejected before anything is written.
    let out = run_ingest(&[
        "demo",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--clients",
        "0",
    ]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("clients"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        std::fs::read_dir(&warehouse).unwrap().next().is_none(),
        "a rejected demo wrote something"
    );
}

#[test]
fn an_auth_file_naming_an_unknown_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    std::fs::create_dir(&warehouse).unwrap();
    fill_warehouse(&warehouse);
    let auth = dir.path().join("auth.toml");
    write_auth_file(&auth, &[("typo", CLIENT_A_TOKEN, &["no-such-client"])]);
    let out = run_server_to_exit(&[
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--auth-file",
        auth.to_str().unwrap(),
        "--flight-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("no-such-client"), "{}", out.stderr);
}
