//! Errors of the server, and THE translation of engine errors to gRPC
//! statuses.
//!
//! Two kinds of failure live here:
//!
//! * [`Error`]: what can stop the process from starting or serving (a bad
//!   auth file, a missing warehouse, a port in use). Operators read these;
//!   each has an [exit code](Error::exit_code).
//! * [`engine_status`]: the one place an [`adlake_engine::Error`] becomes a
//!   [`tonic::Status`]. Callers read these, so internal details (paths,
//!   Delta and DataFusion internals) are logged with the request id and
//!   never sent.

use std::fmt;
use std::path::PathBuf;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use uuid::Uuid;

/// Result of server operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest message sent to a caller, in bytes. SQL errors can quote the
/// whole statement back; a bound keeps responses and logs readable and
/// stops a caller from amplifying its own input.
pub const MAX_STATUS_MESSAGE_LEN: usize = 1024;

/// Name of the response header (and trailer) carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why the server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The auth file cannot be read or is malformed.
    #[error("auth file {}: {problem}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line.
        problem: String,
    },

    /// A principal of the auth file names a client the warehouse does not
    /// hold: most likely a typo, which would silently show that caller
    /// nothing.
    #[error(
        "auth file {}: principal {principal:?} lists client {client:?}, which is not in the warehouse (known clients: {known})",
        path.display()
    )]
    UnknownClient {
        /// The auth file.
        path: PathBuf,
        /// The principal's name.
        principal: String,
        /// The unknown client id.
        client: String,
        /// Some of the client ids the warehouse holds, for the operator.
        known: String,
    },

    /// The command line or environment asks for something impossible.
    #[error("{0}")]
    Config(String),

    /// The engine could not open or read the warehouse.
    #[error("{0}")]
    Engine(#[source] Box<adlake_engine::Error>),

    /// Seeding the demo warehouse or writing the demo credentials failed.
    #[error("demo setup failed: {0}")]
    Demo(String),

    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener ("flight" or "http").
        what: &'static str,
        /// The address asked for.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A server stopped with an error.
    #[error("{what} server failed: {message}")]
    Serve {
        /// Which server ("flight" or "http").
        what: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Wraps an engine error (boxed: it is large, and this enum is returned
    /// on every startup path).
    pub fn engine(err: adlake_engine::Error) -> Self {
        Self::Engine(Box::new(err))
    }

    /// The process exit code for this error: 2 when the operator must fix
    /// the configuration (auth file, warehouse location, flags), 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::AuthFile { .. } | Self::UnknownClient { .. } | Self::Config(_) => 2,
            Self::Engine(err) => match err.as_ref() {
                adlake_engine::Error::Warehouse { .. } | adlake_engine::Error::InvalidConfig(_) => {
                    2
                }
                adlake_engine::Error::InvalidSql(_)
                | adlake_engine::Error::Refused { .. }
                | adlake_engine::Error::TimedOut(_)
                | adlake_engine::Error::ReadOnly(_)
                | adlake_engine::Error::ResourcesExhausted(_)
                | adlake_engine::Error::Delta { .. }
                | adlake_engine::Error::Execution(_) => 1,
            },
            Self::Demo(_) | Self::Bind { .. } | Self::Serve { .. } => 1,
        }
    }
}

/// The id of one request: a UUID v7, so ids sort by time in the logs. It is
/// logged with every error and returned in the `x-request-id` header, so a
/// caller's report can be matched to the server's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(Uuid);

impl RequestId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Sets the `x-request-id` header (or trailer, on a status).
    pub fn tag(&self, metadata: &mut tonic::metadata::MetadataMap) {
        // A UUID's text form is plain ASCII, so this cannot fail; if it ever
        // did, a missing header is better than a failed call.
        if let Ok(value) = MetadataValue::try_from(self.0.to_string()) {
            metadata.insert(REQUEST_ID_HEADER, value);
        }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Name of the header telling a refused caller how long to wait, in whole
/// seconds (as HTTP's `Retry-After`).
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// The status code of an engine error: the caller's fault, a limit, or the
/// system's. Every variant is matched by name so a new one cannot slip
/// through with the wrong code.
pub fn status_code(err: &adlake_engine::Error) -> Code {
    use adlake_engine::Error as E;
    match err {
        E::InvalidSql(_) => Code::InvalidArgument,
        E::ReadOnly(_) => Code::PermissionDenied,
        E::ResourcesExhausted(_) | E::Refused { .. } => Code::ResourceExhausted,
        E::TimedOut(_) => Code::DeadlineExceeded,
        E::Warehouse { .. } | E::Delta { .. } | E::Execution(_) | E::InvalidConfig(_) => {
            Code::Internal
        }
    }
}

/// Translates an engine error to the status sent to the caller.
///
/// Caller mistakes keep their message (capped in length); system failures
/// become a generic `Internal` naming the request id, with the details
/// logged here. Every variant is matched by name so a new one cannot slip
/// through with the wrong code.
pub fn engine_status(err: &adlake_engine::Error, request_id: RequestId) -> Status {
    let code = status_code(err);
    let mut status = if code == Code::Internal {
        tracing::error!(
            request_id = %request_id,
            error = %ErrorChain(err),
            "internal error while serving a request"
        );
        Status::internal(internal_message(request_id))
    } else {
        let message = match err {
            adlake_engine::Error::InvalidSql(message) => cap_message(message),
            other => cap_message(&other.to_string()),
        };
        Status::new(code, message)
    };
    if let adlake_engine::Error::Refused { retry_after, .. } = err {
        let secs = adlake_engine::error::retry_after_secs(*retry_after);
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(secs.to_string()) {
            status.metadata_mut().insert(RETRY_AFTER_HEADER, value);
        }
    }
    request_id.tag(status.metadata_mut());
    status
}

/// The message of every `Internal` status: nothing about the cause, only
/// what the caller needs to get help.
pub fn internal_message(request_id: RequestId) -> String {
    format!("internal error; the server log has the details under request id {request_id}")
}

/// Truncates `message` to at most [`MAX_STATUS_MESSAGE_LEN`] bytes on a
/// character boundary, marking the cut. gRPC carries the message in an
/// HTTP/2 header, so it also folds line breaks into spaces.
pub fn cap_message(message: &str) -> String {
    const MARK: &str = " …";
    let flat: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.len() <= MAX_STATUS_MESSAGE_LEN {
        return flat;
    }
    let mut end = MAX_STATUS_MESSAGE_LEN - MARK.len();
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &flat[..end])
}

/// Displays an error with its whole `source()` chain on one line, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adlake_engine::Error as E;
    use tonic::Code;

    fn id() -> RequestId {
        RequestId::new()
    }

    #[test]
    fn invalid_sql_keeps_its_message() {
        let status = engine_status(&E::InvalidSql("table 'nope' not found".into()), id());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "table 'nope' not found");
    }

    #[test]
    fn read_only_is_permission_denied() {
        let status = engine_status(&E::ReadOnly("DELETE is not allowed".into()), id());
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("DELETE is not allowed"));
    }

    #[test]
    fn resources_exhausted_maps_to_resource_exhausted() {
        let status = engine_status(&E::ResourcesExhausted("memory limit".into()), id());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("memory limit"));
    }

    #[test]
    fn system_errors_are_internal_and_hide_details() {
        let request_id = id();
        let secret = "/srv/secret/warehouse";
        let errors = [
            E::Warehouse {
                location: secret.into(),
                message: "permission denied".into(),
            },
            E::Delta {
                table: "ad_performance".into(),
                source: deltalake::DeltaTableError::Generic(secret.into()),
            },
            E::Execution(datafusion_error(secret)),
        ];
        for err in errors {
            let status = engine_status(&err, request_id);
            assert_eq!(status.code(), Code::Internal, "{err}");
            assert!(!status.message().contains(secret), "{}", status.message());
            assert!(status.message().contains(&request_id.to_string()));
        }
    }

    fn datafusion_error(detail: &str) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::Internal(detail.to_string())
    }

    #[test]
    fn every_status_carries_the_request_id() {
        let request_id = id();
        let status = engine_status(&E::InvalidSql("x".into()), request_id);
        let header = status
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        assert_eq!(header, Some(request_id.to_string().as_str()));
    }

    #[test]
    fn long_messages_are_capped_on_a_char_boundary() {
        let long = "é".repeat(MAX_STATUS_MESSAGE_LEN);
        let capped = cap_message(&long);
        assert!(capped.len() <= MAX_STATUS_MESSAGE_LEN, "{}", capped.len());
        assert!(capped.ends_with(" …"));

        let status = engine_status(&E::InvalidSql(long), id());
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_LEN);
    }

    #[test]
    fn short_messages_are_kept_and_line_breaks_flattened() {
        assert_eq!(cap_message("short"), "short");
        assert_eq!(cap_message("a\nb"), "a b");
    }

    #[test]
    fn exit_codes_separate_configuration_from_runtime_failures() {
        let auth = Error::AuthFile {
            path: "a.toml".into(),
            problem: "x".into(),
        };
        assert_eq!(auth.exit_code(), 2);
        let missing = Error::engine(E::Warehouse {
            location: "w".into(),
            message: "missing".into(),
        });
        assert_eq!(missing.exit_code(), 2);
        assert_eq!(Error::Demo("x".into()).exit_code(), 1);
    }
}
