//! The `adlake` binary: parses flags, sets up logging, and runs the
//! [`adlake_server::Server`] until SIGINT or SIGTERM.
//!
//! Stdout carries exactly one line, `adlake ready flight=<addr> http=<addr>`,
//! once both listeners are bound and the warehouse is open; everything for
//! humans (logs, demo instructions, errors) goes to stderr. Exit codes: 0
//! after a clean shutdown, 2 for configuration errors, 1 otherwise.
//!
//! With `--otlp-endpoint` the spans of every call are also exported to an
//! OpenTelemetry collector ([`adlake_server::telemetry`]).

use std::io::Write as _;
use std::process::ExitCode;

use adlake_server::config::Config;
use adlake_server::server::{Server, shutdown_signal};
use adlake_server::telemetry::{self, Telemetry};
use adlake_server::{Error, demo};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Queries allocate and free many small buffers from every worker thread
/// (one Parquet footer and a few column chunks per file); mimalloc's
/// per-thread heaps keep that off the system allocator's shared arenas,
/// which showed as the largest cost in profiles of scans over many files.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    // A bad endpoint is a configuration error, reported before anything
    // slow (the auth file, the warehouse) is touched.
    if let Some(endpoint) = config.trace_endpoint()
        && let Err(err) = telemetry::check_endpoint(endpoint)
    {
        return fail(&err);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Statements are parsed and planned on the engine's planning
        // threads; this margin is for the rest (decoding, filters'
        // evaluation) on the workers.
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("adlake: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel is spawned on the runtime, so it is
    // built inside it.
    let telemetry = match config.trace_endpoint().map(|endpoint| {
        let _runtime = runtime.enter();
        Telemetry::otlp(endpoint)
    }) {
        None => None,
        Some(Ok(telemetry)) => Some(telemetry),
        Some(Err(err)) => return fail(&err),
    };
    init_logging(telemetry.as_ref());
    let result = runtime.block_on(run(config));
    // Exports the spans still queued while the runtime, which drives the
    // exporter's connection, is still up.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// Reports `err` on stderr; its exit code.
fn fail(err: &Error) -> ExitCode {
    eprintln!("adlake: error: {err}");
    ExitCode::from(err.exit_code())
}

async fn run(config: Config) -> Result<(), Error> {
    let server = Server::bind(&config).await?;
    if let Some(credentials) = server.demo_credentials() {
        eprint!(
            "\n{}\n",
            demo::connection_help(credentials, server.flight_addr())
        );
    }
    announce(&server.ready_line());
    server.serve(shutdown_signal()).await
}

/// Prints the ready line and flushes: a parent process reading a pipe
/// would otherwise wait for the buffer to fill.
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // If stdout is closed nobody is waiting for the line; keep serving.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Logs on stderr: human-readable on a terminal, one JSON object per line
/// otherwise (containers, CI). Every call is served inside a span holding
/// its request id (and caller), so each line logged for it carries them:
/// in JSON under `span` (the innermost span) and `spans` (all of them,
/// outermost first, so the id survives spans opened deeper down). `RUST_LOG` overrides the default level; `ADLAKE_LOG_FORMAT=json`
/// or `text` forces a format. With `telemetry`, the same spans (those the
/// level lets through) are also exported to its collector.
fn init_logging(telemetry: Option<&Telemetry>) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,buoyant_kernel=warn,delta_kernel=warn")
    });
    let json = match std::env::var("ADLAKE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // As `tracing_subscriber::fmt()` sets it up (it also reports its own
    // write errors), so the lines are the same with and without export.
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(true)
            .json()
            .with_current_span(true)
            .with_span_list(true)
    });
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(true)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json_layer)
        .with(text_layer)
        .with(telemetry.map(Telemetry::layer))
        .init();
}
