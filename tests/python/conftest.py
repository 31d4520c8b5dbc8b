"""Fixtures of the Python client interop tests.

The session builds one demo warehouse with the real `adlake-ingest` binary,
writes an auth file with three principals (the agency, which sees every
client, and two principals that each see one client), starts the real
`adlake` server on loopback port 0 and stops it at the end. A failing test's
report carries the server's stdout and stderr tail.

Binaries are taken from `ADLAKE_BIN_DIR` (default `<repo>/target/debug`);
`scripts/test.sh` builds them first.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from support import (
    DEMO_ARGS,
    INGEST_TIMEOUT_S,
    STARTED_SERVERS,
    TABLES,
    Oracle,
    Principal,
    Principals,
    Server,
    Warehouse,
    adbc_db_kwargs,
    as_text,
    binary,
    start_server,
    tail,
    write_auth_file,
)


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    ingest = binary("adlake-ingest")
    root = tmp_path_factory.mktemp("warehouse")
    cmd = [str(ingest), "demo", "--warehouse", str(root), *DEMO_ARGS]
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INGEST_TIMEOUT_S,
            env={**os.environ, "RUST_BACKTRACE": "1"},
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"`{' '.join(cmd)}` did not finish in {INGEST_TIMEOUT_S:.0f}s\n"
            f"--- stderr (tail) ---\n{tail(as_text(e.stderr))}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` exited with {done.returncode}\n"
            f"--- stdout (tail) ---\n{tail(done.stdout)}\n--- stderr (tail) ---\n{tail(done.stderr)}",
            pytrace=False,
        )
    print(f"\nadlake-ingest demo took {time.monotonic() - started:.1f}s")
    missing = [t for t in TABLES if not (root / t / "_delta_log").is_dir()]
    if missing:
        pytest.fail(f"adlake-ingest demo wrote no Delta log for {missing} under {root}", pytrace=False)
    ids = DeltaTable(str(root / "ad_performance")).to_pyarrow_table(columns=["client_id"])["client_id"]
    clients = sorted(pc.unique(ids).to_pylist())
    if len(clients) < 2:
        pytest.fail(f"demo data holds clients {clients}; the tenancy tests need at least two", pytrace=False)
    return Warehouse(root=root, clients=clients)


@pytest.fixture(scope="session")
def oracle(warehouse: Warehouse) -> Oracle:
    return Oracle(warehouse)


@pytest.fixture(scope="session")
def principals(warehouse: Warehouse) -> Principals:
    client_a, client_b = warehouse.clients[0], warehouse.clients[1]
    return Principals(
        agency=Principal("agency", secrets.token_urlsafe(32), ("*",)),
        a=Principal(f"{client_a}-analyst", secrets.token_urlsafe(32), (client_a,)),
        b=Principal(f"{client_b}-analyst", secrets.token_urlsafe(32), (client_b,)),
    )


@pytest.fixture(scope="session")
def server(warehouse: Warehouse, principals: Principals, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("server")
    auth_file = workdir / "auth.toml"
    write_auth_file(auth_file, principals.all())
    srv = start_server(warehouse, auth_file, workdir)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in STARTED_SERVERS:
            report.sections.append(("adlake server", srv.describe()))


@pytest.fixture(scope="session")
def adbc_connect(server: Server) -> Iterator:
    """connect(principal) -> DB-API connection with the principal's Bearer token."""
    import adbc_driver_flightsql.dbapi as flightsql

    opened = []

    def connect(principal: Principal, **kwargs):
        conn = flightsql.connect(
            server.flight_uri,
            db_kwargs=adbc_db_kwargs(token=principal.token),
            autocommit=True,
            **kwargs,
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing after a failed test must not mask it
            pass
