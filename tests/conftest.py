from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

import mlnb


class RaisingShell(InteractiveShell):
    """A real IPython shell whose run_cell re-raises what the cell raised."""

    def run_cell(self, *args, **kwargs):
        result = super().run_cell(*args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    """Every test gets an empty workspace."""
    monkeypatch.setattr(mlnb.config, "_workspace", tmp_path / ".mlnb")
    yield tmp_path / ".mlnb"


@pytest.fixture(scope="session")
def _shell():
    shell = RaisingShell.instance()
    shell.run_cell("%load_ext mlnb")
    return shell


@pytest.fixture
def ip(_shell):
    """The shell with a clean user namespace."""
    _shell.user_ns.clear()
    _shell.init_user_ns()
    yield _shell
