"""Writes the same Arrow data as `adlake-ingest demo` with Python
`deltalake.write_deltalake`, same partitioning, and prints one JSON line.

Run as its own process so its peak memory (`ru_maxrss`, read by the
parent) is its own:

    python write_deltalake_baseline.py [--chunk client|table] SRC_WAREHOUSE DST_DIR TABLE...

`--chunk table` reads each whole table into memory and writes it with one
`write_deltalake` call (one commit per table). Its memory grows with the
dataset: the input, plus one open Parquet writer per `(client_id, date)`
partition until the commit (about 5.6 GiB peak for the 1.1M rows of `ci`),
which does not fit `medium` on a 24 GiB machine. `--chunk client` (the
default) reads and writes one client at a time, appending (one commit per
client and table: 150 for 50 clients, against the demo's ~300 slice
commits), so memory is bounded by the largest client.

Only the `write_deltalake` calls are timed, never the reads;
`rss_after_read_bytes` is the largest resident size seen right after a
read, i.e. how much of the peak the input itself holds.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake

PARTITION_BY = ["client_id", "date"]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chunk", choices=("client", "table"), default="client")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("tables", nargs="+")
    args = p.parse_args()
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    commits: dict[str, int] = {}
    rss_after_read = 0
    for t in args.tables:
        root = args.src / t
        src = DeltaTable(str(root))
        schema = pa.schema(src.schema().to_arrow())
        # The table's files by client, read with pyarrow.dataset (hive
        # partition values from the paths): `to_pyarrow_table(filters=...)`
        # takes ~45 s per client of `medium`, pyarrow under a second.
        by_client: dict[str | None, list[str]] = {}
        for uri in src.file_uris():
            path = unquote(urlparse(uri).path) if uri.startswith("file:") else uri
            client = None
            if args.chunk == "client":
                segment = next(s for s in Path(path).relative_to(root).parts if s.startswith("client_id="))
                client = segment.split("=", 1)[1]
            by_client.setdefault(client, []).append(path)
        partitioning = ds.partitioning(
            pa.schema([schema.field(c) for c in PARTITION_BY if c in schema.names]), flavor="hive"
        )
        rows[t], seconds[t], commits[t] = 0, 0.0, 0
        for client in sorted(by_client, key=lambda c: c or ""):
            dataset = ds.dataset(by_client[client], format="parquet", partitioning=partitioning,
                                 partition_base_dir=str(root))  # fmt: skip
            data = dataset.to_table().select(schema.names).cast(schema)
            rss_after_read = max(rss_after_read, rss_bytes())
            t0 = time.perf_counter()
            write_deltalake(str(args.dst / t), data, partition_by=PARTITION_BY, mode="append")
            seconds[t] += time.perf_counter() - t0
            rows[t] += data.num_rows
            commits[t] += 1
            del data
    print(
        json.dumps(
            {
                "chunk": args.chunk,
                "rows_by_table": rows,
                "commits_by_table": commits,
                "seconds_by_table": {t: round(s, 3) for t, s in seconds.items()},
                "seconds": round(sum(seconds.values()), 3),
                "rows_per_sec": round(sum(rows.values()) / sum(seconds.values())),
                "rss_after_read_bytes": rss_after_read,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
