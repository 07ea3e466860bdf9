from __future__ import annotations

import os

import pytest

import mlnb
from mlnb.workspace import Workspace, atomic_write_bytes, get_workspace


def test_default_follows_config(tmp_path):
    mlnb.config.workspace = tmp_path / "ws"
    ws = get_workspace()
    assert ws.root == (tmp_path / "ws").resolve()
    ws.write_json("a/b.json", {"x": 1})
    assert ws.read_json("a/b.json") == {"x": 1}
    assert ws.read_json("missing.json", default=[]) == []


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_unwritable_workspace_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ws = Workspace(blocker / "ws")
    with pytest.raises(mlnb.WorkspaceError, match="writable"):
        ws.write_json("x.json", {})


def test_lock_is_reentrant_across_calls(tmp_path):
    ws = Workspace(tmp_path)
    with ws.lock("labels"):
        pass
    with ws.lock("labels"):
        pass


def test_config_validates_settings():
    with pytest.raises(mlnb.MlnbError, match="Unknown device"):
        mlnb.config.device = "tpu"
    with pytest.raises(mlnb.MlnbError, match="Unknown precision"):
        mlnb.config.precision = "int4"
    with pytest.raises(mlnb.MlnbError, match="Unknown engine 'spark'"):
        mlnb.config.engine = "spark"
    assert mlnb.config.engine == "local"
    with pytest.raises(mlnb.MlnbError, match="positive whole number"):
        mlnb.config.ray_workers = 0
