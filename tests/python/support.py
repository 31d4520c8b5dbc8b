"""Helpers of the Python client interop tests: the warehouse and its
independent oracle, the auth file, the server process, client helpers and a
hand-written encoder of the few Flight SQL protobuf messages the raw
`pyarrow.flight` tests send.

Expected numbers never come from the server: `Oracle` reads the Delta tables
with delta-rs' Python bindings and sums them with `pyarrow.compute`.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from adbc_driver_manager import AdbcStatusCode
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("ADLAKE_BIN_DIR", REPO / "target" / "debug"))

# Small enough for a debug build on two cores, big enough for several files
# per partition and every platform.
DEMO_ARGS = [
    "--clients", "3",
    "--days", "30",
    "--rows", "20000",
    "--seed", "7",
    "--end-date", "2026-10-31",
]  # fmt: skip
DEMO_CLIENTS = 3

INGEST_TIMEOUT_S = float(os.environ.get("ADLAKE_TEST_INGEST_TIMEOUT", "600"))
STARTUP_TIMEOUT_S = float(os.environ.get("ADLAKE_TEST_STARTUP_TIMEOUT", "120"))
CALL_TIMEOUT_S = float(os.environ.get("ADLAKE_TEST_CALL_TIMEOUT", "60"))

TABLES = ["ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine", "fx_rates"]
FACT_TABLES = ["ad_performance", "web_sessions", "orders"]
# Tables with rows that belong to one client.
CLIENT_TABLES = ["ad_performance", "web_sessions", "orders", "ingest_runs", "quarantine"]

READY_LINE = re.compile(r"^adlake ready flight=(?P<flight>\S+) http=(?P<http>\S+)\s*$")

# Servers started by this session, so a failing test can show their stderr.
STARTED_SERVERS: list[Server] = []


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"binary {path} not found or not executable. Build it first "
            f"(`cargo build --workspace --bins`) or point ADLAKE_BIN_DIR at the "
            f"folder holding adlake and adlake-ingest.",
            pytrace=False,
        )
    return path


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Warehouse and the independent oracle
# --------------------------------------------------------------------------


@dataclass
class Warehouse:
    root: Path  # or an object-store URL (str) with storage_options
    clients: list[str]
    storage_options: dict[str, str] | None = None

    def path(self, table: str) -> Path:
        return self.root / table

    def delta(self, table: str) -> DeltaTable:
        if self.storage_options is not None:
            return DeltaTable(f"{str(self.root).rstrip('/')}/{table}", storage_options=self.storage_options)
        return DeltaTable(str(self.path(table)))

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        return self.delta(table).to_pyarrow_table(columns=columns)


def _widen_decimals(table: pa.Table) -> pa.Table:
    """Sums of decimal128(18, 6) are exact in decimal128(38, 6)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.decimal128(38, f.type.scale)))
    return table


class Oracle:
    """Expected answers worked out from the Delta files, never from the server."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._cache: dict[str, pa.Table] = {}

    def table(self, name: str) -> pa.Table:
        if name not in self._cache:
            self._cache[name] = self._warehouse.read(name)
        return self._cache[name]

    def sums_by_client(self, table: str, measures: list[str]) -> dict[str, dict[str, object]]:
        """{client: {measure: sum, ..., "row_count": rows}} with decimals as Decimal."""
        t = _widen_decimals(self.table(table).select(["client_id", *measures]))
        agg = t.group_by("client_id").aggregate([(m, "sum") for m in measures] + [("client_id", "count")])
        out: dict[str, dict[str, object]] = {}
        for row in agg.to_pylist():
            client = row["client_id"]
            out[client] = {m: row[f"{m}_sum"] for m in measures}
            out[client]["row_count"] = row["client_id_count"]
        return out

    def rows_of(self, table: str, client: str) -> int:
        t = self.table(table)
        return pc.sum(pc.equal(t["client_id"], client)).as_py() or 0


def as_text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Principals and the auth file
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    name: str
    token: str
    clients: tuple[str, ...]


@dataclass(frozen=True)
class Principals:
    agency: Principal
    a: Principal  # sees client A only
    b: Principal  # sees client B only

    def all(self) -> list[Principal]:
        return [self.agency, self.a, self.b]


def write_auth_file(path: Path, principals: list[Principal]) -> None:
    # JSON strings of ASCII text are valid TOML basic strings.
    parts = []
    for p in principals:
        digest = hashlib.sha256(p.token.encode()).hexdigest()
        parts.append(
            "[[principal]]\n"
            f"name = {json.dumps(p.name)}\n"
            f"token_sha256 = {json.dumps(digest)}\n"
            f"clients = [{', '.join(json.dumps(c) for c in p.clients)}]\n"
        )
    path.write_text("\n".join(parts))
    path.chmod(0o600)


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; waits for the process to go."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Server:
    process: subprocess.Popen
    stderr_path: Path
    flight_addr: str = ""
    http_addr: str = ""
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def flight_uri(self) -> str:
        return f"grpc://{self.flight_addr}"

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.http_addr}{path}", timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def stderr_tail(self, lines: int = 80) -> str:
        try:
            return tail(self.stderr_path.read_text(errors="replace"), lines)
        except OSError as e:
            return f"<cannot read {self.stderr_path}: {e}>"

    def describe(self) -> str:
        state = "running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        return (
            f"adlake pid {self.process.pid} ({state}), flight={self.flight_addr or '?'} "
            f"http={self.http_addr or '?'}\n--- stdout ---\n{tail(chr(10).join(self.stdout_lines), 20)}\n"
            f"--- stderr (tail) ---\n{self.stderr_tail()}"
        )

    def stop(self) -> None:
        stop_process(self.process)


def start_server(warehouse: Warehouse, auth_file: Path, workdir: Path, extra_args: list[str] | None = None) -> Server:
    args = ["--warehouse", str(warehouse.root), "--auth-file", str(auth_file), *(extra_args or [])]
    return launch_adlake(args, cwd=workdir, stderr_path=workdir / "adlake.stderr.log")


def launch_adlake(
    args: list[str],
    cwd: Path,
    stderr_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> Server:
    """`adlake ARGS` on free loopback ports (`--flight-addr` and `--http-addr`
    port 0) in `cwd`, once it printed its ready line and /readyz answers 200;
    the test fails with the server's output otherwise."""
    cmd = [str(binary("adlake")), *args, "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    with stderr_path.open("wb") as stderr_file:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            env=env if env is not None else {**os.environ, "RUST_BACKTRACE": "1"},
            cwd=cwd,
        )
    server = Server(process=process, stderr_path=stderr_path)
    STARTED_SERVERS.append(server)

    # Read stdout on a thread for the server's whole life: the ready line
    # arrives with a deadline, and later output never fills the pipe.
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            server.stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="adlake-stdout", daemon=True).start()

    def give_up(why: str) -> None:
        server.stop()
        pytest.fail(f"`{' '.join(cmd)}` in {cwd}: {why}\n{server.describe()}", pytrace=False)

    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            give_up(f"no ready line within {timeout_s:.0f}s")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            process.wait(timeout=10)
            give_up("exited before printing the ready line")
        m = READY_LINE.match(line)
        if m:
            server.flight_addr, server.http_addr = m["flight"], m["http"]
            break

    while True:
        try:
            status, _ = server.http_get("/readyz", timeout=2)
            if status == 200:
                break
        except OSError:
            pass
        if process.poll() is not None:
            give_up("exited while waiting for /readyz")
        if time.monotonic() > deadline:
            give_up(f"/readyz not 200 within {timeout_s:.0f}s")
        time.sleep(0.2)
    return server


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


def adbc_db_kwargs(token: str | None = None, username: str | None = None, password: str | None = None) -> dict:
    from adbc_driver_flightsql import DatabaseOptions

    kwargs = {
        DatabaseOptions.TIMEOUT_QUERY.value: str(CALL_TIMEOUT_S),
        DatabaseOptions.TIMEOUT_FETCH.value: str(CALL_TIMEOUT_S),
        DatabaseOptions.TIMEOUT_UPDATE.value: str(CALL_TIMEOUT_S),
    }
    if token is not None:
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    if username is not None:
        kwargs["username"] = username
        kwargs["password"] = password or ""
    return kwargs


def query(conn, sql: str, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def as_decimal(v: object) -> decimal.Decimal:
    assert isinstance(v, decimal.Decimal), f"expected a Decimal, got {type(v).__name__} {v!r}"
    return v


# --------------------------------------------------------------------------
# Flight SQL commands, hand-encoded
#
# The raw pyarrow.flight tests send Flight SQL commands without generated
# protobuf code: a command is a `google.protobuf.Any` whose `value` is the
# command message. Only varints and length-delimited fields are needed.
# --------------------------------------------------------------------------

FLIGHT_SQL_TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def pb_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative varints are not needed here")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes_field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2): string, bytes or message."""
    return pb_varint(number << 3 | 2) + pb_varint(len(data)) + data


def pb_any(message_name: str, value: bytes) -> bytes:
    """google.protobuf.Any { string type_url = 1; bytes value = 2; }"""
    return pb_bytes_field(1, (FLIGHT_SQL_TYPE_PREFIX + message_name).encode()) + pb_bytes_field(2, value)


def command_statement_query(sql: str) -> bytes:
    """Any(CommandStatementQuery { string query = 1; })"""
    return pb_any("CommandStatementQuery", pb_bytes_field(1, sql.encode("utf-8")))


def pb_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Decodes one message level into (field number, wire type, value)."""
    fields = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, wire, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, wire, data[i : i + length]))
            i += length
        elif wire == 1:
            fields.append((number, wire, data[i : i + 8]))
            i += 8
        elif wire == 5:
            fields.append((number, wire, data[i : i + 4]))
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return fields


# --------------------------------------------------------------------------
# gRPC statuses through ADBC
# --------------------------------------------------------------------------

# gRPC status -> (numeric code, the name the Go ADBC driver writes, ADBC status).
GRPC_STATUS = {
    "INVALID_ARGUMENT": (3, "InvalidArgument", AdbcStatusCode.INVALID_ARGUMENT),
    "NOT_FOUND": (5, "NotFound", AdbcStatusCode.NOT_FOUND),
    "PERMISSION_DENIED": (7, "PermissionDenied", AdbcStatusCode.UNAUTHORIZED),
    "UNAUTHENTICATED": (16, "Unauthenticated", AdbcStatusCode.UNAUTHENTICATED),
}


def grpc_status_of(err: BaseException) -> str | None:
    """The gRPC status behind an ADBC error: the vendor code the Flight SQL
    driver sets, or else the status name in the message."""
    vendor = getattr(err, "vendor_code", None)
    for name, (code, _, _) in GRPC_STATUS.items():
        if vendor == code:
            return name
    text = str(err)
    for name, (_, go_name, _) in GRPC_STATUS.items():
        if go_name in text or name in text:
            return name
    return None


def assert_adbc_error(err: BaseException, statuses: set[str], message: str | None = None) -> None:
    status = grpc_status_of(err)
    assert status in statuses, (
        f"want gRPC status {sorted(statuses)}, got {status} "
        f"(ADBC status {getattr(err, 'status_code', None)!r}, vendor code {getattr(err, 'vendor_code', None)!r}): "
        f"{type(err).__name__}: {err}"
    )
    adbc_statuses = {GRPC_STATUS[s][2] for s in statuses}
    assert getattr(err, "status_code", None) in adbc_statuses, f"ADBC status {err.status_code!r}: {err}"
    if message is not None:
        assert re.search(message, str(err), re.IGNORECASE), f"message should match /{message}/i: {err}"


PROMETHEUS_SAMPLE = re.compile(r"^(?P<name>[a-z_:]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def latest_run_rows(rows: list[dict]) -> list[dict]:
    """The latest `ingest_runs` row of each run (docs/architecture.md, "Ingest
    runs"): the largest `finished_at`, a finish before a `started` row of the
    same instant. A run's state is that row's status."""
    latest: dict[str, dict] = {}
    for row in rows:
        key = (row["finished_at"], row["status"] != "started")
        seen = latest.get(row["run_id"])
        if seen is None or (seen["finished_at"], seen["status"] != "started") < key:
            latest[row["run_id"]] = row
    return list(latest.values())


def runs_by_state(rows: list[dict]) -> dict[tuple[str, str], int]:
    """Runs per (source, state), as the server's `adlake_ingest_runs` counts
    them: every (source, status) that has rows, each run once under its state."""
    counts: dict[tuple[str, str], int] = {(r["source"], r["status"]): 0 for r in rows}
    for row in latest_run_rows(rows):
        counts[(row["source"], row["status"])] += 1
    return counts


def metric_samples(body: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    out = {}
    for line in body.splitlines():
        m = PROMETHEUS_SAMPLE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
            out[(m["name"], labels)] = float(m["value"])
    return out


def metric_value(found: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not in /metrics: {sorted(k for k in found if k[0] == name)}"
    return found[key]


def scrape(server: Server) -> dict[tuple[str, frozenset], float]:
    status, body = server.http_get("/metrics")
    assert status == 200, body[:500]
    return metric_samples(body)


# --------------------------------------------------------------------------
# Stand-ins for outside HTTP APIs, and the ingest binary
# --------------------------------------------------------------------------


class StubServer:
    """A loopback HTTP server standing in for a platform's API: every GET is
    answered by `answer(path, headers) -> (status, content_type, body)`;
    `paths` records what was asked, in order."""

    def __init__(self, answer) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                stub.paths.append(self.path)
                status, kind, body = answer(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()


def run_ingest(*args: str) -> subprocess.CompletedProcess:
    """`adlake-ingest ARGS`, its output captured as text."""
    return subprocess.run([str(binary("adlake-ingest")), *args], capture_output=True, text=True, timeout=INGEST_TIMEOUT_S)
