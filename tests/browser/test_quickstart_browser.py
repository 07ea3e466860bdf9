"""``bash dev quickstart``: the URL it prints opens the quickstart notebook itself, not the Launcher."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_labeler_browser import OUT, _page, _unavailable  # the sibling module (tests/browser is on sys.path)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_dev_quickstart_opens_the_notebook(tmp_path):
    if not os.path.exists("/usr/bin/chromium"):
        _unavailable("Debian's chromium is not installed (bash dev test installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(MLNB_VENV=str(Path(sys.executable).parents[1]), MLNB_WORKSPACE=str(tmp_path / ".mlnb"))
    proc = subprocess.Popen(
        ["bash", "dev", "quickstart"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = None
        deadline = time.time() + 300  # the first call may install mlnb[all]
        lines = []
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
            if m:
                url = m.group(1)
        assert url is not None, "".join(lines[-20:])
        assert "/lab/tree/examples/01_quickstart.ipynb" in url
        with _page(800) as page:
            try:
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=90_000)
                assert page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel").first.inner_text() == "01_quickstart.ipynb"
                page.wait_for_function(
                    "() => (document.querySelector('.jp-NotebookPanel .jp-Cell') || {}).innerText?.includes('mlnb quickstart')",
                    timeout=60_000,
                )
            finally:
                page.screenshot(path=str(OUT / "quickstart-opened.png"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
