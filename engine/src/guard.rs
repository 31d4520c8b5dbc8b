//! The read-only gate: only queries reach the planner.
//!
//! Checked on the parsed statement, before planning, so the refusal names
//! what the caller tried ("read-only: DROP TABLE is not allowed") instead of
//! a planner detail. Planning then runs with DataFusion's own
//! [`SQLOptions`](datafusion::execution::context::SQLOptions) denying DDL,
//! DML and statements, a second lock on the same door.

use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::{Error, Result};

/// Parses `sql` and returns its single statement if it only reads.
pub(crate) fn read_only_statement(sql: &str) -> Result<DFStatement> {
    let dialect = GenericDialect {};
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| Error::InvalidSql(format!("SQL error: {e}")))?;
    let statement = match statements.len() {
        0 => return Err(Error::InvalidSql("empty SQL: expected one query".into())),
        1 => statements.pop_front().expect("one statement"),
        n => {
            return Err(Error::InvalidSql(format!(
                "expected one statement, found {n}"
            )));
        }
    };
    check(&statement)?;
    Ok(statement)
}

fn check(statement: &DFStatement) -> Result<()> {
    match statement {
        DFStatement::Statement(s) => check_sql(s),
        DFStatement::Explain(explain) => check(&explain.statement),
        DFStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DFStatement::CopyTo(_) => Err(refused("COPY")),
        DFStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn check_sql(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Query(_) => Ok(()),
        Statement::Explain { statement, .. } => check_sql(statement),
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Ok(()),
        other => Err(refused(&statement_kind(other))),
    }
}

fn refused(kind: &str) -> Error {
    Error::ReadOnly(format!(
        "{kind} is not allowed: adlake accepts read-only queries (SELECT, WITH, EXPLAIN, SHOW)"
    ))
}

/// The statement's leading keywords, e.g. "DROP TABLE" or "INSERT".
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("statement").to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" => {
            let mut kind = first;
            for w in words.by_ref() {
                let w = w.to_ascii_uppercase();
                let keyword = matches!(
                    w.as_str(),
                    "OR" | "REPLACE"
                        | "TEMPORARY"
                        | "TEMP"
                        | "EXTERNAL"
                        | "UNBOUNDED"
                        | "TABLE"
                        | "VIEW"
                        | "SCHEMA"
                        | "DATABASE"
                        | "FUNCTION"
                        | "INDEX"
                        | "CATALOG"
                );
                if !keyword {
                    break;
                }
                kind.push(' ');
                kind.push_str(&w);
                if matches!(
                    w.as_str(),
                    "TABLE" | "VIEW" | "SCHEMA" | "DATABASE" | "FUNCTION" | "INDEX" | "CATALOG"
                ) {
                    break;
                }
            }
            kind
        }
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sql: &str) -> String {
        match read_only_statement(sql) {
            Err(Error::ReadOnly(m)) => m,
            other => panic!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select client_id, sum(spend) from ad_performance group by 1",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "EXPLAIN SELECT * FROM ad_performance",
            "SHOW TABLES",
            "SELECT 1;",
        ] {
            read_only_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn writes_and_settings_are_refused_by_name() {
        for (sql, kind) in [
            ("DROP TABLE ad_performance", "DROP TABLE is not allowed"),
            ("drop view v", "DROP VIEW is not allowed"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE is not allowed"),
            (
                "CREATE OR REPLACE VIEW v AS SELECT 1",
                "CREATE OR REPLACE VIEW is not allowed",
            ),
            (
                "INSERT INTO ad_performance VALUES (1)",
                "INSERT is not allowed",
            ),
            ("DELETE FROM ad_performance", "DELETE is not allowed"),
            (
                "UPDATE ad_performance SET spend = 0",
                "UPDATE is not allowed",
            ),
            (
                "COPY ad_performance TO '/tmp/x.parquet'",
                "COPY is not allowed",
            ),
            (
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE is not allowed",
            ),
            (
                "SET datafusion.execution.batch_size = 1",
                "SET is not allowed",
            ),
            (
                "EXPLAIN DELETE FROM ad_performance",
                "DELETE is not allowed",
            ),
        ] {
            let m = refusal(sql);
            assert!(m.contains(kind), "{sql}: {m}");
        }
    }

    #[test]
    fn malformed_sql_is_invalid_not_refused() {
        for sql in ["SELEC 1", "", "SELECT 1; SELECT 2", "SELECT * FROM ("] {
            match read_only_statement(sql) {
                Err(Error::InvalidSql(m)) => assert!(!m.is_empty()),
                other => panic!("{sql}: expected InvalidSql, got {other:?}"),
            }
        }
    }
}
