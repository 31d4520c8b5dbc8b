"""Fair share between callers of the real `adlake` server.

    .venv/bin/python benches/harness/fairshare.py --dataset small --bin-dir target/release

The target: a well-behaved caller's dashboard p95 stays within 2x its idle
baseline while another caller keeps its 8 query slots busy with heavy
all-year scans and 200 connections send malformed requests, on this 2-core
machine; cached answers unaffected.

Steps: the dataset as `run.py` makes it (reused when the same arguments and
`adlake-ingest` built it); `adlake` started with an auth file holding two
principals, `dashboard` (the client with the most ad rows, as `run.py`
picks it) and `heavy` (the client with the next most rows, or `*` with
`--heavy-scope all`). Then four measurements of the dashboard caller, one
ADBC connection, its dashboard queries one after the other `--runs` times:

1. idle, uncached (`x-adlake-cache: bypass` on every call);
2. idle, cached (no header; one untimed pass first, so every run is a hit);
3. burst, uncached, and 4. burst, cached, while the burst runs: the heavy
   caller's `--heavy-threads` (8) threads, one ADBC connection each,
   looping an uncached all-year scan, and `--abuse-connections` (200)
   connections to the Flight port, half sending bytes that are not HTTP/2,
   half gRPC calls whose bodies do not decode. The heavy and malformed
   load run in their own processes, so their Python threads do not hold
   the measuring process's GIL.

Writes `fairshare-<dataset>.{md,json}` to `--out-dir`. Exit codes: 0 done,
1 a step failed, 3 `--max-ratio` was given and the uncached burst p95 is
more than that many times the idle one (or a dashboard query failed
during the burst).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import engines
import measure
import processes
import run
import workload
from report import mib
from workload import Query

REPO = run.REPO
MODES = ("uncached", "cached")
PHASES = ("idle", "burst")
log = run.log

# gRPC status code of a refusal for a limit (RESOURCE_EXHAUSTED), as the
# Flight SQL ADBC driver reports it in `vendor_code`, and the name its
# message carries.
RESOURCE_EXHAUSTED = (8, "ResourceExhausted", "RESOURCE_EXHAUSTED")
# How long a refused heavy thread waits before asking again: it keeps its
# slots as busy as the server lets it without spinning on refusals.
REFUSED_BACKOFF_S = 0.05
# Methods the undecodable gRPC bodies go to (as tests/python/test_abuse.py).
MALFORMED_METHODS = (
    "/arrow.flight.protocol.FlightService/GetFlightInfo",
    "/adlake.v1.MetricsService/QueryMetrics",
)


def heavy_sql(client: str | None) -> str:
    """A year of ad rows grouped by ad and week with every additive measure:
    the whole scan and a large aggregation on the server, a 1,000-row answer
    (the top of the ranking), so the load is the server's and not the
    client's Arrow decoding."""
    end = run.END_DATE
    scope = f"client_id = '{client.replace(chr(39), chr(39) * 2)}' AND " if client else ""
    return f"""SELECT campaign_id, ad_id, date_trunc('week', date) AS week,
    sum(spend) AS spend, sum(impressions) AS impressions, sum(clicks) AS clicks,
    sum(conversions) AS conversions, sum(conversion_value) AS conversion_value
FROM ad_performance
WHERE {scope}date > {workload.lit(end - timedelta(days=365))} AND date <= {workload.lit(end)}
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 1, 2, 3
LIMIT 1000"""


def is_resource_exhausted(err: BaseException) -> bool:
    code, go_name, name = RESOURCE_EXHAUSTED
    text = str(err)
    return getattr(err, "vendor_code", None) == code or go_name in text or name in text


def short(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


# --------------------------------------------------------------------------
# The burst: each load in its own process (spawned), stopped by an Event
# --------------------------------------------------------------------------


def _exit_with_parent(parent: int) -> None:
    """Ends this load process if the harness that started it is gone (killed
    before it could stop it)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _add(value, n: int = 1) -> None:
    with value.get_lock():
        value.value += n


def heavy_load(parent, uri, token, bypass, sql, threads, stop, started, completed, refused, failed, out) -> None:
    """`threads` workers, one ADBC connection each, running `sql` back to back
    until `stop`; a refused query (RESOURCE_EXHAUSTED) is asked again after
    `REFUSED_BACKOFF_S`."""
    import resource

    _exit_with_parent(parent)
    engine = engines.AdlakeFlightSql(uri, {"agency": token}, dict([bypass]))
    query = Query("heavy", "heavy all-year scan", sql, "agency")
    lock = threading.Lock()
    latencies_ms: list[float] = []
    errors: Counter[str] = Counter()

    def worker() -> None:
        try:
            session = engine.connect()
        except Exception as e:  # noqa: BLE001 - counted and reported
            _add(failed)
            with lock:
                errors[short(e)] += 1
            return
        _add(started)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    session.run(query)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    if is_resource_exhausted(e):
                        _add(refused)
                        stop.wait(REFUSED_BACKOFF_S)
                    else:
                        _add(failed)
                        with lock:
                            errors[short(e)] += 1
                        stop.wait(1.0)
                    continue
                _add(completed)
                with lock:
                    latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        finally:
            session.close()

    pool = [threading.Thread(target=worker, name=f"heavy-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"latencies_ms": latencies_ms, "errors": dict(errors), "cpu_s": usage.ru_utime + usage.ru_stime})


def malformed_load(parent, flight_addr, connections, stop, opened, sent, out) -> None:
    """`connections` connections to the Flight port at once until `stop`: the
    first half send 4 KiB that are not HTTP/2 (the server closes them; each
    thread connects again), the second half keep one gRPC channel each (its
    own TCP connection) and send bodies that do not decode, in a loop."""
    import resource
    import socket

    import grpc

    _exit_with_parent(parent)
    host, port = flight_addr.rsplit(":", 1)
    lock = threading.Lock()
    outcomes: Counter[str] = Counter()

    def count(outcome: str) -> None:
        _add(sent)
        with lock:
            outcomes[outcome] += 1

    def garbage(i: int) -> None:
        payload = bytes((i * 7 + k) % 256 for k in range(4096))
        first = True
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    if first:
                        _add(opened)
                        first = False
                    s.sendall(payload)
                    while s.recv(4096):
                        pass
                count("raw: closed by the server")
            except TimeoutError:
                count("raw: timed out (5 s)")
            except ConnectionResetError:
                count("raw: reset by the server")
            except OSError as e:
                count(f"raw: {type(e).__name__} {e.errno}")
                stop.wait(0.1)

    def undecodable(i: int) -> None:
        # A local subchannel pool: each channel its own TCP connection
        # rather than one shared by every channel to the same address.
        channel = grpc.insecure_channel(flight_addr, options=[("grpc.use_local_subchannel_pool", 1)])
        call = channel.unary_unary(MALFORMED_METHODS[i % 2], request_serializer=None, response_deserializer=None)
        body = b"\xff" * (i % 64 + 1)
        first = True
        try:
            while not stop.is_set():
                try:
                    call(body, timeout=5)
                    count("gRPC: answered")
                except grpc.RpcError as err:
                    count(f"gRPC: {err.code().name}")
                if first:
                    _add(opened)
                    first = False
        finally:
            channel.close()

    half = connections // 2
    pool = [threading.Thread(target=garbage, args=(i,), daemon=True) for i in range(half)]
    pool += [threading.Thread(target=undecodable, args=(i,), daemon=True) for i in range(connections - half)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"outcomes": dict(outcomes), "cpu_s": usage.ru_utime + usage.ru_stime})


class Burst:
    """The heavy caller and the malformed connections, each in a process of
    its own; `stop()` ends both and collects what they counted."""

    def __init__(self, args: argparse.Namespace, server: processes.Server, token: str, sql: str) -> None:
        ctx = mp.get_context("spawn")
        self.args = args
        self.stop_event = ctx.Event()
        self.heavy_started, self.heavy_completed = ctx.Value("q", 0), ctx.Value("q", 0)
        self.heavy_refused, self.heavy_failed = ctx.Value("q", 0), ctx.Value("q", 0)
        self.malformed_opened, self.malformed_sent = ctx.Value("q", 0), ctx.Value("q", 0)
        self.heavy_out, self.malformed_out = ctx.Queue(), ctx.Queue()
        bypass = tuple(args.bypass_header.split("=", 1))
        self.processes = []
        if args.heavy_threads:
            self.processes.append(("heavy", ctx.Process(
                target=heavy_load, name="fairshare-heavy", daemon=True,
                args=(os.getpid(), server.flight_uri, token, bypass, sql, args.heavy_threads, self.stop_event,
                      self.heavy_started, self.heavy_completed, self.heavy_refused, self.heavy_failed,
                      self.heavy_out),
            ), self.heavy_out))  # fmt: skip
        if args.abuse_connections:
            self.processes.append(("malformed", ctx.Process(
                target=malformed_load, name="fairshare-malformed", daemon=True,
                args=(os.getpid(), server.flight_addr, args.abuse_connections, self.stop_event,
                      self.malformed_opened, self.malformed_sent, self.malformed_out),
            ), self.malformed_out))  # fmt: skip
        self.results: dict[str, dict] = {}
        self.stopped = False

    def start(self) -> None:
        for _, p, _ in self.processes:
            p.start()

    def counts(self) -> dict[str, int]:
        return {
            "heavy_completed": self.heavy_completed.value,
            "heavy_refused": self.heavy_refused.value,
            "heavy_failed": self.heavy_failed.value,
            "malformed_requests": self.malformed_sent.value,
        }

    def wait_running(self, timeout_s: float) -> None:
        """Until every heavy thread is connected and every malformed
        connection has made its first request."""
        deadline = time.monotonic() + timeout_s
        while True:
            heavy_up = self.heavy_started.value + self.heavy_failed.value >= self.args.heavy_threads
            malformed_up = self.malformed_opened.value >= self.args.abuse_connections
            if heavy_up and malformed_up:
                return
            if dead := [name for name, p, _ in self.processes if not p.is_alive()]:
                raise processes.HarnessError(f"the burst's {', '.join(dead)} load process ended early")
            if time.monotonic() > deadline:
                raise processes.HarnessError(
                    f"the burst was not running after {timeout_s:.0f}s: {self.heavy_started.value} of "
                    f"{self.args.heavy_threads} heavy connections, {self.malformed_opened.value} of "
                    f"{self.args.abuse_connections} malformed connections up"
                )
            time.sleep(0.1)

    def stop(self, timeout_s: float) -> None:
        """Asks both loads to stop, waits up to `timeout_s` for the queries in
        flight to end, then ends what is left."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for name, p, out in self.processes:
            if p.pid is None:
                continue
            try:
                self.results[name] = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - queue.Empty, or a process that died
                log(f"the {name} load did not stop within {timeout_s:.0f}s; ending it")
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


# --------------------------------------------------------------------------
# Measuring the dashboard caller
# --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dashboard_runs(
    engine: engines.AdlakeFlightSql,
    queries: list[Query],
    runs: int,
    warmup: int,
    max_seconds: float,
    counters: Callable[[], dict[str, float | None]],
) -> dict:
    """`runs` passes over `queries` on one connection, one query at a time,
    each query timed from sending it to holding its whole answer. Stops
    after the pass that ends past `max_seconds`. A failed query is counted
    (by error) and left out of the latencies. `counters` (server CPU, the
    burst's counts) are read when the timed passes start and end; the
    report has what they moved by."""
    session = engine.connect()
    try:
        for _ in range(warmup):
            for q in queries:
                session.run(q)
        per_query: dict[str, list[float]] = {q.name: [] for q in queries}
        errors: Counter[str] = Counter()
        passes = 0
        before = counters()
        started = time.perf_counter()
        while passes < runs and time.perf_counter() - started < max_seconds:
            for q in queries:
                t0 = time.perf_counter()
                try:
                    session.run(q)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors[f"{q.name}: {short(e)}"] += 1
                    continue
                per_query[q.name].append((time.perf_counter() - t0) * 1000.0)
            passes += 1
        wall = time.perf_counter() - started
        after = counters()
    finally:
        session.close()
    every = [ms for lat in per_query.values() for ms in lat]
    if not every:
        raise processes.HarnessError(f"no dashboard query answered: {dict(errors)}")
    return {
        "passes": passes,
        "stopped_early": passes < runs,
        "seconds": round(wall, 3),
        "errors": dict(errors),
        "during": {
            k: None if v is None or before.get(k) is None else round(v - before[k], 2) for k, v in after.items()
        },
        "all": measure.stats_of(every, 1, wall).as_json(),
        "per_query": {name: measure.stats_of(lat, 1, wall).as_json() for name, lat in per_query.items() if lat},
    }


def ratio(burst: float, idle: float) -> float | None:
    return round(burst / idle, 3) if idle and not math.isnan(idle) and not math.isnan(burst) else None


def second_client(duck: engines.DuckDbLocal, besides: str) -> str:
    """The client with the most ad rows after `besides`."""
    s = duck.connect()
    try:
        probe = Query("probe", "", "SELECT client_id FROM ad_performance GROUP BY client_id "
                      "ORDER BY count(*) DESC, client_id LIMIT 2", "agency")  # fmt: skip
        return next(c for c in s.run(probe).column(0).to_pylist() if c != besides)
    finally:
        s.close()


def git(*cmd: str) -> str | None:
    done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def server_log_problems(server: processes.Server, limit: int = 5) -> dict:
    """WARN and ERROR lines (and panics) the server logged, with a few of them."""
    try:
        lines = server.stderr_path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    found = {"ERROR": [], "WARN": [], "panicked": []}
    for line in lines:
        for word, hits in found.items():
            if word in line:
                hits.append(line)
    return {word: {"count": len(hits), "first": hits[:limit]} for word, hits in found.items()}


def markdown(rep: dict) -> str:
    ds, heavy, phases = rep["dataset"], rep["heavy"], rep["phases"]
    lines = [
        f"# adlake fair share between callers: `{ds['name']}` dataset",
        "",
        f"Started {rep['started_at']} on {rep['machine']['cpus']} CPUs (load average {rep['machine']['loadavg_at_start']} "
        f"at start); binaries from `{rep['bin_dir']}`; commit `{rep['git_commit']}`"
        f"{' (uncommitted changes)' if rep['git_dirty'] else ''}; {ds['args']}.",
        f"Command: `{rep['command']}`",
        "",
        f"Dashboard caller: client `{rep['client']}`, {len(rep['queries'])} queries "
        f"({', '.join(f'`{q}`' for q in rep['queries'])}), one connection, one query at a time, up to "
        f"{rep['runs']} passes per phase. Heavy caller: scope `{heavy['scope']}`, {heavy['threads']} threads, "
        f"one connection each, uncached; one heavy query alone took {heavy['alone_seconds']:.2f} s. "
        f"Malformed: {rep['malformed']['connections']} connections.",
        "",
        "## Dashboard latency, all queries together (ms)",
        "",
        "| mode | idle p50 | idle p95 | idle p99 | burst p50 | burst p95 | burst p99 | burst p95 ÷ idle p95 | runs idle / burst |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in MODES:
        i, b = phases[f"idle/{mode}"], phases[f"burst/{mode}"]
        r = rep["ratios"][mode]["p95"]
        lines.append(
            f"| {mode} | {i['all']['p50_ms']:.2f} | {i['all']['p95_ms']:.2f} | {i['all']['p99_ms']:.2f} | "
            f"{b['all']['p50_ms']:.2f} | {b['all']['p95_ms']:.2f} | {b['all']['p99_ms']:.2f} | "
            f"**{'n/a' if r is None else f'{r:.2f}'}** | {i['all']['runs']} / {b['all']['runs']} |"
        )
    lines += [
        "",
        "## Per query (ms, p50 / p95)",
        "",
        "| query | mode | idle | burst | p95 ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for q in rep["queries"]:
        for mode in MODES:
            i = phases[f"idle/{mode}"]["per_query"].get(q)
            b = phases[f"burst/{mode}"]["per_query"].get(q)
            if i and b:
                r = ratio(b["p95_ms"], i["p95_ms"])
                lines.append(
                    f"| `{q}` | {mode} | {i['p50_ms']:.2f} / {i['p95_ms']:.2f} | {b['p50_ms']:.2f} / "
                    f"{b['p95_ms']:.2f} | {'n/a' if r is None else f'{r:.2f}'} |"
                )
    lines += ["", "## The burst", ""]
    lines.append(
        f"Heavy queries completed **{heavy['completed']}**, refused (RESOURCE_EXHAUSTED) **{heavy['refused']}**, "
        f"failed otherwise {heavy['failed']} over {heavy['seconds']:.1f} s"
        + (f"; heavy latency p50 {heavy['latency']['p50_ms']:.0f} ms, p95 {heavy['latency']['p95_ms']:.0f} ms"
           if heavy.get("latency") else "") + "."  # fmt: skip
    )
    for msg, n in heavy.get("errors", {}).items():
        lines.append(f"- heavy error ×{n}: `{msg}`")
    lines += [
        "",
        "| phase | heavy completed | heavy refused | heavy failed | malformed requests | server CPU s (cores) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in phases.items():
        c = p["during"]
        cpu = c.get("server_cpu_s")
        cores = f"{cpu:.1f} ({cpu / p['seconds']:.2f})" if cpu is not None and p["seconds"] else "n/a"
        lines.append(
            f"| {name} | {c.get('heavy_completed', '-')} | {c.get('heavy_refused', '-')} | "
            f"{c.get('heavy_failed', '-')} | {c.get('malformed_requests', '-')} | {cores} |"
        )
    m = rep["malformed"]
    lines += ["", f"Malformed requests, by outcome ({m['requests']} in all):", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(m.get("outcomes", {}).items())]
    lines += [
        "",
        f"CPU of the load processes: heavy {rep['heavy'].get('cpu_s', math.nan):.1f} s, "
        f"malformed {m.get('cpu_s', math.nan):.1f} s (same machine as the server).",
        "",
        "## Server",
        "",
        f"Peak memory (VmHWM): **{mib(rep.get('server_peak_rss_bytes'))}**. "
        f"Answering after the burst: {rep.get('answering_after_burst')}.",
    ]
    for phase, p in phases.items():
        for msg, n in p["errors"].items():
            lines.append(f"- dashboard error in {phase} ×{n}: `{msg}`")
    for word, found in (rep.get("server_log") or {}).items():
        if found["count"]:
            lines.append(f"- server log lines with `{word}`: {found['count']}; first: "
                         + "; ".join(f"`{line[:200]}`" for line in found["first"][:2]))  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(run.DATASETS), default="small")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release",
                   help="folder holding adlake and adlake-ingest (default target/release)")  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=REPO / "target" / "bench-data",
                   help="where datasets are kept between runs (default target/bench-data)")  # fmt: skip
    p.add_argument("--regenerate", action="store_true", help="generate the dataset even if one is there")
    p.add_argument("--runs", type=int, default=100, help="passes over the dashboard queries per phase (100)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before each phase (1)")
    p.add_argument("--max-phase-seconds", type=float, default=90.0,
                   help="a phase stops after the pass that ends past this many seconds (90), so a slow "
                        "build keeps the run bounded; the report gives the runs made")  # fmt: skip
    p.add_argument("--burst-settle-seconds", type=float, default=2.0,
                   help="wait this long once the burst is running before measuring (2)")  # fmt: skip
    p.add_argument("--heavy-threads", type=int, default=8, help="heavy caller's threads, one connection each (8)")
    p.add_argument("--heavy-scope", choices=("client", "all"), default="client",
                   help="heavy caller scoped to the client with the next most ad rows (default), or to every "
                        "client (`*`: each scan reads the whole warehouse)")  # fmt: skip
    p.add_argument("--abuse-connections", type=int, default=200,
                   help="connections sending malformed requests during the burst (200)")  # fmt: skip
    p.add_argument("--bypass-header", default="=".join(engines.CACHE_BYPASS_HEADER), metavar="NAME=VALUE",
                   help="call header the uncached mode sends to bypass the result cache")  # fmt: skip
    p.add_argument("--max-ratio", type=float, default=None,
                   help="exit 3 when the uncached burst p95 exceeds this many times the idle p95")  # fmt: skip
    p.add_argument("--out-dir", type=Path, default=REPO / "target" / "bench-reports")
    p.add_argument("--ingest-timeout", type=float, default=3600.0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--stop-timeout", type=float, default=60.0,
                   help="how long the burst's queries in flight may take to end before it is killed (60)")  # fmt: skip
    args = p.parse_args(argv)
    args.bin_dir = args.bin_dir.resolve()
    args.work_dir = args.work_dir.resolve()
    if "=" not in args.bypass_header:
        p.error(f"--bypass-header must be NAME=VALUE, got {args.bypass_header!r}")
    if args.runs < 1 or args.heavy_threads < 0 or args.abuse_connections < 0:
        p.error("--runs must be at least 1, --heavy-threads and --abuse-connections at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rep: dict = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benches/harness/fairshare.py " + shlex.join(argv),
        "bin_dir": str(args.bin_dir),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "dataset": {"name": args.dataset, "args": " ".join(run.demo_args(args.dataset))},
        "runs": args.runs,
        "phases": {},
    }
    warehouse, _ = run.dataset(args, args.work_dir)
    duck = engines.DuckDbLocal(warehouse, ["ad_performance"])
    client, campaign = run.pick_client(duck)
    heavy_client = None if args.heavy_scope == "all" else second_client(duck, client)
    del duck
    queries = [q for q in workload.dashboard(client, campaign, run.END_DATE) if q.scope == "client"]
    sql = heavy_sql(heavy_client)
    rep.update(client=client, campaign_id=campaign, queries=[q.name for q in queries])
    rep["heavy"] = {"scope": heavy_client or "*", "threads": args.heavy_threads, "sql": sql}
    rep["malformed"] = {"connections": args.abuse_connections}

    server_dir = Path(tempfile.mkdtemp(prefix="adlake-fairshare-", dir=args.work_dir))
    dashboard = processes.Principal.new("dashboard", (client,))
    heavy = processes.Principal.new("heavy", (heavy_client or "*",))
    processes.write_auth_file(server_dir / "auth.toml", [dashboard, heavy])
    log(f"starting adlake ({args.bin_dir}) on {warehouse}")
    server = processes.start_server(
        args.bin_dir, warehouse, server_dir / "auth.toml", server_dir, args.startup_timeout, []
    )
    burst: Burst | None = None
    try:
        bypass = dict([args.bypass_header.split("=", 1)])
        by_mode = {
            "uncached": engines.AdlakeFlightSql(server.flight_uri, {"client": dashboard.token}, bypass),
            "cached": engines.AdlakeFlightSql(server.flight_uri, {"client": dashboard.token}),
        }

        def counters() -> dict[str, float | None]:
            return {"server_cpu_s": cpu_seconds(server.process.pid), **(burst.counts() if burst else {})}

        def phase(name: str) -> None:
            mode = name.split("/")[1]
            # A cached phase warms up at least once: every timed run is a hit.
            warmup = max(args.warmup, 1) if mode == "cached" else args.warmup
            p = dashboard_runs(by_mode[mode], queries, args.runs, warmup, args.max_phase_seconds, counters)
            rep["phases"][name] = p
            a = p["all"]
            log(f"  {name}: p50 {a['p50_ms']:.2f} p95 {a['p95_ms']:.2f} p99 {a['p99_ms']:.2f} ms over {a['runs']} "
                f"queries ({p['passes']} passes, {p['seconds']:.1f}s)"
                + (f", {sum(p['errors'].values())} FAILED" if p["errors"] else "")
                + (f"; during it: {p['during']}" if burst else ""))  # fmt: skip

        log(f"dashboard caller: client {client}, {len(queries)} queries; idle")
        phase("idle/uncached")
        phase("idle/cached")
        alone = engines.AdlakeFlightSql(server.flight_uri, {"agency": heavy.token}, bypass).connect()
        try:
            t0 = time.perf_counter()
            alone.run(Query("heavy", "", sql, "agency"))
            rep["heavy"]["alone_seconds"] = round(time.perf_counter() - t0, 3)
        finally:
            alone.close()
        log(f"one heavy query alone (scope {heavy_client or '*'}): {rep['heavy']['alone_seconds']:.2f}s")

        log(f"burst: {args.heavy_threads} heavy threads, {args.abuse_connections} malformed connections")
        burst = Burst(args, server, heavy.token, sql)
        burst_started = time.perf_counter()
        burst.start()
        burst.wait_running(args.startup_timeout)
        time.sleep(args.burst_settle_seconds)
        log(f"  burst running: {burst.counts()}")
        phase("burst/uncached")
        phase("burst/cached")
        burst.stop(args.stop_timeout)
        burst_seconds = time.perf_counter() - burst_started
        rep["heavy"]["seconds"] = round(burst_seconds, 1)
        totals = burst.counts()
        h, m = burst.results.get("heavy", {}), burst.results.get("malformed", {})
        rep["heavy"].update(
            completed=totals["heavy_completed"], refused=totals["heavy_refused"], failed=totals["heavy_failed"],
            errors=h.get("errors", {}), cpu_s=round(h.get("cpu_s", math.nan), 2),
            latency=measure.stats_of(h["latencies_ms"], args.heavy_threads, burst_seconds).as_json()
            if h.get("latencies_ms") else None,
        )  # fmt: skip
        rep["malformed"].update(
            requests=totals["malformed_requests"],
            outcomes=m.get("outcomes", {}),
            cpu_s=round(m.get("cpu_s", math.nan), 2),
        )
        try:
            after = by_mode["uncached"].connect()
            try:
                after.run(queries[0])
            finally:
                after.close()
            rep["answering_after_burst"] = "yes"
        except Exception as e:  # noqa: BLE001 - reported
            rep["answering_after_burst"] = f"no: {short(e)}"
        rep["server_peak_rss_bytes"] = server.peak_rss_bytes()
        rep["server_log"] = server_log_problems(server)
    finally:
        if burst:
            burst.stop(args.stop_timeout)
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)

    phases = rep["phases"]
    rep["ratios"] = {
        mode: {
            p: ratio(phases[f"burst/{mode}"]["all"][f"{p}_ms"], phases[f"idle/{mode}"]["all"][f"{p}_ms"])
            for p in ("p50", "p95", "p99")
        }
        for mode in MODES
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    j, md = args.out_dir / f"fairshare-{args.dataset}.json", args.out_dir / f"fairshare-{args.dataset}.md"
    j.write_text(json.dumps(rep, indent=2, default=str) + "\n")
    md.write_text(markdown(rep))
    print(markdown(rep))
    for mode in MODES:
        log(f"{mode}: burst p95 ÷ idle p95 = {rep['ratios'][mode]['p95']}")
    log(f"heavy completed {rep['heavy']['completed']}, refused {rep['heavy']['refused']}, "
        f"failed {rep['heavy']['failed']}; server peak memory {mib(rep['server_peak_rss_bytes'])}; reports: {md} {j}")  # fmt: skip
    code = 0
    if args.max_ratio is not None:
        r = rep["ratios"]["uncached"]["p95"]
        burst_errors = sum(sum(phases[f"burst/{mode}"]["errors"].values()) for mode in MODES)
        if r is None or r > args.max_ratio or burst_errors:
            log(f"OVER: uncached p95 ratio {r} (limit {args.max_ratio:g}), "
                f"{burst_errors} dashboard errors in the burst")  # fmt: skip
            code = 3
    return code


def _stop_on_sigterm(signum, frame) -> None:
    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the burst
    # and the server.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        sys.exit(main(sys.argv[1:]))
    except processes.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
