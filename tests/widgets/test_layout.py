from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from mlnb.exceptions import MlnbError
from mlnb.widgets import _layout
from mlnb.widgets._layout import LayoutJob, cached_layout, pca_layout, prepare


def blobs(n: int = 150, d: int = 32, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 6
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def neighbours_agree(coords: np.ndarray, labels: np.ndarray) -> float:
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


# -- prepare


def test_prepare_drops_and_counts_nan_inf_rows():
    X, _ = blobs(20)
    X = X.astype(np.float64)
    X[3, 1], X[7, 0], X[8, 5] = np.nan, np.inf, -np.inf
    Xc, keep, note = prepare(X)
    assert Xc.dtype == np.float32 and Xc.shape == (17, 32)
    assert keep.tolist() == [i not in (3, 7, 8) for i in range(20)]
    assert note == "3 rows with NaN/inf features left out"
    assert np.array_equal(Xc, X[keep].astype(np.float32))


def test_prepare_keeps_clean_float32_uncopied():
    X, _ = blobs(20)
    Xc, keep, note = prepare(X)
    assert Xc is X and keep.all() and note == ""


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.ones((2, 4)), "at least 3 rows with features; there are 2 usable rows."),
        (np.full((5, 4), np.nan), "there are 0 usable rows (5 rows with NaN/inf features left out)"),
        (np.ones((5, 0)), "no feature columns"),
        (np.ones(5), "2-D matrix"),
        (np.array([["a", "b"]] * 4), "must be numbers"),
    ],
)
def test_prepare_says_what_is_wrong(X, message):
    with pytest.raises(MlnbError) as info:
        prepare(X)
    assert message in str(info.value)


# -- PCA


def test_pca_layout_separates_clusters_and_is_deterministic():
    X, labels = blobs(300)
    coords = pca_layout(X)
    assert coords.dtype == np.float32 and coords.shape == (300, 2)
    assert neighbours_agree(coords, labels) > 0.95
    assert np.array_equal(coords, pca_layout(X))


def test_pca_layout_matches_exact_pca_up_to_sign():
    X, _ = blobs(500, d=100)
    Xc = X - X.mean(0)
    _, _, Vt = np.linalg.svd(Xc.astype(np.float64), full_matrices=False)
    exact = Xc @ Vt[:2].T
    coords = pca_layout(X)
    for j in range(2):
        assert abs(np.corrcoef(coords[:, j], exact[:, j])[0, 1]) > 0.999


def test_pca_layout_of_a_sample_when_there_are_many_rows():
    X, labels = blobs(_layout._PCA_SAMPLE + 5_000, d=16)
    coords = pca_layout(X)
    assert coords.shape == (len(X), 2) and np.isfinite(coords).all()
    assert neighbours_agree(coords[:500], labels[:500]) > 0.9


@pytest.mark.parametrize(
    "X",
    [np.ones((50, 8)), np.zeros((4, 3)), np.tile(np.arange(6.0), (10, 1))],
    ids=["constant", "zeros", "identical-rows"],
)
def test_pca_layout_without_variance_is_all_origin(X):
    coords = pca_layout(X)
    assert coords.shape == (len(X), 2) and not coords.any()


def test_pca_layout_with_one_varying_feature_or_fewer_features_than_components():
    X = np.ones((10, 5), dtype=np.float32)
    X[:, 2] = np.arange(10)
    coords = pca_layout(X)
    assert np.isfinite(coords).all() and not coords[:, 1].any()
    assert abs(np.corrcoef(coords[:, 0], np.arange(10))[0, 1]) > 0.999
    assert pca_layout(np.arange(12.0).reshape(4, 3), n_components=5).shape == (4, 5)


# -- UMAP / t-SNE jobs


def test_umap_job_separates_clusters_and_is_cached(_workspace):
    X, labels = blobs()
    seen, progress = [], []
    job = LayoutJob(X, "umap").start(on_done=seen.append, on_progress=progress.append)
    coords = job.wait(timeout=600)
    assert coords.dtype == np.float32 and coords.shape == (150, 2)
    assert neighbours_agree(coords, labels) > 0.95
    assert job.done and job.error is None and not job.cached
    assert len(seen) == 1 and seen[0] is coords
    assert progress[-1].startswith("UMAP of 150 points: done in") and job.progress == progress[-1]
    assert len(list((_workspace / "layouts").glob("umap-*.npy"))) == 1

    again = LayoutJob(X, "umap").start()
    assert np.array_equal(again.wait(), coords) and again.cached
    assert np.array_equal(cached_layout(X, "umap"), coords)
    assert cached_layout(X, "umap", n_neighbors=5) is None
    assert cached_layout(X[:-1], "umap") is None
    assert cached_layout(X, "tsne") is None


def test_cache_key_includes_the_library_version(monkeypatch):
    X, _ = blobs(10)
    path = _layout._cache_path(X, "umap", _layout._resolve("umap", 2, {}))
    np.save(path, np.zeros((10, 2), np.float32))
    assert cached_layout(X, "umap") is not None
    monkeypatch.setattr(_layout, "_library_version", lambda method: "0.0.1")
    assert cached_layout(X, "umap") is None


def test_damaged_cache_file_is_ignored():
    X, _ = blobs(10)
    path = _layout._cache_path(X, "umap", _layout._resolve("umap", 2, {}))
    path.write_bytes(b"not a numpy file")
    assert cached_layout(X, "umap") is None
    np.save(path, np.full((10, 2), np.nan, np.float32))
    assert cached_layout(X, "umap") is None


@pytest.mark.parametrize("method", ["umap", "tsne"])
@pytest.mark.parametrize("n", [3, 5, 12])
def test_fewer_points_than_neighbours(method, n):
    X, _ = blobs(n, d=8)
    coords = LayoutJob(X, method, n_neighbors=15) if method == "umap" else LayoutJob(X, method, perplexity=30)
    out = coords.wait(timeout=600)
    assert out.shape == (n, 2) and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_identical_rows_put_every_point_at_the_origin(method):
    out = LayoutJob(np.ones((40, 8), np.float32), method).wait(timeout=600)
    assert out.shape == (40, 2) and not out.any()


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_many_duplicates_still_give_a_finite_layout(method):
    X, _ = blobs(20, d=8)
    X = np.vstack([np.repeat(X[:1], 60, axis=0), X])
    out = LayoutJob(X, method).wait(timeout=600)
    assert out.shape == (80, 2) and np.isfinite(out).all()


def test_tsne_job_separates_clusters_and_reports_iterations():
    X, labels = blobs()
    progress = []
    job = LayoutJob(X, "tsne").start(on_progress=progress.append)
    coords = job.wait(timeout=600)
    assert coords.shape == (150, 2) and neighbours_agree(coords, labels) > 0.95
    assert job.progress.startswith("t-SNE of 150 points: done in")
    # the ticker reports the iteration when the run lasts longer than a tick
    assert all(line.startswith("t-SNE of 150 points") for line in progress)


def test_cancel_stops_tsne_and_discards_the_result(_workspace):
    X, _ = blobs(400)
    done, errors = [], []
    job = LayoutJob(X, "tsne").start(on_done=done.append, on_error=errors.append)
    job.cancel()
    assert job.done and job.result is None and job.error == "t-SNE layout cancelled."
    with pytest.raises(MlnbError, match="cancelled"):
        job.wait()
    job._thread.join(600)
    assert not job._thread.is_alive() and done == [] and errors == []


def test_failure_becomes_a_short_message(monkeypatch):
    def boom(job, X, p):
        raise ValueError("k >= N for N * N square matrix.\nmore detail nobody needs")

    monkeypatch.setitem(_layout._COMPUTE, "umap", boom)
    X, _ = blobs(10)
    errors = []
    job = LayoutJob(X, "umap").start(on_error=errors.append)
    with pytest.raises(MlnbError, match=r"^UMAP failed: k >= N for N \* N square matrix\.$"):
        job.wait(timeout=60)
    assert errors == [job.error] and job.progress == job.error and job.result is None


def test_missing_library_names_the_extra(monkeypatch):
    from importlib import metadata

    real = metadata.version

    def version(name):
        if name == "openTSNE":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    X, _ = blobs(10)
    with pytest.raises(MlnbError, match=r'pip install "mlnb\[widgets\]"'):
        LayoutJob(X, "tsne").wait(timeout=60)


def test_bad_method_and_options_are_reported_at_once():
    X, _ = blobs(10)
    with pytest.raises(MlnbError, match="Unknown layout method 'pca2'; choose one of: umap, tsne"):
        LayoutJob(X, "pca2")
    with pytest.raises(MlnbError, match="UMAP has no option perplexity"):
        LayoutJob(X, "umap", perplexity=5)
    with pytest.raises(MlnbError, match="at least 3 rows"):
        LayoutJob(X[:2], "umap")


def test_wait_timeout_says_it_is_still_running(monkeypatch):
    gate = threading.Event()

    def slow(job, X, p):
        gate.wait(30)
        return np.zeros((len(X), 2), np.float32)

    monkeypatch.setitem(_layout._COMPUTE, "umap", slow)
    X, _ = blobs(10)
    job = LayoutJob(X, "umap").start()
    with pytest.raises(MlnbError, match="still running after 0.1 s"):
        job.wait(timeout=0.1)
    gate.set()
    assert job.wait(timeout=30).shape == (10, 2)


def test_a_job_waiting_for_the_same_layout_takes_it_from_the_cache(monkeypatch):
    # PCA -> UMAP -> t-SNE -> UMAP: the first UMAP cannot be interrupted and finishes into
    # the cache; the second, waiting for it, must not compute it again.
    gate, calls = threading.Event(), []

    def slow(job, X, p):
        calls.append(1)
        gate.wait(30)
        return np.ones((len(X), 2), np.float32)

    monkeypatch.setitem(_layout._COMPUTE, "umap", slow)
    X, _ = blobs(10, seed=5)
    first = LayoutJob(X, "umap").start()
    for _ in range(300):
        if calls:
            break
        time.sleep(0.01)
    first.cancel()
    second = LayoutJob(X, "umap").start()
    for _ in range(300):
        if "waiting for another layout" in second.progress:
            break
        time.sleep(0.01)
    gate.set()
    assert second.wait(30).tolist() == np.ones((10, 2)).tolist()
    assert calls == [1] and second.cached and second.progress.endswith("from the cache")


def test_warnings_in_a_layout_thread_are_dropped_and_others_kept(monkeypatch):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))
    _layout._install_quiet_warnings()
    _layout._install_quiet_warnings()  # once only

    def noisy():
        _layout._quiet.on = True
        warnings.warn("numba says something", UserWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        t = threading.Thread(target=noisy)
        t.start()
        t.join()
        warnings.warn("the user's own warning", UserWarning, stacklevel=1)
    assert shown == ["the user's own warning"]


def test_a_layout_job_prints_or_logs_nothing(capfd, caplog):
    X, _ = blobs(60)
    LayoutJob(X, "umap", n_neighbors=50).wait(timeout=600)
    LayoutJob(X[:5], "tsne").wait(timeout=600)  # perplexity lowered: openTSNE would log about it
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [r for r in caplog.records if not r.name.startswith("mlnb")] == []


def test_compat_umap_coordinates():
    X, _ = blobs(30)
    assert _layout.umap_coordinates(X, random_state=0).shape == (30, 2)


@pytest.mark.slow
def test_a_fresh_process_caches_numba_code_under_the_user_cache(tmp_path):
    """Two fresh interpreters: the second finds umap's and pynndescent's compiled code on disk."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["MLNB_WORKSPACE"] = str(tmp_path / "ws")
    code = (
        "import numpy as np; from mlnb.widgets._layout import LayoutJob;"
        "X = np.random.default_rng(0).normal(size=(40, 8)).astype('float32');"
        "LayoutJob(X, 'umap', random_state=1).wait(); import os; print(os.environ['NUMBA_CACHE_DIR'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    cache = Path(out.stdout.strip())
    assert cache == tmp_path / "cache" / "mlnb" / "numba"
    names = {p.name for p in cache.rglob("*.nbi")}
    assert any(n.startswith("layouts.") for n in names), "umap's own functions are cached"
    assert any(n.startswith("pynndescent_.") or n.startswith("utils.") for n in names)
