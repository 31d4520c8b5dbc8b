"""Forecast backtest over the real server: for every campaign of a dataset,
forecast the last 28 days from the history before them with the SQL function
`forecast(...)` and compare with what happened (DuckDB over the same Delta
files) and with the weekly seasonal-naive forecast (each day = the same
weekday of the last history week).

    .venv/bin/python benches/harness/insights.py --dataset small --bin-dir target/release

Reports per series the ratio MAE(adlake) / MAE(seasonal naive) (MASE against
the seasonal-naive forecast: below 1 is better), its median, the share of
series where adlake is better, the coverage of the 80% interval, the time of
the forecast calls and the server's peak memory. Written to
target/bench-reports/insights-<dataset>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import engines
import processes
import run as bench
import workload

HOLDOUT = 28
MIN_HISTORY = 56


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(bench.DATASETS), default="small")
    p.add_argument("--bin-dir", type=Path, default=bench.REPO / "target" / "release")
    p.add_argument("--work-dir", type=Path, default=bench.REPO / "target" / "bench-data")
    p.add_argument("--regenerate", action="store_true")
    p.add_argument("--ingest-timeout", type=float, default=3600)
    p.add_argument("--history-days", type=int, default=None, help="days of history per forecast (default: all)")
    args = p.parse_args(argv)
    args.bin_dir = args.bin_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    warehouse, _ = bench.dataset(args, args.work_dir)

    as_of = bench.END_DATE - timedelta(days=HOLDOUT)
    history = (as_of - (bench.END_DATE - timedelta(days=bench.DATASETS[args.dataset]["days"] - 1))).days + 1
    if args.history_days:
        history = min(history, args.history_days)
    duck = engines.DuckDbLocal(warehouse, ["ad_performance"])
    cur = duck._db.cursor()
    rows = cur.execute(
        "SELECT client_id, currency, campaign_id, date, sum(spend)::DOUBLE FROM ad_performance GROUP BY ALL"
    ).fetchall()
    actual: dict[tuple[str, str, str], dict] = {}
    for client, currency, campaign, day, spend in rows:
        actual.setdefault((client, currency, campaign), {})[day] = spend

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agency = processes.Principal.new("bench-agency", ("*",))
        processes.write_auth_file(work / "auth.toml", [agency])
        server = processes.start_server(args.bin_dir, warehouse, work / "auth.toml", work, 120, [])
        try:
            session = engines.AdlakeFlightSql(server.flight_uri, {"agency": agency.token}).connect()
            forecasts: dict[tuple[str, str, str], list[dict]] = {}
            # One call for every campaign of every client (a WHERE around
            # the call would filter the answer, not the work).
            sql = (
                "SELECT * FROM forecast('spend', 'client_id,currency,campaign_id', "
                f"{HOLDOUT}, 'as_of={as_of};history_days={history};interval=0.8')"
            )
            started = time.perf_counter()
            table = session.run(workload.Query("forecast", "every campaign", sql, "agency"))
            call_seconds = time.perf_counter() - started
            for r in table.to_pylist():
                forecasts.setdefault((r["client_id"], r["currency"], r["campaign_id"]), []).append(r)
            peak = server.peak_rss_bytes()
        finally:
            server.stop()

    ratios, inside, points, better = [], 0, 0, 0
    for key, days in actual.items():
        hist = [days.get(as_of - timedelta(days=d), 0.0) for d in range(history - 1, -1, -1)]
        first = next((i for i, v in enumerate(hist) if v != 0), None)
        future = [days.get(as_of + timedelta(days=d + 1), 0.0) for d in range(HOLDOUT)]
        if first is None or len(hist) - first < MIN_HISTORY or sum(future) == 0 or key not in forecasts:
            continue
        f = sorted(forecasts[key], key=lambda r: r["date"])
        naive = [hist[-7 + (d % 7)] for d in range(HOLDOUT)]
        mae = sum(abs(r["forecast"] - a) for r, a in zip(f, future)) / HOLDOUT
        mae_naive = sum(abs(n - a) for n, a in zip(naive, future)) / HOLDOUT
        if mae_naive == 0:
            continue
        ratios.append(mae / mae_naive)
        better += mae < mae_naive
        for r, a in zip(f, future):
            points += 1
            inside += r["lower"] <= a <= r["upper"]

    ratios.sort()
    lines = [
        f"# Forecast backtest: {args.dataset}",
        "",
        f"Daily spend per campaign, history to {as_of} ({history} days), forecast {HOLDOUT} days, "
        f"compared with {bench.END_DATE - timedelta(days=HOLDOUT - 1)}..{bench.END_DATE}; "
        f"series with at least {MIN_HISTORY} days of history and spend in the holdout.",
        "",
        "| series | median MAE ratio vs seasonal naive | p25 | p75 | better than naive | 80% interval coverage | series forecast | call s | ms per series | server peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {len(ratios)} | {statistics.median(ratios):.3f} | {ratios[len(ratios) // 4]:.3f} | "
        f"{ratios[3 * len(ratios) // 4]:.3f} | {better / len(ratios):.1%} | {inside / points:.1%} | "
        f"{len(forecasts)} | {call_seconds:.1f} | {1e3 * call_seconds / max(len(forecasts), 1):.1f} | "
        f"{(peak or 0) / 2**20:,.0f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = bench.REPO / "target" / "bench-reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"insights-{args.dataset}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
