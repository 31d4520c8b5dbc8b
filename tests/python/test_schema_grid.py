"""Invariant I7 over a grid: the schema `GetFlightInfo` promises equals the
schema of every batch `DoGet` streams, for every aggregate shape over every
column type of the fact tables.

DataFusion rewrites some aggregates after the promised schema is worked out
(a single `COUNT(DISTINCT ...)` beside other aggregates becomes a two-phase
aggregation, whose outer `SUM` widens a decimal from precision 28 to 38);
the statement in the issue that found this,
`SELECT client_id, platform, date_trunc('week', date), SUM(spend),
COUNT(DISTINCT ad_id) FROM ad_performance GROUP BY 1,2,3`, failed with
INTERNAL for every caller.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from support import CALL_TIMEOUT_S, Principals, Server, Warehouse, command_statement_query

pytestmark = pytest.mark.timeout(600)

TABLES = ["ad_performance", "web_sessions", "orders"]


def numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def columns(warehouse: Warehouse, table: str) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in warehouse.read(table).schema]


def shapes(table: str, cols: list[tuple[str, pa.DataType]]) -> list[str]:
    distinct_of = next(name for name, _ in cols if name.endswith("_id") and name != "client_id")
    out = []
    for name, t in cols:
        aggs = ["MIN", "MAX", "COUNT"] + (["SUM", "AVG"] if numeric(t) else [])
        for agg in aggs:
            a = f"{agg}({name})"
            out += [
                f"SELECT {a} AS v FROM {table}",
                f"SELECT client_id, {a} AS v FROM {table} GROUP BY 1",
                # One distinct aggregate beside another: the two-phase rewrite.
                f"SELECT client_id, date_trunc('week', date) AS w, {a} AS v, "
                f"COUNT(DISTINCT {distinct_of}) AS n FROM {table} GROUP BY 1, 2",
                f"SELECT {agg}(DISTINCT {name}) AS v FROM {table}",
            ]
        if numeric(t):
            out += [
                f"SELECT date, SUM({name}) * 1.0 / NULLIF(SUM({name}), 0) AS r, "
                f"COUNT(DISTINCT {distinct_of}) AS n FROM {table} GROUP BY 1",
                f"SELECT SUM({name}) OVER (PARTITION BY client_id ORDER BY date) AS v FROM {table} LIMIT 50",
            ]
    return out


@pytest.fixture(scope="module")
def flight_agency(server: Server, principals: Principals):
    client = flight.FlightClient(server.flight_uri)
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {principals.agency.token}".encode())], timeout=CALL_TIMEOUT_S
    )
    yield client, options
    client.close()


def promised_and_streamed(client, options, sql: str) -> tuple[pa.Schema, list[pa.Schema]]:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)), options)
    streamed = []
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, options)
        streamed.append(reader.schema)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            streamed.append(chunk.data.schema)
    return info.schema, streamed


def test_the_statement_that_found_it_streams_what_it_promised(flight_agency):
    client, options = flight_agency
    sql = (
        "SELECT client_id, platform, date_trunc('week', date), SUM(spend), COUNT(DISTINCT ad_id) "
        "FROM ad_performance GROUP BY 1,2,3"
    )
    promised, streamed = promised_and_streamed(client, options, sql)
    assert streamed and all(s == promised for s in streamed), (promised, streamed[:2])


@pytest.mark.parametrize("table", TABLES)
def test_every_aggregate_shape_streams_what_it_promised(flight_agency, warehouse: Warehouse, table: str):
    client, options = flight_agency
    mismatches, failures = [], []
    statements = shapes(table, columns(warehouse, table))
    for sql in statements:
        try:
            promised, streamed = promised_and_streamed(client, options, sql)
        except flight.FlightError as err:
            failures.append(f"{sql}: {err}")
            continue
        wrong = [s for s in streamed if s != promised]
        if wrong:
            mismatches.append(f"{sql}\n  promised {promised}\n  streamed {wrong[0]}")
    assert not failures, f"{len(failures)} of {len(statements)} failed:\n" + "\n".join(failures[:5])
    assert not mismatches, f"{len(mismatches)} of {len(statements)} differ:\n" + "\n".join(mismatches[:5])
