//! The unified tables of the warehouse: one definition per table, used by the
//! ingest writers and by the engine's catalog alike.
//!
//! Conventions (DESIGN.md §2): money is `Decimal128(18, 6)`, identifiers are
//! strings, `date` is the platform's report date in the account's own time
//! zone, timestamps are UTC. Every fact table carries the lineage columns
//! `_source`, `_run_id` and `_ingested_at`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Precision of money columns.
pub const MONEY_PRECISION: u8 = 18;
/// Scale of money columns: micro-units of the currency.
pub const MONEY_SCALE: i8 = 6;
/// Arrow type of every money column.
pub const MONEY: DataType = DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE);

/// Name of the column that carries the tenant in every client-scoped table.
pub const CLIENT_ID: &str = "client_id";
/// Name of the report-date column.
pub const DATE: &str = "date";

/// Lineage column: connector and API version that produced the row.
pub const LINEAGE_SOURCE: &str = "_source";
/// Lineage column: the ingest run that wrote the row.
pub const LINEAGE_RUN_ID: &str = "_run_id";
/// Lineage column: when the row was ingested (UTC).
pub const LINEAGE_INGESTED_AT: &str = "_ingested_at";

/// The Arrow type of UTC timestamps.
pub fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One table of the warehouse.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name, also the folder name under the warehouse root.
    pub name: &'static str,
    /// What the table holds, for catalogs and docs.
    pub description: &'static str,
    /// The full Arrow schema, in column order.
    pub schema: SchemaRef,
    /// Delta partition columns (a prefix-free subset of the schema).
    pub partition_columns: &'static [&'static str],
    /// Column that names the source inside a client's slice, when several
    /// sources write the same table (`platform` in `ad_performance`). A write
    /// replaces the rows of one (client, source value, date range) slice.
    pub source_column: Option<&'static str>,
    /// Whether rows belong to one client (has a `client_id` column).
    pub client_scoped: bool,
}

impl TableDef {
    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Whether the table is a partitioned fact table with a `date` column.
    pub fn has_date(&self) -> bool {
        self.schema.field_with_name(DATE).is_ok()
    }
}

fn key(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn money(name: &str) -> Field {
    Field::new(name, MONEY, false)
}

fn count(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn lineage() -> [Field; 3] {
    [
        key(LINEAGE_SOURCE),
        key(LINEAGE_RUN_ID),
        Field::new(LINEAGE_INGESTED_AT, utc_timestamp(), false),
    ]
}

fn utm() -> [Field; 5] {
    [
        text("utm_source"),
        text("utm_medium"),
        text("utm_campaign"),
        text("utm_content"),
        text("utm_term"),
    ]
}

fn schema(fields: impl IntoIterator<Item = Field>) -> SchemaRef {
    Arc::new(Schema::new(fields.into_iter().collect::<Vec<_>>()))
}

/// Ad platform performance, one row per client, date, platform, account,
/// campaign, ad group and ad.
pub static AD_PERFORMANCE: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "ad_performance",
    description: "Daily ad performance per client, platform, account, campaign, ad group and ad",
    schema: schema(
        [
            key(CLIENT_ID),
            Field::new(DATE, DataType::Date32, false),
            key("platform"),
            key("account_id"),
            text("account_name"),
            key("campaign_id"),
            text("campaign_name"),
            text("ad_group_id"),
            text("ad_group_name"),
            text("ad_id"),
            text("ad_name"),
            money("spend"),
            count("impressions"),
            count("clicks"),
            Field::new("conversions", DataType::Float64, false),
            money("conversion_value"),
            key("currency"),
        ]
        .into_iter()
        .chain(utm())
        .chain(lineage()),
    ),
    partition_columns: &[CLIENT_ID, DATE],
    source_column: Some("platform"),
    client_scoped: true,
});

/// GA4 sessions per client, date, property, traffic source, device and country.
pub static WEB_SESSIONS: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "web_sessions",
    description: "Daily GA4 sessions per client, property, source/medium/campaign, device and country",
    schema: schema(
        [
            key(CLIENT_ID),
            Field::new(DATE, DataType::Date32, false),
            key("property_id"),
            text("source"),
            text("medium"),
            text("campaign"),
            text("device_category"),
            text("country"),
            count("sessions"),
            count("engaged_sessions"),
            Field::new("key_events", DataType::Float64, false),
            money("revenue"),
            key("currency"),
        ]
        .into_iter()
        .chain(lineage()),
    ),
    partition_columns: &[CLIENT_ID, DATE],
    source_column: None,
    client_scoped: true,
});

/// Shopify orders, one row per order. Raw PII is never stored: the customer
/// is a keyed hash of the e-mail address.
pub static ORDERS: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "orders",
    description: "Shopify orders by shop-local date, UTM attribution and a keyed customer hash",
    schema: schema(
        [
            key(CLIENT_ID),
            Field::new(DATE, DataType::Date32, false),
            key("shop_id"),
            key("order_id"),
            Field::new("created_at", utc_timestamp(), false),
            key("currency"),
            money("total_price"),
            money("subtotal_price"),
            text("financial_status"),
        ]
        .into_iter()
        .chain(utm())
        .chain([text("customer_key")])
        .chain(lineage()),
    ),
    partition_columns: &[CLIENT_ID, DATE],
    source_column: None,
    client_scoped: true,
});

/// One row per ingest run: what was asked, what happened, which Delta
/// version it produced, and what the platform calls took (`api_calls` to
/// `breaker_opens`: null for runs that made no platform calls, and in rows
/// written before the columns existed).
pub static INGEST_RUNS: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "ingest_runs",
    description: "Audit and lineage of every ingest run",
    schema: schema([
        key("run_id"),
        key(CLIENT_ID),
        key("source"),
        key("trigger"),
        Field::new("date_from", DataType::Date32, false),
        Field::new("date_to", DataType::Date32, false),
        Field::new("started_at", utc_timestamp(), false),
        Field::new("finished_at", utc_timestamp(), false),
        key("status"),
        count("rows_read"),
        count("rows_written"),
        count("rows_quarantined"),
        key("target_table"),
        Field::new("table_version", DataType::Int64, true),
        Field::new(
            "source_request_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        text("error"),
        Field::new("api_calls", DataType::Int64, true),
        Field::new("retries", DataType::Int64, true),
        Field::new("rate_limit_waits", DataType::Int64, true),
        Field::new("rate_limit_wait_seconds", DataType::Float64, true),
        Field::new("breaker_opens", DataType::Int64, true),
    ]),
    partition_columns: &[],
    source_column: None,
    client_scoped: true,
});

/// Records rejected by validation, kept with the reason and the raw record.
///
/// `date_from`/`date_to` are the date range the run asked for: a re-run of
/// a (client, source, range) replaces the rows of runs whose range it
/// covers. They are nullable so that rows written before they existed stay
/// readable.
pub static QUARANTINE: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "quarantine",
    description: "Records rejected by validation, with the reason and the raw record",
    schema: schema([
        key("run_id"),
        key(CLIENT_ID),
        key("source"),
        Field::new("received_at", utc_timestamp(), false),
        key("reason"),
        key("raw_record"),
        Field::new("date_from", DataType::Date32, true),
        Field::new("date_to", DataType::Date32, true),
    ]),
    partition_columns: &[],
    source_column: Some("source"),
    client_scoped: true,
});

/// Daily exchange rates: 1 `base` = `rate` `quote`.
pub static FX_RATES: LazyLock<TableDef> = LazyLock::new(|| TableDef {
    name: "fx_rates",
    description: "Daily exchange rates: 1 unit of base = rate units of quote",
    schema: schema([
        Field::new(DATE, DataType::Date32, false),
        key("base"),
        key("quote"),
        Field::new("rate", DataType::Float64, false),
    ]),
    partition_columns: &[],
    source_column: None,
    client_scoped: false,
});

/// Every table of the warehouse.
pub fn all_tables() -> [&'static TableDef; 6] {
    [
        &AD_PERFORMANCE,
        &WEB_SESSIONS,
        &ORDERS,
        &INGEST_RUNS,
        &QUARANTINE,
        &FX_RATES,
    ]
}

/// Looks a table up by name.
pub fn table(name: &str) -> Option<&'static TableDef> {
    all_tables().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_and_source_columns_exist_in_schema() {
        for t in all_tables() {
            for p in t.partition_columns {
                assert!(t.schema.field_with_name(p).is_ok(), "{}.{p}", t.name);
            }
            if let Some(s) = t.source_column {
                assert!(t.schema.field_with_name(s).is_ok(), "{}.{s}", t.name);
            }
            assert_eq!(
                t.client_scoped,
                t.schema.field_with_name(CLIENT_ID).is_ok(),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn fact_tables_are_partitioned_by_client_and_date() {
        for t in [&*AD_PERFORMANCE, &*WEB_SESSIONS, &*ORDERS] {
            assert_eq!(t.partition_columns, &[CLIENT_ID, DATE]);
            for l in [LINEAGE_SOURCE, LINEAGE_RUN_ID, LINEAGE_INGESTED_AT] {
                assert!(t.schema.field_with_name(l).is_ok(), "{}.{l}", t.name);
            }
        }
    }

    #[test]
    fn orders_hold_no_raw_pii() {
        for pii in [
            "email",
            "phone",
            "address",
            "ip",
            "customer_email",
            "browser_ip",
        ] {
            assert!(ORDERS.schema.field_with_name(pii).is_err(), "{pii}");
        }
    }
}
