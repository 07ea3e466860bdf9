"""One definition per function, for SQL and Python.

A function is a plain Python callable that works on whole columns: each
positional argument arrives as a ``pyarrow.Array`` (or, for ``IMAGE``
arguments, a list of paths / bytes / Python objects), each keyword-only
argument as one Python value. The registry installs it into DuckDB as a
vectorised Arrow UDF behind a SQL macro (so named options work:
``embed(path, model := 'resnet18')``), and calling the registered object from
Python runs the same code.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import MlnbError, ModelNotFoundError

#: Pseudo type for an image argument: a path or URL (VARCHAR) or encoded bytes (BLOB).
IMAGE = "IMAGE"

_PY_TO_SQL = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bytes: "BLOB", bool: "BOOLEAN"}
_ANNOTATION_TO_SQL = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "bytes": "BLOB", "bool": "BOOLEAN"}

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One argument: its name, SQL type and (for options) default value."""

    name: str
    type: str
    default: Any = _MISSING

    @property
    def is_option(self) -> bool:
        return self.default is not _MISSING

    def render(self) -> str:
        if self.is_option:
            return f"{self.name} := {_sql_literal(self.default)}"
        return f"{self.name} {'VARCHAR|BLOB' if self.type == IMAGE else self.type}"


@dataclass
class Function:
    """A registered function; call it from Python, or by ``name`` from SQL."""

    name: str
    impl: Callable[..., Any]
    params: tuple[Param, ...]
    returns: str
    doc: str = ""
    kind: str = "scalar"  # "scalar" or "table"
    sql: str | None = None  # body of a table function (a DuckDB table macro)
    specialise: Callable[[dict[str, Any]], str | None] | None = None
    side_effects: bool = False
    #: Called with (parsed statement, call) before the statement runs; raises to refuse it.
    check: Callable[[Any, Any], None] | None = None
    #: For functions whose work another engine can run (``embed`` on Ray): the Python twin takes
    #: ``engine=``, and a SQL statement calling the function runs inside ``offload(dry_run)``, a
    #: context manager that may call ``dry_run()`` (the statement once, rolled back; False where
    #: that is not safe) to learn what the statement needs, and hand it to that engine first.
    offload: Callable[[Callable[[], bool]], Any] | None = None
    #: Where it comes from, as ``SHOW FUNCTIONS`` says: "builtin" (mlnb's own), "python" (a user's
    #: ``@function``), "classifier" (a head), "persisted" (``CREATE FUNCTION``); "" to infer it.
    origin: str = ""
    _udf_name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._udf_name = "__mlnb_" + "".join(c if c.isalnum() or c == "_" else "_" for c in self.name)
        self.__doc__ = self.doc
        self.__name__ = self.name

    # -- description ---------------------------------------------------
    @property
    def columns(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.is_option)

    @property
    def options(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.is_option)

    @property
    def signature(self) -> str:
        args = ", ".join(p.render() for p in self.params)
        return f"{self.name}({args}) -> {self.returns}"

    @property
    def summary(self) -> str:
        return self.doc.strip().split("\n\n")[0].replace("\n", " ") if self.doc else ""

    def __repr__(self) -> str:
        return f"<mlnb function {self.signature}>"

    # -- Python twin ---------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "table":
            return self.impl(*args, **kwargs)
        engine = kwargs.pop("engine", None) if self.offload is not None else None
        cols = self.columns
        if len(args) != len(cols):
            names = ", ".join(p.name for p in cols)
            raise MlnbError(f"{self.name}() takes {len(cols)} positional argument(s) ({names}), got {len(args)}.")
        options = self.bind_options(kwargs)
        scalar = all(_is_scalar(a, p) for a, p in zip(args, cols))
        columns = [_as_column(a, p, scalar) for a, p in zip(args, cols)]
        from ..config import using_engine

        with using_engine(engine):
            result = self.impl(*columns, **options)
        return _python_result(result, scalar)

    def bind_options(self, given: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self.options}
        unknown = set(given) - set(known)
        if unknown:
            bad = sorted(unknown)[0]
            hint = difflib.get_close_matches(bad, known, n=1)
            more = f" Did you mean {hint[0]!r}?" if hint else ""
            raise MlnbError(f"{self.name}() has no option {bad!r}.{more} Options: {', '.join(known) or 'none'}.")
        # An option given as None (or NULL in SQL) means "use the default".
        return {n: p.default if given.get(n) is None else given[n] for n, p in known.items()}

    # -- SQL -----------------------------------------------------------
    def install(self, con: Any, context: Callable[[], Any] | None = None) -> None:
        """Create this function in a DuckDB connection. ``context()`` gives the
        statement context of the connection's running statement, which the call
        enters on DuckDB's worker thread (see :mod:`mlnb._context`)."""
        if self.kind == "table":
            if self.sql is None:  # computed in Python when a statement calls it (mlnb.sql._computed)
                return
            con.execute(f"CREATE OR REPLACE MACRO {_ident(self.name)}({self._macro_params()}) AS TABLE {self.sql}")
            return
        udf_types: list[str] = []
        call_args: list[str] = []
        for p in self.params:
            if p.type == IMAGE:
                udf_types += ["VARCHAR", "BLOB"]
                call_args += [
                    f"CASE WHEN typeof({p.name}) = 'BLOB' THEN NULL ELSE CAST({p.name} AS VARCHAR) END",
                    f"CASE WHEN typeof({p.name}) = 'BLOB' THEN CAST({p.name} AS BLOB) ELSE NULL END",
                ]
            else:
                udf_types.append(p.type)
                # Options, and list columns (so DOUBLE[] or FLOAT[n] arrays fit a FLOAT[] parameter), are cast.
                cast = p.is_option or p.type.endswith("]")
                call_args.append(f"CAST({p.name} AS {p.type})" if cast else p.name)
        try:
            con.remove_function(self._udf_name)
        except Exception:  # noqa: BLE001 - not there yet
            pass
        def udf(*arrays: Any) -> Any:
            if context is None:
                return self._arrow_udf(*arrays)
            from .._context import entered

            ctx = context()
            with entered(ctx), (ctx.calling() if ctx is not None else contextlib.nullcontext()):
                return self._arrow_udf(*arrays)

        # DuckDB reads the arity from the signature.
        udf.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(f"a{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(udf_types))]
        )
        con.create_function(
            self._udf_name,
            udf,
            udf_types,
            self.returns,
            type="arrow",
            null_handling="special",
            side_effects=self.side_effects,
        )
        con.execute(f"CREATE OR REPLACE MACRO {_ident(self.name)}({self._macro_params()}) AS {self._udf_name}({', '.join(call_args)})")

    def _macro_params(self) -> str:
        return ", ".join(p.name if not p.is_option else f"{p.name} := {_sql_literal(p.default)}" for p in self.params)

    def _arrow_udf(self, *arrays: Any) -> Any:
        """Called by DuckDB with one Arrow array per UDF argument, a chunk at a time."""
        try:
            return self._run_chunk(arrays)
        except BaseException as exc:
            # DuckDB flattens the exception to text; keep the original for the statement.
            from .._context import current

            ctx = current()
            if ctx is not None:
                ctx.put_error(exc)
            raise

    def _run_chunk(self, arrays: tuple[Any, ...]) -> Any:
        import pyarrow as pa

        columns: list[Any] = []
        it = iter(arrays)
        for p in self.params:
            if p.is_option:
                break
            if p.type == IMAGE:
                paths, blobs = next(it).to_pylist(), next(it).to_pylist()
                columns.append([b if b is not None else s for s, b in zip(paths, blobs)])
            else:
                columns.append(_one_array(next(it)))
        option_arrays = list(it)
        n = len(arrays[0]) if arrays else 0
        groups = _option_groups(self.options, option_arrays, n)
        if len(groups) == 1:
            (opts, _rows), = groups.items()
            return _to_arrow(self.impl(*columns, **dict(opts)), self.returns, n)
        # Options that vary by row: run once per distinct combination, stitch back in order.
        out: list[Any] = [None] * n
        for opts, rows in groups.items():
            sub = [_take(c, rows) for c in columns]
            part = _to_arrow(self.impl(*sub, **dict(opts)), self.returns, len(rows)).to_pylist()
            for i, v in zip(rows, part):
                out[i] = v
        return pa.array(out, type=_arrow_type(self.returns))


def _one_array(arr: Any) -> Any:
    """DuckDB hands a chunk over as a ChunkedArray of one chunk: take it without copying."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        return arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr


def _option_groups(options: Sequence[Param], arrays: Sequence[Any], n: int) -> dict[tuple, list[int]]:
    if not options:
        return {(): list(range(n))}
    values = [a.to_pylist() for a in arrays]
    first = tuple((p.name, v[0] if v and v[0] is not None else p.default) for p, v in zip(options, values))
    if all(len(set(map(repr, v))) <= 1 for v in values):
        return {first: list(range(n))}
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        key = tuple((p.name, v[i] if v[i] is not None else p.default) for p, v in zip(options, values))
        groups.setdefault(key, []).append(i)
    return groups


def _take(col: Any, rows: list[int]) -> Any:
    if isinstance(col, list):
        return [col[i] for i in rows]
    import pyarrow as pa

    return col.take(pa.array(rows, type=pa.int64()))


@functools.lru_cache(maxsize=256)
def _arrow_type(sql_type: str) -> Any:
    """The Arrow type of a DuckDB type, computed once per type (not once per chunk)."""
    import duckdb
    import pyarrow as pa

    simple = {
        "DOUBLE": pa.float64(), "FLOAT": pa.float32(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
        "VARCHAR": pa.string(), "BLOB": pa.binary(), "BOOLEAN": pa.bool_(),
        "FLOAT[]": pa.list_(pa.float32()), "DOUBLE[]": pa.list_(pa.float64()), "VARCHAR[]": pa.list_(pa.string()),
    }
    if sql_type in simple:
        return simple[sql_type]
    # Anything else: ask DuckDB for the Arrow type of an empty value of that type.
    con = duckdb.connect()
    try:
        return con.sql(f"SELECT CAST(NULL AS {sql_type}) AS x").to_arrow_table().schema.field("x").type
    finally:
        con.close()


def _to_arrow(result: Any, sql_type: str, n: int) -> Any:
    import pyarrow as pa

    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    if not isinstance(result, pa.Array):
        try:
            import polars as pl

            if isinstance(result, pl.Series):
                result = result.to_arrow()
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(result, pa.Array):
        result = pa.array(list(result), type=_arrow_type(sql_type))
    if len(result) != n:
        raise MlnbError(f"internal error: function returned {len(result)} values for {n} rows")
    want = _arrow_type(sql_type)
    if result.type != want:
        result = result.cast(want)
    return result


def _is_scalar(value: Any, param: Param) -> bool:
    if isinstance(value, (str, bytes, bytearray, memoryview, int, float, bool)) or value is None:
        return True
    if param.type == IMAGE and not isinstance(value, (list, tuple)):
        # A PIL image, a numpy image array, a path object: one image.
        mod = type(value).__module__
        if mod.startswith("PIL") or hasattr(value, "__fspath__"):
            return True
        if mod.startswith("numpy") and getattr(value, "ndim", 0) in (2, 3) and value.dtype != object:
            return True
        return False
    return False


def _as_column(value: Any, param: Param, scalar: bool) -> Any:
    import pyarrow as pa

    if param.type == IMAGE:
        if scalar:
            return [value]
        if hasattr(value, "to_list"):
            return list(value.to_list())
        if isinstance(value, pa.Array | pa.ChunkedArray):
            return value.to_pylist()
        return list(value)
    if scalar:
        return pa.array([value], type=_arrow_type(param.type))
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    if isinstance(value, pa.Array):
        return value
    if hasattr(value, "to_arrow"):
        arr = value.to_arrow()
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return pa.array(list(value) if not hasattr(value, "__array__") else value)


def _python_result(result: Any, scalar: bool) -> Any:
    import numpy as np
    import polars as pl
    import pyarrow as pa

    if not isinstance(result, pa.Array | pa.ChunkedArray):
        return result[0] if scalar else result
    series = pl.Series(result)
    if not scalar:
        return series
    value = series[0]
    if isinstance(value, pl.Series) and value.dtype.is_float():
        return value.to_numpy()
    if isinstance(value, np.ndarray):
        return value
    return value


def _ident(name: str) -> str:
    # Always quoted: a name DuckDB reads as a keyword when bare (left, semi, anti ...) is still a macro
    # name when quoted, and a bare call to it parses; names that do not (real, time ...) are refused when made.
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Registry:
    """Name → :class:`Function`; connections install everything registered, now or later."""

    def __init__(self) -> None:
        self._functions: dict[str, Function] = {}
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Function], None]] = []
        # Sources of functions that depend on where you are (the heads of the workspace in use):
        # objects with lookup(name) -> Function | None and functions() -> list[Function].
        self._resolvers: list[Any] = []

    def add(self, fn: Function, *, replace: bool = False) -> Function:
        with self._lock:
            if fn.name in self._functions and not replace:
                raise MlnbError(f"A function named {fn.name!r} is already registered; pass replace=True to redefine it.")
            self._functions[fn.name] = fn
            listeners = list(self._listeners)
        for cb in listeners:
            cb(fn)
        return fn

    def remove(self, name: str) -> None:
        with self._lock:
            self._functions.pop(name, None)

    def add_resolver(self, resolver: Any) -> None:
        """Add a source of functions looked up when a statement runs (see ``_resolvers``)."""
        self._resolvers.append(resolver)

    def lookup(self, name: str) -> Function | None:
        """The function called ``name`` now: a registered one, else one a resolver knows."""
        fn = self._functions.get(name)
        if fn is not None:
            return fn
        for r in self._resolvers:
            fn = r.lookup(name)
            if fn is not None:
                return fn
        return None

    def is_static(self, name: str) -> bool:
        return name in self._functions

    def get(self, name: str) -> Function:
        fn = self.lookup(name)
        if fn is None:
            close = difflib.get_close_matches(name, [f.name for f in self.all()], n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(f"No function named {name!r}.{hint}")
        return fn

    def __contains__(self, name: str) -> bool:
        return self.lookup(name) is not None

    def all(self) -> list[Function]:
        """Registered functions and those the resolvers offer now, by name."""
        found = dict(self._functions)
        for r in self._resolvers:
            for fn in r.functions():
                found.setdefault(fn.name, fn)
        return sorted(found.values(), key=lambda f: f.name)

    def __iter__(self):
        return iter(sorted(self._functions.values(), key=lambda f: f.name))

    def on_add(self, callback: Callable[[Function], None]) -> None:
        self._listeners.append(callback)

    def off_add(self, callback: Callable[[Function], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def match(self, pattern: str = "*") -> list[Function]:
        # SQL names ignore case (SHOW FUNCTIONS LIKE 'EMBED%' finds embed).
        return [f for f in self.all() if fnmatch.fnmatchcase(f.name.lower(), pattern.lower())]


registry = Registry()


def function(
    name: str | None = None,
    *,
    returns: str,
    types: dict[str, str] | None = None,
    specialise: Callable[[dict[str, Any]], str | None] | None = None,
    side_effects: bool = False,
    offload: Callable[[Callable[[], bool]], Any] | None = None,
    replace: bool = False,
) -> Callable[[Callable[..., Any]], Function]:
    """Register a vectorised function under a SQL name.

    Positional parameters are columns: they arrive as ``pyarrow.Array``
    (``IMAGE`` ones as a list of paths, bytes or images). Keyword-only
    parameters with defaults are options, given in SQL as ``name := value``.
    Types come from ``types`` or the annotations (``int``, ``float``, ``str``,
    ``bytes``, ``bool`` or a DuckDB type string).

    Examples
    --------
    >>> import pyarrow.compute as pc
    >>> @function(returns="DOUBLE", replace=True)
    ... def scale(x: float, *, factor: float = 2.0):
    ...     "Multiply a column by a factor."
    ...     return pc.multiply(x, factor)
    >>> scale(3.0, factor=10)
    30.0
    >>> # In SQL: SELECT scale(price, factor := 1.2) FROM items
    """

    def decorate(impl: Callable[..., Any]) -> Function:
        sig = inspect.signature(impl)
        params: list[Param] = []
        for p in sig.parameters.values():
            given = (types or {}).get(p.name)
            sql_type = given or _annotation_type(p.annotation, p.default)
            if sql_type is None:
                raise MlnbError(f"Parameter {p.name!r} of {impl.__name__} needs a type (annotation or types=...).")
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                if p.default is inspect.Parameter.empty:
                    raise MlnbError(f"Option {p.name!r} of {impl.__name__} needs a default value.")
                params.append(Param(p.name, sql_type, p.default))
            elif p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                params.append(Param(p.name, sql_type))
            else:
                raise MlnbError(f"{impl.__name__}: *args/**kwargs cannot be SQL arguments.")
        fn = Function(
            name=name or impl.__name__,
            impl=impl,
            params=tuple(params),
            returns=returns,
            doc=inspect.getdoc(impl) or "",
            specialise=specialise,
            side_effects=side_effects,
            offload=offload,
        )
        return registry.add(fn, replace=replace)

    return decorate


def table_function(name: str, sql: str | None, *, params: Sequence[Param], returns: str, doc: str, impl: Callable[..., Any]) -> Function:
    """Register a table function whose SQL body is a DuckDB table macro; with ``sql=None``, one
    computed by ``impl(input frame, **options)`` before its statement runs (``label_issues``)."""
    fn = Function(name=name, impl=impl, params=tuple(params), returns=returns, doc=doc, kind="table", sql=sql)
    return registry.add(fn, replace=True)


def _annotation_type(annotation: Any, default: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        if default is not inspect.Parameter.empty and default is not None:
            return _PY_TO_SQL.get(type(default))
        return None
    if isinstance(annotation, str):
        return _ANNOTATION_TO_SQL.get(annotation, annotation)
    return _PY_TO_SQL.get(annotation)


def functions(pattern: str = "*") -> Any:
    """The registered functions as a Polars frame: name, kind, signature, returns, doc, and
    origin (builtin, python, classifier, persisted), definition and created (persisted ones).

    Examples
    --------
    >>> import mlnb
    >>> mlnb.functions("read_*")["name"].to_list()
    ['read_images']
    """
    import polars as pl

    from .. import _ensure_builtins

    _ensure_builtins()
    rows = [
        {
            "name": f.name, "kind": f.kind, "signature": f.signature, "returns": f.returns, "doc": f.summary,
            "origin": _origin(f), "definition": getattr(f, "expression", None) or None, "created": getattr(f, "created", None) or None,
        }
        for f in registry.match(pattern)
    ]
    schema = {
        "name": pl.String, "kind": pl.String, "signature": pl.String, "returns": pl.String, "doc": pl.String,
        "origin": pl.String, "definition": pl.String, "created": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def _origin(f: Function) -> str:
    if f.origin:
        return f.origin
    if not registry.is_static(f.name):
        return "classifier"  # the only other source of functions a statement resolves
    return "builtin" if getattr(f.impl, "__module__", "").startswith("mlnb.") else "python"
