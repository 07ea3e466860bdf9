"""Things defined in SQL persist in the workspace: CREATE FUNCTION, CREATE MODEL (and persist_model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.features import _user_models
from mlnb.functions import registry


def _q(sql: str, **frames):
    return mlnb.sql(sql, **frames)


# -- functions ---------------------------------------------------------------------
def test_create_function_is_stored_listed_and_callable(_workspace):
    out = _q("CREATE FUNCTION twice(x) AS 2 * x")
    assert out.row(0, named=True)["function"] == "twice" and out["definition"].item() == "2 * x"
    assert _q("SELECT twice(21) AS r").item() == 42
    rec = json.loads((_workspace / "functions" / "twice.json").read_text())
    assert rec["args"] == ["x"] and rec["expression"] == "2 * x" and rec["created"]

    listed = _q("SHOW FUNCTIONS LIKE 'twice'").row(0, named=True)
    assert listed["origin"] == "persisted" and listed["definition"] == "2 * x" and listed["created"] == rec["created"]
    assert listed["signature"].startswith("twice(x")
    every = _q("SHOW FUNCTIONS")
    assert every.filter(pl.col("name") == "embed")["origin"].item() == "builtin"
    assert [f["name"] for f in mlnb.persisted_functions()] == ["twice"]
    assert mlnb.persisted_functions()[0]["args"] == ["x"]


def test_names_are_case_insensitive_as_in_sql(_workspace):
    _q("CREATE FUNCTION Shout(x) AS upper(x)")
    assert (_workspace / "functions" / "shout.json").is_file()
    assert _q("SELECT SHOUT('a') AS a, shout('b') AS b").row(0) == ("A", "B")
    assert _q("SHOW FUNCTIONS LIKE 'SHO%'")["name"].to_list() == ["shout"]  # was empty: the pattern kept its case
    _q("DROP FUNCTION SHOUT")
    assert mlnb.persisted_functions() == []


def test_python_twin_and_columns():
    fn = mlnb.create_function("plus", ["a", "b"], "a + b")
    assert fn(2, 3) == 5
    assert registry.get("plus")([1, 2], [10, 20]).to_list() == [11, 22]
    assert _q("SELECT plus(1, 1) AS r").item() == 2


def test_or_replace_and_a_failed_replace_keeps_the_old(_workspace):
    _q("CREATE FUNCTION f(x) AS x + 1")
    with pytest.raises(mlnb.MlnbError, match="already exists.*OR REPLACE"):
        _q("CREATE FUNCTION f(x) AS x + 2")
    before = (_workspace / "functions" / "f.json").read_bytes()
    with pytest.raises(mlnb.QueryError, match="lowr.*does not exist"):
        _q("CREATE OR REPLACE FUNCTION f(x) AS lowr(x)")
    assert (_workspace / "functions" / "f.json").read_bytes() == before
    assert _q("SELECT f(1) AS r").item() == 2
    _q("CREATE OR REPLACE FUNCTION f(x) AS x + 10")
    assert _q("SELECT f(1) AS r").item() == 11


@pytest.mark.parametrize(
    "sql,message",
    [
        ("CREATE FUNCTION g(x) AS y + 1", 'column "y"'),
        ("CREATE FUNCTION g(x) AS lowr(x)", "lowr"),
        ("CREATE FUNCTION g(x) AS x +", "syntax error"),
        ("CREATE FUNCTION embed(x) AS x", "built-in"),
        ("CREATE FUNCTION lower(x) AS x", "DuckDB"),
        ("CREATE FUNCTION g(x, x) AS x", "named twice"),
        ("CREATE FUNCTION g AS 1", "arguments in parentheses"),
        ("CREATE FUNCTION g(x) AS embed(x, model := 'no_such_model')", "Unknown model 'no_such_model'"),
    ],
)
def test_bad_functions_are_refused_and_nothing_is_written(_workspace, sql, message):
    with pytest.raises(mlnb.MlnbError, match=message):
        _q(sql)
    assert not list((_workspace / "functions").glob("*.json"))


def test_a_function_cannot_call_itself():
    _q("CREATE FUNCTION a(x) AS x + 1")
    _q("CREATE FUNCTION b(x) AS a(x) * 2")
    with pytest.raises(mlnb.QueryError, match="call itself .*a -> b -> a"):
        _q("CREATE OR REPLACE FUNCTION a(x) AS b(x)")
    assert _q("SELECT b(1) AS r").item() == 4


def test_drop_function():
    _q("CREATE FUNCTION h(x) AS x")
    assert _q("DROP FUNCTION h")["dropped"].item() == "h"
    with pytest.raises(mlnb.QueryError, match="h"):
        _q("SELECT h(1)")
    with pytest.raises(mlnb.QueryError, match="No function 'h' to drop"):
        _q("DROP FUNCTION h")
    _q("DROP FUNCTION IF EXISTS h")
    with pytest.raises(mlnb.QueryError, match="built-in"):
        _q("DROP FUNCTION embed")
    # DuckDB's own session macros are still DuckDB's to drop
    _q("CREATE MACRO tmp_m(x) AS x")
    _q("DROP FUNCTION tmp_m")


@pytest.mark.slow
def test_function_over_a_classifier_and_another_function():
    digits = mlnb.datasets.digits().head(200)
    _q("CREATE CLASSIFIER digit AS SELECT pixels AS features, label FROM digits", digits=digits)
    _q("CREATE FUNCTION which(p) AS digit(p)")
    _q("CREATE FUNCTION which_twice(p) AS which(p) || which(p)")
    out = _q("SELECT digit(pixels) AS a, which_twice(pixels) AS b FROM digits", digits=digits)
    assert (out["a"] + out["a"]).to_list() == out["b"].to_list()
    listed = dict(_q("SHOW FUNCTIONS LIKE '*which*'").select("name", "origin").iter_rows())
    assert listed == {"which": "persisted", "which_twice": "persisted"}
    assert _q("SHOW FUNCTIONS LIKE 'digit*'")["origin"].unique().to_list() == ["classifier"]
    with pytest.raises(mlnb.MlnbError, match="classifier"):
        _q("CREATE FUNCTION digit(x) AS x")
    with pytest.raises(mlnb.MlnbError, match="classifier"):
        _q("CREATE FUNCTION digit_proba(x) AS x")


def test_table_function():
    _q("CREATE FUNCTION firsts(n) AS TABLE SELECT range AS i FROM range(n)")
    assert _q("SELECT sum(i) AS s FROM firsts(5)").item() == 10
    assert _q("SHOW FUNCTIONS LIKE 'firsts'")["kind"].item() == "table"


def test_functions_belong_to_the_workspace_in_use(tmp_path, monkeypatch):
    _q("CREATE FUNCTION here(x) AS x")
    monkeypatch.setattr(mlnb.config, "_workspace", tmp_path / "other")
    with pytest.raises(mlnb.QueryError, match="here"):
        _q("SELECT here(1)")
    assert "here" not in _q("SHOW FUNCTIONS")["name"].to_list()


# -- models ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def small_weights(tmp_path_factory):
    """A torchvision regnet_x_400mf with random weights (nothing downloaded), as a user's .pth."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.regnet_x_400mf(weights=None).eval()
    d = tmp_path_factory.mktemp("weights")
    torch.save(net.state_dict(), d / "small.pth")
    with zipfile.ZipFile(d / "models.zip", "w") as z:
        z.write(d / "small.pth", "nets/small.pth")
    torch.manual_seed(1)
    torch.save(torchvision.models.regnet_x_400mf(weights=None).state_dict(), d / "small_other.pth")
    return d


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    return mlnb.datasets.digits(tmp_path_factory.mktemp("digits")).head(3)


@pytest.fixture
def fp32(monkeypatch):
    """Full precision (on CPUs with bf16, autocast would make features differ from plain torch's)."""
    monkeypatch.setattr(mlnb.config, "precision", "fp32")


def _feats(name: str, images) -> np.ndarray:
    return np.stack(mlnb.sql(f"SELECT embed(path, model := '{name}') AS f FROM images", images=images)["f"].to_numpy())


def _reference(weights, images, **kw) -> np.ndarray:
    """Features of the weights computed here with torch, as the model spec preprocesses."""
    import torch
    import torchvision
    from PIL import Image

    from mlnb.features.engine import preprocess
    from mlnb.features.zoo import get_spec

    net = torchvision.models.regnet_x_400mf(weights=None)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.fc = torch.nn.Identity()
    spec = get_spec(kw["model"])
    x = np.stack([preprocess(spec, Image.open(p).convert("RGB")) for p in images["path"]])
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return net.eval()(t).numpy()


@pytest.mark.slow
def test_create_model_from_a_file(small_weights, images, _workspace, fp32):
    out = _q(f"CREATE MODEL small FROM '{small_weights / 'small.pth'}' WITH (architecture = 'regnet_x_400mf', input_size = 96)")
    row = out.row(0, named=True)
    assert row["format"] == "state_dict" and row["feature_dim"] == 400 and row["input_size"] == 96
    files = sorted(p.name for p in (_workspace / "models" / "small").iterdir())
    assert files == ["spec.json", f"weights-{row['sha256'][:16]}.safetensors"]
    feats = _feats("small", images)
    assert feats.shape == (3, 400)
    np.testing.assert_allclose(feats, _reference(small_weights / "small.pth", images, model="small"), rtol=1e-3, atol=1e-3)
    shown = _q("SHOW MODELS LIKE 'small'").row(0, named=True)
    assert shown["origin"] == "workspace" and shown["architecture"] == "regnet_x_400mf" and shown["sha256"] == row["sha256"]
    assert "small" in mlnb.list_models()["name"].to_list()


def test_create_model_from_an_archive_member_outlives_the_archive(small_weights, images, tmp_path):
    archive = tmp_path / "copy.zip"
    archive.write_bytes((small_weights / "models.zip").read_bytes())
    _q(f"CREATE MODEL arch FROM 'archive+file://{archive}#nets/small.pth' WITH (architecture = 'regnet_x_400mf', "
       "layer = 'trunk_output.block2', input_size = 64, mean = [0.5, 0.5, 0.5], std = 0.5)")
    archive.unlink()
    spec = _user_models.read_model_spec("arch")
    assert spec["layer"] == "trunk_output.block2" and spec["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and spec["feature_dim"] == 64
    assert _feats("arch", images).shape == (3, 64)
    member = f"zip://nets/small.pth::{small_weights / 'models.zip'}"
    _q("CREATE MODEL arch2 FROM $member WITH (architecture = 'regnet_x_400mf')", member=member)
    assert _user_models.read_model_spec("arch2")["sha256"] == spec["sha256"]  # same weights, same id


@pytest.mark.slow
def test_redefined_weights_get_their_own_cache_entries(small_weights, images, fp32):
    _q(f"CREATE MODEL m FROM '{small_weights / 'small.pth'}' WITH (architecture = 'regnet_x_400mf', input_size = 64)")
    first = _feats("m", images)
    _q(f"CREATE OR REPLACE MODEL m FROM '{small_weights / 'small_other.pth'}' WITH (architecture = 'regnet_x_400mf', input_size = 64)")
    second = _feats("m", images)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, _reference(small_weights / "small_other.pth", images, model="m"), rtol=1e-3, atol=1e-3)


def test_bad_models_are_refused_and_nothing_is_written(small_weights, tmp_path, _workspace):
    import torch

    src = small_weights / "small.pth"
    cases = [
        (f"CREATE MODEL x FROM '{src}' WITH (architecture = 'regnet_x_40mf')", "Unknown architecture.*Did you mean .regnet_x_400mf."),
        (f"CREATE MODEL x FROM '{src}' WITH (architecture = 'resnet18')", "do not fit the architecture: .* missing .*unexpected"),
        (f"CREATE MODEL x FROM '{src}'", "architecture"),
        (f"CREATE MODEL x FROM '{tmp_path / 'nope.pth'}' WITH (architecture = 'resnet18')", "No weights file"),
        (f"CREATE MODEL x FROM 'archive+file://{small_weights / 'models.zip'}#nets/nope.pth' WITH (architecture = 'resnet18')", "no member"),
        (f"CREATE MODEL x FROM '{src}' WITH (architecture = 'regnet_x_400mf', layr = 'x')", "no option 'layr'. Did you mean layer"),
        (f"CREATE MODEL x FROM '{src}' WITH (architecture = 'regnet_x_400mf', layer = 'featurez')", "no layer 'featurez'"),
        (f"CREATE MODEL resnet18 FROM '{src}' WITH (architecture = 'regnet_x_400mf')", "built-in model"),
    ]
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"these are not weights at all")
    cases.append((f"CREATE MODEL x FROM '{junk}' WITH (architecture = 'resnet18')", "not a weights file"))
    pickled = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole module: unpickling it would import and run code
    cases.append((f"CREATE MODEL x FROM '{pickled}' WITH (architecture = 'resnet18')", "Python objects.*weights_only=True"))
    for sql, message in cases:
        with pytest.raises(mlnb.MlnbError, match=message):
            _q(sql)
    assert _user_models.names() == []
    with pytest.raises(mlnb.ModelNotFoundError, match="Unknown model 'x'"):
        mlnb.embed(b"", model="x")


def test_a_failed_create_or_replace_keeps_the_old_model(small_weights, _workspace):
    _q(f"CREATE MODEL keep FROM '{small_weights / 'small.pth'}' WITH (architecture = 'regnet_x_400mf')")
    before = {p.name: p.read_bytes() for p in (_workspace / "models" / "keep").iterdir()}
    with pytest.raises(mlnb.MlnbError, match="do not fit"):
        _q(f"CREATE OR REPLACE MODEL keep FROM '{small_weights / 'small.pth'}' WITH (architecture = 'resnet18')")
    with pytest.raises(mlnb.MlnbError, match="already exists"):
        _q(f"CREATE MODEL keep FROM '{small_weights / 'small.pth'}' WITH (architecture = 'regnet_x_400mf')")
    assert {p.name: p.read_bytes() for p in (_workspace / "models" / "keep").iterdir()} == before


def test_drop_model(small_weights):
    _q(f"CREATE MODEL gone FROM '{small_weights / 'small.pth'}' WITH (architecture = 'regnet_x_400mf')")
    assert _q("DROP MODEL gone")["dropped"].item() == "gone"
    with pytest.raises(mlnb.ModelNotFoundError, match="No model 'gone'"):
        _q("DROP MODEL gone")
    assert _q("DROP MODEL IF EXISTS gone")["dropped"].item() is None
    with pytest.raises(mlnb.MlnbError, match="not a workspace model"):
        _q("DROP MODEL resnet18")
    assert "gone" not in mlnb.list_models()["name"].to_list()


def test_torchscript_and_onnx_models(tmp_path, images, fp32):
    import warnings

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch calls TorchScript and its ONNX exporter deprecated; users still have such files
        torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(tmp_path / "net.pt"))
    out = _q(f"CREATE MODEL scripted FROM '{tmp_path / 'net.pt'}' WITH (input_size = 32)").row(0, named=True)
    assert out["format"] == "torchscript" and out["feature_dim"] == 8
    scripted = _feats("scripted", images)
    with pytest.raises(mlnb.MlnbError, match="layer` does not apply"):
        _q(f"CREATE MODEL s2 FROM '{tmp_path / 'net.pt'}' WITH (layer = '0')")

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(tmp_path / "net.onnx"), input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    with zipfile.ZipFile(tmp_path / "nets.zip", "w") as z:
        z.write(tmp_path / "net.onnx", "net.onnx")
    out = _q(f"CREATE MODEL onnxed FROM 'archive+file://{tmp_path / 'nets.zip'}#net.onnx'").row(0, named=True)
    assert out["format"] == "onnx" and out["input_size"] == 32 and out["feature_dim"] == 8
    np.testing.assert_allclose(_feats("onnxed", images), scripted, rtol=1e-4, atol=1e-5)


def test_model_from_a_url_and_an_archive_on_a_server(tmp_path):
    """MLDB's modelFileUrl: archive+http://site/models.zip#net.pt (fetched through the one URL seam)."""
    import io
    import warnings

    import torch

    from mlnb import images as images_mod

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), buf)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("models/net.pt", buf.getvalue())
    served = {"http://models.example/net.pt": buf.getvalue(), "http://models.example/all.zip": archive.getvalue()}
    images_mod.set_url_fetcher(lambda url, timeout: served[url])
    try:
        _q("CREATE MODEL web FROM 'http://models.example/net.pt' WITH (input_size = 32)")
        _q("CREATE MODEL web_zip FROM 'archive+http://models.example/all.zip#models/net.pt' WITH (input_size = 32)")
    finally:
        images_mod.set_url_fetcher(None)
    a, b = _user_models.read_model_spec("web"), _user_models.read_model_spec("web_zip")
    assert a["sha256"] == b["sha256"] and a["format"] == "torchscript" and a["feature_dim"] == 4
    assert mlnb.embed(np.zeros((40, 40, 3), dtype=np.uint8), model="web_zip").shape == (4,)


def test_persist_model_contract(tmp_path, monkeypatch):
    import torchvision

    net = torchvision.models.regnet_x_400mf(weights=None, num_classes=3)  # a fine-tuned head of 3 classes
    spec = mlnb.persist_model("tuned", architecture="regnet_x_400mf", state_dict=net.state_dict(), input_size=64,
                              meta={"from": "test", "accuracy": 0.5})
    assert spec.feature_dim == 400 and spec.classes is None and spec.input_size == 64 and spec.weights_id
    rec = _user_models.read_model_spec("tuned")
    assert rec["meta"] == {"from": "test", "accuracy": 0.5} and rec["classes"] == 3
    assert mlnb.embed(np.zeros((40, 40, 3), dtype=np.uint8), model="tuned").shape == (400,)
    with pytest.raises(mlnb.MlnbError, match="already exists"):
        mlnb.persist_model("tuned", architecture="regnet_x_400mf", state_dict=net.state_dict())
    headless = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert mlnb.persist_model("tuned", architecture="regnet_x_400mf", state_dict=headless, replace=True).feature_dim == 400
    with pytest.raises(mlnb.MlnbError, match="not a state dict of tensors"):
        mlnb.persist_model("t2", architecture="regnet_x_400mf", state_dict={"a": 1})
    assert _user_models.user_models()["name"].to_list() == ["tuned"]
    with monkeypatch.context() as mp:  # models belong to the workspace in use
        mp.setattr(mlnb.config, "_workspace", tmp_path / "other")
        with pytest.raises(mlnb.ModelNotFoundError, match="Unknown model 'tuned'"):
            mlnb.embed(np.zeros((40, 40, 3), dtype=np.uint8), model="tuned")
    assert mlnb.drop_model("tuned") and _user_models.user_models().height == 0


# -- a new process ---------------------------------------------------------------------
@pytest.mark.slow
def test_functions_and_models_work_in_a_fresh_process(tmp_path, _workspace):
    import torch

    from mlnb.features.zoo import _lite_weights_path, load_lite_state_dict

    weights = tmp_path / "lite.pth"
    torch.save(load_lite_state_dict(_lite_weights_path("efficientnet_lite0")), weights)
    images = mlnb.datasets.digits(tmp_path / "digits").head(3)
    _q(f"CREATE MODEL mine FROM '{weights}' WITH (architecture = 'efficientnet_lite0')")
    weights.unlink()  # the workspace has its own copy
    _q("CREATE FUNCTION feat(p) AS embed(p, model := 'mine')")
    _q("CREATE FUNCTION sim(a, b) AS array_cosine_similarity(feat(a), feat(b))")
    _q("CREATE FUNCTION label_of(p) AS CASE WHEN sim(p, p) > 0.99 THEN 'same' ELSE 'other' END")
    original = np.stack(_q("SELECT embed(path) AS f FROM images", images=images)["f"].to_numpy())  # the built-in weights

    code = textwrap.dedent(
        f"""
        import json, mlnb, polars as pl
        mlnb.config.workspace = {str(_workspace)!r}
        images = pl.DataFrame({{"path": {images["path"].to_list()!r}}})
        out = mlnb.sql("SELECT feat(path) AS f, sim(path, path) AS s, label_of(path) AS l, embed(path, model := 'mine') AS e FROM images")
        print(json.dumps({{"f": out["f"].to_list(), "s": out["s"].to_list(), "l": out["l"].to_list(), "e": out["e"].to_list(),
                          "models": mlnb.sql("SHOW MODELS LIKE 'mine'")["origin"].to_list()}}))
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(got["f"], dtype=np.float32), original)
    np.testing.assert_array_equal(np.array(got["e"], dtype=np.float32), original)
    assert got["s"] == pytest.approx([1.0] * 3) and got["l"] == ["same"] * 3 and got["models"] == ["workspace"]


# -- what a demanding user tries (names, bodies, damaged files) --------------------------
def test_keywords_quotes_and_parameters_in_definitions(_workspace):
    for sql, message in [
        ("CREATE FUNCTION select(x) AS x", "'select' is a SQL keyword"),
        ('CREATE FUNCTION "from"(x) AS x', "'from' is a SQL keyword"),
        ("CREATE FUNCTION g(select) AS 1", "Argument 'select' is a SQL keyword"),
        ("CREATE FUNCTION g(x) AS x + $k", r"cannot use the parameter \$k.*argument \(g\(x, k\)\)"),
    ]:
        with pytest.raises(mlnb.MlnbError, match=message):
            mlnb.sql(sql, k=1)
    assert not (_workspace / "functions").exists() or not list((_workspace / "functions").iterdir())
    # A name DuckDB knows as a word (SEMI JOIN) is fine once quoted in the macro; a quoted name is the same name.
    _q("CREATE FUNCTION semi(x) AS x + 1;")
    _q('CREATE FUNCTION "Twice"(x) AS 2 * x')
    assert _q("SELECT semi(1) AS a, twice(2) AS b, TWICE(3) AS c").row(0) == (2, 4, 6)
    _q('DROP FUNCTION "TWICE"')
    assert [f["name"] for f in mlnb.persisted_functions()] == ["semi"]
    # A subquery body, and a new arity with OR REPLACE.
    _q("CREATE OR REPLACE FUNCTION semi(a, b) AS (SELECT max(i) FROM range(a + b) t(i))")
    assert _q("SELECT semi(2, 3) AS r").item() == 4


def test_a_function_whose_inner_function_was_dropped_says_so(_workspace):
    _q("CREATE FUNCTION inner_f(x) AS x * 2")
    _q("CREATE FUNCTION outer_f(x) AS inner_f(x) + 1")
    assert _q("SELECT outer_f(3) AS r").item() == 7
    _q("DROP FUNCTION inner_f")
    with pytest.raises(mlnb.QueryError, match="outer_f calls inner_f, which no longer exists"):
        _q("SELECT outer_f(3) AS r")
    with pytest.raises(mlnb.QueryError, match="inner_f, which no longer exists"):
        registry.get("outer_f")(3)
    _q("CREATE FUNCTION inner_f(x) AS x * 10")  # back, with a new body: the outer one uses it
    assert _q("SELECT outer_f(3) AS r").item() == 31
    _q("CREATE OR REPLACE FUNCTION inner_f(x, y) AS x * y")  # another arity: the outer call no longer fits
    with pytest.raises(mlnb.QueryError, match=r"outer_f calls inner_f with 1 argument\(s\), but .* inner_f\(x, y\)"):
        _q("SELECT outer_f(3) AS r")
    _q("CREATE OR REPLACE FUNCTION outer_f(x) AS inner_f(x, x) + 1")
    assert _q("SELECT outer_f(3) AS r").item() == 10


def test_a_damaged_function_file_is_named_and_the_others_still_work(_workspace):
    _q("CREATE FUNCTION good(x) AS x + 1")
    _q("CREATE FUNCTION broken(x) AS x + 2")
    _q("CREATE FUNCTION edited(x) AS x + 3")
    assert _q("SELECT broken(1) AS r").item() == 3  # installed in this session before the damage
    (_workspace / "functions" / "broken.json").write_text("{not json")
    rec = json.loads((_workspace / "functions" / "edited.json").read_text())
    rec["args"] = "x"
    (_workspace / "functions" / "edited.json").write_text(json.dumps(rec))

    with pytest.raises(mlnb.QueryError, match=r"broken cannot be used: its file .*broken\.json is not valid JSON"):
        _q("SELECT broken(1) AS r")
    with pytest.raises(mlnb.QueryError, match=r"edited\.json has \"args\" 'x'"):
        _q("SELECT edited(1) AS r")
    assert _q("SELECT good(1) AS r").item() == 2
    listed = _q("SHOW FUNCTIONS").filter(pl.col("origin") == "persisted")
    assert listed["name"].to_list() == ["broken", "edited", "good"]
    assert [f["name"] for f in mlnb.persisted_functions()] == ["good"]
    from mlnb.sql._persisted import function_problems

    assert {p["name"] for p in function_problems()} == {"broken", "edited"}
    with pytest.raises(mlnb.MlnbError, match="already exists"):
        _q("CREATE FUNCTION broken(x) AS x")
    _q("CREATE OR REPLACE FUNCTION broken(x) AS x + 20")
    assert _q("SELECT broken(1) AS r").item() == 21
    assert _q("DROP FUNCTION edited")["dropped"].item() == "edited"


def test_a_damaged_model_spec_is_named(_workspace):
    folder = _workspace / "models" / "hand_edited"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{oops")
    with pytest.raises(mlnb.MlnbError, match=r"model 'hand_edited' cannot be used: its file .*spec\.json cannot be read"):
        mlnb.embed(b"", model="hand_edited")
    assert "hand_edited" not in mlnb.list_models()["name"].to_list()  # the listing still works
    (folder / "spec.json").write_text(json.dumps({"name": "hand_edited", "format": "onnx", "file": "../../etc/passwd", "sha256": "0"}))
    with pytest.raises(mlnb.MlnbError, match='"file" \'../../etc/passwd\''):
        mlnb.embed(b"", model="hand_edited")
    assert _q("DROP MODEL hand_edited")["dropped"].item() == "hand_edited"


def test_weights_that_are_not_weights(tmp_path, monkeypatch):
    from mlnb.features import _weights_files

    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(mlnb.MlnbError, match="not a weights file") as err:
        _q(f"CREATE MODEL x FROM '{noise}' WITH (architecture = 'resnet18')")
    assert "Python objects" not in str(err.value) and "PyTorch 2.6" not in str(err.value)
    monkeypatch.setattr(_weights_files, "_BOMB_MIN", 1 << 20)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.pth", b"\0" * (3 << 20))
    with pytest.raises(mlnb.MlnbError, match="would decompress from .* not a weights file"):
        _q(f"CREATE MODEL x FROM 'archive+file://{tmp_path / 'bomb.zip'}#w.pth' WITH (architecture = 'resnet18')")
    with pytest.raises(mlnb.MlnbError, match="between 8 and 4096, got 0"):
        _q(f"CREATE MODEL x FROM '{noise}' WITH (architecture = 'resnet18', input_size = 0)")
    with pytest.raises(mlnb.MlnbError, match=r"mean takes three numbers.*\[1, 2\]"):
        _q(f"CREATE MODEL x FROM '{noise}' WITH (architecture = 'resnet18', mean = [1, 2])")
    assert _user_models.names() == []


def test_an_onnx_model_exported_with_batch_one_embeds_many_images(tmp_path, images, fp32):
    """torch.onnx.export fixes the batch to the example's size unless told: such a model still embeds a batch."""
    import warnings

    import torch

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 24, 24), str(tmp_path / "one.onnx"), input_names=["x"], dynamo=False)
    _q(f"CREATE MODEL one FROM '{tmp_path / 'one.onnx'}'")
    together = _feats("one", images)
    assert together.shape == (3, 4)
    from mlnb.features.engine import embed_images

    alone = np.stack([embed_images([p], model="one", use_cache=False, progress=False)[0][0] for p in images["path"]])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_a_body_using_what_this_session_alone_has_is_refused(_workspace):
    """A table or macro made in this session is gone in the next kernel and in mlnb serve."""
    _q("CREATE TABLE session_prices AS SELECT 'a' AS k, 1 AS v")
    _q("CREATE MACRO session_add(x) AS x + 100")
    for sql, what in [
        ("CREATE FUNCTION price(x) AS (SELECT v FROM session_prices WHERE k = x)", "session_prices"),
        ("CREATE FUNCTION add100(x) AS session_add(x)", "session_add"),
        ("CREATE FUNCTION rows_of(x) AS TABLE SELECT * FROM session_prices WHERE k = x", "session_prices"),
    ]:
        with pytest.raises(mlnb.QueryError, match=f"exists only in this session.*{what}"):
            _q(sql)
    assert mlnb.persisted_functions() == []
    _q("CREATE FUNCTION add100(x) AS x + 100")  # persisted itself, it may be called by another
    _q("CREATE FUNCTION add200(x) AS add100(add100(x))")
    assert _q("SELECT add200(1) AS r").item() == 201


@pytest.mark.slow
def test_two_processes_creating_one_function_and_one_model(tmp_path, _workspace):
    """Atomic files under the workspace's lock: one CREATE wins, the other is told it exists; no torn JSON."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()).eval()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        torch.jit.trace(net, torch.zeros(1, 3, 8, 8)).save(str(tmp_path / "n.pt"))
    script = textwrap.dedent(f"""
        import sys, mlnb
        mlnb.config.workspace = {str(_workspace)!r}
        won = []
        for kind, sql in (("f", "CREATE FUNCTION shared(x) AS x + " + sys.argv[1]),
                          ("m", "CREATE MODEL shared_m FROM '{tmp_path / 'n.pt'}' WITH (input_size = 8)")):
            try:
                mlnb.sql(sql)
                won.append(kind)
            except mlnb.MlnbError as exc:
                assert "already exists" in str(exc), exc
        for i in range(10):
            mlnb.sql("CREATE OR REPLACE FUNCTION churn(x) AS x + " + sys.argv[1] + str(i))
            mlnb.sql("SELECT churn(1)")
        print(",".join(won))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    won = [o[0].strip().split(",") for o in outs]
    assert sorted(k for w in won for k in w if k) == ["f", "m"]
    assert json.loads((_workspace / "functions" / "churn.json").read_text())["expression"].startswith("x + ")
    assert _q("SELECT shared(0) AS r").item() in (1, 2)
    assert _user_models.read_model_spec("shared_m")["feature_dim"] == 72


def test_weights_over_the_image_cap_download_from_a_real_server(tmp_path, monkeypatch):
    """Weights are larger than images: a URL or a remote archive is read up to the weights' cap,
    not mlnb.config.max_image_bytes (64 MiB would refuse resnet50's 98 MB, MLDB's 88 MB inception zip)."""
    import functools
    import http.server
    import threading
    import warnings

    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "net.pt"))
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as z:
        z.write(tmp_path / "net.pt", "models/net.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setattr(mlnb.config, "_max_image_bytes", 1024)  # far below the model file's size
    try:
        _q(f"CREATE MODEL web FROM '{base}/net.pt' WITH (input_size = 16)")
        _q(f"CREATE MODEL web_zip FROM 'archive+{base}/all.zip#models/net.pt' WITH (input_size = 16)")
        with pytest.raises(mlnb.MlnbError, match="HTTP 404"):
            _q(f"CREATE MODEL gone FROM '{base}/nope.pt' WITH (input_size = 16)")
        with pytest.raises(mlnb.MlnbError, match="no member 'nope.pt'"):
            _q(f"CREATE MODEL gone FROM 'archive+{base}/all.zip#nope.pt' WITH (input_size = 16)")
    finally:
        httpd.shutdown()
        httpd.server_close()
    a, b = _user_models.read_model_spec("web"), _user_models.read_model_spec("web_zip")
    assert a["sha256"] == b["sha256"] and a["format"] == "torchscript" and a["feature_dim"] == 4


# -- found by an outside check (issue 16 attack) ------------------------------------------
def _digit_rows(n: int = 40) -> pl.DataFrame:
    from sklearn.datasets import load_digits

    d = load_digits()
    return pl.DataFrame(
        {"id": range(n), "f": d.data[:n].astype(np.float32).tolist(), "label": [str(x) for x in d.target[:n] % 2]}
    ).with_columns(pl.col("f").list.to_array(64))


def test_a_head_cannot_take_the_name_of_a_persisted_function(_workspace):
    """CREATE CLASSIFIER foo over a persisted function foo (or foo_proba) was made, and then
    unreachable: SQL's foo(...) kept calling the function."""
    t = _digit_rows()
    _q("CREATE FUNCTION foo(x) AS x")
    _q("CREATE FUNCTION bar_proba(x) AS x")
    for sql, taken in [
        ("CREATE CLASSIFIER Foo AS SELECT f AS features, label FROM t", "foo"),
        ("CREATE OR REPLACE CLASSIFIER foo AS SELECT f AS features, label FROM t", "foo"),
        ("CREATE REGRESSOR foo AS SELECT f AS features, id AS target FROM t", "foo"),
        ("CREATE CLASSIFIER bar AS SELECT f AS features, label FROM t", "bar_proba"),
    ]:
        with pytest.raises(mlnb.MlnbError, match=f"'{taken}' is a persisted function.*DROP FUNCTION {taken}"):
            _q(sql, t=t)
    with pytest.raises(mlnb.MlnbError, match="'foo' is a persisted function"):
        mlnb.train_classifier(t, features="f", label="label", name="foo")
    assert not (_workspace / "heads" / "foo").exists() and not (_workspace / "heads" / "bar").exists()
    assert _q("SELECT foo(7) AS r").item() == 7


def test_model_preprocessing_errors_say_what_is_wrong():
    from mlnb.features._architectures import preprocessing

    with pytest.raises(mlnb.MlnbError, match=r"std divides the pixels, so each of its numbers must be above 0, e.g. \[0.229"):
        preprocessing("resnet18", None, None, None, [0, 0, 0], None)
    with pytest.raises(mlnb.MlnbError, match=r"mean takes three numbers .* e.g. \[0.485"):
        preprocessing("resnet18", None, None, [1, 2], None, None)
    with pytest.raises(mlnb.MlnbError, match="std takes three numbers"):
        preprocessing("resnet18", None, None, None, [float("nan"), 1, 1], None)


def test_dropping_what_a_persisted_function_uses_warns_and_the_function_says_what_is_gone(tmp_path, images):
    """DROP MODEL under a persisted function left it failing with a bare "Unknown model 'tiny'", and
    no DROP said that persisted functions still used what it removed."""
    import warnings

    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "tiny.pt"))
    _q(f"CREATE MODEL tiny FROM '{tmp_path / 'tiny.pt'}' WITH (input_size = 16)")
    _q("CREATE FUNCTION tiny_feat(p) AS embed(p, model := 'tiny')")
    t = _digit_rows()
    _q("CREATE CLASSIFIER parity WITH (folds = 0) AS SELECT f AS features, label FROM t", t=t)
    _q("CREATE FUNCTION parity_of(v) AS parity(v)")
    _q("CREATE FUNCTION loud_parity(v) AS upper(parity_of(v))")
    assert _q("SELECT len(tiny_feat(path)) AS n FROM images", images=images)["n"].to_list() == [4, 4, 4]

    with pytest.warns(UserWarning, match="Dropped function parity_of, which persisted function loud_parity uses: it fails until"):
        _q("DROP FUNCTION parity_of")
    _q("CREATE FUNCTION parity_of(v) AS parity(v)")
    with pytest.warns(UserWarning, match="Dropped classifier parity, which persisted function parity_of uses"):
        _q("DROP CLASSIFIER parity")
    with pytest.warns(UserWarning, match="Dropped model tiny, which persisted function tiny_feat uses"):
        _q("DROP MODEL tiny")
    with pytest.raises(mlnb.QueryError, match=r"(?s)tiny_feat uses the model 'tiny', which no longer exists.*CREATE MODEL tiny FROM"):
        _q("SELECT tiny_feat(path) FROM images", images=images)
    _q(f"CREATE MODEL tiny FROM '{tmp_path / 'tiny.pt'}' WITH (input_size = 16)")
    assert _q("SELECT len(tiny_feat(path)) AS n FROM images", images=images)["n"].to_list() == [4, 4, 4]


def test_a_head_is_not_used_on_a_model_whose_weights_were_replaced(tmp_path, images):
    """CREATE OR REPLACE MODEL with other weights left the heads trained on the old features scoring
    the new ones without a word."""
    import warnings

    import torch

    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(net, torch.zeros(1, 3, 16, 16)).save(str(tmp_path / name))
    _q(f"CREATE MODEL tiny FROM '{tmp_path / 'a.pt'}' WITH (input_size = 16)")
    train = "AS SELECT embed(path, model := 'tiny') AS features, label FROM images"
    _q(f"CREATE CLASSIFIER on_tiny WITH (folds = 0) {train}", images=images)
    assert _q("SELECT on_tiny(embed(path, model := 'tiny')) AS p FROM images", images=images).height == 3
    _q(f"CREATE OR REPLACE MODEL tiny FROM '{tmp_path / 'a.pt'}' WITH (input_size = 16)")  # the same weights: still fits
    assert _q("SELECT on_tiny(embed(path, model := 'tiny')) AS p FROM images", images=images).height == 3

    _q(f"CREATE OR REPLACE MODEL tiny FROM '{tmp_path / 'b.pt'}' WITH (input_size = 16)")
    with pytest.raises(mlnb.QueryError, match=r"on_tiny@1 was trained on the features of model tiny with weights .* now has "
                       r"other weights .*CREATE OR REPLACE CLASSIFIER on_tiny"):
        _q("SELECT on_tiny(embed(path, model := 'tiny')) AS p FROM images", images=images)
    with pytest.raises(mlnb.QueryError, match="now has other weights"):
        mlnb.features.embed_frame(images, "path", model="tiny", heads=["on_tiny"])
    _q(f"CREATE OR REPLACE CLASSIFIER on_tiny WITH (folds = 0) {train}", images=images)
    assert _q("SELECT on_tiny(embed(path, model := 'tiny')) AS p FROM images", images=images).height == 3


def test_a_table_function_over_a_file_its_argument_names(tmp_path):
    """The body was checked with NULL arguments, and read_parquet(NULL) is refused by DuckDB, so
    CREATE FUNCTION rows_of(p) AS TABLE ... FROM read_parquet(p) could not be made."""
    pl.DataFrame({"id": [3, 1, 2], "v": ["c", "a", "b"]}).write_parquet(tmp_path / "t.parquet")
    _q("CREATE FUNCTION first_rows(p, n) AS TABLE SELECT id, upper(v) AS v FROM read_parquet(p) ORDER BY id LIMIT n")
    assert _q(f"SELECT * FROM first_rows('{tmp_path / 't.parquet'}', 2)").rows() == [(1, "A"), (2, "B")]
    assert _q("SHOW FUNCTIONS LIKE 'first_rows'")["kind"].item() == "table"
    with pytest.raises(mlnb.QueryError, match="The body of function bad_rows does not work"):
        _q("CREATE FUNCTION bad_rows(p) AS TABLE SELECT nosuch FROM range(3)")


def test_a_head_cannot_take_the_name_of_a_built_in_function(_workspace):
    """CREATE CLASSIFIER upper (sum, embed, range ...) was made, and then hid the built-in in every
    query: SELECT upper('abc') failed with 'cannot be cast to FLOAT[64]'."""
    t = _digit_rows()
    for name, why in [("upper", "DuckDB's scalar"), ("SUM", "DuckDB's aggregate"), ("read_parquet", "DuckDB's table"),
                      ("embed", "mlnb's built-in"), ("trials", "mlnb's built-in")]:
        with pytest.raises(mlnb.MlnbError, match=f"'{name}' is one of {why} functions: a classifier named so would hide it"):
            _q(f"CREATE CLASSIFIER {name} WITH (folds = 0) AS SELECT f AS features, label FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="a regressor named so would hide it.*e.g. age_reg"):
        mlnb.train_regressor(t, features="f", target="id", name="age")
    assert not (_workspace / "heads").exists() or not any((_workspace / "heads").iterdir())
    assert _q("SELECT upper('abc') AS u, (SELECT sum(x) FROM range(4) r(x)) AS s").row(0) == ("ABC", 6)
