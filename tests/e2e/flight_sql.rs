//! Flight SQL against the real `adlake` binary: prepared statements with
//! bound parameters (and the tenant boundary through them), and the limits
//! set by flags (rate per caller, result size), each refusal a clean status
//! after which the server goes on serving other callers.

use adlake_tests::{TestServer, write_auth_file};
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

use super::{AGENCY_TOKEN, CLIENT_A_TOKEN, CLIENT_B_TOKEN, expected_totals, fill_warehouse};

/// A filled warehouse served with `extra` flags.
struct LimitedServer {
    dir: tempfile::TempDir,
    server: TestServer,
    clients: Vec<String>,
}

impl LimitedServer {
    fn start(extra: &[&str]) -> Self {
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
        let server = TestServer::start(&warehouse, Some(&auth), extra);
        Self {
            dir,
            server,
            clients,
        }
    }

    async fn client(&self, token: &str) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(self.server.flight_url())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.server.stderr()));
        let mut client = FlightSqlServiceClient::new(channel);
        client.set_token(token.to_string());
        client
    }
}

/// Runs `sql` as a statement and collects its batches.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.expect("ticket")).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn code_of(err: &FlightError) -> Option<Code> {
    match err {
        FlightError::Tonic(status) => Some(status.code()),
        other => message_code(&other.to_string()),
    }
}

/// The arrow-rs client folds some statuses into its error text.
fn message_code(text: &str) -> Option<Code> {
    [
        ("ResourceExhausted", Code::ResourceExhausted),
        ("InvalidArgument", Code::InvalidArgument),
        ("DeadlineExceeded", Code::DeadlineExceeded),
    ]
    .into_iter()
    .find(|(name, _)| text.contains(name))
    .map(|(_, code)| code)
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_parameters_within_the_callers_scope() {
    let server = LimitedServer::start(&[]);
    let expected = expected_totals();
    let (a, b) = (&server.clients[0], &server.clients[1]);
    let sql = "SELECT count(*) AS n FROM ad_performance WHERE client_id = $1";

    let bind_and_count = async |token: &str, client_id: &str, sql: &str| -> i64 {
        let mut client = server.client(token).await;
        let mut prepared = client
            .prepare(sql.to_string(), None)
            .await
            .expect("prepare");
        let parameters = prepared
            .parameter_schema()
            .expect("parameter schema")
            .clone();
        assert_eq!(parameters.fields().len(), 1, "{sql}");
        assert_eq!(parameters.field(0).data_type(), &DataType::Utf8, "{sql}");
        let batch = RecordBatch::try_new(
            Arc::new(parameters),
            vec![Arc::new(StringArray::from(vec![client_id])) as ArrayRef],
        )
        .expect("parameters");
        prepared.set_parameters(batch).expect("bind");
        let info = prepared.execute().await.expect("execute");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let batches: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .expect("do_get")
            .try_collect()
            .await
            .expect("stream");
        count(&batches)
    };

    let rows = |client: &str| expected[client].3 as i64;
    assert_eq!(bind_and_count(AGENCY_TOKEN, b, sql).await, rows(b));
    assert_eq!(bind_and_count(CLIENT_A_TOKEN, a, sql).await, rows(a));
    // Client A naming client B's id gets nothing of B.
    assert_eq!(bind_and_count(CLIENT_A_TOKEN, b, sql).await, 0);
    let jdbc = "SELECT count(*) AS n FROM ad_performance WHERE client_id = ?";
    assert_eq!(bind_and_count(CLIENT_B_TOKEN, b, jdbc).await, rows(b));
    assert_eq!(bind_and_count(CLIENT_B_TOKEN, a, jdbc).await, 0);
    // A value that tries to widen the filter is only a value.
    assert_eq!(bind_and_count(CLIENT_A_TOKEN, "x' OR '1'='1", sql).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_rate_limit_is_refused_cleanly() {
    // Half a request per second with a burst of 5: 50 requests in a row
    // exceed it whatever the machine's speed (they would need 90 s).
    let server = LimitedServer::start(&["--rate-limit", "0.5", "--rate-burst", "5"]);
    let mut client = server.client(CLIENT_A_TOKEN).await;
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..50 {
        match client.execute("SELECT 1".into(), None).await {
            Ok(_) => ok += 1,
            Err(err) => {
                assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
                assert!(err.to_string().contains("retry after"), "{err}");
                refused += 1;
            }
        }
    }
    assert!(ok >= 5, "the burst is served: {ok}");
    assert!(refused >= 40, "the rest is refused: {refused}");
    // Another caller has its own allowance and is served normally.
    let mut agency = server.client(AGENCY_TOKEN).await;
    let batches = run(&mut agency, "SELECT count(*) FROM ad_performance")
        .await
        .expect("another caller is still served");
    let total: usize = expected_totals().values().map(|t| t.3).sum();
    assert_eq!(count(&batches), total as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_the_size_limit_ends_with_resource_exhausted() {
    let server = LimitedServer::start(&["--max-result-bytes", "100000"]);
    let mut client = server.client(AGENCY_TOKEN).await;
    let err = run(&mut client, "SELECT * FROM ad_performance")
        .await
        .expect_err("too large");
    assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
    assert!(err.to_string().contains("100000 bytes"), "{err}");
    // Small answers still come back, on the same connection.
    let batches = run(&mut client, "SELECT count(*) FROM ad_performance")
        .await
        .expect("a small result");
    let total: usize = expected_totals().values().map(|t| t.3).sum();
    assert_eq!(count(&batches), total as i64);
}

/// A raw request with the caller's bearer token.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    super::bearer(tonic::Request::new(message), token)
}

/// Every value of `batches` as text, to search for another client's id.
fn rendered(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .expect("render")
        .to_string()
}

/// Runs every endpoint of a metadata answer.
async fn fetch_info(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client
            .do_get(endpoint.ticket.expect("ticket"))
            .await
            .expect("do_get");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("stream"));
    }
    batches
}

#[tokio::test(flavor = "multi_thread")]
async fn client_a_reaches_nothing_of_client_b_by_any_route() {
    use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables};
    let server = LimitedServer::start(&[]);
    let expected = expected_totals();
    let (a, b) = (server.clients[0].clone(), server.clients[1].clone());
    assert!(!a.contains(&b) && !b.contains(&a), "ids {a} and {b}");
    let rows_a = expected[&a].3 as i64;
    let mut client_a = server.client(CLIENT_A_TOKEN).await;

    // Counting routes: each must see A's rows or nothing.
    for (sql, want) in [
        (
            format!("SELECT count(*) FROM ad_performance WHERE client_id = '{b}'"),
            0,
        ),
        (
            format!("SELECT count(*) FROM ad_performance WHERE client_id <> '{a}'"),
            0,
        ),
        ("SELECT count(*) FROM ad_performance".to_string(), rows_a),
        (
            format!("SELECT count(*) FROM ad_performance WHERE client_id IN (SELECT '{b}')"),
            0,
        ),
        (
            format!("SELECT (SELECT count(*) FROM orders o WHERE o.client_id = '{b}')"),
            0,
        ),
        (
            format!(
                "SELECT count(*) FROM web_sessions w WHERE EXISTS (SELECT 1 FROM orders o WHERE o.client_id = '{b}' AND w.client_id = o.client_id)"
            ),
            0,
        ),
        (
            "WITH x AS (SELECT * FROM ad_performance) SELECT count(*) FROM x".to_string(),
            rows_a,
        ),
        (
            format!(
                "SELECT count(*) FROM (SELECT client_id FROM ad_performance UNION ALL SELECT client_id FROM orders UNION ALL SELECT client_id FROM web_sessions UNION ALL SELECT client_id FROM ingest_runs UNION ALL SELECT client_id FROM quarantine) u WHERE u.client_id = '{b}'"
            ),
            0,
        ),
        (
            format!(
                "SELECT count(*) FROM ad_performance p JOIN orders o ON p.client_id = o.client_id WHERE o.client_id = '{b}'"
            ),
            0,
        ),
        (
            format!(
                "SELECT count(*) FROM ad_performance WHERE lower(client_id) = lower('{b}') OR client_id LIKE '%{b}%'"
            ),
            0,
        ),
    ] {
        let batches = run(&mut client_a, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(count(&batches), want, "{sql}");
    }

    // Listing routes: B's id appears in no answer A gets.
    for sql in [
        "SELECT DISTINCT client_id FROM ad_performance UNION SELECT DISTINCT client_id FROM orders UNION SELECT DISTINCT client_id FROM web_sessions",
        "SELECT * FROM ingest_runs",
        "SELECT * FROM quarantine",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT * FROM information_schema.df_settings",
        "SELECT client_id, min(date), max(date) FROM ad_performance GROUP BY client_id",
    ] {
        let batches = run(&mut client_a, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!rendered(&batches).contains(&b), "{sql} shows {b}");
    }
    let metadata = [
        client_a.get_catalogs().await.expect("catalogs"),
        client_a
            .get_db_schemas(CommandGetDbSchemas {
                catalog: None,
                db_schema_filter_pattern: None,
            })
            .await
            .expect("schemas"),
        client_a
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema: true,
            })
            .await
            .expect("tables"),
        client_a.get_table_types().await.expect("table types"),
        client_a.get_sql_info(vec![]).await.expect("sql info"),
    ];
    for info in metadata {
        let batches = fetch_info(&mut client_a, info).await;
        assert!(
            !rendered(&batches).contains(&b),
            "a metadata answer shows {b}"
        );
    }

    // Cache warming: B (and the agency) run a statement first; A running
    // the same text gets its own answer, not theirs.
    let sql =
        "SELECT client_id, count(*) AS n FROM ad_performance GROUP BY client_id ORDER BY client_id";
    for token in [CLIENT_B_TOKEN, AGENCY_TOKEN] {
        let mut warm = server.client(token).await;
        let batches = run(&mut warm, sql).await.expect("warm");
        assert!(rendered(&batches).contains(&b));
    }
    let batches = run(&mut client_a, sql).await.expect("after warming");
    let ids = batches[0].column(0).as_string::<i32>();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    assert_eq!(ids.value(0), a);
    assert_eq!(
        batches[0].column(1).as_primitive::<Int64Type>().value(0),
        rows_a
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_settings_and_file_reads_are_refused_on_every_path() {
    let server = LimitedServer::start(&[]);
    let mut client = server.client(AGENCY_TOKEN).await;
    let leak = server.dir.path().join("leak.parquet");
    let leak = leak.to_str().expect("utf-8 path");
    let refused = [
        "DROP TABLE ad_performance".to_string(),
        "CREATE TABLE t AS SELECT 1".to_string(),
        "CREATE VIEW v AS SELECT * FROM ad_performance".to_string(),
        "INSERT INTO ad_performance SELECT * FROM ad_performance".to_string(),
        "UPDATE orders SET total_price = 0".to_string(),
        "DELETE FROM orders".to_string(),
        format!("COPY ad_performance TO '{leak}'"),
        format!("COPY (SELECT * FROM ad_performance) TO '{leak}' STORED AS PARQUET"),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "SET datafusion.execution.target_partitions = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SELECT * FROM 'file:///etc/hostname'".to_string(),
        format!(
            "SELECT * FROM '{}'",
            server.dir.path().join("warehouse/ad_performance").display()
        ),
        "SELECT * FROM read_csv('/etc/passwd')".to_string(),
        "SELECT * FROM read_parquet('/tmp/x.parquet')".to_string(),
        "SELECT 1; DROP TABLE orders".to_string(),
    ];
    for sql in &refused {
        let err = run(&mut client, sql).await.expect_err(sql);
        let code = code_of(&err);
        assert!(
            matches!(code, Some(Code::PermissionDenied | Code::InvalidArgument)),
            "{sql}: {err}"
        );
        // Prepared, the same statement is refused at preparation.
        let err = client.prepare(sql.clone(), None).await.expect_err(sql);
        assert!(
            !err.to_string().contains("Internal"),
            "{sql} prepared: {err}"
        );
    }
    assert!(!std::path::Path::new(leak).exists());
    // The tables are intact.
    let batches = run(&mut client, "SELECT count(*) FROM ad_performance")
        .await
        .expect("count");
    let total: usize = expected_totals().values().map(|t| t.3).sum();
    assert_eq!(count(&batches), total as i64);
}

/// The checks every refusal of malformed input must pass.
fn clean_refusal(status: &tonic::Status, what: &str) {
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument
                | Code::Unimplemented
                | Code::PermissionDenied
                | Code::NotFound
                | Code::OutOfRange
                | Code::ResourceExhausted
        ),
        "{what}: {status:?}"
    );
    assert!(!status.message().is_empty(), "{what}");
    // Every refusal the service makes, malformed envelopes included,
    // carries the request id and none of the protobuf decoder's own words.
    // (Only a message past the size limit is refused by the gRPC
    // transport itself, before any service runs: see `oversized`.)
    if !is_oversized_refusal(status) {
        assert!(
            status.metadata().get("x-request-id").is_some(),
            "{what}: no request id: {status:?}"
        );
    }
    for decoder_text in ["DecodeError", "ParseError", "failed to decode"] {
        assert!(
            !status.message().contains(decoder_text),
            "{what}: {status:?}"
        );
    }
}

/// tonic's refusal of a request past the decoding limit.
fn is_oversized_refusal(status: &tonic::Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_oversized_and_crowded_input_gets_clean_errors_and_service_goes_on() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::sql::{
        Any, CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt,
        TicketStatementQuery,
    };
    use arrow_flight::{Action, FlightData, FlightDescriptor, Ticket};
    use prost::Message;

    let server = LimitedServer::start(&[]);
    let channel = Channel::from_shared(server.server.flight_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = FlightServiceClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);

    let statement_ticket = |handle: &[u8]| {
        TicketStatementQuery {
            statement_handle: handle.to_vec().into(),
        }
        .as_any()
        .encode_to_vec()
    };
    let tickets: Vec<(&str, Vec<u8>)> = vec![
        ("empty ticket", vec![]),
        (
            "random bytes",
            vec![0xff, 0x00, 0x13, 0x37, 0x80, 0x80, 0x80],
        ),
        (
            "unknown type",
            Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![1, 2].into(),
            }
            .encode_to_vec(),
        ),
        ("foreign handle", statement_ticket(b"SELECT 1")),
        (
            "corrupt v2 handle",
            statement_ticket(b"adlake.sql.v2\n\xff\xff\xff"),
        ),
        (
            "non-UTF-8 SQL",
            statement_ticket(b"adlake.sql.v1\n\xc3\x28"),
        ),
        (
            "forged DDL handle",
            statement_ticket(b"adlake.sql.v1\nDROP TABLE orders"),
        ),
    ];
    for (what, ticket) in tickets {
        let status = match raw.do_get(bearer(Ticket::new(ticket), AGENCY_TOKEN)).await {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .try_collect::<Vec<_>>()
                .await
                .expect_err(what),
        };
        clean_refusal(&status, what);
        if matches!(what, "empty ticket" | "random bytes" | "unknown type") {
            assert_eq!(status.code(), Code::InvalidArgument, "{what}");
            assert!(
                status.message().starts_with("malformed Flight SQL command"),
                "{what}: {status:?}"
            );
        }
    }

    let descriptors = vec![
        (
            "garbage command",
            FlightDescriptor::new_cmd(vec![0x0a, 0xff, 0xff]),
        ),
        (
            "path descriptor",
            FlightDescriptor::new_path(vec!["ad_performance".into()]),
        ),
        (
            "garbage prepared handle",
            FlightDescriptor::new_cmd(
                CommandPreparedStatementQuery {
                    prepared_statement_handle: vec![1, 2, 3].into(),
                }
                .as_any()
                .encode_to_vec(),
            ),
        ),
    ];
    for (what, descriptor) in descriptors {
        let status = raw
            .get_flight_info(bearer(descriptor, AGENCY_TOKEN))
            .await
            .expect_err(what);
        clean_refusal(&status, what);
    }
    for (what, action) in [
        ("unknown action", Action::new("DropEverything", vec![])),
        (
            "garbage prepare body",
            Action::new("CreatePreparedStatement", vec![0xff; 9]),
        ),
        (
            "garbage close body",
            Action::new("ClosePreparedStatement", vec![0x0a]),
        ),
    ] {
        let status = match raw.do_action(bearer(action, AGENCY_TOKEN)).await {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .try_collect::<Vec<_>>()
                .await
                .expect_err(what),
        };
        clean_refusal(&status, what);
    }
    let garbage_put = FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(vec![0xde, 0xad])),
        data_header: vec![0xff; 16].into(),
        ..Default::default()
    };
    let status = match raw
        .do_put(bearer(futures::stream::iter([garbage_put]), AGENCY_TOKEN))
        .await
    {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .try_collect::<Vec<_>>()
            .await
            .expect_err("garbage DoPut"),
    };
    clean_refusal(&status, "garbage DoPut");

    // Past the server's 64 MiB decoding limit.
    let huge = CommandStatementQuery {
        query: format!("SELECT '{}'", "x".repeat(70 * 1024 * 1024)),
        transaction_id: None,
    };
    let status = raw
        .get_flight_info(bearer(
            FlightDescriptor::new_cmd(huge.as_any().encode_to_vec()),
            AGENCY_TOKEN,
        ))
        .await
        .expect_err("oversized");
    clean_refusal(&status, "oversized message");
    assert!(is_oversized_refusal(&status), "{status:?}");
    drop(huge);

    // Thousands of connections: idle sockets that never speak HTTP/2, and
    // many real clients at once.
    let addr = server.server.flight_addr.clone();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let url = server.server.flight_url();
        tasks.spawn(async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut client = FlightSqlServiceClient::new(channel);
            client.set_token(CLIENT_A_TOKEN.to_string());
            run(&mut client, "SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
    let mut served = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task") {
            Ok(()) => served += 1,
            Err(text) => assert!(!text.contains("Internal"), "{text}"),
        }
    }
    assert!(served > 0, "no crowded client was served");
    drop(idle);

    // A healthy caller is served with the right numbers afterwards.
    let mut agency = server.client(AGENCY_TOKEN).await;
    let batches = run(&mut agency, "SELECT count(*) FROM ad_performance")
        .await
        .expect("healthy caller");
    let total: usize = expected_totals().values().map(|t| t.3).sum();
    assert_eq!(count(&batches), total as i64);
    let _ = channel;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_concurrent_query_cap_refuses_with_a_retry_hint() {
    use futures::StreamExt;
    let server = LimitedServer::start(&["--max-concurrent-queries", "1"]);
    let mut first = server.client(AGENCY_TOKEN).await;
    // A result far larger than any transport buffer: its stream cannot
    // finish while nobody reads it, so it holds the only query slot.
    let info = first
        .execute(
            "SELECT a.campaign_name, b.ad_name FROM ad_performance a CROSS JOIN ad_performance b"
                .into(),
            None,
        )
        .await
        .expect("plan");
    let mut stream = first
        .do_get(info.endpoint[0].ticket.clone().expect("ticket"))
        .await
        .expect("do_get");
    let _ = stream.next().await;

    let mut second = server.client(CLIENT_A_TOKEN).await;
    let err = run(&mut second, "SELECT 1")
        .await
        .expect_err("over the cap");
    assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    drop(stream);
    drop(first);

    // The slot comes back once the first stream is gone (the server notices
    // the closed stream asynchronously, so ask a few times).
    let mut freed = None;
    for _ in 0..50 {
        match run(&mut second, "SELECT count(*) FROM ad_performance").await {
            Ok(batches) => {
                freed = Some(count(&batches));
                break;
            }
            Err(err) => {
                assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let rows_a = expected_totals()[&server.clients[0]].3 as i64;
    assert_eq!(freed, Some(rows_a));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_its_memory_limit_fails_with_resource_exhausted() {
    let server = LimitedServer::start(&["--query-memory-bytes", "100000"]);
    let rows_a = expected_totals()[&server.clients[0]].3 as i64;
    let mut second = server.client(CLIENT_A_TOKEN).await;
    // A hash join whose build side needs more than the 100 kB each query
    // may hold fails cleanly instead of taking the server's memory.
    let err = run(
        &mut second,
        "SELECT count(*) FROM ad_performance a JOIN ad_performance b ON a.ad_id = b.ad_id AND a.campaign_name = b.campaign_name",
    )
    .await
    .expect_err("over the memory limit");
    assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
    let batches = run(&mut second, "SELECT count(*) FROM ad_performance")
        .await
        .expect("small query after");
    assert_eq!(count(&batches), rows_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_from_certificate_files_with_jwt_callers() {
    use jsonwebtoken::{EncodingKey, Header};
    use tonic::transport::{Certificate, ClientTlsConfig};

    let files = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key, secret) = (
        files.path().join("cert.pem"),
        files.path().join("key.pem"),
        files.path().join("jwt.secret"),
    );
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let secret_bytes = b"e2e-hs256-secret-0123456789abcdef!";
    std::fs::write(&secret, secret_bytes).unwrap();
    let server = LimitedServer::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--jwt-hs256-secret-file",
        secret.to_str().unwrap(),
    ]);
    let a = &server.clients[0];
    let rows_a = expected_totals()[a].3 as i64;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.server.flight_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("TLS connect: {e:?}\n{}", server.server.stderr()));

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let jwt = |secret: &[u8], clients: &[&str]| {
        jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"sub": "dashboard", "clients": clients, "exp": exp}),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    // A JWT naming client A over TLS: A's rows only.
    let mut client = FlightSqlServiceClient::new(channel.clone());
    client.set_token(jwt(secret_bytes, &[a.as_str()]));
    let batches = run(&mut client, "SELECT count(*) FROM ad_performance")
        .await
        .expect("JWT over TLS");
    assert_eq!(count(&batches), rows_a);
    // The auth file's tokens still work beside JWTs.
    let mut file_token = FlightSqlServiceClient::new(channel.clone());
    file_token.set_token(CLIENT_A_TOKEN.to_string());
    let batches = run(&mut file_token, "SELECT count(*) FROM ad_performance")
        .await
        .expect("file token over TLS");
    assert_eq!(count(&batches), rows_a);
    // A JWT signed with another secret is refused.
    let mut forged = FlightSqlServiceClient::new(channel.clone());
    forged.set_token(jwt(b"another-secret-that-is-32-bytes-long!", &["*"]));
    let err = run(&mut forged, "SELECT 1").await.expect_err("forged JWT");
    assert!(
        err.to_string().contains("Unauthenticated")
            || err.to_string().contains("authentication credentials"),
        "{err}"
    );
    // Plaintext gRPC does not get through a TLS port.
    let plain = Channel::from_shared(server.server.flight_url())
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let mut client = FlightSqlServiceClient::new(plain);
        client.set_token(CLIENT_A_TOKEN.to_string());
        assert!(run(&mut client, "SELECT 1").await.is_err());
    }
}

/// The status a Flight SQL call ended with.
fn status_of(err: &FlightError) -> &tonic::Status {
    match err {
        FlightError::Tonic(status) => status,
        other => panic!("not a gRPC status: {other}"),
    }
}

fn request_id_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no request id: {status:?}"))
        .to_string()
}

/// The request ids of the spans a JSON log line of the server was written
/// in.
fn span_request_ids(line: &serde_json::Value) -> Vec<String> {
    line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|span| span["request_id"].as_str().map(str::to_string))
        .collect()
}

/// The server's JSON log lines that contain `text`.
fn log_lines_with(server: &TestServer, text: &str) -> Vec<serde_json::Value> {
    server
        .stderr()
        .lines()
        .filter(|line| line.contains(text))
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect()
}

/// An aggregate over a trillion generated rows: no machine finishes it
/// within a second, so the time limit, not the data, ends it.
const ENDLESS_SQL: &str = "SELECT sum(value % 7) FROM generate_series(1, 1000000000000)";

#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_its_time_limit_ends_with_deadline_exceeded_and_logs_carry_its_id() {
    // The binary logs JSON when stderr is not a terminal (a file here).
    let server = LimitedServer::start(&["--query-timeout-secs", "1"]);
    let mut client = server.client(AGENCY_TOKEN).await;
    let err = run(&mut client, ENDLESS_SQL)
        .await
        .expect_err("past the time limit");
    let status = status_of(&err);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("longer than the server's limit of 1 s"),
        "{status:?}"
    );
    let timed_out = request_id_of(status);

    // The server goes on: a healthy query right after, on the same
    // connection, with the right answer.
    let batches = run(&mut client, "SELECT count(*) FROM ad_performance")
        .await
        .expect("a healthy query after the timeout");
    let total: usize = expected_totals().values().map(|t| t.3).sum();
    assert_eq!(count(&batches), total as i64);

    // A query refused at planning, with a column name found nowhere else
    // in the log, so its lines can be found without the id.
    let marker = "no_such_column_5e1b";
    let err = run(&mut client, &format!("SELECT {marker} FROM ad_performance"))
        .await
        .expect_err("unknown column");
    let status = status_of(&err);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let refused = request_id_of(status);

    // Every line logged for either call carries the call's id in its span,
    // the lines written while the result streamed (the time limit) too.
    let deadline_lines = log_lines_with(&server.server, &timed_out);
    assert!(
        deadline_lines
            .iter()
            .any(|line| line["fields"]["code"] == "DeadlineExceeded"),
        "the timeout was not logged: {deadline_lines:?}"
    );
    for line in &deadline_lines {
        assert_eq!(span_request_ids(line), vec![timed_out.clone()], "{line}");
    }
    let marker_lines = log_lines_with(&server.server, marker);
    assert!(!marker_lines.is_empty(), "the refusal was not logged");
    for line in marker_lines
        .iter()
        .chain(&log_lines_with(&server.server, &refused))
    {
        assert_eq!(span_request_ids(line), vec![refused.clone()], "{line}");
        assert_eq!(line["span"]["principal"], "agency", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_caller_cannot_take_every_query_slot() {
    use futures::StreamExt;
    let server = LimitedServer::start(&["--max-concurrent-queries-per-caller", "2"]);
    // Results far larger than any transport buffer: a stream nobody reads
    // cannot finish, so each holds one of client A's two slots.
    let big = "SELECT a.campaign_name, b.ad_name FROM ad_performance a CROSS JOIN ad_performance b";
    let mut a = server.client(CLIENT_A_TOKEN).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let info = a.execute(big.into(), None).await.expect("plan");
        let mut stream = a
            .do_get(info.endpoint[0].ticket.clone().expect("ticket"))
            .await
            .expect("a slot of client A");
        let _ = stream.next().await;
        held.push(stream);
    }

    // A third query of A is refused, with a retry hint.
    let err = run(&mut a, "SELECT 1").await.expect_err("over A's cap");
    let status = status_of(&err);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limit of 2 queries at once"),
        "{status:?}"
    );
    assert_eq!(
        status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "{status:?}"
    );

    // Client B is served meanwhile, with its own numbers.
    let mut b = server.client(CLIENT_B_TOKEN).await;
    let batches = run(&mut b, "SELECT count(*) FROM ad_performance")
        .await
        .expect("client B is served while A holds its slots");
    let rows_b = expected_totals()[&server.clients[1]].3 as i64;
    assert_eq!(count(&batches), rows_b);

    // A's slots come back once its streams are gone (the server notices
    // closed streams asynchronously, so ask a few times).
    drop(held);
    let rows_a = expected_totals()[&server.clients[0]].3 as i64;
    let mut served = None;
    for _ in 0..50 {
        match run(&mut a, "SELECT count(*) FROM ad_performance").await {
            Ok(batches) => {
                served = Some(count(&batches));
                break;
            }
            Err(err) => {
                assert_eq!(code_of(&err), Some(Code::ResourceExhausted), "{err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(served, Some(rows_a));
}
