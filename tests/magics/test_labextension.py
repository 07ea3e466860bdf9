"""The prebuilt JupyterLab extension that highlights %%mlsql cells: built from the current source,
shipped as package data, and installed by the wheel where JupyterLab looks for extensions."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "mlnb" / "labextension"
SRC = ROOT / "labextension"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _built() -> dict:
    return json.loads((BUILT / "package.json").read_text())


def test_bundle_is_built_from_the_current_source():
    """labextension/build.sh stamps a hash of the sources into the built package.json: edit the source, rebuild."""
    src = b"".join((SRC / name).read_bytes() for name in ("src/index.js", "src/keywords.js", "package.json", "package-lock.json"))
    assert _built()["mlnbSourceHash"] == hashlib.sha256(src).hexdigest()[:16], (
        "mlnb/labextension is stale: run `bash dev js` (or bash labextension/build.sh)"
    )


def test_built_extension_is_complete():
    pkg = _built()
    assert pkg["name"] == json.loads((SRC / "package.json").read_text())["name"] == "mlnb-sql"
    entry = BUILT / pkg["jupyterlab"]["_build"]["load"]
    assert entry.is_file()
    # the code that recognises %%mlsql cells is in the bundle
    code = "".join(p.read_text() for p in (BUILT / "static").glob("*.js"))
    assert "%%mlsql" in code and "mlnb-sql:highlight" in code


def test_shipped_in_the_wheel_and_installed_for_jupyterlab():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # package data: every built file is inside the mlnb package
    patterns = conf["package-data"]["mlnb"]
    files = [p.relative_to(ROOT / "mlnb").as_posix() for p in BUILT.rglob("*") if p.is_file()]
    for f in files:
        assert any(fnmatch.fnmatch(f, pat) or fnmatch.fnmatch(f, pat.replace("**/", "")) for pat in patterns), f
    # data files: the wheel puts them in <prefix>/share/jupyter/labextensions/mlnb-sql
    data = conf["data-files"]
    installed = set()
    for target, sources in data.items():
        for pattern in sources:
            for path in ROOT.glob(pattern):
                installed.add(f"{target}/{path.name}")
    want = {f"share/jupyter/labextensions/mlnb-sql/{f.removeprefix('labextension/')}" for f in files}
    assert want <= installed


def test_installed_in_this_environment():
    """`bash dev test` / `bash dev quickstart` (editable installs) copy it in; a wheel installs it itself."""
    from jupyter_core.paths import jupyter_path

    found = [Path(p) / "mlnb-sql" / "package.json" for p in jupyter_path("labextensions")]
    found = [p for p in found if p.is_file()]
    if not found:
        pytest.skip("mlnb-sql is not installed here (pip install -e skips data files; bash dev test copies it)")
    assert json.loads(found[0].read_text())["mlnbSourceHash"] == _built()["mlnbSourceHash"], (
        f"{found[0].parent} is an old build: run bash dev test (or copy mlnb/labextension there)"
    )
