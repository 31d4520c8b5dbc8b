//! The freshness SLA: for every client and source, when yesterday's slice
//! landed versus 08:00 in the client's time zone, computed from
//! `ingest_runs` (`adlake-ingest freshness`, the server's
//! `adlake_freshness_lag_seconds` gauge).
//!
//! "Yesterday" is the day before `now` in the client's zone. Its slice
//! *landed* when the first successful run whose requested range covers it
//! finished. The *lag* is how far the newest landed day trails `now`: the
//! time since the end (client-local midnight) of the newest day any
//! successful run covered. With yesterday in, the lag is under 24 hours;
//! at 07:00 with yesterday still missing it is over 31 hours, which is
//! what the "SLA at risk" alert watches.
//!
//! A run counts once its finish is recorded (`succeeded`); `adlake-ingest
//! freshness` also counts a run left `started` whose data commit is in the
//! table (its `txn`), as the next run will record it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use adlake_engine::schema::INGEST_RUNS;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, TimestampMicrosecondType};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::dates::epoch_day_to_date;
use crate::error::{Error, Result};
use crate::warehouse::Warehouse;
use crate::writer::{GLOBAL_CLIENT, RunStatus};

/// The hour (client-local) by which yesterday's data must be in.
pub const SLA_HOUR: u32 = 8;

/// One successful run, as far as freshness cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// The client.
    pub client_id: String,
    /// The source (`google_ads`, `ga4`, `shopify`, ...).
    pub source: String,
    /// First date the run covered.
    pub date_from: NaiveDate,
    /// Last date the run covered (inclusive).
    pub date_to: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// Where each client's day starts and ends.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeZones {
    default: Tz,
    clients: HashMap<String, Tz>,
}

impl Default for TimeZones {
    fn default() -> Self {
        Self::new(Tz::UTC)
    }
}

impl TimeZones {
    /// Every client in `default` unless set otherwise.
    pub fn new(default: Tz) -> Self {
        Self {
            default,
            clients: HashMap::new(),
        }
    }

    /// Sets one client's zone.
    #[must_use]
    pub fn with_client(mut self, client: impl Into<String>, zone: Tz) -> Self {
        self.clients.insert(client.into(), zone);
        self
    }

    /// Parses `CLIENT=Area/City`.
    pub fn parse_assignment(text: &str) -> Result<(String, Tz)> {
        let (client, zone) = text.split_once('=').ok_or_else(|| {
            Error::InvalidConfig(format!(
                "expected CLIENT=Area/City (e.g. acme=Europe/Berlin), got '{text}'"
            ))
        })?;
        Ok((client.trim().to_owned(), parse_zone(zone)?))
    }

    /// The zone of one client.
    pub fn of(&self, client: &str) -> Tz {
        self.clients.get(client).copied().unwrap_or(self.default)
    }
}

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> Result<Tz> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| Error::InvalidConfig(format!("unknown time zone '{}'", name.trim())))
}

/// Whether yesterday's slice met the SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaStatus {
    /// Landed by 08:00 client-local.
    OnTime,
    /// Landed after 08:00.
    Late,
    /// Not landed, and it is not 08:00 yet.
    Pending,
    /// Not landed, and 08:00 has passed.
    Missed,
}

impl SlaStatus {
    /// The report's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTime => "on_time",
            Self::Late => "late",
            Self::Pending => "pending",
            Self::Missed => "missed",
        }
    }
}

/// Freshness of one client and source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// The client.
    pub client_id: String,
    /// The source.
    pub source: String,
    /// The client's zone.
    pub time_zone: String,
    /// Yesterday, client-local.
    pub expected_date: NaiveDate,
    /// 08:00 client-local today, in UTC.
    pub deadline: DateTime<Utc>,
    /// When yesterday's slice first landed.
    pub landed_at: Option<DateTime<Utc>>,
    /// The newest date any successful run covered.
    pub latest_date: NaiveDate,
    /// Seconds from the end of `latest_date` (client-local) to now.
    pub lag_seconds: i64,
    /// The verdict.
    pub status: SlaStatus,
}

/// Computes freshness per (client, source) from successful runs, as of
/// `now`. Pairs are sorted by client, then source.
pub fn compute(landings: &[Landing], zones: &TimeZones, now: DateTime<Utc>) -> Vec<Freshness> {
    let mut by_pair: BTreeMap<(&str, &str), Vec<&Landing>> = BTreeMap::new();
    for landing in landings {
        if landing.client_id == GLOBAL_CLIENT {
            continue;
        }
        by_pair
            .entry((&landing.client_id, &landing.source))
            .or_default()
            .push(landing);
    }
    by_pair
        .into_iter()
        .map(|((client, source), runs)| {
            let zone = zones.of(client);
            let today = now.with_timezone(&zone).date_naive();
            let expected = today.checked_sub_days(Days::new(1)).unwrap_or(today);
            let deadline = local_to_utc(zone, today, SLA_HOUR);
            let landed_at = runs
                .iter()
                .filter(|r| r.date_from <= expected && expected <= r.date_to)
                .map(|r| r.finished_at)
                .min();
            let latest_date = runs
                .iter()
                .map(|r| r.date_to)
                .max()
                .expect("a pair has at least one run");
            let end_of_latest = local_to_utc(
                zone,
                latest_date
                    .checked_add_days(Days::new(1))
                    .unwrap_or(latest_date),
                0,
            );
            let lag_seconds = (now - end_of_latest).num_seconds().max(0);
            let status = match landed_at {
                Some(at) if at <= deadline => SlaStatus::OnTime,
                Some(_) => SlaStatus::Late,
                None if now < deadline => SlaStatus::Pending,
                None => SlaStatus::Missed,
            };
            Freshness {
                client_id: client.to_owned(),
                source: source.to_owned(),
                time_zone: zone.name().to_owned(),
                expected_date: expected,
                deadline,
                landed_at,
                latest_date,
                lag_seconds,
                status,
            }
        })
        .collect()
}

/// `hour`:00 on `date` in `zone`, in UTC. On a DST gap the first valid
/// instant after it is taken.
fn local_to_utc(zone: Tz, date: NaiveDate, hour: u32) -> DateTime<Utc> {
    let mut local = date.and_time(NaiveTime::from_hms_opt(hour, 0, 0).expect("valid hour"));
    for _ in 0..4 {
        if let Some(at) = zone.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

/// Reads the successful runs out of an `ingest_runs` provider (the
/// engine's snapshot, or a freshly opened table).
pub async fn load_landings(runs: Arc<dyn TableProvider>) -> Result<Vec<Landing>> {
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(runs)?
        .filter(col("status").eq(lit(RunStatus::Succeeded.as_str())))?
        .select_columns(&["client_id", "source", "date_from", "date_to", "finished_at"])?
        .collect()
        .await?;
    let mut landings = Vec::new();
    for batch in batches {
        // Delta scans may hand strings over as views; read them as Utf8.
        let client = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let source = arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
        let client = client.as_string::<i32>();
        let source = source.as_string::<i32>();
        let from = batch.column(2).as_primitive::<Date32Type>();
        let to = batch.column(3).as_primitive::<Date32Type>();
        let finished = batch.column(4).as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if finished.is_null(i) || from.is_null(i) || to.is_null(i) {
                continue;
            }
            let (Some(finished_at), Some(date_from), Some(date_to)) = (
                DateTime::from_timestamp_micros(finished.value(i)),
                epoch_day_to_date(from.value(i)),
                epoch_day_to_date(to.value(i)),
            ) else {
                continue;
            };
            landings.push(Landing {
                client_id: client.value(i).to_owned(),
                source: source.value(i).to_owned(),
                date_from,
                date_to,
                finished_at,
            });
        }
    }
    Ok(landings)
}

/// The freshness report of a warehouse as of `now`.
pub async fn report(
    warehouse: &Warehouse,
    zones: &TimeZones,
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>> {
    let table = warehouse.open_table(&INGEST_RUNS).await?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let provider = table.table_provider().await?;
    let mut landings = load_landings(provider).await?;
    // A run killed after its data commit and before its finish row has
    // landed: its `txn` is in the table (the next run records its finish).
    for run in crate::reconcile::landed_unfinished(warehouse).await? {
        landings.push(Landing {
            client_id: run.client_id,
            source: run.source,
            date_from: run.date_from,
            date_to: run.date_to,
            finished_at: run.started_at,
        });
    }
    Ok(compute(&landings, zones, now))
}

#[cfg(test)]
mod tests;
