//! A bounded fuzz run of everything a caller can put in a ticket, a
//! command or an action, on stable Rust and in the normal test run.
//!
//! A seeded generator takes valid encodings (statement tickets, prepared
//! handles with and without bound values, every metadata command, the
//! prepared-statement actions) and mutates them: bit flips, byte changes,
//! truncation, insertion, splicing, random type URLs, and random SQL built
//! from SQL words inside well-formed handles. Each input goes through the
//! `FlightService` entry points of the service as served, its
//! [front](super::AdlakeFlightService) included, in-process (the same code
//! a gRPC call reaches, minus the socket) and, when a stream is answered,
//! the stream is read to its end.
//!
//! What must hold for every input: no panic, no `Internal`/`Unknown`
//! status (those mean the server failed, not the caller), a non-empty
//! message, the request id on every refusal (before or inside a stream),
//! and none of the decoder's own words: a malformed envelope is refused
//! with `InvalidArgument` and the front's message.
//!
//! `ADLAKE_FUZZ_CASES` raises the number of cases per entry point (default
//! [`DEFAULT_CASES`]) and `ADLAKE_FUZZ_SEED` changes the seed, for longer
//! runs outside CI; a failure prints the seed and case to replay.

use std::sync::Arc;

use adlake_engine::{Engine, Scope};
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{Action, FlightDescriptor, Ticket};
use futures::StreamExt;
use prost::Message;
use tonic::{Code, Request, Status};

use super::{AdlakeFlightService, AdlakeFlightSqlService, MALFORMED, handle, params::Placeholders};
use crate::auth::tests::StaticAuthenticator;
use crate::auth::{Principal, parse_authorization};
use crate::error::REQUEST_ID_HEADER;

/// Cases per entry point in the normal test run: enough to reach every
/// decoding branch, small enough for a few seconds in a debug build.
const DEFAULT_CASES: usize = 600;

const TOKEN: &str = "fuzz-token";

/// xorshift64*: deterministic, dependency-free, good enough to drive
/// mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn cases() -> usize {
    std::env::var("ADLAKE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("ADLAKE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_ADA1_A4E0_0001)
        .max(1)
}

/// SQL words and fragments random statements are built from: statements
/// the guard must refuse, placeholders, quoting and comment edges, the
/// tables and functions of the warehouse.
const SQL_WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "UNION",
    "ALL",
    "JOIN",
    "ON",
    "ad_performance",
    "orders",
    "web_sessions",
    "ingest_runs",
    "fx_rates",
    "information_schema.tables",
    "client_id",
    "spend",
    "date",
    "*",
    "count(*)",
    "sum(spend)",
    "$1",
    "$2",
    "$0",
    "$99999999999",
    "?",
    "'",
    "''",
    "'x'",
    "\"",
    "\"client_id\"",
    "--",
    "/*",
    "*/",
    ";",
    ",",
    "(",
    ")",
    "=",
    "<>",
    "1",
    "-1",
    "1e308",
    "NULL",
    "CAST(",
    "AS",
    "VARCHAR",
    "DECIMAL(38,10)",
    "DATE '2026-01-01'",
    "INTERVAL '1 day'",
    "DROP TABLE",
    "INSERT INTO",
    "COPY",
    "TO",
    "'/tmp/x'",
    "CREATE EXTERNAL TABLE",
    "SET",
    "EXPLAIN",
    "VALUES",
    "WITH",
    "arrow_cast(",
    "'Utf8View'",
    "range(",
    "generate_series(",
    "\u{0}",
    "é",
    "\u{202e}",
];

fn random_sql(rng: &mut Rng) -> String {
    let words = rng.below(12);
    let mut sql = String::new();
    for _ in 0..words {
        if !sql.is_empty() && rng.below(4) != 0 {
            sql.push(' ');
        }
        let word: &&str = rng.pick(SQL_WORDS);
        sql.push_str(word);
    }
    sql
}

/// Valid encodings to start from.
fn tickets() -> Vec<Vec<u8>> {
    let statement = |handle: bytes::Bytes| {
        TicketStatementQuery {
            statement_handle: handle,
        }
        .as_any()
        .encode_to_vec()
    };
    vec![
        statement(handle::encode("SELECT 1")),
        statement(handle::encode("SELECT count(*) FROM ad_performance")),
        statement(handle::encode_bound(
            "SELECT count(*) FROM ad_performance WHERE client_id = $1",
            &["'acme'".to_string()],
        )),
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle::encode_bound("SELECT ?", &["1".to_string()]),
        }
        .as_any()
        .encode_to_vec(),
    ]
    .into_iter()
    .chain(commands())
    .collect()
}

fn commands() -> Vec<Vec<u8>> {
    vec![
        CommandStatementQuery {
            query: "SELECT client_id FROM orders".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle::encode("SELECT 1"),
        }
        .as_any()
        .encode_to_vec(),
        CommandGetCatalogs {}.as_any().encode_to_vec(),
        CommandGetDbSchemas {
            catalog: Some("adlake".into()),
            db_schema_filter_pattern: Some("%".into()),
        }
        .as_any()
        .encode_to_vec(),
        CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("ad\\_%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        }
        .as_any()
        .encode_to_vec(),
        CommandGetTableTypes {}.as_any().encode_to_vec(),
        CommandGetSqlInfo {
            info: vec![0, 1, 500, 508],
        }
        .as_any()
        .encode_to_vec(),
        CommandGetXdbcTypeInfo { data_type: Some(4) }
            .as_any()
            .encode_to_vec(),
        CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "orders".into(),
        }
        .as_any()
        .encode_to_vec(),
        CommandGetImportedKeys {
            catalog: None,
            db_schema: None,
            table: "orders".into(),
        }
        .as_any()
        .encode_to_vec(),
        CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "orders".into(),
        }
        .as_any()
        .encode_to_vec(),
        CommandGetCrossReference {
            pk_catalog: None,
            pk_db_schema: None,
            pk_table: "a".into(),
            fk_catalog: None,
            fk_db_schema: None,
            fk_table: "b".into(),
        }
        .as_any()
        .encode_to_vec(),
    ]
}

/// Type URLs of real Flight SQL messages, so mutated bodies reach each
/// message's own decoder.
const TYPE_URLS: &[&str] = &[
    "type.googleapis.com/arrow.flight.protocol.sql.TicketStatementQuery",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandPreparedStatementQuery",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandGetTables",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandGetSqlInfo",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandGetXdbcTypeInfo",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandGetDbSchemas",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementUpdate",
    "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementIngest",
    "type.googleapis.com/arrow.flight.protocol.sql.ActionCreatePreparedStatementRequest",
    "type.googleapis.com/arrow.flight.protocol.sql.Nonexistent",
    "",
];

/// One mutation of a corpus entry.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = rng.pick(corpus).clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(10) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.truncate(rng.below(data.len() + 1)),
            3 => {
                let at = rng.below(data.len() + 1);
                let len = rng.below(16);
                let extra = rng.bytes(len);
                data.splice(at..at, extra);
            }
            4 => {
                let other = rng.pick(corpus);
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            5 => {
                let len = rng.below(64);
                data = rng.bytes(len);
            }
            6 => {
                // A well-formed Any around a mutated or random body.
                let value = if rng.below(2) == 0 {
                    let inner = rng.pick(corpus).clone();
                    Any::decode(inner.as_slice())
                        .map(|any| any.value.to_vec())
                        .unwrap_or(inner)
                } else {
                    let len = rng.below(48);
                    rng.bytes(len)
                };
                data = Any {
                    type_url: rng.pick(TYPE_URLS).to_string(),
                    value: value.into(),
                }
                .encode_to_vec();
            }
            7 => {
                // Random SQL in a well-formed handle, as a statement ticket.
                let sql = random_sql(rng);
                let handle = if rng.below(2) == 0 {
                    handle::encode(&sql)
                } else {
                    let n = rng.below(3);
                    let values: Vec<String> = (0..n).map(|_| random_sql(rng)).collect();
                    handle::encode_bound(&sql, &values)
                };
                data = TicketStatementQuery {
                    statement_handle: handle,
                }
                .as_any()
                .encode_to_vec();
            }
            8 => {
                // Random SQL as a statement command.
                data = CommandStatementQuery {
                    query: random_sql(rng),
                    transaction_id: if rng.below(8) == 0 {
                        Some(rng.bytes(4).into())
                    } else {
                        None
                    },
                }
                .as_any()
                .encode_to_vec();
            }
            _ => {}
        }
    }
    data
}

async fn service() -> (AdlakeFlightService, tempfile::TempDir) {
    let warehouse = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(warehouse.path().to_str().expect("utf-8"))
        .await
        .expect("open empty warehouse");
    let authenticator = StaticAuthenticator(vec![(
        TOKEN,
        Principal {
            name: "fuzz".into(),
            scope: Scope::clients(["acme"]),
        },
    )]);
    (
        AdlakeFlightService::new(AdlakeFlightSqlService::new(
            adlake_engine::QueryExecutor::new(Arc::new(engine)),
            Arc::new(authenticator),
        )),
        warehouse,
    )
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    request
}

/// The checks every refusal must pass; whether it refused a malformed
/// envelope.
fn check_status(status: &Status, what: &str) -> bool {
    let message = status.message();
    assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::DataLoss
        ),
        "{what}: server-side failure {status:?}"
    );
    assert!(!message.is_empty(), "{what}: empty message");
    assert!(
        status.metadata().get(REQUEST_ID_HEADER).is_some(),
        "{what}: refused without a request id: {status:?}"
    );
    // The decoders' own words mean a refusal the front did not make.
    for decoder_text in [
        "DecodeError",
        "ParseError(",
        "failed to decode Protobuf",
        "Unable to unpack",
        "Unable to decode",
    ] {
        assert!(
            !message.contains(decoder_text),
            "{what}: decoder text in {status:?}"
        );
    }
    let malformed = message.starts_with(MALFORMED);
    if malformed {
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    malformed
}

/// Reads a `DoGet` or `DoAction` answer to its end, checking any error in
/// it.
async fn drain<S, T>(mut stream: S, what: &str)
where
    S: futures::Stream<Item = Result<T, Status>> + Unpin,
{
    while let Some(item) = stream.next().await {
        if let Err(status) = item {
            check_status(&status, what);
            break;
        }
    }
}

#[tokio::test]
async fn tickets_commands_and_actions_never_fail_the_server() {
    let (service, _warehouse) = service().await;
    let seed = seed();
    let mut rng = Rng(seed);
    let tickets = tickets();
    let commands = commands();
    let actions: Vec<(&str, Vec<u8>)> = vec![
        (
            "CreatePreparedStatement",
            ActionCreatePreparedStatementRequest {
                query: "SELECT count(*) FROM orders WHERE client_id = ?".into(),
                transaction_id: None,
            }
            .as_any()
            .encode_to_vec(),
        ),
        (
            "ClosePreparedStatement",
            ActionClosePreparedStatementRequest {
                prepared_statement_handle: handle::encode("SELECT 1"),
            }
            .as_any()
            .encode_to_vec(),
        ),
    ];
    let action_bodies: Vec<Vec<u8>> = actions.iter().map(|(_, body)| body.clone()).collect();
    let (mut answered, mut malformed) = (0, 0);
    for case in 0..cases() {
        let what = |kind: &str| format!("{kind} case {case} (ADLAKE_FUZZ_SEED={seed})");

        let ticket = mutate(&mut rng, &tickets);
        let label = what("DoGet");
        match service.do_get(authorized(Ticket::new(ticket))).await {
            Ok(response) => {
                answered += 1;
                drain(response.into_inner(), &label).await;
            }
            Err(status) => malformed += usize::from(check_status(&status, &label)),
        }

        let command = mutate(&mut rng, &commands);
        let label = what("GetFlightInfo");
        let descriptor = if rng.below(10) == 0 {
            FlightDescriptor::new_path(vec![String::from_utf8_lossy(&command).into_owned()])
        } else {
            FlightDescriptor::new_cmd(command)
        };
        match service
            .get_flight_info(authorized(descriptor.clone()))
            .await
        {
            Ok(_) => answered += 1,
            Err(status) => malformed += usize::from(check_status(&status, &label)),
        }
        // The calls the service does not serve check the envelope first too.
        let label = what("PollFlightInfo");
        match service.poll_flight_info(authorized(descriptor)).await {
            Ok(_) => panic!("{label}: PollFlightInfo answered"),
            Err(status) => malformed += usize::from(check_status(&status, &label)),
        }

        let (kind, _) = rng.pick(&actions);
        let kind = if rng.below(8) == 0 {
            String::from_utf8_lossy(&rng.bytes(6)).into_owned()
        } else {
            (*kind).to_string()
        };
        let body = mutate(&mut rng, &action_bodies);
        let label = what("DoAction");
        match service.do_action(authorized(Action::new(kind, body))).await {
            Ok(response) => {
                answered += 1;
                drain(response.into_inner(), &label).await;
            }
            Err(status) => malformed += usize::from(check_status(&status, &label)),
        }
    }
    // The mutations keep some inputs valid, so the answering paths are
    // exercised too, not only the refusals.
    assert!(answered > 0, "no input was answered");
    // And the mutations reach the front's envelope checks.
    assert!(malformed > 0, "no input was a malformed envelope");
}

#[test]
fn handle_placeholder_and_header_decoders_never_panic() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0xABCD);
    let corpus: Vec<Vec<u8>> = vec![
        handle::encode("SELECT $1, ?").to_vec(),
        handle::encode_bound("SELECT $1", &["'a''b'".into(), "NULL".into()]).to_vec(),
        b"Bearer abc".to_vec(),
        b"Basic YWdlbmN5OnRva2Vu".to_vec(),
        b"SELECT 'a?b', \"c$1\", ? -- ?\n/* $2 */ $3".to_vec(),
    ];
    for _ in 0..cases() * 20 {
        let input = mutate(&mut rng, &corpus);
        if let Ok(statement) = handle::decode(&input)
            && let Ok(placeholders) =
                Placeholders::find(&statement.sql, &adlake_engine::StatementLimits::default())
        {
            let _ = placeholders.bind(&statement.parameters);
        }
        let text = String::from_utf8_lossy(&input);
        if let Ok(placeholders) =
            Placeholders::find(&text, &adlake_engine::StatementLimits::default())
        {
            assert!(placeholders.count <= super::params::MAX_PARAMETERS);
        }
        let _ = parse_authorization(&text);
    }
}
