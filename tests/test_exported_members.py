import subprocess
import sys

import mlnb


def test_all_is_sorted_and_resolves():
    assert mlnb.__all__ == sorted(mlnb.__all__)
    public = {n for n in dir(mlnb) if not n.startswith("_")} | {"__version__"}
    assert set(mlnb.__all__) == public
    for name in mlnb.__all__:
        assert getattr(mlnb, name) is not None


def test_sql_and_functions_are_functions_not_modules():
    import mlnb.functions.read_images  # noqa: F401
    import mlnb.sql as m1  # noqa: F401 - importing the subpackage must not shadow the function

    assert callable(mlnb.sql) and callable(mlnb.functions)


def test_import_is_light():
    code = "import sys, mlnb; print(','.join(m for m in ('torch','torchvision','umap','plotly','duckdb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
