//! Requests the gRPC layer cannot decode are the caller's fault.
//!
//! tonic decodes a unary request's protobuf body in the generated service
//! code, before any handler of ours runs, and answers a body that does not
//! decode with `INTERNAL` ("failed to decode Protobuf message: ..."): the
//! status of a server fault, without a request id. This layer, around every
//! service on the Flight port, turns that answer into `INVALID_ARGUMENT`
//! with the decoder's reason and a request id that is also logged, as every
//! other refusal. (Flight SQL's own envelopes are decoded by
//! `flight_sql::front`, which already answers so.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::{Code, Status};

use crate::error::RequestId;

/// What tonic's codec says when a request body does not decode.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// Marks, in its extensions, an answer that refuses a request because its
/// body does not decode.
#[derive(Debug, Clone, Copy)]
pub struct Undecodable;

/// The [`tower::Layer`] of [`DecodeErrors`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// Answers undecodable requests with `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for DecodeErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(rewrite(response, &method))
        })
    }
}

/// The caller's-fault answer for a response that reports a decode failure;
/// any other response unchanged.
fn rewrite(
    response: http::Response<tonic::body::Body>,
    method: &str,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::Internal || !status.message().starts_with(DECODE_FAILURE) {
        return response;
    }
    let request_id = RequestId::new();
    tracing::info!(
        request_id = %request_id,
        method,
        code = "InvalidArgument",
        detail = status.message(),
        "request refused: it does not decode"
    );
    let mut refused = Status::invalid_argument(format!(
        "the request does not decode as the method's message ({}); request id {request_id}",
        status.message()
    ));
    request_id.tag(refused.metadata_mut());
    let mut response = refused.into_http();
    response.extensions_mut().insert(Undecodable);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> http::Response<tonic::body::Body> {
        status.into_http()
    }

    #[test]
    fn a_decode_failure_becomes_invalid_argument_with_a_request_id() {
        let response = rewrite(
            answer(Status::internal(
                "failed to decode Protobuf message: buffer underflow",
            )),
            "/adlake.v1.MetricsService/QueryMetrics",
        );
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("buffer underflow"), "{status:?}");
        assert!(response.headers().contains_key("x-request-id"));
    }

    #[test]
    fn other_answers_pass_unchanged() {
        for status in [
            Status::internal("internal error; the server log has the details"),
            Status::invalid_argument("unknown metric 'x'"),
        ] {
            let code = status.code();
            let response = rewrite(answer(status), "/adlake.v1.MetricsService/QueryMetrics");
            let status = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), code);
        }
        let ok = http::Response::new(tonic::body::Body::empty());
        assert!(Status::from_header_map(rewrite(ok, "/x").headers()).is_none());
    }
}
