//! The service over a real gRPC connection, against an engine on an empty
//! warehouse (every table exists, with no rows): authentication, statement
//! and prepared-statement round trips, metadata answers and error statuses.
//! Tenancy on real data is covered by the end-to-end tests.

use std::net::SocketAddr;

use adlake_engine::Scope;
use arrow::array::AsArray;
use arrow::datatypes::Schema;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, CommandStatementQuery};
use arrow_flight::{FlightDescriptor, HandshakeRequest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use futures::TryStreamExt;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

use super::*;
use crate::auth::tests::StaticAuthenticator;
use crate::error::REQUEST_ID_HEADER;

const AGENCY_TOKEN: &str = "agency-token";
const ACME_TOKEN: &str = "acme-token";

struct TestServer {
    addr: SocketAddr,
    engine: Arc<Engine>,
    task: tokio::task::JoinHandle<()>,
    _warehouse: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start() -> Self {
        let warehouse = tempfile::tempdir().expect("tempdir");
        let location = warehouse.path().to_str().expect("utf-8 path");
        let engine = Arc::new(Engine::open(location).await.expect("open empty warehouse"));
        let authenticator = StaticAuthenticator(vec![
            (
                AGENCY_TOKEN,
                Principal {
                    name: "agency".into(),
                    scope: Scope::AllClients,
                },
            ),
            (
                ACME_TOKEN,
                Principal {
                    name: "acme".into(),
                    scope: Scope::clients(["acme"]),
                },
            ),
        ]);
        let service = AdlakeFlightSqlService::new(
            adlake_engine::QueryExecutor::new(Arc::clone(&engine)),
            Arc::new(authenticator),
        )
        .into_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Self {
            addr,
            engine,
            task,
            _warehouse: warehouse,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    async fn sql_client(&self, token: Option<&str>) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        if let Some(token) = token {
            client.set_token(token.to_string());
        }
        client
    }

    async fn raw_client(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
    }
}

fn with_auth<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("header value"));
    }
    request
}

fn statement_descriptor(sql: &str) -> FlightDescriptor {
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

fn request_id(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Runs every endpoint of `info` and collects the batches.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream: FlightRecordBatchStream = client.do_get(ticket).await.expect("do_get");
        let mut part: Vec<RecordBatch> = stream.try_collect().await.expect("stream");
        batches.append(&mut part);
    }
    batches
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|batch| {
            let array = batch.column_by_name(column).expect("column");
            array
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn handshake_with_basic_returns_the_bearer_header() {
    let server = TestServer::start().await;
    for encoded in [
        base64::engine::general_purpose::STANDARD.encode(format!("agency:{AGENCY_TOKEN}")),
        STANDARD_NO_PAD.encode(format!("agency:{AGENCY_TOKEN}")),
    ] {
        let mut client = server.raw_client().await;
        let request = with_auth(
            stream::iter([HandshakeRequest::default()]),
            Some(&format!("Basic {encoded}")),
        );
        let response = client.handshake(request).await.expect("handshake");
        let bearer = response
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        assert_eq!(bearer, Some(format!("Bearer {AGENCY_TOKEN}").as_str()));
        assert!(response.metadata().get(REQUEST_ID_HEADER).is_some());
    }

    // The arrow-rs client: handshake, then use the returned token.
    let mut client = server.sql_client(None).await;
    client
        .handshake("anyone", ACME_TOKEN)
        .await
        .expect("handshake");
    assert_eq!(client.token().map(String::as_str), Some(ACME_TOKEN));
    let info = client
        .execute("SELECT 1 AS one".into(), None)
        .await
        .expect("execute");
    assert_eq!(
        fetch(&mut client, info)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1
    );
}

#[tokio::test]
async fn handshake_accepts_bearer_and_refuses_bad_credentials() {
    let server = TestServer::start().await;
    let mut client = server.raw_client().await;
    let ok = client
        .handshake(with_auth(
            stream::iter([HandshakeRequest::default()]),
            Some(&format!("Bearer {AGENCY_TOKEN}")),
        ))
        .await
        .expect("bearer handshake");
    assert!(ok.metadata().get("authorization").is_some());

    let wrong = STANDARD_NO_PAD.encode("agency:nope");
    for header in [
        None,
        Some(format!("Basic {wrong}")),
        Some("Basic ***".to_string()),
    ] {
        let status = client
            .handshake(with_auth(
                stream::iter([HandshakeRequest::default()]),
                header.as_deref(),
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{header:?}: {status}");
        assert!(request_id(&status).is_some());
        assert!(!status.message().contains("nope"), "{}", status.message());
    }
}

#[tokio::test]
async fn every_call_needs_a_valid_bearer_token() {
    let server = TestServer::start().await;
    let mut client = server.raw_client().await;
    let basic = format!(
        "Basic {}",
        STANDARD_NO_PAD.encode(format!("agency:{AGENCY_TOKEN}"))
    );
    for header in [None, Some("Bearer wrong"), Some(basic.as_str())] {
        let status = client
            .get_flight_info(with_auth(statement_descriptor("SELECT 1"), header))
            .await
            .expect_err("unauthenticated");
        assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");

        let catalogs = arrow_flight::sql::CommandGetCatalogs {};
        let status = client
            .get_flight_info(with_auth(
                FlightDescriptor::new_cmd(catalogs.as_any().encode_to_vec()),
                header,
            ))
            .await
            .expect_err("metadata needs a token too");
        assert_eq!(status.code(), Code::Unauthenticated);

        let ticket = Ticket::new(
            TicketStatementQuery {
                statement_handle: handle::encode("SELECT 1"),
            }
            .as_any()
            .encode_to_vec(),
        );
        let status = client
            .do_get(with_auth(ticket, header))
            .await
            .expect_err("tickets are re-checked");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn statement_schema_matches_the_stream() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let sql = "SELECT client_id, date, spend, impressions FROM ad_performance";
    let info = client.execute(sql.into(), None).await.expect("execute");
    assert_eq!(info.total_records, -1);
    assert_eq!(info.endpoint.len(), 1);
    let advertised = info.clone().try_decode_schema().expect("schema");
    assert_eq!(
        advertised
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["client_id", "date", "spend", "impressions"]
    );

    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = client.do_get(ticket).await.expect("do_get");
    let mut stream = stream;
    while stream.try_next().await.expect("batch").is_some() {}
    // The schema arrives even for an empty result, and is the advertised one.
    let streamed = stream.schema().cloned().expect("schema sent");
    assert_eq!(streamed.as_ref(), &advertised);
}

#[tokio::test]
async fn prepared_statements_round_trip() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(ACME_TOKEN)).await;
    let mut prepared = client
        .prepare("SELECT 42 AS answer, 'x' AS label".into(), None)
        .await
        .expect("prepare");
    assert_eq!(prepared.dataset_schema().expect("schema").fields().len(), 2);
    assert_eq!(
        prepared.parameter_schema().expect("params"),
        &Schema::empty()
    );
    let info = prepared.execute().await.expect("execute");
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "label"), ["x"]);
    prepared.close().await.expect("close is a no-op");
}

#[tokio::test]
async fn sql_errors_have_the_right_codes_and_a_request_id() {
    let server = TestServer::start().await;
    let mut client = server.raw_client().await;
    let bearer = format!("Bearer {AGENCY_TOKEN}");
    let cases = [
        ("SELEC 1", Code::InvalidArgument),
        ("SELECT nope FROM ad_performance", Code::InvalidArgument),
        ("SELECT * FROM no_such_table", Code::InvalidArgument),
        ("DROP TABLE ad_performance", Code::PermissionDenied),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            Code::PermissionDenied,
        ),
    ];
    for (sql, code) in cases {
        let status = client
            .get_flight_info(with_auth(statement_descriptor(sql), Some(&bearer)))
            .await
            .expect_err(sql);
        assert_eq!(status.code(), code, "{sql}: {}", status.message());
        assert!(request_id(&status).is_some(), "{sql}");
    }

    let status = client
        .do_get(with_auth(
            Ticket::new(
                TicketStatementQuery {
                    statement_handle: "not ours".into(),
                }
                .as_any()
                .encode_to_vec(),
            ),
            Some(&bearer),
        ))
        .await
        .expect_err("foreign handle");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn updates_are_refused_as_read_only() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let err = client
        .execute_update("DELETE FROM ad_performance".into(), None)
        .await
        .expect_err("read-only");
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[tokio::test]
async fn catalogs_and_schemas() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;

    let info = client.get_catalogs().await.expect("catalogs");
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "catalog_name"), [CATALOG_NAME]);

    let schemas = |catalog: Option<&str>, pattern: Option<&str>| CommandGetDbSchemas {
        catalog: catalog.map(str::to_string),
        db_schema_filter_pattern: pattern.map(str::to_string),
    };
    for (catalog, pattern, expected) in [
        (None, None, 1),
        (Some(CATALOG_NAME), Some("pub%"), 1),
        (None, Some("p_blic"), 1),
        (None, Some("x%"), 0),
        (Some("other"), None, 0),
        (Some(""), None, 0),
    ] {
        let info = client
            .get_db_schemas(schemas(catalog, pattern))
            .await
            .expect("schemas");
        let batches = fetch(&mut client, info).await;
        let names = strings(&batches, "db_schema_name");
        assert_eq!(names.len(), expected, "{catalog:?} {pattern:?}");
        if expected == 1 {
            assert_eq!(names, [SCHEMA_NAME]);
            assert_eq!(strings(&batches, "catalog_name"), [CATALOG_NAME]);
        }
    }
}

#[tokio::test]
async fn tables_with_and_without_schemas() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let all: Vec<String> = server.engine.tables().into_iter().map(|t| t.name).collect();
    assert!(all.iter().any(|t| t == "ad_performance"), "{all:?}");

    let tables = |pattern: Option<&str>, types: &[&str], include_schema: bool| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: pattern.map(str::to_string),
        table_types: types.iter().map(|t| t.to_string()).collect(),
        include_schema,
    };

    let info = client
        .get_tables(tables(None, &[], false))
        .await
        .expect("tables");
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "table_name"), all);
    assert!(strings(&batches, "table_type").iter().all(|t| t == "TABLE"));

    let info = client
        .get_tables(tables(Some("ad\\_perf%"), &["TABLE"], true))
        .await
        .expect("tables with schema");
    let advertised = info.clone().try_decode_schema().expect("schema");
    assert!(advertised.field_with_name("table_schema").is_ok());
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "table_name"), ["ad_performance"]);
    let encoded = batches[0]
        .column_by_name("table_schema")
        .expect("table_schema")
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let schema = Schema::try_from(IpcMessage(encoded.into())).expect("IPC schema");
    let expected = server
        .engine
        .tables()
        .into_iter()
        .find(|t| t.name == "ad_performance")
        .expect("table")
        .schema;
    assert_eq!(&schema, expected.as_ref());

    let info = client
        .get_tables(tables(None, &["VIEW"], false))
        .await
        .expect("views");
    assert!(strings(&fetch(&mut client, info).await, "table_name").is_empty());
}

#[tokio::test]
async fn table_types_and_sql_info() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;

    let info = client.get_table_types().await.expect("table types");
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "table_type"), ["TABLE", "VIEW"]);

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .expect("sql info");
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test]
async fn prepared_statements_bind_dollar_and_question_mark_parameters() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(ACME_TOKEN)).await;
    let values = "(VALUES ('a', 1), ('b', 2), ('it''s', 3)) t(label, n)";
    for sql in [
        format!("SELECT label, n FROM {values} WHERE label = $1 AND n >= $2"),
        format!("SELECT label, n FROM {values} WHERE label = ? AND n >= ?"),
    ] {
        let mut prepared = client.prepare(sql.clone(), None).await.expect("prepare");
        let parameters = prepared
            .parameter_schema()
            .expect("parameter schema")
            .clone();
        let types: Vec<(String, DataType)> = parameters
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            types,
            [
                ("$1".into(), DataType::Utf8),
                ("$2".into(), DataType::Int64)
            ],
            "{sql}"
        );

        // The same prepared statement, bound twice with different values.
        for (label, expected) in [("b", vec!["b"]), ("it's", vec!["it's"]), ("zzz", vec![])] {
            let batch = RecordBatch::try_new(
                Arc::new(parameters.clone()),
                vec![
                    Arc::new(arrow::array::StringArray::from(vec![label])),
                    Arc::new(arrow::array::Int64Array::from(vec![1])),
                ],
            )
            .expect("parameters");
            prepared.set_parameters(batch).expect("bind");
            let info = prepared.execute().await.expect("execute");
            let batches = fetch(&mut client, info).await;
            assert_eq!(strings(&batches, "label"), expected, "{sql} with {label}");
        }
        prepared.close().await.expect("close");
    }
}

#[tokio::test]
async fn unbound_or_misbound_parameters_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut raw = server.raw_client().await;
    let bearer = format!("Bearer {AGENCY_TOKEN}");
    // A statement (not prepared) cannot carry values at all.
    let status = raw
        .get_flight_info(with_auth(
            statement_descriptor("SELECT * FROM ad_performance WHERE client_id = $1"),
            Some(&bearer),
        ))
        .await
        .expect_err("unbound");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("parameter"),
        "{}",
        status.message()
    );

    // A prepared statement executed before binding.
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let mut prepared = client
        .prepare(
            "SELECT client_id FROM ad_performance WHERE client_id = ?".into(),
            None,
        )
        .await
        .expect("prepare");
    let err = prepared.execute().await.expect_err("not bound");
    assert!(err.to_string().contains("bind values"), "{err}");

    // Too many values.
    let two = RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(arrow::array::StringArray::from(vec!["x"])) as arrow::array::ArrayRef,
        ),
        (
            "b",
            Arc::new(arrow::array::StringArray::from(vec!["y"])) as _,
        ),
    ])
    .expect("batch");
    prepared.set_parameters(two).expect("set");
    let err = prepared
        .execute()
        .await
        .expect_err("two values for one parameter");
    assert!(err.to_string().contains("1 parameter(s), 2 bound"), "{err}");
}

#[tokio::test]
async fn sql_info_over_the_wire_has_every_jdbc_key_with_its_type() {
    use metadata::tests::JDBC_KEYS;
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    // No keys asked: every key the server knows.
    let info = client.get_sql_info(vec![]).await.expect("sql info");
    let advertised = info.clone().try_decode_schema().expect("schema");
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches[0].schema().as_ref(), &advertised);
    let mut served = std::collections::HashMap::new();
    for batch in &batches {
        let names = batch
            .column(0)
            .as_primitive::<arrow::datatypes::UInt32Type>();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::UnionArray>()
            .expect("dense union");
        for row in 0..batch.num_rows() {
            served.insert(names.value(row), values.type_id(row));
        }
    }
    for (key, kind) in JDBC_KEYS {
        assert_eq!(
            served.get(&(*key as u32)).copied(),
            Some(*kind as i8),
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn key_and_type_info_answers_have_the_spec_shape() {
    use arrow_flight::sql::{
        CommandGetCrossReference, CommandGetExportedKeys, CommandGetImportedKeys,
        CommandGetPrimaryKeys, CommandGetXdbcTypeInfo,
    };
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let table = || "ad_performance".to_string();
    let infos = [
        client
            .get_primary_keys(CommandGetPrimaryKeys {
                catalog: None,
                db_schema: None,
                table: table(),
            })
            .await
            .expect("primary keys"),
        client
            .get_imported_keys(CommandGetImportedKeys {
                catalog: None,
                db_schema: None,
                table: table(),
            })
            .await
            .expect("imported keys"),
        client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: None,
                db_schema: None,
                table: table(),
            })
            .await
            .expect("exported keys"),
        client
            .get_cross_reference(CommandGetCrossReference {
                pk_catalog: None,
                pk_db_schema: None,
                pk_table: table(),
                fk_catalog: None,
                fk_db_schema: None,
                fk_table: "orders".into(),
            })
            .await
            .expect("cross reference"),
    ];
    for (i, info) in infos.into_iter().enumerate() {
        let advertised = info.clone().try_decode_schema().expect("schema");
        assert_eq!(advertised.fields().len(), if i == 0 { 6 } else { 13 });
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        let mut rows = 0;
        while let Some(batch) = stream.try_next().await.expect("batch") {
            rows += batch.num_rows();
        }
        assert_eq!(rows, 0);
        assert_eq!(stream.schema().map(|s| s.as_ref()), Some(&advertised));
    }

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("xdbc");
    let batches = fetch(&mut client, info).await;
    let names = strings(&batches, "type_name");
    for expected in [
        "BIGINT",
        "DECIMAL",
        "VARCHAR",
        "DATE",
        "TIMESTAMP",
        "BOOLEAN",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// What an old JDBC or ODBC driver cannot read.
fn has_view_or_dictionary(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..)
        | DataType::Utf8View
        | DataType::BinaryView
        | DataType::ListView(_)
        | DataType::LargeListView(_) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            has_view_or_dictionary(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| has_view_or_dictionary(f.data_type())),
        DataType::Map(f, _) => has_view_or_dictionary(f.data_type()),
        DataType::Union(fields, _) => fields
            .iter()
            .any(|(_, f)| has_view_or_dictionary(f.data_type())),
        _ => false,
    }
}

#[tokio::test]
async fn no_advertised_schema_has_view_or_dictionary_types() {
    let server = TestServer::start().await;
    let mut client = server.sql_client(Some(AGENCY_TOKEN)).await;
    let mut schemas: Vec<(String, Schema)> = Vec::new();
    for table in server.engine.tables() {
        let sql = format!("SELECT * FROM {}", table.name);
        let info = client.execute(sql.clone(), None).await.expect("execute");
        schemas.push((sql, info.try_decode_schema().expect("schema")));
        schemas.push((
            format!("{} (catalog)", table.name),
            table.schema.as_ref().clone(),
        ));
    }
    for sql in [
        "SELECT client_id, platform, count(*) AS n FROM ad_performance GROUP BY 1, 2",
        "SELECT arrow_cast('x', 'Utf8View') AS v, arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d",
        "SELECT table_name FROM information_schema.tables",
    ] {
        let info = client.execute(sql.into(), None).await.expect(sql);
        schemas.push((sql.into(), info.try_decode_schema().expect("schema")));
        let prepared = client.prepare(sql.into(), None).await.expect(sql);
        schemas.push((
            format!("{sql} (prepared)"),
            prepared.dataset_schema().expect("dataset schema").clone(),
        ));
    }
    // Parameters compared with partition columns (dictionary-encoded in the
    // scan) and with view-typed expressions are advertised in plain types.
    for sql in [
        "SELECT count(*) AS n FROM ad_performance WHERE client_id = $1 AND platform = $2",
        "SELECT count(*) AS n FROM orders WHERE client_id = ? AND date >= ?",
        "SELECT arrow_cast('x', 'Utf8View') = $1 AS v",
    ] {
        let prepared = client.prepare(sql.into(), None).await.expect(sql);
        let parameters = prepared.parameter_schema().expect("parameter schema");
        assert!(!parameters.fields().is_empty(), "{sql}");
        schemas.push((format!("{sql} (parameters)"), parameters.clone()));
    }
    let metadata_infos = [
        client.get_catalogs().await.expect("catalogs"),
        client
            .get_db_schemas(CommandGetDbSchemas {
                catalog: None,
                db_schema_filter_pattern: None,
            })
            .await
            .expect("schemas"),
        client
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema: true,
            })
            .await
            .expect("tables"),
        client.get_table_types().await.expect("table types"),
        client.get_sql_info(vec![]).await.expect("sql info"),
    ];
    for info in metadata_infos {
        schemas.push(("metadata".into(), info.try_decode_schema().expect("schema")));
    }
    for (what, schema) in &schemas {
        for field in schema.fields() {
            assert!(
                !has_view_or_dictionary(field.data_type()),
                "{what}: {} is {}",
                field.name(),
                field.data_type()
            );
        }
    }
}

/// What a `tracing` subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl CapturedLogs {
    /// JSON logs of this thread, as the binary writes them (span list
    /// on), until the guard drops. The tests run on a current-thread
    /// runtime, so the in-process server logs here too.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(logs.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }
}

/// The request ids of the spans a JSON log line was written in.
fn span_request_ids(line: &serde_json::Value) -> Vec<String> {
    line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|span| span["request_id"].as_str().map(str::to_string))
        .collect()
}

/// The log lines written inside the call `id`.
fn lines_of_call(lines: &[serde_json::Value], id: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|line| span_request_ids(line).iter().any(|r| r == id))
        .cloned()
        .collect()
}

/// The first error of a call answered with a stream, wherever it comes.
async fn first_error<S, T>(result: Result<Response<S>, Status>) -> Status
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.next().await {
                    Some(Err(status)) => break status,
                    Some(Ok(_)) => {}
                    None => panic!("answered without an error"),
                }
            }
        }
    }
}

#[tokio::test]
async fn malformed_envelopes_are_refused_with_our_message_and_a_request_id() {
    use arrow_flight::sql::ActionCreatePreparedStatementRequest;
    let (logs, _guard) = CapturedLogs::install();
    let server = TestServer::start().await;
    let mut client = server.raw_client().await;
    let bearer = format!("Bearer {AGENCY_TOKEN}");
    let bearer = Some(bearer.as_str());

    // Field 1 (length-delimited) with an unterminated length varint: not
    // a protobuf message at all.
    let not_any = vec![0x0a, 0xff, 0xff];
    // A well-formed `Any` of a Flight SQL type whose value claims 127 bytes
    // of field 1 and holds one: arrow-flight used to answer this one with
    // `Internal`.
    let garbage_value = |type_url: &str| {
        Any {
            type_url: type_url.to_string(),
            value: vec![0x0a, 0x7f, 0x01].into(),
        }
        .encode_to_vec()
    };
    let unknown_type = Any {
        type_url: "type.googleapis.com/example.NotFlightSql".into(),
        value: vec![1, 2, 3].into(),
    }
    .encode_to_vec();
    let cases = |type_url: &str| {
        [
            ("not an Any", not_any.clone(), None),
            (
                "garbage value",
                garbage_value(type_url),
                Some(super::front::message_name(type_url).to_string()),
            ),
            (
                "unknown type",
                unknown_type.clone(),
                Some("example.NotFlightSql".to_string()),
            ),
        ]
    };

    // (call and case, a name the message must give, the refusal)
    let mut statuses: Vec<(String, Option<String>, Status)> = Vec::new();
    for (case, bytes, mention) in cases(CommandStatementQuery::type_url()) {
        let status = client
            .get_flight_info(with_auth(FlightDescriptor::new_cmd(bytes), bearer))
            .await
            .expect_err("malformed command");
        statuses.push((format!("GetFlightInfo, {case}"), mention, status));
    }
    for (case, bytes, mention) in cases(TicketStatementQuery::type_url()) {
        let status = first_error(client.do_get(with_auth(Ticket::new(bytes), bearer)).await).await;
        statuses.push((format!("DoGet, {case}"), mention, status));
    }
    for (case, bytes, mention) in cases(ActionCreatePreparedStatementRequest::type_url()) {
        let action = Action::new("CreatePreparedStatement", bytes);
        let status = first_error(client.do_action(with_auth(action, bearer)).await).await;
        statuses.push((format!("DoAction, {case}"), mention, status));
    }
    for (case, bytes, mention) in cases(CommandPreparedStatementQuery::type_url()) {
        let data = FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(bytes)),
            ..Default::default()
        };
        let status =
            first_error(client.do_put(with_auth(stream::iter([data]), bearer)).await).await;
        statuses.push((format!("DoPut, {case}"), mention, status));
    }
    let status = client
        .poll_flight_info(with_auth(
            FlightDescriptor::new_path(vec!["ad_performance".into()]),
            bearer,
        ))
        .await
        .expect_err("path descriptor");
    statuses.push(("PollFlightInfo, path descriptor".into(), None, status));
    let status = first_error(client.do_get(with_auth(Ticket::new(vec![]), bearer)).await).await;
    statuses.push(("DoGet, empty ticket".into(), None, status));

    let lines = logs.lines();
    for (what, mention, status) in &statuses {
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let message = status.message();
        assert!(message.starts_with(MALFORMED), "{what}: {message}");
        for decoder_text in [
            "DecodeError",
            "ParseError",
            "failed to decode",
            "buffer",
            "Unable to",
        ] {
            assert!(!message.contains(decoder_text), "{what}: {message}");
        }
        // The message names what was expected or found, when there is a
        // name to give.
        if let Some(name) = mention {
            assert!(message.contains(name.as_str()), "{what}: {message}");
        }
        let id = request_id(status).unwrap_or_else(|| panic!("{what}: no request id"));
        let logged = lines_of_call(&lines, &id);
        assert!(
            logged.iter().any(|line| {
                line["fields"]["message"] == "request refused"
                    && line["fields"]["request_id"] == id.as_str()
                    && line["fields"]["code"] == "InvalidArgument"
            }),
            "{what}: no log line for request {id}: {logged:?}"
        );
    }

    // The service still answers well-formed calls.
    let mut sql = server.sql_client(Some(AGENCY_TOKEN)).await;
    let info = sql.execute("SELECT 1".into(), None).await.expect("execute");
    assert_eq!(fetch(&mut sql, info).await[0].num_rows(), 1);
}

#[tokio::test]
async fn every_line_logged_for_a_call_carries_its_request_id_and_caller() {
    let (logs, _guard) = CapturedLogs::install();
    let server = TestServer::start().await;
    let mut client = server.raw_client().await;
    let bearer = format!("Bearer {AGENCY_TOKEN}");
    // A column name found nowhere else, to find the lines of this call
    // without relying on the id.
    let marker = "no_such_column_7f3a";
    let status = client
        .get_flight_info(with_auth(
            statement_descriptor(&format!("SELECT {marker} FROM ad_performance")),
            Some(&bearer),
        ))
        .await
        .expect_err("unknown column");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let id = request_id(&status).expect("request id");

    let lines = logs.lines();
    let mentioning: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line.to_string().contains(marker) || line.to_string().contains(&id))
        .collect();
    assert!(!mentioning.is_empty(), "nothing logged for the call");
    for line in mentioning {
        assert_eq!(span_request_ids(line), vec![id.clone()], "{line}");
        // The innermost span is the call's too, with its method and caller.
        assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
        assert_eq!(line["span"]["rpc"], "GetFlightInfo", "{line}");
        assert_eq!(line["span"]["method"], "GetFlightInfo(Statement)", "{line}");
        assert_eq!(line["span"]["principal"], "agency", "{line}");
    }
}
