"""What the server exposes: every classifier head and every persisted SQL function of
the workspace in use, found when a request names it (a head trained a moment ago, in
another process, is served at once).

An :class:`Endpoint` turns one request's input into an item (checked before it waits
for a batch), and applies itself to a batch of items in a worker thread, where each
item gets its own answer or its own error: one bad image does not fail its batch.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import MlnbError, ModelNotFoundError

#: The most rows a table function answers with over HTTP (the rest are left out, and the answer says so).
MAX_TABLE_ROWS = 10_000

#: Input kinds a request can carry (see ``_app.parse_input``).
IMAGE_KINDS = ("bytes", "url", "path")


class RequestError(MlnbError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class Input:
    """One request's input: ``kind`` is ``features``, ``bytes``, ``url``, ``path`` or ``args``."""

    kind: str
    value: Any


# -- heads ---------------------------------------------------------------------
@dataclass
class HeadEndpoint:
    """A classifier or regressor head, ``name@version``: takes features, or images when it knows its backbone."""

    name: str
    version: int
    meta: dict[str, Any]
    use_cache: bool = True  # features of posted images kept in the workspace's embedding cache
    latest: bool = False  # asked for by name alone: a version replaced meanwhile gives way to the newest

    @property
    def key(self) -> tuple[Any, ...]:
        from ..heads import store

        return ("head", str(store.heads_root()), self.name, self.version)

    @property
    def kind(self) -> str:
        """``classifier`` or ``regressor``, as the head's meta says."""
        return "regressor" if self.meta.get("kind") == "regressor" else "classifier"

    @property
    def backbone(self) -> str | None:
        return self.meta.get("feature_model")

    @property
    def layer(self) -> str | None:
        return (self.meta.get("layer") or "pool") if self.backbone else None

    def describe(self) -> dict[str, Any]:
        metrics = self.meta.get("metrics") or {}
        out = {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "input": "image or features" if self.backbone else "features",
            "feature_dim": int(self.meta["dim"]),
            "classes": [str(c) for c in self.meta["classes"]] if self.kind == "classifier" else None,
            "backbone": self.backbone,
            "layer": self.layer,
            "algorithm": self.meta.get("algorithm"),
            "accuracy": metrics.get("accuracy"),
            "evaluated_on": metrics.get("evaluated_on"),
            "created": self.meta.get("created"),
        }
        if self.kind == "regressor":  # no accuracy: the errors training measured, and what it predicts
            del out["accuracy"]
            out.update({k: metrics.get(k) for k in ("rmse", "mae", "r2")}, target=self.meta.get("target"))
        return out

    def check(self, item: Input) -> Input:
        """Refuse, before batching, what this head cannot take."""
        if item.kind == "features":
            dim = int(self.meta["dim"])
            if len(item.value) != dim:
                raise RequestError(
                    f"Wrong feature dimension: got {len(item.value)} values, {self.name}@{self.version} takes {dim}"
                    + (f" ({self.backbone} features, layer {self.layer})." if self.backbone else ".")
                )
            return item
        if item.kind in IMAGE_KINDS:
            if not self.backbone:
                raise RequestError(
                    f"{self.name}@{self.version} was trained on feature vectors that did not come from embed(), "
                    'so it cannot embed an image itself: send {"features": [...]}.'
                )
            return item
        raise RequestError(f'{self.name} takes an image or {{"features": [...]}}, not named arguments.')

    def apply(self, items: Sequence[Input]) -> list[Any]:
        """One answer (a dict) or one :class:`RequestError` per item, in order."""
        from ..heads.head import load_head

        try:
            head = load_head(f"{self.name}@{self.version}", self.kind)
        except MlnbError:
            if not self.latest:
                raise
            # CREATE OR REPLACE CLASSIFIER renumbered or removed this version after the request was read.
            head = _retrying(lambda: load_head(self.name, self.kind), self.name)
        version = int(head.meta.get("version") or self.version)
        dim = int(head.meta["dim"])
        X = np.full((len(items), dim), np.nan, dtype=np.float32)
        out: list[Any] = [None] * len(items)
        images = [i for i, it in enumerate(items) if it.kind != "features"]
        for i, it in enumerate(items):
            if it.kind == "features" and len(it.value) != dim:  # checked against a head replaced since
                out[i] = RequestError(f"Wrong feature dimension: got {len(it.value)} values, {self.name}@{version} takes {dim}.")
            elif it.kind == "features":
                X[i] = it.value
        if images:
            # As in SQL: a head on a workspace model whose weights were replaced since (CREATE OR REPLACE
            # MODEL) no longer fits its features; it scored them silently here. The server's state: 500.
            from ..heads.functions import check_backbone

            try:
                check_backbone(head, self.backbone, self.layer)
            except ModelNotFoundError:
                pass  # a dropped model is said below
            except MlnbError as exc:
                for i in images:
                    out[i] = RequestError(_message(exc), status=500)
                images = []
        if images:
            try:
                feats, errors = embed_batch(
                    [items[i].value for i in images], model=self.backbone, layer=self.layer, use_cache=self.use_cache
                )
            except ModelNotFoundError as exc:  # the backbone was dropped: the server's state, not the request
                raise RequestError(
                    f"{self.name}@{version} embeds images with the model {self.backbone!r}, which is not available: {exc}",
                    status=500,
                ) from None
            for j, i in enumerate(images):
                if errors[j] is None:
                    X[i] = feats[j]
                else:
                    out[i] = RequestError(errors[j])
        rows = [i for i in range(len(items)) if out[i] is None]
        if rows and head.meta.get("kind") == "regressor":
            for i, y in zip(rows, head.predict(X[rows])):
                if not np.isfinite(y):
                    out[i] = RequestError("The features hold NaN or infinite values.")
                    continue
                out[i] = {"function": self.name, "version": version, "prediction": float(y)}
        elif rows:
            proba = head.predict_proba(X[rows])
            classes = [str(c) for c in head.meta["classes"]]
            for i, p in zip(rows, proba):
                if not np.isfinite(p).all():
                    out[i] = RequestError("The features hold NaN or infinite values.")
                    continue
                out[i] = {
                    "function": self.name,
                    "version": version,
                    "label": classes[int(np.argmax(p))],
                    "probabilities": {c: float(v) for c, v in zip(classes, p)},
                }
        return out


def _retrying(load: Callable[[], Any], name: str, tries: int = 8) -> Any:
    """``load()``, tried again for a moment while the head's folder exists: a head being replaced
    (CREATE OR REPLACE CLASSIFIER renames its versions) is briefly between two states."""
    import time

    from ..heads import store

    for i in range(tries):
        try:
            return load()
        except (MlnbError, RequestError):
            if i == tries - 1 or not (store.heads_root() / name).is_dir():
                raise
            time.sleep(0.02 * (i + 1))
    raise AssertionError("unreachable")


def _message(exc: MlnbError) -> str:
    """An error for the client: what went wrong (and the hint), not the SQL the server ran."""
    from ..exceptions import QueryError

    if isinstance(exc, QueryError):
        return exc.message + (f" {exc.hint}" if exc.hint else "")
    return str(exc)


def embed_batch(sources: Sequence[Any], *, model: str, layer: str, use_cache: bool = True) -> tuple[np.ndarray, list[str | None]]:
    """Features of ``sources`` through the one embedding engine (its cache included), and
    for each source the reason it could not be used (``None`` where it could)."""
    from .._report import capturing
    from ..exceptions import _short
    from ..features.engine import embed_images

    with capturing() as failures:
        feats, ok = embed_images(list(sources), model=model, layer=layer, progress=False, use_cache=use_cache)
    reasons: dict[str, str] = {}
    for src, reason in failures:
        reasons.setdefault(src, reason)
    errors = [
        None if good else f"The image could not be used: {reasons.get(_short(src), 'it could not be decoded')}."
        for src, good in zip(sources, ok)
    ]
    return feats, errors


# -- persisted SQL functions ---------------------------------------------------
@dataclass
class FunctionEndpoint:
    """A persisted ``CREATE FUNCTION name(args) AS <expression>``, run through a SQL session."""

    name: str
    args: tuple[str, ...]
    expression: str
    session: Callable[[], Any]
    table: bool = False
    returns: str | None = None
    created: str | None = None
    version: None = None  # a persisted function has one definition; CREATE OR REPLACE changes it
    kind: str = "function"

    @property
    def key(self) -> tuple[Any, ...]:
        from ..workspace import get_workspace

        return ("function", str(get_workspace().root), self.name, self.args, self.expression)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "table_function" if self.table else self.kind,
            "version": None,
            "input": "image, features or args" if len(self.args) == 1 else "args",
            "arguments": list(self.args),
            "expression": self.expression,
            "returns": self.returns,
            "feature_dim": None,
            "classes": None,
            "backbone": None,
            "created": self.created,
        }

    def check(self, item: Input) -> Input:
        if item.kind == "args":
            # Argument names are SQL names: case-insensitive, as in a call.
            given = {str(k).lower() for k in item.value}
            missing = [a for a in self.args if a.lower() not in given]
            extra = [k for k in item.value if str(k).lower() not in {a.lower() for a in self.args}]
            if len(given) != len(item.value):
                raise RequestError('"args" names an argument twice (names are case-insensitive).')
            if missing or extra:
                raise RequestError(
                    f"{self.name}({', '.join(self.args)}) "
                    + (f"needs {', '.join(map(repr, missing))}" if missing else f"has no argument {extra[0]!r}")
                    + f'; send {{"args": {{{", ".join(f"{a!r}: ..." for a in self.args)}}}}}.'.replace("'", '"')
                )
            return item
        if item.kind == "features":
            if len(self.args) != 1:
                raise RequestError(f"{self.name} takes {len(self.args)} arguments: send them by name in \"args\".")
            return item
        if len(self.args) != 1:
            raise RequestError(
                f"{self.name}({', '.join(self.args)}) takes {len(self.args)} arguments: send them by name, "
                f'{{"args": {{...}}}}.'
            )
        return item

    def _values(self, item: Input) -> dict[str, Any]:
        if item.kind == "args":
            by_lower = {str(k).lower(): v for k, v in item.value.items()}
            return {a: by_lower[a.lower()] for a in self.args}
        return {self.args[0]: item.value}

    def apply(self, items: Sequence[Input]) -> list[Any]:
        """The batch as one statement over a frame of its arguments; when that statement
        fails, each item alone, so the error is the request's own. Items whose arguments
        have different types (image bytes and a URL, 1 and 2.5) go as separate statements:
        one column cannot hold both, and each must get what it would get alone."""
        if len(items) > 1 and not self.table:
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, it in enumerate(items):
                values = self._values(it)
                groups.setdefault(tuple(_type_of(values[a]) for a in self.args), []).append(i)
            if len(groups) > 1:
                out: list[Any] = [None] * len(items)
                for rows in groups.values():
                    for i, res in zip(rows, self.apply([items[i] for i in rows])):
                        out[i] = res
                return out
            try:
                out = self._run([self._values(it) for it in items])
            except MlnbError:
                pass  # one of them is bad: each alone, below
            else:
                # A NULL from an image that failed: run it alone for its own reason.
                for i, res in enumerate(out):
                    if isinstance(res, RequestError):
                        out[i] = self.apply([items[i]])[0]
                return out
        out = []
        for it in items:
            try:
                out.extend(self._run([self._values(it)]))
            except ModelNotFoundError as exc:  # a model its body uses is gone: the server's state
                out.append(RequestError(f"{self.name} cannot run: {exc}", status=500))
            except MlnbError as exc:
                out.append(RequestError(_message(exc)))
        return out

    def _run(self, rows: list[dict[str, Any]]) -> list[Any]:
        import polars as pl

        from .._report import capturing
        from ..sql._errors import quote

        session = self.session()
        if self.table:  # one request, one table: its rows as JSON objects, arguments bound as $parameters
            (row,) = rows
            names = {a: f"__mlnb_a{i}" for i, a in enumerate(self.args)}
            call = f"{quote(self.name)}({', '.join('$' + names[a] for a in self.args)})"
            ns = {names[a]: (v.tolist() if isinstance(v, np.ndarray) else v) for a, v in row.items()}
            with capturing():
                table = session.run(f"SELECT * FROM {call} LIMIT {MAX_TABLE_ROWS + 1}", ns)
            answer = {"function": self.name, "version": None, "output": _jsonable(table.head(MAX_TABLE_ROWS).to_dicts())}
            if table.height > MAX_TABLE_ROWS:  # range(10000000) made one answer of 10 million objects
                answer["truncated"] = f"the first {MAX_TABLE_ROWS:,} rows; the table has more"
            return [answer]
        args = ", ".join(f"__mlnb_in.{quote(a)}" for a in self.args)
        query = f"SELECT {quote(self.name)}({args}) AS out FROM __mlnb_in ORDER BY __mlnb_row"
        cols: dict[str, Any] = {"__mlnb_row": list(range(len(rows)))}
        for a in self.args:
            vals = [r[a].tolist() if isinstance(r[a], np.ndarray) else r[a] for r in rows]
            try:
                cols[a] = pl.Series(a, vals, dtype=pl.Binary) if all(isinstance(v, bytes) for v in vals) else pl.Series(a, vals)
            except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
                # A list or object mixing types ([1, "a"]): no SQL column holds it.
                what = "values" if len(rows) > 1 else json.dumps(vals[0], default=str)[:80]
                raise RequestError(f"{self.name}: the argument {a!r} = {what} is not a SQL value (a list holds values of one type).") from None
        frame = pl.DataFrame(cols)
        with capturing() as failures:
            result = session.run(query, {"__mlnb_in": frame})
        reasons = [r for _src, r in failures]
        out: list[Any] = []
        for value in result.get_column("out").to_list():
            if value is None and reasons:
                out.append(RequestError(f"The image could not be used: {reasons[0]}."))
            else:
                out.append({"function": self.name, "version": self.version, "output": _jsonable(value)})
        return out


def _type_of(value: Any) -> str:
    """What SQL column type a request's argument needs (feature vectors are lists)."""
    return "list" if isinstance(value, np.ndarray) else type(value).__name__


def _jsonable(value: Any) -> Any:
    """A SQL result as JSON: maps (a head's ``_proba``) become objects, arrays lists."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"key", "value"} for v in value):
        return {str(v["key"]): _jsonable(v["value"]) for v in value}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _registry_lookup(name: str) -> Any:
    from ..functions import registry

    return registry.lookup(name)


def function_problems() -> list[dict[str, Any]]:
    """The workspace's persisted functions whose files are damaged (``{name, error}``)."""
    try:
        from ..sql._persisted import function_problems as problems
    except ImportError:
        return []
    return problems()


def persisted_functions() -> list[dict[str, Any]]:
    """The workspace's persisted SQL functions (``CREATE FUNCTION``), as ``{name, args, expression,
    kind, returns, created}`` dicts; empty where this mlnb has no such store."""
    try:
        from ..sql._persisted import persisted_functions as listed
    except ImportError:
        return []
    out = []
    for f in listed():
        out.append({**f, "args": tuple(f.get("args") or ()), "kind": f.get("kind") or "scalar"})
    return out


# -- the catalog -----------------------------------------------------------------
class Catalog:
    """Finds endpoints by name in the workspace in use; one SQL session for persisted functions."""

    def __init__(self, *, use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self._session: Any = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        """The server's own SQL session (not the notebook's: a long query there does not stop serving)."""
        with self._lock:
            if self._session is None:
                from .. import _ensure_builtins
                from ..sql._session import Session, _builtin_tables

                _ensure_builtins()
                _builtin_tables()
                self._session = Session()
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def endpoints(self) -> list[Any]:
        """Every head (its latest version) and persisted function; damaged heads are left out
        (:meth:`problems` names them)."""
        from ..heads import store

        out: list[Any] = []
        for name in store.names():
            v = store.versions(name)[-1]
            try:
                out.append(HeadEndpoint(name, v, store.check_files(name, v), use_cache=self.use_cache))
            except MlnbError:
                continue
        out += [self._function(f) for f in persisted_functions()]
        return sorted(out, key=lambda e: e.name)

    def problems(self) -> list[dict[str, Any]]:
        from ..heads import store

        bad = []
        for name in store.names():
            v = store.versions(name)[-1]
            try:
                store.check_files(name, v)
            except MlnbError as exc:
                bad.append({"name": name, "version": v, "error": str(exc)})
        for f in function_problems():
            bad.append({"name": f["name"], "version": None, "error": f["error"]})
        return sorted(bad, key=lambda b: b["name"])

    def _function(self, info: dict[str, Any]) -> FunctionEndpoint:
        return FunctionEndpoint(
            info["name"], info["args"], info["expression"], self.session, table=info["kind"] == "table",
            returns=info.get("returns"), created=info.get("created"),
        )

    def resolve(self, ref: str) -> Any:
        """The endpoint ``name`` (latest version) or ``name@version``; a 404 with close matches otherwise."""
        from ..heads import store

        name, _, ver = ref.partition("@")
        if not name.isidentifier() or len(name) > 100:
            raise RequestError(f"No function named {name[:100]!r} is served: names are SQL identifiers. "
                               "GET /v1/functions lists them.", status=404)
        if store.versions(name) or (store.heads_root() / name).is_dir():

            def head() -> HeadEndpoint:
                try:
                    n, version = store.resolve(ref)
                except ModelNotFoundError as exc:
                    raise RequestError(str(exc), status=404) from None
                try:
                    meta = store.check_files(n, version)
                except MlnbError as exc:
                    raise RequestError(str(exc), status=500) from None
                return HeadEndpoint(n, version, meta, use_cache=self.use_cache, latest=not ver)

            try:
                return _retrying(head, name) if not ver else head()
            except RequestError as exc:
                if store.versions(name) or exc.status != 404:
                    raise
                # The folder held no version after all (a head dropped meanwhile): look further.
        for f in function_problems():
            if f["name"] == name.lower():
                raise RequestError(f["error"], status=500)
        for info in persisted_functions():
            if info["name"] == name.lower():
                if ver:
                    raise RequestError(
                        f"{name!r} is a persisted SQL function: it has one definition, no versions. Call it as {name!r}.",
                        status=404,
                    )
                broken = getattr(_registry_lookup(name), "broken", "")
                if broken:  # a function its body calls is gone: the server's state, not the request
                    raise RequestError(broken, status=500)
                return self._function(info)
        known = [e.name for e in self.endpoints()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise RequestError(
            f"No function named {name!r} is served.{hint} GET /v1/functions lists them.",
            status=404,
            close_matches=close,
        )
