//! Which jobs run: the daily ones (yesterday in each client's time zone
//! plus the source's lookback window), the worker's (those whose local
//! run time has passed and whose yesterday has not landed), and a
//! backfill's, split into the chunks the platform accepts.

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};

use crate::config::{ClientConfig, Config, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::writer::Trigger;
use crate::sources::connectors::SourceKind;

/// One job: a client's source over a date range.
#[derive(Debug, Clone)]
pub struct Job {
    /// The client.
    pub client: ClientConfig,
    /// The source.
    pub source: SourceConfig,
    /// First date.
    pub from: NaiveDate,
    /// Last date (inclusive).
    pub to: NaiveDate,
    /// Why it runs.
    pub trigger: Trigger,
}

/// Yesterday in `client`'s time zone at `now`.
pub fn client_yesterday(client: &ClientConfig, now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&client.time_zone).date_naive();
    today.pred_opt().unwrap_or(today)
}

/// Every (client, source) job due at `now`: yesterday in the client's time
/// zone and the source's lookback window before it. File-only sources
/// (without credentials) are never fetched, so they have no due job.
pub fn due_jobs(config: &Config, now: DateTime<Utc>) -> Vec<Job> {
    let mut jobs = Vec::new();
    for client in &config.clients {
        let to = client_yesterday(client, now);
        for source in client.sources.iter().filter(|s| s.credentials.is_some()) {
            let from = to
                .checked_sub_days(Days::new(u64::from(source.lookback_days)))
                .unwrap_or(to);
            jobs.push(Job {
                client: client.clone(),
                source: source.clone(),
                from,
                to,
                trigger: Trigger::Schedule,
            });
        }
    }
    jobs
}

/// The jobs the worker runs at `now`: those of clients whose local time has
/// passed `run_at`, for every source whose yesterday has not landed yet
/// (`landed` holds the last day landed per client and source).
pub fn worker_due(
    config: &Config,
    now: DateTime<Utc>,
    run_at: NaiveTime,
    landed: &HashMap<(String, SourceKind), NaiveDate>,
) -> Vec<Job> {
    due_jobs(config, now)
        .into_iter()
        .filter(|job| {
            let local = now.with_timezone(&job.client.time_zone).time();
            local >= run_at
                && landed.get(&(job.client.id.clone(), job.source.kind)) != Some(&job.to)
        })
        .collect()
}

/// The jobs of a backfill of `client`'s `source` over `since..=until`, in
/// chunks of at most the platform's longest range.
pub fn backfill_jobs(
    config: &Config,
    client: &str,
    source: SourceKind,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<Vec<Job>> {
    let c = config
        .client(client)
        .ok_or_else(|| Error::InvalidConfig(format!("client '{client}' is not configured")))?;
    let s = c.sources.iter().find(|s| s.kind == source).ok_or_else(|| {
        Error::InvalidConfig(format!("client '{client}' has no source '{source}'"))
    })?;
    if s.credentials.is_none() {
        return Err(Error::InvalidConfig(format!(
            "client '{client}' source '{source}' has no credentials: it is file-only \
             (`adlake-ingest file`); set `credentials` in its [[client.source]] to pull it"
        )));
    }
    if since > until {
        return Err(Error::InvalidConfig(format!(
            "--since {since} is after --until {until}"
        )));
    }
    let mut jobs = Vec::new();
    let mut from = since;
    let chunk = u64::from(source.max_chunk_days());
    while from <= until {
        let to = from
            .checked_add_days(Days::new(chunk - 1))
            .map_or(until, |d| d.min(until));
        jobs.push(Job {
            client: c.clone(),
            source: s.clone(),
            from,
            to,
            trigger: Trigger::Backfill,
        });
        match to.succ_opt() {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(jobs)
}
