//! Ingest jobs: one (client, source, date range) each, fetched from the
//! platform (or read from saved files), validated, and written as one
//! idempotent slice replace with its `ingest_runs` row.
//!
//! [`due_jobs`] gives the daily jobs (yesterday in the client's time zone
//! plus the source's lookback window), [`backfill_jobs`] splits a long range
//! into chunks the platform accepts (both in [`crate::pipeline::schedule`]),
//! [`Ingestor::run_jobs`] runs jobs with
//! bounded concurrency per platform, [`Ingestor::ingest_files`] runs saved
//! payloads through the same parsers, and [`Ingestor::worker`] runs the
//! schedule so that yesterday's data lands before 08:00 client-local.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Utc};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::{ClientConfig, Config, Secrets, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::lineage::Lineage;
use crate::lake::quarantine::quarantine_batch;
use crate::lake::warehouse::Warehouse;
use crate::lake::writer::{RunRecord, RunStatus, Trigger, WriteSliceBuilder, append_run};
use crate::pipeline::guard;
use crate::pipeline::validate::{Rules, validate};
use crate::sources::connectors::{
    self, FetchContext, ParseContext, Parsed, Record, SourceKind, merge_ad_rows, records_to_batch,
};
use crate::sources::http::{CallCounts, CallStats, HttpClient};

pub use crate::pipeline::schedule::{Job, backfill_jobs, client_yesterday, due_jobs, worker_due};

/// What a job did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// Run id (in `ingest_runs`, the rows and the commit).
    pub run_id: String,
    /// Client.
    pub client: String,
    /// Source.
    pub source: SourceKind,
    /// First date.
    pub from: NaiveDate,
    /// Last date.
    pub to: NaiveDate,
    /// Rows written.
    pub rows_written: u64,
    /// Records sent to quarantine.
    pub rows_quarantined: u64,
    /// The Delta version written, when it succeeded.
    pub version: Option<u64>,
    /// Source request ids.
    pub request_ids: Vec<String>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// Why the shrink guard held the replace, when it did (the slice is
    /// unchanged; `adlake-ingest run --confirm-shrink RUN_ID` applies it).
    pub held: Option<String>,
    /// What the platform calls took (zero for files).
    pub calls: CallCounts,
}

impl JobReport {
    /// Whether the job ran to its end: it committed its slice, or the
    /// shrink guard held it (see [`Self::held`]).
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// What [`Ingestor::write`] did.
#[derive(Debug, Clone, PartialEq)]
struct Landed {
    rows_written: u64,
    rows_quarantined: u64,
    version: Option<u64>,
    held: Option<String>,
}

/// Runs jobs against a warehouse.
#[derive(Debug)]
pub struct Ingestor {
    warehouse: Warehouse,
    http: Arc<HttpClient>,
    secrets: Secrets,
    concurrency: usize,
    /// Runs of this process between their `started` and finish rows, which
    /// reconciling must leave alone (jobs of one slice can overlap, e.g.
    /// the chunks of a backfill).
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ingestor {
    /// An ingestor writing to `warehouse`, calling platforms through `http`.
    pub fn new(warehouse: Warehouse, http: Arc<HttpClient>, secrets: Secrets) -> Self {
        Self {
            warehouse,
            http,
            secrets,
            concurrency: 4,
            in_flight: std::sync::Mutex::default(),
        }
    }

    /// Jobs in flight at once (the HTTP layer also limits calls per
    /// platform).
    #[must_use]
    pub fn with_concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = jobs.max(1);
        self
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// The HTTP layer (its per-source totals and breaker states).
    pub fn http(&self) -> &Arc<HttpClient> {
        &self.http
    }

    fn parse_context(&self, source: &SourceConfig, account: &str) -> ParseContext {
        let mut ctx = ParseContext::new(account).with_canonical_action(&source.canonical_action);
        if let Some(c) = &source.currency {
            ctx = ctx.with_currency(c);
        }
        if let Some(k) = &self.secrets.customer_hash_key {
            ctx = ctx.with_customer_hash_key(k.as_bytes());
        }
        ctx
    }

    /// Runs `jobs`, at most the configured number at once and one per
    /// (client, platform) slice at a time; returns a report per job in
    /// input order.
    pub async fn run_jobs(&self, jobs: Vec<Job>) -> Vec<JobReport> {
        // Creating a table is a metadata commit that concurrent first
        // writers would race on; create every table before any job runs.
        if let Err(e) = self.warehouse.ensure_tables().await {
            warn!(error = %e, "could not create the tables up front");
        }
        let per_platform: HashMap<SourceKind, Arc<Semaphore>> = SourceKind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    Arc::new(Semaphore::new(
                        self.http.config().platform_concurrency.max(1),
                    )),
                )
            })
            .collect();
        futures::stream::iter(jobs.into_iter().map(|job| {
            let slot = Arc::clone(&per_platform[&job.source.kind]);
            async move {
                let _permit = slot.acquire_owned().await;
                self.run_job(&job).await
            }
        }))
        .buffered(self.concurrency)
        .collect()
        .await
    }

    /// Fetches, validates and writes one job. A fetch failure writes nothing
    /// but a failed `ingest_runs` row; the table stays as it was.
    pub async fn run_job(&self, job: &Job) -> JobReport {
        let run_id = uuid::Uuid::now_v7().to_string();
        let started_at = Utc::now();
        let kind = job.source.kind;
        let source_key = format!("{}/{}", job.client.id, kind);
        let mut parsed = Parsed::default();
        let mut request_ids = Vec::new();
        let mut failure = None;
        let mut inactive: Vec<Option<String>> = Vec::new();
        let calls = CallStats::default();
        let cred_key = job.source.credentials.as_deref();
        match cred_key.map(|name| (name, self.secrets.credentials(name))) {
            None => {
                failure = Some(format!(
                    "{source_key}: the source has no credentials (file-only); set `credentials` in its [[client.source]] to pull it"
                ));
            }
            Some((name, None)) => {
                failure = Some(format!(
                    "{source_key}: credentials '{name}' are not in the secrets file or environment"
                ));
            }
            Some((name, Some(creds))) => {
                for account in &job.source.accounts {
                    let ctx = FetchContext {
                        http: &self.http,
                        source_key: source_key.clone(),
                        cred_key: name.to_owned(),
                        creds: &creds,
                        base_url: job.source.endpoint.replace("{account}", account),
                        parse: self.parse_context(&job.source, account),
                        from: job.from,
                        to: job.to,
                        run: Some(&calls),
                    };
                    match connectors::fetch(kind, &ctx).await {
                        Ok(f) => {
                            parsed.extend(f.parsed);
                            request_ids.extend(f.request_ids);
                            inactive.push(f.inactive);
                        }
                        Err(e) => {
                            failure = Some(format!("account {account}: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        if let Some(error) = failure {
            warn!(client = %job.client.id, source = %kind, %error, "job failed; nothing written");
            let record = RunRecord {
                run_id: run_id.clone(),
                client_id: job.client.id.clone(),
                source: kind.as_str().to_owned(),
                trigger: job.trigger,
                date_from: job.from,
                date_to: job.to,
                started_at,
                finished_at: Utc::now(),
                status: RunStatus::Failed,
                rows_read: 0,
                rows_written: 0,
                rows_quarantined: 0,
                target_table: kind.table().name.to_owned(),
                table_version: None,
                source_request_ids: request_ids.clone(),
                error: Some(error.clone()),
                calls: Some(calls.counts()),
            };
            if let Err(e) = append_run(&self.warehouse, &record).await {
                warn!(%run_id, error = %e, "could not record the failed run");
            }
            return self.report(job, run_id, request_ids, calls.counts(), Err(error));
        }
        let counts = calls.counts();
        // The platform says every account delivers nothing: an empty
        // answer is real, not a reason to hold the run.
        let paused = if !inactive.is_empty() && inactive.iter().all(Option::is_some) {
            Some(
                inactive
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        } else {
            None
        };
        let result = self
            .write(
                job,
                &run_id,
                parsed,
                request_ids.clone(),
                Some(counts),
                paused,
            )
            .await
            .map_err(|e| e.to_string());
        self.report(job, run_id, request_ids, counts, result)
    }

    fn report(
        &self,
        job: &Job,
        run_id: String,
        request_ids: Vec<String>,
        calls: CallCounts,
        result: std::result::Result<Landed, String>,
    ) -> JobReport {
        let (rows_written, rows_quarantined, version, error, held) = match result {
            Ok(l) => (l.rows_written, l.rows_quarantined, l.version, None, l.held),
            Err(e) => (0, 0, None, Some(e), None),
        };
        JobReport {
            run_id,
            client: job.client.id.clone(),
            source: job.source.kind,
            from: job.from,
            to: job.to,
            rows_written,
            rows_quarantined,
            version,
            request_ids,
            error,
            held,
            calls,
        }
    }

    /// Validates `parsed` and replaces the slice with the good records and
    /// the quarantine slice with the rejects, unless the shrink guard holds
    /// it. Unfinished runs of the slice are reconciled first.
    async fn write(
        &self,
        job: &Job,
        run_id: &str,
        parsed: Parsed,
        request_ids: Vec<String>,
        calls: Option<CallCounts>,
        paused: Option<String>,
    ) -> Result<Landed> {
        let kind = job.source.kind;
        let _in_flight = InFlight::enter(&self.in_flight, run_id);
        let skip = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match crate::lake::reconcile::reconcile_slice(
            &self.warehouse,
            &job.client.id,
            kind.as_str(),
            &skip,
        )
        .await
        {
            Ok(done) => {
                for r in done {
                    info!(client = %job.client.id, source = %kind, run_id = %r.run_id,
                        status = r.status.as_str(), "finished an interrupted run");
                }
            }
            Err(e) => warn!(client = %job.client.id, source = %kind, error = %e,
                "could not reconcile the unfinished runs of the slice"),
        }
        let rules = Rules {
            from: job.from,
            to: job.to,
            clicks_within_impressions: kind.clicks_within_impressions(),
        };
        if !parsed.unmapped.is_empty() {
            // Schema drift: fields the mapping does not read, ignored.
            let fields = parsed
                .unmapped
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            info!(
                client = %job.client.id, source = %kind, %run_id, %fields,
                "the payloads carry fields outside the mapping; they were ignored"
            );
        }
        let records_read = (parsed.records.len() + parsed.rejects.len()) as u64;
        let (good, mut rejects) = validate(parsed.records, &rules);
        rejects.splice(0..0, parsed.rejects);
        let good = merge(good);
        let quarantine = quarantine_batch(
            run_id,
            &job.client.id,
            kind.as_str(),
            (job.from, job.to),
            &rejects,
        )?;
        let lineage = Lineage::new(kind.lineage_source(), run_id);
        let table = kind.table();
        let batch = records_to_batch(table, &job.client.id, kind.source_value(), &good, &lineage)?;
        let quarantined = rejects.len() as u64;

        let before = guard::slice_totals(
            &self.warehouse,
            table,
            &job.client.id,
            kind.source_value(),
            (job.from, job.to),
        )
        .await?;
        let after = guard::batch_totals(table, &batch)?;
        if let Some(why) = &paused {
            info!(client = %job.client.id, source = %kind, %run_id, why = %why, "the platform reports the account inactive; its empty slice is applied");
        }
        let hold = guard::decide(
            before,
            after,
            quarantined,
            paused.is_some(),
            &job.source.shrink,
        );
        let mut agreed = None;
        if let Some(reason) = hold {
            agreed = self.agreeing_held_run(job, after).await?;
            if agreed.is_none() {
                let now = Utc::now();
                let record = RunRecord {
                    run_id: run_id.to_owned(),
                    client_id: job.client.id.clone(),
                    source: kind.as_str().to_owned(),
                    trigger: job.trigger,
                    date_from: job.from,
                    date_to: job.to,
                    started_at: now,
                    finished_at: now,
                    status: RunStatus::Held,
                    rows_read: records_read,
                    rows_written: 0,
                    rows_quarantined: quarantined,
                    target_table: table.name.to_owned(),
                    table_version: None,
                    source_request_ids: request_ids,
                    error: Some(reason.clone()),
                    calls,
                };
                // The row first: a process killed before the rows are
                // staged leaves a held run that asks to be fetched again,
                // never staged rows no run explains.
                append_run(&self.warehouse, &record).await?;
                crate::live::count_held_run(&job.client.id, kind.as_str());
                crate::lake::staged::put_data(&self.warehouse, &job.client.id, run_id, &batch)
                    .await?;
                crate::lake::staged::put_quarantine(
                    &self.warehouse,
                    &job.client.id,
                    run_id,
                    &quarantine,
                )
                .await?;
                crate::pause::point("held-staged").await;
                warn!(
                    client = %job.client.id, source = %kind, from = %job.from, to = %job.to,
                    %run_id, %reason,
                    "replace held by the shrink guard; the slice is unchanged \
                     (`adlake-ingest run --confirm-shrink RUN_ID` applies it)"
                );
                return Ok(Landed {
                    rows_written: 0,
                    rows_quarantined: quarantined,
                    version: None,
                    held: Some(reason),
                });
            }
        }
        let mut builder = WriteSliceBuilder::new(&self.warehouse, table);
        if let Some(calls) = calls {
            builder = builder.with_calls(calls);
        }
        let written = builder
            .with_client(job.client.id.clone())
            .with_source(kind.source_value())
            .with_run_source(kind.as_str())
            .with_date_range(job.from, job.to)
            .with_run(run_id)
            .with_trigger(job.trigger)
            .with_rows_quarantined(quarantined)
            .with_source_request_ids(request_ids)
            .with_started_record()
            .with_quarantine(quarantine)
            .execute(vec![batch])
            .await?;
        if let Some(held) = agreed {
            info!(client = %job.client.id, source = %kind, held_run = %held, %run_id,
                "this run's data agrees with a held run's: the shrink is applied");
            crate::lake::staged::remove(&self.warehouse, &job.client.id, &held).await;
        }
        info!(
            client = %job.client.id, source = %kind, from = %job.from, to = %job.to,
            rows = written.rows_written, quarantined, version = written.version,
            "slice landed"
        );
        Ok(Landed {
            rows_written: written.rows_written,
            rows_quarantined: quarantined,
            version: Some(written.version),
            held: None,
        })
    }

    /// A held run of the job's (client, source), not applied since, whose
    /// staged rows over the job's range have the totals `after`: a second
    /// fetch that agrees with the first, so the shrink is real.
    async fn agreeing_held_run(&self, job: &Job, after: guard::Totals) -> Result<Option<String>> {
        let source = job.source.kind.as_str();
        let latest = crate::lake::reconcile::latest_runs(
            crate::lake::reconcile::run_rows(&self.warehouse).await?,
        );
        let last_success = latest
            .values()
            .filter(|r| {
                r.client_id == job.client.id
                    && r.source == source
                    && r.status == RunStatus::Succeeded
            })
            .map(|r| r.finished_at)
            .max();
        let mut held: Vec<_> = latest
            .into_values()
            .filter(|r| {
                r.client_id == job.client.id
                    && r.source == source
                    && r.status == RunStatus::Held
                    && last_success.is_none_or(|t| r.finished_at > t)
            })
            .collect();
        held.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
        let table = job.source.kind.table();
        for run in held {
            let Some(staged) =
                crate::lake::staged::data(&self.warehouse, &job.client.id, &run.run_id).await?
            else {
                continue;
            };
            let within = within_dates(&staged, job.from, job.to)?;
            let totals = guard::batch_totals(table, &within)?;
            if totals.rows == after.rows && (totals.spend - after.spend).abs() < 1e-6 {
                return Ok(Some(run.run_id));
            }
        }
        Ok(None)
    }

    /// Applies the replace the shrink guard held for run `run_id`, from the
    /// rows staged when it was held (`adlake-ingest run --confirm-shrink`).
    /// The run keeps its id: its rows carry it, and `ingest_runs` gets its
    /// `started` and `succeeded` rows after the `held` one.
    pub async fn confirm_shrink(&self, run_id: &str) -> Result<JobReport> {
        let latest = crate::lake::reconcile::latest_runs(
            crate::lake::reconcile::run_rows(&self.warehouse).await?,
        );
        let run = latest
            .get(run_id)
            .ok_or_else(|| Error::Usage(format!("no run '{run_id}' in ingest_runs")))?;
        if run.status != RunStatus::Held {
            return Err(Error::Usage(format!(
                "run '{run_id}' is not held: its status is '{}'",
                run.status.as_str()
            )));
        }
        // Newer rows of the slice win over a held fetch: a later run that
        // landed over any of its dates (one that agreed with it, or a
        // re-run after a fix) makes it stale.
        if let Some(later) = latest.values().find(|r| {
            r.client_id == run.client_id
                && r.source == run.source
                && r.status == RunStatus::Succeeded
                && r.finished_at > run.finished_at
                && r.date_from <= run.date_to
                && run.date_from <= r.date_to
        }) {
            return Err(Error::Usage(format!(
                "run '{run_id}' is superseded: run '{}' landed {}..{} of the slice after it was held; \
                 nothing to confirm",
                later.run_id, later.date_from, later.date_to
            )));
        }
        let kind: SourceKind = run.source.parse()?;
        let data = crate::lake::staged::data(&self.warehouse, &run.client_id, run_id)
            .await?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "the held rows of run '{run_id}' are no longer staged under {}/; run the job again",
                    crate::lake::staged::STAGED_PREFIX
                ))
            })?;
        let quarantine =
            match crate::lake::staged::quarantine(&self.warehouse, &run.client_id, run_id).await? {
                Some(q) => q,
                None => quarantine_batch(
                    run_id,
                    &run.client_id,
                    kind.as_str(),
                    (run.date_from, run.date_to),
                    &[],
                )?,
            };
        let trigger = crate::lake::reconcile::parse_trigger(&run.trigger);
        let written = WriteSliceBuilder::new(&self.warehouse, kind.table())
            .with_client(run.client_id.clone())
            .with_source(kind.source_value())
            .with_run_source(kind.as_str())
            .with_date_range(run.date_from, run.date_to)
            .with_run(run_id)
            .with_trigger(trigger)
            .with_rows_quarantined(run.rows_quarantined)
            .with_started_record()
            .with_quarantine(quarantine)
            .execute(vec![data])
            .await?;
        info!(client = %run.client_id, source = %kind, %run_id, version = written.version,
            rows = written.rows_written, "held replace confirmed and applied");
        Ok(JobReport {
            run_id: run_id.to_owned(),
            client: run.client_id.clone(),
            source: kind,
            from: run.date_from,
            to: run.date_to,
            rows_written: written.rows_written,
            rows_quarantined: run.rows_quarantined,
            version: Some(written.version),
            request_ids: Vec::new(),
            error: None,
            held: None,
            calls: CallCounts::default(),
        })
    }

    /// Ingests saved payload files (JSON API payloads, or CSV exports when
    /// the name ends in `.csv`) of `kind` for `client` (account from
    /// `account`, or the source's first configured account). The slice is
    /// the range of dates the good records cover.
    pub async fn ingest_files(
        &self,
        client: &ClientConfig,
        source: &SourceConfig,
        account: Option<&str>,
        paths: &[PathBuf],
    ) -> Result<JobReport> {
        let account = account
            .map(str::to_owned)
            .or_else(|| source.accounts.first().cloned())
            .ok_or_else(|| Error::InvalidConfig("an account id is required".to_owned()))?;
        let ctx = self.parse_context(source, &account);
        let mut parsed = Parsed::default();
        for path in paths {
            let body = std::fs::read(path).map_err(|e| {
                Error::InvalidConfig(format!("cannot read '{}': {e}", path.display()))
            })?;
            let csv = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            let one = if csv {
                connectors::parse_csv_export(source.kind, &body, &ctx)
            } else {
                connectors::parse_payload(source.kind, &body, &ctx)
            };
            let one =
                one.map_err(|m| Error::InvalidConfig(format!("'{}': {m}", path.display())))?;
            parsed.extend(one);
        }
        let dates: BTreeSet<NaiveDate> = parsed.records.iter().map(Record::date).collect();
        let (Some(from), Some(to)) = (dates.first().copied(), dates.last().copied()) else {
            // Nothing to write: the slice is held, and every distinct reason
            // is named so the user can fix the files or the configuration.
            let mut why: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &parsed.rejects {
                *why.entry(r.reason.as_str()).or_default() += 1;
            }
            let why = if why.is_empty() {
                "the files hold no records".to_owned()
            } else {
                why.iter()
                    .map(|(reason, n)| format!("{n}x {reason}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(Error::InvalidConfig(format!(
                "no usable record in the files ({} rejected: {why})",
                parsed.rejects.len(),
            )));
        };
        let job = Job {
            client: client.clone(),
            source: source.clone(),
            from,
            to,
            trigger: Trigger::File,
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let ids = paths
            .iter()
            .map(|p| format!("file:{}", p.display()))
            .collect::<Vec<_>>();
        let result = self
            .write(&job, &run_id, parsed, ids.clone(), None, None)
            .await;
        match result {
            Ok(r) => Ok(self.report(&job, run_id, ids, CallCounts::default(), Ok(r))),
            Err(e) => Err(e),
        }
    }

    /// Runs the schedule: every `tick`, each client whose local time has
    /// passed `run_at` and whose yesterday has not landed yet gets its due
    /// jobs run. `run_at` should leave the platforms time to settle the day
    /// and the jobs time to finish before 08:00 client-local. Stops after
    /// `max_ticks` ticks when given.
    pub async fn worker(
        &self,
        config: &Config,
        run_at: NaiveTime,
        tick: Duration,
        max_ticks: Option<u64>,
    ) -> Vec<JobReport> {
        let mut landed: HashMap<(String, SourceKind), NaiveDate> = HashMap::new();
        let mut rates_landed: Option<NaiveDate> = None;
        let mut all = Vec::new();
        let mut ticks = 0u64;
        loop {
            let due = worker_due(config, Utc::now(), run_at, &landed);
            if !due.is_empty() {
                info!(jobs = due.len(), "running due jobs");
            }
            for report in self.run_jobs(due).await {
                if report.succeeded() {
                    landed.insert((report.client.clone(), report.source), report.to);
                }
                all.push(report);
            }
            if config.fx.is_some() && rates_landed != Some(cli::fx_until(config)) {
                match cli::scheduled_fx(config, self).await {
                    Some(Ok(r)) => {
                        info!(run = %r.run_id, from = %r.from, to = %r.to, rows = r.rows_written, "fx_rates landed");
                        rates_landed = Some(r.to);
                    }
                    Some(Err(e)) => warn!(error = %e, "fx_rates pull failed; retried next tick"),
                    None => {}
                }
            }
            ticks += 1;
            if max_ticks.is_some_and(|m| ticks >= m) {
                return all;
            }
            tokio::time::sleep(tick).await;
        }
    }
}

/// A run in [`Ingestor::in_flight`] while this lives.
struct InFlight<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    run_id: String,
}

impl<'a> InFlight<'a> {
    fn enter(set: &'a std::sync::Mutex<std::collections::HashSet<String>>, run_id: &str) -> Self {
        set.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run_id.to_owned());
        Self {
            set,
            run_id: run_id.to_owned(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.run_id);
    }
}

/// The rows of `batch` dated `from..=to`.
fn within_dates(
    batch: &arrow::array::RecordBatch,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{Array, AsArray};
    let Some(dates) = batch.column_by_name(adlake_engine::schema::DATE) else {
        return Ok(batch.clone());
    };
    let dates = dates.as_primitive::<arrow::datatypes::Date32Type>();
    let (from, to) = (
        crate::dates::date_to_epoch_day(from),
        crate::dates::date_to_epoch_day(to),
    );
    let keep: arrow::array::BooleanArray = (0..dates.len())
        .map(|i| Some(dates.is_valid(i) && (from..=to).contains(&dates.value(i))))
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// Merges ad rows with the same key (hourly rows into days); other records
/// pass through.
fn merge(records: Vec<Record>) -> Vec<Record> {
    let (ads, other): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| matches!(r, Record::Ad(_)));
    let ads = ads
        .into_iter()
        .filter_map(|r| match r {
            Record::Ad(a) => Some(a),
            _ => None,
        })
        .collect();
    merge_ad_rows(ads)
        .into_iter()
        .map(Record::Ad)
        .chain(other)
        .collect()
}

#[cfg(test)]
mod tests;
