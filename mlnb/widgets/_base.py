"""What every widget controller shares: its view is made on first use and shown by IPython."""

from __future__ import annotations

from typing import Any


class Controller:
    """Subclasses set ``_view_factory`` to a function ``controller -> widget``."""

    _view: Any = None

    def _make_view(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def widget(self) -> Any:
        """The browser view (created on first use)."""
        if self._view is None:
            self._view = self._make_view()
        return self._view

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
