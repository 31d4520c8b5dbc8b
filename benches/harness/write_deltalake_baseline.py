"""Writes the same Arrow data as `adlake-ingest demo` with Python
`deltalake.write_deltalake`, same partitioning, and prints one JSON line.

Run as its own process so its peak memory (`ru_maxrss`, read by the
parent) is its own: `python write_deltalake_baseline.py SRC_WAREHOUSE DST_DIR TABLE...`.
The source tables are read into memory first, and only the writes are
timed; `rss_after_read_bytes` tells how much of the peak the input holds.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from deltalake import DeltaTable, write_deltalake

PARTITION_BY = ["client_id", "date"]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    src, dst, tables = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    data = {t: DeltaTable(str(src / t)).to_pyarrow_table() for t in tables}
    rss_after_read = rss_bytes()
    rows = {t: d.num_rows for t, d in data.items()}
    seconds = {}
    for t, d in data.items():
        t0 = time.perf_counter()
        write_deltalake(str(dst / t), d, partition_by=PARTITION_BY, mode="error")
        seconds[t] = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows_by_table": rows,
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
