"""Latency and throughput of one query on one engine at one concurrency.

Each worker thread holds its own session (an ADBC connection, a DuckDB
cursor), opened before the clock starts. A run is timed from sending the
query to holding the whole Arrow answer. The ADBC driver and DuckDB both
release the GIL while they wait, so eight threads keep eight queries in
flight.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from engines import Engine
from workload import Query


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ms:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


@dataclass
class Stats:
    runs: int
    concurrency: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    qps: float

    def as_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def stats_of(latencies_ms: list[float], concurrency: int, wall_s: float) -> Stats:
    all_ms = sorted(latencies_ms)
    return Stats(
        runs=len(all_ms),
        concurrency=concurrency,
        p50_ms=percentile(all_ms, 50),
        p95_ms=percentile(all_ms, 95),
        p99_ms=percentile(all_ms, 99),
        max_ms=all_ms[-1],
        qps=len(all_ms) / wall_s if wall_s > 0 else math.nan,
    )


def measure(engine: Engine, query: Query, runs: int, concurrency: int, warmup: int) -> Stats:
    if hasattr(engine, "run_load"):
        # A client that runs the whole measurement itself (adlake-load).
        out = engine.run_load(query, runs, concurrency, warmup)
        return stats_of(out["latencies_ms"], concurrency, out["wall_s"])
    per_worker = [runs // concurrency + (1 if i < runs % concurrency else 0) for i in range(concurrency)]
    sessions = [engine.connect() for _ in range(concurrency)]
    try:
        for s in sessions:
            for _ in range(warmup):
                s.run(query)
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        errors: list[BaseException] = []
        start = threading.Barrier(concurrency + 1)

        def work(i: int) -> None:
            start.wait()
            try:
                out = latencies[i]
                for _ in range(per_worker[i]):
                    t0 = time.perf_counter()
                    sessions[i].run(query)
                    out.append((time.perf_counter() - t0) * 1000.0)
            except BaseException as e:  # noqa: BLE001 - reported by the caller
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
    finally:
        for s in sessions:
            s.close()
    return stats_of([x for worker in latencies for x in worker], concurrency, wall)
