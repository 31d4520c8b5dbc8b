"""adlake dashboard benchmark: the real server over Flight SQL against DuckDB.

    python benches/harness/run.py --dataset medium --bin-dir target/release
    python benches/harness/run.py --dataset small --check-only      # the CI step

Steps: generate the dataset with `adlake-ingest demo` (throughput reported;
reused when the same arguments already built it), start `adlake` with an
auth file on free ports, open DuckDB over the same Delta versions' Parquet
files and (unless `--no-duckdb-native`) load those files' rows into DuckDB
tables sorted by client and date (load time and rows reported), check every
dashboard answer equal on all engines, then (unless `--check-only`) time
each query `--runs` times per mode and concurrency,
read the server's peak memory, optionally compare ingest throughput with
`write_deltalake` (`--ingest-compare`), write `report-<dataset>.{md,json}`
and flag p95 regressions over 20% against `benches/baseline.json`.

Exit codes: 0 done, 1 an answer differs (or a step failed), 3 a p95
regression was flagged and `--fail-on-regression` was given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import engines
import measure
import processes
import report as reports
import workload

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent

END_DATE = date(2026, 10, 31)
DATASETS = {
    # A few seconds on a debug build: for working on the harness itself.
    "tiny": {"clients": 5, "days": 120, "rows": 50_000},
    # The CI correctness step: every query shape of `small` at a fifth of its
    # Delta commits (ingest cost grows with commits; see benches/README.md).
    "ci": {"clients": 10, "days": 365, "rows": 200_000},
    "small": {"clients": 50, "days": 365, "rows": 1_000_000},
    "medium": {"clients": 50, "days": 365, "rows": 10_000_000},
    "large": {"clients": 50, "days": 365, "rows": 100_000_000},
}
SEED = 42
FACT_TABLES = ["ad_performance", "web_sessions", "orders"]
MODES = ("uncached", "cached")


def demo_args(name: str) -> list[str]:
    d = DATASETS[name]
    return [
        "--clients", str(d["clients"]),
        "--days", str(d["days"]),
        "--rows", str(d["rows"]),
        "--seed", str(SEED),
        "--end-date", END_DATE.isoformat(),
    ]  # fmt: skip


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dataset(args: argparse.Namespace, work: Path) -> tuple[Path, dict | None]:
    """The warehouse of the dataset: reused when built by the same arguments and binary."""
    warehouse = work / args.dataset
    stamp = work / f"{args.dataset}.args.json"
    # A rebuilt adlake-ingest may write other files: its hash is part of the stamp.
    with processes.binary(args.bin_dir, "adlake-ingest").open("rb") as f:
        ingest_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    want = {"args": demo_args(args.dataset), "ingest_sha256": ingest_sha256}
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if not args.regenerate and warehouse.is_dir() and {k: have.get(k) for k in want} == want:
        log(f"reusing {warehouse} (built by the same arguments and adlake-ingest binary)")
        return warehouse, json.loads(stamp.read_text()).get("generate")
    if warehouse.exists():
        shutil.rmtree(warehouse)
    warehouse.mkdir(parents=True)
    log(f"generating {args.dataset}: adlake-ingest demo {' '.join(demo_args(args.dataset))}")
    gen = processes.generate(args.bin_dir, warehouse, demo_args(args.dataset), args.ingest_timeout)
    log(
        f"generated {gen.total_rows:,} rows in {gen.seconds:.1f}s ({gen.total_rows / gen.seconds:,.0f} rows/s), "
        f"generator {gen.generator_rows / max(gen.generator_seconds, 1e-9):,.0f} rows/s, "
        f"peak RSS {gen.peak_rss_bytes / 2**20:,.0f} MiB"
    )
    stamp.write_text(json.dumps({**want, "generate": gen.as_json()}))
    return warehouse, gen.as_json()


def maintained(args: argparse.Namespace, warehouse: Path, work: Path) -> dict | None:
    """Runs `adlake-ingest maintain` once over the dataset (the nightly upkeep
    of a deployment: one file per partition instead of one per slice), and
    records it in the dataset's stamp so a later run reuses it."""
    stamp = work / f"{args.dataset}.args.json"
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if have.get("maintain"):
        log(f"reusing the maintained {warehouse}")
        return have["maintain"]
    ingest = processes.binary(args.bin_dir, "adlake-ingest")
    cmd = [str(ingest), "maintain", "--warehouse", str(warehouse), "--json"]
    log(f"maintaining: {' '.join(cmd)}")
    stderr_log = work / f"{args.dataset}.maintain.log"
    run = processes.run_measured(cmd, stderr_log, args.ingest_timeout)
    if run.returncode != 0:
        raise processes.HarnessError(
            f"`{' '.join(cmd)}` exited with {run.returncode}\n{processes.tail(stderr_log.read_text(errors='replace'))}"
        )
    result = {
        "seconds": round(run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes,
        "report": json.loads(run.stdout or "null"),
    }
    log(f"maintained in {result['seconds']:.0f}s, peak RSS {run.peak_rss_bytes / 2**20:,.0f} MiB")
    stamp.write_text(json.dumps({**have, "maintain": result}))
    return result


def ingest_comparison(args: argparse.Namespace, warehouse: Path, gen: dict | None, work: Path) -> dict:
    if gen is None:
        raise processes.HarnessError("--ingest-compare needs the dataset generated in this run (use --regenerate)")
    dst = Path(tempfile.mkdtemp(prefix="write-deltalake-", dir=work))
    try:
        log(f"writing the same Arrow data with deltalake.write_deltalake, one call per {args.write_deltalake_chunk} "
            f"(own process, stopped past {args.write_deltalake_max_rss_gib:g} GiB resident)")  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, str(HARNESS / "write_deltalake_baseline.py"), "--chunk", args.write_deltalake_chunk,
             str(warehouse), str(dst), *FACT_TABLES],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out_chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        cap = args.write_deltalake_max_rss_gib * 2**30
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            # A whole-table write of a large dataset can take the machine's
            # memory; stop it rather than let the kernel pick a victim.
            rss = processes.vm_rss_bytes(proc.pid) or 0
            if rss > cap:
                proc.kill()
                proc.wait()
                raise processes.HarnessError(
                    f"write_deltalake baseline passed {args.write_deltalake_max_rss_gib:g} GiB resident and was "
                    f"stopped (--write-deltalake-chunk client bounds it; --write-deltalake-max-rss-gib raises the cap)"
                )
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=10)
        if proc.returncode != 0:
            raise processes.HarnessError(f"write_deltalake baseline exited with {proc.returncode}")
        w = json.loads(b"".join(out_chunks).decode().strip().splitlines()[-1])
        w["peak_rss_bytes"] = usage.ru_maxrss * 1024
    finally:
        shutil.rmtree(dst, ignore_errors=True)
    rows = sum(gen["rows_by_table"].get(t, 0) for t in FACT_TABLES)
    # adlake's time covers generating, validating and writing every table;
    # counting only the fact tables' rows makes the ratio conservative.
    adlake_rps = rows / gen["seconds"]
    return {
        "adlake_rows": rows,
        "adlake_seconds": gen["seconds"],
        "adlake_rows_per_sec": round(adlake_rps),
        "adlake_peak_rss_bytes": gen["peak_rss_bytes"],
        "write_deltalake": w,
        "ratio": adlake_rps / w["rows_per_sec"],
    }


def pick_client(duck: engines.DuckDbLocal) -> tuple[str, str]:
    """The client with the most ad rows (the heaviest dashboard), and its top campaign."""
    s = duck.connect()
    try:
        probe = workload.Query("probe", "", "SELECT client_id FROM ad_performance GROUP BY client_id "
                               "ORDER BY count(*) DESC, client_id LIMIT 1", "agency")  # fmt: skip
        client = s.run(probe).column(0)[0].as_py()
        top = workload.Query("probe", "", workload.top_campaign_sql(client, END_DATE), "agency")
        return client, s.run(top).column(0)[0].as_py()
    finally:
        s.close()


def check_answers(
    adlake: engines.Engine, duck: engines.Engine, queries: list[workload.Query], label: str = ""
) -> dict[str, list[str]]:
    """Each query's differences of `adlake`'s answer (any engine under test)
    from `duck`'s; `label` tags the log lines."""
    a, d = adlake.connect(), duck.connect()
    try:
        checks = {}
        for q in queries:
            checks[q.name] = engines.differences(a.run(q), d.run(q))
            log(f"  {q.name}{label}: " + ("equal" if not checks[q.name] else "DIFFERENT " + "; ".join(checks[q.name])))
        return checks
    finally:
        a.close()
        d.close()


def grpc_rows(engine: engines.AdlakeGrpcMetrics, queries: list[workload.Query]) -> dict[str, int]:
    """Answers each metric request once; a failed or empty answer stops the run."""
    s = engine.connect()
    try:
        rows = {}
        for q in queries:
            if engine.supports(q):
                rows[q.name] = s.run(q).num_rows
                log(f"  gRPC {q.name}: {rows[q.name]} rows")
                if rows[q.name] == 0:
                    raise processes.HarnessError(f"gRPC QueryMetrics answered {q.name} with no row")
        return rows
    finally:
        s.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="small")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release",
                   help="folder holding adlake and adlake-ingest (default target/release)")  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=REPO / "target" / "bench-data",
                   help="where datasets are kept between runs (default target/bench-data)")  # fmt: skip
    p.add_argument("--regenerate", action="store_true", help="generate the dataset even if one is there")
    p.add_argument("--check-only", action="store_true", help="answer every query once and compare with DuckDB")
    p.add_argument("--runs", type=int, default=200, help="timed runs per query, mode and concurrency")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per worker before timing")
    p.add_argument("--concurrency", default="1,8", help="comma-separated worker counts (default 1,8)")
    p.add_argument("--modes", default="uncached", help=f"comma-separated of {', '.join(MODES)}")
    p.add_argument("--bypass-header", default="=".join(engines.CACHE_BYPASS_HEADER), metavar="NAME=VALUE",
                   help="call header the uncached mode sends to bypass the result cache")  # fmt: skip
    p.add_argument("--no-duckdb-timing", action="store_true",
                   help="check the duckdb (Parquet) series' answers but do not time it; duckdb-native is "
                        "timed unless --no-duckdb-native")  # fmt: skip
    p.add_argument("--no-duckdb-native", action="store_true",
                   help="do not load the tables into DuckDB's own storage (series duckdb-native): neither "
                        "checked nor timed; it holds every row the workload reads in memory")  # fmt: skip
    p.add_argument("--duckdb-runs", type=int, default=None,
                   help="timed DuckDB runs per query and concurrency (default: --runs); DuckDB lists and "
                        "prunes every file per query, which takes seconds on medium")  # fmt: skip
    p.add_argument("--grpc", action="store_true",
                   help="also time the workload over gRPC QueryMetrics (the metric layer), per mode")  # fmt: skip
    p.add_argument("--flight-direct", action="store_true",
                   help="also time the workload with the plain pyarrow.flight client (GetFlightInfo + DoGet, "
                        "no ADBC driver), per mode")  # fmt: skip
    p.add_argument("--rust-client", action="store_true",
                   help="also time Flight SQL from adlake-load, the Rust client (series adlake-rust/...)")  # fmt: skip
    p.add_argument("--maintain", action="store_true",
                   help="run `adlake-ingest maintain` over the dataset once before measuring (kept for later runs)")
    p.add_argument("--ingest-compare", action="store_true", help="also time write_deltalake on the same data")
    p.add_argument("--write-deltalake-chunk", choices=("client", "table"), default="client",
                   help="write_deltalake calls: one per client and table, appending (memory bounded by a client; "
                        "default), or one per whole table (memory grows with the dataset)")  # fmt: skip
    p.add_argument("--write-deltalake-max-rss-gib", type=float, default=12.0,
                   help="stop the write_deltalake baseline past this resident size (default 12)")  # fmt: skip
    p.add_argument("--out-dir", type=Path, default=REPO / "target" / "bench-reports")
    p.add_argument("--baseline", type=Path, default=REPO / "benches" / "baseline.json")
    p.add_argument("--update-baseline", action="store_true", help="store this run's p95s as the baseline")
    p.add_argument("--fail-on-regression", action="store_true")
    p.add_argument("--ingest-timeout", type=float, default=3600.0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    args.bin_dir = args.bin_dir.resolve()
    args.work_dir = args.work_dir.resolve()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.modes = [m for m in args.modes.split(",") if m]
    if "=" not in args.bypass_header:
        p.error(f"--bypass-header must be NAME=VALUE, got {args.bypass_header!r}")
    if bad := [m for m in args.modes if m not in MODES]:
        p.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if args.runs < 1 or any(c < 1 for c in args.concurrency):
        p.error("--runs and every --concurrency must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warehouse, gen = dataset(args, args.work_dir)
    upkeep = maintained(args, warehouse, args.work_dir) if args.maintain else None
    rep: dict = {
        "started_at": started_at,
        "command": "python benches/harness/run.py " + shlex.join(argv),
        "bin_dir": str(args.bin_dir),
        "machine": {"cpus": os.cpu_count()},
        "dataset": {"name": args.dataset, "args": " ".join(demo_args(args.dataset))},
        "generate": gen,
        "maintain": upkeep,
        "runs": args.runs,
        "duckdb_runs": args.duckdb_runs or args.runs,
        "duckdb_native_runs": None if args.no_duckdb_native else args.runs,
        "latency": {},
    }
    if args.ingest_compare:
        rep["ingest_vs_write_deltalake"] = ingest_comparison(args, warehouse, gen, args.work_dir)
        log(f"ingest: adlake / write_deltalake rows/s = {rep['ingest_vs_write_deltalake']['ratio']:.2f}")

    duck = engines.DuckDbLocal(warehouse, FACT_TABLES)
    rep["duckdb"] = {"versions": duck.versions, "files": duck.file_counts}
    client, campaign = pick_client(duck)
    queries = workload.dashboard(client, campaign, END_DATE)
    rep.update(client=client, campaign_id=campaign, queries=[q.name for q in queries])
    native = None
    if not args.no_duckdb_native:
        # The tables the workload reads, at the versions the Parquet series reads.
        read = duck.tables_read(queries)
        log(f"loading {', '.join(read)} into DuckDB tables (ORDER BY {', '.join(engines.NATIVE_SORT_KEY)})")
        native = engines.DuckDbNative(warehouse, {t: duck.versions[t] for t in read})
        rep["duckdb_native"] = native.as_json()
        log(f"loaded {native.total_rows:,} rows in {native.total_load_seconds:.2f}s ("
            + ", ".join(f"{t} {native.rows[t]:,} in {native.load_seconds[t]:.2f}s" for t in read) + ")")

    server_dir = Path(tempfile.mkdtemp(prefix="adlake-server-", dir=args.work_dir))
    agency = processes.Principal.new("bench-agency", ("*",))
    one_client = processes.Principal.new("bench-client", (client,))
    processes.write_auth_file(server_dir / "auth.toml", [agency, one_client])
    log(f"starting adlake ({args.bin_dir}) on {warehouse}")
    server = processes.start_server(
        args.bin_dir, warehouse, server_dir / "auth.toml", server_dir, args.startup_timeout, []
    )
    failed = False
    try:
        tokens = {"client": one_client.token, "agency": agency.token}
        adlake_by_mode = {
            "uncached": engines.AdlakeFlightSql(server.flight_uri, tokens, dict([args.bypass_header.split("=", 1)])),
            "cached": engines.AdlakeFlightSql(server.flight_uri, tokens),
        }
        flight_by_mode = {}
        if args.flight_direct:
            flight_by_mode = {
                "uncached": engines.AdlakeFlightDirect(
                    server.flight_uri, tokens, dict([args.bypass_header.split("=", 1)])
                ),
                "cached": engines.AdlakeFlightDirect(server.flight_uri, tokens),
            }
        rust_by_mode = {}
        if args.rust_client:
            load = processes.binary(args.bin_dir, "adlake-load")
            rust_by_mode = {
                "uncached": engines.AdlakeRustLoad(
                    load, server.flight_uri, tokens, dict([args.bypass_header.split("=", 1)])
                ),
                "cached": engines.AdlakeRustLoad(load, server.flight_uri, tokens),
            }
        log(f"checking {len(queries)} dashboard answers of client {client} against DuckDB")
        rep["checks"] = check_answers(adlake_by_mode["uncached"], duck, queries)
        if native is not None:
            own = check_answers(native, duck, queries, " (duckdb-native)")
            rep["checks"].update({f"{q} (duckdb-native)": problems for q, problems in own.items()})
        if flight_by_mode:
            direct = check_answers(flight_by_mode["uncached"], duck, queries)
            rep["checks"].update({f"{q} (pyarrow.flight)": problems for q, problems in direct.items()})
        if rust_by_mode:
            # adlake-load reports the rows of its answers: the same as DuckDB's.
            d = duck.connect()
            try:
                for q in queries:
                    want = d.run(q).num_rows
                    got = rust_by_mode["uncached"].run_load(q, 1, 1, 0)["rows"]
                    rep["checks"][f"{q.name} (adlake-load rows)"] = [] if got == want else [f"{got} rows, DuckDB {want}"]
            finally:
                d.close()
        failed = any(rep["checks"].values())
        grpc_by_mode = {}
        if args.grpc:
            stubs = engines.load_metrics_stubs(REPO / "proto" / "proto", server_dir / "stubs")
            grpc_by_mode = {
                mode: engines.AdlakeGrpcMetrics(server.flight_addr, tokens, stubs, bypass=(mode == "uncached"))
                for mode in MODES
            }
            rep["grpc_rows"] = grpc_rows(grpc_by_mode["uncached"], queries)
        if not args.check_only and not failed:

            def timed(series: str, engine, runs: int, c: int) -> None:
                for q in queries:
                    if hasattr(engine, "supports") and not engine.supports(q):
                        continue
                    stats = measure.measure(engine, q, runs, c, args.warmup)
                    rep["latency"].setdefault(series, {})[q.name] = stats.as_json()
                    log(f"  {series} {q.name}: p50 {stats.p50_ms:.2f} p95 {stats.p95_ms:.2f} "
                        f"p99 {stats.p99_ms:.2f} ms, {stats.qps:.1f} QPS")  # fmt: skip

            for c in args.concurrency:
                for mode in args.modes:
                    timed(f"adlake/{mode}/c{c}", adlake_by_mode[mode], args.runs, c)
                    if mode in flight_by_mode:
                        timed(f"adlake-flight/{mode}/c{c}", flight_by_mode[mode], args.runs, c)
                    if mode in rust_by_mode:
                        timed(f"adlake-rust/{mode}/c{c}", rust_by_mode[mode], args.runs, c)
                    if mode in grpc_by_mode:
                        timed(f"adlake-grpc/{mode}/c{c}", grpc_by_mode[mode], args.runs, c)
                if not args.no_duckdb_timing:
                    timed(f"duckdb/c{c}", duck, args.duckdb_runs or args.runs, c)
                if native is not None:
                    # No result cache to bypass: one series per concurrency, as duckdb.
                    timed(f"duckdb-native/c{c}", native, args.runs, c)
        rep["server_peak_rss_bytes"] = server.peak_rss_bytes()
    finally:
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)

    for key, peer in (("", "duckdb"), ("_native", "duckdb-native")):
        rep[f"ratio_series{key}"] = []
        rep[f"ratios{key}"] = {}
        for series in rep["latency"]:
            if not series.startswith("adlake"):
                continue
            ref = rep["latency"].get(f"{peer}/{series.rsplit('/', 1)[1]}")
            if ref:
                rep[f"ratio_series{key}"].append(series)
                rep[f"ratios{key}"][series] = {
                    q: round(s["p95_ms"] / ref[q]["p95_ms"], 3) for q, s in rep["latency"][series].items() if q in ref
                }
    code = 1 if failed else 0
    if rep["latency"]:
        baseline = json.loads(args.baseline.read_text()) if args.baseline.is_file() else {}
        rep["regressions"] = reports.regressions(rep, baseline)
        for r in rep["regressions"]:
            log(f"REGRESSION {r['series']} {r['query']}: p95 {r['p95_ms']:.2f} ms vs baseline "
                f"{r['baseline_p95_ms']:.2f} ms")  # fmt: skip
        if args.update_baseline:
            args.baseline.write_text(json.dumps(reports.updated_baseline(rep, baseline), indent=2) + "\n")
            log(f"baseline updated: {args.baseline}")
        if rep["regressions"] and args.fail_on_regression and code == 0:
            code = 3
    j, m = reports.write(rep, args.out_dir)
    log(f"server peak memory {reports.mib(rep['server_peak_rss_bytes'])}; reports: {m} {j}")
    if failed:
        log("FAILED: answers differ from DuckDB's over the Parquet files (see above)")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except processes.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
