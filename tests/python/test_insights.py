"""Forecasts, anomalies and budget advice over the real server: the SQL table
functions from ADBC and the `adlake.v1.InsightsService` from grpcio, under each
caller's scope. Expected sums are computed here from the Delta files."""

from __future__ import annotations

import datetime
import importlib
import math
import sys
from collections import defaultdict
from pathlib import Path

import duckdb
import grpc
import pytest

from support import CALL_TIMEOUT_S, REPO, Principals, Server, Warehouse, query

PROTO_ROOT = REPO / "proto" / "proto"
END_DATE = "2026-10-31"
START_DATE = "2026-10-02"  # the warehouse's 30 days


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory):
    """(messages, stubs) of adlake/v1/insights.proto (and metrics.proto it imports)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("insights_stubs")
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    protos = [PROTO_ROOT / "adlake" / "v1" / name for name in ("metrics.proto", "insights.proto")]
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + [str(p) for p in protos]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        for name in list(sys.modules):
            if name == "adlake" or name.startswith("adlake."):
                del sys.modules[name]
        metrics = importlib.import_module("adlake.v1.metrics_pb2")
        messages = importlib.import_module("adlake.v1.insights_pb2")
        stubs = importlib.import_module("adlake.v1.insights_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return metrics, messages, stubs


@pytest.fixture(scope="module")
def stub(server: Server, pb):
    _, _, stubs = pb
    channel = grpc.insecure_channel(server.flight_addr)
    yield stubs.InsightsServiceStub(channel)
    channel.close()


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def daily(warehouse: Warehouse):
    """DuckDB over the Delta files: daily sums per (client, platform, campaign)."""
    t = warehouse.read(
        "ad_performance", ["client_id", "platform", "campaign_id", "date", "spend", "conversion_value"]
    )
    con = duckdb.connect()
    con.register("ads", t)
    rows = con.execute(
        "SELECT client_id, platform, campaign_id, date, sum(spend)::DOUBLE, sum(conversion_value)::DOUBLE "
        "FROM ads GROUP BY ALL"
    ).fetchall()
    out: dict[tuple[str, str, str], dict[datetime.date, tuple[float, float]]] = defaultdict(dict)
    for client, platform, campaign, day, spend, value in rows:
        out[(client, platform, campaign)][day] = (spend, value)
    return out


def text(value) -> str | None:
    return value.text if value.WhichOneof("kind") == "text" else None


def test_forecasts_over_adbc_and_grpc_agree_and_stay_in_scope(
    pb, stub, adbc_connect, principals: Principals, warehouse: Warehouse, daily
):
    _, messages, _ = pb
    client_a = warehouse.clients[0]
    sql = f"SELECT * FROM forecast('spend', 'client_id,platform', 14, 'as_of={END_DATE};history_days=30')"
    table = query(adbc_connect(principals.a), sql)
    assert table.column_names == ["client_id", "platform", "date", "forecast", "lower", "upper", "model"]
    rows = table.to_pylist()
    assert rows and {r["client_id"] for r in rows} == {client_a}
    platforms = {r["platform"] for r in rows}
    assert platforms == {p for (c, p, _) in daily if c == client_a}
    assert len(rows) == 14 * len(platforms)
    first = datetime.date.fromisoformat(END_DATE) + datetime.timedelta(days=1)
    for r in rows:
        assert first <= r["date"] <= first + datetime.timedelta(days=13)
        assert 0 <= r["lower"] <= r["forecast"] <= r["upper"], r
        assert r["model"] in ("mstl_ets", "ets", "mean", "zero")
    # The level forecast is the level the files show: each platform's mean
    # forecast within a factor of two of its last two weeks.
    for platform in platforms:
        recent = [
            sum(days.get(datetime.date.fromisoformat(END_DATE) - datetime.timedelta(days=d), (0, 0))[0] for d in range(14))
            for (c, p, _), days in daily.items()
            if c == client_a and p == platform
        ]
        actual = sum(recent) / 14
        predicted = sum(r["forecast"] for r in rows if r["platform"] == platform) / 14
        assert actual / 2 <= predicted <= actual * 2, (platform, actual, predicted)

    request = messages.ForecastRequest(
        metric="spend", dimensions=["client_id", "platform"], horizon_days=14, as_of=END_DATE, history_days=30
    )
    response = stub.Forecast(request, metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
    assert list(response.dimensions) == ["client_id", "platform"]
    by_key = {(r["platform"], r["date"].isoformat()): r for r in rows}
    assert len(response.points) == len(rows)
    for p in response.points:
        assert text(p.dimension_values[0]) == client_a
        r = by_key[(text(p.dimension_values[1]), p.date)]
        assert math.isclose(p.forecast, r["forecast"], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(p.upper, r["upper"], rel_tol=1e-9, abs_tol=1e-9)
        assert p.model == r["model"]

    # Client B's token never gets client A's series, whatever it asks.
    other = stub.Forecast(request, metadata=auth(principals.b.token), timeout=CALL_TIMEOUT_S)
    assert other.points and {text(p.dimension_values[0]) for p in other.points} == {warehouse.clients[1]}


def test_anomalies_report_the_days_the_files_hold(pb, stub, adbc_connect, principals: Principals, warehouse: Warehouse, daily):
    metrics_pb, messages, _ = pb
    sql = (
        "SELECT * FROM anomalies('spend,conversion_value', 'client_id,currency,platform,campaign_id', "
        f"'2026-10-16', '{END_DATE}', 'threshold=3')"
    )
    # The agency's clients bill in several currencies: never summed together.
    table = query(adbc_connect(principals.agency), sql)
    assert table.column_names == [
        "client_id", "currency", "platform", "campaign_id", "date", "metric",
        "actual", "expected", "lower", "upper", "score", "direction",
    ]  # fmt: skip
    rows = table.to_pylist()
    for r in rows:
        spend, value = daily[(r["client_id"], r["platform"], r["campaign_id"])].get(r["date"], (0.0, 0.0))
        want = spend if r["metric"] == "spend" else value
        assert math.isclose(r["actual"], want, rel_tol=1e-9, abs_tol=1e-6), r
        assert r["score"] > 3
        outside = r["actual"] > r["upper"] if r["direction"] == "spike" else r["actual"] < r["lower"]
        assert outside, r

    request = messages.DetectAnomaliesRequest(
        metrics=["spend", "conversion_value"],
        dimensions=["client_id", "currency", "platform", "campaign_id"],
        date_range=metrics_pb.DateRange(absolute=metrics_pb.AbsoluteRange(start="2026-10-16", end=END_DATE)),
        threshold=3,
    )
    mine = stub.DetectAnomalies(request, metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
    assert {text(a.dimension_values[0]) for a in mine.anomalies} <= {warehouse.clients[0]}
    theirs = [r for r in rows if r["client_id"] == warehouse.clients[0]]
    assert len(mine.anomalies) == len(theirs)


def test_budget_advice_splits_the_budget_from_the_current_spend_in_the_files(
    pb, stub, adbc_connect, principals: Principals, warehouse: Warehouse, daily
):
    metrics_pb, messages, _ = pb
    client_a = warehouse.clients[0]
    end = datetime.date.fromisoformat(END_DATE)
    current = {
        (p, c): sum(days.get(end - datetime.timedelta(days=d), (0, 0))[0] for d in range(7)) / 7
        for (cl, p, c), days in daily.items()
        if cl == client_a
    }
    total = round(sum(current.values()), 2)
    sql = f"SELECT * FROM budget_advice('platform,campaign_id', '{START_DATE}', '{END_DATE}', {total})"
    rows = query(adbc_connect(principals.a), sql).to_pylist()
    assert {(r["platform"], r["campaign_id"]) for r in rows} == set(current)
    for r in rows:
        assert math.isclose(r["current_daily_spend"], current[(r["platform"], r["campaign_id"])], rel_tol=1e-9, abs_tol=1e-6)
        low, high = r["current_daily_spend"] * 0.5, r["current_daily_spend"] * 1.5
        assert low - 1e-6 <= r["recommended_daily_spend"] <= high + 1e-6, r
        if r["fit_r2"] is None:
            assert r["note"], r  # left as it is, with the reason
            assert r["recommended_daily_spend"] == r["current_daily_spend"]
    assert math.isclose(sum(r["recommended_daily_spend"] for r in rows), total, rel_tol=1e-6)

    request = messages.AdviseBudgetRequest(
        dimensions=["platform", "campaign_id"],
        date_range=metrics_pb.DateRange(absolute=metrics_pb.AbsoluteRange(start=START_DATE, end=END_DATE)),
        total_daily_budget=total,
    )
    response = stub.AdviseBudget(request, metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
    got = {(text(a.dimension_values[0]), text(a.dimension_values[1])): a for a in response.advice}
    assert got.keys() == {(r["platform"], r["campaign_id"]) for r in rows}
    for r in rows:
        a = got[(r["platform"], r["campaign_id"])]
        assert math.isclose(a.recommended_daily_spend, r["recommended_daily_spend"], rel_tol=1e-9, abs_tol=1e-9)
        assert a.HasField("fit_r2") == (r["fit_r2"] is not None)


def test_bad_insight_requests_are_invalid_argument_naming_the_problem(pb, stub, principals: Principals):
    metrics_pb, messages, _ = pb
    cases = [
        (stub.Forecast, messages.ForecastRequest(metric="ctr", horizon_days=7), "'ctr' is not additive"),
        (stub.Forecast, messages.ForecastRequest(metric="spend", dimensions=["week"], horizon_days=7), "date grain"),
        (stub.Forecast, messages.ForecastRequest(metric="spend", horizon_days=500), "from 1 to 90"),
        (stub.Forecast, messages.ForecastRequest(metric="spend", horizon_days=7, as_of="2026-01-01;x=1"), "may not contain"),
        (stub.DetectAnomalies, messages.DetectAnomaliesRequest(metrics=["spend"]), "a date range is required"),
        (
            stub.AdviseBudget,
            messages.AdviseBudgetRequest(
                dimensions=["campaign_id"],
                date_range=metrics_pb.DateRange(relative="last_30_days"),
                total_daily_budget=100,
                value_metric="clicks",
            ),
            "value is conversion_value or conversions",
        ),
    ]
    for call, request, want in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=auth(principals.agency.token), timeout=CALL_TIMEOUT_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, err.value)
        assert want in err.value.details(), (request, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        stub.Forecast(messages.ForecastRequest(metric="spend", horizon_days=7), timeout=CALL_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_demos_tracking_outages_are_found(adbc_connect, principals: Principals, warehouse: Warehouse):
    # Ground truth from the files: platform-days with clicks but no
    # conversions at all (the demo's injected tracking outages).
    t = warehouse.read("ad_performance", ["client_id", "platform", "date", "clicks", "conversions"])
    con = duckdb.connect()
    con.register("ads", t)
    outages = set(
        con.execute(
            "SELECT client_id, platform, date FROM ads GROUP BY ALL HAVING sum(clicks) > 200 AND sum(conversions) = 0"
        ).fetchall()
    )
    assert outages, "the demo warehouse should hold an outage"
    found = query(
        adbc_connect(principals.agency),
        f"SELECT client_id, platform, date FROM anomalies('conversions', 'client_id,currency,platform', "
        f"'{START_DATE}', '{END_DATE}') WHERE direction = 'drop'",
    )
    reported = set(zip(*(found.column(c).to_pylist() for c in ("client_id", "platform", "date"))))
    assert outages <= reported, outages - reported


def test_data_quality_flags_the_outage_day_for_its_client_only(
    pb, stub, adbc_connect, principals: Principals, warehouse: Warehouse
):
    _, messages, _ = pb
    t = warehouse.read("ad_performance", ["client_id", "platform", "date", "clicks", "conversions"])
    con = duckdb.connect()
    con.register("ads", t)
    # The first day of an injected tracking outage, from the files.
    client, platform, day = con.execute(
        "SELECT client_id, platform, date FROM ads GROUP BY ALL "
        "HAVING sum(clicks) > 200 AND sum(conversions) = 0 ORDER BY date, client_id LIMIT 1"
    ).fetchone()
    sql = f"SELECT * FROM data_quality('{day}')"
    rows = query(adbc_connect(principals.agency), sql).to_pylist()
    assert {r["check"] for r in rows} <= {"stopped", "missing_day", "volume", "drift"}
    hits = [
        r
        for r in rows
        if (r["client_id"], r["source"], r["date"], r["check"]) == (client, platform, day, "volume")
        and r["detail"].startswith("conversions 0.00")
    ]
    assert len(hits) == 1 and hits[0]["severity"] == "critical", rows

    # Another client's token never sees the finding; the client's own does.
    owner = principals.a if client == warehouse.clients[0] else principals.b if client == warehouse.clients[1] else None
    other = principals.b if owner is principals.a else principals.a
    theirs = query(adbc_connect(other), sql).to_pylist()
    assert all(r["client_id"] != client for r in theirs)
    if owner is not None:
        response = stub.GetDataQuality(
            messages.GetDataQualityRequest(as_of=day.isoformat()), metadata=auth(owner.token), timeout=CALL_TIMEOUT_S
        )
        got = [(f.client_id, f.source, f.date, f.check, f.severity) for f in response.findings]
        assert (client, platform, day.isoformat(), "volume", messages.SEVERITY_CRITICAL) in got
        assert {f.client_id for f in response.findings} == {client}
