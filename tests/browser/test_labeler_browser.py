"""A real browser: JupyterLab headless, Debian's Chromium driven by Playwright.

Opens a notebook, runs it, waits for the labeler's own elements, presses a
class key inside the widget and checks the label is on disk; screenshots go to
test-output/.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
OUT = Path(__file__).resolve().parents[2] / "test-output"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (bash dev test installs it)")
    pytest.importorskip("playwright")
    root = tmp_path_factory.mktemp("lab")
    port = _free_port()
    env = {**os.environ, "MLNB_WORKSPACE": str(root / ".mlnb")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root",
         f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start")
    yield url, root
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _write_notebook(root: Path, name: str, source: str) -> str:
    """A one-cell notebook with kernelspec metadata (so no kernel dialog)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    (root / name).write_text(nbformat.writes(nb))
    return name


def _notebook(root: Path) -> str:
    return _write_notebook(
        root,
        "label.ipynb",
        "import mlnb\nd = mlnb.datasets.digits('digits').head(24)\n"
        "lab = mlnb.label(d, image='path', classes=[str(i) for i in range(10)])\nlab",
    )


@contextlib.contextmanager
def _page(height: int = 900):
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1300, "height": height})
        finally:
            browser.close()


def _run_first_cell(page, url: str, name: str) -> None:
    """Open a notebook in a fresh layout and run its first cell, retrying until the kernel takes it."""
    page.goto(f"{url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
    deadline = time.time() + 90
    while time.time() < deadline:
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        for _ in range(20):
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                return
            time.sleep(0.5)
    raise AssertionError("the notebook's kernel never ran the cell")


def test_labeler_renders_and_a_key_press_is_saved(lab_server):
    url, root = lab_server
    name = _notebook(root)
    with _page(900) as page:
        try:
            _run_first_cell(page, url, name)
            widget = page.wait_for_selector(".mlnb-labeler", timeout=120_000)
            assert widget.get_attribute("data-lm-suppress-shortcuts") == "true"
            page.wait_for_selector(".mlnb-labeler .cell img[src^='blob:']", timeout=30_000)
            assert page.locator(".mlnb-labeler .cell").count() == 24
            page.screenshot(path=str(OUT / "labeler-rendered.png"))
            page.locator(".mlnb-labeler .cell").nth(3).click()
            page.keyboard.press("7")  # class "6"
            page.wait_for_selector(".mlnb-labeler .cell .tag", timeout=30_000)
            page.screenshot(path=str(OUT / "labeler-labelled.png"))
            log = root / ".mlnb" / "labels" / "labels.jsonl"
            deadline = time.time() + 20
            while time.time() < deadline and not log.exists():
                time.sleep(0.2)
            events = [json.loads(line) for line in log.read_text().splitlines()]
            assert events[-1]["label"] == "6" and events[-1]["item"].endswith("digit00003.png")
            # the key did not reach the notebook: still one cell, no new cell inserted by a shortcut
            assert page.locator(".jp-NotebookPanel:visible .jp-Cell").count() <= 2
        finally:
            page.screenshot(path=str(OUT / "labeler-final.png"))


def test_explorer_scatter_and_hover_thumbnail(lab_server):
    url, root = lab_server
    _write_notebook(
        root,
        "explore.ipynb",
        "import mlnb, polars as pl\nd = mlnb.datasets.digits('digits').head(150)\n"
        "ex = mlnb.explore(d, features='pixels', color='label', image='path')\nex",
    )
    with _page(900) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        try:
            _run_first_cell(page, url, "explore.ipynb")
            canvas = page.wait_for_selector(".mlnb-explorer canvas", timeout=120_000)
            # the points are drawn: some pixel of the canvas is coloured
            drawn = page.evaluate(
                "() => { const c = document.querySelector('.mlnb-explorer canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
            )
            assert drawn > 150
            box = canvas.bounding_box()
            found = False
            for gx in range(10, 630, 12):
                for gy in range(10, 470, 24):
                    page.mouse.move(box["x"] + gx, box["y"] + gy)
                    if page.locator(".mlnb-explorer .hover img").count():
                        found = True
                        break
                if found:
                    break
            page.wait_for_selector(".mlnb-explorer .hover img", timeout=10_000)
            assert found
            # box mode: a box over the whole canvas selects every point and fills the linked grid
            page.select_option(".mlnb-explorer select.mode", "box")
            page.mouse.move(box["x"] + 2, box["y"] + 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
            page.mouse.up()
            page.wait_for_function("() => document.querySelector('.mlnb-explorer .status').textContent.startsWith('150 selected')", timeout=20_000)
            assert page.locator(".mlnb-explorer .grid img").count() == 24
        finally:
            page.screenshot(path=str(OUT / "explorer-hover.png"))
            (OUT / "explorer-console.txt").write_text("\n".join(console))


def test_trainer_renders_and_runs(lab_server):
    url, root = lab_server
    _write_notebook(
        root,
        "train.ipynb",
        "import mlnb, polars as pl\nd = mlnb.datasets.digits('digits').filter(pl.col('label').is_in(['1', '7'])).head(60)\n"
        "tr = mlnb.train(d, features='pixels', label='label', image='path', folds=3)\ntr",
    )
    with _page(1400) as page:
        try:
            _run_first_cell(page, url, "train.ipynb")
            page.wait_for_selector(".mlnb-trainer", timeout=120_000)
            page.get_by_role("button", name="Run CV").click()
            page.wait_for_selector(".mlnb-trainer table.mlnb-runs td", timeout=120_000)
            page.wait_for_function("() => document.querySelector('.mlnb-trainer').textContent.includes('accuracy')", timeout=60_000)
        finally:
            page.screenshot(path=str(OUT / "trainer.png"), full_page=True)


def test_labeler_in_notebook_7(lab_server):
    """The same widget in Jupyter Notebook 7 (served by the same server at /notebooks/)."""
    pytest.importorskip("notebook")
    url, root = lab_server
    name = _notebook(root)
    with _page(900) as page:
        try:
            page.goto(f"{url}/notebooks/{name}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
            deadline = time.time() + 90
            while time.time() < deadline and prompt.inner_text().strip() in ("[ ]:", ""):
                page.locator(".jp-Cell .jp-InputArea-editor").first.click()
                page.keyboard.press("Shift+Enter")
                time.sleep(1)
            page.wait_for_selector(".mlnb-labeler .cell img[src^='blob:']", timeout=120_000)
            page.locator(".mlnb-labeler .cell").nth(5).click()
            page.keyboard.press("2")  # class "1"
            page.wait_for_function("() => document.querySelector('.mlnb-labeler .status').textContent.startsWith('saved')", timeout=30_000)
            events = [json.loads(line) for line in (root / ".mlnb" / "labels" / "labels.jsonl").read_text().splitlines()]
            assert events[-1]["label"] == "1" and events[-1]["item"].endswith("digit00005.png")
        finally:
            page.screenshot(path=str(OUT / "labeler-notebook7.png"))
