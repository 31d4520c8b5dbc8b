"""A hostile tenant against the real server: statements built to crash it,
to eat its memory or to hold its threads.

Each must get a clear refusal naming the limit it broke (or an answer),
and the server must keep answering `/healthz` and other callers' queries
throughout. The limits are the server's defaults (`adlake --help`:
`--max-statement-bytes`, `--max-expression-depth`). Once, 5,000 terms of
`1+1+...` overflowed a runtime worker's stack and aborted the process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from adbc_driver_manager import dbapi as adbc_dbapi

from support import Principals, Server, assert_adbc_error, metric_value, query, scrape

MAX_STATEMENT_BYTES = 1024 * 1024
MAX_EXPRESSION_DEPTH = 256
# The Flight port's guards against garbage (flight-server/src/peer.rs):
# a connection that does not start as HTTP/2 is held this long, then
# closed; one that collects more than FREE_REFUSALS undecodable or
# unauthenticated requests (draining one a second) waits PENALTY_S before
# each further request.
HOLD_S = 2.0
FREE_REFUSALS = 10
PENALTY_S = 1.0

pytestmark = pytest.mark.timeout(300)


def chain(terms: int, op: str = "+") -> str:
    return "SELECT 1" + f"{op}1" * (terms - 1)


def assert_alive(server: Server, conn) -> None:
    status, body = server.http_get("/healthz")
    assert status == 200, (status, body)
    assert server.process.poll() is None, server.describe()
    assert query(conn, "SELECT 41 + 1 AS answer").column("answer").to_pylist() == [42]


@contextmanager
def bystander_asking(server: Server, bystander) -> Iterator[list[str]]:
    """While the block runs, a bystander keeps asking for /healthz and a
    small query (no timing asserted: the benchmarks measure that); yields
    the answers it got, and fails the test if one was not an answer."""
    stop = threading.Event()
    answered: list[str] = []
    failures: list[BaseException] = []

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                assert_alive(server, bystander)
            except BaseException as err:  # noqa: BLE001 - reported by the test thread
                failures.append(err)
                return
            answered.append("ok")
            time.sleep(0.05)

    watcher = threading.Thread(target=keep_asking)
    watcher.start()
    try:
        yield answered
    finally:
        stop.set()
        watcher.join()
    assert not failures, failures[0]


@pytest.fixture(scope="module")
def hostile(adbc_connect, principals: Principals):
    return adbc_connect(principals.a)


@pytest.fixture(scope="module")
def bystander(adbc_connect, principals: Principals):
    return adbc_connect(principals.b)


def refused(conn, sql: str, message: str) -> None:
    with pytest.raises(adbc_dbapi.Error) as err:
        query(conn, sql)
    assert_adbc_error(err.value, {"INVALID_ARGUMENT"}, message)


def test_a_chain_within_the_depth_limit_is_answered(hostile, server: Server):
    # The query and the leaf count as levels too.
    terms = MAX_EXPRESSION_DEPTH - 1
    got = query(hostile, chain(terms) + " AS n").column("n").to_pylist()
    assert got == [terms]
    assert_alive(server, hostile)


@pytest.mark.parametrize("terms", [MAX_EXPRESSION_DEPTH + 1, 1_000, 5_000, 50_000])
def test_deep_chains_are_refused_naming_the_limit(hostile, bystander, server: Server, terms: int):
    refused(hostile, chain(terms), r"max expression depth")
    assert_alive(server, bystander)


@pytest.mark.parametrize("op", [" OR ", " AND ", " || ", "*"])
def test_every_kind_of_chain_is_bounded(hostile, server: Server, op: str):
    refused(hostile, chain(5_000, op), r"max expression depth")
    assert_alive(server, hostile)


def test_the_deepest_statement_the_size_limit_admits_is_refused(hostile, bystander, server: Server):
    # Half a million levels in just under 1 MiB: parsed in a loop, refused
    # at the depth limit, and its tree dropped without overflowing.
    terms = (MAX_STATEMENT_BYTES - 64) // 2
    sql = chain(terms)
    assert len(sql) <= MAX_STATEMENT_BYTES
    refused(hostile, sql, r"max expression depth")
    assert_alive(server, bystander)


def test_statements_over_the_size_limit_are_refused_before_parsing(hostile, bystander, server: Server):
    literal = "x" * MAX_STATEMENT_BYTES
    refused(hostile, f"SELECT '{literal}'", r"max statement bytes")
    # 10 MB of `+1` once grew the server past 6 GiB.
    refused(hostile, chain(5_000_000), r"max statement bytes")
    assert_alive(server, bystander)


def test_deep_parentheses_and_subqueries_are_refused(hostile, server: Server):
    for sql in [
        "SELECT " + "(" * 500 + "1" + ")" * 500,
        "SELECT * FROM " + "(SELECT * FROM " * 300 + "(SELECT 1) t" + ") t" * 300,
        "SELECT " + "abs(" * 400 + "1" + ")" * 400,
    ]:
        with pytest.raises(adbc_dbapi.Error) as err:
            query(hostile, sql)
        assert_adbc_error(err.value, {"INVALID_ARGUMENT"}, r"max expression depth|parser recursion limit")
    # Nesting that BI tools do generate is answered.
    nested_case = "SELECT " + "CASE WHEN true THEN " * 20 + "7" + " END" * 20 + " AS v"
    assert query(hostile, nested_case).column("v").to_pylist() == [7]
    assert_alive(server, hostile)


def test_a_deep_prepared_statement_is_refused(hostile, server: Server):
    cur = hostile.cursor()
    try:
        with pytest.raises(adbc_dbapi.Error) as err:
            cur.adbc_prepare(chain(5_000) + " + ?")
        assert_adbc_error(err.value, {"INVALID_ARGUMENT"}, r"max expression depth")
    finally:
        cur.close()
    assert_alive(server, hostile)


def test_a_burst_of_hostile_statements_leaves_the_server_answering(
    adbc_connect, principals: Principals, bystander, server: Server
):
    # Twelve connections at once, each sending the deepest statement the
    # size limit admits, while a bystander keeps asking for /healthz and a
    # small query. Every hostile call is refused, every bystander call
    # answered (no timing asserted: the benchmarks measure that).
    hostile = [adbc_connect(principals.a) for _ in range(12)]
    sql = chain((MAX_STATEMENT_BYTES - 64) // 2)


    def attack(conn) -> str:
        try:
            query(conn, sql)
        except adbc_dbapi.Error as err:
            return str(err)
        return "answered"

    with bystander_asking(server, bystander) as answered:
        with ThreadPoolExecutor(len(hostile)) as pool:
            outcomes = list(pool.map(attack, hostile * 2))
    # Each is refused by the depth limit, or (past the caller's 8 query
    # slots, which planning takes too) by the per-caller cap.
    assert all("max expression depth" in o or "ResourceExhausted" in o for o in outcomes), outcomes[:3]
    assert any("max expression depth" in o for o in outcomes), outcomes[:3]
    assert answered, "the bystander got no answer during the burst"
    assert_alive(server, bystander)


# --------------------------------------------------------------------------
# Statements that parse and plan fine but ask for too much: each must end
# within the limits (a strict server's here: 3 s, 64 MiB of working memory
# per query, 16 MiB of result), with a refusal that says which, and the
# server must keep answering.
# --------------------------------------------------------------------------

LIMIT_STATUSES = {3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 8: "RESOURCE_EXHAUSTED"}
LIMIT_WORDS = ("InvalidArgument", "DeadlineExceeded", "ResourceExhausted")


@pytest.fixture(scope="module")
def strict_server(warehouse, principals: Principals, tmp_path_factory):
    from support import start_server, write_auth_file

    workdir = tmp_path_factory.mktemp("strict-server")
    auth_file = workdir / "auth.toml"
    write_auth_file(auth_file, principals.all())
    srv = start_server(
        warehouse,
        auth_file,
        workdir,
        ["--query-timeout-secs", "3", "--query-memory-bytes", str(64 << 20), "--max-result-bytes", str(16 << 20)],
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict_hostile(strict_server: Server, principals: Principals):
    import adbc_driver_flightsql.dbapi as flightsql

    from support import adbc_db_kwargs

    conn = flightsql.connect(strict_server.flight_uri, db_kwargs=adbc_db_kwargs(token=principals.a.token), autocommit=True)
    yield conn
    conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        # generate_series-style explosion: a hundred billion rows.
        "SELECT count(*) FROM generate_series(1, 100000000000)",
        # Cartesian join of the caller's own rows, streamed.
        "SELECT * FROM ad_performance a, ad_performance b",
        # Cartesian join aggregated: no row leaves until it is done.
        "SELECT count(*), sum(a.spend * b.spend) FROM ad_performance a, ad_performance b, ad_performance c",
        # A recursive CTE that never stops.
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        # A full sort of a big cross join (a window over all of it): past
        # the query's memory share, its time or its result size.
        "SELECT a.ad_name, b.campaign_name, row_number() OVER (ORDER BY a.ad_name, b.campaign_name) AS n "
        "FROM ad_performance a, ad_performance b",
    ],
)
def test_statements_that_ask_for_too_much_end_within_the_limits(strict_hostile, strict_server: Server, sql: str):
    started = time.monotonic()
    with pytest.raises(adbc_dbapi.Error) as err:
        query(strict_hostile, sql)
    text = str(err.value)
    vendor = getattr(err.value, "vendor_code", None)
    assert vendor in LIMIT_STATUSES or any(w in text for w in LIMIT_WORDS), f"{sql}: {text}"
    # Well inside the client's own call timeout: the server ended it.
    assert time.monotonic() - started < 60, f"{sql}: took {time.monotonic() - started:.1f}s"
    # And it stopped working on it: a query whose tasks never yield (an
    # aggregate over a cross join) would keep every core busy past its
    # deadline, at everyone else's expense. Give the abort a moment, then
    # the server must be idle.
    time.sleep(0.5)
    busy = cpu_seconds(strict_server.process.pid)
    time.sleep(1.0)
    busy = cpu_seconds(strict_server.process.pid) - busy
    assert busy < 0.5, f"{sql}: the server used {busy:.2f} s of CPU in the second after the statement ended"
    assert_alive(strict_server, strict_hostile)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    ("sql", "check"),
    [
        # Rust's regex engine is linear: no catastrophic backtracking.
        ("SELECT count(*) AS n FROM ad_performance WHERE regexp_like(ad_name || repeat('a', 200), '(a*)*b')", None),
        ("SELECT count(*) AS n FROM ad_performance WHERE ad_name LIKE '%a%a%a%a%a%a%a%a%a%a%b'", None),
        ("SELECT " + ", ".join(f"{i} AS c{i}" for i in range(3000)), 3000),
        (
            "SELECT count(*) AS n FROM (SELECT 1 AS x) t0 "
            + " ".join(f"JOIN (SELECT 1 AS x{i}) t{i} ON t{i}.x{i} = t0.x" for i in range(1, 16)),
            None,
        ),
        ("SELECT length(repeat('x', 1000000)) AS n", None),
    ],
)
def test_costly_but_bounded_statements_are_answered(strict_hostile, strict_server: Server, sql: str, check):
    got = query(strict_hostile, sql)
    if check is not None:
        assert got.num_columns == check
    else:
        assert got.num_rows == 1
    assert_alive(strict_server, strict_hostile)


def test_two_hundred_connections_of_malformed_requests_leave_the_server_answering(server: Server, bystander):
    # 200 connections at once: half send bytes that are not HTTP/2 at all,
    # half valid gRPC calls whose bodies do not decode (Flight SQL's
    # GetFlightInfo and the metrics service). Every gRPC call is refused
    # as the caller's fault; the bystander is answered throughout.
    import socket

    import grpc

    host, port = server.flight_addr.rsplit(":", 1)

    def garbage(i: int) -> str:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(bytes((i * 7 + k) % 256 for k in range(4096)))
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
        return "closed"

    def undecodable(i: int) -> str:
        method = ["/arrow.flight.protocol.FlightService/GetFlightInfo", "/adlake.v1.MetricsService/QueryMetrics"][i % 2]
        with grpc.insecure_channel(server.flight_addr) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(b"\xff" * (i % 64 + 1), timeout=30)
            except grpc.RpcError as err:
                return err.code().name
        return "answered"

    with bystander_asking(server, bystander) as answered:
        with ThreadPoolExecutor(200) as pool:
            raw_calls = [pool.submit(garbage, i) for i in range(100)]
            grpc_calls = [pool.submit(undecodable, i) for i in range(100)]
            raw = [f.result() for f in raw_calls]
            codes = [f.result() for f in grpc_calls]
    assert raw == ["closed"] * 100
    assert set(codes) == {"INVALID_ARGUMENT"}, sorted(set(codes))
    assert answered, "the bystander got no answer during the burst"
    assert_alive(server, bystander)


def test_garbage_costs_its_sender_time_and_no_one_else(server: Server, bystander):
    # A connection that does not speak HTTP/2 is held, then closed; a gRPC
    # connection that keeps sending bodies that do not decode gets its
    # free refusals answered at once, then waits before each further
    # request. Another connection's refusals are not delayed, and the
    # bystander is answered throughout.
    import socket

    import grpc

    def counters() -> tuple[float, float]:
        found = scrape(server)
        return (
            metric_value(found, "adlake_connections_held_total"),
            metric_value(found, "adlake_requests_delayed_total"),
        )

    host, port = server.flight_addr.rsplit(":", 1)
    method = "/adlake.v1.MetricsService/QueryMetrics"
    with bystander_asking(server, bystander) as answered:
        held_before, delayed_before = counters()
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: adlake\r\n\r\n" + b"x" * 4000)
            # The server's HTTP/2 settings may come first; then nothing,
            # until it closes.
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        held_for = time.monotonic() - started
        assert held_for >= HOLD_S * 0.9, f"closed after {held_for:.2f} s, before the hold"
        held, delayed = counters()
        assert (held - held_before, delayed - delayed_before) == (1, 0)

        with grpc.insecure_channel(server.flight_addr, options=[("grpc.use_local_subchannel_pool", 1)]) as flood:
            call = flood.unary_unary(method, request_serializer=None, response_deserializer=None)

            def refuse() -> float:
                t = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    call(b"\xff\xff", timeout=30)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
                return time.monotonic() - t

            for _ in range(FREE_REFUSALS + 1):
                refuse()
            assert counters()[1] == delayed_before, "a free refusal was delayed"
            waits = [refuse() for _ in range(3)]
            assert min(waits) >= PENALTY_S * 0.9, waits
            assert counters()[1] - delayed_before == 3

            # Another connection is not the flooder: its refusals are free.
            with grpc.insecure_channel(server.flight_addr, options=[("grpc.use_local_subchannel_pool", 1)]) as other:
                other_call = other.unary_unary(method, request_serializer=None, response_deserializer=None)
                for _ in range(3):
                    with pytest.raises(grpc.RpcError) as err:
                        other_call(b"\xff\xff", timeout=30)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert counters()[1] - delayed_before == 3, "another connection's refusals were delayed"
    assert answered, "the bystander got no answer"
    assert_alive(server, bystander)
