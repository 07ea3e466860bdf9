"""EXPORT CLASSIFIER: one ONNX / TorchScript file (uint8 image in, probabilities out) that
agrees with mlnb, a model card beside it, and nothing written when anything fails."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.exceptions import MlnbError
from mlnb.heads import _export

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def few_digits(frame, classes=("0", "1", "2"), per_class=8):
    return pl.concat([frame.filter(pl.col("label") == c).head(per_class) for c in classes]).select("path", "label")


@pytest.fixture
def digits(digits_frame, tiny_base):
    return few_digits(digits_frame)


def _train(name, algo, frame, **opts):
    given = f" WITH ({', '.join(f'{k} = {v}' for k, v in opts.items())})" if opts else ""
    mlnb.sql(f"CREATE CLASSIFIER {name} USING {algo}{given} AS SELECT embed(path, model := 'tiny_base') AS features, label FROM frame",
             namespace={"frame": frame})


def _mlnb_proba(name, frame):
    """What mlnb says, in float32: the engine's preprocessing and forward pass, then the head."""
    import torch

    from mlnb.features.engine import Loaded, _decode_one
    from mlnb.features.zoo import get_spec

    spec = get_spec("tiny_base")
    pixels = np.stack([_decode_one(spec, p) for p in frame["path"].to_list()])
    backbone, _ = spec.build()
    feats = Loaded(spec=spec, backbone=backbone.eval(), head=None, device=torch.device("cpu"), dtype=None).forward(pixels)
    return pixels, mlnb.load_classifier(name).predict_proba(feats)


@pytest.mark.parametrize(
    ("algo", "classes", "opts"),
    [
        ("logistic", ("0", "1", "2"), {}),
        ("logistic", ("0", "1"), {}),
        ("linear_svm", ("0", "1", "2"), {"cv": 2}),
        ("linear_svm", ("0", "1"), {"cv": 2}),
        ("mlp", ("0", "1", "2"), {"hidden": 16}),
        ("mlp", ("0", "1"), {"hidden": 16}),
        ("torch", ("0", "1", "2"), {"epochs": 5}),
    ],
)
def test_onnx_round_trip(digits_frame, tiny_base, tmp_path, algo, classes, opts):
    frame = few_digits(digits_frame, classes)
    _train("h", algo, frame, **opts)
    out = mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'h.onnx'}'")
    row = out.row(0, named=True)
    assert row["format"] == "onnx" and row["checked_images"] == 100 and row["same_class"] == 100
    assert row["max_abs_diff"] <= 1e-3
    # Run the file with onnxruntime alone, on the training images.
    pixels, expected = _mlnb_proba("h", frame)
    sess = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(uint8)", [32, 32, 3])
    got = sess.run(None, {"image": pixels})[0]
    assert outp.name == "probabilities" and got.shape == (len(frame), len(classes))
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert (got.argmax(1) == expected.argmax(1)).all()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "h.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == list(classes) and meta["input_layout"] == "NHWC uint8 RGB"
    card = json.loads((tmp_path / "h.onnx.card.json").read_text())
    head = mlnb.load_classifier("h")
    assert card["classes"] == list(classes) and card["algorithm"] == algo
    assert card["training_data_hash"] == head.meta["data_hash"] and card["metrics"] == head.meta["metrics"]
    assert card["backbone"]["model"] == "tiny_base" and card["backbone"]["layer"] == "pool"
    assert {"mlnb", "torch", "onnx", "onnxruntime"} <= set(card["versions"])
    assert card["check"]["passed"] and card["input"]["layout"] == "NHWC"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_python_twin(digits, tmp_path):
    import torch

    _train("h", "logistic", digits)
    card = mlnb.export_classifier("h@1", tmp_path / "h.pt")
    assert card["format"] == "torchscript" and card["check"]["passed"]
    pixels, expected = _mlnb_proba("h", digits)
    model = torch.jit.load(str(tmp_path / "h.pt"))
    np.testing.assert_allclose(model(torch.from_numpy(pixels)).numpy(), expected, atol=1e-3)
    # FORMAT overrides the suffix
    out = mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'model.bin'}' FORMAT torchscript")
    assert out["format"].item() == "torchscript"


def test_finetuned_classifier_exports(digits, tmp_path):
    from mlnb.heads._finetune import finetune_classifier

    finetune_classifier(digits.rename({"path": "image"}), name="ft", options={"model": "tiny_base", "epochs": 1, "batch_size": 8})
    out = mlnb.sql(f"EXPORT CLASSIFIER ft TO '{tmp_path / 'ft.onnx'}' CHECK ON (SELECT path FROM digits)")
    assert out["checked_images"].item() == len(digits) and out["same_class"].item() == len(digits)
    card = json.loads((tmp_path / "ft.onnx.card.json").read_text())
    assert card["backbone"]["model"] == "ft" and card["backbone"]["fine_tuned_from"] == "tiny_base"


def test_heads_that_do_not_export(digits, tmp_path):
    _train("near", "knn", digits, k=3)
    with pytest.raises(MlnbError, match="uses knn, which cannot be exported.*logistic, linear_svm, mlp, torch, finetune"):
        mlnb.sql(f"EXPORT CLASSIFIER near TO '{tmp_path / 'near.onnx'}'")
    # trained on features from a table: no backbone
    feats = mlnb.sql("SELECT embed(path, model := 'tiny_base') AS features, label FROM digits")
    mlnb.train_classifier(feats, name="tab")
    with pytest.raises(MlnbError, match="features from a table"):
        mlnb.export_classifier("tab", tmp_path / "tab.onnx")
    with pytest.raises(MlnbError, match="Unknown export format"):
        mlnb.export_classifier("near", tmp_path / "x.onnx", format="tflite")
    mlnb.sql("CREATE REGRESSOR value AS SELECT embed(path, model := 'tiny_base') AS features, CAST(label AS DOUBLE) AS target FROM digits")
    with pytest.raises(MlnbError, match="value@1 is a regressor: EXPORT CLASSIFIER writes classifiers"):  # was 'use mlnb.load_regressor'
        mlnb.sql(f"EXPORT CLASSIFIER value TO '{tmp_path / 'value.onnx'}'")
    assert [p.name for p in tmp_path.iterdir() if p.name != ".mlnb"] == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter, making the test's file
def test_backbone_from_an_onnx_file_does_not_export(digits, tmp_path):
    import torch

    from mlnb.features._user_models import create_model

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "b.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    create_model("onnx_base", str(tmp_path / "b.onnx"))
    mlnb.sql("CREATE CLASSIFIER oh AS SELECT embed(path, model := 'onnx_base') AS features, label FROM digits")
    with pytest.raises(MlnbError, match="not a torch module mlnb can export"):
        mlnb.export_classifier("oh", tmp_path / "oh.onnx")
    assert not (tmp_path / "oh.onnx").exists()


def test_disagreement_writes_nothing(digits, tmp_path, monkeypatch):
    _train("h", "logistic", digits)
    (tmp_path / "h.onnx").write_bytes(b"old")
    monkeypatch.setattr(_export, "TOLERANCE", -1.0)  # nothing can agree now
    with pytest.raises(MlnbError, match="does not agree with mlnb on 100 check images.*nothing was written"):
        mlnb.sql(f"EXPORT OR REPLACE CLASSIFIER h TO '{tmp_path / 'h.onnx'}'")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".mlnb") == ["h.onnx"]  # no temp files, the old file untouched
    assert (tmp_path / "h.onnx").read_bytes() == b"old"
    with pytest.raises(MlnbError, match="folder .* does not exist"):
        mlnb.export_classifier("h", tmp_path / "nope" / "h.onnx")


def test_an_existing_file_is_replaced_only_with_or_replace(digits, tmp_path, monkeypatch):
    """An existing file was overwritten silently (a read-only one too); FORMAT contradicting the
    suffix wrote TorchScript into 'x.onnx'; a folder where the card goes left the model written
    without its card (an IsADirectoryError after the export)."""
    import os

    _train("h", "logistic", digits)
    target = tmp_path / "h.onnx"
    target.write_bytes(b"not mine to overwrite")
    os.chmod(target, 0o444)
    with pytest.raises(MlnbError, match="h.onnx exists already: use EXPORT OR REPLACE CLASSIFIER"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{target}'")
    assert target.read_bytes() == b"not mine to overwrite"
    out = mlnb.sql(f"-- a comment before it, as in a cell\nEXPORT OR REPLACE CLASSIFIER h TO '{target}' CHECK ON (SELECT path FROM digits)")
    assert out["same_class"].item() == len(digits) and onnx.load(str(target)).graph.input[0].name == "image"
    with pytest.raises(MlnbError, match="exists already"):  # the Python twin: replace=True
        mlnb.export_classifier("h", target)
    assert mlnb.export_classifier("h", target, replace=True, check_images=digits["path"].to_list())["check"]["passed"]
    with pytest.raises(MlnbError, match=r"'x.onnx' ends in .onnx \(onnx\) but FORMAT is torchscript: name the file x.pt"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'x.onnx'}' FORMAT torchscript")
    for bad in (f"EXPORT CLASSIFIER h TO {tmp_path / 'u.onnx'}", "EXPORT CLASSIFIER h", "EXPORT OR REPLACE CLASSIFIER h TO \"u.onnx\""):
        with pytest.raises(MlnbError, match=r"EXPORT CLASSIFIER is written EXPORT \[OR REPLACE\] CLASSIFIER name\[@version\] TO 'file.onnx'"):
            mlnb.sql(bad)  # was DuckDB's "syntax error at or near CLASSIFIER"
    (tmp_path / "d.onnx.card.json").mkdir()
    with pytest.raises(MlnbError, match="model card .*d.onnx.card.json: it is a folder"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'd.onnx'}'")
    # the card cannot be put in place at the last step: the old model file is put back
    before = target.read_bytes()
    real_replace = os.replace

    def failing_card(src, dst):
        if str(dst).endswith(".card.json"):
            raise OSError("disk full")
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(_export.os, "replace", failing_card)
        with pytest.raises(OSError, match="disk full"):
            mlnb.export_classifier("h", target, replace=True, check_images=digits["path"].to_list())
        with pytest.raises(OSError, match="disk full"):
            mlnb.export_classifier("h", tmp_path / "new.onnx", check_images=digits["path"].to_list())
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".mlnb") == ["d.onnx.card.json", "h.onnx", "h.onnx.card.json"]


def test_compare_counts_ties_as_agreeing():
    ref = np.array([[0.5, 0.5, 0.0], [0.1, 0.7, 0.2]])
    got = np.array([[0.5000001, 0.4999999, 0.0], [0.1, 0.7, 0.2]])
    assert _export._compare(ref, got)["passed"]
    assert not _export._compare(ref, np.array([[0.5, 0.5, 0.0], [0.7, 0.1, 0.2]]))["passed"]


def test_bad_destinations_and_check_queries_are_clear_errors(digits, tmp_path):
    _train("h", "logistic", digits)
    with pytest.raises(MlnbError, match="Cannot tell the format from the file name 'model'.*FORMAT onnx"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'model'}'")  # was written as ONNX, silently
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(MlnbError, match="it is a folder"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'd.onnx'}'")  # was an IsADirectoryError after the export
    with pytest.raises(MlnbError, match="Cannot write in /proc"):
        mlnb.export_classifier("h", "/proc/h.onnx")  # was a FileNotFoundError naming a temp file
    with pytest.raises(MlnbError, match="CHECK ON gave no images"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'h.onnx'}' CHECK ON (SELECT path FROM digits WHERE false)")
    with pytest.warns(UserWarning), pytest.raises(MlnbError, match="None of the 3 check images could be read.*CHECK ON needs a query returning images"):
        mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'h.onnx'}' CHECK ON (SELECT range FROM range(3))")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".mlnb") == ["d.onnx"]
    # an unreadable check image is reported and left out; the rest are checked
    with pytest.warns(UserWarning, match="nope.png: file not found \\(left out of the export check\\)"):
        out = mlnb.sql(f"EXPORT CLASSIFIER h TO '{tmp_path / 'model'}' FORMAT onnx CHECK ON (SELECT path FROM digits UNION ALL SELECT '/nope.png')")
    assert out["checked_images"].item() == len(digits) and out["format"].item() == "onnx"


def test_head_over_a_model_on_an_inner_layer_exports(digits, _tiny_state, tmp_path):
    # CREATE MODEL ... WITH (layer = ...) from a state dict: its backbone is a LayerTap, refused
    # before as "an ONNX or TorchScript file".
    import torch

    torch.save(_tiny_state, tmp_path / "w.pth")
    mlnb.sql(f"CREATE MODEL tapped FROM '{tmp_path / 'w.pth'}' WITH (architecture = 'mobilenet_v3_small', input_size = 32, layer = 'features.6')")
    mlnb.sql("CREATE CLASSIFIER hl AS SELECT embed(path, model := 'tapped') AS features, label FROM digits")
    out = mlnb.sql(f"EXPORT CLASSIFIER hl TO '{tmp_path / 'hl.onnx'}' CHECK ON (SELECT path FROM digits)")
    assert out["same_class"].item() == len(digits)
    from mlnb.features.engine import _decode_one
    from mlnb.features.zoo import get_spec

    pixels = np.stack([_decode_one(get_spec("tapped"), p) for p in digits["path"].to_list()])
    got = ort.InferenceSession(str(tmp_path / "hl.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})[0]
    sql = mlnb.sql("SELECT hl(embed(path, model := 'tapped')) AS p FROM digits")["p"].to_list()
    assert [("0", "1", "2")[i] for i in got.argmax(1)] == sql


FRESH_PROCESS = r'''
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image

model, paths = sys.argv[1], json.loads(sys.argv[2])
card = json.load(open(model + ".card.json"))
inp = card["input"]
R, S = inp["resize_size"], inp["input_size"]
resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[inp["interpolation"]]

def pixels(path):  # what the card tells a caller to do: shorter side to R, centre crop S
    im = Image.open(path).convert("RGB")
    w, h = im.size
    im = im.resize((max(S, round(w * R / min(w, h))), max(S, round(h * R / min(w, h)))), resample)
    w, h = im.size
    left, top = (w - S) // 2, (h - S) // 2
    return np.asarray(im.crop((left, top, left + S, top + S)))

sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(i,) = sess.get_inputs()
assert (i.name, i.type, i.shape) == ("image", "tensor(uint8)", ["batch", S, S, 3]), (i.name, i.type, i.shape)
proba = sess.run(None, {"image": np.stack([pixels(p) for p in paths])})[0]
assert "mlnb" not in sys.modules and "torch" not in sys.modules
print(json.dumps([card["classes"][j] for j in proba.argmax(1)]))
'''


@pytest.mark.slow
def test_onnxruntime_alone_gives_the_sql_scorers_classes(digits_frame, tiny_base, tmp_path, monkeypatch):
    import subprocess
    import sys

    from mlnb.heads._finetune import finetune_classifier

    monkeypatch.setattr(mlnb.config, "precision", "fp32")  # the file is float32; see the card's check
    finetune_classifier(few_digits(digits_frame).rename({"path": "image"}), name="ft", options={"model": "tiny_base", "epochs": 1, "batch_size": 8})
    mlnb.sql(f"EXPORT CLASSIFIER ft TO '{tmp_path / 'ft.onnx'}'")
    new = digits_frame.filter(~pl.col("path").is_in(few_digits(digits_frame)["path"].implode())).head(20)
    sql = mlnb.sql("SELECT ft(embed(path, model := 'ft')) AS p FROM new")["p"].to_list()
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "ft.onnx"), json.dumps(new["path"].to_list())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == sql
    card = json.loads((tmp_path / "ft.onnx.card.json").read_text())
    head = mlnb.load_classifier("ft")
    assert card["classifier"] == "ft@1" and card["algorithm"] == "finetune" and card["classes"] == head.meta["classes"]
    assert card["training_data_hash"] == head.meta["data_hash"] and card["n_rows"] == 24
    assert card["backbone"]["model"] == "ft" and card["backbone"]["fine_tuned_from"] == "tiny_base" and card["backbone"]["feature_dim"] == head.meta["dim"]
    assert card["input"]["shape"] == ["batch", 32, 32, 3] and card["output"]["shape"] == ["batch", 3]


def test_an_older_version_exports_with_its_own_card(digits, tmp_path):
    _train("h", "logistic", digits)
    _train("h", "mlp", digits, hidden=8)
    out = mlnb.sql(f"EXPORT CLASSIFIER h@1 TO '{tmp_path / 'h1.onnx'}' CHECK ON (SELECT path FROM digits)")
    card = json.loads((tmp_path / "h1.onnx.card.json").read_text())
    v1 = mlnb.load_classifier("h@1")
    assert out["classifier"].item() == card["classifier"] == "h@1" and card["algorithm"] == "logistic"
    assert card["metrics"] == v1.meta["metrics"] and card["trained"] == v1.meta["created"]
    pixels, expected = _mlnb_proba("h@1", digits)
    got = ort.InferenceSession(str(tmp_path / "h1.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})[0]
    np.testing.assert_allclose(got, expected, atol=1e-3)
