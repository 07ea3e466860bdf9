"""``%mlnb_serve [--port N] [--host H] [--allow-paths [FOLDER]] [--no-batching] [--warmup]``,
``%mlnb_serve stop``, ``%mlnb_serve status``: the workspace's heads and persisted functions
over HTTP, from a background thread of the kernel."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class ServeMagic(Magics):
    @magic_arguments()
    @argument("action", nargs="?", default="start", choices=["start", "stop", "status"], help="start (default), stop or status")
    @argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    @argument("--port", type=int, default=0, help="port (default 0: a free one)")
    @argument("--allow-paths", nargs="?", const=True, default=False, metavar="FOLDER", help="accept file paths (only under FOLDER when given)")
    @argument("--no-urls", action="store_true", help="refuse URL requests")
    @argument("--no-batching", action="store_true", help="run every request alone")
    @argument("--warmup", action="store_true", help="load every head and its backbone first")
    @line_magic
    def mlnb_serve(self, line: str) -> Any:
        """Serve this workspace's classifier heads and persisted SQL functions over HTTP.

        ``%mlnb_serve`` starts a server in the background (the notebook stays usable) and prints
        its URL; ``%mlnb_serve stop`` stops it. The server is also ``mlnb.serve.running()``.
        """
        from .. import serve

        args = parse_argstring(self.mlnb_serve, line)
        current = serve.running()
        if args.action == "stop":
            print(f"Stopped the server at {current.url}." if serve.stop() and current else "No server was running.")
            return None
        if args.action == "status" or current is not None:
            if current is None:
                print("No server is running: %mlnb_serve starts one.")
            else:
                print(f"Serving at {current.url} (%mlnb_serve stop stops it).")
            return None
        server = serve.start(
            host=args.host, port=args.port, allow_paths=args.allow_paths, allow_urls=not args.no_urls,
            batching=not args.no_batching, warmup=args.warmup,
        )
        names = [e.name for e in server.app.state.mlnb.catalog.endpoints()]
        listed = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        print(f"Serving {len(names)} function(s){': ' + listed if names else ''} at {server.url}")
        print(f"  curl {server.url}/v1/functions")
        if names:
            print(f"  curl -X POST --data-binary @image.jpg -H 'Content-Type: image/jpeg' {server.url}/v1/functions/{names[0]}/application")
        return None
