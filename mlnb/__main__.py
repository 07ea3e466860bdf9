"""The ``mlnb`` command (also ``python -m mlnb``).

::

    mlnb serve [--workspace DIR] [--host 127.0.0.1] [--port 8000] [--allow-paths [FOLDER]] ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: 0 to 65535 (0 picks a free one)")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlnb", description="mlnb: SQL with CNN features and classifier heads.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="serve the workspace's classifier heads and persisted SQL functions over HTTP",
        description="Serve every classifier head and persisted SQL function of a workspace over HTTP "
        "(GET /v1/functions, POST /v1/functions/<name>/application, GET /v1/health).",
    )
    s.add_argument("--workspace", default=None, help="the workspace folder (default: mlnb.config.workspace, ./.mlnb)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument(
        "--allow-paths", nargs="?", const=True, default=False, metavar="FOLDER",
        help='accept {"path": ...} requests (files on the server): any path, or only under FOLDER',
    )
    s.add_argument("--no-urls", action="store_true", help='refuse {"url": ...} requests (the server would fetch them)')
    s.add_argument("--no-batching", action="store_true", help="run every request alone (no micro-batching)")
    s.add_argument("--max-batch", type=int, default=32, help="most requests in one batch (default 32)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join its batch (default 5)")
    s.add_argument("--max-queue", type=int, default=1024, help="requests waiting per function before 503 (default 1024)")
    s.add_argument("--max-body", type=int, default=None, help="largest request body in bytes (default: from mlnb.config.max_image_bytes)")
    s.add_argument("--workers", type=int, default=2, help="worker threads running batches (default 2)")
    s.add_argument("--warmup", action="store_true", help="load every head and its backbone before serving")
    s.add_argument("--no-cache", action="store_true", help="do not keep posted images' features in the workspace's embedding cache")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        _parser().print_help()
        return 2
    from .exceptions import MlnbError
    from .serve import serve

    try:
        serve(
            args.workspace, host=args.host, port=args.port, log_level=args.log_level,
            batching=not args.no_batching, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue, max_body=args.max_body, workers=args.workers,
            allow_urls=not args.no_urls, allow_paths=args.allow_paths, warmup=args.warmup,
            cache=not args.no_cache,
        )
    except MlnbError as exc:
        print(f"mlnb serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
