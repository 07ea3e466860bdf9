"""The explorer in JupyterLab + Chromium, used as a person uses it: wheel and drag,
a lasso around one cluster, Esc, hover, scrolling the grid, a growing side panel.

Three well-apart clusters of 1,000 points (given coordinates, digit images), so
what a lasso should select is known exactly. Screenshots go to test-output/.
"""

from __future__ import annotations

import time

import pytest
from test_labeler_browser import OUT, _page, _run_first_cell, _write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CELL = """import mlnb, numpy as np, polars as pl
d = mlnb.datasets.digits('digits')
rng = np.random.default_rng(0)
centres = np.array([[-6.0, -4.0], [6.0, -4.0], [0.0, 6.0]])
cluster = np.repeat(np.arange(3), 1000)
xy = centres[cluster] + rng.normal(scale=1.0, size=(3000, 2))
paths = d['path'].to_list()
df = pl.DataFrame({'path': [paths[i % len(paths)] for i in range(3000)], 'cluster': [f'c{k}' for k in cluster],
                   'many': [f'group {i % 45:02d}' for i in range(3000)], 'features': xy.astype(np.float32)})
ex = mlnb.explore(df, features='features', image='path', coords=xy, color='cluster')
ex"""


def _js(page, body: str, arg=None):
    return page.evaluate(f"(arg) => {{ const api = window.__mlnbExplorer[window.__mlnbExplorer.length - 1]; {body} }}", arg)


def _hover(page, index):
    """Move the mouse onto a point the way a person does (pan mode, a few steps); its page coordinates."""
    page.click(".mlnb-explorer .mlnb-mode[data-mode='pan']")
    (x, y), = _screen(page, [index])
    page.mouse.move(x + 20, y + 20)
    page.mouse.move(x, y, steps=3)
    return x, y


def _screen(page, indices):
    """Page coordinates of points, through the plot's current camera."""
    box = page.locator(".mlnb-explorer .mlnb-plot canvas.mlnb-canvas").bounding_box()
    pos = _js(page, "return arg.map(i => api.scatterplot.getScreenPosition(i));", list(indices))
    return [(box["x"] + x, box["y"] + y) for x, y in pos]


def _drag(page, path, steps=4):
    page.mouse.move(*path[0])
    page.mouse.down()
    for p in path[1:]:
        page.mouse.move(*p, steps=steps)
    page.mouse.up()


def _drawn_selection(page, n: int) -> list[int]:
    """The points the plot shows as selected (drawn just after the kernel is told)."""
    page.wait_for_function(
        "(n) => { const a = window.__mlnbExplorer[window.__mlnbExplorer.length - 1];"
        " return a.scatterplot.get('selectedPoints').length === n; }",
        arg=n,
        timeout=10_000,
    )
    return _js(page, "return Array.from(api.scatterplot.get('selectedPoints')).sort((a, b) => a - b);")


def _status(page) -> str:
    return page.locator(".mlnb-explorer .mlnb-status").inner_text()


def test_explorer_zoom_lasso_escape_hover_grid_and_aspect(lab_server):
    url, root = lab_server
    _write_notebook(root, "explore.ipynb", CELL)
    with _page(1000) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        try:
            _run_first_cell(page, url, "explore.ipynb")
            page.wait_for_selector(".mlnb-explorer[data-drawn-points='3000']", timeout=120_000)
            plot = page.locator(".mlnb-explorer .mlnb-plot canvas.mlnb-canvas")
            box0 = plot.bounding_box()
            w0, h0 = round(box0["width"]), round(box0["height"])
            assert 360 <= w0 <= 640 and abs(h0 - w0 * 3 / 4) <= 1  # fitted to the output area, 4:3
            page.screenshot(path=str(OUT / "explorer-1-drawn.png"))

            # -- zoom and pan change the view; the notebook does not scroll ------------------------
            before = _screen(page, [0, 2500])
            scroller = "document.querySelector('.jp-WindowedPanel-outer') || document.querySelector('.jp-Notebook')"
            top = page.evaluate(f"() => ({scroller}).scrollTop")
            page.mouse.move(box0["x"] + w0 / 2, box0["y"] + h0 / 2)
            for _ in range(5):
                page.mouse.wheel(0, -240)
                time.sleep(0.05)
            time.sleep(0.4)
            zoomed = _screen(page, [0, 2500])
            spread = lambda p: abs(p[1][0] - p[0][0]) + abs(p[1][1] - p[0][1])  # noqa: E731
            assert spread(zoomed) > 1.3 * spread(before), (before, zoomed)
            assert page.evaluate(f"() => ({scroller}).scrollTop") == top
            _drag(page, [(box0["x"] + w0 * 0.4, box0["y"] + h0 * 0.4), (box0["x"] + w0 * 0.4 + 100, box0["y"] + h0 * 0.4 + 60)])
            panned = _screen(page, [0])
            assert abs(panned[0][0] - zoomed[0][0] - 100) < 15 and abs(panned[0][1] - zoomed[0][1] - 60) < 15
            # As on a slow renderer (a million points in software GL): during the drag the last
            # frame moves as a copy; on release one real redraw replaces it, and the pan is the same.
            _js(page, "api.slowRenderMs = 0;")
            x0, y0 = box0["x"] + w0 * 0.5, box0["y"] + h0 * 0.5
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 - 80, y0 - 40, steps=4)
            time.sleep(0.2)
            during = page.evaluate(
                "() => { const r = document.querySelector('.mlnb-explorer'); const g = r.querySelector('.mlnb-ghost');"
                " return [getComputedStyle(g).display, r.querySelector('.mlnb-canvas').style.opacity, g.style.transform]; }"
            )
            assert during[0] == "block" and during[1] == "0" and "matrix(1, 0, 0, 1, -8" in during[2].replace(",", ", ").replace("  ", " "), during
            page.mouse.up()
            page.wait_for_function(
                "() => getComputedStyle(document.querySelector('.mlnb-explorer .mlnb-ghost')).display === 'none'"
                " && document.querySelector('.mlnb-explorer .mlnb-canvas').style.opacity === ''",
                timeout=5_000,
            )
            moved = _screen(page, [0])
            assert abs(moved[0][0] - panned[0][0] + 80) < 15 and abs(moved[0][1] - panned[0][1] + 40) < 15
            _js(page, "api.slowRenderMs = 24;")
            page.screenshot(path=str(OUT / "explorer-2-zoomed.png"))
            page.mouse.dblclick(box0["x"] + 5, box0["y"] + 5)  # double-click resets the view
            time.sleep(0.6)
            reset = _screen(page, [0, 2500])
            assert abs(spread(reset) - spread(before)) < 3

            # -- a lasso around cluster c1 selects exactly cluster c1 ------------------------------
            pts = _screen(page, range(1000, 2000))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x0, x1, y0, y1 = min(xs) - 8, max(xs) + 8, min(ys) - 8, max(ys) + 8
            page.click(".mlnb-explorer .mlnb-mode[data-mode='lasso']")
            _drag(page, [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)], steps=6)
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent.startsWith('1,000 selected')", timeout=20_000)
            chosen = _drawn_selection(page, 1000)
            assert chosen == list(range(1000, 2000))
            page.screenshot(path=str(OUT / "explorer-3-lasso.png"))

            # -- Esc clears --------------------------------------------------------------------------
            page.keyboard.press("Escape")
            page.wait_for_function("() => document.querySelector('.mlnb-explorer').dataset.selected === '0'", timeout=10_000)
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent === ''", timeout=10_000)

            # -- hover: a thumbnail in a tooltip at the cursor ------------------------------------
            hx, hy = _hover(page, 123)
            page.wait_for_function(
                "() => { const t = document.querySelector('.mlnb-explorer .mlnb-tooltip'); const i = t.querySelector('img');"
                " return t.style.display === 'block' && i.complete && i.naturalWidth > 0; }",
                timeout=10_000,
            )
            tip = page.locator(".mlnb-explorer .mlnb-tooltip").bounding_box()
            assert abs(tip["x"] - hx) < 200 and abs(tip["y"] - hy) < 260  # beside the cursor, not in a side panel
            assert page.locator(".mlnb-explorer .mlnb-tooltip").get_attribute("data-index") is not None
            page.screenshot(path=str(OUT / "explorer-4-hover.png"))

            # -- the grid scrolls through all of a 3,000-point selection ---------------------------
            page.click(".mlnb-explorer .mlnb-mode[data-mode='box']")
            b = plot.bounding_box()  # the notebook may have scrolled since
            _drag(page, [(b["x"] + 2, b["y"] + 2), (b["x"] + b["width"] - 2, b["y"] + b["height"] - 2)])
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent.startsWith('3,000 selected')", timeout=20_000)
            page.wait_for_selector(".mlnb-explorer .mlnb-tile img", timeout=20_000)
            first_tiles = page.locator(".mlnb-explorer .mlnb-tile").count()
            assert 0 < first_tiles < 200  # virtualised: only what is in view
            page.evaluate("() => { const g = document.querySelector('.mlnb-explorer .mlnb-grid'); g.scrollTop = g.scrollHeight; }")
            page.wait_for_function("() => +document.querySelector('.mlnb-explorer').dataset.gridFirst > 2500", timeout=10_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.mlnb-explorer .mlnb-tile img')].some(i => i.complete && i.naturalWidth > 0"
                " && +i.parentElement.dataset.index > 2500)",
                timeout=20_000,
            )
            page.locator(".mlnb-explorer .mlnb-grid").scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / "explorer-5-grid-scrolled.png"))

            # -- the canvas keeps its size and mapping when the side panel grows ---------------------
            page.select_option(".mlnb-explorer select.mlnb-color", "many")
            page.wait_for_function("() => document.querySelectorAll('.mlnb-explorer .mlnb-legend-item').length === 45", timeout=20_000)
            box1 = plot.bounding_box()
            assert (round(box1["width"]), round(box1["height"])) == (w0, h0)
            page.keyboard.press("Escape")
            page.click(".mlnb-explorer .mlnb-mode[data-mode='lasso']")
            pts = _screen(page, range(0, 1000))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x0, x1, y0, y1 = min(xs) - 8, max(xs) + 8, min(ys) - 8, max(ys) + 8
            _drag(page, [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)], steps=6)
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent.startsWith('1,000 selected')", timeout=20_000)
            chosen = _drawn_selection(page, 1000)
            assert chosen == list(range(0, 1000))
            page.screenshot(path=str(OUT / "explorer-6-panel-grown.png"))

            # -- a legend filter outlives a layout change (hover and lasso skip what it hides, so
            # the plot must keep hiding it); a new colour drops the filter and its marks --------------
            page.keyboard.press("Escape")
            page.select_option(".mlnb-explorer select.mlnb-color", "cluster")
            page.wait_for_function("() => document.querySelectorAll('.mlnb-explorer .mlnb-legend-item').length === 3", timeout=20_000)
            page.click(".mlnb-explorer .mlnb-legend-item[data-code='1']")
            shown = "return [api.scatterplot.get('isPointsFiltered'), api.scatterplot.get('filteredPoints').length, api.root.querySelectorAll('.mlnb-legend-item.off').length];"
            assert _js(page, shown) == [True, 1000, 2]
            page.select_option(".mlnb-explorer select.mlnb-layout", "PCA")
            page.wait_for_function("() => window.__mlnbExplorer.at(-1).model.get('layout') === 'PCA'", timeout=20_000)
            time.sleep(1.2)  # the points' move to their PCA places
            assert _js(page, shown) == [True, 1000, 2]
            page.click(".mlnb-explorer .mlnb-mode[data-mode='box']")
            b = plot.bounding_box()
            _drag(page, [(b["x"] + 2, b["y"] + 2), (b["x"] + b["width"] - 2, b["y"] + b["height"] - 2)])
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent.startsWith('1,000 selected')", timeout=20_000)
            assert _drawn_selection(page, 1000) == list(range(1000, 2000))  # what is shown is what is selected
            page.screenshot(path=str(OUT / "explorer-7-filter-after-layout.png"))
            page.keyboard.press("Escape")
            page.select_option(".mlnb-explorer select.mlnb-color", "many")
            page.wait_for_function("() => document.querySelectorAll('.mlnb-explorer .mlnb-legend-item').length === 45", timeout=20_000)
            assert _js(page, shown) == [False, 3000, 0]  # every point shown, no legend entry marked off

            # -- hover fields follow the colour (point 123 was hovered while coloured by cluster) --------
            hx, hy = _hover(page, 123)
            page.wait_for_function(
                "() => { const t = document.querySelector('.mlnb-explorer .mlnb-tooltip');"
                " return t.style.display === 'block' && t.dataset.index === '123' && t.dataset.ready === '1'; }",
                timeout=10_000,
            )
            keys = page.locator(".mlnb-explorer .mlnb-tooltip .mlnb-tip-key").all_inner_texts()
            assert "many" in keys and "cluster" not in keys, keys

            # -- Esc elsewhere leaves the selection alone: in the label box, or in a notebook cell
            # (Jupyter's key for command mode; the library cleared on any Esc in the window) ----------
            page.click(".mlnb-explorer .mlnb-mode[data-mode='box']")
            b = plot.bounding_box()
            _drag(page, [(b["x"] + 2, b["y"] + 2), (b["x"] + b["width"] - 2, b["y"] + b["height"] - 2)])
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .mlnb-status').textContent.startsWith('3,000 selected')", timeout=20_000)
            page.fill(".mlnb-explorer .mlnb-label-input", "abc")
            page.locator(".mlnb-explorer .mlnb-label-input").press("Escape")
            page.locator(".jp-Cell .jp-InputArea-editor").nth(1).click()
            page.keyboard.type("ex.selection")
            page.keyboard.press("Escape")
            time.sleep(0.5)
            assert _status(page).startswith("3,000 selected") and _js(page, "return api.root.dataset.selected;") == "3000"
            errors = [m for m in console if m.startswith("error")]
            assert not errors, errors
        finally:
            page.screenshot(path=str(OUT / "explorer-last.png"))
            (OUT / "explorer-console.txt").write_text("\n".join(console))
