//! Statement handles and tickets that carry their SQL.
//!
//! Handles are stateless: the SQL travels inside them, so any replica can
//! serve a ticket or prepared statement another replica issued, and nothing
//! needs closing. That is safe because a handle grants nothing: every use
//! re-authenticates the caller and re-plans the SQL for the caller's own
//! scope, exactly as if the caller had sent the SQL again.

use bytes::Bytes;
use tonic::Status;

/// Marks (and versions) the handle format, so a foreign or future handle is
/// refused with a clear message instead of being run as SQL.
const PREFIX: &[u8] = b"adlake.sql.v1\n";

/// The handle for `sql`.
pub(crate) fn encode(sql: &str) -> Bytes {
    let mut out = Vec::with_capacity(PREFIX.len() + sql.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(sql.as_bytes());
    out.into()
}

/// The SQL inside a handle from [`encode`].
pub(crate) fn decode(handle: &[u8]) -> Result<&str, Status> {
    let sql = handle
        .strip_prefix(PREFIX)
        .ok_or_else(|| Status::invalid_argument("not a statement handle issued by adlake"))?;
    std::str::from_utf8(sql)
        .map_err(|_| Status::invalid_argument("statement handle is corrupt (SQL is not UTF-8)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sql() {
        let sql = "SELECT 'ünïcode', 1 -- comment\nFROM t";
        assert_eq!(decode(&encode(sql)).ok(), Some(sql));
        assert_eq!(decode(&encode("")).ok(), Some(""));
    }

    #[test]
    fn refuses_foreign_and_corrupt_handles() {
        let foreign = decode(b"SELECT 1").expect_err("no prefix");
        assert_eq!(foreign.code(), tonic::Code::InvalidArgument);

        let mut corrupt = PREFIX.to_vec();
        corrupt.push(0xff);
        let corrupt = decode(&corrupt).expect_err("not utf-8");
        assert_eq!(corrupt.code(), tonic::Code::InvalidArgument);
    }
}
