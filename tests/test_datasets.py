import pytest

import mlnb


def test_offline_helpers_write_files(tmp_path):
    photos = mlnb.datasets.photographs(tmp_path / "p")
    assert {"chelsea.png", "coffee.png", "rocket.jpg", "china.jpg", "flower.jpg"} <= set(photos["name"])
    digits = mlnb.datasets.digits(tmp_path / "d")
    assert digits.height == 1797 and digits["label"].n_unique() == 10
    faces = mlnb.datasets.faces(tmp_path / "f")
    assert faces["label"].value_counts().sort("label")["count"].to_list() == [100, 100]


def test_online_dataset_fails_clearly_offline(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    monkeypatch.setattr("torchvision.datasets.oxford_iiit_pet.download_and_extract_archive", offline, raising=False)
    with pytest.raises(mlnb.MlnbError, match="needs the internet once"):
        mlnb.datasets.oxford_pets(tmp_path / "pets")
