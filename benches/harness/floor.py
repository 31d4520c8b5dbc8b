"""The floor of a cached answer: `SELECT 1` against a cached dashboard
query, both over the plain `pyarrow.flight` client (GetFlightInfo + DoGet),
one client thread, no harness thread pool.

    .venv/bin/python benches/harness/floor.py --dataset medium --bin-dir target/release [--runs 3000]

If both take the same time, what a cached answer costs is the protocol's
round trips, not the server's work. Uses a dataset the harness generated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import engines
import processes
from workload import Query

REPO = Path(__file__).resolve().parents[2]


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="medium")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release")
    p.add_argument("--work-dir", type=Path, default=REPO / "target" / "bench-data")
    p.add_argument("--runs", type=int, default=3000)
    args = p.parse_args(argv)
    warehouse = (args.work_dir / args.dataset).resolve()
    if not warehouse.is_dir():
        print(f"error: no dataset at {warehouse}; run benches/harness/run.py --dataset {args.dataset} first")
        return 1
    with tempfile.TemporaryDirectory(prefix="adlake-floor-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        agency = processes.Principal.new("floor", ("*",))
        processes.write_auth_file(work / "auth.toml", [agency])
        server = processes.start_server(args.bin_dir.resolve(), warehouse, work / "auth.toml", work, 300, [])
        try:
            session = engines.AdlakeFlightDirect(server.flight_uri, {"agency": agency.token}).connect()
            statements = {
                "SELECT 1": "SELECT 1",
                "cached 30-day spend by client": "SELECT client_id, sum(spend) AS spend FROM ad_performance "
                "WHERE date > DATE '2026-10-01' GROUP BY client_id",
            }
            for name, sql in statements.items():
                query = Query(name, name, sql, "agency")
                for _ in range(20):
                    session.run(query)
                times = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    session.run(query)
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                print(f"{name}: p50 {percentile(times, 0.5):.2f} ms, p95 {percentile(times, 0.95):.2f} ms, "
                      f"p99 {percentile(times, 0.99):.2f} ms over {args.runs} runs")  # fmt: skip
            session.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
