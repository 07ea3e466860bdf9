"""CREATE CLASSIFIER ... USING finetune: a fine-tuned backbone in the zoo and a head on it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.exceptions import Interrupted, MlnbError
from mlnb.heads._finetune import backbone_blocks, finetune_classifier


def few_digits(frame, classes=("0", "1", "2"), per_class=8):
    return pl.concat([frame.filter(pl.col("label") == c).head(per_class) for c in classes]).select("path", "label")

FAST = {"model": "tiny_base", "epochs": 1, "blocks": 2, "batch_size": 8}
LITE = {**FAST, "model": "efficientnet_lite0"}  # for errors found before any model is built


@pytest.fixture
def digits(digits_frame):
    return few_digits(digits_frame)


@pytest.mark.slow
def test_sql_finetune_makes_a_model_and_a_head(digits, tiny_base):
    out = mlnb.sql(
        "CREATE CLASSIFIER ft USING finetune WITH (model = 'tiny_base', epochs = 2, blocks = 2, batch_size = 8, "
        "lr = 1e-3, augment = 'flip,crop', optimizer = 'sgd', momentum = 0.9, schedule = 'step', validation = 0.25, "
        "patience = 2) AS SELECT path AS image, label FROM digits"
    )
    row = out.row(0, named=True)
    assert row["classifier"] == "ft@1" and row["model"] == "ft" and row["backbone"] == "tiny_base"
    assert row["rows"] == 24 and row["classes"] == 3 and row["evaluated_on"] == "validation (6 rows)"
    assert 0 <= row["best_epoch"] <= 2 and row["epochs_run"] == 2
    head = mlnb.load_classifier("ft")
    assert head.meta["algorithm"] == "finetune" and head.meta["feature_model"] == "ft"
    assert [r["epoch"] for r in head.meta["finetune"]["history"]] == [0, 1, 2]  # 0: the linear probe
    # The zoo has the fine-tuned backbone; the head scores its features from SQL.
    assert "ft" in mlnb.list_models("ft")["name"].to_list()
    got = mlnb.sql("SELECT label, ft(embed(path, model := 'ft')) AS pred, ft_proba(embed(path, model := 'ft')) AS p FROM digits")
    assert set(got["pred"].to_list()) <= {"0", "1", "2"}
    assert got["p"].null_count() == 0


def test_saved_backbone_is_the_trained_one(digits, tiny_base, monkeypatch):
    monkeypatch.setattr(mlnb.config, "precision", "fp32")
    # No validation rows: the epoch trained is kept (not the starting point)
    head = finetune_classifier(digits.rename({"path": "image"}), name="ft", options={**FAST, "validation": 0})
    from mlnb.features.engine import Loaded, _decode_one, get_loaded
    from mlnb.features.zoo import get_spec

    spec = get_spec("ft")
    pixels = np.stack([_decode_one(spec, p) for p in digits["path"].to_list()[:6]])
    import torch

    trained = Loaded(spec=spec, backbone=head.backbone_, head=None, device=torch.device("cpu"), dtype=None).forward(pixels)
    saved = get_loaded("ft").forward(pixels)
    np.testing.assert_allclose(saved, trained, atol=1e-5)
    # and the base model's features differ: the last blocks were trained
    base = get_loaded("tiny_base").forward(pixels)
    assert np.abs(base - trained).max() > 1e-4
    # the head on those features gives what training measured on the same images
    np.testing.assert_allclose(head.predict_proba(saved), head.estimator.predict_proba(trained), atol=1e-5)


def test_blocks_zero_trains_only_the_head(digits, tiny_base):
    head = finetune_classifier(digits.rename({"path": "image"}), options={**FAST, "blocks": 0, "lr": 1e-2})
    import torch

    from mlnb.features.zoo import get_spec

    base, _ = get_spec("tiny_base").build()
    for (k, a), b in zip(head.backbone_.state_dict().items(), base.state_dict().values()):
        assert torch.equal(a, b), k


def test_validation_where_names_the_held_out_rows(digits, tiny_base):
    df = digits.rename({"path": "image"}).with_row_index("i")
    head = finetune_classifier(df, options={**FAST, "validation_where": "i % 4 = 0"})
    assert head.meta["metrics"]["evaluated_on"] == "validation (6 rows)"
    with pytest.raises(MlnbError, match="chose every training row"):
        finetune_classifier(df, options={**FAST, "validation_where": "i >= 0"})
    with pytest.raises(MlnbError, match="cannot be evaluated"):
        finetune_classifier(df, options={**FAST, "validation_where": "no_such_column = 1"})
    # a class with no training row: the head was saved with a class it could never predict
    with pytest.raises(MlnbError, match="holds out every row of class '2': the head could never learn it"):
        finetune_classifier(df, name="ft", options={**FAST, "validation_where": "label = '2' OR i % 4 = 0"})
    assert mlnb.classifiers().height == 0


def test_options_from_python():
    from mlnb.heads._finetune import check_options

    assert check_options({"augment": ["flip", "crop"]})["augment"] == "flip,crop"
    assert check_options({"augment": ("none",)})["augment"] == ""
    assert check_options({"device": "cpu"})["device"] == "cpu"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"blocks": 99}, "blocks = 99 is more than efficientnet_lite0 has: it has 17 blocks"),
        ({"lr": 0}, "lr for finetune must be a number above 0"),
        ({"lr": -1e-3}, "lr for finetune must be"),
        ({"optimizer": "rmsprop"}, "Unknown optimizer 'rmsprop'"),
        ({"augment": "flip,rotate"}, "Unknown augment 'rotate'"),
        ({"schedule": "exp"}, "Unknown schedule 'exp'"),
        ({"epochs": 0}, "epochs for finetune must be a whole number at least 1"),
        ({"validation": 1.5}, "validation for finetune must be"),
        ({"blokcs": 2}, "Did you mean 'blocks'"),
        ({"model": "no_such_model"}, "Unknown model 'no_such_model'"),
        ({"device": "xyz"}, "Option device for finetune is 'auto', 'cpu', 'cuda'"),  # was torch's RuntimeError after loading the images
        ({"augment": ["flip", "spin"]}, "Unknown augment 'spin'"),
    ],
)
def test_bad_options(digits, options, message):
    with pytest.raises(MlnbError, match=message):
        finetune_classifier(digits.rename({"path": "image"}), name="ft", options={**LITE, **options})
    assert mlnb.classifiers().height == 0


def test_bad_data(digits):
    one = digits.filter(pl.col("label") == "0").rename({"path": "image"})
    with pytest.raises(MlnbError, match="at least two classes"):
        finetune_classifier(one, options=LITE)
    with pytest.raises(MlnbError, match="not images"):
        finetune_classifier(pl.DataFrame({"image": [1.0, 2.0], "label": ["a", "b"]}), options=LITE)
    with pytest.raises(MlnbError, match="No column 'image'"):
        finetune_classifier(digits, options=LITE)
    with pytest.raises(Exception, match="image column and a label column"):
        mlnb.sql("CREATE CLASSIFIER x USING finetune AS SELECT path FROM digits")


@pytest.mark.slow
def test_validation_rows_of_their_own(digits_frame, digits, tiny_base):
    """Early stopping on a held-out set the user names: validation = (SELECT ...) or a table (or a
    frame from Python). It was refused with the Subquery object's repr as 'got ...'."""
    held = few_digits(digits_frame, per_class=12).filter(~pl.col("path").is_in(digits["path"].implode()))
    out = mlnb.sql("CREATE CLASSIFIER ft USING finetune WITH (model = 'tiny_base', epochs = 1, batch_size = 8, "
                   "validation = (SELECT path AS image, label FROM held)) AS SELECT path AS image, label FROM digits")
    row = out.row(0, named=True)
    assert row["evaluated_on"] == "validation (12 rows)" and row["rows"] == 36
    head = finetune_classifier(digits.rename({"path": "image"}), options={**FAST, "validation": held.with_columns(pl.col("label").cast(pl.Int64))})
    assert head.meta["metrics"]["evaluated_on"] == "validation (12 rows)"
    for bad, message in (
        ("validation = (SELECT path, label FROM held WHERE false)", "The validation rows are empty"),
        ("validation = no_such_table", "Unknown table 'no_such_table'"),
        ("validation = held, validation_where = 'true'", "not both"),
    ):
        with pytest.raises(MlnbError, match=message):
            mlnb.sql(f"CREATE OR REPLACE CLASSIFIER ft USING finetune WITH (model = 'tiny_base', {bad}) AS SELECT path AS image, label FROM digits")
    assert mlnb.load_classifier("ft").version == 1


def test_fine_tuning_a_classifier_own_backbone_again_keeps_its_origin(digits, tiny_base):
    # The meta (and the export card) said the new backbone was fine-tuned from itself.
    from mlnb.features._user_models import read_model_spec

    df = digits.rename({"path": "image"})
    finetune_classifier(df, name="ft", options=FAST)
    again = finetune_classifier(df, name="ft", options={**FAST, "model": "ft"}, replace=True)
    assert again.meta["backbone"] == "tiny_base" and read_model_spec("ft")["meta"]["finetuned_from"] == "tiny_base"
    assert finetune_classifier(df, name="ft2", options={**FAST, "model": "ft"}).meta["backbone"] == "ft"


def test_too_many_blocks_is_refused_before_images_are_read(tiny_base, tmp_path):
    # It was found after every image had been read (minutes on a large table); here the images do not exist.
    df = pl.DataFrame({"image": [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "label": ["a", "b"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'file not found' report: nothing was read
        with pytest.raises(MlnbError, match="blocks = 99 is more than tiny_base has: it has 13 blocks"):
            finetune_classifier(df, name="ft", options={**FAST, "blocks": 99})


def test_images_in_memory_in_a_pandas_frame(digits, tiny_base):
    """PIL images or NumPy arrays in a pandas column (what embed() takes) were a raw ArrowInvalid
    ('did not recognize Python value type')."""
    from PIL import Image

    paths = digits["path"].to_list()
    pil = pd_frame(image=[Image.open(p).convert("RGB") for p in paths], label=digits["label"].to_list(), i=list(range(len(paths))))
    head = finetune_classifier(pil, options={**FAST, "validation_where": "i % 4 = 0"})
    assert head.meta["n_rows"] == 24 and head.meta["metrics"]["evaluated_on"] == "validation (6 rows)"
    arrays = pd_frame(image=[np.asarray(Image.open(p).convert("RGB")) for p in paths], label=digits["label"].to_list())
    assert finetune_classifier(arrays, options=FAST).meta["n_rows"] == 24
    with pytest.raises(MlnbError, match="Every label in column 'label' is NULL"):  # was "has only none"
        finetune_classifier(pd_frame(image=paths, label=[None] * len(paths)), options=FAST)


def pd_frame(**columns):
    import pandas as pd

    return pd.DataFrame(columns)


def test_unreadable_images_are_reported_and_left_out(digits, tiny_base, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    df = pl.concat([digits, pl.DataFrame({"path": [str(bad), str(tmp_path / "missing.png")], "label": ["0", "1"]})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = finetune_classifier(df.rename({"path": "image"}), options=FAST)
    assert head.meta["n_rows"] == 24
    text = "\n".join(str(w.message) for w in caught)
    assert "broken.png" in text and "missing.png" in text and "left out of fine-tuning" in text


def test_ctrl_c_leaves_the_old_classifier(digits, tiny_base):
    first = finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)

    def interrupt(epoch, epochs, row):
        if epoch >= 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="nothing was saved"):
        finetune_classifier(digits.rename({"path": "image"}), name="ft", options={**FAST, "lr": 1e-3}, replace=True, progress=interrupt)
    kept = mlnb.load_classifier("ft")
    assert kept.meta["data_hash"] == first.meta["data_hash"] and kept.version == 1
    from mlnb.features._user_models import read_model_spec

    assert read_model_spec("ft")["meta"]["classifier"] == "ft"


def test_names_are_refused_before_training(digits, tiny_base):
    finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)
    with pytest.raises(MlnbError, match="exists already"):
        finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)
    with pytest.raises(MlnbError, match="name of a model in the zoo"):
        finetune_classifier(digits.rename({"path": "image"}), name="efficientnet_lite0", options=FAST)
    with pytest.raises(MlnbError, match="not the backbone of classifier"):
        finetune_classifier(digits.rename({"path": "image"}), name="tiny_base", options=FAST, replace=True)
    # OR REPLACE replaces both, and the new head is version 1 again
    out = mlnb.sql("CREATE OR REPLACE CLASSIFIER ft USING finetune WITH (model = 'tiny_base', epochs = 1, batch_size = 8) AS SELECT path AS image, label FROM digits")
    assert out["classifier"].item() == "ft@1"
    # DROP CLASSIFIER keeps the model; creating the classifier again takes the model's place
    mlnb.sql("DROP CLASSIFIER ft")
    assert "ft" in mlnb.list_models("ft")["name"].to_list()
    finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)
    assert mlnb.load_classifier("ft").version == 1


def test_blocks_of_known_backbones():
    from mlnb.features.efficientnet_lite import EfficientNetLite

    assert len(backbone_blocks(EfficientNetLite())) == 17  # 16 MBConv blocks and the head convolution
    import torchvision

    assert len(backbone_blocks(torchvision.models.resnet18(weights=None))) == 8


@pytest.mark.slow
def test_fresh_process_scores_with_the_finetuned_model(digits, tiny_base, _workspace):
    finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)
    paths = digits["path"].to_list()[:3]
    code = (
        "import mlnb, polars as pl\n"
        f"mlnb.config.workspace = {str(_workspace)!r}\n"
        f"t = pl.DataFrame({{'path': {paths!r}}})\n"
        "print(mlnb.sql(\"SELECT ft(embed(path, model := 'ft')) AS p FROM t\")['p'].to_list())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(p in ("0", "1", "2") for p in eval(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_real_backbone_learns_digits(digits_frame):
    """efficientnet_lite0 (the shipped weights), 3 digit classes, one epoch on the last block."""
    df = few_digits(digits_frame, per_class=12).rename({"path": "image"})
    head = finetune_classifier(df, name="digits_ft", options={"epochs": 1, "blocks": 1, "batch_size": 16, "validation": 0.25})
    assert head.meta["metrics"]["accuracy"] >= 0.8
    got = mlnb.sql("SELECT label, digits_ft(embed(image, model := 'digits_ft')) AS pred FROM df")
    assert (got["label"] == got["pred"]).mean() >= 0.8


def _model_files(name):
    from mlnb.features._user_models import models_root

    return {p.name: p.read_bytes() for p in (models_root() / name).iterdir()}


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_head_save_on_replace_keeps_the_old_model_and_head(digits, tiny_base, monkeypatch, failure):
    """The backbone is written before the head: when the head's save then fails (or is
    interrupted), the old backbone is put back, so the old head still scores its own features."""
    from mlnb.features._user_models import models_root, read_model_spec
    from mlnb.heads import store

    df = digits.rename({"path": "image"})
    first = finetune_classifier(df, name="ft", options={**FAST, "validation": 0})
    files = _model_files("ft")
    sha = read_model_spec("ft")["sha256"]
    from mlnb.features.engine import _decode_one, get_loaded

    pixels = np.stack([_decode_one(get_loaded("ft").spec, p) for p in df["image"].to_list()[:6]])
    feats = get_loaded("ft").forward(pixels)  # the model itself, not the embedding cache
    preds = mlnb.sql("SELECT ft(embed(image, model := 'ft')) AS p FROM df")["p"].to_list()

    def broken_save(*args, **kwargs):
        raise failure

    with monkeypatch.context() as m, pytest.raises(type(failure)):
        m.setattr(store, "save", broken_save)
        finetune_classifier(df, name="ft", options={**FAST, "validation": 0, "lr": 1e-3, "blocks": 3}, replace=True)
    assert _model_files("ft") == files  # the same spec.json and weights, nothing new beside them
    assert read_model_spec("ft")["sha256"] == sha
    assert not [p for p in models_root().iterdir() if p.name.startswith(".")]  # the copy kept aside is gone
    kept = mlnb.load_classifier("ft")
    assert kept.version == 1 and kept.meta["data_hash"] == first.meta["data_hash"]
    np.testing.assert_allclose(get_loaded("ft").forward(pixels), feats, atol=1e-6)
    assert mlnb.sql("SELECT ft(embed(image, model := 'ft')) AS p FROM df")["p"].to_list() == preds


def test_failed_head_save_of_a_new_classifier_leaves_no_model(digits, tiny_base, monkeypatch):
    from mlnb.heads import store

    with monkeypatch.context() as m, pytest.raises(OSError):
        m.setattr(store, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)
    assert "ft" not in mlnb.list_models("ft")["name"].to_list()
    assert mlnb.classifiers().height == 0
    finetune_classifier(digits.rename({"path": "image"}), name="ft", options=FAST)  # the name is free


def test_batch_size_one_trains_and_null_rows_are_reported(digits, tiny_base):
    # Every batch of one image used to be skipped: the "trained" backbone was the base one.
    df = pl.concat([digits.head(4), digits.tail(4), pl.DataFrame({"path": [digits["path"][5], None], "label": [None, "1"]})])
    with pytest.warns(UserWarning, match="2 of 10 training rows have a null image or a null label"):
        head = finetune_classifier(df.rename({"path": "image"}), options={**FAST, "batch_size": 1, "blocks": 1, "validation": 0, "lr": 1e-2})
    import torch

    from mlnb.features.zoo import get_spec

    base, _ = get_spec("tiny_base").build()
    changed = [k for (k, a), b in zip(head.backbone_.state_dict().items(), base.state_dict().values()) if not torch.equal(a, b)]
    assert changed and head.meta["n_rows"] == 8
    assert head.meta["finetune"]["history"][-1]["train_loss"] > 0


def test_no_readable_image_is_a_clear_error(tiny_base, tmp_path):
    df = pl.DataFrame({"image": [str(tmp_path / f"{i}.png") for i in range(3)], "label": ["a", "b", "a"]})
    with pytest.warns(UserWarning), pytest.raises(MlnbError, match="None of the 3 images could be read"):
        finetune_classifier(df, name="ft", options=FAST)
    assert mlnb.classifiers().height == 0


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # torch.jit / legacy ONNX export
def test_torchscript_and_onnx_bases_are_refused(digits, _tiny_state, tmp_path):
    import torch
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights=None)
    net.load_state_dict(_tiny_state, strict=False)
    body = torch.nn.Sequential(net.features, net.avgpool, torch.nn.Flatten()).eval()
    torch.jit.script(body).save(str(tmp_path / "m.pt"))
    mlnb.sql(f"CREATE MODEL ts_base FROM '{tmp_path / 'm.pt'}' WITH (input_size = 32)")
    bases = ["ts_base"]
    try:
        import onnxruntime  # noqa: F401

        torch.onnx.export(body, torch.rand(1, 3, 32, 32), str(tmp_path / "m.onnx"), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
        mlnb.sql(f"CREATE MODEL onnx_base FROM '{tmp_path / 'm.onnx'}' WITH (input_size = 32)")
        bases.append("onnx_base")
    except ImportError:
        pass
    for base in bases:
        kind = "TorchScript" if base == "ts_base" else "ONNX"
        with pytest.raises(MlnbError, match=f"Model '{base}' is an? {kind} file: mlnb fine-tunes models it can rebuild"):
            mlnb.sql(f"CREATE CLASSIFIER ft USING finetune WITH (model = '{base}', epochs = 1) AS SELECT path AS image, label FROM digits")
        with pytest.raises(MlnbError, match=f"is an? {kind} file"):  # without a name too (it was a TypeError for ONNX)
            finetune_classifier(digits.rename({"path": "image"}), options={"model": base, "epochs": 1})
    assert mlnb.classifiers().height == 0


def test_a_model_on_an_inner_layer_is_refused_before_training(digits, _tiny_state, tmp_path):
    # Refused with a name as 'cannot be saved ... leave out the name', and without one as 'not a
    # torch module that can be trained (it is LayerTap)': the advice led nowhere.
    import torch

    torch.save(_tiny_state, tmp_path / "w.pth")
    mlnb.sql(f"CREATE MODEL tapped FROM '{tmp_path / 'w.pth'}' WITH (architecture = 'mobilenet_v3_small', input_size = 32, layer = 'features.6')")
    for name in ("ft", None):
        with pytest.raises(MlnbError, match="Model 'tapped' gives the features of its inner layer 'features.6'.*without layer ="):
            finetune_classifier(digits.rename({"path": "image"}), name=name, options={**FAST, "model": "tapped"})
    assert mlnb.classifiers().height == 0


def test_a_diverging_run_is_never_saved(digits, tiny_base):
    # lr = 100 makes the loss NaN in the first epoch: that model used to be saved, its head
    # answering NaN probabilities, with "accuracy 0.33" reported on the training data.
    df = digits.rename({"path": "image"})
    with pytest.raises(MlnbError, match=r"Fine-tuning diverged: the training loss became nan in epoch 1 \(lr = 100\); nothing was saved"):
        finetune_classifier(df, name="ft", options={**FAST, "lr": 100.0, "validation": 0})
    assert mlnb.classifiers().height == 0 and "ft" not in mlnb.list_models("ft")["name"].to_list()
    with pytest.warns(UserWarning, match="diverged.*epoch 0 is kept"):
        head = finetune_classifier(df, name="ft", options={**FAST, "lr": 100.0})
    assert head.meta["finetune"]["best_epoch"] == 0
    feats = np.array(mlnb.sql("SELECT embed(image, model := 'ft') AS f FROM df")["f"].to_list(), dtype=np.float32)
    assert np.isfinite(mlnb.load_classifier("ft").predict_proba(feats)).all()
