"""Hostile servers, on 127.0.0.1 only: a trickle, a huge body, slow answers, errors.

URLs have one total deadline (``mlnb.config.url_timeout``), bodies are
streamed under the byte cap, connections are reused, and more URLs are
fetched at once than images are decoded."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

import mlnb
from mlnb import images as images_mod
from mlnb.exceptions import ImageLoadError

MiB = 1 << 20


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that reuse can be seen

    def log_message(self, *args):  # quiet
        pass

    def _send(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        with server.lock:
            server.ports.add(self.client_address[1])
            server.inflight += 1
            server.most = max(server.most, server.inflight)
        try:
            path = self.path
            if path.startswith("/ok"):
                self._send(PNG)
            elif path.startswith("/slow"):
                time.sleep(1.0)
                self._send(PNG)
            elif path == "/silent":  # accepts, then never answers
                time.sleep(30)
            elif path == "/trickle":  # 20 bytes every 0.5 s, forever (until the client goes)
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while True:
                    self.wfile.write(PNG[:20])
                    self.wfile.flush()
                    time.sleep(0.5)
            elif path == "/huge-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(2 * 10**9))
                self.end_headers()
                for _ in range(2000):
                    self.wfile.write(b"\0" * MiB)
            elif path == "/huge-chunked":  # no length given: only the streamed count can stop it
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"\0" * MiB
                for _ in range(2000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._send(b"nothing here", status=404)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with server.lock:
                server.inflight -= 1


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.ports, srv.inflight, srv.most = set(), 0, 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    # a fresh client per test: connections to an earlier test's server must not be reused
    _close_client()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    _close_client()
    srv.shutdown()
    srv.server_close()


def _close_client():
    if images_mod._CLIENT is not None:
        images_mod._CLIENT.close()
        images_mod._CLIENT = None


def test_a_good_url_loads(server):
    _, base = server
    assert images_mod.load_image(f"{base}/ok.png").size == (24, 16)


def test_trickling_server_meets_one_total_deadline(server, monkeypatch):
    _, base = server
    monkeypatch.setattr(mlnb.config, "url_timeout", 2.0)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="timed out after 2s"):
        images_mod.load_image(f"{base}/trickle")
    took = time.perf_counter() - start
    print(f"\nFIGURE trickling server (20 B / 0.5 s), deadline 2 s: gave up after {took:.2f}s")
    assert took < 3.0


def test_a_server_that_never_answers_meets_the_deadline(server, monkeypatch):
    _, base = server
    monkeypatch.setattr(mlnb.config, "url_timeout", 1.5)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="timed out after 1.5s"):
        images_mod.load_image(f"{base}/silent")
    assert time.perf_counter() - start < 2.5


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-chunked"])
def test_huge_body_stops_at_the_cap(server, monkeypatch, path):
    _, base = server
    monkeypatch.setattr(mlnb.config, "max_image_bytes", 4 * MiB)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="too large"):
        images_mod.load_image(base + path)
    took = time.perf_counter() - start
    print(f"\nFIGURE {path} (2 GB body), cap 4 MiB: refused after {took:.2f}s")
    assert took < 5


def test_http_error_is_the_reason(server):
    _, base = server
    with pytest.raises(ImageLoadError, match="HTTP 404"):
        images_mod.load_image(f"{base}/nothing.png")


def test_connections_are_reused(server):
    srv, base = server
    for i in range(6):
        images_mod.load_image(f"{base}/ok{i}.png")
    assert len(srv.ports) == 1


def test_more_urls_are_fetched_at_once_than_images_decoded(server):
    # 8 URLs that each answer after 1 s: fetched together, not 2 at a time (2 cores here).
    srv, base = server
    urls = [f"{base}/slow{i}.png" for i in range(8)]
    from mlnb.features.engine import embed_images

    embed_images([f"{base}/ok-warmup.png"], progress=False)  # model loaded outside the timing
    start = time.perf_counter()
    feats, ok = embed_images(urls, progress=False)
    took = time.perf_counter() - start
    print(f"\nFIGURE 8 URLs answering after 1 s each: {took:.2f}s, {srv.most} fetched at once")
    assert ok.all()
    assert srv.most >= 4
    assert took < 4.0


def test_a_replaced_fetcher_is_capped_too(monkeypatch):
    monkeypatch.setattr(mlnb.config, "max_image_bytes", 1 * MiB)
    images_mod.set_url_fetcher(lambda url, timeout: b"\0" * (2 * MiB))
    try:
        with pytest.raises(ImageLoadError, match="too large"):
            images_mod.load_image("http://127.0.0.1:9/x.png")
    finally:
        images_mod.set_url_fetcher(None)


def test_refused_connection_is_retried_then_reported():
    import socket

    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _close_client()
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="cannot fetch"):
        images_mod.load_image(f"http://127.0.0.1:{port}/x.png")
    assert time.perf_counter() - start < 5
    _close_client()
