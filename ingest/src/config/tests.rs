use std::path::Path;

use super::*;

const GOOD: &str = r#"warehouse = "/tmp/wh"

[[client]]
id = "northwind"
time_zone = "America/New_York"
currency = "USD"

[[client.source]]
platform = "google_ads"
accounts = ["123-456-7890"]
credentials = "nw-google"

[[client.source]]
platform = "tiktok_ads"
accounts = ["872746382648"]
credentials = "nw-tiktok"
currency = "USD"
lookback_days = 3
endpoint = "http://127.0.0.1:9/"
"#;

fn error_of(text: &str) -> ConfigError {
    Config::parse(text, Path::new("clients.toml")).unwrap_err()
}

#[test]
fn loads_a_good_file() {
    let c = Config::parse(GOOD, Path::new("clients.toml")).unwrap();
    assert_eq!(c.warehouse.as_deref(), Some("/tmp/wh"));
    let nw = c.client("northwind").unwrap();
    assert_eq!(nw.time_zone, chrono_tz::America::New_York);
    assert_eq!(nw.sources[0].lookback_days, DEFAULT_LOOKBACK_DAYS);
    assert_eq!(nw.sources[0].endpoint, "https://googleads.googleapis.com");
    assert_eq!(nw.sources[1].lookback_days, 3);
    assert_eq!(nw.sources[1].endpoint, "http://127.0.0.1:9");
}

#[test]
fn errors_name_the_wrong_line() {
    let cases = [
        (
            "time_zone = \"America/New_York\"",
            "time_zone = \"Mars/Base\"",
            5,
            "unknown time zone 'Mars/Base'",
        ),
        (
            "currency = \"USD\"\n\n[[client.source]]\nplatform = \"google_ads\"",
            "currency = \"USX\"\n\n[[client.source]]\nplatform = \"google_ads\"",
            6,
            "unknown currency 'USX'",
        ),
        (
            "platform = \"google_ads\"",
            "platform = \"bing\"",
            9,
            "unknown platform 'bing'",
        ),
        (
            "lookback_days = 3",
            "lookback_days = 365",
            18,
            "lookback_days must be at most 90",
        ),
        (
            "lookback_days = 3",
            "lookback_days = \"3\"",
            18,
            "invalid type",
        ),
        (
            "lookback_days = 3",
            "lookbak_days = 3",
            18,
            "unknown field `lookbak_days`",
        ),
        (
            "accounts = [\"872746382648\"]",
            "accounts = []",
            15,
            "at least one",
        ),
        (
            "platform = \"tiktok_ads\"",
            "platform = \"google_ads\"",
            14,
            "twice",
        ),
        (
            "endpoint = \"http://127.0.0.1:9/\"",
            "endpoint = \"ftp://x\"",
            19,
            "not an http(s) URL",
        ),
    ];
    for (from, to, line, message) in cases {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from}");
        let e = error_of(&text);
        assert_eq!(e.line, Some(line), "{to}: {e}");
        assert!(e.message.contains(message), "{to}: {e}");
        assert!(
            e.to_string().starts_with(&format!("clients.toml:{line}: ")),
            "{e}"
        );
    }
    let e = error_of(
        "[[client]]\nid = \"a\"\ntime_zone = \"UTC\"\ncurrency = \"EUR\"\n\n[[client.source]]\nplatform = \"linkedin_ads\"\naccounts = [\"1\"]\ncredentials = \"x\"\n",
    );
    assert!(matches!(e.line, Some(6 | 7)), "{e}");
    assert!(e.message.contains("carry no currency"), "{e}");
    assert!(
        error_of("warehouse = 'x'\n")
            .message
            .contains("no [[client]]")
    );
    assert_eq!(error_of("[[client]\n").line, Some(1));
}

#[test]
fn secrets_come_from_the_file_or_the_environment_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(
        &path,
        "customer_hash_key = \"k\"\n[credentials.nw-google]\nrefresh_token = \"super-secret-refresh\"\ntoken_url = \"http://x/token\"\n",
    )
    .unwrap();
    let s = Secrets::load(&path).unwrap();
    let c = s.credentials("nw-google").unwrap();
    assert_eq!(c.refresh_token.as_deref(), Some("super-secret-refresh"));
    let shown = format!("{s:?} {c:?}");
    assert!(!shown.contains("super-secret"), "{shown}");
    assert!(s.credentials("unknown-config-test-name").is_none());
    std::fs::write(&path, "[credentials.a]\naccess_tokn = \"zzz-secret\"\n").unwrap();
    let e = Secrets::load(&path).unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(!e.to_string().contains("zzz-secret"), "{e}");
}

#[test]
fn the_fx_table_is_optional_and_checked() {
    let c = Config::parse(GOOD, Path::new("clients.toml")).unwrap();
    assert_eq!(c.fx, None);
    let with = format!(
        "{GOOD}\n[fx]\nsource = \"ecb\"\ncurrencies = [\"USD\", \"EUR\", \"GBP\"]\nmax_age_days = 4\n"
    );
    let fx = Config::parse(&with, Path::new("clients.toml"))
        .unwrap()
        .fx
        .unwrap();
    assert_eq!(fx.currencies, ["USD", "GBP"]);
    assert_eq!(fx.max_age_days, 4);
    assert_eq!(fx.lookback_days, crate::fx::DEFAULT_LOOKBACK_DAYS);
    assert_eq!(fx.endpoint, crate::fx::ECB_ENDPOINT);
    let line = GOOD.lines().count() + 3;
    for (tail, want) in [
        (
            "source = \"openexchangerates\"",
            "unknown fx source 'openexchangerates'",
        ),
        ("max_age_days = 60", "max_age_days must be at most 31"),
        ("currencies = [\"usd\"]", "unknown currency 'usd'"),
        ("endpoint = \"ftp://ecb\"", "not an http(s) URL"),
        ("rates = 1", "unknown field `rates`"),
    ] {
        let err = error_of(&format!("{GOOD}\n[fx]\n{tail}\n"));
        assert!(err.message.contains(want), "{tail}: {err}");
        if !tail.starts_with("rates") {
            assert_eq!(err.line, Some(line), "{tail}: {err}");
        }
    }
}
