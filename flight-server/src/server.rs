//! Startup wiring: open the engine, load the callers, bind the listeners,
//! serve until shutdown.
//!
//! Startup is split in two so the binary can announce itself between
//! them: [`Server::bind`] does everything that can fail because of the
//! configuration (and so exits with code 2 before anything listens), then
//! [`Server::serve`] runs Flight SQL and HTTP until the shutdown future
//! completes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adlake_engine::Engine;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::auth::jwt::{JwtAuthenticator, TokensThenJwt};
use crate::auth::{Authenticator, TokenAuthenticator};
use crate::config::Config;
use crate::demo::{self, DemoCredentials};
use crate::error::{Error, Result};
use crate::flight_sql::AdlakeFlightSqlService;
use crate::http::{self, Readiness};
use adlake_engine::QueryExecutor;
use adlake_engine::admission::{LimitSettings, Limits};

/// How long running requests (long result streams) get to finish after a
/// shutdown signal before the process stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A server whose engine is open and whose listeners are bound.
pub struct Server {
    engine: Arc<Engine>,
    authenticator: Arc<dyn Authenticator>,
    flight: TcpListener,
    flight_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
    demo: Option<DemoCredentials>,
    refresh_interval: Duration,
    limits: LimitSettings,
    /// The Flight port's TLS settings, when it serves TLS.
    tls: Option<ServerTlsConfig>,
}

impl Server {
    /// Opens the warehouse, loads the auth file (or sets up demo mode when
    /// there is none) and binds both listeners.
    pub async fn bind(config: &Config) -> Result<Self> {
        let (engine, authenticator, demo) = match &config.auth_file {
            Some(path) => {
                // The file first: it is cheap to check, and a typo in it
                // should not wait for the warehouse to load.
                let authenticator = TokenAuthenticator::from_file(path)?;
                let engine = open_engine(config).await?;
                check_clients(&engine, &authenticator, path).await?;
                (engine, authenticator, None)
            }
            None => {
                let dir = demo::local_dir(&config.warehouse)?;
                demo::seed_if_empty(&config.warehouse, &dir).await?;
                let engine = open_engine(config).await?;
                let clients = engine.clients().await.map_err(Error::engine)?;
                let path = demo::tokens_path(&dir);
                let (authenticator, credentials) = demo::ensure_tokens(&path, &clients)?;
                authenticator.check_clients(&path, &clients)?;
                (engine, authenticator, Some(credentials))
            }
        };
        let names: Vec<&str> = authenticator
            .principals()
            .map(|p| p.name.as_str())
            .collect();
        tracing::info!(principals = names.len(), names = ?names, "callers loaded");
        let jwt = JwtAuthenticator::from_files(
            config.jwt_hs256_secret_file.as_deref(),
            config.jwt_rs256_public_key_file.as_deref(),
            config.jwt_issuer.as_deref(),
            config.jwt_audience.as_deref(),
        )?;
        let authenticator: Arc<dyn Authenticator> = match jwt {
            Some(jwt) => {
                tracing::info!(?jwt, "JWT bearer tokens accepted");
                Arc::new(TokensThenJwt {
                    tokens: authenticator,
                    jwt,
                })
            }
            None => Arc::new(authenticator),
        };
        let engine = match config.query_memory_limit() {
            Some(bytes) => engine.with_query_memory_limit(bytes),
            None => engine,
        };
        let engine = match config.memory_pool_limit() {
            Some(bytes) => {
                tracing::info!(bytes, "query memory pool");
                engine.with_memory_pool(bytes)
            }
            None => engine,
        };
        let lanes = adlake_engine::lanes::LaneSettings {
            lanes: usize::from(config.execution_lanes),
            ..Default::default()
        };
        if !adlake_engine::lanes::configure(lanes) {
            tracing::debug!(?lanes, "execution lanes were set before; kept");
        }
        let tls = tls_config(config)?;
        if let Some(path) = &config.access_log
            && !crate::access::enabled()
        {
            crate::access::open(path)?;
        }

        let (flight, flight_addr) = bind("flight", &config.flight_addr).await?;
        let (http, http_addr) = bind("http", &config.http_addr).await?;
        Ok(Self {
            engine: Arc::new(engine),
            authenticator,
            flight,
            flight_addr,
            http,
            http_addr,
            demo,
            refresh_interval: config.refresh_interval(),
            limits: config.limit_settings(),
            tls,
        })
    }

    /// The bound Flight SQL address (the real port when 0 was asked for).
    pub fn flight_addr(&self) -> SocketAddr {
        self.flight_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The line announcing readiness on stdout, which tests and scripts
    /// parse: `adlake ready flight=<ip:port> http=<ip:port>`.
    pub fn ready_line(&self) -> String {
        format!(
            "adlake ready flight={} http={}",
            self.flight_addr, self.http_addr
        )
    }

    /// The demo credentials, when running in demo mode.
    pub fn demo_credentials(&self) -> Option<&DemoCredentials> {
        self.demo.as_ref()
    }

    /// Serves Flight SQL and HTTP until `shutdown` completes, then lets
    /// running requests finish for up to [`SHUTDOWN_GRACE`].
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let refresh = self.engine.spawn_refresh(self.refresh_interval);
        crate::observability::register_engine(&self.engine);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };

        // One door, one set of limits and one query record for every
        // surface on the Flight port.
        let executor = QueryExecutor::new(Arc::clone(&self.engine))
            .with_limits(Arc::new(Limits::new(self.limits)))
            .with_observer(crate::observability::query_observer());
        let flight_service =
            AdlakeFlightSqlService::new(executor.clone(), Arc::clone(&self.authenticator))
                .into_server();
        // adlake.v1 services, reflection and health share the Flight port.
        let grpc = crate::grpc::AdlakeGrpc::new(executor, Arc::clone(&self.authenticator));
        let (metrics_service, insights_service, catalog_service) = (
            grpc.metrics_server(),
            grpc.insights_server(),
            grpc.catalog_server(),
        );
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(adlake_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|err| Error::Serve {
                what: "flight",
                message: format!("gRPC reflection: {err}"),
            })?;
        let (_health_reporter, health_service) = tonic_health::server::health_reporter();
        let expect = if self.tls.is_some() {
            crate::peer::Expect::Tls
        } else {
            crate::peer::Expect::Http2
        };
        let incoming =
            TcpIncoming::from(self.flight)
                .with_nodelay(Some(true))
                .map(move |accepted| {
                    accepted.map(|stream| {
                        let tcp = stream.connect_info();
                        crate::peer::Guarded::new(stream, tcp, expect)
                    })
                });
        let flight_stop = stopped(stop_rx.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(|err| Error::Serve {
                what: "flight",
                message: format!("TLS: {}", crate::error::ErrorChain(&err)),
            })?;
        }
        let mut flight = tokio::spawn(async move {
            builder
                .layer(crate::peer::DelayRefusedLayer)
                .layer(crate::decode::DecodeErrorsLayer)
                .add_service(flight_service)
                .add_service(metrics_service)
                .add_service(insights_service)
                .add_service(catalog_service)
                .add_service(reflection)
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, flight_stop)
                .await
                .map_err(|err| Error::Serve {
                    what: "flight",
                    message: crate::error::ErrorChain(&err).to_string(),
                })
        });

        let readiness: Arc<dyn Readiness> = Arc::clone(&self.engine) as Arc<dyn Readiness>;
        let http_stop = stopped(stop_rx);
        let http_listener = self.http;
        let mut http = tokio::spawn(async move {
            axum::serve(http_listener, http::router(readiness))
                .with_graceful_shutdown(http_stop)
                .await
                .map_err(|err| Error::Serve {
                    what: "http",
                    message: err.to_string(),
                })
        });

        // Run until asked to stop, or until a server dies on its own.
        let early = tokio::select! {
            () = shutdown => {
                tracing::info!("shutdown requested: finishing running requests");
                None
            }
            result = &mut flight => Some(("flight", result)),
            result = &mut http => Some(("http", result)),
        };
        let _ = stop_tx.send(true);
        refresh.abort();

        if let Some((what, result)) = early {
            return match result {
                Ok(Ok(())) => Err(Error::Serve {
                    what,
                    message: "stopped unexpectedly".into(),
                }),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(Error::Serve {
                    what,
                    message: join.to_string(),
                }),
            };
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, async { (flight.await, http.await) }).await {
            Ok((flight, http)) => {
                for (what, result) in [("flight", flight), ("http", http)] {
                    match result {
                        Ok(result) => result?,
                        Err(join) => {
                            return Err(Error::Serve {
                                what,
                                message: join.to_string(),
                            });
                        }
                    }
                }
                tracing::info!("stopped");
            }
            Err(_) => {
                tracing::warn!(
                    grace_secs = SHUTDOWN_GRACE.as_secs(),
                    "requests still running after the grace period: stopping anyway"
                );
            }
        }
        Ok(())
    }
}

/// The TLS settings the flags ask for, checked now (readable files, a
/// certificate and key rustls accepts) so a bad file stops startup with
/// exit code 2 instead of failing the first connection.
fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    // Both of rustls' crypto back ends end up in the dependency graph (the
    // object-store clients bring aws-lc), so rustls cannot pick one by
    // itself: choose ring, the one tonic's TLS is built with. Another part
    // of the process may have chosen already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &Path| {
        std::fs::read(path).map_err(|err| {
            Error::Config(format!(
                "TLS file {}: cannot read it: {err}",
                path.display()
            ))
        })
    };
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|err| {
            Error::Config(format!(
                "TLS certificate {} with key {}: {}",
                cert.display(),
                key.display(),
                crate::error::ErrorChain(&err)
            ))
        })?;
    tracing::info!(cert = %cert.display(), "the Flight port serves TLS");
    Ok(Some(tls))
}

async fn open_engine(config: &Config) -> Result<Engine> {
    let warehouse = config.warehouse.as_str();
    let mut metrics_config = match &config.metrics_config {
        Some(path) => {
            adlake_engine::semantic::MetricsConfig::from_file(path).map_err(Error::engine)?
        }
        None => adlake_engine::semantic::MetricsConfig::default(),
    };
    if let Some(path) = &config.clients_config {
        let clients = adlake_engine::freshness::TimeZones::from_clients_config(path)
            .map_err(|e| Error::Config(format!("--clients-config: {e}")))?;
        for (client, zone) in &clients {
            metrics_config = metrics_config.with_time_zone(client, *zone).map_err(|m| {
                Error::Config(format!(
                    "client {client}: {m} (--clients-config {} says {zone})",
                    path.display(),
                ))
            })?;
        }
        tracing::info!(clients = clients.len(), file = %path.display(), "client time zones from the ingest configuration");
    }
    let options = adlake_engine::EngineOptions {
        cache_bytes: config.cache_bytes,
        footer_cache_bytes: config.footer_cache_bytes,
        metrics_config,
        statement_limits: adlake_engine::StatementLimits {
            max_bytes: config.max_statement_bytes,
            max_depth: config.max_expression_depth,
        },
        ..Default::default()
    };
    tracing::info!(warehouse, "opening the warehouse");
    let engine = Engine::open_with(warehouse, options)
        .await
        .map_err(Error::engine)?;
    let tables: Vec<String> = engine.tables().into_iter().map(|t| t.name).collect();
    tracing::info!(tables = ?tables, "warehouse open");
    Ok(engine)
}

async fn check_clients(
    engine: &Engine,
    authenticator: &TokenAuthenticator,
    path: &Path,
) -> Result<()> {
    let clients = engine.clients().await.map_err(Error::engine)?;
    authenticator.check_clients(path, &clients)
}

async fn bind(what: &'static str, addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let error = |source| Error::Bind {
        what,
        addr: addr.to_string(),
        source,
    };
    // Binding through the string resolves host names ("localhost:0").
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM (what container
/// runtimes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
