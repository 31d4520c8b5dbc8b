//! What a statement's plan told us, kept so a statement seen before is
//! described, and its cached answer found, without parsing or planning it
//! again.
//!
//! A Flight SQL client asks about one statement several times: ADBC
//! creates a prepared statement (the result and parameter schemas), asks
//! for its flight info (the schema again) and then fetches it. Each of
//! those used to parse, scope and plan the SQL; planning costs more than
//! streaming a cached answer. An entry here holds the outcome of one
//! planning: the result schema, the parameter types and the Delta version
//! of every table the plan reads.
//!
//! An entry is keyed by the caller's [`Scope`] and the [normalized](normalize)
//! statement, and it is only used while every table it read is still at the
//! version it read: a new version of one of them (new rows, a new column)
//! means planning again. So the memo can never describe a statement
//! differently from a fresh plan, and never answers for another scope.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use moka::future::Cache;

use crate::Scope;

/// Most memory the memo may hold, by its own weighing of entries.
const MEMO_BYTES: u64 = 32 * 1024 * 1024;

/// What planning a statement for one scope gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The schema of every batch the statement streams.
    pub schema: SchemaRef,
    /// The types of the positional parameters, in order (see
    /// [`Query::parameter_types`](crate::Query::parameter_types)).
    pub parameter_types: Vec<Option<DataType>>,
    /// The Delta version of every table the plan reads.
    pub versions: BTreeMap<String, Option<u64>>,
    /// Whether the answer depends on when it is asked (never cached).
    pub time_dependent: bool,
}

impl Described {
    fn weight(&self, question: &str) -> u32 {
        let bytes = question.len()
            + 128 * self.schema.fields().len()
            + 64 * (self.versions.len() + self.parameter_types.len())
            + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// Statements described before, per scope.
#[derive(Debug, Clone)]
pub(crate) struct PlanMemo {
    entries: Cache<(Scope, String), Arc<Described>>,
}

impl Default for PlanMemo {
    fn default() -> Self {
        let entries = Cache::builder()
            .max_capacity(MEMO_BYTES)
            .weigher(
                |(_, question): &(Scope, String), described: &Arc<Described>| {
                    described.weight(question)
                },
            )
            .build();
        Self { entries }
    }
}

impl PlanMemo {
    /// The description of `question` for `scope`, if one was recorded and
    /// every table it read is still at the recorded version (`current`
    /// gives a table's version now).
    pub(crate) async fn get(
        &self,
        scope: &Scope,
        question: &str,
        current: impl Fn(&str) -> Option<Option<u64>>,
    ) -> Option<Arc<Described>> {
        let key = (scope.clone(), question.to_string());
        let described = self.entries.get(&key).await?;
        let fresh = described
            .versions
            .iter()
            .all(|(table, version)| current(table).as_ref() == Some(version));
        if fresh {
            Some(described)
        } else {
            self.entries.invalidate(&key).await;
            None
        }
    }

    /// Records what planning `question` for `scope` gave.
    pub(crate) async fn insert(&self, scope: &Scope, question: String, described: Described) {
        self.entries
            .insert((scope.clone(), question), Arc::new(described))
            .await;
    }
}

/// The statement with every run of whitespace outside string literals,
/// quoted identifiers and comments turned into one space, and none at
/// either end: two statements with the same normal form are the same
/// statement. Text with a backslash is kept as it is, since a backslash
/// escape could hide where a literal ends.
pub fn normalize(sql: &str) -> String {
    if sql.contains('\\') {
        return sql.to_string();
    }
    #[derive(Clone, Copy, PartialEq)]
    enum In {
        Code,
        Quoted(char),
        LineComment,
        BlockComment,
    }
    let mut out = String::with_capacity(sql.len());
    let mut state = In::Code;
    let mut pending_space = false;
    let mut chars = sql.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            In::Code => {
                if c.is_whitespace() {
                    pending_space = true;
                    continue;
                }
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(c);
                match c {
                    '\'' | '"' | '`' => state = In::Quoted(c),
                    '-' if chars.peek() == Some(&'-') => {
                        out.push(chars.next().unwrap_or('-'));
                        state = In::LineComment;
                    }
                    '/' if chars.peek() == Some(&'*') => {
                        out.push(chars.next().unwrap_or('*'));
                        state = In::BlockComment;
                    }
                    _ => {}
                }
            }
            In::Quoted(quote) => {
                out.push(c);
                if c == quote {
                    state = In::Code;
                }
            }
            In::LineComment => {
                out.push(c);
                if c == '\n' {
                    state = In::Code;
                }
            }
            In::BlockComment => {
                out.push(c);
                if c == '*' && chars.peek() == Some(&'/') {
                    out.push(chars.next().unwrap_or('/'));
                    state = In::Code;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_between_tokens_is_one_space() {
        assert_eq!(
            normalize("  SELECT\n\tsum(spend)   FROM ad_performance \n"),
            "SELECT sum(spend) FROM ad_performance"
        );
    }

    #[test]
    fn whitespace_inside_literals_and_identifiers_is_kept() {
        let a = normalize("SELECT 1 FROM t WHERE name = 'Summer  Sale'");
        let b = normalize("SELECT 1 FROM t WHERE name = 'Summer Sale'");
        assert_ne!(a, b);
        assert_eq!(a, "SELECT 1 FROM t WHERE name = 'Summer  Sale'");
        assert_ne!(
            normalize(r#"SELECT "a  b" FROM t"#),
            normalize(r#"SELECT "a b" FROM t"#)
        );
        // A doubled quote stays inside the literal.
        assert_eq!(normalize("SELECT  'it''s  here'"), "SELECT 'it''s  here'");
    }

    #[test]
    fn comments_keep_their_line_ends() {
        // The newline ends the comment: `, 2` is code in the first and part
        // of the comment in the second, so they must differ.
        let a = normalize("SELECT 1 -- one\n, 2");
        let b = normalize("SELECT 1 -- one , 2");
        assert_ne!(a, b);
        assert_eq!(a, "SELECT 1 -- one\n, 2");
        assert_eq!(normalize("SELECT /* a   b */  1"), "SELECT /* a   b */ 1");
    }

    #[test]
    fn text_with_a_backslash_is_kept_as_is() {
        let sql = r"SELECT 'a\' b  c'";
        assert_eq!(normalize(sql), sql);
    }
}
