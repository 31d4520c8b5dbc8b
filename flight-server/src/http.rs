//! HTTP endpoints for orchestrators: liveness, readiness and metrics.
//!
//! * `GET /healthz`: 200 `ok` while the process serves HTTP at all.
//! * `GET /readyz`: 200 `ready` when the engine can answer queries, 503
//!   `not ready` otherwise, so a load balancer only routes to replicas that
//!   have loaded the warehouse.
//! * `GET /metrics`: Prometheus metrics ([`crate::observability`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Says whether the service can take traffic. The engine implements it;
/// tests pass a closure.
pub trait Readiness: Send + Sync + 'static {
    /// Whether queries can be answered now.
    fn is_ready(&self) -> bool;
}

impl Readiness for adlake_engine::Engine {
    fn is_ready(&self) -> bool {
        adlake_engine::Engine::is_ready(self)
    }
}

impl<F> Readiness for F
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    fn is_ready(&self) -> bool {
        self()
    }
}

/// The HTTP routes, answering readiness from `readiness`.
pub fn router(readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics() -> (
    StatusCode,
    [(axum::http::header::HeaderName, &'static str); 1],
    String,
) {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::observability::scrape().await,
    )
}

async fn readyz(State(readiness): State<Arc<dyn Readiness>>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves the router on an ephemeral port and sends one raw HTTP/1.1
    /// request: the real listener path, without an HTTP client dependency.
    async fn get_status(router: Router, path: &str) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        socket.read_to_string(&mut response).await.expect("read");
        server.abort();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn healthz_is_ok_even_when_not_ready() {
        let router = router(Arc::new(|| false));
        assert_eq!(get_status(router, "/healthz").await, (200, "ok".into()));
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ready);
        let readiness: Arc<dyn Readiness> = Arc::new(move || flag.load(Ordering::SeqCst));

        let router = super::router(Arc::clone(&readiness));
        assert_eq!(
            get_status(router.clone(), "/readyz").await,
            (503, "not ready".into())
        );

        ready.store(true, Ordering::SeqCst);
        assert_eq!(get_status(router, "/readyz").await, (200, "ready".into()));
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let router = router(Arc::new(|| true));
        assert_eq!(get_status(router, "/nope").await.0, 404);
    }
}
