//! Data-subject requests of a client's shoppers: access (GDPR Art. 15,
//! `adlake-ingest shopper --export`) and erasure (Art. 17, `--erase`).
//!
//! adlake never stores a shopper's e-mail address: an order carries the
//! keyed hash of it (`customer_key`, [`crate::pii::customer_key`] under the
//! secrets file's `customer_hash_key`), so a request given an address finds
//! the orders by hashing it with the same key. The raw records of Shopify
//! orders that validation rejected are in `quarantine` as the platform sent
//! them, e-mail included: they are found by the address itself.
//!
//! An export prints every order and quarantined record of the shopper as
//! JSON. An erasure deletes them (orders and quarantine, one commit each),
//! vacuums and rewrites the two tables' logs as a client erasure does (see
//! [`super`]), and writes an audit entry under
//! `<warehouse>/_adlake_audit/shoppers/` that names the shopper only by the
//! SHA-256 of the customer key and never holds the address. Both are
//! refused when the key is missing, and an erasure that finds nothing
//! changes nothing.

use adlake_engine::schema::{CLIENT_ID, ORDERS, QUARANTINE, TableDef};
use arrow::array::{Array, AsArray, RecordBatch};
use chrono::Utc;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::{Value, json};

use super::{AUDIT_PREFIX, TableErasure, purge, write_entry};
use crate::error::{Error, Result};
use crate::lake::warehouse::Warehouse;
use crate::sources::connectors::SourceKind;

/// One shopper of one client.
#[derive(Debug, Clone)]
pub struct ShopperRequest {
    /// The agency's client whose shop the shopper bought from.
    pub client: String,
    /// The shopper's e-mail address, as they gave it.
    pub email: String,
    /// The key orders were hashed with.
    pub hash_key: Vec<u8>,
}

impl ShopperRequest {
    fn checked(&self) -> Result<(String, String)> {
        let email = self.email.trim().to_lowercase();
        if email.is_empty() || !email.contains('@') {
            return Err(Error::Usage(format!(
                "--email '{}' is not an e-mail address",
                self.email
            )));
        }
        if self.hash_key.is_empty() {
            return Err(Error::Usage(
                "no customer_hash_key in the secrets file: the orders' customer keys cannot be \
                 recomputed without the key they were hashed with"
                    .to_owned(),
            ));
        }
        Ok((
            email.clone(),
            crate::pii::customer_key(&self.hash_key, &email),
        ))
    }

    fn orders(&self, key: &str) -> Expr {
        col(CLIENT_ID)
            .eq(lit(self.client.as_str()))
            .and(col("customer_key").eq(lit(key)))
    }
}

/// What a shopper's export holds.
#[derive(Debug, Clone, Serialize)]
pub struct ShopperExport {
    /// The client.
    pub client_id: String,
    /// The keyed hash the orders carry.
    pub customer_key: String,
    /// Every order row, all columns.
    pub orders: Vec<Value>,
    /// Every quarantined Shopify record that holds the address.
    pub quarantined: Vec<Value>,
}

/// The audit entry of a shopper's erasure.
#[derive(Debug, Clone, Serialize)]
pub struct ShopperErasure {
    /// The client.
    pub client_id: String,
    /// The SHA-256 of the customer key (the entry's only name for the
    /// shopper).
    pub customer_key_sha256: String,
    /// Who asked.
    pub requested_by: String,
    /// Why (ticket, request reference), if given.
    pub reason: Option<String>,
    /// When it finished (UTC, RFC 3339).
    pub finished_at: String,
    /// The tables purged: orders, quarantine, each only when it held
    /// something of the shopper.
    pub tables: Vec<TableErasure>,
    /// Where the entry was written, relative to the warehouse root.
    pub audit_path: String,
}

fn rows_as_json(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let body = writer.into_inner();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidConfig(format!("cannot encode the export: {e}")))
}

async fn select(
    warehouse: &Warehouse,
    def: &'static TableDef,
    predicate: Expr,
) -> Result<Vec<RecordBatch>> {
    let table = warehouse.open_table(def).await?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    Ok(ctx
        .read_table(table.table_provider().await?)?
        .filter(predicate)?
        .collect()
        .await?)
}

/// The raw records of the client's quarantined Shopify orders that hold
/// `email` (any case), and their rows.
async fn quarantined(
    warehouse: &Warehouse,
    client: &str,
    email: &str,
) -> Result<(Vec<String>, Vec<RecordBatch>)> {
    let batches = select(
        warehouse,
        &QUARANTINE,
        col(CLIENT_ID)
            .eq(lit(client))
            .and(col("source").eq(lit(SourceKind::Shopify.as_str()))),
    )
    .await?;
    let mut records = Vec::new();
    let mut kept = Vec::new();
    for b in batches {
        let raw = arrow::compute::cast(
            b.column_by_name("raw_record").ok_or_else(|| Error::Input {
                table: "quarantine",
                message: "no raw_record column".to_owned(),
            })?,
            &arrow::datatypes::DataType::Utf8,
        )?;
        let raw = raw.as_string::<i32>();
        let mask: arrow::array::BooleanArray = (0..raw.len())
            .map(|i| Some(!raw.is_null(i) && raw.value(i).to_lowercase().contains(email)))
            .collect();
        for i in 0..raw.len() {
            if mask.value(i) {
                records.push(raw.value(i).to_owned());
            }
        }
        kept.push(arrow::compute::filter_record_batch(&b, &mask)?);
    }
    Ok((records, kept))
}

/// Every order and quarantined record of the shopper.
pub async fn export(warehouse: &Warehouse, req: &ShopperRequest) -> Result<ShopperExport> {
    let (email, key) = req.checked()?;
    let orders = select(warehouse, &ORDERS, req.orders(&key)).await?;
    let (_, quarantine) = quarantined(warehouse, &req.client, &email).await?;
    Ok(ShopperExport {
        client_id: req.client.clone(),
        orders: rows_as_json(&orders)?,
        quarantined: rows_as_json(&quarantine)?,
        customer_key: key,
    })
}

/// Deletes every order and quarantined record of the shopper, leaving no
/// file or log entry that holds them, and writes the audit entry.
pub async fn erase(
    warehouse: &Warehouse,
    req: &ShopperRequest,
    requested_by: &str,
    reason: Option<String>,
) -> Result<ShopperErasure> {
    let (email, key) = req.checked()?;
    if requested_by.trim().is_empty() {
        return Err(Error::Usage(
            "who requested the erasure must be given (--by)".to_owned(),
        ));
    }
    let orders: u64 = select(warehouse, &ORDERS, req.orders(&key))
        .await?
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    let (records, _) = quarantined(warehouse, &req.client, &email).await?;
    if orders == 0 && records.is_empty() {
        return Err(Error::Usage(format!(
            "client '{}' has no order or quarantined record of that shopper; nothing was changed",
            req.client
        )));
    }
    let key_sha256 = super::client_sha256(&key);
    let metadata = [
        ("adlake.operation".to_owned(), json!("erase-shopper")),
        ("adlake.customer_key_sha256".to_owned(), json!(key_sha256)),
        ("adlake.requested_by".to_owned(), json!(requested_by)),
    ];
    // Only the tables that hold something of the shopper are purged (and
    // so lose their history).
    let mut tables = Vec::new();
    if orders > 0 {
        tables.push(
            purge(
                warehouse,
                &ORDERS,
                req.orders(&key),
                orders,
                metadata.clone(),
            )
            .await?,
        );
    }
    if !records.is_empty() {
        let quarantine = col(CLIENT_ID).eq(lit(req.client.as_str())).and(
            col("raw_record").in_list(records.iter().map(|r| lit(r.as_str())).collect(), false),
        );
        tables.push(
            purge(
                warehouse,
                &QUARANTINE,
                quarantine,
                records.len() as u64,
                metadata,
            )
            .await?,
        );
    }
    let finished = Utc::now();
    let audit = ShopperErasure {
        client_id: req.client.clone(),
        requested_by: requested_by.trim().to_owned(),
        reason,
        finished_at: finished.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        tables,
        audit_path: format!(
            "{AUDIT_PREFIX}/shoppers/{}-{}.json",
            finished.format("%Y%m%dT%H%M%S%.6fZ"),
            &key_sha256[..16]
        ),
        customer_key_sha256: key_sha256,
    };
    write_entry(warehouse, &audit, &audit.audit_path, &[]).await?;
    Ok(audit)
}

#[cfg(test)]
mod tests;
