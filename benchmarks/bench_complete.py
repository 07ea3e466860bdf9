"""Tab completion in ``%%mlsql`` cells against IPython's own completion of a Python attribute.

In one IPython shell with ``%load_ext mlnb`` and a Polars frame of 1,000 columns (``wide``)
joined to a small one, times ``shell.Completer.completions`` (what ipykernel's
complete_request calls) over a mix of SQL completions — every column (``SELECT | FROM``),
a column prefix, ``w.`` through an alias, tables after FROM, functions with signatures,
``$variables``, ``model := '`` — and, as the baseline, IPython completing ``wide.wi`` and
``images.co`` (attributes of the same frames, Jedi on) in the same process. Prints median
and p95 of each and their ratio; the target is a median under 50 ms.

    .venv/bin/python benchmarks/bench_complete.py [--columns 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import polars as pl
from IPython.core.completer import provisionalcompleter
from IPython.core.interactiveshell import InteractiveShell

SQL_CASES = [
    ("every column", "%%mlsql\nSELECT  FROM wide w JOIN images i ON w.feat_0 = i.id", len("%%mlsql\nSELECT ")),
    ("column prefix", "%%mlsql\nSELECT feat_12 FROM wide", len("%%mlsql\nSELECT feat_12")),
    ("alias dot", "%%mlsql\nSELECT w.feat_9 FROM wide w JOIN images i ON w.feat_0 = i.id", len("%%mlsql\nSELECT w.feat_9")),
    ("tables after FROM", "%%mlsql\nSELECT * FROM w", None),
    ("functions", "%%mlsql\nSELECT arr FROM wide", len("%%mlsql\nSELECT arr")),
    ("$variable", "%%mlsql\nSELECT * FROM wide WHERE feat_1 > $th", None),
    ("model string", "%%mlsql\nSELECT embed(path, model := 'eff", None),
    ("line magic", "r = %mlsql SELECT feat_5 FROM wide", len("r = %mlsql SELECT feat_5")),
]
PY_CASES = [("wide.wi", "wide.wi", None), ("images.co", "images.co", None)]


def timed(shell: InteractiveShell, code: str, cursor: int | None, repeat: int) -> tuple[list[float], int]:
    cursor = len(code) if cursor is None else cursor
    times, n = [], 0
    with provisionalcompleter():
        list(shell.Completer.completions(code, cursor))  # warm: first-call caches
        for _ in range(repeat):
            t = time.perf_counter()
            n = len(list(shell.Completer.completions(code, cursor)))
            times.append(time.perf_counter() - t)
    return times, n


def p95(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--columns", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext mlnb")
    import mlnb.features.zoo  # noqa: F401 - loaded as in a notebook that has embedded once

    shell.user_ns.update(
        wide=pl.DataFrame({f"feat_{i}": [0.0, 1.0] for i in range(args.columns)}),
        images=pl.DataFrame({"id": [0.0, 1.0], "path": ["a.jpg", "b.jpg"]}),
        threshold=0.5,
    )
    print(f"frame: {args.columns} columns; {args.repeat} completions per case after one warm-up\n")
    print(f"{'case':<22}{'matches':>8}{'median ms':>11}{'p95 ms':>9}")
    sql_all: list[float] = []
    for name, code, cursor in SQL_CASES:
        times, n = timed(shell, code, cursor, args.repeat)
        sql_all += times
        print(f"{name:<22}{n:>8}{statistics.median(times) * 1e3:>11.2f}{p95(times) * 1e3:>9.2f}")
    py_all: list[float] = []
    for name, code, cursor in PY_CASES:
        times, n = timed(shell, code, cursor, args.repeat)
        py_all += times
        print(f"{'python ' + name:<22}{n:>8}{statistics.median(times) * 1e3:>11.2f}{p95(times) * 1e3:>9.2f}")
    sql_med, py_med = statistics.median(sql_all), statistics.median(py_all)
    print(f"\n%%mlsql completion: median {sql_med * 1e3:.2f} ms, p95 {p95(sql_all) * 1e3:.2f} ms (target: median < 50 ms)")
    print(f"IPython attribute completion: median {py_med * 1e3:.2f} ms, p95 {p95(py_all) * 1e3:.2f} ms")
    print(f"ratio (%%mlsql / IPython attribute), medians: {sql_med / py_med:.2f}x")


if __name__ == "__main__":
    main()
