use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/fx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn rate_of(rates: &[Rate], date: &str, base: &str, quote: &str) -> Option<f64> {
    rates
        .iter()
        .find(|r| r.date == d(date) && r.base == base && r.quote == quote)
        .map(|r| r.rate)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

const ECB: &str = "ecb_exr_daily_2024-03-25_2024-04-05.csv";

#[test]
fn the_ecb_sdmx_csv_is_read_as_rates_per_euro() {
    let rates = parse(&fixture(ECB)).unwrap();
    // 8 currencies x 8 business days (no Good Friday, no Easter Monday).
    assert_eq!(rates.len(), 64);
    assert!(rates.iter().all(|r| r.base == "EUR"));
    assert_eq!(rate_of(&rates, "2024-03-28", "EUR", "USD"), Some(1.0811));
    assert_eq!(rate_of(&rates, "2024-04-05", "EUR", "JPY"), Some(164.15));
    assert_eq!(rate_of(&rates, "2024-03-29", "EUR", "USD"), None);
}

#[test]
fn the_eurofxref_download_is_read_with_its_gaps_and_trailing_commas() {
    let rates = parse(&fixture("eurofxref-hist_2024-04-03_2024-04-05.csv")).unwrap();
    // USD, JPY, BGN, GBP on three days; CYP is N/A throughout.
    assert_eq!(rates.len(), 12);
    assert_eq!(rate_of(&rates, "2024-04-04", "EUR", "GBP"), Some(0.8562));
    assert!(rates.iter().all(|r| r.quote != "CYP"));
}

#[test]
fn an_agencys_own_rates_are_read_in_any_column_order() {
    let body =
        b"rate,quote,base,date,note\n1.25,USD,GBP,2024-04-02,contract\n\n0.8,gbp,usd,2024-04-02,\n";
    let rates = parse(body).unwrap();
    assert_eq!(
        rates,
        vec![
            Rate {
                date: d("2024-04-02"),
                base: "GBP".into(),
                quote: "USD".into(),
                rate: 1.25
            },
            Rate {
                date: d("2024-04-02"),
                base: "USD".into(),
                quote: "GBP".into(),
                rate: 0.8
            },
        ]
    );
}

#[test]
fn unreadable_rates_are_refused_with_the_line_that_is_wrong() {
    let cases: [(&[u8], &str); 7] = [
        (b"date,base,quote,rate\n2024-04-02,GBP,USD,-1\n", "line 2: rate '-1'"),
        (b"date,base,quote,rate\n2024-04-02,GBP,USD,\n", "line 2: the rate is empty"),
        (b"date,base,quote,rate\n2024-04-02,GBP,USD,1.2\n02/04/2024,GBP,USD,1.2\n", "line 3: date '02/04/2024'"),
        (b"date,base,quote,rate\n2024-04-02,POUND,USD,1.2\n", "base 'POUND'"),
        (b"Date,USD,Euro\n", "header column 'EURO'"),
        (b"day,from,to,value\n", "unknown rates format"),
        (
            b"KEY,FREQ,CURRENCY,CURRENCY_DENOM,TIME_PERIOD,OBS_VALUE\nEXR.M.USD.EUR.SP00.A,M,USD,EUR,2024-03,1.08\n",
            "FREQ 'M' is not daily",
        ),
    ];
    for (body, want) in cases {
        let err = parse(body).unwrap_err();
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

#[test]
fn a_day_without_a_published_rate_takes_the_latest_earlier_one_within_the_age_limit() {
    let observed = parse(&fixture(ECB)).unwrap();
    let (rates, empty) = complete(&observed, d("2024-03-28"), d("2024-04-02"), 5);
    assert!(empty.is_empty());
    // Good Friday, the weekend and Easter Monday take Thursday's rate.
    for day in ["2024-03-29", "2024-03-30", "2024-03-31", "2024-04-01"] {
        assert_eq!(rate_of(&rates, day, "EUR", "USD"), Some(1.0811), "{day}");
    }
    assert_eq!(rate_of(&rates, "2024-04-02", "EUR", "USD"), Some(1.0766));
    // With at most three days, Easter Monday (four days after Thursday)
    // has no rate at all.
    let (rates, empty) = complete(&observed, d("2024-03-28"), d("2024-04-02"), 3);
    assert_eq!(empty, vec![d("2024-04-01")]);
    assert_eq!(rate_of(&rates, "2024-04-01", "EUR", "USD"), None);
    assert_eq!(rate_of(&rates, "2024-03-31", "EUR", "USD"), Some(1.0811));
    // Before the first observation there is nothing to carry.
    let (_, empty) = complete(&observed, d("2024-03-23"), d("2024-03-25"), 5);
    assert_eq!(empty, vec![d("2024-03-23"), d("2024-03-24")]);
}

#[test]
fn every_pair_gets_its_inverse_and_cross_rates_go_through_the_euro() {
    let observed = parse(&fixture(ECB)).unwrap();
    let (rates, _) = complete(&observed, d("2024-03-28"), d("2024-03-28"), 5);
    // EUR plus eight currencies: 9 x 8 ordered pairs.
    assert_eq!(rates.len(), 72);
    let usd = 1.0811;
    let gbp = 0.85553;
    let jpy = 163.45;
    let get = |b: &str, q: &str| rate_of(&rates, "2024-03-28", b, q).unwrap();
    assert!(close(get("USD", "EUR"), 1.0 / usd));
    assert!(close(get("GBP", "USD"), usd / gbp));
    assert!(close(get("USD", "GBP"), gbp / usd));
    assert!(close(get("JPY", "GBP"), gbp / jpy));
    // Round trips are exact to floating point.
    assert!(close(get("GBP", "USD") * get("USD", "GBP"), 1.0));
}

#[test]
fn an_observed_pair_wins_over_its_inverse_and_over_a_cross_rate() {
    let observed = vec![
        Rate {
            date: d("2024-04-02"),
            base: "EUR".into(),
            quote: "USD".into(),
            rate: 1.08,
        },
        Rate {
            date: d("2024-04-02"),
            base: "EUR".into(),
            quote: "GBP".into(),
            rate: 0.86,
        },
        Rate {
            date: d("2024-04-02"),
            base: "GBP".into(),
            quote: "USD".into(),
            rate: 1.3,
        },
        Rate {
            date: d("2024-04-02"),
            base: "USD".into(),
            quote: "GBP".into(),
            rate: 0.75,
        },
    ];
    let (rates, _) = complete(&observed, d("2024-04-02"), d("2024-04-02"), 5);
    assert_eq!(rate_of(&rates, "2024-04-02", "GBP", "USD"), Some(1.3));
    assert_eq!(rate_of(&rates, "2024-04-02", "USD", "GBP"), Some(0.75));
    assert!(close(
        rate_of(&rates, "2024-04-02", "USD", "EUR").unwrap(),
        1.0 / 1.08
    ));
}

fn warehouse() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    (dir, warehouse)
}

fn write_file(dir: &std::path::Path, name: &str, body: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn a_write_overlays_the_stored_rates_and_never_drops_a_pair() {
    let (dir, wh) = warehouse();
    let ecb = write_file(dir.path(), "ecb.csv", &fixture(ECB));
    let first = ingest_files(&wh, std::slice::from_ref(&ecb), 5)
        .await
        .unwrap();
    assert_eq!((first.from, first.to), (d("2024-03-25"), d("2024-04-05")));
    // 12 days x 72 pairs.
    assert_eq!(first.rows_written, 864);
    assert!(first.days_without_rates.is_empty());

    // An agency's contract rate for one pair and day, and a currency the
    // ECB does not carry: the other pairs of that day stay.
    let own = write_file(
        dir.path(),
        "own.csv",
        b"date,base,quote,rate\n2024-04-02,GBP,USD,1.3\n2024-04-02,AED,USD,0.2723\n",
    );
    let second = ingest_files(&wh, &[own], 5).await.unwrap();
    assert_eq!((second.from, second.to), (d("2024-04-02"), d("2024-04-02")));
    // 72 ECB pairs, GBP→USD replaced, plus AED→USD and USD→AED.
    assert_eq!(second.rows_written, 74);
    let day = stored(&wh, d("2024-04-02"), d("2024-04-02")).await.unwrap();
    assert_eq!(rate_of(&day, "2024-04-02", "GBP", "USD"), Some(1.3));
    assert!(close(
        rate_of(&day, "2024-04-02", "USD", "AED").unwrap(),
        1.0 / 0.2723
    ));
    assert_eq!(rate_of(&day, "2024-04-02", "EUR", "USD"), Some(1.0766));
    let all = stored(&wh, d("2024-03-01"), d("2024-04-30")).await.unwrap();
    assert_eq!(all.len(), 866);

    // Re-running the ECB file gives the ECB's rates back, the AED pairs
    // (which it does not carry) stay.
    ingest_files(&wh, &[ecb], 5).await.unwrap();
    let day = stored(&wh, d("2024-04-02"), d("2024-04-02")).await.unwrap();
    assert!(close(
        rate_of(&day, "2024-04-02", "GBP", "USD").unwrap(),
        1.0766 / 0.85403
    ));
    assert_eq!(day.len(), 74);
}

#[tokio::test]
async fn a_file_without_rates_changes_nothing() {
    let (dir, wh) = warehouse();
    let empty = write_file(dir.path(), "empty.csv", b"date,base,quote,rate\n");
    let err = ingest_files(&wh, &[empty], 5).await.unwrap_err();
    assert!(err.to_string().contains("no rate"), "{err}");
    assert!(wh.open_table(&FX_RATES).await.unwrap().version().is_none());
}
