"""The Ray engine gives the local engine's results, keeps them as Parquet shards,
resumes, survives a dying worker, and fails fast without a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl
import pytest
import torch

import mlnb
from mlnb.features import ray_engine
from mlnb.features.engine import embed_images

pytestmark = pytest.mark.usefixtures("local_ray")

# Features agree with the local engine to this (both run the same code; only batch composition differs).
TOL = 1e-3


def _local(paths, tmp_path, use_workspace, model="efficientnet_lite0"):
    use_workspace(tmp_path / "local-ws")
    feats, ok = embed_images(paths, model=model, progress=False)
    use_workspace(tmp_path / "ray-ws")
    return feats, ok


def _close(a, b):
    both = ~np.isnan(a).any(axis=1)
    assert np.array_equal(both, ~np.isnan(b).any(axis=1))
    return np.abs(a[both] - b[both]).max() <= TOL


def test_embed_on_ray_equals_local_engine(image_files, tmp_path, use_workspace):
    paths = image_files["path"].to_list()
    want, want_ok = _local(paths, tmp_path, use_workspace)
    from mlnb.features import engine

    engine._LOADED.clear()
    with pytest.warns(mlnb.ImageLoadWarning, match="2 images could not be used") as rec:
        got = mlnb.embed(paths, engine="ray")
    assert not engine._LOADED  # the driver never loaded the model: only the workers did
    (msg,) = [str(w.message) for w in rec if w.category is mlnb.ImageLoadWarning]
    assert "broken.jpg" in msg and "missing.png" in msg
    assert got.null_count() == 2 and not want_ok[-2:].any()
    assert _close(got.to_numpy(), want)
    jobs = list((tmp_path / "ray-ws" / "ray").iterdir())
    assert len(jobs) == 1 and len(list(jobs[0].glob("part-*.parquet"))) >= 2  # it ran as a sharded job


def test_embed_frame_on_ray_writes_shards_that_sql_queries(image_files, tmp_path, use_workspace, capsys):
    frame = image_files.head(40)
    want, _ = _local(frame["path"].to_list(), tmp_path, use_workspace)
    feats = mlnb.embed_frame(frame, "path", engine="ray")
    assert isinstance(feats, pl.LazyFrame)
    assert "40 rows" in capsys.readouterr().out
    out = feats.collect()
    assert out["i"].to_list() == frame["i"].to_list()  # input order, every row once
    assert _close(out["features"].to_numpy(), want)
    # The shards are plain Parquet in the workspace: %%mlsql reads them, or the frame itself.
    (job,) = (tmp_path / "ray-ws" / "ray").iterdir()
    n = mlnb.sql(f"SELECT count(*) AS n, count(DISTINCT i) AS d FROM read_parquet('{job}/part-*.parquet')")
    assert n.row(0) == (40, 40)
    near = mlnb.sql(
        "SELECT i FROM feats ORDER BY array_cosine_similarity(features, (SELECT features FROM feats WHERE i = 3)) DESC LIMIT 1"
    )
    assert near.item() == 3


def test_heads_score_on_the_workers_as_they_do_locally(image_files, tmp_path, use_workspace):
    frame = image_files.head(60)
    use_workspace(tmp_path / "ray-ws")
    local = mlnb.embed_frame(frame, "path", progress=False)
    local = local.with_columns(label=pl.Series([str(i % 3) for i in range(local.height)]))
    mlnb.train_classifier(local, features="features", label="label", name="three", algo="logistic")
    want = mlnb.embed_frame(frame, "path", heads=["three"], progress=False)
    got = mlnb.embed_frame(frame, "path", heads=["three"], engine="ray", progress=False).collect()
    assert got["three"].to_list() == want["three"].to_list()
    assert got.columns == want.columns


def test_sql_on_the_ray_engine(image_files, tmp_path, use_workspace):
    t = image_files.head(30)
    want, _ = _local(t["path"].to_list(), tmp_path, use_workspace)
    mlnb.sql("SET mlnb_engine = 'ray'")
    try:
        assert mlnb.sql("SHOW mlnb_engine")["value"].item() == "ray"
        got = mlnb.sql("SELECT i, embed(path) AS f, imagenet_labels(path, k := 1)[1].label AS top FROM t ORDER BY i", t=t)
    finally:
        mlnb.sql("RESET mlnb_engine")
    assert mlnb.config.engine == "local"
    assert _close(got["f"].to_numpy(), want)
    assert got["top"].null_count() == 0
    # One job for the whole statement, not one per DuckDB chunk.
    assert len(list((tmp_path / "ray-ws" / "ray").iterdir())) == 1


def test_interrupted_job_resumes_without_lost_or_duplicated_rows(image_files, tmp_path, use_workspace):
    frame = image_files.head(60)
    want, _ = _local(frame["path"].to_list(), tmp_path, use_workspace)

    def stop_after_two(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(mlnb.exceptions.Interrupted, match=r"interrupted after \d+ of 10 shards"):
        ray_engine.run_job(frame, "path", shard_size=6, workers=1, progress=False, on_shard=stop_after_two)
    (folder,) = (tmp_path / "ray-ws" / "ray").iterdir()
    kept = len(list(folder.glob("part-*.parquet")))
    assert 2 <= kept < 10
    job = ray_engine.run_job(frame, "path", workers=2, progress=False)
    assert job.shards == 10 and job.reused >= kept and job.computed == 10 - job.reused
    out = job.scan().collect()
    assert out["i"].to_list() == list(range(60))
    assert _close(out["features"].to_numpy(), want)


class _DiesOnce(torch.nn.Module):
    """A backbone whose first forward pass kills its process (a worker lost mid-shard)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.net(x)


def test_a_dead_worker_has_its_shard_redone(image_files, tmp_path, use_workspace):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests
    marker = tmp_path / "died"
    mlnb.register_model("dies_once", _DiesOnce(str(marker)), input_size=32, replace=True)
    frame = image_files.head(24)
    marker.touch()
    want, _ = _local(frame["path"].to_list(), tmp_path, use_workspace, model="dies_once")
    marker.unlink()
    job = ray_engine.run_job(frame, "path", model="dies_once", shard_size=4, workers=2, progress=False)
    assert marker.exists()  # a worker did die
    out = job.scan().collect()
    assert out["i"].to_list() == list(range(24))
    assert _close(out["features"].to_numpy(), want)


def _fresh_python(code, tmp_path, **env):
    """``code`` run by a new Python process with its own workspace (what a new kernel sees)."""
    env = {**os.environ, "MLNB_WORKSPACE": str(tmp_path / ".mlnb"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_unreachable_cluster_is_a_clear_error_within_seconds(tmp_path):
    code = (
        "import time, mlnb\n"
        "mlnb.config.ray_address = '127.0.0.1:1'\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    mlnb.embed_frame(__import__('polars').DataFrame({'p': ['a.jpg']}), 'p', engine='ray')\n"
        "except mlnb.MlnbError as e:\n"
        "    print(f'{time.perf_counter() - t:.2f}|{e}')\n"
    )
    res = _fresh_python(code, tmp_path)
    seconds, _, message = res.stdout.strip().partition("|")
    assert "No Ray cluster reachable at '127.0.0.1:1'" in message, res.stdout + res.stderr
    assert float(seconds) < 10


def test_silent_or_foreign_endpoints_fail_within_seconds(monkeypatch):
    import socket

    def hangs(*args, **kwargs):
        time.sleep(0.2)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    with pytest.raises(mlnb.MlnbError, match="No Ray cluster reachable at 'ray://head:10001' \\(no answer in 3 s"):
        ray_engine.check_reachable("ray://head:10001")
    monkeypatch.undo()
    # Something that listens but is not Ray: a plain TCP server that never speaks.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(mlnb.MlnbError, match="Ray cluster"):
        ray_engine.check_reachable(f"127.0.0.1:{port}")
        ray_engine.check_is_ray(f"127.0.0.1:{port}", timeout=2.0)
    assert time.perf_counter() - t < 10
    server.close()


def test_bad_inputs_are_refused_before_a_job_starts(tmp_path):
    with pytest.raises(mlnb.MlnbError, match="paths, URLs, archive members or bytes"):
        mlnb.embed([np.zeros((8, 8, 3), np.uint8)] * 2, engine="ray")
    with pytest.raises(mlnb.MlnbError, match="Unknown engine 'spark'"):
        mlnb.embed_frame(pl.DataFrame({"p": ["a.jpg"]}), "p", engine="spark")
    with pytest.raises(mlnb.MlnbError, match="already has a column"):
        ray_engine.run_job(pl.DataFrame({"p": ["a.jpg"], "features": [1]}), "p")
    other = tmp_path / "shared-output"
    ray_engine.run_job(pl.DataFrame({"p": []}, schema={"p": pl.String}), "p", output=str(other))
    with pytest.raises(mlnb.MlnbError, match="holds another job"):
        ray_engine.run_job(pl.DataFrame({"p": ["x.jpg"]}), "p", output=str(other))


def test_embed_magic_on_ray(ip, image_files, tmp_path, use_workspace):
    use_workspace(tmp_path / "ray-ws")
    ip.user_ns["photos"] = image_files.head(12)
    shown = ip.run_cell("%embed photos.path --engine ray -o feats").result
    assert isinstance(shown, pl.DataFrame) and shown.height == min(12, mlnb.config.display_limit)
    out = ip.user_ns["feats"].collect()
    assert out.height == 12 and out["features"].null_count() == 0


def test_nothing_imports_ray_unless_asked(tmp_path):
    code = (
        "import sys, mlnb, polars as pl\n"
        "mlnb.sql('SELECT 1')\n"
        "mlnb.embed_frame(pl.DataFrame({'p': [mlnb.datasets.photograph_files()['coffee.png'].as_posix()]}), 'p', progress=False)\n"
        "print('ray' in sys.modules)\n"
    )
    res = _fresh_python(code, tmp_path)
    assert res.stdout.strip().splitlines()[-1] == "False", res.stdout + res.stderr


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(mlnb.MlnbError, match=r'pip install "mlnb\[ray\]"'):
        ray_engine._import_ray()


def test_an_empty_frame_gives_an_empty_features_column():
    out = mlnb.embed_frame(pl.DataFrame({"p": []}, schema={"p": pl.String}), "p", engine="ray")
    assert out.height == 0 and out.schema["features"] == pl.Array(pl.Float32, 1280)


def test_workers_never_outnumber_what_the_cluster_can_place(local_ray):
    workers, ask = ray_engine._plan_workers(local_ray, 16, 100)
    assert workers == 2 and ask == {"num_cpus": 1}  # 2 CPUs, no GPU: two one-CPU actors at most
    workers, ask = ray_engine._plan_workers(local_ray, None, 100)
    assert workers == 1 and ask == {"num_cpus": 2}  # default: one actor per 4 CPUs, at least one
    assert ray_engine._plan_workers(local_ray, 2, 1)[0] == 1  # never more actors than shards


def test_connects_to_a_running_cluster_by_address(tmp_path, image_files):
    """`ray start --head` in another process, as on a real cluster; a fresh driver joins it by address."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Token auth is Ray's per-machine secret; this test's two processes share none, so it is off for both.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLNB_WORKSPACE": str(tmp_path / ".mlnb")}
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    short_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={short_tmp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        paths = image_files["path"].head(8).to_list()
        code = (
            "import mlnb, polars as pl, sys\n"
            f"mlnb.config.ray_address = '127.0.0.1:{port}'\n"
            f"out = mlnb.embed_frame(pl.DataFrame({{'p': {paths!r}}}), 'p', engine='ray', progress=False).collect()\n"
            "import ray\n"
            "print('rows', out.height, out['features'].null_count(), ray.get_runtime_context().gcs_address)\n"
        )
        for _ in range(60):  # the head takes a few seconds to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        res = _fresh_python(code, tmp_path, RAY_AUTH_MODE="disabled")
        last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        assert last.startswith("rows 8 0 ") and last.endswith(f":{port}"), res.stdout + res.stderr[-2000:]
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head and everything it started (one process group)
        head.wait(timeout=60)
        shutil.rmtree(short_tmp, ignore_errors=True)


def test_archives_urls_and_bytes_are_read_as_locally(image_files, tmp_path, use_workspace):
    """Workers use the one image loader: zip members, http URLs and raw bytes give the local engine's features."""
    import functools
    import http.server
    import threading
    import zipfile

    bundled = set(mlnb.datasets.photograph_files())
    photos = [p for p in image_files["path"].to_list() if os.path.basename(p) in bundled][:3]
    assert len(photos) == 3
    folder = os.path.dirname(photos[0])
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        for p in photos:
            zf.write(p, os.path.basename(p))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        sources = (
            [f"zip://{os.path.basename(p)}::{tmp_path / 'photos.zip'}" for p in photos]
            + [f"http://127.0.0.1:{port}/{os.path.basename(p)}" for p in photos]
        )
        blobs = [open(p, "rb").read() for p in photos]
        want, _ = _local(photos, tmp_path, use_workspace)
        got = mlnb.embed(sources, engine="ray").to_numpy()
        got_bytes = mlnb.embed(blobs, engine="ray").to_numpy()
    finally:
        server.shutdown()
    assert _close(got[:3], want) and _close(got[3:], want) and _close(got_bytes, want)


def test_a_second_job_reuses_the_actors_and_their_model(image_files, tmp_path, use_workspace):
    use_workspace(tmp_path / "ray-ws")
    frame = image_files.head(12)
    first = ray_engine.run_job(frame, "path", shard_size=6, workers=1, progress=False)
    second = ray_engine.run_job(frame.head(6), "path", shard_size=6, workers=1, progress=False)
    assert first.actors and second.actors == first.actors  # the same actor: the model stays loaded
    # Another layer is another pool; Ray shut down forgets the kept one.
    third = ray_engine.run_job(frame.head(6), "path", layer="_blocks.5", shard_size=6, workers=1, progress=False)
    assert third.actors and set(third.actors).isdisjoint(first.actors)
    ray_engine.close_pool()
    assert ray_engine._POOL is None
    again = ray_engine.run_job(frame.tail(6), "path", shard_size=6, workers=1, progress=False)
    assert set(again.actors).isdisjoint(first.actors + third.actors)
