//! The Arrow Flight SQL service: BI tools, ADBC and JDBC drivers, pyarrow.
//!
//! [`AdlakeFlightSqlService`] authenticates each call, maps the caller to a
//! [`Scope`](adlake_engine::Scope) and hands SQL to the
//! [`Engine`]; it holds no query logic. What it serves:
//!
//! * the handshake (Basic or Bearer in, `authorization: Bearer` out);
//! * statements and prepared statements, with stateless handles
//!   ([`handle`]) and results streamed batch by batch;
//! * the metadata calls ADBC's `adbc_get_objects` / `adbc_get_table_schema`
//!   and JDBC's `DatabaseMetaData` make: catalogs, schemas, tables (with
//!   their Arrow schemas), table types and `GetSqlInfo`.
//!
//! Everything else is refused with a status that says why, after the caller
//! is authenticated, so an anonymous caller learns nothing about the server.
//! Each call gets a [`RequestId`] returned in the `x-request-id` header and
//! logged with every failure.

// Every Flight call fails with `tonic::Status`, which is larger than
// clippy's threshold; boxing it in private helpers would only add noise
// before unboxing at the trait boundary.
#![allow(clippy::result_large_err)]

mod front;
mod handle;
mod metadata;
mod params;

pub(crate) use front::call_span;
pub use front::{AdlakeFlightService, MALFORMED};

use std::pin::Pin;
use std::sync::Arc;

use adlake_engine::transport::transport_type;
use adlake_engine::{CATALOG_NAME, Described, Engine, QueryExecutor, RequestContext, SCHEMA_NAME};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, XdbcTypeInfoData,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, Any, Command, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PutResult, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Credential, Principal, parse_authorization};
use crate::error::{ErrorChain, RequestId, engine_status, internal_message};
use adlake_engine::StatementLimits;
use params::Placeholders;

/// Largest gRPC message the server accepts (tonic's default is 4 MiB):
/// prepared-statement parameters and long SQL travel in requests.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The stream type of every `DoGet` answer.
type DoGetStream = <AdlakeFlightSqlService as FlightService>::DoGetStream;

/// The stream type of the handshake answer.
type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// Flight SQL in front of the engine's door.
pub struct AdlakeFlightSqlService {
    /// Every query goes through it (admission, deadline, query record).
    executor: QueryExecutor,
    /// The catalog's tables and statement limits, for the metadata calls.
    engine: Arc<Engine>,
    authenticator: Arc<dyn Authenticator>,
    sql_info: SqlInfoData,
    xdbc_types: XdbcTypeInfoData,
}

impl AdlakeFlightSqlService {
    /// A service answering through `executor` for the callers
    /// `authenticator` knows.
    pub fn new(executor: QueryExecutor, authenticator: Arc<dyn Authenticator>) -> Self {
        Self {
            engine: Arc::clone(executor.engine()),
            executor,
            authenticator,
            sql_info: metadata::sql_info_data(),
            xdbc_types: metadata::xdbc_type_info_data(),
        }
    }

    /// The gRPC service: the service behind its [front](AdlakeFlightService)
    /// (envelope checks, request ids, call spans), with the decoding limit
    /// raised to [`MAX_DECODING_MESSAGE_SIZE`].
    pub fn into_server(self) -> FlightServiceServer<AdlakeFlightService> {
        FlightServiceServer::new(AdlakeFlightService::new(self))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
    }

    /// Checks the `authorization: Bearer <token>` header of a call.
    fn authenticate(&self, call: &mut Call, metadata: &MetadataMap) -> Result<Principal, Status> {
        let credential = read_credential(metadata)?;
        let Credential::Bearer(token) = credential else {
            return Err(Status::unauthenticated(
                "this call needs `authorization: Bearer <token>`; Basic credentials are only accepted by the Flight handshake, which answers with the bearer header",
            ));
        };
        self.principal_for(call, &token)
    }

    fn principal_for(&self, call: &mut Call, token: &str) -> Result<Principal, Status> {
        let principal = self
            .authenticator
            .authenticate(token)
            .ok_or_else(|| Status::unauthenticated("invalid token"))?;
        call.principal = Some(principal.name.clone());
        call.access.principal = Some(principal.name.clone());
        call.access.scope = Some(principal.scope.to_string());
        tracing::Span::current().record("principal", principal.name.as_str());
        // Every authenticated call counts against the caller's rate.
        self.executor
            .admit_call(&principal.name)
            .map_err(|err| engine_status(&err, call.id))?;
        Ok(principal)
    }

    /// Authenticates, then refuses the call with `status`: the answer for
    /// everything the server does not do.
    fn refuse<T, R>(
        &self,
        method: &'static str,
        request: &Request<T>,
        status: Status,
    ) -> Result<R, Status> {
        let mut call = Call::new(method, request.extensions());
        let status = match self.authenticate(&mut call, request.metadata()) {
            Ok(_) => status,
            Err(unauthenticated) => unauthenticated,
        };
        Err(call.fail(status))
    }

    /// Authenticates a call the service answers without further checks.
    fn check_caller<T>(&self, method: &'static str, request: &Request<T>) -> Result<(), Status> {
        let mut call = Call::new(method, request.extensions());
        let result = self.authenticate(&mut call, request.metadata()).map(|_| ());
        call.finish(result)
    }

    /// `DoPut` for a command the [front](AdlakeFlightService) decoded from
    /// the stream's first message (which `request` still holds): binding
    /// prepared-statement parameters, or a refusal.
    async fn do_put_command<S>(
        &self,
        command: Command,
        request: Request<S>,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status>
    where
        S: Stream<Item = Result<FlightData, Status>> + Send + Unpin + 'static,
    {
        let refusal = match command {
            Command::CommandPreparedStatementQuery(query) => {
                let result = self.bind_parameters(query, request).await?;
                let answer = PutResult {
                    app_metadata: result.encode_to_vec().into(),
                };
                let stream: <Self as FlightService>::DoPutStream =
                    Box::pin(stream::iter([Ok(answer)]));
                return Ok(Response::new(stream));
            }
            Command::CommandStatementUpdate(_) => (
                "DoPut(StatementUpdate)",
                Status::permission_denied(READ_ONLY),
            ),
            Command::CommandStatementIngest(_) => (
                "DoPut(StatementIngest)",
                Status::permission_denied(READ_ONLY),
            ),
            Command::CommandPreparedStatementUpdate(_) => (
                "DoPut(PreparedStatementUpdate)",
                Status::permission_denied(READ_ONLY),
            ),
            Command::CommandStatementSubstraitPlan(_) => {
                ("DoPut(SubstraitPlan)", Status::unimplemented(NO_SUBSTRAIT))
            }
            other => (
                "DoPut",
                Status::unimplemented(format!("unsupported DoPut command {}", other.type_url())),
            ),
        };
        self.refuse(refusal.0, &request, refusal.1)
    }

    /// Binds parameters to a prepared statement. Binding is stateless too:
    /// the answer is a new handle carrying the SQL and the values, which
    /// the client uses from then on.
    async fn bind_parameters<S>(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<S>,
    ) -> Result<DoPutPreparedStatementResult, Status>
    where
        S: Stream<Item = Result<FlightData, Status>> + Send + Unpin + 'static,
    {
        let mut call = Call::new("DoPut(PreparedStatementQuery)", request.extensions());
        let result = async {
            self.authenticate(&mut call, request.metadata())?;
            let statement = handle::decode(&query.prepared_statement_handle)?;
            let placeholders = Placeholders::find(&statement.sql, self.engine.statement_limits())?;
            let values = read_parameters(request.into_inner()).await?;
            let values = match values {
                Some(batch) => params::literals(&batch)?,
                None => Vec::new(),
            };
            // Checks the count now, so a wrong binding fails here and not at
            // execution.
            placeholders.bind(&values)?;
            Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(handle::encode_bound(&statement.sql, &values)),
            })
        }
        .await;
        call.finish(result)
    }

    /// What planning `sql` for the caller gives (from the engine's memo
    /// when the statement was planned before and its tables have not moved).
    async fn describe(
        &self,
        call: &Call,
        principal: &Principal,
        sql: &str,
    ) -> Result<Arc<Described>, Status> {
        tracing::debug!(request_id = %call.id, principal = %principal.name, scope = %principal.scope, sql, "describing");
        // Planning is work of the caller's like running: it takes one of its
        // query slots and counts against the query timeout.
        let ctx = RequestContext::new(principal.name.clone(), principal.scope.clone());
        self.executor
            .describe(&ctx, sql)
            .await
            .map_err(|err| engine_status(&err, call.id))
    }

    /// Describes `sql`'s result for the caller: the schema, and one
    /// endpoint whose ticket carries the SQL (see [`handle`]).
    async fn statement_info(
        &self,
        call: &mut Call,
        request: Request<FlightDescriptor>,
        sql: &str,
    ) -> Result<FlightInfo, Status> {
        call.statement(sql);
        let principal = self.authenticate(call, request.metadata())?;
        refuse_unbound(sql, self.engine.statement_limits())?;
        let described = self.describe(call, &principal, sql).await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle::encode(sql),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        Ok(FlightInfo::new()
            .try_with_schema(&described.schema)
            .map_err(|err| call.internal(&err))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner())
            // Unknown until the query has run.
            .with_total_records(-1)
            .with_total_bytes(-1))
    }

    /// Plans `sql` again for the caller (tickets are stateless) and streams
    /// its batches as they are produced; nothing is collected in memory.
    async fn statement_stream(
        &self,
        call: &mut Call,
        metadata: &MetadataMap,
        sql: &str,
    ) -> Result<DoGetStream, Status> {
        call.statement(sql);
        let principal = self.authenticate(call, metadata)?;
        refuse_unbound(sql, self.engine.statement_limits())?;
        // The result cache, keyed by scope, SQL and table versions;
        // `x-adlake-cache: bypass` skips it. A statement planned before is
        // looked up without planning it again.
        let bypass = metadata
            .get("x-adlake-cache")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bypass"));
        tracing::debug!(request_id = %call.id, principal = %principal.name, scope = %principal.scope, sql, bypass, "running");
        let ctx = RequestContext::new(principal.name.clone(), principal.scope.clone())
            .with_started(call.started)
            .with_bypass_cache(bypass)
            .with_note(call.access.clone());
        // Admission, the caller's lane, the deadline, the result limit and
        // the query's record are the door's.
        let answer = self
            .executor
            .sql(ctx, sql)
            .await
            .map_err(|err| engine_status(&err, call.id))?;
        // The advertised schema is sent first, so a client gets it even for an
        // empty result, and it is the schema of every batch.
        let (id, method, who) = (call.id, call.method, call.principal.clone());
        let batches = answer.batches.map_err(move |err| {
            let status = engine_status(&err, id);
            log_failure(id, method, who.as_deref(), &status);
            FlightError::Tonic(Box::new(status))
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(answer.schema)
            .build(batches)
            .map_err(move |err| encoder_status(err, id));
        Ok(Box::pin(flight))
    }

    /// Describes a metadata answer: the builder's schema, and a ticket that
    /// is the command itself.
    fn metadata_info(
        &self,
        call: &mut Call,
        request: Request<FlightDescriptor>,
        command: Any,
        schema: SchemaRef,
    ) -> Result<FlightInfo, Status> {
        self.authenticate(call, request.metadata())?;
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec()));
        Ok(FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|err| call.internal(&err))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner()))
    }

    /// Authenticates, then answers with no rows in `schema`.
    fn empty_answer(
        &self,
        call: &mut Call,
        request: &Request<Ticket>,
        schema: SchemaRef,
    ) -> Result<DoGetStream, Status> {
        self.authenticate(call, request.metadata())?;
        let batch = metadata::empty_answer(Arc::clone(&schema));
        Ok(batch_stream(schema, batch, call.id))
    }

    fn tables_batch(
        &self,
        query: CommandGetTables,
    ) -> Result<(SchemaRef, RecordBatch), FlightError> {
        // Filtering here rather than in the builder keeps one definition of
        // the pattern rules (`metadata::like`) and skips encoding the schemas
        // of tables nobody asked for.
        let wanted = catalog_matches(query.catalog.as_deref())
            && pattern_matches(SCHEMA_NAME, query.db_schema_filter_pattern.as_deref())
            && (query.table_types.is_empty()
                || query
                    .table_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(metadata::TABLE_TYPE)));
        let mut builder = GetTablesBuilder::new(
            None::<String>,
            None::<String>,
            None::<String>,
            std::iter::empty::<String>(),
            query.include_schema,
        );
        if wanted {
            for table in self.engine.tables() {
                if pattern_matches(&table.name, query.table_name_filter_pattern.as_deref()) {
                    builder.append(
                        CATALOG_NAME,
                        SCHEMA_NAME,
                        &table.name,
                        metadata::TABLE_TYPE,
                        &table.schema,
                    )?;
                }
            }
        }
        Ok((builder.schema(), builder.build()?))
    }
}

/// Refuses SQL that still has placeholders: it cannot run until values are
/// bound, and the engine would only find out at execution.
fn refuse_unbound(sql: &str, limits: &StatementLimits) -> Result<(), Status> {
    let placeholders = Placeholders::find(sql, limits)?;
    if placeholders.count > 0 {
        return Err(Status::invalid_argument(format!(
            "the SQL has {} parameter(s): prepare it and bind values with DoPut before executing it",
            placeholders.count
        )));
    }
    Ok(())
}

/// The SQL a handle's statement runs: its parameters bound in place.
fn bound_sql(statement: handle::Statement, limits: &StatementLimits) -> Result<String, Status> {
    let placeholders = Placeholders::find(&statement.sql, limits)?;
    if placeholders.count == 0 && statement.parameters.is_empty() {
        return Ok(statement.sql);
    }
    if statement.parameters.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameter(s): bind values with DoPut before executing it",
            placeholders.count
        )));
    }
    placeholders.bind(&statement.parameters)
}

/// The parameter schema of a prepared statement: one nullable field per
/// parameter, `$1`, `$2`, …, typed as the SQL decides (`Null` where it
/// does not), in the plain types every client reads: a parameter compared
/// with a dictionary-encoded partition column is advertised as its value
/// type, as the column itself is.
fn parameter_schema(types: Vec<Option<DataType>>) -> Schema {
    Schema::new(
        types
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let data_type = t.map_or(DataType::Null, |t| transport_type(&t));
                Field::new(format!("${}", i + 1), data_type, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// Whether the catalog filter of a metadata command selects our catalog.
/// The spec makes it an exact name (`""` means "no catalog"), not a pattern.
fn catalog_matches(filter: Option<&str>) -> bool {
    filter.is_none_or(|catalog| catalog == CATALOG_NAME)
}

fn pattern_matches(name: &str, pattern: Option<&str>) -> bool {
    pattern.is_none_or(|pattern| metadata::like(name, pattern))
}

/// Reads the `authorization` header. The errors never repeat the header.
fn read_credential(metadata: &MetadataMap) -> Result<Credential, Status> {
    let value = metadata.get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "missing authorization header: send `authorization: Bearer <token>` (or Basic credentials with the token as password in the handshake)",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not printable ASCII"))?;
    parse_authorization(value).map_err(|err| Status::unauthenticated(err.to_string()))
}

/// Reads the parameter rows a client binds with `DoPut`: `None` when it sent
/// none, else the one row (several rows would mean several executions, which
/// a query does not do).
async fn read_parameters<S>(stream: S) -> Result<Option<RecordBatch>, Status>
where
    S: Stream<Item = Result<FlightData, Status>> + Send + Unpin + 'static,
{
    let mut batches = FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|status| FlightError::Tonic(Box::new(status))),
    );
    let mut row: Option<RecordBatch> = None;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|err| match err {
            FlightError::Tonic(status) => *status,
            other => Status::invalid_argument(format!(
                "cannot read the bound parameters: {}",
                crate::error::cap_message(&other.to_string())
            )),
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        if row.is_some() || batch.num_rows() > 1 {
            return Err(Status::invalid_argument(
                "bind exactly one row of parameters per execution",
            ));
        }
        row = Some(batch);
    }
    Ok(row)
}

/// A one-batch `DoGet` answer.
fn batch_stream(schema: SchemaRef, batch: RecordBatch, id: RequestId) -> DoGetStream {
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(stream::once(async move { Ok(batch) }))
        .map_err(move |err| encoder_status(err, id));
    Box::pin(flight)
}

/// Errors out of the Flight encoder: statuses made upstream pass through;
/// anything else (an IPC encoding failure) is ours, logged and hidden.
fn encoder_status(err: FlightError, id: RequestId) -> Status {
    match err {
        FlightError::Tonic(status) => *status,
        other => {
            tracing::error!(request_id = %id, error = %ErrorChain(&other), "encoding a result failed");
            let mut status = Status::internal(internal_message(id));
            id.tag(status.metadata_mut());
            status
        }
    }
}

/// One call: its request id, method and (once known) principal, so every
/// failure is logged with them and answered with the `x-request-id` header.
struct Call {
    id: RequestId,
    method: &'static str,
    principal: Option<String>,
    /// When the call came in.
    started: std::time::Instant,
    /// What the access log will say of the call.
    access: crate::access::Entry,
}

impl Call {
    /// The call of a request: its id is the one the
    /// [front](AdlakeFlightService) put in the request's extensions (a
    /// fresh one when the service is called without it, as in tests).
    fn new(method: &'static str, extensions: &tonic::Extensions) -> Self {
        let id = extensions.get::<RequestId>().copied().unwrap_or_default();
        tracing::Span::current().record("method", method);
        tracing::debug!(request_id = %id, method, "call");
        Self {
            id,
            method,
            principal: None,
            started: std::time::Instant::now(),
            access: crate::access::Entry::new("flight_sql", method, id),
        }
    }

    /// Names the statement of the call in its access-log entry.
    fn statement(&mut self, sql: &str) {
        if crate::access::enabled() {
            self.access.statement(sql);
        }
    }

    /// Logs a failed call and tags its status with the request id.
    fn fail(&self, mut status: Status) -> Status {
        log_failure(self.id, self.method, self.principal.as_deref(), &status);
        crate::metrics::observe_failure(self.method, status.code(), self.started.elapsed());
        self.access.clone().write(
            &crate::metrics::status_name(status.code()),
            Some(status.message()),
            self.started.elapsed(),
        );
        self.id.tag(status.metadata_mut());
        status
    }

    /// Our own failure (not the engine's): log the detail, send nothing of it.
    fn internal(&self, err: &(dyn std::error::Error + 'static)) -> Status {
        tracing::error!(request_id = %self.id, method = self.method, error = %ErrorChain(err), "internal error");
        Status::internal(internal_message(self.id))
    }

    /// Wraps a handler's outcome into the response, tagging both outcomes
    /// with the request id.
    fn reply<T>(&self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => {
                let mut response = Response::new(value);
                self.id.tag(response.metadata_mut());
                Ok(response)
            }
            Err(status) => Err(self.fail(status)),
        }
    }

    /// Like [`Call::reply`] for handlers whose answer is not a `Response`.
    fn finish<T>(&self, result: Result<T, Status>) -> Result<T, Status> {
        result.map_err(|status| self.fail(status))
    }
}

/// Logs a failed call: the caller's mistakes at `info` (they are normal
/// traffic), the server's at `error`.
pub(crate) fn log_failure(id: RequestId, method: &str, principal: Option<&str>, status: &Status) {
    let principal = principal.unwrap_or("-");
    let code = status.code();
    // Not `message`: that is the field of the event's own text.
    let detail = status.message();
    match code {
        Code::Unauthenticated
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::NotFound
        | Code::Unimplemented
        | Code::Cancelled
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists => {
            tracing::info!(request_id = %id, method, principal, ?code, detail, "request refused");
        }
        Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted | Code::Unavailable => {
            tracing::warn!(request_id = %id, method, principal, ?code, detail, "request failed");
        }
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            tracing::error!(request_id = %id, method, principal, ?code, detail, "request failed");
        }
    }
}

const READ_ONLY: &str =
    "adlake is read-only: data is written by adlake-ingest, not through Flight SQL";
const NO_SUBSTRAIT: &str = "Substrait plans are not supported: send SQL";
const NO_TRANSACTIONS: &str =
    "transactions are not supported: adlake is read-only and each statement runs on its own";

#[tonic::async_trait]
impl FlightSqlService for AdlakeFlightSqlService {
    type FlightService = AdlakeFlightSqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let mut call = Call::new("Handshake", request.extensions());
        let result = (|| {
            let credential = read_credential(request.metadata())?;
            let token = credential.token().to_string();
            let principal = self.principal_for(&mut call, &token)?;
            // Stateless: the bearer token is the caller's own token, so any
            // replica accepts it and there is no session to expire.
            let bearer = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Status::invalid_argument(
                    "the token contains characters an HTTP header cannot carry",
                )
            })?;
            Ok((principal, token, bearer))
        })();
        let (principal, token, bearer) = call.finish(result)?;
        tracing::info!(request_id = %call.id, principal = %principal.name, "handshake succeeded");
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let mut response =
            call.reply(Ok(Box::pin(stream::iter([Ok(answer)])) as HandshakeStream))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    // ---- statements -------------------------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(Statement)", request.extensions());
        let result = if query.transaction_id.is_some() {
            Err(Status::invalid_argument(NO_TRANSACTIONS))
        } else {
            self.statement_info(&mut call, request, &query.query).await
        };
        call.reply(result)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(Statement)", request.extensions());
        let result = match handle::decode(&ticket.statement_handle)
            .and_then(|s| bound_sql(s, self.engine.statement_limits()))
        {
            Ok(sql) => {
                self.statement_stream(&mut call, request.metadata(), &sql)
                    .await
            }
            Err(status) => Err(status),
        };
        call.reply(result)
    }

    // ---- prepared statements ----------------------------------------------

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let mut call = Call::new("CreatePreparedStatement", request.extensions());
        call.statement(&query.query);
        let result = async {
            let principal = self.authenticate(&mut call, request.metadata())?;
            if query.transaction_id.is_some() {
                return Err(Status::invalid_argument(NO_TRANSACTIONS));
            }
            // Planning now validates the SQL and gives the dataset and
            // parameter schemas; the handle then carries only the SQL, to be
            // planned again (with the bound values) per use.
            let placeholders = Placeholders::find(&query.query, self.engine.statement_limits())?;
            let described = self.describe(&call, &principal, &placeholders.sql).await?;
            let schema = Arc::clone(&described.schema);
            let mut types = described.parameter_types.clone();
            // `$3` alone still takes three values.
            types.resize(placeholders.count.max(types.len()), None);
            let options = IpcWriteOptions::default();
            let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &options)
                .try_into()
                .map_err(|err: ArrowError| call.internal(&err))?;
            let parameter_schema = if types.is_empty() {
                // No parameters: an empty message, as the spec allows.
                Default::default()
            } else {
                let IpcMessage(bytes) = SchemaAsIpc::new(&parameter_schema(types), &options)
                    .try_into()
                    .map_err(|err: ArrowError| call.internal(&err))?;
                bytes
            };
            Ok(ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle::encode(&query.query),
                dataset_schema,
                parameter_schema,
            })
        }
        .await;
        call.finish(result)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(PreparedStatement)", request.extensions());
        let result = match handle::decode(&query.prepared_statement_handle)
            .and_then(|s| bound_sql(s, self.engine.statement_limits()))
        {
            Ok(sql) => self.statement_info(&mut call, request, &sql).await,
            Err(status) => Err(status),
        };
        call.reply(result)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(PreparedStatement)", request.extensions());
        let result = match handle::decode(&query.prepared_statement_handle)
            .and_then(|s| bound_sql(s, self.engine.statement_limits()))
        {
            Ok(sql) => {
                self.statement_stream(&mut call, request.metadata(), &sql)
                    .await
            }
            Err(status) => Err(status),
        };
        call.reply(result)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.bind_parameters(query, request).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state, so closing only checks the caller.
        let mut call = Call::new("ClosePreparedStatement", request.extensions());
        let result = self.authenticate(&mut call, request.metadata()).map(|_| ());
        call.finish(result)
    }

    // ---- metadata ---------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(Catalogs)", request.extensions());
        let schema = GetCatalogsBuilder::new().schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(Catalogs)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let mut builder = query.into_builder();
                builder.append(CATALOG_NAME);
                let schema = builder.schema();
                let batch = builder.build().map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(DbSchemas)", request.extensions());
        let schema = GetDbSchemasBuilder::new(None::<String>, None::<String>).schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(DbSchemas)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let mut builder = GetDbSchemasBuilder::new(None::<String>, None::<String>);
                if catalog_matches(query.catalog.as_deref())
                    && pattern_matches(SCHEMA_NAME, query.db_schema_filter_pattern.as_deref())
                {
                    builder.append(CATALOG_NAME, SCHEMA_NAME);
                }
                let schema = builder.schema();
                let batch = builder.build().map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(Tables)", request.extensions());
        let schema = query.clone().into_builder().schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(Tables)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let (schema, batch) = self
                    .tables_batch(query)
                    .map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(TableTypes)", request.extensions());
        let schema = query.into_builder().schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(TableTypes)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let mut builder = query.into_builder();
                for table_type in metadata::TABLE_TYPES {
                    builder.append(table_type);
                }
                let schema = builder.schema();
                let batch = builder.build().map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(SqlInfo)", request.extensions());
        let schema = self.sql_info.schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(SqlInfo)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let builder = query.into_builder(&self.sql_info);
                let schema = builder.schema();
                let batch = builder.build().map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    // Keys: the warehouse's tables declare none, so every answer is empty,
    // in the schema the spec gives (JDBC renames its columns and fails on
    // any other shape).

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(PrimaryKeys)", request.extensions());
        let schema = metadata::primary_keys_schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(PrimaryKeys)", request.extensions());
        let result = self.empty_answer(&mut call, &request, metadata::primary_keys_schema());
        call.reply(result)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(ExportedKeys)", request.extensions());
        let schema = metadata::foreign_keys_schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(ExportedKeys)", request.extensions());
        let result = self.empty_answer(&mut call, &request, metadata::foreign_keys_schema());
        call.reply(result)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(ImportedKeys)", request.extensions());
        let schema = metadata::foreign_keys_schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(ImportedKeys)", request.extensions());
        let result = self.empty_answer(&mut call, &request, metadata::foreign_keys_schema());
        call.reply(result)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(CrossReference)", request.extensions());
        let schema = metadata::foreign_keys_schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(CrossReference)", request.extensions());
        let result = self.empty_answer(&mut call, &request, metadata::foreign_keys_schema());
        call.reply(result)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = Call::new("GetFlightInfo(XdbcTypeInfo)", request.extensions());
        let schema = self.xdbc_types.schema();
        let result = self.metadata_info(&mut call, request, query.as_any(), schema);
        call.reply(result)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut call = Call::new("DoGet(XdbcTypeInfo)", request.extensions());
        let result = self
            .authenticate(&mut call, request.metadata())
            .and_then(|_| {
                let builder = query.into_builder(&self.xdbc_types);
                let schema = builder.schema();
                let batch = builder.build().map_err(|err| call.internal(&err))?;
                Ok(batch_stream(schema, batch, call.id))
            });
        call.reply(result)
    }

    /// The SqlInfo answers are fixed at construction (see
    /// `metadata::sql_info_data`); nothing registers more.
    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}

    // ---- refused, after authentication ------------------------------------

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.refuse(
            "GetFlightInfo(SubstraitPlan)",
            &request,
            Status::unimplemented(NO_SUBSTRAIT),
        )
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(
            "DoPut(SubstraitPlan)",
            &request,
            Status::unimplemented(NO_SUBSTRAIT),
        )
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.refuse(
            "CreatePreparedSubstraitPlan",
            &request,
            Status::unimplemented(NO_SUBSTRAIT),
        )
    }

    async fn do_put_statement_update(
        &self,
        _query: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(
            "DoPut(StatementUpdate)",
            &request,
            Status::permission_denied(READ_ONLY),
        )
    }

    async fn do_put_statement_ingest(
        &self,
        _query: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(
            "DoPut(StatementIngest)",
            &request,
            Status::permission_denied(READ_ONLY),
        )
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(
            "DoPut(PreparedStatementUpdate)",
            &request,
            Status::permission_denied(READ_ONLY),
        )
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        self.refuse(
            "BeginTransaction",
            &request,
            Status::unimplemented(NO_TRANSACTIONS),
        )
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.refuse(
            "EndTransaction",
            &request,
            Status::unimplemented(NO_TRANSACTIONS),
        )
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        self.refuse(
            "BeginSavepoint",
            &request,
            Status::unimplemented(NO_TRANSACTIONS),
        )
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.refuse(
            "EndSavepoint",
            &request,
            Status::unimplemented(NO_TRANSACTIONS),
        )
    }

    async fn do_action_cancel_query(
        &self,
        _query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.refuse(
            "CancelQuery",
            &request,
            Status::unimplemented(
                "cancelling is not supported: close the result stream to stop a query",
            ),
        )
    }

    async fn get_flight_info_fallback(
        &self,
        command: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let status = Status::unimplemented(format!(
            "unsupported Flight SQL command {}",
            command.type_url()
        ));
        self.refuse("GetFlightInfo", &request, status)
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let status = Status::unimplemented(format!("unsupported ticket {}", message.type_url));
        self.refuse("DoGet", &request, status)
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        let status =
            Status::unimplemented(format!("unsupported DoPut command {}", message.type_url));
        self.refuse("DoPut", &request, status)
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let status = Status::invalid_argument(format!(
            "unknown action {:?}",
            crate::error::cap_message(&request.get_ref().r#type)
        ));
        self.refuse("DoAction", &request, status)
    }

    async fn do_exchange_fallback(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<<Self as FlightService>::DoExchangeStream>, Status> {
        self.refuse(
            "DoExchange",
            &request,
            Status::unimplemented("DoExchange is not supported"),
        )
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
