"""Running the app under uvicorn: in the foreground (``mlnb serve``) or in a
background thread of this process (``%mlnb_serve``, tests)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

from ..exceptions import MissingDependencyError, MlnbError


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "serve", "mlnb serve") from None
    return uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), bound before the server starts
    so the URL is known and no other process can take the port in between."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise MlnbError(f"{port!r} is not a port: 0 to 65535 (0 picks a free one).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # every answer waits ~40 ms for a delayed ACK (Nagle). Set on the listener too: accepted ones inherit it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise MlnbError(f"Cannot listen on {host}:{port}: {host!r} is not an address of this machine ({exc.strerror}).") from None
        raise MlnbError(f"Cannot listen on {host}:{port} ({exc.strerror}): choose another --port (0 picks a free one).") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server:
    """A server running in a background thread: ``url``, ``stop()``; a context manager."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", access_log: bool = False) -> None:
        uvicorn = _uvicorn()
        self.app = app
        self._sock = bind(host, port)
        self.url = url_of(self._sock)
        # log_config=None: uvicorn leaves the process's logging (a notebook's) as it is.
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log, log_config=None, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"mlnb-serve {self.url}", daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._failure = exc

    def start(self, timeout: float = 60.0) -> Server:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                why = f": {self._failure}" if self._failure else ""
                raise MlnbError(f"The server did not start{why}.")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started and not self._server.should_exit

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<mlnb server {self.url} {'running' if self.running else 'stopped'}>"


def run_foreground(app: Any, *, host: str, port: int, log_level: str = "info", access_log: bool = True, announce: Any = None) -> None:
    """Serve until Ctrl-C / SIGTERM (the ``mlnb serve`` command)."""
    uvicorn = _uvicorn()
    sock = bind(host, port)
    if announce is not None:
        announce(url_of(sock))
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
