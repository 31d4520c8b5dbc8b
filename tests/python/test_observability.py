"""What an operator watches, read from the real server: `/metrics` in
Prometheus text with the families the runbook lists and values checked
against the Delta tables read independently with delta-rs, JSON log lines
with the request id, and `/readyz`."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from support import Principals, Server, Warehouse, metric_value as value, metric_samples as samples, query, runs_by_state

@pytest.fixture(scope="module")
def agency_conn(adbc_connect, principals: Principals):
    return adbc_connect(principals.agency)


def test_http_metrics_are_prometheus_text(server: Server, agency_conn):
    query(agency_conn, "SELECT 1 AS one")
    status, body = server.http_get("/metrics")
    assert status == 200, body[:500]
    assert "# TYPE" in body, body[:500]


def test_metrics_report_queries_tables_ingest_and_freshness(server: Server, agency_conn, warehouse: Warehouse):
    query(agency_conn, "SELECT count(*) AS n FROM ad_performance")
    with pytest.raises(Exception):
        query(agency_conn, "SELECT no_such_column FROM ad_performance")
    status, body = server.http_get("/metrics")
    assert status == 200
    found = samples(body)

    assert value(found, "adlake_up") == 1
    assert value(found, "adlake_queries_total", kind="sql", status="ok") >= 1
    assert sum(v for (n, _), v in found.items() if n == "adlake_query_errors_total") >= 1
    assert value(found, "adlake_query_duration_seconds_count", kind="sql") >= 1
    # The first run of a statement is a cache miss and is then held.
    assert value(found, "adlake_cache_events_total", event="miss") >= 1
    assert value(found, "adlake_cache_entries") >= 1
    assert value(found, "adlake_cache_bytes") > 0

    # Tables: version and file count as delta-rs sees them.
    for table in ("ad_performance", "ingest_runs", "fx_rates"):
        dt_ = DeltaTable(str(warehouse.root / table))
        assert value(found, "adlake_table_version", table=table) == dt_.version(), table
        assert value(found, "adlake_table_files", table=table) == len(dt_.file_uris()), table
        assert value(found, "adlake_table_bytes", table=table) > 0, table

    # Ingest totals: ingest_runs grouped independently with pyarrow.
    runs = DeltaTable(str(warehouse.root / "ingest_runs")).to_pyarrow_table()
    # Each run once, under the status of its latest row (a `started` row
    # is superseded by the run's finish).
    states = runs_by_state(runs.to_pylist())
    assert states
    for (source, status), count in states.items():
        assert value(found, "adlake_ingest_runs", source=source, status=status) == count
    for source in set(runs["source"].to_pylist()):
        mine = runs.filter(pc.equal(runs["source"], source))
        assert value(found, "adlake_ingest_rows_written", source=source) == pc.sum(mine["rows_written"]).as_py()
        assert value(found, "adlake_ingest_rows_quarantined", source=source) == pc.sum(mine["rows_quarantined"]).as_py()

    # Freshness: every (client, source) with a successful run; the lag is
    # the time since the end (UTC midnight: no client zone is configured)
    # of the newest day a successful run covered.
    ok = runs.filter(pc.equal(runs["status"], "succeeded")).to_pylist()
    newest: dict[tuple[str, str], dt.date] = {}
    for r in ok:
        if r["client_id"] == "_global":
            continue
        key = (r["client_id"], r["source"])
        newest[key] = max(newest.get(key, r["date_to"]), r["date_to"])
    assert newest
    now = time.time()
    for (client, source), day in newest.items():
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc).timestamp()
        got = value(found, "adlake_freshness_lag_seconds", client=client, source=source)
        # The gauge is recomputed at most every 30 s: allow that, and the
        # scrape itself, as slack.
        assert abs(got - (now - end)) < 120, (client, source, got, now - end)


def test_scan_counters_add_the_rows_a_query_read(server: Server, agency_conn, warehouse: Warehouse):
    before = samples(server.http_get("/metrics")[1])
    # A statement text no other test sends, so it is a cache miss: the
    # agency token scans every row of ad_performance exactly once.
    got = query(agency_conn, "SELECT spend AS scan_counter_probe FROM ad_performance")
    table_rows = DeltaTable(str(warehouse.root / "ad_performance")).to_pyarrow_table(columns=["spend"]).num_rows
    assert got.num_rows == table_rows
    # The scan is counted when the server drops the finished stream, which
    # may be just after the client holds the last batch.
    deadline = time.monotonic() + 10
    while True:
        after = samples(server.http_get("/metrics")[1])
        read_rows = value(after, "adlake_scan_rows_total") - value(before, "adlake_scan_rows_total")
        if read_rows >= table_rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert read_rows == table_rows, (read_rows, table_rows)
    assert value(after, "adlake_scan_bytes_total") > value(before, "adlake_scan_bytes_total")


def test_logs_are_json_lines_and_failures_carry_the_request_id(server: Server, agency_conn):
    with pytest.raises(Exception):
        query(agency_conn, "SELECT * FROM no_such_table_for_the_log_test")
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in server.stderr_path.read_text(errors="replace").splitlines() if l.strip()]
        records = [json.loads(l) for l in lines]  # every line is one JSON object
        failed = [
            r for r in records
            if "no_such_table_for_the_log_test" in json.dumps(r) and r.get("fields", {}).get("request_id")
        ]  # fmt: skip
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines
    assert all({"timestamp", "level", "fields"} <= r.keys() for r in records), records[:3]
    assert failed, "no log line of the failed query with a request_id:\n" + "\n".join(lines[-10:])
    assert re.fullmatch(r"[0-9a-f-]{8,}", failed[0]["fields"]["request_id"]), failed[0]


def test_readiness_says_the_tables_are_open(server: Server):
    assert server.http_get("/readyz") == (200, "ready")
    assert server.http_get("/healthz") == (200, "ok")
