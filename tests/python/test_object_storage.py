"""The warehouse on object storage, end to end against real servers started
on loopback (tests/python/object_stores.py): moto's S3 server for `s3://`
and Azurite for `az://`. Every test runs once per store:
`adlake-ingest demo / maintain / erase / freshness` write to the store, the
real `adlake` server reads it over ADBC, and delta-rs and pyarrow read the
objects back independently."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from object_stores import BUCKET, CLOUD_ENV_PREFIXES, PREFIX, STORES, Store, clean_env
from support import Oracle, Principal, Warehouse, adbc_db_kwargs, binary, start_server, tail, write_auth_file


@pytest.fixture(scope="module", params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with STORES[request.param](tmp_path_factory.mktemp(request.param)) as s:
        yield s


def ingest(store: Store, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(binary("adlake-ingest")), *args], env=store.binary_env(RUST_BACKTRACE="1"),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{tail(done.stderr)}"
    return done


@pytest.fixture(scope="module")
def demo(store: Store) -> list[str]:
    # One commit per ad platform, as the daily runs write: small files for
    # `maintain` to compact.
    ingest(store, "demo", "--warehouse", store.url, "--clients", "3", "--days", "5", "--rows", "1500",
           "--seed", "5", "--end-date", "2025-04-30", "--commit-per-source")  # fmt: skip
    ids = store.delta("ad_performance").to_pyarrow_table(columns=["client_id"])["client_id"]
    clients = sorted(pc.unique(ids).to_pylist())
    assert len(clients) == 3, clients
    # Every table's log and data are objects on the store, under the prefix.
    for table in ("ad_performance", "web_sessions", "orders", "ingest_runs", "fx_rates"):
        objects = store.objects(table)
        assert any("/_delta_log/00000000000000000000.json" in p for p in objects), (table, objects[:5])
        assert store.data_files(table), table
    return clients


def test_maintain_compacts_and_keeps_every_row(store, demo):
    before = store.delta("ad_performance").to_pyarrow_table()
    files_before = len(store.data_files("ad_performance"))
    version_before = store.delta("ad_performance").version()
    # Two maintainers at once on the same table: both read the same
    # version and race to commit the next one. Commits are conditional
    # puts (create-if-absent: S3 `If-None-Match`, Azure `If-None-Match: *`),
    # so exactly one compaction lands; the other sees the conflict (or the
    # upkeep lock, itself a conditional put) and compacts nothing. With
    # plain puts both would "win" the same version.
    args = [str(binary("adlake-ingest")), "maintain", "--warehouse", store.url, "--table", "ad_performance", "--zorder", "--json"]
    procs = [
        subprocess.Popen(args, env=store.binary_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
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
    after = store.delta("ad_performance")
    assert len(after.file_uris()) == ad["files_after"]
    compactions = [h for h in after.history() if h["operation"] == "OPTIMIZE"]
    assert len(compactions) == 1, compactions
    # The checkpoint is an object on the store too.
    assert any(p.endswith(".checkpoint.parquet") for p in store.objects("ad_performance/_delta_log")), store.objects(
        "ad_performance/_delta_log"
    )
    table = after.to_pyarrow_table()
    assert table.num_rows == before.num_rows
    assert pc.sum(table["impressions"]).as_py() == pc.sum(before["impressions"]).as_py()
    assert pc.sum(table["spend"]).as_py() == pc.sum(before["spend"]).as_py()

    # The other tables, one maintainer.
    done = ingest(store, "maintain", "--warehouse", store.url, "--json")
    report = {t["table"]: t for t in json.loads(done.stdout)["tables"]}
    assert set(report) == {"ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine", "fx_rates"}
    assert all(t["checkpointed"] for t in report.values() if t["version_before"] is not None)


def test_orders_on_storage_hold_a_keyed_hash_and_no_raw_pii(store, demo):
    orders = store.delta("orders").to_pyarrow_table()
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


def test_server_queries_the_warehouse_over_adbc(store, demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import adbc_driver_flightsql.dbapi as flightsql

    agency = Principal("agency", secrets.token_urlsafe(32), ("*",))
    auth = tmp_path / "auth.toml"
    write_auth_file(auth, [agency])
    # The server takes the store's credentials from its environment only.
    for name in list(os.environ):
        if name.startswith(CLOUD_ENV_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    warehouse = Warehouse(root=store.url, clients=demo, storage_options=store.storage_options)  # type: ignore[arg-type]
    server = start_server(warehouse, auth, tmp_path)
    monkeypatch.undo()
    try:
        with flightsql.connect(server.flight_uri, db_kwargs=adbc_db_kwargs(agency.token)) as conn:
            cur = conn.cursor()
            cur.execute(
                "SELECT client_id, count(*) AS n, sum(impressions) AS impressions, sum(clicks) AS clicks, "
                "sum(spend) AS spend FROM ad_performance GROUP BY client_id ORDER BY client_id"
            )
            got = {r["client_id"]: r for r in cur.fetch_arrow_table().to_pylist()}
        # The same sums from delta-rs reading the store directly.
        want = Oracle(warehouse).sums_by_client("ad_performance", ["impressions", "clicks", "spend"])
        assert sorted(got) == sorted(want) == demo
        for client, w in want.items():
            g = got[client]
            assert (g["n"], g["impressions"], g["clicks"], g["spend"]) == (
                w["row_count"], w["impressions"], w["clicks"], w["spend"],
            ), client  # fmt: skip
        status, body = server.http_get("/metrics")
        assert status == 200
        assert 'adlake_table_version{table="ad_performance"}' in body, body[:2000]
    finally:
        server.stop()


def test_erase_removes_every_row_and_object_of_the_client(store, demo):
    gone, kept = demo[0], demo[1]
    kept_rows = store.delta("ad_performance").to_pyarrow_table(columns=["client_id"])
    kept_before = pc.sum(pc.equal(kept_rows["client_id"], kept)).as_py()
    assert any(f"client_id={gone}/" in p for p in store.data_files("ad_performance"))
    done = ingest(store, "erase", "--warehouse", store.url, "--client", gone, "--by", "dpo@agency.example", "--json")
    audit = json.loads(done.stdout)
    assert audit["client_id"] == gone and audit["requested_by"] == "dpo@agency.example"
    assert {t["table"] for t in audit["tables"]} == {"ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine"}
    with store.fs.open_input_stream(f"{BUCKET}/{PREFIX}/{audit['audit_path']}") as f:
        entry = json.loads(f.read())
    # The entry names the client by the SHA-256 of its id, never the id.
    assert entry["client_sha256"] == hashlib.sha256(gone.encode()).hexdigest() and "client_id" not in entry
    # No object left under the warehouse names the client: not its key, not
    # its bytes, not a value of a Parquet object (log checkpoints included)
    # once decoded.
    for path in store.objects(""):
        assert gone not in path, path
        with store.fs.open_input_stream(path) as f:
            body = f.read()
        assert gone.encode() not in body, path
        if path.endswith(".parquet"):
            decoded = pq.read_table(path, filesystem=store.fs).to_pylist()
            assert gone not in json.dumps(decoded, default=str), path
    for table in ("ad_performance", "web_sessions", "orders", "ingest_runs"):
        ids = store.delta(table).to_pyarrow_table(columns=["client_id"])["client_id"]
        assert pc.sum(pc.equal(ids, gone)).as_py() in (0, None), table
        # Every object left on storage (listed with an independent client),
        # not only the current version's files.
        for path in store.data_files(table):
            assert f"client_id={gone}/" not in path, path
            if table in ("ingest_runs", "quarantine"):
                col = pq.read_table(path, filesystem=store.fs, columns=["client_id"])["client_id"].cast("string")
                assert pc.sum(pc.equal(col, gone)).as_py() in (0, None), path
    ids = store.delta("ad_performance").to_pyarrow_table(columns=["client_id"])["client_id"]
    assert pc.sum(pc.equal(ids, kept)).as_py() == kept_before

    again = ingest(store, "erase", "--warehouse", store.url, "--client", "no-such-client", "--by", "dpo", check=False)
    assert again.returncode == 1
    assert "unknown client 'no-such-client'" in again.stderr


def test_freshness_report_reads_ingest_runs_on_the_store(store, demo):
    done = ingest(store, "freshness", "--warehouse", store.url, "--json")
    rows = json.loads(done.stdout)
    clients = {r["client_id"] for r in rows}
    assert clients and clients <= set(demo)
    # Demo data ends 2025-04-30, long before "yesterday": nothing landed,
    # so every pair is pending before 08:00 (UTC, no zone configured) and
    # missed after it.
    hour = dt.datetime.now(dt.timezone.utc).hour
    assert {r["status"] for r in rows} <= ({"pending", "missed"} if hour == 8 else {"pending" if hour < 8 else "missed"})
    assert all(r["landed_at"] is None for r in rows)
    assert all(r["latest_date"] == "2025-04-30" for r in rows)


def test_missing_credentials_and_unknown_schemes_are_clear_errors(store):
    before = store.objects("")
    env = {k: v for k, v in store.binary_env().items() if k not in store.credential_vars}
    done = subprocess.run(
        [str(binary("adlake-ingest")), "maintain", "--warehouse", store.url], env=env,
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "missing credentials" in done.stderr and store.credentials_hint in done.stderr, done.stderr
    done = ingest(store, "maintain", "--warehouse", "ftp://host/warehouse", check=False)
    assert done.returncode == 1
    assert "unsupported warehouse scheme 'ftp'" in done.stderr, done.stderr
    done = ingest(store, "maintain", "--warehouse", store.url, "--retention-hours", "2", check=False)
    assert done.returncode == 1
    assert "shorter than the safety minimum" in done.stderr, done.stderr
    # Nothing was written.
    assert store.objects("") == before


def test_gcs_warehouse_without_credentials_is_a_clear_error(tmp_path: Path):
    # No GCS emulator serves object_store's XML-API writes (see
    # object_stores.py), so gs:// is checked up to the store: the URL is
    # accepted and missing credentials stop the binary before any request.
    done = subprocess.run(
        [str(binary("adlake-ingest")), "demo", "--warehouse", f"gs://{BUCKET}/{PREFIX}", "--clients", "1", "--days", "1"],
        env=clean_env(os.environ), capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "missing credentials" in done.stderr, done.stderr
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT"):
        assert var in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
