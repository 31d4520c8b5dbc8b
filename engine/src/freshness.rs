//! The freshness SLA, computed once for every reader: `adlake-ingest
//! freshness`, the server's `adlake_freshness_lag_seconds` gauge and the
//! gRPC `GetFreshness` answer.
//!
//! The rule: for every client and source (or table), *yesterday* is the day
//! before now in the client's time zone, and it must have landed by
//! [`SLA_HOUR`]:00 client-local today. It *landed* when the first
//! successful run whose requested range covers it finished. The *lag* is
//! how far the newest landed day trails now: the time since the end
//! (client-local midnight) of the newest day any successful run covered.
//! With yesterday in, the lag is under 24 hours; at 07:00 with yesterday
//! still missing it is over 31 hours, which is what the "SLA at risk" alert
//! watches.
//!
//! Runs come from `ingest_runs` ([`load_landings`]); a run counts once its
//! finish is recorded as `succeeded`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::dates::{date_to_epoch_day as epoch_day, epoch_day_to_date as date_of_epoch_day};
use crate::error::{Error, Result};

/// The hour (client-local) by which yesterday's data must be in.
pub const SLA_HOUR: u32 = 8;

/// The client id of rows that belong to no client (FX rates, ...): never
/// part of a freshness report.
pub const GLOBAL_CLIENT: &str = "_global";

/// One successful ingest run, as far as freshness cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// The client.
    pub client_id: String,
    /// The source (`google_ads`, `ga4`, `shopify`, ...).
    pub source: String,
    /// The table it wrote (`ad_performance`, `web_sessions`, `orders`, ...).
    pub table: String,
    /// First date the run covered.
    pub date_from: NaiveDate,
    /// Last date the run covered (inclusive).
    pub date_to: NaiveDate,
    /// Rows it wrote.
    pub rows_written: u64,
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

    /// The `[[client]]` zones of an ingest configuration file (`id` and
    /// `time_zone` of each entry; every other key is the ingest's to check).
    pub fn from_clients_config(path: &Path) -> Result<Vec<(String, Tz)>> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            client: Vec<Client>,
        }
        #[derive(Deserialize)]
        struct Client {
            id: String,
            time_zone: String,
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidConfig(format!("{}: cannot be read: {e}", path.display()))
        })?;
        let file: File = toml::from_str(&text)
            .map_err(|e| Error::InvalidConfig(format!("{}: {e}", path.display())))?;
        file.client
            .into_iter()
            .map(|c| {
                let zone = parse_zone(&c.time_zone).map_err(|e| {
                    Error::InvalidConfig(format!("{}: client {}: {e}", path.display(), c.id))
                })?;
                Ok((c.id, zone))
            })
            .collect()
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

/// The day that must have landed as of `now` in `zone` (yesterday there),
/// and the instant by which it must have (08:00 there today).
pub fn due(zone: Tz, now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let today = now.with_timezone(&zone).date_naive();
    let expected = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    (expected, local_to_utc(zone, today, SLA_HOUR))
}

/// Freshness of one client and source (or table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// The client.
    pub client_id: String,
    /// The source, or the table for [`by_table`].
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

/// Freshness per (client, source) from successful runs, as of `now`,
/// sorted by client, then source.
pub fn compute(landings: &[Landing], zones: &TimeZones, now: DateTime<Utc>) -> Vec<Freshness> {
    group(landings, zones, now, |l| &l.source)
}

/// Freshness per (client, table) of the runs that wrote rows, as of `now`,
/// sorted by client, then table.
pub fn by_table(landings: &[Landing], zones: &TimeZones, now: DateTime<Utc>) -> Vec<Freshness> {
    let wrote: Vec<Landing> = landings
        .iter()
        .filter(|l| l.rows_written > 0)
        .cloned()
        .collect();
    group(&wrote, zones, now, |l| &l.table)
}

fn group(
    landings: &[Landing],
    zones: &TimeZones,
    now: DateTime<Utc>,
    key: impl Fn(&Landing) -> &String,
) -> Vec<Freshness> {
    let mut by_pair: BTreeMap<(&str, &str), Vec<&Landing>> = BTreeMap::new();
    for landing in landings {
        if landing.client_id == GLOBAL_CLIENT {
            continue;
        }
        by_pair
            .entry((&landing.client_id, key(landing)))
            .or_default()
            .push(landing);
    }
    by_pair
        .into_iter()
        .map(|((client, source), runs)| assess(client, source, &runs, zones.of(client), now))
        .collect()
}

/// The SLA verdict of one client's runs of one source.
fn assess(
    client: &str,
    source: &str,
    runs: &[&Landing],
    zone: Tz,
    now: DateTime<Utc>,
) -> Freshness {
    let (expected, deadline) = due(zone, now);
    let landed_at = runs
        .iter()
        .filter(|r| r.date_from <= expected && expected <= r.date_to)
        .map(|r| r.finished_at)
        .min();
    let latest_date = runs
        .iter()
        .map(|r| r.date_to)
        .max()
        .unwrap_or(NaiveDate::MIN);
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

/// The successful runs of an `ingest_runs` provider (the engine's
/// snapshot, a scoped view of it, or a freshly opened table) whose slice
/// reaches `since` or later (all of them with `None`).
pub async fn load_landings(
    runs: Arc<dyn TableProvider>,
    since: Option<NaiveDate>,
) -> Result<Vec<Landing>> {
    let ctx = SessionContext::new();
    let mut frame = ctx
        .read_table(runs)
        .map_err(Error::from_planning)?
        .filter(col("status").eq(lit("succeeded")))
        .map_err(Error::from_planning)?;
    if let Some(since) = since {
        frame = frame
            .filter(
                col("date_to").gt_eq(lit(datafusion::scalar::ScalarValue::Date32(Some(
                    epoch_day(since),
                )))),
            )
            .map_err(Error::from_planning)?;
    }
    let batches = frame
        .select(vec![
            col("client_id"),
            col("source"),
            col("target_table"),
            col("date_from"),
            col("date_to"),
            datafusion::logical_expr::cast(col("rows_written"), DataType::Int64),
            col("finished_at"),
        ])
        .map_err(Error::from_planning)?
        .collect()
        .await
        .map_err(Error::from_execution)?;
    let mut landings = Vec::new();
    for batch in batches {
        // Delta scans may hand strings over as views; read them as Utf8.
        let text = |i: usize| {
            arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::Execution(e.into()))
        };
        let (client, source, table) = (text(0)?, text(1)?, text(2)?);
        let (client, source, table) = (
            client.as_string::<i32>(),
            source.as_string::<i32>(),
            table.as_string::<i32>(),
        );
        let from = batch.column(3).as_primitive::<Date32Type>();
        let to = batch.column(4).as_primitive::<Date32Type>();
        let written = batch.column(5).as_primitive::<Int64Type>();
        let finished = batch.column(6).as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if finished.is_null(i) || from.is_null(i) || to.is_null(i) {
                continue;
            }
            let (Some(finished_at), Some(date_from), Some(date_to)) = (
                DateTime::from_timestamp_micros(finished.value(i)),
                date_of_epoch_day(from.value(i)),
                date_of_epoch_day(to.value(i)),
            ) else {
                continue;
            };
            landings.push(Landing {
                client_id: client.value(i).to_owned(),
                source: source.value(i).to_owned(),
                table: table.value(i).to_owned(),
                date_from,
                date_to,
                rows_written: u64::try_from(written.value(i)).unwrap_or(0),
                finished_at,
            });
        }
    }
    Ok(landings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landing(client: &str, from: &str, to: &str, finished: &str) -> Landing {
        Landing {
            client_id: client.into(),
            source: "google_ads".into(),
            table: "ad_performance".into(),
            date_from: from.parse().unwrap(),
            date_to: to.parse().unwrap(),
            rows_written: 10,
            finished_at: finished.parse().unwrap(),
        }
    }

    #[test]
    fn yesterday_landed_before_8am_client_local() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-02 15:00 UTC is 10:00 in New York (UTC-5): yesterday is
        // Mar 1, and 08:00 local is 13:00 UTC.
        let now: DateTime<Utc> = "2026-03-02T15:00:00Z".parse().unwrap();
        let mut empty = landing("hooli", "2026-03-01", "2026-03-01", "2026-03-02T09:00:00Z");
        empty.rows_written = 0;
        let runs = [
            // Covers Feb 27 - Mar 1, finished 12:30 UTC = 07:30 local.
            landing("acme", "2026-02-27", "2026-03-01", "2026-03-02T12:30:00Z"),
            // A later re-run of Mar 1 does not change the first landing.
            landing("acme", "2026-03-01", "2026-03-01", "2026-03-02T14:00:00Z"),
            // Another client, landed late.
            landing("globex", "2026-03-01", "2026-03-01", "2026-03-02T13:30:00Z"),
            // Only up to Feb 28.
            landing(
                "initech",
                "2026-02-01",
                "2026-02-28",
                "2026-03-01T01:00:00Z",
            ),
            // Wrote nothing: landed for the source, not for the table.
            empty,
        ];
        let zones = TimeZones::new(ny);
        let tables = by_table(&runs, &zones, now);
        let verdict = |c: &str| {
            tables
                .iter()
                .find(|f| f.client_id == c)
                .map(|f| (f.landed_at, f.status))
        };
        assert_eq!(
            verdict("acme"),
            Some((
                Some("2026-03-02T12:30:00Z".parse().unwrap()),
                SlaStatus::OnTime
            ))
        );
        // 13:30 UTC is 08:30 in New York: landed, but late.
        assert_eq!(
            verdict("globex"),
            Some((
                Some("2026-03-02T13:30:00Z".parse().unwrap()),
                SlaStatus::Late
            ))
        );
        assert_eq!(verdict("initech"), Some((None, SlaStatus::Missed)));
        assert_eq!(verdict("hooli"), None);
        let sources = compute(&runs, &zones, now);
        assert!(sources.iter().any(|f| f.client_id == "hooli"));
        // In UTC, 12:30 is past 08:00.
        let utc = by_table(&runs, &TimeZones::default(), now);
        assert_eq!(utc[0].client_id, "acme");
        assert_eq!(utc[0].status, SlaStatus::Late);
    }

    #[test]
    fn client_zones_are_read_from_the_ingest_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        std::fs::write(
            &path,
            "warehouse = \"./w\"\n\n[[client]]\nid = \"acme\"\ntime_zone = \"America/New_York\"\ncurrency = \"USD\"\n\n[[client.source]]\nplatform = \"google_ads\"\naccounts = [\"1\"]\n\n[[client]]\nid = \"globex\"\ntime_zone = \"Europe/Berlin\"\n",
        )
        .unwrap();
        let zones = TimeZones::from_clients_config(&path).unwrap();
        assert_eq!(
            zones,
            vec![
                ("acme".to_owned(), chrono_tz::America::New_York),
                ("globex".to_owned(), chrono_tz::Europe::Berlin)
            ]
        );
        std::fs::write(
            &path,
            "[[client]]\nid = \"acme\"\ntime_zone = \"Mars/Olympus\"\n",
        )
        .unwrap();
        let err = TimeZones::from_clients_config(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client acme: invalid configuration: unknown time zone 'Mars/Olympus'"),
            "{err}"
        );
    }

    #[test]
    fn due_is_yesterday_and_eight_local() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let now: DateTime<Utc> = "2025-06-10T07:30:00Z".parse().unwrap();
        let (day, deadline) = due(berlin, now);
        assert_eq!(day, NaiveDate::from_ymd_opt(2025, 6, 9).unwrap());
        assert_eq!(
            deadline,
            "2025-06-10T06:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
