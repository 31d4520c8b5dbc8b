//! The Flight service as served: [`AdlakeFlightService`], in front of
//! [`AdlakeFlightSqlService`].
//!
//! arrow-flight's Flight SQL dispatcher decodes each call's envelope (the
//! protobuf `Any` in a ticket, a descriptor's command, an action's body)
//! before any of our code runs, and refuses a corrupt one in its own words:
//! prost's decoder text, no request id, and for a well-formed `Any` whose
//! value does not decode, `Internal`, as if the server had failed. The
//! front decodes every envelope itself first, so malformed input is
//! refused with `InvalidArgument`, a message of ours ("malformed Flight SQL
//! command: …"), the `x-request-id` header and a log line with that id; a
//! well-formed call then goes to the dispatcher, which decodes the same
//! bytes again and cannot fail.
//!
//! `DoPut` is dispatched here rather than by arrow-flight: its command is
//! in the first message of a stream, which can be read only once, and the
//! dispatcher's own reader cannot be built outside arrow-flight.
//!
//! The front also gives every call its [`RequestId`] (handed to the
//! service in the request's extensions) and a `tracing` span carrying it,
//! entered while the call's future and its answer stream are polled, so
//! every log line written while serving the call, in the engine too,
//! carries the id.

// Every Flight call fails with `tonic::Status` (see the note in the parent).
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginTransactionRequest, ActionCancelQueryRequest,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest,
    ActionEndTransactionRequest, Any, Command, ProstMessageExt,
};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

use super::{AdlakeFlightSqlService, log_failure};
use crate::error::{REQUEST_ID_HEADER, RequestId, cap_message};

type Inner = AdlakeFlightSqlService;

/// The start of every message about an envelope the front refuses.
pub const MALFORMED: &str = "malformed Flight SQL command";

/// Longest type URL quoted back to a caller.
const MAX_TYPE_URL_SHOWN: usize = 160;

/// The Flight service the server runs: envelope checks, request ids and
/// call spans in front of [`AdlakeFlightSqlService`].
pub struct AdlakeFlightService {
    inner: Inner,
}

impl AdlakeFlightService {
    /// `inner` behind the front.
    pub fn new(inner: AdlakeFlightSqlService) -> Self {
        Self { inner }
    }
}

/// The span of one call: its request id and gRPC method now; the detailed
/// method (`method`) and the caller (`principal`) once the service knows
/// them.
pub(crate) fn call_span(id: RequestId, rpc: &'static str) -> Span {
    tracing::info_span!(
        "request",
        request_id = %id,
        rpc,
        method = tracing::field::Empty,
        principal = tracing::field::Empty,
    )
}

/// A stream polled inside a span, so what it logs carries the span's
/// fields.
pub(crate) struct InSpan<S> {
    stream: S,
    span: Span,
}

impl<S> InSpan<S> {
    pub(crate) fn new(stream: S, span: Span) -> Self {
        Self { stream, span }
    }
}

impl<S: Stream + Unpin> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        Pin::new(&mut this.stream).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

/// The answer stream of a call, boxed as the service's stream types are.
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn in_span<T: 'static>(response: Response<Boxed<T>>, span: &Span) -> Response<Boxed<T>> {
    let span = span.clone();
    response.map(|stream| Box::pin(InSpan::new(stream, span)) as Boxed<T>)
}

/// Runs one call: gives it a request id (in the request's extensions) and
/// its span, runs `handler` in the span, and makes sure the outcome
/// carries the id, logging any refusal the service did not log itself.
async fn serve<T, R, F>(
    rpc: &'static str,
    mut request: Request<T>,
    handler: impl FnOnce(Request<T>, Span) -> F,
) -> Result<Response<R>, Status>
where
    F: Future<Output = Result<Response<R>, Status>>,
{
    let id = RequestId::new();
    let started = std::time::Instant::now();
    let span = call_span(id, rpc);
    request.extensions_mut().insert(id);
    let result = handler(request, span.clone())
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            if response.metadata().get(REQUEST_ID_HEADER).is_none() {
                id.tag(response.metadata_mut());
            }
            Ok(response)
        }
        Err(mut status) => {
            // The service tags (and logs) every refusal of its own; what
            // comes untagged was refused here or by the dispatcher.
            if status.metadata().get(REQUEST_ID_HEADER).is_none() {
                log_failure(id, rpc, None, &status);
                crate::observability::observe_failure(rpc, status.code(), started.elapsed());
                crate::access::Entry::new("flight_sql", rpc, id).write(
                    &crate::observability::status_name(status.code()),
                    Some(status.message()),
                    started.elapsed(),
                );
                id.tag(status.metadata_mut());
            }
            Err(status)
        }
    }
}

/// `InvalidArgument` for a malformed envelope.
pub(crate) fn malformed(detail: impl std::fmt::Display) -> Status {
    Status::invalid_argument(cap_message(&format!("{MALFORMED}: {detail}")))
}

/// A caller's type URL, safe to quote back: capped and on one line.
fn shown(type_url: &str) -> String {
    let mut shown: String = type_url.chars().take(MAX_TYPE_URL_SHOWN).collect();
    if shown.len() < type_url.len() {
        shown.push('…');
    }
    format!("{:?}", cap_message(&shown))
}

/// The message name at the end of a type URL.
pub(crate) fn message_name(type_url: &str) -> &str {
    type_url.rsplit(['/', '.']).next().unwrap_or(type_url)
}

/// Decodes an envelope as the Flight SQL dispatcher will: a protobuf `Any`
/// whose type is a Flight SQL message and whose value decodes as it.
/// `what` names the envelope in the message ("ticket", "command", …).
pub(crate) fn decode_command(bytes: &[u8], what: &str) -> Result<Command, Status> {
    if bytes.is_empty() {
        return Err(malformed(format!("the {what} is empty")));
    }
    let any = Any::decode(bytes).map_err(|_| {
        malformed(format!(
            "the {what} ({} bytes) is not a protobuf Any message",
            bytes.len()
        ))
    })?;
    if any.type_url.is_empty() {
        return Err(malformed(format!("the {what} has no type URL")));
    }
    let name = message_name(&any.type_url).to_string();
    match Command::try_from(any) {
        Ok(Command::Unknown(any)) => Err(malformed(format!(
            "the {what} has type {}, which is not a Flight SQL message",
            shown(&any.type_url)
        ))),
        Ok(command) => Ok(command),
        Err(_) => Err(malformed(format!(
            "the {what}'s value does not decode as {name}"
        ))),
    }
}

/// Checks a descriptor's command (CMD descriptors; PATH ones name no
/// Flight SQL command).
pub(crate) fn check_descriptor(descriptor: &FlightDescriptor) -> Result<Command, Status> {
    if descriptor.r#type == DescriptorType::Path as i32 {
        return Err(malformed(
            "a PATH descriptor names no command: send a CMD descriptor holding a Flight SQL command",
        ));
    }
    decode_command(&descriptor.cmd, "descriptor's command")
}

/// Checks the body of a Flight SQL action: an `Any` holding the request
/// message of that action. Actions the service does not know are left to
/// it (it refuses them by name).
pub(crate) fn check_action(action: &Action) -> Result<(), Status> {
    fn body<M: ProstMessageExt>(action: &Action) -> Result<(), Status> {
        let kind = action.r#type.as_str();
        let expected = message_name(M::type_url());
        if action.body.is_empty() {
            return Err(malformed(format!(
                "the {kind} action has an empty body: send a {expected} in a protobuf Any"
            )));
        }
        let any = Any::decode(&*action.body).map_err(|_| {
            malformed(format!(
                "the {kind} action's body ({} bytes) is not a protobuf Any message",
                action.body.len()
            ))
        })?;
        match any.unpack::<M>() {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(malformed(format!(
                "the {kind} action's body has type {}: expected {expected}",
                shown(&any.type_url)
            ))),
            Err(_) => Err(malformed(format!(
                "the {kind} action's body does not decode as {expected}"
            ))),
        }
    }
    match action.r#type.as_str() {
        "CreatePreparedStatement" => body::<ActionCreatePreparedStatementRequest>(action),
        "ClosePreparedStatement" => body::<ActionClosePreparedStatementRequest>(action),
        "CreatePreparedSubstraitPlan" => body::<ActionCreatePreparedSubstraitPlanRequest>(action),
        "BeginTransaction" => body::<ActionBeginTransactionRequest>(action),
        "EndTransaction" => body::<ActionEndTransactionRequest>(action),
        "BeginSavepoint" => body::<ActionBeginSavepointRequest>(action),
        "EndSavepoint" => body::<ActionEndSavepointRequest>(action),
        "CancelQuery" => body::<ActionCancelQueryRequest>(action),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl FlightService for AdlakeFlightService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        serve("Handshake", request, |request, span| async move {
            let response = <Inner as FlightService>::handshake(&self.inner, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        serve("ListFlights", request, |request, _| async move {
            self.inner.refuse(
                "ListFlights",
                &request,
                Status::unimplemented(
                    "ListFlights is not supported: ask GetTables (Flight SQL) for the tables",
                ),
            )
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        serve("GetFlightInfo", request, |request, _| async move {
            check_descriptor(request.get_ref())?;
            <Inner as FlightService>::get_flight_info(&self.inner, request).await
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        serve("PollFlightInfo", request, |request, _| async move {
            check_descriptor(request.get_ref())?;
            self.inner.refuse(
                "PollFlightInfo",
                &request,
                Status::unimplemented("PollFlightInfo is not supported: use GetFlightInfo"),
            )
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        serve("GetSchema", request, |request, _| async move {
            check_descriptor(request.get_ref())?;
            self.inner.refuse(
                "GetSchema",
                &request,
                Status::unimplemented(
                    "GetSchema is not supported: GetFlightInfo answers with the schema",
                ),
            )
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        serve("DoGet", request, |request, span| async move {
            decode_command(&request.get_ref().ticket, "ticket")?;
            let response = <Inner as FlightService>::do_get(&self.inner, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        serve("DoPut", request, |request, span| async move {
            let (metadata, extensions, stream) = request.into_parts();
            let mut stream = stream.peekable();
            let command = match Pin::new(&mut stream).peek().await {
                None => Err(malformed("DoPut sent no message")),
                Some(Err(status)) => Err(status.clone()),
                Some(Ok(FlightData {
                    flight_descriptor: None,
                    ..
                })) => Err(malformed(
                    "the first DoPut message carries no flight descriptor",
                )),
                Some(Ok(FlightData {
                    flight_descriptor: Some(descriptor),
                    ..
                })) => check_descriptor(descriptor),
            }?;
            let request = Request::from_parts(metadata, extensions, stream);
            let response = self.inner.do_put_command(command, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        serve("DoExchange", request, |request, span| async move {
            let response = <Inner as FlightService>::do_exchange(&self.inner, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        serve("DoAction", request, |request, span| async move {
            check_action(request.get_ref())?;
            let response = <Inner as FlightService>::do_action(&self.inner, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        serve("ListActions", request, |request, span| async move {
            self.inner.check_caller("ListActions", &request)?;
            let response = <Inner as FlightService>::list_actions(&self.inner, request).await?;
            Ok(in_span(response, &span))
        })
        .await
    }
}
