from __future__ import annotations

import polars as pl
import pytest

import mlnb
from mlnb.features import engine


def test_embed_magic_adds_a_column(ip, photo_dir):
    ip.user_ns["photos"] = mlnb.read_images(f"{photo_dir}/*")
    ip.run_cell("%embed photos.path -o feats")
    out = ip.user_ns["feats"]
    assert out.schema["features"] == pl.Array(pl.Float32, 1280)
    assert out.height == ip.user_ns["photos"].height and out["features"].null_count() == 0
    ip.run_cell("%embed photos.path --layer _blocks.5 --name early -o f2")
    assert ip.user_ns["f2"].schema["early"] == pl.Array(pl.Float32, 80)


def test_embed_magic_errors(ip):
    ip.user_ns["t"] = pl.DataFrame({"path": ["a.jpg"]})
    with pytest.raises(mlnb.MlnbError, match="FRAME.COLUMN"):
        ip.run_cell("%embed t")
    with pytest.raises(mlnb.MlnbError, match="Did you mean 'path'"):
        ip.run_cell("%embed t.paht")
    with pytest.raises(mlnb.MlnbError, match="No variable"):
        ip.run_cell("%embed nothere.path")


def test_interrupt_keeps_finished_batches_and_resumes(photo_dir, monkeypatch, counting_forward):
    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    frame = pl.DataFrame({"path": paths})
    monkeypatch.setattr(mlnb.config, "batch_size", 2)
    original = engine.Loaded.forward
    calls = {"n": 0}

    def interrupted(self, batch, layer="pool"):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch, layer)

    monkeypatch.setattr(engine.Loaded, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mlnb.embed_frame(frame, "path", progress=False)
    assert len(mlnb.cache) == 4  # two whole batches, nothing half-written
    monkeypatch.setattr(engine.Loaded, "forward", original)
    out = mlnb.embed_frame(frame, "path", progress=True)
    assert out["features"].null_count() == 0
    assert len(mlnb.cache) == len(paths)
