from __future__ import annotations

import shutil

import pytest

import mlnb


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for name, src in mlnb.datasets.photograph_files().items():
        shutil.copyfile(src, d / name)
    return d


@pytest.fixture
def counting_forward(monkeypatch):
    """Counts images that go through the model."""
    from mlnb.features import engine

    seen = []
    original = engine.Loaded.forward

    def forward(self, batch, layer="pool"):
        seen.append(len(batch))
        return original(self, batch, layer)

    monkeypatch.setattr(engine.Loaded, "forward", forward)
    return seen
