//! The adlake service: Arrow Flight SQL and HTTP health in front of the
//! [`adlake_engine::Engine`].
//!
//! This crate owns everything between a network caller and the engine:
//! authenticating the caller ([`auth`]), mapping them to the
//! [`Scope`](adlake_engine::Scope) of clients they may see, speaking Flight
//! SQL ([`flight_sql::AdlakeFlightSqlService`]), answering `/healthz` and
//! `/readyz` ([`http`]), translating engine errors into gRPC statuses
//! ([`error::engine_status`], the only such translation), starting up and
//! shutting down ([`server::Server`]), and seeding a demo warehouse when run
//! without an auth file ([`demo`]), and exporting spans to an OpenTelemetry
//! collector when asked ([`telemetry`]). The binary `adlake` wires these
//! together.
//!
//! It must not contain query logic: SQL is planned, restricted to the
//! caller's scope and executed by the engine; the server only passes the
//! caller's SQL and scope through and streams the batches back.
//!
//! Authorization is a trait, [`auth::Authenticator`], so the token file can
//! be replaced by another identity source:
//!
//! ```
//! use adlake_engine::Scope;
//! use adlake_server::auth::{Authenticator, TokenAuthenticator, token_sha256_hex};
//!
//! let file = format!(
//!     "[[principal]]\nname = \"acme-analyst\"\ntoken_sha256 = \"{}\"\nclients = [\"acme\"]\n",
//!     token_sha256_hex("s3cret"),
//! );
//! let auth = TokenAuthenticator::from_toml_str(&file).expect("valid auth file");
//! let caller = auth.authenticate("s3cret").expect("known token");
//! assert_eq!(caller.scope, Scope::clients(["acme"]));
//! assert!(auth.authenticate("guess").is_none());
//! ```

pub mod access;
pub mod auth;
pub mod config;
pub mod decode;
pub mod demo;
pub mod error;
pub mod flight_sql;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod telemetry;

pub use error::{Error, Result};
