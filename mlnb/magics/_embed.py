"""``%embed FRAME.COLUMN [--model M] [--layer L] [--name COL] [--head H] [--engine local|ray] [-o NAME]``."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..config import DEFAULT_MODEL
from ..exceptions import MlnbError


@magics_class
class EmbedMagic(Magics):
    @magic_arguments()
    @argument("target", help="FRAME.COLUMN: a frame of the namespace and its image column")
    @argument("--model", default=DEFAULT_MODEL, help="backbone (mlnb.list_models())")
    @argument("--layer", default="pool", help="'pool' (penultimate) or a named layer")
    @argument("--name", default="features", help="name of the new column")
    @argument("-o", "--out", default=None, help="also store the result in this variable")
    @argument("--engine", default=None, help="'local' or 'ray' (default: mlnb.config.engine)")
    @argument("--head", action="append", default=[], help="also score this saved classifier head (repeatable)")
    @argument("--output", default=None, help="Ray engine: folder or URI for the Parquet shards")
    @line_magic
    def embed(self, line: str) -> Any:
        """Add a features column to a frame: ``%embed photos.path --model resnet18 -o feats``.

        ``--engine ray`` runs it on Ray (Parquet shards in the workspace; the result is a LazyFrame over them).
        """
        from ..features import embed_frame

        args = parse_argstring(self.embed, line)
        frame_name, sep, column = args.target.partition(".")
        if not sep or not column:
            raise MlnbError("%embed needs FRAME.COLUMN, e.g. %embed photos.path")
        if frame_name not in self.shell.user_ns:
            raise MlnbError(f"No variable named {frame_name!r} in the notebook.")
        result = embed_frame(
            self.shell.user_ns[frame_name], column, model=args.model, layer=args.layer, name=args.name,
            heads=args.head, engine=args.engine, output=args.output,
        )
        if args.out:
            self.shell.user_ns[args.out] = result
        if type(result).__name__ == "LazyFrame":  # a Ray job's shards: show the first rows, not a query plan
            from ..config import config

            return result.head(config.display_limit).collect()
        return result
