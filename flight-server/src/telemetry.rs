//! Optional OpenTelemetry trace export.
//!
//! With `--otlp-endpoint URL` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), every `tracing` span of the server is
//! also exported over OTLP/gRPC to a collector: the `request` span of each
//! call, carrying its `request_id`, `rpc`, `method` and `principal`, and
//! the spans opened inside it. Spans leave in batches (every 5 s by
//! default; the standard `OTEL_BSP_*` variables tune the batches, and
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and
//! `OTEL_RESOURCE_ATTRIBUTES` are honoured too), under the service name
//! [`SERVICE_NAME`]. Without the flag no exporter is built and spans only
//! feed the logs.
//!
//! The exporter connects lazily: an unreachable collector costs warnings in
//! the log, never a refused start or a failed call; spans that cannot be
//! delivered are dropped once the queue is full.
//!
//! The exporter's gRPC channel lives on the server's Tokio runtime, so
//! [`Telemetry::otlp`] must run inside it (see `main.rs`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// The service name spans are reported under.
pub const SERVICE_NAME: &str = "adlake";

/// Where the endpoint comes from, for error messages.
const ENDPOINT_SOURCE: &str = "--otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)";

/// Targets whose spans are never exported: the HTTP/2 and gRPC machinery
/// the exporter itself runs on (exporting its spans would feed itself),
/// and OpenTelemetry's own diagnostics.
const NOT_EXPORTED: &[&str] = &["h2", "hyper", "tonic", "tower", "opentelemetry"];

/// Checks an OTLP/gRPC collector endpoint: an `http://` or `https://` URL
/// with a host, such as `http://otel-collector:4317`.
pub fn check_endpoint(endpoint: &str) -> Result<()> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| Error::Config(format!("{ENDPOINT_SOURCE} '{endpoint}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "{ENDPOINT_SOURCE} '{endpoint}' must be an http:// or https:// URL, such as http://otel-collector:4317"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "{ENDPOINT_SOURCE} '{endpoint}' names no host"
        )));
    }
    Ok(())
}

/// An OTLP exporter pipeline; [`Telemetry::shutdown`] exports what is
/// still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// An exporter to the OTLP/gRPC collector at `endpoint`
    /// (`http://host:4317`; `https://` verifies the collector against the
    /// system's root certificates). Nothing is sent yet: the channel
    /// connects on the first export. Must be called inside a Tokio runtime.
    pub fn otlp(endpoint: &str) -> Result<Self> {
        check_endpoint(endpoint)?;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint);
        if endpoint.starts_with("https://") {
            builder = builder
                .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
        }
        let exporter = builder.build().map_err(|e| {
            Error::Config(format!(
                "{ENDPOINT_SOURCE} '{endpoint}': cannot set up the exporter: {e}"
            ))
        })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
            .build();
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns the server's spans into OpenTelemetry
    /// spans (all but those of [`NOT_EXPORTED`] targets).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SERVICE_NAME))
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                exported(metadata.target())
            }))
    }

    /// Exports what is queued (waiting at most a few seconds for the
    /// collector) and stops the exporter.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("adlake: warning: exporting the last OpenTelemetry spans failed: {err}");
        }
    }
}

/// Whether spans of `target` are exported.
fn exported(target: &str) -> bool {
    !NOT_EXPORTED.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '-', ':']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        for good in [
            "http://127.0.0.1:4317",
            "http://otel-collector:4317",
            "https://collector.example.com",
            "http://[::1]:4317",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("collector:4317", "must be an http:// or https:// URL"),
            (
                "grpc://collector:4317",
                "must be an http:// or https:// URL",
            ),
            ("127.0.0.1:4317", "is not a URL"),
            ("", "is not a URL"),
            ("http://", "is not a URL"),
        ] {
            let err = check_endpoint(bad).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "--otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) '{bad}'"
                )),
                "{message}"
            );
            assert!(message.contains(why), "{bad}: {message}");
        }
    }

    #[test]
    fn the_exporters_own_machinery_is_not_exported() {
        for target in [
            "h2",
            "h2::codec",
            "hyper_util::client",
            "tonic::transport",
            "tower::buffer",
            "opentelemetry_sdk",
            "opentelemetry-otlp",
        ] {
            assert!(!exported(target), "{target}");
        }
        for target in [
            "adlake_server::flight_sql::front",
            "adlake_engine",
            "datafusion",
            "h2o",
            "towers",
        ] {
            assert!(exported(target), "{target}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_no_startup_error() {
        // Port 9 (discard) on loopback: nothing listens; the exporter only
        // connects when it exports, so building it succeeds.
        let telemetry = Telemetry::otlp("http://127.0.0.1:9").expect("valid endpoint");
        telemetry.shutdown();
    }
}
