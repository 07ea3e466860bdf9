"""Archives are opened once per archive, not once per member, and globbed inside."""

from __future__ import annotations

import os
import tarfile
import zipfile

import pytest
from PIL import Image

import mlnb
from mlnb import _archives
from mlnb.images import read_source


@pytest.fixture
def archives(tmp_path):
    folder = tmp_path / "imgs"
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(folder / label / f"{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    with tarfile.open(tmp_path / "x.tar", "w") as tf:
        for p in sorted(folder.rglob("*")):
            tf.add(p, p.relative_to(folder).as_posix(), recursive=False)
    _archives.close_all()
    yield tmp_path
    _archives.close_all()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_members_are_read_with_one_open_archive(archives, kind):
    outer = archives / f"x.{kind}"
    before = _archives.opens
    sources = [f"{kind}://{label}/{i}.jpg::{outer}" for label in ("cats", "dogs") for i in range(4)]
    sources += [f"archive+{outer}#cats/{i}.jpg" for i in range(4)]
    for src in sources:
        assert read_source(src)[:3] == b"\xff\xd8\xff"
    assert _archives.opens - before == 1


def test_a_changed_archive_is_opened_again(archives):
    outer = archives / "x.zip"
    assert read_source(f"zip://cats/0.jpg::{outer}")
    before = _archives.opens
    with zipfile.ZipFile(outer, "a") as zf:
        zf.writestr("new.jpg", (archives / "imgs" / "cats" / "1.jpg").read_bytes())
    os.utime(outer, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert read_source(f"zip://new.jpg::{outer}")[:3] == b"\xff\xd8\xff"
    assert _archives.opens - before == 1


def test_the_byte_cap_applies_to_members(archives, monkeypatch):
    monkeypatch.setattr(mlnb.config, "_max_image_bytes", 100)
    with pytest.raises(mlnb.ImageLoadError, match="too large"):
        read_source(f"zip://cats/0.jpg::{archives / 'x.zip'}")
    with pytest.raises(mlnb.ImageLoadError, match="too large"):
        read_source(f"tar://cats/0.jpg::{archives / 'x.tar'}")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_read_images_globs_inside_archives(archives, kind):
    outer = archives / f"x.{kind}"
    got = mlnb.sql(f"SELECT path, label, size FROM read_images('{kind}://**/*.jpg::{outer}')")
    assert got.height == 8 and sorted(set(got["label"])) == ["cats", "dogs"]
    assert got["path"][0] == f"{kind}://cats/0.jpg::{outer}"
    assert (got["size"] > 0).all()
    only = mlnb.read_images(f"archive+{outer}#dogs/*.jpg")
    assert only["path"].to_list() == [f"archive+{outer}#dogs/{i}.jpg" for i in range(4)]
    # What it lists, the loader reads.
    assert all(read_source(p)[:3] == b"\xff\xd8\xff" for p in only["path"])


def test_a_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(mlnb.MlnbError, match="Cannot list .*nope.zip: archive not found"):
        mlnb.sql(f"SELECT * FROM read_images('zip://**/*.jpg::{tmp_path / 'nope.zip'}')")
