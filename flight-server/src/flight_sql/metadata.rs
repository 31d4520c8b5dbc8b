//! What the server says about itself: the catalog layout seen by BI tools,
//! the SQL LIKE patterns their metadata calls filter with, and the
//! `GetSqlInfo` answers JDBC and ADBC read.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedGroupBy, SqlSupportedResultSetConcurrency,
    SqlSupportedResultSetType, SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions,
    SqlSupportsConvert, SqlTransactionIsolationLevel, SupportedSqlGrammar, XdbcDataType,
    XdbcDatetimeSubcode,
};

/// The table type every warehouse table reports.
pub(crate) const TABLE_TYPE: &str = "TABLE";

/// Table types the server knows (views come with the semantic layer).
pub(crate) const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

/// Whether `value` matches the SQL LIKE `pattern`: `%` matches any run of
/// characters, `_` exactly one, and `\` makes the next character literal
/// (JDBC clients escape `_` in names as `\_`, its default search-string
/// escape). Case-sensitive, like the catalog's names.
pub(crate) fn like(value: &str, pattern: &str) -> bool {
    let pattern = tokenize(pattern);
    let value: Vec<char> = value.chars().collect();
    // Greedy matching with one backtrack point (the last `%`): linear in
    // practice, and never exponential whatever the pattern.
    let (mut v, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(Token::Any) => {
                backtrack = Some((p, v));
                p += 1;
                continue;
            }
            Some(Token::One) => {
                v += 1;
                p += 1;
                continue;
            }
            Some(Token::Literal(c)) if *c == value[v] => {
                v += 1;
                p += 1;
                continue;
            }
            Some(Token::Literal(_)) | None => {}
        }
        // Mismatch: let the last `%` swallow one more character.
        let Some((star_p, star_v)) = backtrack else {
            return false;
        };
        backtrack = Some((star_p, star_v + 1));
        p = star_p + 1;
        v = star_v + 1;
    }
    pattern[p..].iter().all(|t| *t == Token::Any)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Any,
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let token = match c {
            // A trailing backslash has nothing to escape: it is literal.
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            '_' => Token::One,
            '%' if tokens.last() == Some(&Token::Any) => continue,
            '%' => Token::Any,
            c => Token::Literal(c),
        };
        tokens.push(token);
    }
    tokens
}

/// The `GetSqlInfo` answers: the server's identity and what its SQL dialect
/// (DataFusion's, read-only) supports, with the value type the Flight SQL
/// spec gives each key (a wrong type breaks JDBC's `DatabaseMetaData`).
pub(crate) fn sql_info_data() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "adlake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (not the library's): arrow-rs 59
    // writes IPC metadata V5, format 1.5.
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    // 0: handles never expire (they are stateless) and statements have no
    // server-side timeout yet.
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0_i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0_i32);

    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // DataFusion folds unquoted identifiers to lower case and keeps quoted
    // ones as written (the spec has no "case sensitive" value; unknown is
    // what mixed-case storage maps to).
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // DataFusion sorts NULL as the largest value (NULLS LAST ascending).
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, supported_conversions());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits(&[
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    b.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        bits(&[ANSI92_ENTRY_SQL, ANSI92_INTERMEDIATE_SQL]),
    );
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0_i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0_i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0_i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits(&[
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // 0: no limit known (JDBC's convention).
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0_i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    // The spec says int32, but the JDBC driver reads this one key as a
    // Long (`getDefaultTransactionIsolation`) and fails on an Integer; int64
    // is what every driver in use accepts.
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i64,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0_i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    let read_only =
        bits(&[SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32]);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0_i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0_i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    // Every value above has the type its key requires, so this cannot fail;
    // the unit test `sql_info_builds` proves it on every build.
    b.build().expect("static SqlInfo data is well-typed")
}

/// The schema of `GetPrimaryKeys` answers (Flight SQL spec).
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of `GetImportedKeys`, `GetExportedKeys` and
/// `GetCrossReference` answers (Flight SQL spec).
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An answer with no rows: the warehouse's tables declare no keys.
pub(crate) fn empty_answer(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}

/// `GetXdbcTypeInfo`: the SQL types the engine's tables and expressions
/// produce, as ODBC's `SQLGetTypeInfo` describes them.
pub(crate) fn xdbc_type_info_data() -> XdbcTypeInfoData {
    fn info(
        type_name: &str,
        data_type: XdbcDataType,
        column_size: Option<i32>,
        literal: Option<&str>,
    ) -> XdbcTypeInfo {
        let numeric = matches!(
            data_type,
            XdbcDataType::XdbcTinyint
                | XdbcDataType::XdbcSmallint
                | XdbcDataType::XdbcInteger
                | XdbcDataType::XdbcBigint
                | XdbcDataType::XdbcFloat
                | XdbcDataType::XdbcReal
                | XdbcDataType::XdbcDouble
                | XdbcDataType::XdbcDecimal
        );
        let text = matches!(data_type, XdbcDataType::XdbcVarchar);
        XdbcTypeInfo {
            type_name: type_name.to_string(),
            data_type,
            column_size,
            literal_prefix: literal.map(str::to_string),
            literal_suffix: literal.map(|_| "'".to_string()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
            auto_increment: numeric.then_some(false),
            local_type_name: Some(type_name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        }
    }
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(info("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None));
    b.append(info("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None));
    b.append(info("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None));
    b.append(info("INTEGER", XdbcDataType::XdbcInteger, Some(10), None));
    b.append(info("BIGINT", XdbcDataType::XdbcBigint, Some(19), None));
    b.append(info("REAL", XdbcDataType::XdbcReal, Some(7), None));
    b.append(info("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None));
    b.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".into(), "scale".into()]),
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        ..info("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None)
    });
    b.append(info("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'")));
    b.append(info(
        "VARBINARY",
        XdbcDataType::XdbcVarbinary,
        None,
        Some("X'"),
    ));
    b.append(XdbcTypeInfo {
        sql_data_type: XdbcDataType::XdbcDatetime,
        // ODBC's SQL_CODE_DATE is 1, which the spec's enum spells `YEAR`
        // (its `DATE` alias is dropped by the code generator).
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
        ..info("DATE", XdbcDataType::XdbcDate, Some(10), Some("DATE '"))
    });
    b.append(XdbcTypeInfo {
        sql_data_type: XdbcDataType::XdbcDatetime,
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        minimum_scale: Some(0),
        maximum_scale: Some(9),
        ..info(
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            Some(29),
            Some("TIMESTAMP '"),
        )
    });
    // Every entry above is well-formed, so this cannot fail; the unit test
    // `xdbc_type_info_builds` proves it on every build.
    b.build().expect("static XDBC type info is well-formed")
}

/// `SupportedAnsi92SqlGrammarLevel` values (arrow-flight does not re-export
/// that enum).
const ANSI92_ENTRY_SQL: i32 = 0;
const ANSI92_INTERMEDIATE_SQL: i32 = 1;

/// An int32 bitmask with the given bit positions set, as the spec encodes
/// sets of enum values.
fn bits(positions: &[i32]) -> i32 {
    positions.iter().fold(0, |acc, p| acc | (1 << p))
}

/// Which `CAST`s DataFusion performs between the JDBC type families.
fn supported_conversions() -> HashMap<i32, Vec<i32>> {
    use SqlSupportsConvert as C;
    let numeric = [
        C::SqlConvertBigint,
        C::SqlConvertInteger,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
        C::SqlConvertDecimal,
        C::SqlConvertNumeric,
        C::SqlConvertFloat,
        C::SqlConvertReal,
    ];
    let text = [
        C::SqlConvertVarchar,
        C::SqlConvertChar,
        C::SqlConvertLongvarchar,
    ];
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut allow = |from: C, to: &[C]| {
        map.entry(from as i32)
            .or_default()
            .extend(to.iter().map(|t| *t as i32));
    };
    for from in numeric {
        allow(from, &numeric);
        allow(from, &text);
        allow(from, &[C::SqlConvertBit]);
    }
    for from in text {
        allow(from, &numeric);
        allow(from, &text);
        allow(
            from,
            &[C::SqlConvertBit, C::SqlConvertDate, C::SqlConvertTimestamp],
        );
    }
    allow(C::SqlConvertBit, &numeric);
    allow(C::SqlConvertBit, &text);
    allow(
        C::SqlConvertDate,
        &[C::SqlConvertDate, C::SqlConvertTimestamp],
    );
    allow(C::SqlConvertDate, &text);
    allow(
        C::SqlConvertTimestamp,
        &[C::SqlConvertDate, C::SqlConvertTimestamp],
    );
    allow(C::SqlConvertTimestamp, &text);
    for targets in map.values_mut() {
        targets.sort_unstable();
        targets.dedup();
    }
    map
}

/// Keywords of DataFusion's dialect beyond SQL:2003 (JDBC `getSQLKeywords`).
const KEYWORDS: &[&str] = &[
    "ANALYZE", "EXPLAIN", "ILIKE", "LIMIT", "OFFSET", "QUALIFY", "UNNEST", "VERBOSE",
];

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "pi", "power", "radians", "random", "round", "signum",
    "sin", "sqrt", "tan", "trunc",
];

const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "to_hex",
    "translate",
    "trim",
    "upper",
];

const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "version"];

const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_unixtime",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, UnionArray};
    use arrow::datatypes::UInt32Type;

    #[test]
    fn like_exact_and_wildcards() {
        assert!(like("public", "public"));
        assert!(!like("public", "publi"));
        assert!(!like("public", "publics"));
        assert!(like("public", "%"));
        assert!(like("", "%"));
        assert!(like("public", "p%"));
        assert!(like("public", "%lic"));
        assert!(like("public", "%bl%"));
        assert!(like("public", "p_bl_c"));
        assert!(!like("public", "p_bl_"));
        assert!(!like("", "_"));
        assert!(like("ad_performance", "ad%"));
        assert!(like("ad_performance", "%_%"));
        assert!(!like("web_sessions", "ad%"));
    }

    #[test]
    fn like_backtracks_over_percent() {
        assert!(like("abcabcabd", "%abd"));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
        assert!(like("mississippi", "m%iss%ppi"));
        assert!(!like("mississippi", "m%iss%ppx"));
        assert!(like("x", "%%%x%%"));
    }

    #[test]
    fn like_escapes() {
        // `\_` is a literal underscore, not "any character".
        assert!(like("ad_performance", "ad\\_performance"));
        assert!(!like("adXperformance", "ad\\_performance"));
        assert!(like("adXperformance", "ad_performance"));
        assert!(like("100%", "100\\%"));
        assert!(!like("1000", "100\\%"));
        assert!(like("a\\b", "a\\\\b"));
        assert!(like("a\\", "a\\"));
    }

    #[test]
    fn like_is_case_sensitive_and_unicode_aware() {
        assert!(!like("Public", "public"));
        assert!(like("überblick", "_berblick"));
    }

    #[test]
    fn sql_info_builds_with_required_keys() {
        let data = sql_info_data();
        let batch = data
            .record_batch([
                SqlInfo::FlightSqlServerName as u32,
                SqlInfo::FlightSqlServerVersion as u32,
                SqlInfo::FlightSqlServerReadOnly as u32,
            ])
            .expect("filter");
        assert_eq!(batch.num_rows(), 3);
        let names = batch.column(0).as_primitive::<UInt32Type>();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<UnionArray>()
            .expect("dense union");
        for row in 0..batch.num_rows() {
            let value = values.value(row);
            match names.value(row) {
                n if n == SqlInfo::FlightSqlServerName as u32 => {
                    assert_eq!(value.as_string::<i32>().value(0), "adlake");
                }
                n if n == SqlInfo::FlightSqlServerVersion as u32 => {
                    assert_eq!(value.as_string::<i32>().value(0), env!("CARGO_PKG_VERSION"));
                }
                n if n == SqlInfo::FlightSqlServerReadOnly as u32 => {
                    assert!(value.as_boolean().value(0));
                }
                other => panic!("unexpected key {other}"),
            }
            assert_eq!(value.len(), 1);
        }
        // No key is given twice.
        let all = data.record_batch([]).expect("all");
        let keys = all.column(0).as_primitive::<UInt32Type>();
        let mut seen: Vec<u32> = keys.values().to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), keys.len());
    }

    /// A value kind of the `GetSqlInfo` dense union, by type id.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Kind {
        String = 0,
        Bool = 1,
        BigInt = 2,
        Int32 = 3,
        StringList = 4,
        Int32ListMap = 5,
    }

    /// Every key the Flight SQL JDBC driver's `DatabaseMetaData` reads, with
    /// the Java class it casts the value to (String, Boolean, Long, Integer,
    /// List, Map), which fixes the union member: a key that is missing or
    /// has another member fails that JDBC call. The types follow the spec,
    /// except `SqlDefaultTransactionIsolation`, which the driver reads as a
    /// Long. The remaining keys of the spec (server identity and features)
    /// are what ADBC's `adbc_get_info` reads.
    pub(crate) const JDBC_KEYS: &[(SqlInfo, Kind)] = &[
        (SqlInfo::FlightSqlServerName, Kind::String),
        (SqlInfo::FlightSqlServerVersion, Kind::String),
        (SqlInfo::FlightSqlServerArrowVersion, Kind::String),
        (SqlInfo::FlightSqlServerReadOnly, Kind::Bool),
        (SqlInfo::FlightSqlServerSql, Kind::Bool),
        (SqlInfo::FlightSqlServerSubstrait, Kind::Bool),
        (SqlInfo::FlightSqlServerTransaction, Kind::Int32),
        (SqlInfo::FlightSqlServerCancel, Kind::Bool),
        (SqlInfo::FlightSqlServerBulkIngestion, Kind::Bool),
        (
            SqlInfo::FlightSqlServerIngestTransactionsSupported,
            Kind::Bool,
        ),
        (SqlInfo::FlightSqlServerStatementTimeout, Kind::Int32),
        (SqlInfo::FlightSqlServerTransactionTimeout, Kind::Int32),
        (SqlInfo::SqlDdlCatalog, Kind::Bool),
        (SqlInfo::SqlDdlSchema, Kind::Bool),
        (SqlInfo::SqlDdlTable, Kind::Bool),
        (SqlInfo::SqlIdentifierCase, Kind::Int32),
        (SqlInfo::SqlIdentifierQuoteChar, Kind::String),
        (SqlInfo::SqlQuotedIdentifierCase, Kind::Int32),
        (SqlInfo::SqlAllTablesAreSelectable, Kind::Bool),
        (SqlInfo::SqlNullOrdering, Kind::Int32),
        (SqlInfo::SqlKeywords, Kind::StringList),
        (SqlInfo::SqlNumericFunctions, Kind::StringList),
        (SqlInfo::SqlStringFunctions, Kind::StringList),
        (SqlInfo::SqlSystemFunctions, Kind::StringList),
        (SqlInfo::SqlDatetimeFunctions, Kind::StringList),
        (SqlInfo::SqlSearchStringEscape, Kind::String),
        (SqlInfo::SqlExtraNameCharacters, Kind::String),
        (SqlInfo::SqlSupportsColumnAliasing, Kind::Bool),
        (SqlInfo::SqlNullPlusNullIsNull, Kind::Bool),
        (SqlInfo::SqlSupportsConvert, Kind::Int32ListMap),
        (SqlInfo::SqlSupportsTableCorrelationNames, Kind::Bool),
        (
            SqlInfo::SqlSupportsDifferentTableCorrelationNames,
            Kind::Bool,
        ),
        (SqlInfo::SqlSupportsExpressionsInOrderBy, Kind::Bool),
        (SqlInfo::SqlSupportsOrderByUnrelated, Kind::Bool),
        (SqlInfo::SqlSupportedGroupBy, Kind::Int32),
        (SqlInfo::SqlSupportsLikeEscapeClause, Kind::Bool),
        (SqlInfo::SqlSupportsNonNullableColumns, Kind::Bool),
        (SqlInfo::SqlSupportedGrammar, Kind::Int32),
        (SqlInfo::SqlAnsi92SupportedLevel, Kind::Int32),
        (SqlInfo::SqlSupportsIntegrityEnhancementFacility, Kind::Bool),
        (SqlInfo::SqlOuterJoinsSupportLevel, Kind::Int32),
        (SqlInfo::SqlSchemaTerm, Kind::String),
        (SqlInfo::SqlProcedureTerm, Kind::String),
        (SqlInfo::SqlCatalogTerm, Kind::String),
        (SqlInfo::SqlCatalogAtStart, Kind::Bool),
        (SqlInfo::SqlSchemasSupportedActions, Kind::Int32),
        (SqlInfo::SqlCatalogsSupportedActions, Kind::Int32),
        (SqlInfo::SqlSupportedPositionedCommands, Kind::Int32),
        (SqlInfo::SqlSelectForUpdateSupported, Kind::Bool),
        (SqlInfo::SqlStoredProceduresSupported, Kind::Bool),
        (SqlInfo::SqlSupportedSubqueries, Kind::Int32),
        (SqlInfo::SqlCorrelatedSubqueriesSupported, Kind::Bool),
        (SqlInfo::SqlSupportedUnions, Kind::Int32),
        (SqlInfo::SqlMaxBinaryLiteralLength, Kind::BigInt),
        (SqlInfo::SqlMaxCharLiteralLength, Kind::BigInt),
        (SqlInfo::SqlMaxColumnNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxColumnsInGroupBy, Kind::BigInt),
        (SqlInfo::SqlMaxColumnsInIndex, Kind::BigInt),
        (SqlInfo::SqlMaxColumnsInOrderBy, Kind::BigInt),
        (SqlInfo::SqlMaxColumnsInSelect, Kind::BigInt),
        (SqlInfo::SqlMaxColumnsInTable, Kind::BigInt),
        (SqlInfo::SqlMaxConnections, Kind::BigInt),
        (SqlInfo::SqlMaxCursorNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxIndexLength, Kind::BigInt),
        (SqlInfo::SqlDbSchemaNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxProcedureNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxCatalogNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxRowSize, Kind::BigInt),
        (SqlInfo::SqlMaxRowSizeIncludesBlobs, Kind::Bool),
        (SqlInfo::SqlMaxStatementLength, Kind::BigInt),
        (SqlInfo::SqlMaxStatements, Kind::BigInt),
        (SqlInfo::SqlMaxTableNameLength, Kind::BigInt),
        (SqlInfo::SqlMaxTablesInSelect, Kind::BigInt),
        (SqlInfo::SqlMaxUsernameLength, Kind::BigInt),
        (SqlInfo::SqlDefaultTransactionIsolation, Kind::BigInt),
        (SqlInfo::SqlTransactionsSupported, Kind::Bool),
        (
            SqlInfo::SqlSupportedTransactionsIsolationLevels,
            Kind::Int32,
        ),
        (
            SqlInfo::SqlDataDefinitionCausesTransactionCommit,
            Kind::Bool,
        ),
        (SqlInfo::SqlDataDefinitionsInTransactionsIgnored, Kind::Bool),
        (SqlInfo::SqlSupportedResultSetTypes, Kind::Int32),
        (
            SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
            Kind::Int32,
        ),
        (
            SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
            Kind::Int32,
        ),
        (
            SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
            Kind::Int32,
        ),
        (
            SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
            Kind::Int32,
        ),
        (SqlInfo::SqlBatchUpdatesSupported, Kind::Bool),
        (SqlInfo::SqlSavepointsSupported, Kind::Bool),
        (SqlInfo::SqlNamedParametersSupported, Kind::Bool),
        (SqlInfo::SqlLocatorsUpdateCopy, Kind::Bool),
        (
            SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported,
            Kind::Bool,
        ),
    ];

    #[test]
    fn every_key_jdbc_reads_has_the_type_it_reads() {
        let data = sql_info_data();
        let batch = data.record_batch([]).expect("all keys");
        let names = batch.column(0).as_primitive::<UInt32Type>();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<UnionArray>()
            .expect("dense union");
        let served: HashMap<u32, i8> = (0..batch.num_rows())
            .map(|row| (names.value(row), values.type_id(row)))
            .collect();
        for (key, kind) in JDBC_KEYS {
            let type_id = served.get(&(*key as u32)).copied();
            assert_eq!(type_id, Some(*kind as i8), "{key:?} should be {kind:?}");
        }
        assert_eq!(JDBC_KEYS.len(), 89);
    }

    #[test]
    fn xdbc_type_info_builds() {
        let data = xdbc_type_info_data();
        let all = data.record_batch(None).expect("all types");
        assert_eq!(all.num_rows(), 12);
        let bigint = data
            .record_batch(XdbcDataType::XdbcBigint as i32)
            .expect("filter");
        assert_eq!(bigint.num_rows(), 1);
        assert_eq!(
            bigint
                .column_by_name("type_name")
                .expect("type_name")
                .as_string::<i32>()
                .value(0),
            "BIGINT"
        );
    }

    #[test]
    fn key_answers_are_empty_in_the_spec_shape() {
        let primary = empty_answer(primary_keys_schema());
        assert_eq!(primary.num_rows(), 0);
        assert_eq!(primary.num_columns(), 6);
        let foreign = empty_answer(foreign_keys_schema());
        assert_eq!(foreign.num_columns(), 13);
        assert_eq!(
            foreign
                .schema()
                .field_with_name("update_rule")
                .map(|f| f.data_type().clone())
                .ok(),
            Some(DataType::UInt8)
        );
    }

    #[test]
    fn bitmask_sets_positions() {
        assert_eq!(bits(&[]), 0);
        assert_eq!(bits(&[0, 2]), 0b101);
    }
}
