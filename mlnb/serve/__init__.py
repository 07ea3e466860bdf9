"""Serve the workspace's classifier and regressor heads and persisted SQL functions over HTTP, MLDB-style.

::

    mlnb serve --workspace DIR --port 8000          # a terminal
    %mlnb_serve                                     # a notebook: a background server, prints its URL

    curl localhost:8000/v1/functions
    curl -X POST --data-binary @cat.jpg -H 'Content-Type: image/jpeg' \\
         localhost:8000/v1/functions/pets/application
    {"function": "pets", "version": 3, "label": "cat", "probabilities": {"cat": 0.97, "dog": 0.03}}
    curl -X POST -d '{"features": [0.1, ...]}' localhost:8000/v1/functions/age/application   # a regressor
    {"function": "age", "version": 1, "prediction": 12.3}

A head trained on ``embed(...)`` features embeds a posted image with the same
backbone and layer (through the embedding engine and its cache); any head also
takes ``{"features": [...]}``. Requests arriving within a few milliseconds of
each other go through the model as one batch. Needs the ``serve`` extra
(``pip install "mlnb[serve]"``: Starlette and uvicorn).
"""

from __future__ import annotations

import os
from typing import Any

from ._app import ServeOptions, create_app
from ._server import Server

__all__ = ["ServeOptions", "Server", "create_app", "running", "serve", "start", "stop"]

_current: Server | None = None


def start(*, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
    """Serve the workspace in use from a background thread of this process; returns the
    :class:`Server` (``.url``, ``.stop()``). ``port=0`` picks a free port.

    ``options`` are :class:`ServeOptions` fields: ``batching``, ``max_batch``, ``max_wait_ms``,
    ``max_queue``, ``workers``, ``max_body``, ``allow_urls``, ``allow_paths``, ``warmup``, ``cache``.

    Examples
    --------
    >>> from mlnb.serve import start
    >>> server = start()  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:53211'
    """
    global _current
    server = Server(create_app(ServeOptions(**options)), host=host, port=port).start()
    _current = server
    return server


def running() -> Server | None:
    """The server :func:`start` started last, while it runs."""
    return _current if _current is not None and _current.running else None


def stop() -> bool:
    """Stop the server :func:`start` started last; False when none was running."""
    global _current
    server, _current = _current, None
    if server is None:
        return False
    was = server.running
    server.stop()
    return was


def check_workspace(workspace: str | os.PathLike[str]) -> None:
    """A workspace to serve must exist (a typo would serve nothing, and create a folder)."""
    from pathlib import Path

    from ..exceptions import MlnbError

    path = Path(workspace).expanduser()
    if path.is_dir():
        if (path / ".mlnb").is_dir() and not any((path / d).is_dir() for d in ("heads", "functions", "models")):
            raise MlnbError(f"{workspace} holds no heads or functions, but its .mlnb folder may: "
                            f"serve --workspace {path / '.mlnb'}.")
        return
    if path.exists():
        raise MlnbError(f"--workspace {workspace} is a file, not a workspace folder.")
    hint = ""
    if (path.parent / ".mlnb").is_dir() and path.name != ".mlnb":
        hint = f" Did you mean {path.parent / '.mlnb'}?"
    raise MlnbError(
        f"No workspace at {workspace}.{hint} A workspace is the folder CREATE CLASSIFIER and CREATE FUNCTION "
        "write to (mlnb.config.workspace, ./.mlnb by default)."
    )


def serve(
    workspace: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve in the foreground until interrupted (what ``mlnb serve`` runs)."""
    from ._server import run_foreground

    if workspace is not None:
        check_workspace(workspace)
    app = create_app(ServeOptions(**options), workspace=workspace)

    def announce(url: str) -> None:
        from ..config import config

        state = app.state.mlnb
        names = [e.name for e in state.catalog.endpoints()]
        print(f"mlnb: serving {len(names)} function(s) from {config.workspace} at {url}", flush=True)
        if names:
            print(f"mlnb: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}", flush=True)
        for problem in state.catalog.problems():  # damaged files are not served: say so at once
            print(f"mlnb: not served: {problem['error']}", flush=True)
        print(f"mlnb: try  curl {url}/v1/functions", flush=True)

    run_foreground(app, host=host, port=port, log_level=log_level, announce=announce)
