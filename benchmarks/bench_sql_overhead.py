"""Overhead of %%mlsql over plain DuckDB on the same 1,000,000-row Polars frame.

Runs the same aggregation-and-join query (a) through ``%%mlsql`` in a real
IPython shell and (b) directly through a DuckDB connection on the same frames,
alternating, and prints the median times and their ratio (target: <= 1.1x).
Then the same for a long query (about 1.3 MB of SQL: a filter with a long IN
list of string literals), where mlnb's own reading of the text shows (target:
<= 1.5x).

    .venv/bin/python benchmarks/bench_sql_overhead.py [--rows 1000000] [--repeat 15] [--long-kb 1300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import duckdb
import numpy as np
import polars as pl
from IPython.core.interactiveshell import InteractiveShell

QUERY = """
SELECT s.region, count(*) AS n, sum(f.amount) AS total, avg(f.amount) AS mean
FROM facts f JOIN shops s ON f.shop_id = s.shop_id
WHERE f.amount > 10
GROUP BY s.region
ORDER BY total DESC
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--long-kb", type=int, default=1300)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    facts = pl.DataFrame({"shop_id": rng.integers(0, 1000, args.rows), "amount": rng.gamma(2.0, 20.0, args.rows)})
    shops = pl.DataFrame({"shop_id": np.arange(1000), "region": [f"r{i % 17}" for i in range(1000)]})

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext mlnb")
    shell.user_ns.update(facts=facts, shops=shops)

    con = duckdb.connect()
    con.register("facts", facts)
    con.register("shops", shops)

    def direct() -> pl.DataFrame:
        return con.sql(QUERY).pl()

    def magic() -> pl.DataFrame:
        shell.run_cell("%%mlsql -o _bench\n" + QUERY, silent=True)
        return shell.user_ns["_bench"]

    # Same rows; float sums may differ in the last bits (DuckDB adds in parallel, in any order).
    from polars.testing import assert_frame_equal

    assert_frame_equal(direct(), magic(), rel_tol=1e-12)
    md, mm = _compare(direct, magic, args.repeat)
    print(f"rows={args.rows:,} repeat={args.repeat}")
    print(f"duckdb direct : {md * 1000:8.2f} ms (median)")
    print(f"%%mlsql       : {mm * 1000:8.2f} ms (median)")
    print(f"overhead ratio: {mm / md:.3f}x (target <= 1.1x)")

    # A long query: mostly literals, as generated SQL often is.
    names = []
    size = 0
    i = 0
    while size < args.long_kb * 1000:
        names.append(f"'r{i % 17}-{i:08d}-padding-padding'")
        size += len(names[-1]) + 2
        i += 1
    long_query = f"SELECT region, count(*) AS n FROM shops WHERE region IN ({', '.join(names)}, 'r3') GROUP BY region"
    assert_frame_equal(con.sql(long_query).pl(), shell.run_cell("%%mlsql -o _bench\n" + long_query, silent=True) and shell.user_ns["_bench"])
    ld, lm = _compare(
        lambda: con.sql(long_query).pl(),
        lambda: shell.run_cell("%%mlsql -o _bench\n" + long_query, silent=True),
        max(3, args.repeat // 3),
    )
    print(f"long query: {len(long_query) / 1e6:.2f} MB of SQL, {len(names):,} literals")
    print(f"duckdb direct : {ld * 1000:8.2f} ms (median)")
    print(f"%%mlsql       : {lm * 1000:8.2f} ms (median)")
    print(f"overhead ratio: {lm / ld:.3f}x (target <= 1.5x)")


def _compare(direct, magic, repeat: int) -> tuple[float, float]:
    """Median seconds of each, run alternately."""
    t_direct, t_magic = [], []
    for _ in range(repeat):
        for fn, acc in ((direct, t_direct), (magic, t_magic)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(t_direct), statistics.median(t_magic)


if __name__ == "__main__":
    main()
