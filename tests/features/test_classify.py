"""The default model, offline, on real photographs that ship inside packages."""

from __future__ import annotations

import pytest

import mlnb

EXPECTED = {
    "chelsea.png": {"Egyptian cat", "tabby", "tiger cat"},
    "coffee.png": {"espresso"},
    "rocket.jpg": {"missile", "projectile"},
    "china.jpg": {"palace"},
    "flower.jpg": {"daisy"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_top1_class(photo_dir, name):
    top = mlnb.imagenet_labels(str(photo_dir / name), k=3)
    assert top[0]["label"] in EXPECTED[name], top
    assert 0 < top[0]["probability"] <= 1 and top[0]["probability"] >= top[1]["probability"]


def test_imagenet_labels_in_sql(photo_dir):
    out = mlnb.sql(
        f"SELECT regexp_extract(path, '[^/]+$') AS name, imagenet_labels(path, k := 1)[1].label AS top "
        f"FROM read_images('{photo_dir}/*') ORDER BY name"
    )
    got = dict(zip(out["name"], out["top"]))
    for name, labels in EXPECTED.items():
        assert got[name] in labels
