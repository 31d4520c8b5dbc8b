"""Alerts reach someone, and the dashboards add up with replicas: end to end
on loopback with the real binaries and the real Prometheus and Alertmanager
(Debian's `prometheus` and `prometheus-alertmanager`, unpacked by
scripts/test.sh, which passes their paths in PROMETHEUS and ALERTMANAGER).

One warehouse whose newest day is four days old (yesterday has not landed
for any client: the 08:00 client-local SLA is missed), two `adlake` server
replicas on it, and an `adlake-ingest worker` whose clients have no
credentials, so its jobs fail and `ingest_runs` gets failed rows. Prometheus
runs the shipped deploy/prometheus files and Alertmanager the shipped
deploy/alertmanager/alertmanager.yml, changed only where a test must (the
addresses, the intervals, `for:` durations and the webhook URL); the
webhook is a small HTTP server in this test. It checks that a freshness
alert and AdlakeIngestFailures arrive with their labels, each once and not
once per replica, and that the recording rules give the ingest totals of
`ingest_runs` as delta-rs counts them, where a plain sum over the two
replicas gives twice that.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable

from support import Principal, Warehouse, binary, runs_by_state, start_server, stop_process, tail, write_auth_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERT_WAIT_S = 90
SETTLE_WAIT_S = 45

pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def tool(env: str, *names: str, beside_promtool: bool = True) -> str:
    """A Prometheus tool from $ENV, PATH, or beside $PROMTOOL (the unpacked
    Debian packages put them all in one usr/bin)."""
    path = os.environ.get(env)
    for name in names:
        path = path or shutil.which(name)
    if not path and beside_promtool and os.environ.get("PROMTOOL"):
        for name in names:
            candidate = Path(os.environ["PROMTOOL"]).parent / name
            if candidate.is_file():
                path = str(candidate)
                break
    if not path or not Path(path).is_file():
        pytest.fail(f"{names[0]} not found: run through scripts/test.sh, or set {env}", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment without any adlake, cloud or platform settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ADLAKE_", "AWS_", "AZURE_", "GOOGLE_"))}


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = tail(self.log.read_text(errors="replace"), lines)
        except OSError as e:
            text = f"<cannot read {self.log}: {e}>"
        state = "running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        return f"--- {self.name} (pid {self.process.pid}, {state}), {self.log.name} tail ---\n{text}"

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Stack:
    work: Path
    procs: list[Proc] = field(default_factory=list)
    tails: list[Callable[[], str]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=self.work,
            )  # fmt: skip
        proc = Proc(name, process, log)
        self.procs.append(proc)
        self.tails.append(proc.tail)
        return proc

    def report(self) -> str:
        return "\n".join(t() for t in self.tails)


def wait_for(what: str, check: Callable[[], object], timeout: float, stack: Stack, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for proc in stack.procs:
            if proc.process.poll() is not None and proc.name != "worker":
                pytest.fail(f"{proc.name} exited while waiting for {what}\n{stack.report()}", pytrace=False)
        try:
            got = check()
            if got:
                return got
        except (OSError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(every)
    pytest.fail(f"no {what} within {timeout:.0f}s (last error: {last_error!r})\n{stack.report()}", pytrace=False)


def http_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Webhook:
    """Alertmanager's webhook receiver: keeps every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                payload = json.loads(body)
                with owner.lock:
                    owner.alerts.extend(a | {"path": self.path} for a in payload.get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self.thread.start()

    def firing(self, alertname: str) -> list[dict]:
        with self.lock:
            return [a for a in self.alerts if a["labels"].get("alertname") == alertname and a["status"] == "firing"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def describe(self) -> str:
        with self.lock:
            names = sorted({(a["labels"].get("alertname"), a["status"]) for a in self.alerts})
        return f"--- webhook got {len(self.alerts)} alerts: {names}"


class Prometheus:
    def __init__(self, addr: str) -> None:
        self.base = f"http://{addr}"

    def query(self, expr: str, at: float | None = None) -> dict[tuple, float]:
        """{sorted label items (no __name__): value} of an instant query."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        got = http_json(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert got["status"] == "success", got
        out = {}
        for sample in got["data"]["result"]:
            labels = tuple(sorted((k, v) for k, v in sample["metric"].items() if k != "__name__"))
            out[labels] = float(sample["value"][1])
        return out


def by(labels: dict[tuple, float], *names: str) -> dict[tuple, float]:
    """Re-keys query results by the values of `names`."""
    return {tuple(dict(k)[n] for n in names): v for k, v in labels.items()}


# --------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(work=tmp_path)
    try:
        yield s
    finally:
        for proc in reversed(s.procs):
            proc.stop()
        # Shown by pytest only when the test failed.
        print(s.report())


CLIENT_ZONES = ["America/New_York", "Europe/Berlin"]


def demo_end() -> date:
    # The newest day is four days ago: yesterday has not landed, and it is
    # past 07:00 and 08:00 client-local in every zone.
    return date.today() - timedelta(days=4)


def demo_warehouse(root: Path) -> list[str]:
    end = demo_end()
    cmd = [str(binary("adlake-ingest")), "demo", "--warehouse", str(root), "--clients", "2", "--days", "14",
           "--rows", "2000", "--seed", "17", "--end-date", end.isoformat()]  # fmt: skip
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=clean_env())
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{tail(done.stderr)}"
    ids = DeltaTable(str(root / "ad_performance")).to_pyarrow_table(columns=["client_id"])["client_id"]
    clients = sorted(pc.unique(ids).to_pylist())
    assert len(clients) == 2, clients
    return clients


def client_config(path: Path, clients: list[str]) -> None:
    # The demo's clients, each with a google_ads source whose credentials
    # are set nowhere: every job of the worker fails on exactly that, before
    # any request, and is recorded as a failed run.
    parts = []
    for client, zone in zip(clients, CLIENT_ZONES, strict=True):
        parts.append(
            f'[[client]]\nid = "{client}"\ntime_zone = "{zone}"\ncurrency = "USD"\n\n'
            f'[[client.source]]\nplatform = "google_ads"\naccounts = ["1234567890"]\n'
            f'credentials = "{client}-google"\nlookback_days = 1\n'
        )
    path.write_text("\n".join(parts))


def ingest_runs(root: Path):
    return DeltaTable(str(root / "ingest_runs")).to_pyarrow_table(
        columns=["run_id", "client_id", "source", "status", "finished_at", "rows_written", "api_calls"]
    )


def alertmanager_config(path: Path, webhook_url: str) -> None:
    """The shipped config; only the receiver's URL is the test's webhook and
    the grouping waits are 1s (30s and 5m would outlast the test)."""
    config = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    for route in [config["route"], *config["route"].get("routes", [])]:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
    path.write_text(yaml.safe_dump(config))


def prometheus_config(work: Path, servers: list[str], worker: str, alertmanager: str) -> Path:
    """The shipped prometheus.yml and rule files, with the scrape targets and
    the Alertmanager on this test's loopback ports, 1s intervals, and every
    `for:` of the alert rules 0s (so alerts fire at the first evaluation
    that holds); the expressions are the shipped ones."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    targets = {"adlake": servers, "adlake-ingest-worker": [worker]}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    (am,) = config["alerting"]["alertmanagers"]
    am["static_configs"] = [{"targets": [alertmanager]}]
    rule_files = []
    for shipped in config["rule_files"]:
        name = Path(shipped).name
        text = (DEPLOY / "prometheus" / name).read_text()
        text = re.sub(r"(?m)^(\s+for:\s*)\S+\s*$", r"\g<1>0s", text)
        (work / name).write_text(text)
        rule_files.append(str(work / name))
    config["rule_files"] = rule_files
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


def test_alerts_reach_the_webhook_and_totals_add_up_over_two_replicas(stack: Stack, tmp_path: Path):
    prometheus_bin = tool("PROMETHEUS", "prometheus")
    alertmanager_bin = tool("ALERTMANAGER", "alertmanager", "prometheus-alertmanager")
    templates = Path("/usr/share/prometheus/alertmanager/default.tmpl")
    if Path(alertmanager_bin).name == "prometheus-alertmanager" and not templates.is_file():
        # Debian's build reads its templates from there and stops without them.
        pytest.fail(f"{templates} missing: scripts/test.sh puts the package's templates there", pytrace=False)

    root = tmp_path / "warehouse"
    root.mkdir()
    clients = demo_warehouse(root)
    clients_toml = tmp_path / "clients.toml"
    client_config(clients_toml, clients)

    # Two server replicas on the one warehouse, each with the client list
    # (time zones) and a 1s refresh so they see the worker's runs quickly.
    auth = tmp_path / "auth.toml"
    write_auth_file(auth, [Principal("agency", secrets.token_urlsafe(16), ("*",))])
    servers = []
    for i in range(2):
        workdir = tmp_path / f"server{i}"
        workdir.mkdir()
        extra = ["--refresh-secs", "1", "--clients-config", str(clients_toml)]
        srv = start_server(Warehouse(root=root, clients=clients), auth, workdir, extra_args=extra)
        servers.append(srv)
        stack.tails.append(lambda srv=srv: f"--- adlake server ---\n{srv.describe()}")
    for srv in servers:
        stack.procs.append(Proc(f"adlake {srv.http_addr}", srv.process, srv.stderr_path))

    # The worker: every client due at once (--run-at 00:00), a tick a
    # second, no retries; its jobs fail for the missing credentials.
    worker = stack.start("worker", [
        str(binary("adlake-ingest")), "worker", "--config", str(clients_toml), "--warehouse", str(root),
        "--run-at", "00:00", "--tick-secs", "1", "--metrics-addr", "127.0.0.1:0", "--max-attempts", "1",
    ])  # fmt: skip
    worker_addr = wait_for(
        "worker metrics address",
        lambda: (m := re.search(r"metrics: http://(\S+)/metrics", worker.log.read_text(errors="replace"))) and m[1],
        60,
        stack,
    )

    def failed_rows() -> int:
        runs = ingest_runs(root)
        return pc.sum(pc.equal(runs["status"], "failed")).as_py() or 0

    wait_for("failed runs in ingest_runs", failed_rows, 60, stack)
    runs = ingest_runs(root).to_pylist()
    failed = [r for r in runs if r["status"] == "failed"]
    assert {(r["client_id"], r["source"]) for r in failed} == {(c, "google_ads") for c in clients}, failed

    # Alertmanager with the shipped config, Prometheus with the shipped
    # config and rules, a webhook to receive what Alertmanager sends.
    webhook = Webhook()
    stack.tails.append(webhook.describe)
    try:
        am_config = tmp_path / "alertmanager.yml"
        alertmanager_config(am_config, webhook.url)
        am_addr = f"127.0.0.1:{free_port()}"
        stack.start("alertmanager", [
            alertmanager_bin, f"--config.file={am_config}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address={am_addr}", "--cluster.listen-address=",
        ])  # fmt: skip
        prom_addr = f"127.0.0.1:{free_port()}"
        prom_config = prometheus_config(tmp_path, [s.http_addr for s in servers], worker_addr, am_addr)
        stack.start("prometheus", [
            prometheus_bin, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address={prom_addr}",
        ])  # fmt: skip
        prom = Prometheus(prom_addr)

        # Both alerts reach the webhook, with their labels.
        freshness = ("AdlakeFreshnessSlaMissed", "AdlakeFreshnessSlaAtRisk")

        def delivered() -> bool:
            fresh_clients = {a["labels"].get("client") for n in freshness for a in webhook.firing(n)}
            return fresh_clients == set(clients) and bool(webhook.firing("AdlakeIngestFailures"))

        wait_for("freshness and ingest-failure alerts at the webhook", delivered, ALERT_WAIT_S, stack)
        fresh = [a for n in freshness for a in webhook.firing(n)]
        for alert in fresh:
            assert alert["labels"]["client"] in clients and alert["labels"]["source"], alert
            assert alert["labels"]["severity"] == "page" and "instance" not in alert["labels"], alert
            assert alert["annotations"]["runbook"].startswith("docs/runbook.md#adlakefreshness"), alert
            assert alert["path"] == "/alerts"
        assert {a["labels"]["client"] for a in fresh} == set(clients), fresh
        (failure, *_) = webhook.firing("AdlakeIngestFailures")
        assert failure["labels"]["source"] == "google_ads" and failure["labels"]["status"] == "failed", failure
        assert "instance" not in failure["labels"] and failure["labels"]["severity"] == "ticket", failure
        assert re.fullmatch(r"\d+ google_ads ingest runs failed in the last hour", failure["annotations"]["summary"])

        # The lag is counted in each client's time zone, from the client
        # list the servers got (--clients-config): the newest day (the demo's
        # end date) ended at the next local midnight.
        lags = by(prom.query("client_source:adlake_freshness_lag_seconds:max"), "client", "source")
        for client, zone in zip(clients, CLIENT_ZONES, strict=True):
            newest = min(v for (c, _), v in lags.items() if c == client)
            end = datetime.combine(demo_end() + timedelta(days=1), datetime.min.time(), ZoneInfo(zone))
            want = time.time() - end.timestamp()
            assert abs(newest - want) < 600, (client, zone, newest, want)

        # Each alert once, not once per replica: Prometheus' own ALERTS.
        firing = prom.query('ALERTS{alertstate="firing",alertname=~"AdlakeFreshnessSlaMissed|AdlakeIngestFailures"}')
        assert firing and all("instance" not in dict(k) for k in firing), firing
        lag = prom.query("adlake_freshness_lag_seconds > 32 * 3600")
        missed = by(prom.query('ALERTS{alertstate="firing",alertname="AdlakeFreshnessSlaMissed"}'), "client", "source")
        assert set(missed) == set(by(lag, "client", "source")) and len(lag) == 2 * len(missed), (missed, lag)

        # The totals. Stop the worker so ingest_runs holds still, then wait
        # until both replicas report the table's final state.
        worker.stop()
        runs = ingest_runs(root).to_pylist()
        # Each run once, under the status of its latest row; the row sums
        # over every row (a `started` row counts nothing).
        expected_runs: dict[tuple, float] = dict(runs_by_state(runs))
        expected_written: dict[tuple, float] = {}
        expected_calls: dict[tuple, float] = {}
        for r in runs:
            expected_written[(r["source"],)] = expected_written.get((r["source"],), 0) + (r["rows_written"] or 0)
            expected_calls[(r["source"],)] = expected_calls.get((r["source"],), 0) + (r["api_calls"] or 0)
        assert expected_runs[("google_ads", "failed")] >= 2 and sum(expected_written.values()) > 0

        def settled() -> float | None:
            # Both replicas scraped with the final counts, and the recording
            # rule evaluated after that.
            at = time.time()
            per_replica: dict[tuple, list[float]] = {}
            for labels, value in prom.query("adlake_ingest_runs", at).items():
                d = dict(labels)
                per_replica.setdefault((d["source"], d["status"]), []).append(value)
            if per_replica != {k: [v, v] for k, v in expected_runs.items()}:
                return None
            if by(prom.query("source_status:adlake_ingest_runs:max", at), "source", "status") != expected_runs:
                return None
            return at

        at = wait_for("both replicas and the recording rules at the final ingest_runs", settled, SETTLE_WAIT_S, stack)
        pairs = [
            ("source_status:adlake_ingest_runs:max", "sum by (source, status) (adlake_ingest_runs)", ("source", "status"), expected_runs),
            ("source:adlake_ingest_rows_written:max", "sum by (source) (adlake_ingest_rows_written)", ("source",), expected_written),
            ("source:adlake_ingest_api_calls_total:max", "sum by (source) (adlake_ingest_api_calls_total)", ("source",), expected_calls),
        ]  # fmt: skip
        for recorded, summed, labels, expected in pairs:
            got = by(prom.query(recorded, at), *labels)
            assert got == expected, (recorded, got, expected)
            # What the recording rules are for: the plain sum over the two
            # replicas counts every run twice.
            doubled = by(prom.query(summed, at), *labels)
            assert doubled == {k: 2 * v for k, v in expected.items()}, (summed, doubled, expected)
    finally:
        webhook.stop()
