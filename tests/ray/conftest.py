from __future__ import annotations

import shutil

import polars as pl
import pytest

import mlnb

ray = pytest.importorskip("ray", reason="the Ray engine's tests need mlnb[ray]")


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with 2 CPUs, shared by the tests of this folder."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def image_files(tmp_path_factory):
    """60 small real images (scikit-learn digits) and 5 photographs, as files."""
    d = tmp_path_factory.mktemp("ray-images")
    digits = mlnb.datasets.digits(d / "digits").head(60)
    photos = []
    for name, src in mlnb.datasets.photograph_files().items():
        shutil.copyfile(src, d / name)
        photos.append(str(d / name))
    bad = d / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    return pl.DataFrame({"path": digits["path"].to_list() + photos + [str(bad), str(d / "missing.png")]}).with_row_index("i")


@pytest.fixture
def use_workspace(monkeypatch):
    """Switch the workspace inside a test (local and Ray results must not share a cache)."""

    def switch(path):
        monkeypatch.setattr(mlnb.config, "_workspace", path)

    return switch
