"""SIGKILL at random points: the loop shared by the label and cache crash tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def kill_loop(code: str, path: os.PathLike[str], rounds: int, rng: random.Random, before: Callable[[], None] | None = None) -> list[int]:
    """Run ``code`` (``python -c code PATH START``) ``rounds`` times, each killed with SIGKILL
    at a random moment; the child prints one id per acknowledged write, counting from
    START. Returns every acknowledged id (ids never repeat across rounds)."""
    acknowledged: list[int] = []
    start = 0
    for _ in range(rounds):
        if before is not None:
            before()
        child = subprocess.Popen([sys.executable, "-c", code, str(path), str(start)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        got = [int(x) for x in out.split()]
        acknowledged += got
        start = (got[-1] if got else start) + 1000  # even an unacknowledged id is never reused
    return acknowledged
