"""Tab completion through a real kernel: jupyter_client's complete_request, as JupyterLab,
Notebook 7 and VS Code send it."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kc(tmp_path_factory):
    from jupyter_client.manager import start_new_kernel

    root = tmp_path_factory.mktemp("kernel")
    env = {**os.environ, "MLNB_WORKSPACE": str(root / ".mlnb")}
    km, client = start_new_kernel(kernel_name="python3", cwd=str(root), env=env)
    try:
        run(client, "%load_ext mlnb")
        run(
            client,
            "import polars as pl\n"
            "images = pl.DataFrame({'path': ['a.jpg'], 'label': ['cat'], 'width': [3]})\n"
            "meta = pl.DataFrame({'path': ['a.jpg'], 'camera': ['x']})\n"
            "wide = pl.DataFrame({f'feat_{i}': [0.0] for i in range(1000)})\n"
            "lo = 1",
        )
        yield client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def run(client, code: str) -> None:
    reply = client.execute_interactive(code, timeout=120)
    assert reply["content"]["status"] == "ok", reply["content"]


def complete(client, code: str, cursor: int | None = None) -> dict:
    cursor = len(code) if cursor is None else cursor
    reply = client.complete(code, cursor, reply=True, timeout=60)["content"]
    assert reply["status"] == "ok"
    return reply


def test_columns_in_a_cell_magic(kc):
    code = "%%mlsql\nSELECT  FROM images"
    reply = complete(kc, code, len("%%mlsql\nSELECT "))
    assert reply["matches"][:3] == ["path", "label", "width"]
    assert reply["cursor_start"] == reply["cursor_end"] == len("%%mlsql\nSELECT ")
    types = {t["text"]: t["type"] for t in reply["metadata"]["_jupyter_types_experimental"]}
    assert types["path"].startswith("column") and types["embed"].startswith("embed(image")
    # no Python names mixed in
    assert "import" not in reply["matches"] and "pl" not in reply["matches"]


def test_prefix_alias_and_tables(kc):
    code = "%%mlsql -o r\nSELECT t.wi FROM images t JOIN meta m ON t.path = m.path"
    reply = complete(kc, code, code.index(" FROM"))
    assert reply["matches"] == ["width"]
    assert code[reply["cursor_start"] : reply["cursor_end"]] == "wi"
    assert complete(kc, "%%mlsql\nSELECT * FROM me")["matches"] == ["meta"]
    assert complete(kc, "%%mlsql\nSELECT m. FROM meta m", len("%%mlsql\nSELECT m."))["matches"] == ["path", "camera"]


def test_line_magic_variables_and_models(kc):
    assert complete(kc, "r = %mlsql SELECT * FROM ima")["matches"] == ["images"]
    assert complete(kc, "%%mlsql\nSELECT * FROM images WHERE width > $l")["matches"] == ["$lo"]
    reply = complete(kc, "%%mlsql\nSELECT embed(path, model := 'efficientnet_l")
    assert reply["matches"][0] == "efficientnet_lite0"
    assert complete(kc, "%%mlsql\nCREATE CLASSIFIER pets USING kn")["matches"] == ["knn"]


def test_python_cells_complete_as_before(kc):
    assert "images" in complete(kc, "imag")["matches"]


def test_wide_frame_completion_is_quick(kc):
    import time

    code = "%%mlsql\nSELECT feat_12 FROM wide"
    cursor = len("%%mlsql\nSELECT feat_12")
    complete(kc, code, cursor)
    t = time.perf_counter()
    for _ in range(5):
        reply = complete(kc, code, cursor)
    per = (time.perf_counter() - t) / 5
    assert reply["matches"][:2] == ["feat_12", "feat_120"]
    assert per < 0.5, f"{per * 1000:.0f} ms a round trip"  # the 50 ms budget is measured in-process by the benchmark
