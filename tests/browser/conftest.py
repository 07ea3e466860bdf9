"""The JupyterLab server fixture, shared by every browser test file (it lives with the helpers)."""

from test_labeler_browser import lab_server  # noqa: F401
