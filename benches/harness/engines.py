"""The engines a query is sent to, behind one small interface.

`AdlakeFlightSql` talks to the real server over Flight SQL with the ADBC
driver (what BI tools use), one connection per worker thread;
`AdlakeFlightDirect` sends the same statements with the plain
`pyarrow.flight` client (two calls per statement instead of ADBC's four). `DuckDbLocal`
runs the same SQL on Python `duckdb` in-process over the Parquet files of
the same Delta table versions, listed with Python `deltalake`;
`DuckDbNative` loads the rows of those same files into DuckDB's own
in-memory tables, sorted by client and date, and runs the SQL there.

A mode (`uncached`, `cached`) is a set of Flight call headers: the result
cache's bypass is asked for per call, so once the server honours a bypass
header, `uncached` sends it and `cached` does not. A gRPC `QueryMetrics`
engine fits the same interface: `connect()` returns an object with
`run(query) -> pyarrow.Table`.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from workload import Query

CALL_TIMEOUT_S = 300.0

# Call header asking the server's result cache to neither read nor store the
# answer. Sent in `uncached` mode; harmless while a server has no cache.
CACHE_BYPASS_HEADER = ("x-adlake-cache", "bypass")


class Session(Protocol):
    def run(self, query: Query) -> pa.Table: ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def connect(self) -> Session: ...


@dataclass
class AdlakeFlightSql:
    """adlake over Flight SQL, tokens per scope ("client", "agency")."""

    uri: str
    tokens: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "adlake"

    def connect(self) -> Session:
        return _AdbcSession(self)


class _AdbcSession:
    def __init__(self, engine: AdlakeFlightSql) -> None:
        import adbc_driver_flightsql.dbapi as flightsql
        from adbc_driver_flightsql import DatabaseOptions

        self._conns = {}
        for scope, token in engine.tokens.items():
            kwargs = {
                DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}",
                DatabaseOptions.TIMEOUT_QUERY.value: str(CALL_TIMEOUT_S),
                DatabaseOptions.TIMEOUT_FETCH.value: str(CALL_TIMEOUT_S),
            }
            for name, value in engine.headers.items():
                kwargs[f"{DatabaseOptions.RPC_CALL_HEADER_PREFIX.value}{name}"] = value
            self._conns[scope] = flightsql.connect(engine.uri, db_kwargs=kwargs, autocommit=True)

    def run(self, query: Query) -> pa.Table:
        with self._conns[query.scope].cursor() as cur:
            cur.execute(query.sql)
            return cur.fetch_arrow_table()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


@dataclass
class AdlakeFlightDirect:
    """adlake over Flight SQL with the plain `pyarrow.flight` client: the two
    calls the protocol needs for a statement (`GetFlightInfo` with a
    `CommandStatementQuery`, then `DoGet` of its ticket), where the ADBC
    driver makes four (it prepares and closes a statement around them).
    Measures what the server and the wire cost without the driver's extra
    round trips."""

    uri: str
    tokens: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "adlake-flight"

    def connect(self) -> Session:
        return _FlightSession(self)


@dataclass
class AdlakeRustLoad:
    """adlake over Flight SQL from `adlake-load`, the repository's Rust
    client (`flight-server/src/bin/load.rs`): the same two calls as
    `AdlakeFlightDirect`, without a Python client around them. It runs
    all of a measurement itself (its own workers, one connection each)
    and hands back every latency, so it has `measure` instead of
    `connect`."""

    binary: Path
    uri: str
    tokens: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "adlake-rust"

    def run_load(self, query: Query, runs: int, concurrency: int, warmup: int) -> dict:
        import json
        import os
        import subprocess

        cmd = [str(self.binary), "--flight", self.uri, "--sql", query.sql, "--runs", str(runs),
               "--concurrency", str(concurrency), "--warmup", str(warmup),
               "--timeout", str(int(CALL_TIMEOUT_S))]  # fmt: skip
        for name, value in self.headers.items():
            cmd += ["--header", f"{name}={value}"]
        # The token goes through the environment, not the command line.
        env = {**os.environ, "ADLAKE_TOKEN": self.tokens[query.scope]}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CALL_TIMEOUT_S * 4)
        if done.returncode != 0:
            raise RuntimeError(f"adlake-load exited with {done.returncode}: {done.stderr.strip()}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def statement_query_command(sql: str) -> bytes:
    """A Flight SQL `CommandStatementQuery` (field 1: the query) packed in a
    `google.protobuf.Any`, as a Flight descriptor's command."""
    from google.protobuf import any_pb2

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = sql.encode()
    message = b"\x0a" + varint(len(body)) + body
    packed = any_pb2.Any(
        type_url="type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery", value=message
    )
    return packed.SerializeToString()


class _FlightSession:
    def __init__(self, engine: AdlakeFlightDirect) -> None:
        import pyarrow.flight as flight

        self._flight = flight
        self._client = flight.FlightClient(engine.uri)
        self._options = {
            scope: flight.FlightCallOptions(
                timeout=CALL_TIMEOUT_S,
                headers=[(b"authorization", f"Bearer {token}".encode())]
                + [(k.encode(), v.encode()) for k, v in engine.headers.items()],
            )
            for scope, token in engine.tokens.items()
        }
        self._commands: dict[str, bytes] = {}

    def run(self, query: Query) -> pa.Table:
        command = self._commands.get(query.sql)
        if command is None:
            command = self._commands.setdefault(query.sql, statement_query_command(query.sql))
        options = self._options[query.scope]
        info = self._client.get_flight_info(self._flight.FlightDescriptor.for_command(command), options)
        tables = [self._client.do_get(e.ticket, options).read_all() for e in info.endpoints]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def close(self) -> None:
        self._client.close()


def _read_delta_parquet(files: list[str]) -> str:
    """The `read_parquet` of a Delta version's files. Delta writes partition
    values into the path, not the file, so it reads with hive partitioning
    on and the partition types declared."""
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return (
        f"read_parquet([{listed}], hive_partitioning = true, "
        f"hive_types = {{'client_id': VARCHAR, 'date': DATE}})"
    )


class DuckDbLocal:
    """DuckDB in-process over the Parquet files of the Delta tables.

    Each table is a view over `read_parquet` of the files of its current
    Delta version (see `_read_delta_parquet`). Each worker gets its own
    cursor of one shared database, as DuckDB intends for threads.
    """

    name = "duckdb"

    def __init__(self, warehouse: Path, tables: list[str], threads: int | None = None) -> None:
        import duckdb
        from deltalake import DeltaTable

        self.versions: dict[str, int] = {}
        self.file_counts: dict[str, int] = {}
        self._db = duckdb.connect(":memory:")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        for table in tables:
            dt = DeltaTable(str(warehouse / table))
            self.versions[table] = dt.version()
            files = dt.file_uris()
            self.file_counts[table] = len(files)
            self._db.execute(f"CREATE VIEW {table} AS SELECT * FROM {_read_delta_parquet(files)}")

    def tables_read(self, queries: list[Query]) -> list[str]:
        """The tables of this database that `queries` read (CTE names left out)."""
        import duckdb

        views = {t.lower(): t for t in self.versions}
        read: set[str] = set()
        # Parsed on an empty database: asked of this one, DuckDB binds the views.
        with duckdb.connect(":memory:") as parser:
            for q in queries:
                read |= {views[n.lower()] for n in parser.get_table_names(q.sql) if n.lower() in views}
        return [t for t in self.versions if t in read]

    def connect(self) -> Session:
        return _DuckSession(self._db.cursor())


# The sort key of the native tables: what every dashboard query filters on.
NATIVE_SORT_KEY = ("client_id", "date")


class DuckDbNative:
    """DuckDB in-process with the rows in its own storage: what an agency
    would set up with DuckDB alone.

    Each table is `CREATE TABLE t AS SELECT * FROM read_parquet(...) ORDER BY
    client_id, date` over the files of the given Delta versions (the same
    ones `DuckDbLocal` reads), in an in-memory database; a table without
    both columns is loaded unsorted. The load is timed and its rows counted.
    Each worker gets its own cursor of one shared database, as `DuckDbLocal`.
    """

    name = "duckdb-native"

    def __init__(self, warehouse: Path, versions: dict[str, int], threads: int | None = None) -> None:
        import time

        import duckdb
        from deltalake import DeltaTable

        self.versions = dict(versions)
        self.file_counts: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.load_seconds: dict[str, float] = {}
        self.order_by: dict[str, list[str]] = {}
        self._db = duckdb.connect(":memory:")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        for table, version in self.versions.items():
            dt = DeltaTable(str(warehouse / table), version=version)
            files = dt.file_uris()
            self.file_counts[table] = len(files)
            columns = {f.name for f in dt.schema().fields}
            key = [c for c in NATIVE_SORT_KEY if c in columns]
            self.order_by[table] = key if len(key) == len(NATIVE_SORT_KEY) else []
            order = f" ORDER BY {', '.join(self.order_by[table])}" if self.order_by[table] else ""
            t0 = time.perf_counter()
            self._db.execute(f"CREATE TABLE {table} AS SELECT * FROM {_read_delta_parquet(files)}{order}")
            self.load_seconds[table] = time.perf_counter() - t0
            self.rows[table] = self._db.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_load_seconds(self) -> float:
        return sum(self.load_seconds.values())

    def memory_bytes(self) -> int | None:
        """What DuckDB's buffer manager holds (the tables, once loaded), or
        None where `duckdb_memory()` is missing."""
        try:
            return int(self._db.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0])
        except Exception:  # noqa: BLE001 - informative only
            return None

    def as_json(self) -> dict:
        return {
            "versions": self.versions,
            "files": self.file_counts,
            "order_by": self.order_by,
            "rows": self.rows,
            "load_seconds": {t: round(s, 3) for t, s in self.load_seconds.items()},
            "total_rows": self.total_rows,
            "total_load_seconds": round(self.total_load_seconds, 3),
            "memory_bytes": self.memory_bytes(),
        }

    def connect(self) -> Session:
        return _DuckSession(self._db.cursor())


class _DuckSession:
    def __init__(self, cursor) -> None:
        self._cur = cursor

    def run(self, query: Query) -> pa.Table:
        return self._cur.sql(query.sql).to_arrow_table()

    def close(self) -> None:
        self._cur.close()


# --------------------------------------------------------------------------
# Answer comparison
# --------------------------------------------------------------------------

FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-9


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float, decimal.Decimal)) or not isinstance(b, (int, float, decimal.Decimal)):
            return False
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        # Sums of floats depend on the order rows are added in.
        return math.isclose(fa, fb, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
    if isinstance(a, (int, decimal.Decimal)) and isinstance(b, (int, decimal.Decimal)):
        # Decimal sums are exact in both engines (DuckDB may widen to HUGEINT / DECIMAL(38)).
        return decimal.Decimal(a) == decimal.Decimal(b)
    return a == b


def differences(got: pa.Table, want: pa.Table, limit: int = 5) -> list[str]:
    """Empty when `got` answers the same as `want`: same column names, same
    rows in the same order, exact for decimals and integers, 1e-9 relative
    for floats."""
    problems: list[str] = []
    if got.column_names != want.column_names:
        return [f"columns {got.column_names} != {want.column_names}"]
    if got.num_rows != want.num_rows:
        problems.append(f"{got.num_rows} rows != {want.num_rows} rows")
    for i, (g, w) in enumerate(zip(got.to_pylist(), want.to_pylist(), strict=False)):
        for col in got.column_names:
            if not _same(g[col], w[col]):
                problems.append(f"row {i} column {col}: {g[col]!r} != {w[col]!r}")
                if len(problems) >= limit:
                    return problems
    if want.num_rows == 0:
        problems.append("the reference answer is empty: the query checks nothing")
    return problems


# --------------------------------------------------------------------------
# gRPC QueryMetrics
# --------------------------------------------------------------------------


def load_metrics_stubs(proto_root: Path, out_dir: Path):
    """Generates the Python stubs of adlake.v1.MetricsService from the
    repository's .proto (grpcio-tools) and imports them."""
    import importlib
    import sys

    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    proto = "adlake/v1/metrics.proto"
    code = protoc.main(
        ["protoc", f"-I{proto_root}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed on {proto_root / proto} ({code})")
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("adlake.v1.metrics_pb2")
    grpc_mod = importlib.import_module("adlake.v1.metrics_pb2_grpc")
    return pb2, grpc_mod


@dataclass
class AdlakeGrpcMetrics:
    """adlake's metric layer over gRPC `QueryMetrics`, on the same port as
    Flight SQL. Runs the queries that carry a `metric_request`; `bypass`
    sets `bypass_cache` (the `uncached` mode)."""

    addr: str
    tokens: dict[str, str]
    stubs: tuple
    bypass: bool
    name: str = "adlake-grpc"

    def supports(self, query: Query) -> bool:
        return query.metric_request is not None

    def connect(self) -> Session:
        return _GrpcSession(self)


class _GrpcSession:
    def __init__(self, engine: AdlakeGrpcMetrics) -> None:
        import grpc

        self._engine = engine
        self._pb2, grpc_mod = engine.stubs
        self._channel = grpc.insecure_channel(engine.addr)
        self._stub = grpc_mod.MetricsServiceStub(self._channel)

    def run(self, query: Query) -> pa.Table:
        from google.protobuf import json_format

        request = json_format.ParseDict(query.metric_request, self._pb2.QueryMetricsRequest())
        request.bypass_cache = self._engine.bypass
        token = self._engine.tokens[query.scope]
        response = self._stub.QueryMetrics(
            request, metadata=[("authorization", f"Bearer {token}")], timeout=CALL_TIMEOUT_S
        )
        names = [c.name for c in response.columns]
        columns: list[list] = [[] for _ in names]
        for row in response.rows:
            for i, v in enumerate(row.values):
                kind = v.WhichOneof("kind")
                columns[i].append(None if kind is None else getattr(v, kind))
        return pa.table({n: pa.array(c) for n, c in zip(names, columns, strict=True)})

    def close(self) -> None:
        self._channel.close()
