"""Embedding explorer in JupyterLab + headless Chromium, against its targets (issue 14).

1. Shift+Enter to first points drawn, at each ``--points`` count (coordinates given,
   4-d features, an image column of small PNGs: the view alone is measured). The same
   wall clock on both sides: ``Date.now()`` in the page just before the key press, and
   the view's ``data-first-draw-at``. Split into kernel (explore + widget state sent)
   and browser (transfer, toNDC, regl-scatterplot's index and first draw).
2. Frame time while dragging in pan mode at the largest count (rAF intervals in the
   page while the button is down), and the one full redraw after the mouseup.
3. Hover to thumbnail at the largest count: ``data-thumb-at - data-hover-at`` in the
   page, and from the mouse move (page clock read just before it) to the thumbnail.
4. A box that selects ~100,000 points at the largest count, from mouseup to
   ``explorer.selected`` set in the kernel (a hook the cell installs writes
   ``time.time()``), and building ``explorer.selection`` there.
5. UMAP 10,000 x 1,280 in a fresh kernel, with and without numba's cache
   (``benchmarks/_bench_layout.py``).
6. Baseline: jupyter-scatter's Shift+Enter to first points on the same data, as a ratio.

Chromium runs with ``--disable-gpu`` (SwiftShader, software WebGL) on whatever CPUs
this machine has: frame times are a worst case, not what a laptop GPU gives.

    .venv/bin/python benchmarks/bench_explorer.py [--points 100000,1000000] [--skip-umap] [--skip-baseline]

Screenshots go to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUT = Path(__file__).resolve().parent / "out"

SETUP = """import json, time, numpy as np, polars as pl
from PIL import Image
n = {n}
rng = np.random.default_rng(0)
for i in range(10): Image.new('RGB', (32, 32), (i * 25, 80, 160)).save(f'img{{i}}.png')
k = rng.integers(0, 10, n)
xy = (rng.normal(size=(n, 2)) + np.stack([k % 4, k // 4], axis=1) * 4).astype(np.float32)
df = pl.DataFrame({{'features': rng.normal(size=(n, 4)).astype(np.float32), 'group': pl.Series(k).cast(pl.String),
                   'path': np.array([f'img{{i}}.png' for i in range(10)])[k % 10]}},
                  schema_overrides={{'features': pl.Array(pl.Float32, 4)}})
print('ready', df.height)"""

EXPLORE = """import mlnb
from IPython.display import display
t0 = time.time()
ex = mlnb.explore(df, features='features', color='group', image='path', coords=xy)
t1 = time.time()
w = ex.widget
t2 = time.time()
display(w)
t3 = time.time()
json.dump({'cell_start': t0, 'explore_s': t1 - t0, 'widget_s': t2 - t1, 'display_s': t3 - t2, 'sent': t3}, open('kernel_draw.json', 'w'))
_set = ex._set_selected
def _hooked(idx):
    a = time.time()
    _set(idx)
    b = time.time()
    s = time.perf_counter(); sel = ex.selection; s = time.perf_counter() - s
    with open('kernel_select.jsonl', 'a') as f:
        f.write(json.dumps({'received': a, 'set': b, 'n': len(ex.selected), 'selection_ms': s * 1000, 'rows': sel.height}) + '\\n')
ex._set_selected = _hooked"""

JSCATTER_SETUP = """
pdf = pl.DataFrame({'x': xy[:, 0], 'y': xy[:, 1], 'group': df['group']}).to_pandas()
pdf['group'] = pdf['group'].astype('category')"""

JSCATTER = """import jscatter
sc = jscatter.Scatter(x='x', y='y', data=pdf, color_by='group', height=480, width=640)
sc.show()"""

# Set before the cell runs: when does the explorer's root appear, and window mouseup
# (registered before the view's own listener, so it fires first).
PROBE = """() => {
  window.__bench = {};
  window.addEventListener('mouseup', () => { window.__bench.mouseupAt = Date.now(); }, true);
  const poll = () => {
    if (document.querySelector('.mlnb-explorer')) { window.__bench.rootAt = Date.now(); return; }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}"""

# jupyter-scatter keeps its regl-scatterplot on its container div as `.api`; its points are
# set after the spatial index is built, and the next 'draw' event is the first frame.
JSCATTER_PROBE = """(n) => {
  window.__bench = {};
  const poll = () => {
    for (const c of document.querySelectorAll('.jp-OutputArea div[id]')) {
      if (c.api && c.api.get('points') && c.api.get('points').length === n) {
        window.__bench.pointsAt = Date.now();
        c.api.subscribe('draw', () => { if (!window.__bench.drawAt) window.__bench.drawAt = Date.now(); }, 1);
        return;
      }
    }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}"""


def _js(page, body: str, arg=None):
    return page.evaluate(
        f"(arg) => {{ const api = window.__mlnbExplorer[window.__mlnbExplorer.length - 1]; {body} }}", arg
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password=",
         "--allow-root", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=1e12"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLNB_WORKSPACE": str(root / ".mlnb")},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/status", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("JupyterLab did not start")


def _notebook(root: Path, name: str, cells: list[str]) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    (root / name).write_text(nbformat.writes(nb))
    return name


def _open(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    select = page.locator(".jp-Dialog button.jp-mod-accept")
    for _ in range(20):  # JupyterLab sometimes asks for a kernel although the notebook names one
        if select.count():
            select.first.click()
            break
        time.sleep(0.25)


def _run_cell(page, k: int, timeout: float = 300) -> int:
    """Shift+Enter in cell k (retried until the kernel takes it); returns Date.now() just before the key press."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(k)
    prompt = cell.locator(".jp-InputPrompt")
    deadline = time.time() + 120
    while time.time() < deadline:
        cell.locator(".jp-InputArea-editor").click()
        t = page.evaluate("() => Date.now()")
        page.keyboard.press("Shift+Enter")
        for _ in range(20):
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                return t
            time.sleep(0.25)
    raise RuntimeError(f"the kernel never took cell {k}")


def _wait_cell_done(page, k: int, timeout: float = 600) -> None:
    prompt = page.locator(".jp-Notebook .jp-Cell").nth(k).locator(".jp-InputPrompt")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(ch.isdigit() for ch in prompt.inner_text()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"cell {k} did not finish in {timeout} s")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _drag(page, a, b, steps: int, pause: float = 0.0, before_up: bool = False) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    for s in range(1, steps + 1):
        page.mouse.move(a[0] + (b[0] - a[0]) * s / steps, a[1] + (b[1] - a[1]) * s / steps)
        if pause:
            time.sleep(pause)
    if not before_up:
        page.mouse.up()


def bench_mlnb(page, url: str, root: Path, n: int, interact: bool, rows: list) -> dict:
    name = _notebook(root, f"explore_{n}.ipynb", [SETUP.format(n=n), EXPLORE])
    for f in ("kernel_draw.json", "kernel_select.jsonl"):
        (root / f).unlink(missing_ok=True)
    _open(page, url, name)
    _run_cell(page, 0)
    _wait_cell_done(page, 0)
    page.evaluate(PROBE)
    t0 = _run_cell(page, 1)
    page.wait_for_selector(f".mlnb-explorer[data-drawn-points='{n}']", timeout=600_000)
    first = int(page.locator(".mlnb-explorer").get_attribute("data-first-draw-at"))
    k = json.loads((root / "kernel_draw.json").read_text())
    root_at = page.evaluate("() => window.__bench.rootAt")
    total = (first - t0) / 1000
    page.screenshot(path=str(OUT / f"explorer-{n}-drawn.png"))
    rows.append((f"Shift+Enter -> first points, {n:,}", f"{total:.2f} s", "< 2 s" if n <= 100_000 else "",
                 f"kernel: cell start +{(k['cell_start'] * 1000 - t0) / 1000:.2f} s, explore {k['explore_s']:.2f} s, widget+state {k['widget_s']:.2f} s,"
                 f" display {k['display_s']:.2f} s; browser: view rendered +{(root_at - k['sent'] * 1000) / 1000:.2f} s after sent,"
                 f" first draw +{(first - root_at) / 1000:.2f} s after that"))  # fmt: skip
    out = {"first_draw_s": total}
    if not interact:
        return out

    page.evaluate("() => document.querySelector('.mlnb-explorer').scrollIntoView({block: 'start'})")
    time.sleep(0.5)
    box = page.locator(".mlnb-explorer .mlnb-plot canvas.mlnb-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # -- 2. panning --------------------------------------------------------------------------
    page.click(".mlnb-explorer .mlnb-mode[data-mode='pan']")
    page.evaluate("""() => {
      const api = window.__mlnbExplorer[window.__mlnbExplorer.length - 1];
      window.__frames = []; window.__draws = []; window.__on = true;
      const tick = (t) => { window.__frames.push(t); if (window.__on) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      api.scatterplot.subscribe('draw', () => window.__draws.push(performance.now()));
    }""")
    time.sleep(0.3)
    page.evaluate("() => { window.__frames = []; window.__draws = []; }")
    t_pan = time.perf_counter()
    _drag(page, (cx - 120, cy - 60), (cx + 120, cy + 60), steps=60, pause=0.02, before_up=True)
    pan_s = time.perf_counter() - t_pan
    # Frames during the drag (the button still down), then the one full redraw after it.
    frames = page.evaluate("() => window.__frames.slice()")
    up_at = page.evaluate("() => performance.now()")
    page.mouse.up()
    time.sleep(1.5)
    draws, deferred, render_ms = page.evaluate(
        "() => { window.__on = false; const r = document.querySelector('.mlnb-explorer');"
        " return [window.__draws, +(r.dataset.deferred || 0), +(r.dataset.renderMs || 0)]; }"
    )
    fi = [b - a for a, b in zip(frames, frames[1:])]
    page.screenshot(path=str(OUT / f"explorer-{n}-panned.png"))
    rows.append((f"pan frame time, {n:,} (rAF while dragging)", f"median {statistics.median(fi):.1f} ms, p95 {_pct(fi, 0.95):.1f} ms", "< 33 ms",
                 f"{len(frames)} frames over a {pan_s:.1f} s drag of 60 mouse moves; {deferred} moved-frame updates"))  # fmt: skip
    after = [d - up_at for d in draws if d >= up_at]
    if after:
        rows.append((f"full redraw after the pan, {n:,} (mouseup -> draw)", f"{after[0]:.0f} ms", "-",
                     f"one full redraw costs ~{render_ms} ms here; points move with the mouse until then"))  # fmt: skip
    page.click(".mlnb-explorer .mlnb-reset")
    time.sleep(0.8)

    # -- 3. hover to thumbnail ---------------------------------------------------------------
    box = page.locator(".mlnb-explorer .mlnb-plot canvas.mlnb-canvas").bounding_box()
    import random

    rnd = random.Random(1)
    targets = rnd.sample(range(n), 60)
    pos = _js(page, "return arg.map(i => api.scatterplot.getScreenPosition(i));", targets)
    in_page, from_move, seen = [], [], set()
    for sx, sy in pos:
        if len(in_page) >= 20:
            break
        if not (4 < sx < box["width"] - 4 and 4 < sy < box["height"] - 4):
            continue
        page.mouse.move(box["x"] + 2, box["y"] - 30)  # off the canvas: pointout (no redraw: the ring is SVG)
        time.sleep(0.15)
        t = page.evaluate("() => performance.now()")
        page.mouse.move(box["x"] + sx, box["y"] + sy)
        try:
            page.wait_for_function(
                """(t) => { const r = document.querySelector('.mlnb-explorer'); const tip = r.querySelector('.mlnb-tooltip');
                  return r.dataset.hovered !== undefined && +r.dataset.hoverAt > t && tip.dataset.index === r.dataset.hovered
                    && +tip.dataset.thumbAt > +r.dataset.hoverAt; }""",
                arg=t, timeout=5_000,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a point already in the JS cache, or no point under the cursor
            continue
        i, hover_at, thumb_at = page.evaluate(
            "() => { const r = document.querySelector('.mlnb-explorer'); return [+r.dataset.hovered, +r.dataset.hoverAt,"
            " +r.querySelector('.mlnb-tooltip').dataset.thumbAt]; }"
        )
        if i in seen:
            continue
        seen.add(i)
        in_page.append(thumb_at - hover_at)
        from_move.append(thumb_at - t)
    page.screenshot(path=str(OUT / f"explorer-{n}-hover.png"))
    if in_page:
        rows.append((f"hover -> thumbnail, {n:,} (pointover -> thumb)", f"median {statistics.median(in_page):.0f} ms, max {max(in_page):.0f} ms",
                     "< 100 ms", f"{len(in_page)} hovers on distinct points"))  # fmt: skip
        rows.append((f"hover -> thumbnail, {n:,} (mouse move -> thumb)", f"median {statistics.median(from_move):.0f} ms, max {max(from_move):.0f} ms",
                     "< 100 ms", "page clock just before the move: hit test in the view's grid index, ring in SVG, thumbnail from the kernel"))  # fmt: skip
    else:
        rows.append((f"hover -> thumbnail, {n:,}", "no hover completed", "< 100 ms", ""))

    # -- 4. a box around ~100,000 points ------------------------------------------------------
    page.mouse.move(box["x"] + 2, box["y"] - 30)
    page.click(".mlnb-explorer .mlnb-reset")
    time.sleep(0.8)
    box = page.locator(".mlnb-explorer .mlnb-plot canvas.mlnb-canvas").bounding_box()
    sample = rnd.sample(range(n), 20_000)
    xs = sorted(p[0] for p in _js(page, "return arg.map(i => api.scatterplot.getScreenPosition(i));", sample))
    want = min(100_000, n // 2) / n
    u0 = xs[int(len(xs) * (0.5 - want / 2))]
    u1 = xs[int(len(xs) * (0.5 + want / 2))]
    page.click(".mlnb-explorer .mlnb-mode[data-mode='box']")
    (root / "kernel_select.jsonl").unlink(missing_ok=True)
    _drag(page, (box["x"] + u0, box["y"] + 1), (box["x"] + u1, box["y"] + box["height"] - 1), steps=8)
    deadline = time.time() + 60
    while time.time() < deadline and not (root / "kernel_select.jsonl").exists():
        time.sleep(0.02)
    time.sleep(0.1)
    sel = json.loads((root / "kernel_select.jsonl").read_text().splitlines()[0])
    b = page.evaluate(
        "() => { const r = document.querySelector('.mlnb-explorer'); return [window.__bench.mouseupAt, +r.dataset.selectSentAt, +r.dataset.lassoMs]; }"
    )
    mouseup, sent, lasso_ms = b
    page.screenshot(path=str(OUT / f"explorer-{n}-box.png"))
    rows.append((f"box of {sel['n']:,} points -> explorer.selected, {n:,}", f"{sel['set'] * 1000 - mouseup:.0f} ms", "< 500 ms",
                 f"JS polygon test {lasso_ms:.0f} ms, mouseup -> sent {sent - mouseup:.0f} ms, sent -> kernel got it {sel['received'] * 1000 - sent:.0f} ms,"
                 f" _set_selected {(sel['set'] - sel['received']) * 1000:.0f} ms"))  # fmt: skip
    rows.append(
        (
            f"explorer.selection (polars frame of {sel['rows']:,} rows)",
            f"{sel['selection_ms']:.0f} ms",
            "(in the 500 ms)",
            "built in the kernel after the set",
        )
    )
    out["select_ms"] = sel["set"] * 1000 - mouseup
    return out


def bench_jscatter(page, url: str, root: Path, n: int, rows: list) -> float | None:
    name = _notebook(root, f"jscatter_{n}.ipynb", [SETUP.format(n=n) + JSCATTER_SETUP, JSCATTER])
    _open(page, url, name)
    _run_cell(page, 0)
    _wait_cell_done(page, 0)
    page.evaluate(JSCATTER_PROBE, n)
    t0 = _run_cell(page, 1)
    page.wait_for_function("() => window.__bench.pointsAt", timeout=600_000)
    try:
        page.wait_for_function("() => window.__bench.drawAt", timeout=3_000)
        t1 = page.evaluate("() => window.__bench.drawAt")
        how = "first draw event after its points are set"
    except Exception:  # noqa: BLE001 - the draw came before the probe subscribed
        t1 = page.evaluate("() => window.__bench.pointsAt")
        how = "points set (draw event missed)"
    time.sleep(0.5)
    page.screenshot(path=str(OUT / f"jscatter-{n}-drawn.png"))
    s = (t1 - t0) / 1000
    rows.append((f"jupyter-scatter: Shift+Enter -> first points, {n:,}", f"{s:.2f} s", "baseline", how))
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default="100000,1000000")
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    counts = [int(v) for v in args.points.split(",") if v]
    OUT.mkdir(exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []
    from playwright.sync_api import sync_playwright

    print(
        f"Chromium {CHROMIUM} {' '.join(FLAGS)}: software WebGL (SwiftShader), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = _start_lab(root)
        mlnb_s: dict[int, float] = {}
        js_s: dict[int, float] = {}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                for n in counts:
                    page = browser.new_page(viewport={"width": 1300, "height": 1000})
                    try:
                        mlnb_s[n] = bench_mlnb(page, url, root, n, interact=n == max(counts), rows=rows)["first_draw_s"]
                    finally:
                        page.close()
                    print(*rows[-1][:2], flush=True)
                if args.skip_baseline:
                    rows.append(("jupyter-scatter baseline", "skipped", "", "--skip-baseline"))
                else:
                    try:
                        import jscatter  # noqa: F401
                    except ImportError:
                        rows.append(
                            (
                                "jupyter-scatter baseline",
                                "skipped",
                                "",
                                "import jscatter failed (not a project dependency)",
                            )
                        )
                    else:
                        for n in counts:
                            page = browser.new_page(viewport={"width": 1300, "height": 1000})
                            try:
                                js_s[n] = bench_jscatter(page, url, root, n, rows)
                            finally:
                                page.close()
                            print(*rows[-1][:2], flush=True)
                        for n in counts:
                            if n in js_s and n in mlnb_s:
                                rows.append(
                                    (
                                        f"mlnb / jupyter-scatter, first points, {n:,}",
                                        f"{mlnb_s[n] / js_s[n]:.2f}x",
                                        "",
                                        "below 1: mlnb draws sooner",
                                    )
                                )
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    if not args.skip_umap:
        try:
            from _bench_layout import bench_umap_fresh_kernel  # type: ignore[import-not-found]
        except ImportError as exc:
            rows.append(("UMAP 10,000 x 1,280, fresh kernel", "skipped", "", f"benchmarks/_bench_layout.py: {exc}"))
        else:
            res = bench_umap_fresh_kernel(n=10_000, d=1280)
            rows.append(
                (
                    "UMAP 10,000 x 1,280, fresh kernel, empty numba cache",
                    f"{res['cold_s']:.1f} s",
                    "",
                    "a new process, empty workspace",
                )
            )
            rows.append(
                (
                    "UMAP 10,000 x 1,280, fresh kernel, warm numba cache",
                    f"{res['warm_s']:.1f} s",
                    "",
                    f"{res['ratio']:.2f}x faster",
                )
            )

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print()
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<{w2}}  {r[3]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
