"""The session: one DuckDB connection per kernel, and the path every query takes.

For each statement of a query: mlnb's own statements (``SHOW FUNCTIONS``,
``CREATE CLASSIFIER`` ...) are dispatched to their handlers; everything else
has its frames registered from the namespace, its ``$params`` bound, mlnb's
syntax rewritten, and runs in DuckDB. Errors become :class:`QueryError`.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._frames import is_frame, to_polars  # noqa: F401 - re-exported by mlnb.sql
from .._report import collecting
from ..exceptions import MlnbError, QueryError
from ..functions import registry
from ..functions._registry import udf_errors
from . import _errors
from ._lexer import split_statements
from ._rewrite import find_names, find_params, rewrite_row_expressions, specialise_calls

Handler = Callable[["Session", re.Match[str], str, Mapping[str, Any]], Any]
_HANDLERS: list[tuple[re.Pattern[str], Handler]] = []


def statement(pattern: str) -> Callable[[Handler], Handler]:
    """Register a handler for one of mlnb's statements (matched case-insensitively, whole statement)."""

    def deco(fn: Handler) -> Handler:
        _HANDLERS.append((re.compile(r"^\s*" + pattern + r"\s*$", re.IGNORECASE | re.DOTALL), fn))
        return fn

    return deco


_PROVIDERS: dict[str, Callable[[], Any]] = {}


def _builtin_tables() -> None:
    """The workspace's stores as SQL tables: ``labels``, ``label_history``, ``runs``."""
    from ..labels import get_label_store
    from ..runs import runs_frame

    _PROVIDERS.setdefault("labels", lambda: get_label_store().current())
    _PROVIDERS.setdefault("label_history", lambda: get_label_store().history())
    _PROVIDERS.setdefault("runs", runs_frame)


def table_provider(name: str, fn: Callable[[], Any]) -> None:
    """Make ``name`` a SQL table computed by ``fn()`` when a statement uses it
    (and no frame of the namespace has that name): ``labels``, ``runs``."""
    _PROVIDERS[name] = fn


class Session:
    """A DuckDB connection with mlnb's functions installed.

    Use :func:`mlnb.sql` rather than this class; it exists so tests and
    widgets can hold an isolated one.
    """

    def __init__(self) -> None:
        import duckdb

        self.con = duckdb.connect(":memory:")
        # Frames are registered explicitly; DuckDB's own lookup would search *our* Python frames.
        self.con.execute("SET python_enable_replacements = false")
        # DuckDB's own progress bar stays behind in notebook output; mlnb shows its own.
        self.con.execute("SET enable_progress_bar = false")
        self._lock = threading.RLock()
        self._installed: set[str] = set()
        # name -> the object registered under it; kept while the namespace still
        # binds that name to that same object (re-registering costs ~1 ms a frame).
        self._views: dict[str, Any] = {}
        for fn in registry:
            self._install(fn)
        registry.on_add(self._install)

    def _install(self, fn: Any) -> None:
        with self._lock:
            fn.install(self.con)
            self._installed.add(fn.name)

    # -- running -----------------------------------------------------
    def run(
        self,
        query: str,
        namespace: Mapping[str, Any] | None = None,
        *,
        lazy: bool = False,
    ) -> Any:
        """Run every statement of ``query``; return the last one's result as Polars."""
        import polars as pl

        namespace = namespace or {}
        statements = split_statements(query or "")
        if not statements:
            raise QueryError("Nothing to run: the query is empty. Write a SQL statement, e.g. SELECT 42.")
        result: Any = pl.DataFrame()
        with self._lock:
            for i, (stmt, _offset) in enumerate(statements):
                last = i == len(statements) - 1
                result = self._run_one(stmt, namespace, lazy=lazy and last)
        return result

    def _run_one(self, stmt: str, namespace: Mapping[str, Any], *, lazy: bool) -> Any:
        import polars as pl

        for pattern, handler in _HANDLERS:
            m = pattern.match(stmt)
            if m:
                out = handler(self, m, stmt, namespace)
                return out.lazy() if lazy and isinstance(out, pl.DataFrame) else out
        frames = {k for k, v in namespace.items() if is_frame(v)}
        self._register(stmt, namespace)
        executed = stmt
        with collecting():  # bad rows: one summary warning per statement
            return self._execute(stmt, executed, namespace, frames, lazy=lazy)

    def _execute(self, stmt: str, executed: str, namespace: Mapping[str, Any], frames: set[str], *, lazy: bool) -> Any:
        import polars as pl

        try:
            params = self._params(stmt, namespace)
            executed = rewrite_row_expressions(stmt, self._describe)
            executed = specialise_calls(executed, lambda n: registry._functions.get(n))
            udf_errors.take()
            with self._offloaded(executed, params or None) as on_ray:
                rel = self.con.sql(executed, params=params or None)
                if rel is None:
                    return pl.DataFrame()
                if lazy and not on_ray:
                    return rel.pl(lazy=True)
                # On Ray, the features this statement needs are held for it only while it runs.
                return rel.pl().lazy() if lazy else rel.pl()
        except MlnbError:
            raise
        except KeyboardInterrupt:
            self.con.interrupt()
            raise
        except Exception as exc:  # noqa: BLE001 - every engine error is a query error
            inner = udf_errors.take()
            if isinstance(inner, MlnbError):
                raise inner from None
            if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
                raise
            raise _errors.from_engine(exc, statement=stmt, executed=executed, frames=frames) from None

    @contextlib.contextmanager
    def _offloaded(self, executed: str, params: dict[str, Any] | None) -> Iterator[bool]:
        """Run a statement that calls functions another engine can take (``embed`` on Ray)
        inside their ``offload`` context, which may dry-run it first (see :class:`Function`)."""
        called = {t.name if t.kind == "qident" else t.name.lower() for t in find_names(executed)}
        runners = list(dict.fromkeys(f.offload for f in registry if f.offload is not None and f.name in called))
        if not runners:
            yield False
            return

        def dry_run() -> bool:
            """The statement once, rolled back, its result read and dropped."""
            try:
                self.con.execute("BEGIN TRANSACTION")
            except Exception:  # noqa: BLE001 - inside the user's own transaction: no dry run is safe
                return False
            try:
                rel = self.con.sql(executed, params=params)
                if rel is not None:
                    for _batch in rel.to_arrow_reader():
                        pass
            finally:
                self.con.execute("ROLLBACK")
            return True

        with contextlib.ExitStack() as stack:
            yield any([stack.enter_context(run(dry_run)) for run in runners])

    def _register(self, stmt: str, namespace: Mapping[str, Any]) -> None:
        """Register the frames ``stmt`` names; drop views whose name now means something else."""
        for name, obj in list(self._views.items()):
            if namespace.get(name) is not obj:
                self._unregister(name)
        for tok in find_names(stmt):
            name = tok.name
            obj = namespace.get(name)
            if obj is None and name in _PROVIDERS:
                obj = _PROVIDERS[name]()  # fresh each statement: labels change between queries
            if obj is None or not is_frame(obj):
                continue
            # pandas frames change in place, so they are registered afresh every time.
            if self._views.get(name) is obj and type(obj).__module__.split(".")[0] != "pandas":
                continue
            self.con.register(name, obj)
            self._views[name] = obj

    def _unregister(self, name: str) -> None:
        self._views.pop(name, None)
        try:
            self.con.unregister(name)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _params(self, stmt: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for tok in find_params(stmt):
            name = tok.text[1:]
            if name not in namespace:
                raise QueryError(
                    f"Parameter ${name} is not defined.",
                    statement=stmt,
                    position=tok.start,
                    hint=f"Define a Python variable named {name!r} (it is bound as a value, never pasted into the SQL).",
                )
            params[name] = _param_value(namespace[name])
        return params

    def _describe(self, probe: str) -> list[tuple[str, str]]:
        try:
            rel = self.con.sql(probe + " LIMIT 0")
        except Exception as exc:  # noqa: BLE001
            raise _errors.from_engine(exc, statement=probe, executed=probe, frames=[]) from None
        return [(c, str(t)) for c, t in zip(rel.columns, rel.types)]

    def close(self) -> None:
        registry.off_add(self._install)
        self.con.close()


def _param_value(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()  # numpy scalar
    if is_frame(value):
        raise MlnbError("A frame cannot be a $parameter: use it as a table (FROM name) instead.")
    return value


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """The kernel's session, created on first use."""
    global _session
    with _session_lock:
        if _session is None:
            from .. import _ensure_builtins

            _ensure_builtins()
            _builtin_tables()
            from ..heads.functions import register_saved_heads

            register_saved_heads()
            _session = Session()
            atexit.register(_session.close)
        return _session


def sql(query: str, /, **frames_and_params: Any) -> Any:
    """Run SQL over Polars/pandas/Arrow frames and return a Polars DataFrame.

    Tables are looked up in the keyword arguments, then in the caller's
    variables; ``$name`` is bound as a parameter from the same places.

    Examples
    --------
    >>> import polars as pl, mlnb
    >>> t = pl.DataFrame({"a": [1, 2, 3]})
    >>> mlnb.sql("SELECT sum(a) AS s FROM t WHERE a > $lo", t=t, lo=1).item()
    5
    """
    lazy = bool(frames_and_params.pop("_lazy", False))
    caller = sys._getframe(1)
    namespace: dict[str, Any] = {**caller.f_globals, **caller.f_locals, **frames_and_params}
    return get_session().run(query, namespace, lazy=lazy)
