"""The Markdown and JSON reports, and the comparison with the committed baseline.

The baseline (`benches/baseline.json`) holds, per dataset, the p95 of every
(series, query) a reference run measured; a series is
`<engine>/<mode>/c<concurrency>`. A p95 more than `REGRESSION_FACTOR` times
the baseline's is flagged.
"""

from __future__ import annotations

import json
from pathlib import Path

REGRESSION_FACTOR = 1.20


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def regressions(report: dict, baseline: dict) -> list[dict]:
    """(series, query, baseline p95, p95) where p95 grew by more than 20%."""
    base = baseline.get(report["dataset"]["name"], {}).get("p95_ms", {})
    flagged = []
    for series, queries in report["latency"].items():
        for query, stats in queries.items():
            was = base.get(series, {}).get(query)
            if was and stats["p95_ms"] > was * REGRESSION_FACTOR:
                flagged.append(
                    {"series": series, "query": query, "baseline_p95_ms": was, "p95_ms": stats["p95_ms"],
                     "ratio": round(stats["p95_ms"] / was, 3)}
                )  # fmt: skip
    return flagged


def updated_baseline(report: dict, baseline: dict) -> dict:
    """The baseline with this run's series replaced; series it did not run
    (an uncached run leaves the cached ones) stay as they were, each with
    the time it was measured."""
    out = dict(baseline)
    before = baseline.get(report["dataset"]["name"], {})
    p95 = dict(before.get("p95_ms", {}))
    measured = {series: before.get("measured_at") for series in p95} | before.get("series_measured_at", {})
    for series, queries in report["latency"].items():
        p95[series] = {q: s["p95_ms"] for q, s in queries.items()}
        measured[series] = report["started_at"]
    out[report["dataset"]["name"]] = {
        "measured_at": report["started_at"],
        "bin_dir": report["bin_dir"],
        "p95_ms": p95,
        "series_measured_at": measured,
    }
    return out


def markdown(report: dict) -> str:
    ds = report["dataset"]
    lines = [
        f"# adlake benchmark: `{ds['name']}` dataset",
        "",
        f"Started {report['started_at']} on {report['machine']['cpus']} CPUs; binaries from "
        f"`{report['bin_dir']}`; {ds['args']}.",
        f"Command: `{report['command']}`",
        "",
    ]
    if gen := report.get("generate"):
        lines += [
            "## Dataset generation (`adlake-ingest demo`)",
            "",
            "| rows written (all tables) | slices (commits) | seconds | rows/s end to end | generator rows/s | peak RSS |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {sum(gen['rows_by_table'].values()):,} | {gen['slices']} ({gen.get('commits', gen['slices'])}) | {gen['seconds']:.1f} | "
            f"{gen['rows_per_sec']:,} | {gen['generator_rows_per_sec'] or 0:,} | {mib(gen['peak_rss_bytes'])} |",
            "",
        ]
    if (upkeep := report.get("maintain")) and upkeep.get("report"):
        lines += [
            "## Table upkeep (`adlake-ingest maintain`, once before measuring)",
            "",
            f"{upkeep['seconds']:.1f} s, peak RSS {mib(upkeep.get('peak_rss_bytes'))}.",
            "",
            "| table | files before | files after | replaced | written | commits | version |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for t in upkeep["report"]["tables"]:
            lines.append(
                f"| {t['table']} | {t['files_before']:,} | {t['files_after']:,} | {t['files_removed']:,} | "
                f"{t['files_added']:,} | {t.get('commits', '-')} | {t['version_before']} → {t['version_after']} |"
            )
        lines.append("")
    if ing := report.get("ingest_vs_write_deltalake"):
        w = ing["write_deltalake"]
        lines += [
            "## Ingest throughput against `deltalake.write_deltalake`",
            "",
            "| writer | rows | seconds | rows/s | peak RSS |",
            "|---|---:|---:|---:|---:|",
            f"| adlake-ingest demo (generate + validate + write; a client's platforms in one commit) | "
            f"{ing['adlake_rows']:,} | {ing['adlake_seconds']:.1f} | {ing['adlake_rows_per_sec']:,} | "
            f"{mib(ing['adlake_peak_rss_bytes'])} |",
            f"| write_deltalake (same Arrow data read first, untimed; "
            f"{sum(w.get('commits_by_table', {}).values()) or len(w['rows_by_table'])} commits, one per "
            f"{w.get('chunk', 'table')}{' and table' if w.get('chunk') == 'client' else ''}) | "
            f"{sum(w['rows_by_table'].values()):,} | {w['seconds']:.1f} | {w['rows_per_sec']:,} | "
            f"{mib(w['peak_rss_bytes'])} (input alone {mib(w['rss_after_read_bytes'])}) |",
            "",
            f"Ratio adlake rows/s ÷ write_deltalake rows/s: **{ing['ratio']:.2f}**.",
            "",
        ]
    if native := report.get("duckdb_native"):
        mem = native.get("memory_bytes")
        lines += [
            "## DuckDB native: the tables loaded into DuckDB's own storage (series `duckdb-native`)",
            "",
            "`CREATE TABLE t AS SELECT * FROM read_parquet(<files of the Delta version>, hive_partitioning = true) "
            "ORDER BY ...`, in memory; the same versions the `duckdb` series reads"
            + (f"; DuckDB holds {mib(mem)} once loaded." if mem else "."),
            "",
            "| table | Delta version | files | rows loaded | order by | load seconds |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for t, rows in native["rows"].items():
            order = ", ".join(native["order_by"].get(t) or []) or "(unsorted)"
            lines.append(
                f"| {t} | {native['versions'][t]} | {native['files'][t]:,} | {rows:,} | {order} | "
                f"{native['load_seconds'][t]:.2f} |"
            )
        lines += [
            f"| **total** | | | **{native['total_rows']:,}** | | **{native['total_load_seconds']:.2f}** |",
            "",
        ]
    if report.get("checks"):
        lines += ["## Answers checked against DuckDB (over the Parquet files)", ""]
        for q, problems in report["checks"].items():
            lines.append(f"- `{q}`: " + ("equal" if not problems else "DIFFERENT: " + "; ".join(problems)))
        lines.append("")
    if report["latency"]:
        native_runs = report.get("duckdb_native_runs")
        lines += [
            f"## Latency per query (ms), {report['runs']} runs per adlake"
            f"{' and duckdb-native' if native_runs else ''} cell, "
            f"{report.get('duckdb_runs', report['runs'])} per duckdb cell",
            "",
            f"Client `{report['client']}`; the ad-level drill-down opens campaign `{report['campaign_id']}`. "
            f"Server peak memory (VmHWM): **{mib(report.get('server_peak_rss_bytes'))}**.",
            "",
            "| query | series | p50 | p95 | p99 | QPS |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for q in report["queries"]:
            for series, queries in report["latency"].items():
                if s := queries.get(q):
                    lines.append(
                        f"| `{q}` | {series} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['qps']:.1f} |"
                    )
        lines.append("")
    for key, title in (
        ("", "## adlake p95 ÷ DuckDB p95 (target ≤ 1)"),
        ("_native", "## adlake p95 ÷ DuckDB-native p95 (the rows in DuckDB's own tables)"),
    ):
        if not report.get(f"ratios{key}"):
            continue
        names = report[f"ratio_series{key}"]
        lines += [title, "", "| query | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for q in report["queries"]:
            cells = [report[f"ratios{key}"].get(s, {}).get(q) for s in names]
            lines.append(f"| `{q}` | " + " | ".join("n/a" if c is None else f"{c:.2f}" for c in cells) + " |")
        lines.append("")
    if "regressions" in report:
        lines += ["## Against the baseline", ""]
        if report["regressions"]:
            for r in report["regressions"]:
                lines.append(
                    f"- REGRESSION `{r['query']}` {r['series']}: p95 {r['p95_ms']:.2f} ms vs "
                    f"{r['baseline_p95_ms']:.2f} ms (×{r['ratio']:.2f})"
                )
        else:
            lines.append(f"No p95 more than {REGRESSION_FACTOR - 1:.0%} above the baseline.")
        lines.append("")
    return "\n".join(lines)


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report['dataset']['name']}"
    j, m = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    j.write_text(json.dumps(report, indent=2, default=str) + "\n")
    m.write_text(markdown(report))
    return j, m
