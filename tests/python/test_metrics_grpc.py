"""adlake.v1.MetricsService from Python: a grpcio client generated at test time
from the repository's own .proto, asking the same questions as Flight SQL
(ADBC) and as the Delta files read independently (the oracle).

Also: the standard gRPC health service answers on the Flight SQL port.
"""

from __future__ import annotations

import datetime
import importlib
import math
import sys
import time
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from support import (
    CALL_TIMEOUT_S,
    REPO,
    Oracle,
    Principals,
    Server,
    Warehouse,
    adbc_db_kwargs,
    command_statement_query,
    metric_value,
    pb_fields,
    query,
    scrape,
    start_server,
    write_auth_file,
)

PROTO_ROOT = REPO / "proto" / "proto"
END_DATE = "2026-10-31"
START_DATE = "2026-10-01"


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory):
    """(messages, stubs) modules of adlake/v1/metrics.proto, generated now."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("adlake_stubs")
    proto = PROTO_ROOT / "adlake" / "v1" / "metrics.proto"
    assert proto.is_file(), proto
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto),
        ]
    )
    assert code == 0, f"protoc failed on {proto}"
    sys.path.insert(0, str(out))
    try:
        messages = importlib.import_module("adlake.v1.metrics_pb2")
        stubs = importlib.import_module("adlake.v1.metrics_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return messages, stubs


@pytest.fixture(scope="module")
def metrics_stub(server: Server, pb):
    _, stubs = pb
    channel = grpc.insecure_channel(server.flight_addr)
    yield stubs.MetricsServiceStub(channel)
    channel.close()


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def number(value) -> float | None:
    kind = value.WhichOneof("kind")
    assert kind in (None, "number"), value
    return value.number if kind == "number" else None


def ask(stub, messages, token: str, metrics: list[str], dimensions: list[str], **extra):
    request = messages.QueryMetricsRequest(
        metrics=metrics,
        dimensions=dimensions,
        date_range=messages.DateRange(absolute=messages.AbsoluteRange(start=START_DATE, end=END_DATE)),
        **extra,
    )
    return stub.QueryMetrics(request, metadata=auth(token), timeout=CALL_TIMEOUT_S)


def test_grpc_health_service_reports_serving(server: Server):
    with grpc.insecure_channel(server.flight_addr) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        response = check(b"", timeout=CALL_TIMEOUT_S)  # HealthCheckRequest { service: "" }
    assert (1, 0, 1) in pb_fields(response), f"HealthCheckResponse {response!r}: want status SERVING (1)"


def test_grpc_reflection_lists_the_metrics_service(server: Server):
    # ServerReflectionRequest { list_services: "" } (field 7), hand-encoded.
    with grpc.insecure_channel(server.flight_addr) as channel:
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        responses = list(call(iter([b"\x3a\x00"]), timeout=CALL_TIMEOUT_S))
    assert len(responses) == 1
    text = responses[0]
    assert b"adlake.v1.MetricsService" in text, text


def test_query_metrics_matches_the_delta_files(pb, metrics_stub, principals: Principals, oracle: Oracle):
    messages, _ = pb
    response = ask(metrics_stub, messages, principals.agency.token, ["impressions", "clicks", "ctr"], ["client_id"])
    names = [c.name for c in response.columns]
    assert names == ["client_id", "impressions", "clicks", "ctr"]

    t = oracle.table("ad_performance")
    in_range = pc.and_(
        pc.greater_equal(t["date"], pa.scalar(datetime.date.fromisoformat(START_DATE))),
        pc.less_equal(t["date"], pa.scalar(datetime.date.fromisoformat(END_DATE))),
    )
    t = t.filter(in_range)
    agg = t.group_by("client_id").aggregate([("impressions", "sum"), ("clicks", "sum")])
    want = {r["client_id"]: (r["impressions_sum"], r["clicks_sum"]) for r in agg.to_pylist()}

    got = {}
    for row in response.rows:
        client = row.values[0].text
        got[client] = tuple(number(v) for v in row.values[1:])
    assert set(got) == set(want)
    for client, (impressions, clicks) in want.items():
        g_imp, g_clicks, g_ctr = got[client]
        assert (g_imp, g_clicks) == (impressions, clicks), client
        assert math.isclose(g_ctr, clicks / impressions, rel_tol=1e-12), client
    # Totals: a ratio of the sums, not a mean of the clients' ratios.
    all_imp = sum(v[0] for v in want.values())
    all_clicks = sum(v[1] for v in want.values())
    totals = [number(v) for v in response.totals.values]
    assert totals[0] is None  # the dimension cell
    assert math.isclose(totals[3], all_clicks / all_imp, rel_tol=1e-12)
    assert any(tv.table == "ad_performance" and tv.HasField("version") for tv in response.table_versions)


def test_grpc_and_flight_sql_agree(pb, metrics_stub, adbc_connect, principals: Principals, warehouse: Warehouse):
    messages, _ = pb
    metrics = ["spend", "clicks", "ctr", "cpc", "cpm"]
    response = ask(metrics_stub, messages, principals.a.token, metrics, ["week", "currency"])
    grpc_rows = {}
    for row in response.rows:
        week, currency = row.values[0].date, row.values[1].text
        grpc_rows[(week, currency)] = [number(v) for v in row.values[2:]]
    assert grpc_rows

    conn = adbc_connect(principals.a)
    table = query(
        conn,
        f"SELECT * FROM metric_query('{','.join(metrics)}', 'week,currency', '{START_DATE}', '{END_DATE}')",
    )
    sql_rows = {}
    for row in table.to_pylist():
        sql_rows[(row["week"].isoformat(), row["currency"])] = [row[m] for m in metrics]
    # Float sums may add up in another order: equal to the last few bits.
    assert sql_rows.keys() == grpc_rows.keys()
    for key, values in grpc_rows.items():
        for metric, g, q in zip(metrics, values, sql_rows[key]):
            assert (g is None) == (q is None), (key, metric, g, q)
            if g is not None:
                assert math.isclose(g, q, rel_tol=1e-12, abs_tol=1e-12), (key, metric, g, q)

    # Only client A's rows, whichever API.
    clients = query(conn, "SELECT DISTINCT client_id FROM ad_performance").column("client_id").to_pylist()
    assert clients == [warehouse.clients[0]]


def test_bad_questions_are_invalid_argument_naming_the_item(pb, metrics_stub, principals: Principals):
    messages, _ = pb
    with pytest.raises(grpc.RpcError) as err:
        ask(metrics_stub, messages, principals.agency.token, ["ctr"], ["colour"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'colour'" in err.value.details() and "platform" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        ask(metrics_stub, messages, "not-a-token", ["ctr"], [])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "method",
    ["/adlake.v1.MetricsService/QueryMetrics", "/adlake.v1.MetricsService/ListMetrics", "/grpc.health.v1.Health/Check"],
)
@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x80\x80\x80\x80\x10", b"\x12\x05ab"])
def test_an_undecodable_request_is_invalid_argument_with_a_request_id(
    server: Server, principals: Principals, method: str, body: bytes
):
    # Bytes that are no protobuf message (a bad tag, a length past the end,
    # a truncated field): the caller's mistake, not the server's.
    with grpc.insecure_channel(server.flight_addr) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(body, metadata=auth(principals.agency.token), timeout=CALL_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
    assert "does not decode" in err.value.details(), err.value.details()
    metadata = dict(err.value.trailing_metadata() or []) | dict(err.value.initial_metadata() or [])
    assert metadata.get("x-request-id"), metadata
    status, _ = server.http_get("/healthz")
    assert status == 200


def test_grpc_calls_count_against_the_same_rate_as_flight_sql(
    pb, warehouse: Warehouse, principals: Principals, tmp_path: Path
):
    # One set of limits for every surface: a burst of two, refilled at one
    # request every 100 s, so nothing refills during the test. Two gRPC
    # calls use the caller's burst; its third call, and then its Flight SQL
    # query, are refused with a retry-after; another caller is untouched.
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_manager import dbapi as adbc_dbapi

    messages, stubs = pb
    auth_file = tmp_path / "auth.toml"
    write_auth_file(auth_file, principals.all())
    srv = start_server(warehouse, auth_file, tmp_path, ["--rate-limit", "0.01", "--rate-burst", "2"])
    try:
        with grpc.insecure_channel(srv.flight_addr) as channel:
            stub = stubs.MetricsServiceStub(channel)
            for _ in range(2):
                stub.ListMetrics(messages.ListMetricsRequest(), metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
            with pytest.raises(grpc.RpcError) as err:
                stub.QueryMetrics(
                    messages.QueryMetricsRequest(metrics=["spend"]), metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
            metadata = dict(err.value.trailing_metadata() or []) | dict(err.value.initial_metadata() or [])
            assert int(metadata.get("retry-after", "0")) >= 1, metadata
            stub.ListMetrics(messages.ListMetricsRequest(), metadata=auth(principals.b.token), timeout=CALL_TIMEOUT_S)
        with flightsql.connect(srv.flight_uri, db_kwargs=adbc_db_kwargs(token=principals.a.token)) as conn:
            with pytest.raises(adbc_dbapi.Error) as refused:
                query(conn, "SELECT 1 AS one")
            assert "ResourceExhausted" in str(refused.value) or "RESOURCE_EXHAUSTED" in str(refused.value), refused.value
    finally:
        srv.stop()


def test_query_rows_and_latency_are_recorded_when_the_answer_is_over(
    pb, metrics_stub, server: Server, principals: Principals
):
    # adlake_query_rows_total grows by exactly the rows each answer streamed,
    # over Flight SQL and over gRPC, and the latency histogram holds the
    # time to the answer's last batch: a caller who reads slowly makes the
    # query last longer.
    import pyarrow.flight as flight

    messages, _ = pb
    before = scrape(server)
    rows_before = metric_value(before, "adlake_query_rows_total")
    # Absent until the first SQL query has been recorded.
    sql_seconds_before = before.get(("adlake_query_duration_seconds_sum", frozenset({("kind", "sql")})), 0.0)

    # 3,000,001 rows, far more than the transport buffers, read with a pause
    # after the first batch.
    n = 3_000_001
    client = flight.FlightClient(server.flight_uri)
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {principals.agency.token}".encode())], timeout=CALL_TIMEOUT_S
    )
    try:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(command_statement_query(f"SELECT value FROM generate_series(1, {n})")),
            options,
        )
        reader = client.do_get(info.endpoints[0].ticket, options)
        streamed = reader.read_chunk().data.num_rows
        pause_s = 1.5
        time.sleep(pause_s)
        streamed += reader.read_all().num_rows
    finally:
        client.close()
    assert streamed == n

    response = ask(metrics_stub, messages, principals.agency.token, ["impressions", "clicks"], ["client_id", "platform"])
    assert len(response.rows) > 1

    # The record is written when the stream has ended on the server, just
    # after the client saw its end.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(server)
        grown = metric_value(after, "adlake_query_rows_total") - rows_before
        if grown >= n + len(response.rows) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert grown == n + len(response.rows), f"rows total grew by {grown}"
    assert metric_value(after, "adlake_query_duration_seconds_sum", kind="sql") - sql_seconds_before >= pause_s
    assert metric_value(after, "adlake_queries_total", kind="metric", status="ok") >= 1


def test_grpc_queries_take_the_callers_query_slots_like_flight_sql(
    pb, warehouse: Warehouse, principals: Principals, tmp_path: Path
):
    # One query at a time per caller: while client A's Flight SQL answer is
    # held (a stream it does not read), A's gRPC QueryMetrics is refused
    # with RESOURCE_EXHAUSTED and a retry hint; B's is answered.
    import pyarrow.flight as flight

    messages, stubs = pb
    auth_file = tmp_path / "auth.toml"
    write_auth_file(auth_file, principals.all())
    srv = start_server(warehouse, auth_file, tmp_path, ["--max-concurrent-queries-per-caller", "1"])
    client = flight.FlightClient(srv.flight_uri)
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {principals.a.token}".encode())], timeout=CALL_TIMEOUT_S
    )
    try:
        big = "SELECT a.campaign_name, b.ad_name FROM ad_performance a CROSS JOIN ad_performance b"
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(big)), options)
        held = client.do_get(info.endpoints[0].ticket, options)
        held.read_chunk()
        with grpc.insecure_channel(srv.flight_addr) as channel:
            stub = stubs.MetricsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                ask(stub, messages, principals.a.token, ["clicks"], ["platform"])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
            assert "limit of 1 queries at once" in err.value.details(), err.value.details()
            metadata = dict(err.value.trailing_metadata() or []) | dict(err.value.initial_metadata() or [])
            assert int(metadata.get("retry-after", "0")) >= 1, metadata
            answered = ask(stub, messages, principals.b.token, ["clicks"], ["platform"])
            assert len(answered.rows) >= 1
        held.cancel()
    finally:
        client.close()
        srv.stop()


def test_grpc_queries_end_with_deadline_exceeded_past_the_query_timeout_like_flight_sql(
    pb, warehouse: Warehouse, principals: Principals, tmp_path: Path
):
    # One query timeout for every surface: with a limit of a millisecond,
    # no uncached metric query, freshness report or SQL statement can finish,
    # and each ends with DEADLINE_EXCEEDED naming the limit; calls that run
    # no query (listing the metrics) are answered, and the refusals are
    # counted under their status.
    import pyarrow.flight as flight

    messages, stubs = pb
    auth_file = tmp_path / "auth.toml"
    write_auth_file(auth_file, principals.all())
    srv = start_server(warehouse, auth_file, tmp_path, ["--query-timeout-secs", "0.001"])
    try:
        with grpc.insecure_channel(srv.flight_addr) as channel:
            stub = stubs.MetricsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                ask(stub, messages, principals.a.token, ["clicks", "ctr"], ["platform", "date"], bypass_cache=True)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
            assert "longer than the server's limit of 0.001 s" in err.value.details(), err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.GetFreshness(messages.GetFreshnessRequest(), metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
            listed = stub.ListMetrics(messages.ListMetricsRequest(), metadata=auth(principals.a.token), timeout=CALL_TIMEOUT_S)
            assert len(listed.metrics) > 0
        client = flight.FlightClient(srv.flight_uri)
        options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {principals.a.token}".encode())], timeout=CALL_TIMEOUT_S
        )
        try:
            with pytest.raises(flight.FlightTimedOutError) as timed_out:
                sql = "SELECT platform, sum(clicks) FROM ad_performance GROUP BY platform"
                info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)), options)
                client.do_get(info.endpoints[0].ticket, options).read_all()
            assert "longer than the server's limit of 0.001 s" in str(timed_out.value), timed_out.value
        finally:
            client.close()
        metrics = scrape(srv)
        assert metric_value(metrics, "adlake_queries_total", kind="QueryMetrics", status="deadline_exceeded") == 1
        assert metric_value(metrics, "adlake_queries_total", kind="GetFreshness", status="deadline_exceeded") == 1
    finally:
        srv.stop()


def test_the_access_log_records_who_read_what_and_who_was_refused(
    pb, warehouse: Warehouse, principals: Principals, tmp_path: Path
):
    # Every query and every refused call, on both surfaces, is one JSON
    # line naming the caller, scope, statement or request, tables and
    # versions read, rows returned, outcome and request id; no token, valid
    # or not, is ever written.
    import json

    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_manager import dbapi as adbc_dbapi

    messages, stubs = pb
    auth_file = tmp_path / "auth.toml"
    write_auth_file(auth_file, principals.all())
    log = tmp_path / "access.jsonl"
    srv = start_server(warehouse, auth_file, tmp_path, ["--access-log", str(log)])
    client_a = principals.a.clients[0]
    sql = "SELECT client_id, CAST(SUM(clicks) AS BIGINT) AS clicks FROM ad_performance GROUP BY client_id"
    wrong_token = "not-a-token-" + principals.a.token[:8]
    try:
        with flightsql.connect(srv.flight_uri, db_kwargs=adbc_db_kwargs(token=principals.a.token)) as conn:
            got = query(conn, sql)
        with flightsql.connect(srv.flight_uri, db_kwargs=adbc_db_kwargs(token=wrong_token)) as conn:
            with pytest.raises(adbc_dbapi.Error):
                query(conn, "SELECT 1 AS denied")
        with grpc.insecure_channel(srv.flight_addr) as channel:
            stub = stubs.MetricsServiceStub(channel)
            request = messages.QueryMetricsRequest(
                metrics=["spend"],
                dimensions=["platform"],
                date_range=messages.DateRange(absolute=messages.AbsoluteRange(start=START_DATE, end=END_DATE)),
            )
            answer, call = stub.QueryMetrics.with_call(request, metadata=auth(principals.b.token), timeout=CALL_TIMEOUT_S)
            grpc_request_id = dict(call.initial_metadata() or []).get("x-request-id") or dict(
                call.trailing_metadata() or []
            ).get("x-request-id")
            with pytest.raises(grpc.RpcError) as refused:
                stub.QueryMetrics(request, metadata=auth(wrong_token), timeout=CALL_TIMEOUT_S)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        def entries() -> list[dict]:
            text = log.read_text() if log.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        def wanted(found: list[dict]) -> bool:
            return (
                any(e.get("statement") == sql and e["outcome"] == "ok" for e in found)
                and any(e.get("statement") == "SELECT 1 AS denied" for e in found)
                and sum(e["method"] == "QueryMetrics" for e in found) >= 2
            )

        deadline = time.monotonic() + 15
        while not wanted(entries()) and time.monotonic() < deadline:
            time.sleep(0.1)
        found = entries()
        assert wanted(found), json.dumps(found, indent=1)[:4000]
    finally:
        srv.stop()

    ads_version = warehouse.delta("ad_performance").version()
    allowed = next(e for e in found if e.get("statement") == sql and e["outcome"] == "ok")
    assert allowed["surface"] == "flight_sql" and allowed["method"] == "DoGet(Statement)", allowed
    assert (allowed["principal"], allowed["scope"]) == (principals.a.name, client_a)
    assert allowed["tables"] == {"ad_performance": ads_version}, allowed
    assert allowed["rows"] == got.num_rows == 1
    assert allowed["cache"] in {"miss", "hit"} and allowed["request_id"], allowed

    denied = [e for e in found if e.get("statement") == "SELECT 1 AS denied"]
    assert denied and all(e["outcome"] == "unauthenticated" and e["principal"] is None for e in denied), denied
    assert all(e["rows"] == 0 and e["tables"] == {} for e in denied), denied

    metric = [e for e in found if e["method"] == "QueryMetrics"]
    ok = next(e for e in metric if e["outcome"] == "ok")
    assert ok["surface"] == "grpc" and ok["principal"] == principals.b.name, ok
    assert ok["scope"] == principals.b.clients[0] and ok["request_id"] == grpc_request_id, ok
    assert ok["tables"].get("ad_performance") == ads_version, ok
    assert ok["rows"] == len(answer.rows) and "spend" in ok["request"], ok
    assert any(e["outcome"] == "unauthenticated" and e["principal"] is None for e in metric), metric

    text = log.read_text()
    for secret in [p.token for p in principals.all()] + [wrong_token]:
        assert secret not in text, "a token is in the access log"
