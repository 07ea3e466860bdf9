"""A newcomer's path: a fresh copy of the project, a fresh virtual environment, and the
README's quickstart command — nothing else. (The README's test command is what CI runs
on a fresh clone, so it is exercised there rather than recursively here.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quickstart_command_sets_up_and_serves_the_notebook(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git to copy the tracked files")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / "mlnb"
    for f in files:
        if (ROOT / f).is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, copy / f)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "VIRTUAL_ENV", "MLNB_VENV")}
    proc = subprocess.Popen(
        ["bash", "dev", "quickstart"], cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    url = None
    try:
        deadline = time.time() + 1200  # a first install downloads torch
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/lab\S*)", line)
            if m:
                url = m.group(1)
        assert url, "no URL printed:\n" + "".join(lines[-30:])
        assert any("No display" in ln for ln in lines)
        base = url.split("/lab")[0]
        token = re.search(r"token=([0-9a-f]+)", url)
        # the printed URL opens the quickstart notebook itself (not the Launcher)
        nb = re.search(r"/lab/tree/(\S+?\.ipynb)", url)
        assert nb and nb.group(1).endswith("01_quickstart.ipynb"), url
        req = urllib.request.Request(base + f"/api/contents/{nb.group(1)}?content=0")
        if token:
            req.add_header("Authorization", f"token {token.group(1)}")
        for _ in range(60):
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the quickstart notebook was not served")
        assert (copy / ".venv" / "bin" / "python").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
