from __future__ import annotations

import urllib.error

import pytest

import mlnb
from mlnb.features import zoo


def test_zoo_lists_required_models():
    names = set(mlnb.list_models()["name"])
    assert {"efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16"} <= names
    lite = mlnb.list_models("efficientnet_lite0").row(0, named=True)
    assert lite["offline"] and lite["feature_dim"] == 1280 and lite["license"] == "Apache-2.0"
    assert set(mlnb.list_models("resnet*")["name"]) == {"resnet18", "resnet50"}


def test_unknown_model_suggests_close_names():
    with pytest.raises(mlnb.ModelNotFoundError, match="Did you mean 'resnet50'"):
        mlnb.embed(b"x", model="resnet05")


def test_weights_must_match_exactly(monkeypatch):
    good = zoo.load_lite_state_dict

    def broken(path):
        state = dict(good(path))
        state.pop("_conv_head.weight")
        state["_fc.weight"] = state["_fc.weight"][:10]
        state["extra.bias"] = state["_fc.bias"]
        return state

    monkeypatch.setattr(zoo, "load_lite_state_dict", broken)
    with pytest.raises(mlnb.MlnbError, match="do not fit the architecture: 1 missing .*1 unexpected.*wrong shape"):
        zoo.get_spec("efficientnet_lite0").build()


def test_torchvision_offline_is_a_clear_error(monkeypatch):
    def offline(url, file_name=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(zoo, "load_state_dict_from_url", offline)
    if zoo._weights_cached(zoo.get_spec("resnet18")):
        pytest.skip("resnet18 weights are in the torch cache here")
    with pytest.raises(mlnb.MlnbError) as e:
        zoo.get_spec("resnet18").build()
    msg = str(e.value)
    assert "Cannot download the resnet18 weights" in msg and "efficientnet_lite0" in msg and "checkpoints" in msg


def test_torchvision_architecture_with_weights_from_the_seam(monkeypatch):
    """The real loading path, with random weights standing in for the download."""
    import torch
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(zoo, "load_state_dict_from_url", lambda url, file_name=None: state)
    backbone, head = zoo.get_spec("resnet18").build()
    out = backbone(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 512) and head.out_features == 1000
