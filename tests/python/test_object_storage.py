"""The warehouse on S3: a real S3-compatible server (moto, from PyPI) on
loopback, `adlake-ingest demo / maintain / erase / freshness` writing to
`s3://`, the real `adlake` server reading it over ADBC, and delta-rs and
pyarrow reading the objects back independently."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from support import Principal, Warehouse, adbc_db_kwargs, binary, start_server, tail, write_auth_file

BUCKET = "adlake-test"
PREFIX = "warehouse"
URL = f"s3://{BUCKET}/{PREFIX}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto did not start:\n{tail(log.read_text(errors='replace'))}", pytrace=False)
                time.sleep(0.3)
        req = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(req, timeout=5).read()
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def without_aws(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


def ingest(s3: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**without_aws(dict(os.environ)), **s3, "RUST_BACKTRACE": "1"}
    done = subprocess.run(
        [str(binary("adlake-ingest")), *args], env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{tail(done.stderr)}"
    return done


def storage_options(s3: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": s3["AWS_REGION"],
        "AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"],
        "AWS_ALLOW_HTTP": "true",
    }


def delta(s3: dict[str, str], table: str) -> DeltaTable:
    return DeltaTable(f"{URL}/{table}", storage_options=storage_options(s3))


def s3fs(s3: dict[str, str]) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=s3["AWS_ACCESS_KEY_ID"], secret_key=s3["AWS_SECRET_ACCESS_KEY"], region=s3["AWS_REGION"],
        endpoint_override=s3["AWS_ENDPOINT_URL"].removeprefix("http://"), scheme="http",
    )  # fmt: skip


def data_files(s3: dict[str, str], table: str) -> list[str]:
    infos = s3fs(s3).get_file_info(pafs.FileSelector(f"{BUCKET}/{PREFIX}/{table}", recursive=True))
    return [i.path for i in infos if i.path.endswith(".parquet") and "/_delta_log/" not in i.path]


@pytest.fixture(scope="module")
def demo(s3: dict[str, str]) -> list[str]:
    ingest(s3, "demo", "--warehouse", URL, "--clients", "3", "--days", "5", "--rows", "1500",
           "--seed", "5", "--end-date", "2025-04-30")  # fmt: skip
    ids = delta(s3, "ad_performance").to_pyarrow_table(columns=["client_id"])["client_id"]
    clients = sorted(pc.unique(ids).to_pylist())
    assert len(clients) == 3, clients
    return clients


def test_maintain_compacts_on_s3_and_keeps_every_row(s3, demo):
    before = delta(s3, "ad_performance").to_pyarrow_table()
    files_before = len(data_files(s3, "ad_performance"))
    version_before = delta(s3, "ad_performance").version()
    # Two maintainers at once on the same table: both read the same
    # version and race to commit the next one. S3 commits are conditional
    # puts (create-if-absent), so exactly one compaction lands; the other
    # sees the conflict, retries from the new snapshot and finds nothing
    # left to compact. With plain puts both would "win" the same version.
    env = {**without_aws(dict(os.environ)), **s3}
    args = [str(binary("adlake-ingest")), "maintain", "--warehouse", URL, "--table", "ad_performance", "--zorder", "--json"]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for _ in range(2)
    ]  # fmt: skip
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, tail(err)
        (ad,) = json.loads(out)["tables"]
        reports.append(ad)
    winners = [r for r in reports if r["files_removed"] > 0]
    assert len(winners) == 1, reports
    ad = winners[0]
    (loser,) = [r for r in reports if r is not ad]
    assert ad["files_removed"] == files_before, reports
    assert ad["version_before"] == version_before and ad["version_after"] == version_before + 1, reports
    assert loser["files_removed"] == 0 and loser["files_added"] == 0, reports
    assert ad["files_after"] < ad["files_before"], ad
    assert ad["checkpointed"] is True
    after = delta(s3, "ad_performance")
    assert len(after.file_uris()) == ad["files_after"]
    compactions = [h for h in after.history() if h["operation"] == "OPTIMIZE"]
    assert len(compactions) == 1, compactions
    table = after.to_pyarrow_table()
    assert table.num_rows == before.num_rows
    assert pc.sum(table["impressions"]).as_py() == pc.sum(before["impressions"]).as_py()
    assert pc.sum(table["spend"]).as_py() == pc.sum(before["spend"]).as_py()

    # The other tables, one maintainer.
    done = ingest(s3, "maintain", "--warehouse", URL, "--json")
    report = {t["table"]: t for t in json.loads(done.stdout)["tables"]}
    assert set(report) == {"ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine", "fx_rates"}
    assert all(t["checkpointed"] for t in report.values() if t["version_before"] is not None)


def test_orders_on_storage_hold_a_keyed_hash_and_no_raw_pii(s3, demo):
    orders = delta(s3, "orders").to_pyarrow_table()
    assert orders.num_rows > 0
    names = set(orders.column_names)
    assert not names & {"email", "customer_email", "phone", "address", "browser_ip", "ip", "name"}, names
    keys = orders["customer_key"]
    assert pc.all(pc.match_substring_regex(keys, r"^[0-9a-f]{64}$")).as_py()
    # Returning customers share a key, so they can still be counted.
    assert len(pc.unique(keys)) < orders.num_rows
    for name in orders.column_names:
        column = orders[name]
        if str(column.type) in ("string", "large_string", "string_view"):
            assert not pc.any(pc.match_substring(column, "@")).as_py(), f"orders.{name} holds an address"


def test_server_queries_the_s3_warehouse_over_adbc(s3, demo, tmp_path: Path):
    import adbc_driver_flightsql.dbapi as flightsql

    agency = Principal("agency", secrets.token_urlsafe(32), ("*",))
    auth = tmp_path / "auth.toml"
    write_auth_file(auth, [agency])
    saved = dict(os.environ)
    os.environ.update(s3)
    try:
        server = start_server(Warehouse(root=URL, clients=demo), auth, tmp_path)  # type: ignore[arg-type]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        with flightsql.connect(server.flight_uri, db_kwargs=adbc_db_kwargs(agency.token)) as conn:
            cur = conn.cursor()
            cur.execute("SELECT client_id, count(*) AS n FROM ad_performance GROUP BY client_id ORDER BY client_id")
            got = {r["client_id"]: r["n"] for r in cur.fetch_arrow_table().to_pylist()}
        expected = delta(s3, "ad_performance").to_pyarrow_table(columns=["client_id"])["client_id"]
        want = {c: pc.sum(pc.equal(expected, c)).as_py() for c in demo}
        assert got == want
        status, body = server.http_get("/metrics")
        assert status == 200
        assert 'adlake_table_version{table="ad_performance"}' in body, body[:2000]
    finally:
        server.stop()


def test_erase_removes_every_row_and_object_of_the_client(s3, demo):
    gone, kept = demo[0], demo[1]
    kept_rows = delta(s3, "ad_performance").to_pyarrow_table(columns=["client_id"])
    kept_before = pc.sum(pc.equal(kept_rows["client_id"], kept)).as_py()
    done = ingest(s3, "erase", "--warehouse", URL, "--client", gone, "--by", "dpo@agency.example", "--json")
    audit = json.loads(done.stdout)
    assert audit["client_id"] == gone and audit["requested_by"] == "dpo@agency.example"
    assert {t["table"] for t in audit["tables"]} == {"ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine"}
    fs = s3fs(s3)
    with fs.open_input_stream(f"{BUCKET}/{PREFIX}/{audit['audit_path']}") as f:
        assert json.loads(f.read())["client_id"] == gone
    for table in ("ad_performance", "web_sessions", "orders", "ingest_runs"):
        ids = delta(s3, table).to_pyarrow_table(columns=["client_id"])["client_id"]
        assert pc.sum(pc.equal(ids, gone)).as_py() in (0, None), table
        # Every object left on storage, not only the current version's.
        for path in data_files(s3, table):
            assert f"client_id={gone}/" not in path, path
            if table in ("ingest_runs", "quarantine"):
                col = pq.read_table(path, filesystem=fs, columns=["client_id"])["client_id"].cast("string")
                assert pc.sum(pc.equal(col, gone)).as_py() in (0, None), path
    ids = delta(s3, "ad_performance").to_pyarrow_table(columns=["client_id"])["client_id"]
    assert pc.sum(pc.equal(ids, kept)).as_py() == kept_before

    again = ingest(s3, "erase", "--warehouse", URL, "--client", "no-such-client", "--by", "dpo", check=False)
    assert again.returncode == 1
    assert "unknown client 'no-such-client'" in again.stderr


def test_freshness_report_reads_ingest_runs_on_s3(s3, demo):
    done = ingest(s3, "freshness", "--warehouse", URL, "--json")
    rows = json.loads(done.stdout)
    clients = {r["client_id"] for r in rows}
    assert clients and clients <= set(demo)
    # Demo data ends 2025-04-30, long before "yesterday": nothing landed,
    # so every pair is pending before 08:00 (UTC, no zone configured) and
    # missed after it.
    import datetime as dt

    hour = dt.datetime.now(dt.timezone.utc).hour
    assert {r["status"] for r in rows} <= ({"pending", "missed"} if hour == 8 else {"pending" if hour < 8 else "missed"})
    assert all(r["landed_at"] is None for r in rows)
    assert all(r["latest_date"] == "2025-04-30" for r in rows)


def test_missing_credentials_and_unknown_schemes_are_clear_errors(s3):
    no_creds = {k: v for k, v in s3.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env = {**without_aws(dict(os.environ)), **no_creds}
    done = subprocess.run(
        [str(binary("adlake-ingest")), "maintain", "--warehouse", URL], env=env,
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "missing credentials" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr, done.stderr
    done = ingest(s3, "maintain", "--warehouse", "ftp://host/warehouse", check=False)
    assert done.returncode == 1
    assert "unsupported warehouse scheme 'ftp'" in done.stderr, done.stderr
    done = ingest(s3, "maintain", "--warehouse", URL, "--retention-hours", "2", check=False)
    assert done.returncode == 1
    assert "shorter than the safety minimum" in done.stderr, done.stderr
