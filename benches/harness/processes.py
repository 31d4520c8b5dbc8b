"""The real binaries: dataset generation with `adlake-ingest demo`, and the
`adlake` server started with an auth file on free loopback ports.

Peak memory of a process is its kernel high-water mark: `VmHWM` in
`/proc/<pid>/status` while it runs, `ru_maxrss` from `wait4` once it exits.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

READY_LINE = re.compile(r"^adlake ready flight=(?P<flight>\S+) http=(?P<http>\S+)\s*$")
GENERATOR_LINE = re.compile(r"^generator:\s+(?P<rows>\d+) rows in (?P<secs>[\d.]+)s")
SLICES_LINE = re.compile(r"^slices:\s+(?P<slices>\d+) in (?P<commits>\d+) commits, (?P<secs>[\d.]+)s")
TABLE_LINE = re.compile(r"^(?P<table>\w+)\s+(?P<rows>\d+) rows written\s+version (?P<version>\d+)")


class HarnessError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def binary(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise HarnessError(
            f"binary {path} not found; build it first (`cargo build --release --workspace --bin adlake "
            f"--bin adlake-ingest --bin adlake-load`, or `cargo build --workspace --bins --tests` for target/debug) "
            f"or pass --bin-dir"
        )
    return path


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set of a running process, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def vm_rss_bytes(pid: int) -> int | None:
    """Current resident set of a running process, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class GenerateResult:
    seconds: float
    slices: int
    commits: int
    rows_by_table: dict[str, int]
    generator_rows: int
    generator_seconds: float
    peak_rss_bytes: int
    stdout: str

    @property
    def total_rows(self) -> int:
        return sum(self.rows_by_table.values())

    def as_json(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "slices": self.slices,
            "commits": self.commits,
            "rows_by_table": self.rows_by_table,
            "rows_per_sec": round(self.total_rows / self.seconds) if self.seconds else None,
            "generator_rows": self.generator_rows,
            "generator_seconds": round(self.generator_seconds, 3),
            "generator_rows_per_sec": round(self.generator_rows / self.generator_seconds)
            if self.generator_seconds
            else None,
            "peak_rss_bytes": self.peak_rss_bytes,
        }


@dataclass(frozen=True)
class Measured:
    """One run of a command to completion: exit code, output, wall time and
    peak resident memory (from `wait4`)."""

    returncode: int
    stdout: str
    seconds: float
    peak_rss_bytes: int


def run_measured(cmd: list[str], stderr_log: Path, timeout_s: float) -> Measured:
    """Runs `cmd` with stderr to `stderr_log`, killing it past `timeout_s`."""
    started = time.monotonic()
    with stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        assert proc.stdout is not None
        out_chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        deadline = started + timeout_s
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"`{' '.join(cmd)}` did not finish in {timeout_s:.0f}s")
                time.sleep(0.05)
        except BaseException:
            # Past the deadline, or the harness interrupted: the command
            # must not outlive it.
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=10)
    return Measured(
        returncode=os.waitstatus_to_exitcode(status),
        stdout=b"".join(out_chunks).decode("utf-8", "replace"),
        seconds=time.monotonic() - started,
        peak_rss_bytes=usage.ru_maxrss * 1024,
    )


def generate(bin_dir: Path, warehouse: Path, args: list[str], timeout_s: float) -> GenerateResult:
    """Runs `adlake-ingest demo` into an empty `warehouse` and parses its summary."""
    ingest = binary(bin_dir, "adlake-ingest")
    cmd = [str(ingest), "demo", "--warehouse", str(warehouse), *args]
    log = warehouse.parent / f"{warehouse.name}.ingest.log"
    run = run_measured(cmd, log, timeout_s)
    seconds, stdout = run.seconds, run.stdout
    if run.returncode != 0:
        raise HarnessError(
            f"`{' '.join(cmd)}` exited with {run.returncode}\n--- stderr (tail) ---\n"
            f"{tail(log.read_text(errors='replace'))}"
        )
    rows: dict[str, int] = {}
    slices = commits = gen_rows = 0
    gen_secs = 0.0
    for line in stdout.splitlines():
        if m := TABLE_LINE.match(line):
            rows[m["table"]] = int(m["rows"])
        elif m := SLICES_LINE.match(line):
            slices, commits = int(m["slices"]), int(m["commits"])
        elif m := GENERATOR_LINE.match(line):
            gen_rows, gen_secs = int(m["rows"]), float(m["secs"])
    if not rows:
        raise HarnessError(f"`{' '.join(cmd)}` printed no table summary:\n{stdout}")
    return GenerateResult(
        seconds=seconds,
        slices=slices,
        commits=commits,
        rows_by_table=rows,
        generator_rows=gen_rows,
        generator_seconds=gen_secs,
        peak_rss_bytes=run.peak_rss_bytes,
        stdout=stdout,
    )


@dataclass(frozen=True)
class Principal:
    name: str
    token: str
    clients: tuple[str, ...]

    @staticmethod
    def new(name: str, clients: tuple[str, ...]) -> Principal:
        return Principal(name, secrets.token_urlsafe(32), clients)


def write_auth_file(path: Path, principals: list[Principal]) -> None:
    """The README's auth file: token_sha256 is the hex SHA-256 of the token."""
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

    def peak_rss_bytes(self) -> int | None:
        return vm_hwm_bytes(self.process.pid)

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.http_addr}{path}", timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def describe(self) -> str:
        state = "running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        try:
            err = tail(self.stderr_path.read_text(errors="replace"))
        except OSError as e:
            err = f"<cannot read {self.stderr_path}: {e}>"
        return f"adlake pid {self.process.pid} ({state})\n--- stderr (tail) ---\n{err}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    bin_dir: Path, warehouse: Path, auth_file: Path, workdir: Path, timeout_s: float, extra_args: list[str]
) -> Server:
    """Starts `adlake` on port 0 and waits for its ready line and /readyz."""
    adlake = binary(bin_dir, "adlake")
    stderr_path = workdir / "adlake.stderr.log"
    cmd = [
        str(adlake),
        "--warehouse", str(warehouse),
        "--flight-addr", "127.0.0.1:0",
        "--http-addr", "127.0.0.1:0",
        "--auth-file", str(auth_file),
        *extra_args,
    ]  # fmt: skip
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=workdir,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )  # fmt: skip
    server = Server(process=process, stderr_path=stderr_path)
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
        raise HarnessError(f"`{' '.join(cmd)}`: {why}\n{server.describe()}")

    try:
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
            if m := READY_LINE.match(line):
                server.flight_addr, server.http_addr = m["flight"], m["http"]
                break
        while True:
            try:
                if server.http_get("/readyz", timeout=2)[0] == 200:
                    return server
            except OSError:
                pass
            if process.poll() is not None:
                give_up("exited while waiting for /readyz")
            if time.monotonic() > deadline:
                give_up(f"/readyz not 200 within {timeout_s:.0f}s")
            time.sleep(0.2)
    except BaseException:
        # Interrupted while waiting: the server must not outlive the harness.
        server.stop()
        raise
