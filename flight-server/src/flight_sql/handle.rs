//! Statement handles and tickets that carry their SQL.
//!
//! Handles are stateless: the SQL travels inside them, so any replica can
//! serve a ticket or prepared statement another replica issued, and nothing
//! needs closing. That is safe because a handle grants nothing: every use
//! re-authenticates the caller and re-plans the SQL for the caller's own
//! scope, exactly as if the caller had sent the SQL again.

use bytes::Bytes;
use prost::Message as _;
use tonic::Status;

/// Marks (and versions) the handle format, so a foreign or future handle is
/// refused with a clear message instead of being run as SQL. A v1 handle is
/// the SQL itself.
const PREFIX: &[u8] = b"adlake.sql.v1\n";

/// A v2 handle is a [`BoundHandle`] message: SQL and bound parameters.
const PREFIX_BOUND: &[u8] = b"adlake.sql.v2\n";

/// A statement as a handle carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// The SQL as the caller wrote it, placeholders included.
    pub(crate) sql: String,
    /// The bound values as SQL literals (see `params::literals`), one per
    /// parameter; empty until the caller binds them with `DoPut`.
    ///
    /// A caller could forge these: that grants nothing, because the bound
    /// SQL is checked and scoped exactly like SQL the caller sends directly.
    pub(crate) parameters: Vec<String>,
}

/// The body of a v2 handle.
#[derive(Clone, PartialEq, prost::Message)]
struct BoundHandle {
    #[prost(string, tag = "1")]
    sql: String,
    #[prost(string, repeated, tag = "2")]
    parameters: Vec<String>,
}

/// The handle for `sql`.
pub(crate) fn encode(sql: &str) -> Bytes {
    let mut out = Vec::with_capacity(PREFIX.len() + sql.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(sql.as_bytes());
    out.into()
}

/// The handle for `sql` with bound `parameters`.
pub(crate) fn encode_bound(sql: &str, parameters: &[String]) -> Bytes {
    if parameters.is_empty() {
        return encode(sql);
    }
    let body = BoundHandle {
        sql: sql.to_string(),
        parameters: parameters.to_vec(),
    };
    let mut out = Vec::with_capacity(PREFIX_BOUND.len() + body.encoded_len());
    out.extend_from_slice(PREFIX_BOUND);
    body.encode(&mut out)
        .expect("a Vec grows to fit any message");
    out.into()
}

/// The statement inside a handle from [`encode`] or [`encode_bound`].
pub(crate) fn decode(handle: &[u8]) -> Result<Statement, Status> {
    if let Some(sql) = handle.strip_prefix(PREFIX) {
        let sql = std::str::from_utf8(sql).map_err(|_| {
            Status::invalid_argument("statement handle is corrupt (SQL is not UTF-8)")
        })?;
        return Ok(Statement {
            sql: sql.to_string(),
            parameters: Vec::new(),
        });
    }
    if let Some(body) = handle.strip_prefix(PREFIX_BOUND) {
        let body = BoundHandle::decode(body)
            .map_err(|_| Status::invalid_argument("statement handle is corrupt"))?;
        return Ok(Statement {
            sql: body.sql,
            parameters: body.parameters,
        });
    }
    Err(Status::invalid_argument(
        "not a statement handle issued by adlake",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sql() {
        let sql = "SELECT 'ünïcode', 1 -- comment\nFROM t";
        assert_eq!(
            decode(&encode(sql)).map(|s| s.sql).ok().as_deref(),
            Some(sql)
        );
        assert_eq!(decode(&encode("")).map(|s| s.sql).ok().as_deref(), Some(""));
    }

    #[test]
    fn round_trips_bound_parameters() {
        let parameters = vec!["'a''b'".to_string(), "CAST(1 AS BIGINT)".to_string()];
        let handle = encode_bound("SELECT ?, ?", &parameters);
        let statement = decode(&handle).expect("decode");
        assert_eq!(statement.sql, "SELECT ?, ?");
        assert_eq!(statement.parameters, parameters);
        // No parameters: the plain v1 handle.
        assert_eq!(encode_bound("SELECT 1", &[]), encode("SELECT 1"));
    }

    #[test]
    fn refuses_foreign_and_corrupt_handles() {
        let foreign = decode(b"SELECT 1").expect_err("no prefix");
        assert_eq!(foreign.code(), tonic::Code::InvalidArgument);

        let mut corrupt = PREFIX.to_vec();
        corrupt.push(0xff);
        let corrupt = decode(&corrupt).expect_err("not utf-8");
        assert_eq!(corrupt.code(), tonic::Code::InvalidArgument);

        for body in [
            &b"\xff\xff\xff"[..],
            &b"\x0a\x05ab"[..],
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        ] {
            let mut bad = PREFIX_BOUND.to_vec();
            bad.extend_from_slice(body);
            let status = decode(&bad).expect_err("corrupt v2");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}
