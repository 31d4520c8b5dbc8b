//! The read-only gate: only queries reach the planner.
//!
//! Checked on the parsed statement, before planning, so the refusal names
//! what the caller tried ("read-only: DROP TABLE is not allowed") instead of
//! a planner detail. Planning then runs with DataFusion's own
//! [`SQLOptions`](datafusion::execution::context::SQLOptions) denying DDL,
//! DML and statements, a second lock on the same door.

use std::ops::ControlFlow;

use datafusion::common::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::error::{Error, Result};

/// Default [`StatementLimits::max_bytes`]: 1 MiB. The largest statements BI
/// tools generate (long `IN` lists, wide `CASE` mappings) are tens of
/// kilobytes.
pub const DEFAULT_MAX_STATEMENT_BYTES: usize = 1024 * 1024;
/// Default [`StatementLimits::max_depth`]. A long `a OR b OR c ...` chain is
/// as deep as it has terms; BI tools send multi-value filters as `IN`
/// lists, which are flat.
pub const DEFAULT_MAX_EXPRESSION_DEPTH: usize = 256;
/// Nesting of parentheses and subqueries the parser follows (its own
/// recursion), DataFusion's default.
const PARSER_RECURSION_LIMIT: usize = 50;

/// Bounds on a statement, checked before it is planned: its text before it
/// is parsed, the depth of its expression tree before it is planned. Each
/// bounds the memory and time parsing and planning take, and keeps every
/// recursive pass of the planner within its stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest statement text accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of expressions (and subqueries) accepted.
    pub max_depth: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_STATEMENT_BYTES,
            max_depth: DEFAULT_MAX_EXPRESSION_DEPTH,
        }
    }
}

impl StatementLimits {
    /// Refuses a statement text over [`Self::max_bytes`], before anything
    /// reads it.
    pub fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_bytes {
            return Err(Error::InvalidSql(format!(
                "statement too long: {} bytes, over the limit of {} bytes (max statement bytes)",
                sql.len(),
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a statement nested deeper than [`Self::max_depth`]. The walk
    /// stops at the first node past the limit, so it never goes deeper
    /// than the limit itself.
    fn check_depth(&self, statement: &DFStatement) -> Result<()> {
        let statement = match statement {
            DFStatement::Statement(s) => s.as_ref(),
            DFStatement::Explain(explain) => return self.check_depth(&explain.statement),
            // Refused by kind in `check`.
            DFStatement::CreateExternalTable(_)
            | DFStatement::CopyTo(_)
            | DFStatement::Reset(_) => {
                return Ok(());
            }
        };
        let mut depth = Depth {
            now: 0,
            max: self.max_depth,
        };
        match statement.visit(&mut depth) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::InvalidSql(format!(
                "statement too deeply nested: expressions and subqueries nest more than {} levels \
                 (max expression depth); a long chain of AND/OR/+ terms nests as deep as it has \
                 terms: use IN (...) lists or split the statement",
                self.max_depth
            ))),
        }
    }
}

/// Counts the nesting of expressions and queries on the way down.
struct Depth {
    now: usize,
    max: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > self.max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// Parses `sql` and returns its single statement if it only reads and is
/// within `limits`.
///
/// A refused statement's tree is dropped here, and its drop recurses as
/// deep as the tree goes: call this on a [planning thread](crate::planner).
pub(crate) fn read_only_statement(sql: &str, limits: &StatementLimits) -> Result<DFStatement> {
    limits.check_size(sql)?;
    let dialect = GenericDialect {};
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| match e {
            DataFusionError::SQL(p, _) if matches!(*p, ParserError::RecursionLimitExceeded) => {
                Error::InvalidSql(format!(
                    "statement too deeply nested: parentheses, function calls, CASE and \
                     subqueries nest more than {PARSER_RECURSION_LIMIT} levels (parser recursion limit)"
                ))
            }
            e => Error::InvalidSql(format!("SQL error: {e}")),
        })?;
    let statement = match statements.len() {
        0 => return Err(Error::InvalidSql("empty SQL: expected one query".into())),
        1 => statements.pop_front().expect("one statement"),
        n => {
            return Err(Error::InvalidSql(format!(
                "expected one statement, found {n}"
            )));
        }
    };
    // Before `check`, which may print the statement.
    limits.check_depth(&statement)?;
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

    fn read_only_statement(sql: &str) -> Result<DFStatement> {
        super::read_only_statement(sql, &StatementLimits::default())
    }

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

    fn chain(terms: usize) -> String {
        let mut sql = String::from("SELECT 1");
        for _ in 1..terms {
            sql.push_str("+1");
        }
        sql
    }

    #[test]
    fn statements_past_a_limit_are_refused_naming_it() {
        let limits = StatementLimits {
            max_bytes: 64,
            max_depth: 8,
        };
        let long = format!("SELECT '{}'", "x".repeat(100));
        match super::read_only_statement(&long, &limits) {
            Err(Error::InvalidSql(m)) => assert!(m.contains("max statement bytes"), "{m}"),
            other => panic!("expected a size refusal, got {other:?}"),
        }
        let limits = StatementLimits {
            max_bytes: 4096,
            ..limits
        };
        // 7 terms nest 7 deep under the query: within 8 with the query.
        super::read_only_statement(&chain(7), &limits).unwrap();
        for sql in [
            chain(9),
            "SELECT (((((((((1)))))))))".to_owned(),
            format!("SELECT {}1{}", "(".repeat(60), ")".repeat(60)),
            "SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT * FROM \
             (SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT 1))))))))"
                .to_owned(),
        ] {
            match super::read_only_statement(&sql, &limits) {
                Err(Error::InvalidSql(m)) => assert!(
                    m.contains("max expression depth") || m.contains("parser recursion limit"),
                    "{m}"
                ),
                other => panic!("{sql}: expected a depth refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_longest_chain_the_size_limit_admits_is_refused_without_overflow() {
        // 1 MiB of `+1`: a left-deep tree half a million levels deep. Its
        // parse is a loop, its check stops at the limit, and its drop runs
        // on a thread with the planners' stack.
        let sql = chain(DEFAULT_MAX_STATEMENT_BYTES / 2 - 8);
        assert!(sql.len() <= DEFAULT_MAX_STATEMENT_BYTES);
        let refused = std::thread::Builder::new()
            .stack_size(crate::planner::PLANNER_STACK_BYTES)
            .spawn(move || matches!(read_only_statement(&sql), Err(Error::InvalidSql(_))))
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
        read_only_statement(&chain(DEFAULT_MAX_EXPRESSION_DEPTH - 1)).unwrap();
    }
}
