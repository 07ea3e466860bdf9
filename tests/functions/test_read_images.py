from __future__ import annotations

from PIL import Image

import mlnb


def _folder(root):
    for label, n in (("cat", 2), ("dog", 1)):
        d = root / "photos" / label
        d.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{label}{i}.jpg")
    (root / "photos" / "cat" / "notes.txt").write_text("not an image")


def test_imagefolder_labels_from_sql(tmp_path):
    _folder(tmp_path)
    out = mlnb.sql(f"SELECT label, count(*) AS n FROM read_images('{tmp_path}/photos/**/*') GROUP BY label ORDER BY label")
    assert out.to_dicts() == [{"label": "cat", "n": 2}, {"label": "dog", "n": 1}]


def test_python_twin_has_path_size_label(tmp_path):
    _folder(tmp_path)
    df = mlnb.read_images(tmp_path / "photos" / "*" / "*.jpg")
    assert df.columns == ["path", "size", "label", "last_modified"]
    assert df.height == 3 and all(s > 0 for s in df["size"])
    assert df["path"].str.ends_with(".jpg").all()
