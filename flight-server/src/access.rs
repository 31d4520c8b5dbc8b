//! The access log: who read what, one JSON line per query or refused call.
//!
//! With `--access-log PATH` the server appends an [`Entry`] to `PATH` for
//! every query that ran (Flight SQL statements and prepared statements,
//! gRPC `QueryMetrics` and `GetFreshness`), when its answer is over, and
//! for every call refused or failed on either surface (an unknown token, a
//! statement over a limit, a malformed request). An entry names the
//! caller, the scope they were granted, the statement or metric request,
//! the tables and the Delta versions read, the rows returned, the outcome
//! and the request id (the `x-request-id` the caller got), with the time.
//! It never holds a credential: tokens are read from headers, which are
//! not logged, and a statement cannot carry one.
//!
//! Lines are written by a thread of their own from a bounded queue, so a
//! slow disk never holds a runtime worker; when the queue is full the
//! query waits rather than go unrecorded. The file is opened for appending
//! only, so entries from earlier runs (or another replica writing to the
//! same file) are never rewritten. Without the flag nothing is written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// Statements longer than this are logged cut, with the whole one's
/// length and SHA-256.
pub const MAX_STATEMENT_LOGGED: usize = 64 * 1024;

/// Entries waiting for the writer before a query waits for it.
const QUEUE: usize = 16 * 1024;

static SINK: OnceLock<SyncSender<Entry>> = OnceLock::new();

/// One line of the access log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    /// When the answer ended (or the call was refused), RFC 3339 UTC.
    pub time: String,
    /// The call's request id, as the caller was told it.
    pub request_id: String,
    /// `flight_sql` or `grpc`.
    pub surface: &'static str,
    /// The method, e.g. `DoGet(Statement)`, `QueryMetrics`.
    pub method: String,
    /// The authenticated caller; absent when authentication failed.
    pub principal: Option<String>,
    /// The clients the caller may see: `*` or their ids, comma-separated.
    pub scope: Option<String>,
    /// The SQL statement, as sent (cut past [`MAX_STATEMENT_LOGGED`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Bytes and SHA-256 of a statement that was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_sha256: Option<String>,
    /// A metric or freshness request, as asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each table read, at the Delta version read (`null`: not yet
    /// created).
    pub tables: BTreeMap<String, Option<u64>>,
    /// `hit`, `miss` or `bypass` for answers that went through the result
    /// cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Rows sent to the caller.
    pub rows: u64,
    /// `ok`, `cancelled` (the caller left before the end), or the gRPC
    /// status of the failure (`unauthenticated`, `invalid_argument`, ...).
    pub outcome: String,
    /// The refusal's message, as the caller got it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// From the first byte of the call to the end of the answer.
    pub duration_ms: f64,
}

impl Entry {
    /// An entry of a call to `method` on `surface`.
    pub fn new(surface: &'static str, method: &str, request_id: impl ToString) -> Self {
        Self {
            surface,
            method: method.to_owned(),
            request_id: request_id.to_string(),
            ..Self::default()
        }
    }

    /// Sets the statement, cut to [`MAX_STATEMENT_LOGGED`] bytes.
    pub fn statement(&mut self, sql: &str) {
        if sql.len() <= MAX_STATEMENT_LOGGED {
            self.statement = Some(sql.to_owned());
            return;
        }
        let mut cut = MAX_STATEMENT_LOGGED;
        while !sql.is_char_boundary(cut) {
            cut -= 1;
        }
        self.statement = Some(format!("{}…", &sql[..cut]));
        self.statement_bytes = Some(sql.len());
        self.statement_sha256 = Some(crate::auth::token_sha256_hex(sql));
    }

    /// Completes the entry and appends it to the log, when there is one.
    pub fn write(mut self, outcome: &str, detail: Option<&str>, elapsed: Duration) {
        let Some(sink) = SINK.get() else {
            return;
        };
        self.outcome = outcome.to_owned();
        self.detail = detail.map(str::to_owned);
        self.duration_ms = elapsed.as_secs_f64() * 1000.0;
        self.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // The writer only stops with the process.
        let _ = sink.send(self);
    }
}

/// Whether an access log is being written.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Opens (creating it if need be) the access log at `path` for appending
/// and starts its writer. Once per process.
pub fn open(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| Error::Config(format!("access log {}: {err}", path.display())))?;
    let (sender, receiver) = sync_channel(QUEUE);
    SINK.set(sender)
        .map_err(|_| Error::Config("the access log is already open".into()))?;
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("adlake-access-log".into())
        .spawn(move || write_lines(file, receiver, &shown))
        .map_err(|err| Error::Config(format!("access log writer: {err}")))?;
    tracing::info!(path = %path.display(), "writing the access log");
    Ok(())
}

/// Writes every entry that arrives, flushing whenever the queue is empty.
fn write_lines(file: std::fs::File, entries: Receiver<Entry>, path: &str) {
    let mut out = std::io::BufWriter::new(file);
    let mut failing = false;
    while let Ok(first) = entries.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            let written = serde_json::to_writer(&mut out, &entry)
                .map_err(std::io::Error::other)
                .and_then(|()| out.write_all(b"\n"));
            report(written, &mut failing, path);
            next = entries.try_recv().ok();
        }
        report(out.flush(), &mut failing, path);
    }
}

/// Logs the first of a run of write failures, and the recovery.
fn report(result: std::io::Result<()>, failing: &mut bool, path: &str) {
    match result {
        Err(err) if !*failing => {
            *failing = true;
            tracing::error!(path, error = %err, "cannot write the access log");
        }
        Ok(()) if *failing => {
            *failing = false;
            tracing::warn!(path, "writing the access log again");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_statement_is_cut_with_its_length_and_hash() {
        let sql = format!("SELECT '{}'", "é".repeat(MAX_STATEMENT_LOGGED));
        let mut entry = Entry::new("flight_sql", "DoGet(Statement)", "id");
        entry.statement(&sql);
        let logged = entry.statement.as_deref().unwrap();
        assert!(logged.len() <= MAX_STATEMENT_LOGGED + '…'.len_utf8());
        assert!(sql.starts_with(logged.trim_end_matches('…')));
        assert_eq!(entry.statement_bytes, Some(sql.len()));
        assert_eq!(
            entry.statement_sha256.as_deref(),
            Some(crate::auth::token_sha256_hex(&sql).as_str())
        );
        let mut short = Entry::new("flight_sql", "DoGet(Statement)", "id");
        short.statement("SELECT 1");
        assert_eq!(short.statement.as_deref(), Some("SELECT 1"));
        assert_eq!(short.statement_bytes, None);
    }

    #[test]
    fn an_entry_is_one_json_line_without_absent_fields() {
        let mut entry = Entry::new("grpc", "QueryMetrics", "id-1");
        entry.principal = Some("acme-analyst".into());
        entry.tables.insert("ad_performance".into(), Some(3));
        let line = serde_json::to_string(&entry).unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["tables"]["ad_performance"], 3);
        assert!(value.get("statement").is_none());
        assert_eq!(value["principal"], "acme-analyst");
    }
}
