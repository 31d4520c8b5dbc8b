//! Exchange rates for `fx_rates`: the European Central Bank's daily euro
//! reference rates as a scheduled source, and an agency's own rates from a
//! file. The metric layer converts money with them (`reporting_currency`).
//!
//! **The ECB source** asks the ECB Data Portal's SDMX API for the daily
//! reference rates, `GET {endpoint}/service/data/EXR/D.{currencies}.EUR.SP00.A
//! ?startPeriod=…&endPeriod=…&format=csvdata`, one CSV row per currency and
//! day (`CURRENCY`, `CURRENCY_DENOM` = `EUR`, `TIME_PERIOD`, `OBS_VALUE`:
//! units of the currency for one euro). It needs no credentials. Calls go
//! through the shared [`HttpClient`] (retries, breaker, metrics) as source
//! `_global/ecb`.
//!
//! **Files** (`adlake-ingest file --table fx_rates FILE…`) may be the same
//! SDMX CSV, the ECB's `eurofxref-hist.csv` (a `Date` column, then one
//! column per currency, `N/A` where none was published), or an agency's
//! own rates as `date,base,quote,rate` (1 base = rate quote).
//!
//! **The rule for a day**, applied when rates are written so that the
//! table holds a rate for every day a query may convert:
//! - a pair's rate on a day is the one observed that day, else the latest
//!   earlier one at most `max_age_days` old (weekends and TARGET holidays:
//!   the ECB publishes on business days only). Past that the day has no
//!   rate, and a query converting it fails with an error that names the
//!   currency and the date;
//! - every observed rate also gives its inverse;
//! - any two currencies quoted against the euro get their cross rate
//!   through it, `A→B = (EUR→B) / (EUR→A)`, unless the pair was observed
//!   itself.
//!
//! **Writes overlay, they never drop a pair.** A write of `from..=to`
//! keeps the stored rates of those days for pairs it does not carry and
//! replaces the ones it does, in one slice replace of `fx_rates` with its
//! `ingest_runs` row (client `_global`). Re-running a pull gives the same
//! table; a day filled from an earlier rate is replaced by the published
//! one when a later pull (the lookback) sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use adlake_engine::schema::FX_RATES;
use arrow::array::{
    Array, AsArray, Date32Builder, Float64Builder, RecordBatch, StringBuilder, StringViewArray,
};
use arrow::datatypes::{Date32Type, Float64Type};
use chrono::{Days, NaiveDate};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;

use crate::dates::{date_to_epoch_day, epoch_day_to_date};
use crate::error::{Error, Result};
use crate::lake::warehouse::Warehouse;
use crate::lake::writer::{Trigger, WriteSliceBuilder};
use crate::sources::http::{Call, Credentials, HttpClient, Target, classify_status};

/// The ECB Data Portal's API.
pub const ECB_ENDPOINT: &str = "https://data-api.ecb.europa.eu";

/// The source named in `ingest_runs` and in the HTTP metrics.
pub const ECB_SOURCE: &str = "ecb";

/// The source named in `ingest_runs` for rates read from files.
pub const FILE_SOURCE: &str = "fx_file";

/// Default oldest rate a day without one may take: covers the ECB's
/// longest closures (Good Friday to Easter Monday, 25 December to the
/// following Monday).
pub const DEFAULT_MAX_AGE_DAYS: u32 = 5;

/// Default days before the last one that every scheduled pull re-reads, so
/// a day filled before its rate was published gets the published rate.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 7;

/// Most days `adlake-ingest fx` pulls and writes at once; a longer range
/// is pulled a year at a time.
pub const MAX_PULL_DAYS: u64 = 366;

/// The `[fx]` table of the ingest configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FxConfig {
    /// The API base URL (default [`ECB_ENDPOINT`]).
    pub endpoint: String,
    /// Currencies to ask for (empty: every one the ECB publishes).
    pub currencies: Vec<String>,
    /// Oldest rate a day without one may take.
    pub max_age_days: u32,
    /// Days re-read before the last one on every scheduled pull.
    pub lookback_days: u32,
}

impl Default for FxConfig {
    fn default() -> Self {
        Self {
            endpoint: ECB_ENDPOINT.to_owned(),
            currencies: Vec::new(),
            max_age_days: DEFAULT_MAX_AGE_DAYS,
            lookback_days: DEFAULT_LOOKBACK_DAYS,
        }
    }
}

/// One rate: 1 `base` = `rate` `quote` on `date`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// The day.
    pub date: NaiveDate,
    /// The currency priced.
    pub base: String,
    /// The currency it is priced in.
    pub quote: String,
    /// Units of `quote` for one `base`.
    pub rate: f64,
}

/// What a rates write did.
#[derive(Debug, Clone, PartialEq)]
pub struct FxReport {
    /// The run id.
    pub run_id: String,
    /// First date written.
    pub from: NaiveDate,
    /// Last date written.
    pub to: NaiveDate,
    /// Rates read from the source (observations).
    pub observed: usize,
    /// Rows of `fx_rates` for the range after the write.
    pub rows_written: u64,
    /// The Delta version written.
    pub version: u64,
    /// Days of the range for which no rate could be given (the source had
    /// none within `max_age_days` before them).
    pub days_without_rates: Vec<NaiveDate>,
}

fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn bad(line: usize, message: impl std::fmt::Display) -> String {
    format!("line {line}: {message}")
}

/// A rate as written: a positive, finite number. `None` for the ECB's
/// markers of a day without an observation (empty, `N/A`, `NaN`).
fn rate_value(text: &str, line: usize) -> std::result::Result<Option<f64>, String> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("n/a") || t.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
        _ => Err(bad(line, format!("rate '{t}' is not a positive number"))),
    }
}

fn date_value(text: &str, line: usize) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| bad(line, format!("date '{}' is not YYYY-MM-DD", text.trim())))
}

fn currency_value(text: &str, line: usize, column: &str) -> std::result::Result<String, String> {
    let t = text.trim().to_ascii_uppercase();
    if is_currency(&t) {
        Ok(t)
    } else {
        Err(bad(
            line,
            format!(
                "{column} '{}' is not a three-letter currency code",
                text.trim()
            ),
        ))
    }
}

/// Reads rates from a body in any of the three formats (see the module
/// documentation), told apart by the header row. Columns it does not read
/// are ignored; a row it cannot read is an error naming its line.
pub fn parse(body: &[u8]) -> std::result::Result<Vec<Rate>, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .iter()
        .map(|h| h.trim().to_ascii_uppercase())
        .collect();
    let find = |name: &str| header.iter().position(|h| h == name);
    let mut rates = Vec::new();
    if let (Some(cur), Some(denom), Some(time), Some(value)) = (
        find("CURRENCY"),
        find("CURRENCY_DENOM"),
        find("TIME_PERIOD"),
        find("OBS_VALUE"),
    ) {
        // SDMX csvdata of the EXR dataflow.
        let freq = find("FREQ");
        for (i, row) in reader.records().enumerate() {
            let line = i + 2;
            let row = row.map_err(|e| bad(line, e))?;
            let field = |c: usize| row.get(c).unwrap_or("");
            if let Some(f) = freq
                && !field(f).is_empty()
                && field(f) != "D"
            {
                return Err(bad(
                    line,
                    format!(
                        "FREQ '{}' is not daily (ask for the D series: EXR/D.….EUR.SP00.A)",
                        field(f)
                    ),
                ));
            }
            let Some(rate) = rate_value(field(value), line)? else {
                continue;
            };
            rates.push(Rate {
                date: date_value(field(time), line)?,
                base: currency_value(field(denom), line, "CURRENCY_DENOM")?,
                quote: currency_value(field(cur), line, "CURRENCY")?,
                rate,
            });
        }
    } else if let (Some(date), Some(base), Some(quote), Some(value)) =
        (find("DATE"), find("BASE"), find("QUOTE"), find("RATE"))
    {
        // An agency's own rates.
        for (i, row) in reader.records().enumerate() {
            let line = i + 2;
            let row = row.map_err(|e| bad(line, e))?;
            let field = |c: usize| row.get(c).unwrap_or("");
            if row.iter().all(str::is_empty) {
                continue;
            }
            let rate =
                rate_value(field(value), line)?.ok_or_else(|| bad(line, "the rate is empty"))?;
            rates.push(Rate {
                date: date_value(field(date), line)?,
                base: currency_value(field(base), line, "base")?,
                quote: currency_value(field(quote), line, "quote")?,
                rate,
            });
        }
    } else if header.first().map(String::as_str) == Some("DATE") {
        // eurofxref-hist.csv: one column per currency, rates per euro; the
        // file ends each line with a comma (an empty last column).
        let columns: Vec<(usize, String)> = header
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| {
                if is_currency(h) {
                    Ok((i, h.clone()))
                } else {
                    Err(format!(
                        "header column '{h}' is not a three-letter currency code"
                    ))
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        for (i, row) in reader.records().enumerate() {
            let line = i + 2;
            let row = row.map_err(|e| bad(line, e))?;
            if row.iter().all(str::is_empty) {
                continue;
            }
            let date = date_value(row.get(0).unwrap_or(""), line)?;
            for (c, currency) in &columns {
                if let Some(rate) = rate_value(row.get(*c).unwrap_or(""), line)? {
                    rates.push(Rate {
                        date,
                        base: "EUR".to_owned(),
                        quote: currency.clone(),
                        rate,
                    });
                }
            }
        }
    } else {
        return Err(format!(
            "unknown rates format: the header row must be the ECB's SDMX CSV (CURRENCY, \
             CURRENCY_DENOM, TIME_PERIOD, OBS_VALUE), the ECB's eurofxref CSV (Date, then one \
             column per currency) or date,base,quote,rate; got '{}'",
            header.join(",")
        ));
    }
    Ok(rates)
}

/// Every rate of `from..=to` that `observed` gives under the rule of the
/// module documentation, sorted by date, base and quote; and the days of
/// the range that got no rate at all.
pub fn complete(
    observed: &[Rate],
    from: NaiveDate,
    to: NaiveDate,
    max_age_days: u32,
) -> (Vec<Rate>, Vec<NaiveDate>) {
    // Observations per pair and day, with inverses; an observed pair wins
    // over the inverse of its opposite.
    let mut direct: BTreeMap<(String, String), BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for r in observed.iter().filter(|r| r.base != r.quote) {
        direct
            .entry((r.base.clone(), r.quote.clone()))
            .or_default()
            .insert(r.date, r.rate);
    }
    let mut pairs = direct.clone();
    for ((base, quote), days) in &direct {
        let inverse = pairs.entry((quote.clone(), base.clone())).or_default();
        for (day, rate) in days {
            let observed_itself = direct
                .get(&(quote.clone(), base.clone()))
                .is_some_and(|d| d.contains_key(day));
            if !observed_itself {
                inverse.insert(*day, 1.0 / rate);
            }
        }
    }
    let mut out = Vec::new();
    let mut empty_days = Vec::new();
    let mut day = from;
    while day <= to {
        let oldest = day
            .checked_sub_days(Days::new(u64::from(max_age_days)))
            .unwrap_or(NaiveDate::MIN);
        let mut today: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (pair, days) in &pairs {
            if let Some((_, rate)) = days.range(oldest..=day).next_back() {
                today.insert(pair.clone(), *rate);
            }
        }
        let per_euro: BTreeMap<String, f64> = today
            .iter()
            .filter(|((base, _), _)| base == "EUR")
            .map(|((_, quote), rate)| (quote.clone(), *rate))
            .collect();
        for (a, per_a) in &per_euro {
            for (b, per_b) in &per_euro {
                if a != b {
                    today.entry((a.clone(), b.clone())).or_insert(per_b / per_a);
                }
            }
        }
        if today.is_empty() {
            empty_days.push(day);
        }
        out.extend(today.into_iter().map(|((base, quote), rate)| Rate {
            date: day,
            base,
            quote,
            rate,
        }));
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    (out, empty_days)
}

/// The SDMX request of `currencies` (all when empty) over `from..=to`.
pub fn ecb_url(endpoint: &str, currencies: &[String], from: NaiveDate, to: NaiveDate) -> String {
    format!(
        "{}/service/data/EXR/D.{}.EUR.SP00.A?startPeriod={from}&endPeriod={to}&format=csvdata",
        endpoint.trim_end_matches('/'),
        currencies.join("+")
    )
}

/// Pulls the ECB's rates for `from..=to` (and the `max_age_days` before,
/// to fill the first days) and writes them.
pub async fn pull_ecb(
    warehouse: &Warehouse,
    http: &Arc<HttpClient>,
    config: &FxConfig,
    from: NaiveDate,
    to: NaiveDate,
    trigger: Trigger,
) -> Result<FxReport> {
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let since = from
        .checked_sub_days(Days::new(u64::from(config.max_age_days)))
        .unwrap_or(from);
    let url = ecb_url(&config.endpoint, &config.currencies, since, to);
    let source_key = format!("_global/{ECB_SOURCE}");
    let creds = Credentials::default();
    let target = Target {
        source_key: &source_key,
        platform: ECB_SOURCE,
        cred_key: ECB_SOURCE,
        creds: &creds,
        run: None,
    };
    let call = Call::get(url.clone()).header("Accept", "text/csv");
    let reply = http
        .send_for(&target, &call, |reply| {
            // The API answers 404 "No results found" for a range without a
            // business day (a weekend): no rates, not a failure.
            if reply.status.as_u16() == 404 {
                crate::sources::http::Verdict::Ok
            } else {
                classify_status(reply)
            }
        })
        .await
        .map_err(|e| Error::Fetch(e.to_string()))?;
    let observed = if reply.status.as_u16() == 404 {
        Vec::new()
    } else {
        parse(&reply.body).map_err(|m| Error::Fetch(format!("{source_key}: {url}: {m}")))?
    };
    let ids = vec![reply.request_id.unwrap_or(url)];
    write(
        warehouse,
        &observed,
        from,
        to,
        config.max_age_days,
        ECB_SOURCE,
        trigger,
        ids,
    )
    .await
}

/// Reads rate files and writes the range they cover.
pub async fn ingest_files(
    warehouse: &Warehouse,
    paths: &[std::path::PathBuf],
    max_age_days: u32,
) -> Result<FxReport> {
    let mut observed = Vec::new();
    for path in paths {
        let body = std::fs::read(path)
            .map_err(|e| Error::Usage(format!("cannot read '{}': {e}", path.display())))?;
        observed
            .extend(parse(&body).map_err(|m| Error::Usage(format!("'{}': {m}", path.display())))?);
    }
    let dates: BTreeSet<NaiveDate> = observed.iter().map(|r| r.date).collect();
    let (Some(from), Some(to)) = (dates.first().copied(), dates.last().copied()) else {
        return Err(Error::Usage(
            "the files hold no rate; nothing was changed".to_owned(),
        ));
    };
    let ids = paths
        .iter()
        .map(|p| format!("file:{}", p.display()))
        .collect();
    write(
        warehouse,
        &observed,
        from,
        to,
        max_age_days,
        FILE_SOURCE,
        Trigger::File,
        ids,
    )
    .await
}

/// The stored rates of `from..=to`.
async fn stored(warehouse: &Warehouse, from: NaiveDate, to: NaiveDate) -> Result<Vec<Rate>> {
    let table = warehouse.open_table(&FX_RATES).await?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(col("date").between(
            lit(ScalarValue::Date32(Some(date_to_epoch_day(from)))),
            lit(ScalarValue::Date32(Some(date_to_epoch_day(to)))),
        ))?
        .select_columns(&["date", "base", "quote", "rate"])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let dates = b.column(0).as_primitive::<Date32Type>();
        let text = |c: usize| -> Result<Vec<String>> {
            let column = b.column(c);
            let cast = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8View)?;
            let view: &StringViewArray = cast.as_string_view();
            Ok((0..view.len()).map(|i| view.value(i).to_owned()).collect())
        };
        let (bases, quotes) = (text(1)?, text(2)?);
        let rates = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push(Rate {
                date: epoch_day_to_date(dates.value(i)).ok_or_else(|| Error::Input {
                    table: "fx_rates",
                    message: format!("stored day {} is out of range", dates.value(i)),
                })?,
                base: bases[i].clone(),
                quote: quotes[i].clone(),
                rate: rates.value(i),
            });
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn write(
    warehouse: &Warehouse,
    observed: &[Rate],
    from: NaiveDate,
    to: NaiveDate,
    max_age_days: u32,
    run_source: &str,
    trigger: Trigger,
    request_ids: Vec<String>,
) -> Result<FxReport> {
    let (fresh, days_without_rates) = complete(observed, from, to, max_age_days);
    if fresh.is_empty() {
        return Err(Error::Fetch(format!(
            "no rate for any day of {from}..{to} (none observed within {max_age_days} days              before them); fx_rates is unchanged"
        )));
    }
    let given: BTreeSet<(NaiveDate, &str, &str)> = fresh
        .iter()
        .map(|r| (r.date, r.base.as_str(), r.quote.as_str()))
        .collect();
    let mut rows: Vec<Rate> = stored(warehouse, from, to)
        .await?
        .into_iter()
        .filter(|r| !given.contains(&(r.date, r.base.as_str(), r.quote.as_str())))
        .collect();
    rows.extend(fresh.iter().cloned());
    rows.sort_by(|a, b| (a.date, &a.base, &a.quote).cmp(&(b.date, &b.base, &b.quote)));
    let run_id = uuid::Uuid::now_v7().to_string();
    let written = WriteSliceBuilder::new(warehouse, &FX_RATES)
        .with_date_range(from, to)
        .with_run_source(run_source)
        .with_run(run_id.clone())
        .with_trigger(trigger)
        .with_source_request_ids(request_ids)
        .execute(batch(&rows)?)
        .await?;
    Ok(FxReport {
        run_id,
        from,
        to,
        observed: observed.len(),
        rows_written: written.rows_written,
        version: written.version,
        days_without_rates,
    })
}

fn batch(rows: &[Rate]) -> Result<Vec<RecordBatch>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut date = Date32Builder::with_capacity(rows.len());
    let mut base = StringBuilder::new();
    let mut quote = StringBuilder::new();
    let mut rate = Float64Builder::with_capacity(rows.len());
    for r in rows {
        date.append_value(date_to_epoch_day(r.date));
        base.append_value(&r.base);
        quote.append_value(&r.quote);
        rate.append_value(r.rate);
    }
    Ok(vec![RecordBatch::try_new(
        FX_RATES.schema(),
        vec![
            Arc::new(date.finish()),
            Arc::new(base.finish()),
            Arc::new(quote.finish()),
            Arc::new(rate.finish()),
        ],
    )?])
}

#[cfg(test)]
mod tests;
