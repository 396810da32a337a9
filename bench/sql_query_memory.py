"""Peak memory of a `sql_query` → SQLite storage job for 100k and 1M source rows: it stays flat (chunked).

Run: python bench/sql_query_memory.py   (each size runs in its own process, so peaks do not mix)
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time

SIZES = (100_000, 1_000_000)


def make_source(path: str, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER, name TEXT, a REAL, b REAL, c TEXT, d INTEGER, e TEXT, f REAL, "
                 "g INTEGER, h TEXT)")
    conn.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?)",
                     ((i, f"name {i}", i * 0.5, i * 1.5, "x" * 20, i % 7, "2024-01-01", i / 3, i * 2, "y" * 10)
                      for i in range(rows)))
    conn.commit()
    conn.close()


def one(rows: int, folder: str) -> None:
    import fakeredis

    from collector.config import Config
    from collector.run.runner import Runtime, execute
    from collector.specs.registry import Registry
    from collector.submit.submitter import Submitter

    make_source(os.path.join(folder, f"src{rows}.db"), rows)
    config = Config(secret_key="bench", data_dir=folder)     # the spec names its files relative to it
    fake, registry = fakeredis.FakeRedis(), Registry.discover()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    job_id = Submitter(connection=fake, config=config, registry=registry).submit({
        "platform_id": "sql_query",
        "settings": {"url": f"sqlite:///src{rows}.db", "query": "SELECT * FROM t", "chunk_size": 10_000,
                     "storage": {"type": "sqlite", "settings": {"path": f"dst{rows}.db", "table": "t",
                                                                "batch_size": 10_000}}},
    })["job_id"]
    started = time.perf_counter()
    result = execute(job_id, Runtime(config, fake, registry))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"| {rows:,} | {result['stored']:,} | {time.perf_counter() - started:.1f} | {before / 1024:.0f} | "
          f"{peak / 1024:.0f} |", flush=True)


def main() -> None:
    if len(sys.argv) == 3:
        one(int(sys.argv[1]), sys.argv[2])
        return
    print("| source rows | stored | seconds | RSS before job (MiB) | peak RSS (MiB) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for rows in SIZES:
            subprocess.run([sys.executable, __file__, str(rows), folder], check=True)


if __name__ == "__main__":
    main()
