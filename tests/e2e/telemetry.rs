//! OpenTelemetry export: the real `adlake` with `--otlp-endpoint` sends
//! the span of each call, carrying the request id the caller got back in
//! `x-request-id`, to an OTLP/gRPC collector started here; an unreachable
//! collector does not stop it from serving; a bad endpoint stops it at
//! once with a configuration error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adlake_tests::{TestServer, run_server_to_exit_with_env, write_auth_file};
use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use super::{AGENCY_TOKEN, bearer};

/// Export spans every 100 ms instead of every 5 s, so the test waits less.
const FAST_BATCHES: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

/// A collector that keeps every export request.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A span as exported.
#[derive(Debug)]
struct Exported {
    /// `service.name` of the span's resource.
    service: String,
    /// Name of the instrumentation scope.
    scope: String,
    /// The span's name.
    name: String,
    /// Its attributes, values as text.
    attributes: Vec<(String, String)>,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

impl Collector {
    fn spans(&self) -> Vec<Exported> {
        let mut out = Vec::new();
        for request in self.received.lock().unwrap().iter() {
            for resource in &request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .map(|a| text(a.value.as_ref()))
                    .unwrap_or_default();
                for scope in &resource.scope_spans {
                    let scope_name = scope
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for span in &scope.spans {
                        out.push(Exported {
                            service: service.clone(),
                            scope: scope_name.clone(),
                            name: span.name.clone(),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Starts the collector on a free loopback port; its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }
}

/// An empty warehouse and an auth file with the agency principal: the
/// call, not the data, is traced.
fn warehouse_and_auth() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    std::fs::create_dir(&warehouse).unwrap();
    let auth = dir.path().join("auth.toml");
    write_auth_file(&auth, &[("agency", AGENCY_TOKEN, &["*"])]);
    (dir, warehouse, auth)
}

/// `GetFlightInfo` for `sql` as the agency; the `x-request-id` the server
/// answered with.
async fn get_flight_info(server: &TestServer, sql: &str) -> Result<String, Status> {
    let channel = Channel::from_shared(server.flight_url())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", server.stderr()));
    let mut flight = FlightServiceClient::new(channel);
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let response = flight
        .get_flight_info(bearer(Request::new(descriptor), AGENCY_TOKEN))
        .await?;
    Ok(response
        .metadata()
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .unwrap()
        .to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_spans_reach_an_otlp_collector_with_the_request_id() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let (_dir, warehouse, auth) = warehouse_and_auth();
    let server = TestServer::start_with_env(
        &warehouse,
        Some(&auth),
        &["--otlp-endpoint", &endpoint],
        // Debug: the call logs a line, and the HTTP/2 and gRPC crates
        // open spans, the exporter's own connection's among them.
        &[FAST_BATCHES, ("RUST_LOG", "debug")],
    );

    let request_id = get_flight_info(&server, "SELECT 1 AS traced")
        .await
        .unwrap_or_else(|s| panic!("{s}\n{}", server.stderr()));

    // Spans leave in batches: wait for the one of our call.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = loop {
        let ours: Vec<Exported> = collector
            .spans()
            .into_iter()
            .filter(|span| span.attribute("request_id") == Some(request_id.as_str()))
            .collect();
        if !ours.is_empty() || Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !ours.is_empty(),
        "no exported span carries request id {request_id}; got {:?}\nserver log:\n{}",
        collector.spans(),
        server.stderr()
    );
    // Exactly one span is the call's: the front's `request` span, with
    // what the service recorded on it once it knew the method and caller.
    assert_eq!(ours.len(), 1, "{ours:?}");
    let call = &ours[0];
    assert_eq!(call.service, "adlake", "{call:?}");
    assert_eq!(call.scope, "adlake", "{call:?}");
    assert_eq!(call.name, "request", "{call:?}");
    assert_eq!(call.attribute("rpc"), Some("GetFlightInfo"), "{call:?}");
    assert_eq!(
        call.attribute("method"),
        Some("GetFlightInfo(Statement)"),
        "{call:?}"
    );
    assert_eq!(call.attribute("principal"), Some("agency"), "{call:?}");

    // Every exported span is the server's, and none is of the HTTP/2 and
    // gRPC machinery (exporting the exporter's own traffic would feed
    // itself).
    for span in collector.spans() {
        assert_eq!(span.service, "adlake", "{span:?}");
        let target = span.attribute("target").unwrap_or_default();
        assert!(
            !["h2", "hyper", "tonic", "tower", "opentelemetry"]
                .iter()
                .any(|machinery| target.starts_with(machinery)),
            "{span:?}"
        );
    }

    // The JSON log lines are unchanged by the export: the call's lines
    // still carry its id under `span` and `spans`.
    let log = server.stderr();
    assert!(
        log.lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|line| {
                line["span"]["request_id"] == request_id.as_str()
                    && line["spans"].as_array().is_some_and(|spans| {
                        spans
                            .iter()
                            .any(|span| span["request_id"] == request_id.as_str())
                    })
            })
        }),
        "no JSON log line carries request id {request_id} in its spans:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_to_an_unreachable_collector_does_not_stop_serving() {
    // A loopback port nobody listens on (bound, then freed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_dir, warehouse, auth) = warehouse_and_auth();
    let server = TestServer::start_with_env(
        &warehouse,
        Some(&auth),
        &["--otlp-endpoint", &endpoint],
        &[FAST_BATCHES],
    );
    for round in 0..3 {
        let id = get_flight_info(&server, "SELECT 1 AS untraced")
            .await
            .unwrap_or_else(|s| panic!("round {round}: {s}\n{}", server.stderr()));
        assert!(!id.is_empty());
        // Let the exporter fail at least once between calls.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, _) = server.http_get("/readyz");
    assert_eq!(status, 200, "{}", server.stderr());
}

#[test]
fn telemetry_bad_otlp_endpoint_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    // The auth file and warehouse do not exist: the endpoint is checked
    // before either is read, so its error is the one reported.
    let args = [
        "--warehouse",
        missing.to_str().unwrap(),
        "--auth-file",
        "/nonexistent-and-not-reached.toml",
        "--flight-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ];
    let with_flag = |endpoint: &'static str| {
        let mut args = args.to_vec();
        args.extend(["--otlp-endpoint", endpoint]);
        run_server_to_exit_with_env(&args, &[])
    };
    const SOURCE: &str = "--otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)";
    const SCHEME: &str = "must be an http:// or https:// URL, such as http://otel-collector:4317";
    for (out, expected) in [
        (
            with_flag("collector:4317"),
            format!("{SOURCE} 'collector:4317' {SCHEME}"),
        ),
        (
            with_flag("http://"),
            format!("{SOURCE} 'http://' is not a URL: empty host"),
        ),
        // The standard variable is read too, and checked the same way.
        (
            run_server_to_exit_with_env(
                &args,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317")],
            ),
            format!("{SOURCE} 'grpc://collector:4317' {SCHEME}"),
        ),
    ] {
        assert_eq!(out.code, Some(2), "{expected}: {}", out.stderr);
        assert_eq!(out.stderr.trim_end(), format!("adlake: error: {expected}"));
        assert!(!missing.exists(), "the warehouse was touched");
    }
}
