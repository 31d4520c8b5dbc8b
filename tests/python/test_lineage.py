"""From a served number back to the API call it came from.

A stand-in for TikTok's reporting API answers the real `adlake-ingest run`
with two pages in TikTok's documented shape, each with its own
`request_id`; the real server then serves the day's spend over Flight SQL
(ADBC), and both the documented lineage SQL (docs/runbook.md, "Trace a
number") and `adlake-ingest lineage` lead from that number to the run, the
Delta version of its commit (checked against the Delta log with Python
`deltalake`), the connector version and the two request ids the stand-in
issued.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import urllib.parse
import uuid
from pathlib import Path

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

CLIENT = "lineage-client"
ADVERTISER = "7000000001"


class FakeTiktok:
    """`/open_api/v1.3/report/integrated/get/`: the asked day, two ads on
    page 1 and one on page 2, each page with a fresh `request_id`."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.spend = [decimal.Decimal("12.34"), decimal.Decimal("0.66"), decimal.Decimal("7.00")]
        self.stub = StubServer(self.reply)
        self.url = self.stub.url

    def reply(self, path: str, headers) -> tuple[int, str, bytes]:
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(path).query))
        if headers.get("Access-Token") != "tt-token":
            body = {"code": 40105, "message": "Access token is incorrect or has been revoked.", "request_id": "x", "data": {}}
            return 200, "application/json", json.dumps(body).encode()
        page = int(params.get("page", "1"))
        day = params["start_date"]
        ads = [(0, "ad-1"), (1, "ad-2")] if page == 1 else [(2, "ad-3")]
        request_id = f"2026{uuid.uuid4().hex[:20].upper()}"
        self.request_ids.append(request_id)
        rows = [
            {
                "dimensions": {"ad_id": ad, "stat_time_day": f"{day} 00:00:00"},
                "metrics": {
                    "spend": str(self.spend[i]),
                    "impressions": "1000",
                    "clicks": "10",
                    "conversion": "1",
                    "total_purchase_value": "20.00",
                    "campaign_id": "cmp-1",
                    "campaign_name": "Spring",
                    "adgroup_name": "Group",
                    "ad_name": ad,
                },
            }
            for i, ad in ads
        ]
        body = {
            "code": 0,
            "message": "OK",
            "request_id": request_id,
            "data": {"list": rows, "page_info": {"page": page, "page_size": 1000, "total_number": 3, "total_page": 2}},
        }
        return 200, "application/json", json.dumps(body).encode()

    def close(self) -> None:
        self.stub.close()


@pytest.fixture()
def tiktok():
    fake = FakeTiktok()
    yield fake
    fake.close()


ingest = run_ingest


def runbook_sql(client: str, day: dt.date, platform: str) -> str:
    """The "Trace a number" statement of docs/runbook.md, with its
    placeholders filled: the test fails when the runbook's SQL changes
    shape or stops working."""
    text = (REPO / "docs" / "runbook.md").read_text()
    section = text.split("## Trace a number", 1)[1]
    (sql,) = re.findall(r"```sql\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return sql.replace(":client", f"'{client}'").replace(":date", f"DATE '{day}'").replace(":platform", f"'{platform}'")


def test_a_served_number_leads_to_the_api_requests_it_came_from(tmp_path: Path, tiktok: FakeTiktok):
    root = tmp_path / "warehouse"
    config = tmp_path / "clients.toml"
    config.write_text(
        "[[client]]\n"
        f'id = "{CLIENT}"\n'
        'time_zone = "UTC"\n'
        'currency = "USD"\n'
        "[[client.source]]\n"
        'platform = "tiktok_ads"\n'
        f'accounts = ["{ADVERTISER}"]\n'
        'credentials = "tt"\n'
        'currency = "USD"\n'
        "lookback_days = 0\n"
        f'endpoint = "{tiktok.url}"\n'
    )
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials.tt]\naccess_token = "tt-token"\n')
    secrets.chmod(0o600)
    done = ingest("run", "--config", str(config), "--secrets", str(secrets), "--warehouse", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(tiktok.request_ids) == 2, tiktok.request_ids
    day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)

    # The served number.
    analyst = Principal(f"{CLIENT}-analyst", "lineage-token-" + "y" * 24, (CLIENT,))
    auth = tmp_path / "auth.toml"
    write_auth_file(auth, [analyst])
    wh = Warehouse(root, [CLIENT])
    server = start_server(wh, auth, tmp_path)
    try:
        import adbc_driver_flightsql.dbapi as flightsql

        with flightsql.connect(server.flight_uri, db_kwargs=adbc_db_kwargs(token=analyst.token)) as conn:
            (served,) = query(
                conn,
                f"SELECT sum(spend) AS spend FROM ad_performance WHERE date = DATE '{day}' AND platform = 'tiktok_ads'",
            ).to_pylist()
            traced = query(conn, runbook_sql(CLIENT, day, "tiktok_ads")).to_pylist()
    finally:
        server.stop()
    assert served["spend"] == sum(tiktok.spend)

    # The runbook's SQL: one run, its version, connector and request ids.
    (row,) = traced
    assert sorted(row["source_request_ids"]) == sorted(tiktok.request_ids), row
    assert row["connector"] == "tiktok_ads/v1.3"
    assert row["trigger"] == "schedule"
    # The Delta version is the commit that carries the run id.
    history = {h["version"]: h for h in wh.delta("ad_performance").history()}
    commit = history[row["table_version"]]
    assert row["run_id"] in json.dumps(commit, default=str), commit
    assert decimal.Decimal(row["spend"]) == sum(tiktok.spend)

    # The command says the same.
    lineage = ingest(
        "lineage", "--warehouse", str(root), "--client", CLIENT, "--date", str(day), "--platform", "tiktok_ads", "--json",
    )  # fmt: skip
    assert lineage.returncode == 0, lineage.stderr
    (trace,) = json.loads(lineage.stdout)
    assert trace["run_id"] == row["run_id"] and trace["connector"] == "tiktok_ads/v1.3"
    assert trace["rows"] == 3 and decimal.Decimal(trace["spend"]) == sum(tiktok.spend)
    assert trace["run"]["table_version"] == row["table_version"]
    assert sorted(trace["run"]["request_ids"]) == sorted(tiktok.request_ids)
    text = ingest("lineage", "--warehouse", str(root), "--client", CLIENT, "--date", str(day), "--platform", "tiktok_ads")
    assert all(f"request {r}" in text.stdout for r in tiktok.request_ids), text.stdout

    # A day without rows, and a table lineage cannot trace, are said plainly.
    empty = ingest("lineage", "--warehouse", str(root), "--client", CLIENT, "--date", "2001-01-01")
    assert empty.returncode == 0 and "no rows" in empty.stdout, empty.stdout
    bad = ingest("lineage", "--warehouse", str(root), "--client", CLIENT, "--date", str(day), "--table", "fx_rates")
    assert bad.returncode == 2 and "fact tables" in bad.stderr, bad.stderr
