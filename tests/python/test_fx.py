"""Exchange rates from the European Central Bank, end to end.

A stand-in for the ECB Data Portal serves the SDMX CSV fixture
(`ingest/tests/data/fx/`, the documented `format=csvdata` shape); the real
`adlake-ingest fx` and `adlake-ingest run` pull it into `fx_rates`; the real
server converts spend to a reporting currency over Flight SQL (ADBC). The
expected sums are DuckDB's own conversion of the same ad rows with the same
fixture: an ASOF join for days the ECB does not publish (weekends, Good
Friday, Easter Monday) and cross rates through the euro, never the rates
adlake stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
from pathlib import Path

import duckdb
import pytest

from support import (
    REPO,
    Principal,
    StubServer,
    Warehouse,
    adbc_db_kwargs,
    query,
    run_ingest,
    start_server,
    write_auth_file,
)

FIXTURE = REPO / "ingest" / "tests" / "data" / "fx" / "ecb_exr_daily_2024-03-25_2024-04-05.csv"
MAX_AGE_DAYS = 5


def fixture_rows() -> list[dict[str, str]]:
    with FIXTURE.open(newline="") as f:
        return list(csv.DictReader(f))


class FakeEcb:
    """The ECB Data Portal's `/service/data/EXR/D.{currencies}.EUR.SP00.A`:
    the fixture's rows of the asked range; for days after the fixture, each
    business day at the fixture's last rate of each currency (so a pull of
    any recent week has data). `garbage` answers HTML instead."""

    def __init__(self) -> None:
        self.garbage = False
        rows = fixture_rows()
        self.header = list(rows[0].keys())
        self.rows = rows
        self.last = {r["CURRENCY"]: r for r in rows}  # sorted by currency, date
        self.stub = StubServer(self.reply)
        self.url = self.stub.url

    @property
    def requests(self) -> list[str]:
        return self.stub.paths

    def reply(self, path: str, headers) -> tuple[int, str, bytes]:
        url = urllib.parse.urlparse(path)
        params = dict(urllib.parse.parse_qsl(url.query))
        if not url.path.startswith("/service/data/EXR/D.") or params.get("format") != "csvdata":
            return 400, "text/plain", b"bad request"
        if self.garbage:
            return 200, "text/html", b"<html><body>Service maintenance</body></html>"
        body = self.answer(dt.date.fromisoformat(params["startPeriod"]), dt.date.fromisoformat(params["endPeriod"]))
        return (404, "text/plain", b"No results found.") if body is None else (200, "text/csv", body)

    def answer(self, start: dt.date, end: dt.date) -> bytes | None:
        out = [r for r in self.rows if start <= dt.date.fromisoformat(r["TIME_PERIOD"]) <= end]
        last_fixture_day = max(dt.date.fromisoformat(r["TIME_PERIOD"]) for r in self.rows)
        day = max(start, last_fixture_day + dt.timedelta(days=1))
        while day <= end:
            if day.weekday() < 5:
                for r in self.last.values():
                    out.append({**r, "TIME_PERIOD": day.isoformat()})
            day += dt.timedelta(days=1)
        if not out:
            return None
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
        return buf.getvalue().encode()

    def close(self) -> None:
        self.stub.close()


@pytest.fixture()
def ecb():
    fake = FakeEcb()
    yield fake
    fake.close()


def write_config(path: Path, ecb_url: str) -> Path:
    # One file-only client: `run` has nothing to fetch but the rates.
    path.write_text(
        "[[client]]\n"
        'id = "fx-test"\n'
        'time_zone = "UTC"\n'
        'currency = "USD"\n'
        "[[client.source]]\n"
        'platform = "google_ads"\n'
        'accounts = ["1234567890"]\n'
        "[fx]\n"
        'source = "ecb"\n'
        f'endpoint = "{ecb_url}"\n'
        f"max_age_days = {MAX_AGE_DAYS}\n"
    )
    return path


ingest = run_ingest


def demo_warehouse(root: Path) -> Warehouse:
    # 12 days ending on the fixture's last day: ad rows in USD, EUR, GBP,
    # AUD, CAD, NZD and SEK on every day, weekends and holidays included.
    done = ingest(
        "demo", "--warehouse", str(root), "--clients", "5", "--days", "12",
        "--rows", "6000", "--seed", "7", "--end-date", "2024-04-05",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Warehouse(root, [])


def oracle_spend_in_usd(wh: Warehouse) -> dict[str, float]:
    """DuckDB's conversion of every ad row of the range to USD with the
    fixture's rates: the latest observation at most MAX_AGE_DAYS old (ASOF),
    A→USD = (EUR→USD) / (EUR→A), EUR→EUR = 1."""
    con = duckdb.connect()
    ads = wh.read("ad_performance", ["client_id", "date", "currency", "spend"])
    con.register("ads", ads)
    con.execute(
        f"""
        CREATE TABLE obs AS
        SELECT CAST(TIME_PERIOD AS DATE) AS d, CURRENCY AS c, CAST(OBS_VALUE AS DOUBLE) AS v
        FROM read_csv('{FIXTURE}', all_varchar = true) WHERE OBS_VALUE <> ''
        UNION ALL
        SELECT DISTINCT CAST(TIME_PERIOD AS DATE), 'EUR', 1.0 FROM read_csv('{FIXTURE}', all_varchar = true)
        """
    )
    rows = con.execute(
        f"""
        WITH a AS (
            SELECT client_id, CAST(date AS DATE) AS date, CAST(currency AS VARCHAR) AS currency,
                   CAST(spend AS DOUBLE) AS spend
            FROM ads WHERE date BETWEEN DATE '2024-03-25' AND DATE '2024-04-05'
        ),
        own AS (SELECT a.*, o.v AS per_eur, o.d AS seen FROM a ASOF LEFT JOIN obs o ON o.c = a.currency AND a.date >= o.d),
        usd AS (
            SELECT days.date, o.v AS usd_per_eur, o.d AS seen
            FROM (SELECT DISTINCT date FROM a) days ASOF LEFT JOIN obs o ON o.c = 'USD' AND days.date >= o.d
        )
        SELECT client_id,
               sum(CASE WHEN currency = 'USD' THEN spend ELSE spend * usd.usd_per_eur / own.per_eur END) AS spend,
               max(own.date - own.seen) AS own_age, max(usd.date - usd.seen) AS usd_age,
               count(*) FILTER (WHERE own.per_eur IS NULL) AS unrated
        FROM own JOIN usd USING (date) GROUP BY client_id ORDER BY client_id
        """
    ).fetchall()
    out = {}
    for client, spend, own_age, usd_age, unrated in rows:
        # The oracle's own premise: every row had a rate within the limit.
        assert unrated == 0 and own_age <= MAX_AGE_DAYS and usd_age <= MAX_AGE_DAYS, (client, own_age, usd_age)
        out[client] = spend
    return out


def test_spend_in_a_reporting_currency_uses_the_ecbs_rates_as_duckdb_computes_them(tmp_path: Path, ecb: FakeEcb):
    wh = demo_warehouse(tmp_path / "warehouse")
    currencies = set(wh.read("ad_performance", ["currency"])["currency"].to_pylist())
    assert len(currencies - {"USD"}) >= 3, currencies  # conversions, and cross rates, happen
    config = write_config(tmp_path / "clients.toml", ecb.url)
    done = ingest(
        "fx", "--config", str(config), "--warehouse", str(wh.root), "--from", "2024-03-25", "--to", "2024-04-05",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fx_rates" in done.stdout and "2024-03-25..2024-04-05" in done.stdout, done.stdout
    # The first days are filled from the days before them, so the pull
    # starts max_age_days earlier.
    (asked,) = ecb.requests
    assert "startPeriod=2024-03-20&endPeriod=2024-04-05" in asked, asked

    # The run is on record, and no demo rate is left for a pair the ECB gives.
    runs = wh.read("ingest_runs").to_pylist()
    (run,) = [r for r in runs if r["source"] == "ecb"]
    assert run["client_id"] == "_global" and run["status"] == "succeeded", run
    rates = wh.read("fx_rates").to_pylist()
    day = [r for r in rates if r["date"] == dt.date(2024, 3, 30)]
    gbp_usd = {(r["base"], r["quote"]): r["rate"] for r in day}[("GBP", "USD")]
    assert gbp_usd == pytest.approx(1.0811 / 0.85553, rel=1e-12)  # Saturday: Thursday's rates

    expected = oracle_spend_in_usd(wh)
    agency = Principal("agency", "fx-test-token-" + "x" * 24, ("*",))
    auth = tmp_path / "auth.toml"
    write_auth_file(auth, [agency])
    server = start_server(wh, auth, tmp_path)
    try:
        import adbc_driver_flightsql.dbapi as flightsql

        with flightsql.connect(server.flight_uri, db_kwargs=adbc_db_kwargs(token=agency.token)) as conn:
            got = query(
                conn,
                "SELECT * FROM metric_query('spend', 'client_id', '2024-03-25', '2024-04-05', 'currency=USD')",
            ).to_pylist()
    finally:
        server.stop()
    answered = {r["client_id"]: float(r["spend"]) for r in got}
    assert answered.keys() == expected.keys()
    for client, spend in expected.items():
        assert answered[client] == pytest.approx(spend, rel=1e-9), client


def test_the_scheduled_run_pulls_the_lookback_window_and_fills_the_weekend(tmp_path: Path, ecb: FakeEcb):
    root = tmp_path / "warehouse"
    config = write_config(tmp_path / "clients.toml", ecb.url)
    done = ingest("run", "--config", str(config), "--warehouse", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    first = yesterday - dt.timedelta(days=7)
    (asked,) = ecb.requests
    since = first - dt.timedelta(days=MAX_AGE_DAYS)
    assert f"startPeriod={since}&endPeriod={yesterday}" in asked, asked
    wh = Warehouse(root, [])
    rates = wh.read("fx_rates").to_pylist()
    days = sorted({r["date"] for r in rates})
    assert days == [first + dt.timedelta(days=i) for i in range(8)], days
    last = {r["CURRENCY"]: float(r["OBS_VALUE"]) for r in fixture_rows()}
    for day in days:
        pairs = {(r["base"], r["quote"]): r["rate"] for r in rates if r["date"] == day}
        assert len(pairs) == 9 * 8, (day, len(pairs))
        assert pairs[("SEK", "JPY")] == pytest.approx(last["JPY"] / last["SEK"], rel=1e-12), day
        assert pairs[("USD", "EUR")] == pytest.approx(1 / last["USD"], rel=1e-12), day
    runs = [r for r in wh.read("ingest_runs").to_pylist() if r["source"] == "ecb"]
    assert [r["trigger"] for r in runs] == ["schedule"], runs


def test_an_answer_that_is_not_rates_fails_the_pull_and_changes_nothing(tmp_path: Path, ecb: FakeEcb):
    root = tmp_path / "warehouse"
    config = write_config(tmp_path / "clients.toml", ecb.url)
    ok = ingest("fx", "--config", str(config), "--warehouse", str(root), "--from", "2024-03-25", "--to", "2024-04-05")
    assert ok.returncode == 0, ok.stderr
    wh = Warehouse(root, [])
    before = wh.delta("fx_rates").version()
    ecb.garbage = True
    bad = ingest("fx", "--config", str(config), "--warehouse", str(root), "--from", "2024-03-25", "--to", "2024-04-05")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "unknown rates format" in bad.stderr and "_global/ecb" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and "panicked" not in bad.stderr
    assert wh.delta("fx_rates").version() == before

    # An agency's own rates through `file --table fx_rates`, and a file that
    # is not rates is refused with exit code 2, naming the file.
    own = tmp_path / "own.csv"
    own.write_text("date,base,quote,rate\n2024-04-02,AED,USD,0.2723\n")
    loaded = ingest("file", "--config", str(config), "--warehouse", str(root), "--table", "fx_rates", str(own))
    assert loaded.returncode == 0, loaded.stderr
    pairs = {(r["base"], r["quote"]) for r in wh.read("fx_rates").to_pylist() if r["date"] == dt.date(2024, 4, 2)}
    assert ("AED", "USD") in pairs and ("USD", "AED") in pairs and ("GBP", "USD") in pairs
    junk = tmp_path / "junk.csv"
    junk.write_text("when,what\n1,2\n")
    refused = ingest("file", "--config", str(config), "--warehouse", str(root), "--table", "fx_rates", str(junk))
    assert refused.returncode == 2 and "junk.csv" in refused.stderr, refused.stderr


def test_a_long_backfill_is_pulled_a_year_at_a_time_and_covers_every_day(tmp_path: Path, ecb: FakeEcb):
    root = tmp_path / "warehouse"
    config = write_config(tmp_path / "clients.toml", ecb.url)
    done = ingest("fx", "--config", str(config), "--warehouse", str(root), "--from", "2024-03-25", "--to", "2025-06-30")
    assert done.returncode == 0, done.stdout + done.stderr
    # 463 days: one request of 366 and one of 97, each starting
    # max_age_days early to fill its first days.
    assert [urllib.parse.parse_qs(urllib.parse.urlparse(p).query)["startPeriod"][0] for p in ecb.requests] == [
        "2024-03-20",
        "2025-03-21",
    ], ecb.requests
    rates = Warehouse(root, []).read("fx_rates", ["date"])["date"].to_pylist()
    days = sorted(set(rates))
    assert days[0] == dt.date(2024, 3, 25) and days[-1] == dt.date(2025, 6, 30) and len(days) == 463
    assert len(rates) == 463 * 72
