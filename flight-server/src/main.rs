//! The `adlake` binary: parses flags, sets up logging, and runs the
//! [`adlake_server::Server`] until SIGINT or SIGTERM.
//!
//! Stdout carries exactly one line, `adlake ready flight=<addr> http=<addr>`,
//! once both listeners are bound and the warehouse is open; everything for
//! humans (logs, demo instructions, errors) goes to stderr. Exit codes: 0
//! after a clean shutdown, 2 for configuration errors, 1 otherwise.

use std::io::Write as _;
use std::process::ExitCode;

use adlake_server::config::Config;
use adlake_server::server::{Server, shutdown_signal};
use adlake_server::{Error, demo};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("adlake: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("adlake: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
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
/// or `text` forces a format.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,buoyant_kernel=warn,delta_kernel=warn")
    });
    let json = match std::env::var("ADLAKE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}
