//! Prepared-statement parameters: finding the placeholders in a caller's
//! SQL, and binding the values a client sends with `DoPut`.
//!
//! Flight SQL clients mark parameters two ways: `$1`, `$2`, … (ADBC,
//! PostgreSQL style) and `?` (JDBC, ODBC). Both are found with the SQL
//! tokenizer of the engine's dialect, so a `?` or `$1` inside a string
//! literal, a quoted identifier or a comment is never taken for one.
//!
//! A bound value becomes a typed SQL literal spliced in place of its
//! placeholder; the engine then sees ordinary SQL, so the read-only guard,
//! the caller's scope and any cache keyed by the SQL text apply to the
//! statement exactly as it runs. Strings are quoted with `'` doubled, which
//! is the only escape of the engine's dialect (backslashes are literal), so
//! no value can end its literal early.

// Handlers return `tonic::Status`, larger than clippy's threshold (see the
// note in the parent module).
#![allow(clippy::result_large_err)]

use adlake_engine::StatementLimits;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use tonic::Status;

/// The most parameters one statement may have (the engine's own bound).
pub(crate) const MAX_PARAMETERS: usize = adlake_engine::MAX_PARAMETERS;

/// Where a statement's parameters are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placeholders {
    /// The SQL with every placeholder written `$n`, which is what the engine
    /// plans (JDBC's `?` numbered in order of appearance).
    pub(crate) sql: String,
    /// How many values the statement takes.
    pub(crate) count: usize,
    /// Each placeholder: its byte range in the SQL as the caller wrote it,
    /// and its 1-based parameter number.
    spans: Vec<(std::ops::Range<usize>, usize)>,
    original: String,
}

impl Placeholders {
    /// Finds the placeholders of `sql`.
    ///
    /// SQL the tokenizer rejects (an unterminated string, say) is passed
    /// through untouched with no parameters: the engine then reports the
    /// problem with its own parser's message.
    pub(crate) fn find(sql: &str, limits: &StatementLimits) -> Result<Self, Status> {
        // Nothing over the size limit is tokenized (or copied).
        limits
            .check_size(sql)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let unchanged = || Self {
            sql: sql.to_string(),
            count: 0,
            spans: Vec::new(),
            original: sql.to_string(),
        };
        // Every placeholder the tokenizer knows (`?`, `?3`, `$1`, `$name`)
        // holds one of these characters: without them there is none, and
        // the statements dashboards send again and again are not tokenized.
        if !sql.contains(['$', '?']) {
            return Ok(unchanged());
        }
        let dialect = GenericDialect {};
        let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
            return Ok(unchanged());
        };
        let lines = LineStarts::new(sql);
        let (mut positional, mut numbered) = (0_usize, false);
        let mut spans = Vec::new();
        for token in tokens {
            let Token::Placeholder(name) = &token.token else {
                continue;
            };
            let number = if name == "?" {
                positional += 1;
                positional
            } else {
                numbered = true;
                let digits = name
                    .strip_prefix('$')
                    .or_else(|| name.strip_prefix('?'))
                    .unwrap_or(name);
                match digits.parse::<usize>() {
                    Ok(n) if (1..=MAX_PARAMETERS).contains(&n) => n,
                    Ok(_) => {
                        return Err(Status::invalid_argument(format!(
                            "parameter {} is out of range: parameters are numbered $1 to ${MAX_PARAMETERS}",
                            crate::error::cap_message(name)
                        )));
                    }
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "named parameter {} is not supported: use $1, $2, … or ?",
                            crate::error::cap_message(name)
                        )));
                    }
                }
            };
            if positional > MAX_PARAMETERS {
                return Err(Status::invalid_argument(format!(
                    "more than {MAX_PARAMETERS} parameters"
                )));
            }
            let (Some(start), Some(end)) = (
                lines.offset(sql, token.span.start),
                lines.offset(sql, token.span.end),
            ) else {
                // The tokenizer's positions always fall inside the text; if
                // one ever did not, refusing beats guessing.
                return Err(Status::invalid_argument(
                    "cannot locate a parameter in the SQL",
                ));
            };
            spans.push((start..end, number));
        }
        if positional > 0 && numbered {
            return Err(Status::invalid_argument(
                "the SQL mixes ? and $n parameters: use one style",
            ));
        }
        let count = spans.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let mut placeholders = Self {
            sql: String::new(),
            count,
            spans,
            original: sql.to_string(),
        };
        placeholders.sql = placeholders.splice(|n| format!("${n}"));
        Ok(placeholders)
    }

    /// The SQL with parameter `n` (1-based) replaced by `values[n - 1]`, a
    /// literal from [`literals`].
    pub(crate) fn bind(&self, values: &[String]) -> Result<String, Status> {
        if values.len() != self.count {
            return Err(Status::invalid_argument(format!(
                "the statement takes {} parameter(s), {} bound",
                self.count,
                values.len()
            )));
        }
        Ok(self.splice(|n| values[n - 1].clone()))
    }

    fn splice(&self, value: impl Fn(usize) -> String) -> String {
        let mut out = String::with_capacity(self.original.len());
        let mut at = 0;
        for (range, n) in &self.spans {
            out.push_str(&self.original[at..range.start]);
            out.push_str(&value(*n));
            at = range.end;
        }
        out.push_str(&self.original[at..]);
        out
    }
}

/// Byte offsets of line starts, to turn the tokenizer's (line, column)
/// positions (1-based, columns counted in characters) into byte offsets.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }

    fn offset(&self, sql: &str, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
        let start = *self.0.get(line)?;
        let rest = &sql[start..];
        match rest.char_indices().nth(column) {
            Some((i, _)) => Some(start + i),
            // Just past the last character.
            None if rest.chars().count() == column => Some(sql.len()),
            None => None,
        }
    }
}

/// The values of a one-row parameter batch as SQL literals, in column
/// order. The literal keeps the value's type (`CAST(… AS DECIMAL(18,6))`,
/// a timestamp with its time zone), so the statement plans as it would with
/// the typed parameter.
pub(crate) fn literals(batch: &RecordBatch) -> Result<Vec<String>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters per execution, got {} rows",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .enumerate()
        .map(|(i, (column, field))| {
            literal(column.as_ref(), 0).map_err(|problem| {
                Status::invalid_argument(format!(
                    "parameter {} ({}): {problem}",
                    i + 1,
                    crate::error::cap_message(field.name())
                ))
            })
        })
        .collect()
}

/// Row `row` of `array` as a SQL literal.
fn literal(array: &dyn Array, row: usize) -> Result<String, String> {
    if array.is_null(row) {
        return Ok("NULL".into());
    }
    let typed = |value: String, sql_type: &str| format!("CAST({value} AS {sql_type})");
    Ok(match array.data_type() {
        DataType::Null => "NULL".into(),
        DataType::Boolean => {
            if array.as_boolean().value(row) {
                "TRUE".into()
            } else {
                "FALSE".into()
            }
        }
        DataType::Int8 => typed(
            array.as_primitive::<Int8Type>().value(row).to_string(),
            "TINYINT",
        ),
        DataType::Int16 => typed(
            array.as_primitive::<Int16Type>().value(row).to_string(),
            "SMALLINT",
        ),
        DataType::Int32 => typed(
            array.as_primitive::<Int32Type>().value(row).to_string(),
            "INT",
        ),
        DataType::Int64 => typed(
            array.as_primitive::<Int64Type>().value(row).to_string(),
            "BIGINT",
        ),
        DataType::UInt8 => typed(
            array.as_primitive::<UInt8Type>().value(row).to_string(),
            "TINYINT UNSIGNED",
        ),
        DataType::UInt16 => typed(
            array.as_primitive::<UInt16Type>().value(row).to_string(),
            "SMALLINT UNSIGNED",
        ),
        DataType::UInt32 => typed(
            array.as_primitive::<UInt32Type>().value(row).to_string(),
            "INT UNSIGNED",
        ),
        DataType::UInt64 => typed(
            array.as_primitive::<UInt64Type>().value(row).to_string(),
            "BIGINT UNSIGNED",
        ),
        DataType::Float16 => float(
            f64::from(array.as_primitive::<Float16Type>().value(row)),
            "REAL",
        ),
        DataType::Float32 => float(
            f64::from(array.as_primitive::<Float32Type>().value(row)),
            "REAL",
        ),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row), "DOUBLE"),
        DataType::Utf8 => quote(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => quote(array.as_string::<i64>().value(row)),
        DataType::Utf8View => quote(array.as_string_view().value(row)),
        DataType::Binary => binary(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => binary(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => binary(array.as_binary_view().value(row)),
        DataType::Decimal128(precision, scale) => {
            let value = array.as_primitive::<Decimal128Type>().value_as_string(row);
            typed(quote(&value), &format!("DECIMAL({precision}, {scale})"))
        }
        DataType::Date32 => {
            let date = array
                .as_primitive::<Date32Type>()
                .value_as_date(row)
                .ok_or("date out of range")?;
            typed(quote(&date.format("%Y-%m-%d").to_string()), "DATE")
        }
        DataType::Date64 => {
            let date = array
                .as_primitive::<Date64Type>()
                .value_as_date(row)
                .ok_or("date out of range")?;
            typed(quote(&date.format("%Y-%m-%d").to_string()), "DATE")
        }
        DataType::Timestamp(unit, _) => {
            // The raw count of units since the epoch, cast to the exact
            // timestamp type (unit and zone): no parsing, no zone shift.
            let value = match unit {
                TimeUnit::Second => array
                    .as_primitive::<arrow::datatypes::TimestampSecondType>()
                    .value(row),
                TimeUnit::Millisecond => array
                    .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                    .value(row),
                TimeUnit::Microsecond => array
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .value(row),
                TimeUnit::Nanosecond => array
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .value(row),
            };
            format!(
                "arrow_cast(CAST({value} AS BIGINT), {})",
                quote(&array.data_type().to_string())
            )
        }
        other => return Err(format!("values of type {other} cannot be bound")),
    })
}

/// A SQL string literal: `'` doubled, everything else as is (the engine's
/// dialect has no backslash escapes).
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn binary(value: &[u8]) -> String {
    format!("X'{}'", hex::encode(value))
}

fn float(value: f64, sql_type: &str) -> String {
    let text = if value.is_nan() {
        "'NaN'".to_string()
    } else if value.is_infinite() {
        if value > 0.0 {
            "'Infinity'".to_string()
        } else {
            "'-Infinity'".to_string()
        }
    } else {
        // `{:?}` prints the shortest text that reads back as the same f64,
        // always with a `.` or exponent, so it parses as a float.
        format!("{value:?}")
    };
    format!("CAST({text} AS {sql_type})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
        Int64Array, StringArray, StringViewArray, TimestampMicrosecondArray,
    };

    fn numbered(sql: &str) -> (String, usize) {
        let p = Placeholders::find(sql, &StatementLimits::default()).expect("placeholders");
        (p.sql, p.count)
    }

    #[test]
    fn finds_dollar_and_question_mark_placeholders() {
        assert_eq!(numbered("SELECT 1"), ("SELECT 1".into(), 0));
        assert_eq!(
            numbered("SELECT * FROM t WHERE a = $1 AND b = $2 OR c = $1"),
            (
                "SELECT * FROM t WHERE a = $1 AND b = $2 OR c = $1".into(),
                2
            )
        );
        assert_eq!(
            numbered("SELECT * FROM t WHERE a = ? AND b = ?"),
            ("SELECT * FROM t WHERE a = $1 AND b = $2".into(), 2)
        );
        // Gaps count: `$3` alone means three parameters.
        assert_eq!(numbered("SELECT $3").1, 3);
    }

    #[test]
    fn ignores_marks_in_literals_identifiers_and_comments() {
        let sql = "SELECT '?', '$1', \"a?\" -- what about ?\n FROM t /* $2 */ WHERE x = ?";
        let (rewritten, count) = numbered(sql);
        assert_eq!(count, 1);
        assert_eq!(
            rewritten,
            "SELECT '?', '$1', \"a?\" -- what about ?\n FROM t /* $2 */ WHERE x = $1"
        );
    }

    #[test]
    fn keeps_multibyte_text_around_placeholders() {
        let sql = "SELECT 'é€', ?\n, 'ü' , ?";
        assert_eq!(numbered(sql), ("SELECT 'é€', $1\n, 'ü' , $2".into(), 2));
    }

    #[test]
    fn refuses_mixed_named_and_out_of_range_placeholders() {
        for sql in [
            "SELECT ? , $1",
            "SELECT $name",
            "SELECT $0",
            "SELECT $99999999999999999999",
            "SELECT $70000",
        ] {
            let status = Placeholders::find(sql, &StatementLimits::default()).expect_err(sql);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{sql}");
        }
    }

    #[test]
    fn untokenizable_sql_passes_through_for_the_engine_to_report() {
        assert_eq!(
            numbered("SELECT 'unterminated"),
            ("SELECT 'unterminated".into(), 0)
        );
    }

    #[test]
    fn binds_values_in_place() {
        let p = Placeholders::find(
            "SELECT ? AS a, ? AS b, '?' AS c",
            &StatementLimits::default(),
        )
        .expect("find");
        assert_eq!(
            p.bind(&["1".into(), "'x'".into()]).expect("bind"),
            "SELECT 1 AS a, 'x' AS b, '?' AS c"
        );
        let status = p.bind(&["1".into()]).expect_err("too few");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    fn one_row(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("batch")
    }

    #[test]
    fn renders_typed_literals() {
        let batch = one_row(vec![
            (
                "s",
                Arc::new(StringArray::from(vec!["it's \\ fine"])) as ArrayRef,
            ),
            ("v", Arc::new(StringViewArray::from(vec!["x"])) as ArrayRef),
            ("i", Arc::new(Int64Array::from(vec![-7])) as ArrayRef),
            ("f", Arc::new(Float64Array::from(vec![0.1])) as ArrayRef),
            ("b", Arc::new(BooleanArray::from(vec![true])) as ArrayRef),
            (
                "n",
                Arc::new(Int64Array::from(vec![None::<i64>])) as ArrayRef,
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![1_500_000_i128])
                        .with_precision_and_scale(18, 6)
                        .expect("decimal"),
                ) as ArrayRef,
            ),
            ("day", Arc::new(Date32Array::from(vec![19_723])) as ArrayRef),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1_000_000]).with_timezone("UTC"))
                    as ArrayRef,
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![&b"\x00'"[..]])) as ArrayRef,
            ),
        ]);
        let values = literals(&batch).expect("literals");
        assert_eq!(values[0], "'it''s \\ fine'");
        assert_eq!(values[1], "'x'");
        assert_eq!(values[2], "CAST(-7 AS BIGINT)");
        assert_eq!(values[3], "CAST(0.1 AS DOUBLE)");
        assert_eq!(values[4], "TRUE");
        assert_eq!(values[5], "NULL");
        assert_eq!(values[6], "CAST('1.500000' AS DECIMAL(18, 6))");
        assert_eq!(values[7], "CAST('2024-01-01' AS DATE)");
        assert!(
            values[8].starts_with("arrow_cast(CAST(1000000 AS BIGINT), 'Timestamp("),
            "{}",
            values[8]
        );
        assert_eq!(values[9], "X'0027'");
    }

    #[test]
    fn refuses_several_rows_and_unsupported_types() {
        let two = one_row(vec![(
            "a",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )]);
        assert_eq!(
            literals(&two).expect_err("two rows").code(),
            tonic::Code::InvalidArgument
        );
        let list =
            arrow::array::ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![
                Some(1),
            ])]);
        let batch = one_row(vec![("l", Arc::new(list) as ArrayRef)]);
        let status = literals(&batch).expect_err("list");
        assert!(
            status.message().contains("parameter 1"),
            "{}",
            status.message()
        );
    }
}
