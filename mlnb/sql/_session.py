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
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._context import StatementContext, entered
from .._frames import is_frame, to_polars  # noqa: F401 - re-exported by mlnb.sql
from .._report import collecting
from ..exceptions import Interrupted, MlnbError, QueryError
from ..functions import registry
from . import _errors
from ._computed import computed_edits
from ._parse import Statement, parse
from ._rewrite import rewrite
from ._rowexpr import ScopeProbe

@contextlib.contextmanager
def _ctrl_c_stops(ctx: StatementContext) -> Iterator[None]:
    """Ctrl-C tells the statement's workers to stop at once.

    DuckDB may run a function on one of its own threads while the main thread waits. When
    DuckDB's wait sees the signal it waits for that function to return before it gives up,
    so a chunk of images would be embedded to the end. While the statement runs, SIGINT
    also sets its stop event (then does what it did before: KeyboardInterrupt), so the
    worker stops at its next batch and says how far it got. Only the main thread can
    handle signals; elsewhere nothing changes."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        before = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        yield
        return
    if not callable(before):  # SIG_IGN / SIG_DFL / set from C: leave it alone
        yield
        return

    def on_sigint(signum: int, frame: Any) -> Any:
        ctx.stop.set()
        return before(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, before)


Handler = Callable[["Session", re.Match[str], Statement, Mapping[str, Any]], Any]
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


def _saved_selection(name: str) -> Any:
    """A selection saved from the explorer (``explorer.save_selection(name)``): a Parquet file
    in the workspace in use, so it is a table in every later kernel too."""
    from ..workspace import get_workspace

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return None
    path = get_workspace().path("selections", f"{name}.parquet")
    if not path.is_file():  # SQL names ignore case: FROM cats finds the selection saved as Cats
        path = next((p for p in path.parent.glob("*.parquet") if p.stem.lower() == name.lower()), None)
        if path is None or not path.is_file():
            return None
    import polars as pl

    return pl.read_parquet(path)


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
        # name -> the Function installed under it in this connection.
        self._installed: dict[str, Any] = {}
        # name -> the object registered under it; kept while the namespace still
        # binds that name to that same object (re-registering costs ~1 ms a frame).
        self._views: dict[str, Any] = {}
        #: The context of the statement running now (see mlnb._context).
        self.context: StatementContext | None = None
        self._scope_probe = ScopeProbe(self.con)
        # Results of table functions computed in Python (label_issues ...): registered for the
        # statement that called them, dropped when a later top-level statement starts.
        self._computed: list[str] = []
        self._depth = 0
        # Table macros last: their SQL may call any scalar function (classifier_folds_rows ...).
        for fn in sorted(registry, key=lambda f: f.kind == "table"):
            self._install(fn)
        registry.on_add(self._install)

    def _install(self, fn: Any) -> None:
        with self._lock:
            fn.install(self.con, context=lambda: self.context)
            self._installed[fn.name] = fn

    def _uninstall(self, name: str) -> None:
        fn = self._installed.pop(name, None)
        if fn is None:
            return
        with contextlib.suppress(Exception):
            self.con.execute(f"DROP MACRO IF EXISTS {_errors.quote(name)}")
        with contextlib.suppress(Exception):
            self.con.remove_function(fn._udf_name)

    # -- running -----------------------------------------------------
    def run(
        self,
        query: str,
        namespace: Mapping[str, Any] | None = None,
        *,
        lazy: bool = False,
    ) -> Any:
        """Run every statement of ``query``; return the last one's result as Polars.

        A cell of several statements is checked for syntax errors before any of them
        runs; when one fails at run time, the error says which, and those after it do not run.
        """
        import polars as pl

        namespace = namespace or {}
        statements = parse(query or "")
        if not statements:
            raise QueryError("Nothing to run: the query is empty. Write a SQL statement, e.g. SELECT 42.")
        if len(statements) > 1:
            for stmt in statements:
                try:
                    _errors.check_syntax(stmt)
                except QueryError as exc:
                    raise _errors.in_cell(exc, stmt, ran=False) from None
        result: Any = pl.DataFrame()
        with self._lock:
            for stmt in statements:
                last = stmt.number == stmt.count
                try:
                    result = self._run_one(stmt, namespace, lazy=lazy and last)
                except QueryError as exc:
                    raise _errors.in_cell(exc, stmt, ran=True) from None
        return result

    def _run_one(self, stmt: Statement, namespace: Mapping[str, Any], *, lazy: bool) -> Any:
        if self._depth == 0:
            for name in self._computed:
                self._unregister(name)
            self._computed.clear()
        self._depth += 1
        try:
            return self._run_statement(stmt, namespace, lazy=lazy)
        finally:
            self._depth -= 1

    def _computed_register(self, name: str, frame: Any) -> None:
        self.con.register(name, frame)
        self._computed.append(name)

    def _run_statement(self, stmt: Statement, namespace: Mapping[str, Any], *, lazy: bool) -> Any:
        import polars as pl

        if stmt.kind != "sql":
            for pattern, handler in _HANDLERS:
                m = pattern.match(stmt.text)
                if m:
                    out = handler(self, m, stmt, namespace)
                    return out.lazy() if lazy and isinstance(out, pl.DataFrame) else out
        frames = {k for k, v in namespace.items() if is_frame(v)}
        _errors.check_frame_names(stmt, frames)
        self._register(stmt, namespace)
        with collecting() as collector:  # bad rows: one summary warning per statement
            ctx = StatementContext(collector=collector)
            before, self.context = self.context, ctx
            try:
                with entered(ctx), _ctrl_c_stops(ctx):
                    return self._execute(stmt, namespace, frames, ctx, lazy=lazy)
            finally:
                self.context = before

    def _execute(
        self, stmt: Statement, namespace: Mapping[str, Any], frames: set[str], ctx: StatementContext, *, lazy: bool
    ) -> Any:
        import polars as pl

        executed = stmt.text
        try:
            params = self._params(stmt, namespace)
            self._resolve_functions(stmt)
            computed = computed_edits(self, stmt, namespace, params, registry.lookup)
            executed = rewrite(stmt, scopes=lambda probe: self._scopes(stmt, probe, params), lookup=registry.lookup, computed=computed)
            if computed:  # $params used only inside a computed call's arguments are not in the text any more
                params = {t.text[1:]: params[t.text[1:]] for t in stmt.params if not any(a <= t.start < b for a, b, _ in computed)}
            with self._offloaded(stmt, executed, params or None) as on_ray:
                rel = self.con.sql(executed, params=params or None)
                if rel is None:
                    if stmt.tokens and stmt.tokens[0].upper == "DROP":
                        self._views.clear()  # whatever was dropped is registered afresh
                    return pl.DataFrame()
                if lazy and not on_ray and not computed:  # computed results are dropped after the statement
                    return rel.pl(lazy=True)
                # On Ray, the features this statement needs are held for it only while it runs.
                return rel.pl().lazy() if lazy else rel.pl()
        except MlnbError:
            raise
        except KeyboardInterrupt as exc:
            raise self._interrupted(ctx, exc) from None
        except Exception as exc:  # noqa: BLE001 - every engine error is a query error
            inner = ctx.take_error()
            if isinstance(inner, MlnbError):
                raise inner from None
            if isinstance(inner, KeyboardInterrupt) or "INTERRUPT" in str(exc).split(":", 1)[0].upper():
                raise self._interrupted(ctx, inner or exc) from None
            if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
                raise
            raise _errors.from_engine(exc, statement=stmt, executed=executed, frames=frames) from None

    def _interrupted(self, ctx: StatementContext, exc: BaseException | None) -> BaseException:
        """Ctrl-C: the statement's workers stop at their next batch, DuckDB stops, and one
        line says what was kept (finished batches are in the cache)."""
        ctx.stop.set()
        self.con.interrupt()
        inner = ctx.take_error()
        # Functions still running stop at their next batch and say how far they got: wait for
        # that line (briefly) rather than answer before they have noticed.
        deadline = time.monotonic() + 1.0
        while inner is None and ctx.active > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
            inner = ctx.take_error()
        for e in (exc, inner):
            if isinstance(e, Interrupted):
                return e
        return Interrupted("interrupted; finished batches are cached")

    def _scopes(self, stmt: Statement, probe: str, params: dict[str, Any]) -> dict[int, str]:
        """Bind ``probe`` (EXPLAIN: nothing runs) and return the scopes it captured."""

        def explain(text: str) -> None:
            try:
                self.con.execute("EXPLAIN " + text, params or None)
            except Exception as exc:  # noqa: BLE001
                raise _errors.from_engine(exc, statement=stmt, executed=text, frames=[]) from None

        return self._scope_probe.run(explain, probe)

    def _resolve_functions(self, stmt: Statement) -> None:
        """Install what the statement calls as it is now (a head of the workspace in use);
        drop what no longer exists (a head of the workspace left behind). A persisted function
        (a macro) brings the functions its body calls (``depends``), installed before it."""
        seen: set[str] = set()
        for call in stmt.calls:
            self._resolve_function(call.name, seen)

    def _resolve_function(self, name: str, seen: set[str]) -> None:
        if name in seen:
            return
        seen.add(name)
        fn = registry.lookup(name)
        for dep in getattr(fn, "depends", ()):
            self._resolve_function(dep, seen)
        cur = self._installed.get(name)
        if fn is cur:
            return
        if fn is None:
            if cur is not None and not registry.is_static(name):
                self._uninstall(name)
            return
        self._install(fn)

    @contextlib.contextmanager
    def _offloaded(self, stmt: Statement, executed: str, params: dict[str, Any] | None) -> Iterator[bool]:
        """Run a statement that calls functions another engine can take (``embed`` on Ray)
        inside their ``offload`` context, which may dry-run it first (see :class:`Function`)."""
        runners = []
        for call in stmt.calls:
            fn = self._installed.get(call.name)
            if fn is not None and fn.offload is not None and fn.offload not in runners:
                runners.append(fn.offload)
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

    def _register(self, stmt: Statement, namespace: Mapping[str, Any]) -> None:
        """Register the frames ``stmt`` names; drop views whose name now means something else."""
        for name, obj in list(self._views.items()):
            if namespace.get(name) is not obj:
                self._unregister(name)
        for name in stmt.names:
            obj = namespace.get(name)
            if (obj is None or not is_frame(obj)) and name in _PROVIDERS:
                # fresh each statement: labels change between queries; a variable that is no frame
                # (``labels = [...]`` in a notebook) does not hide the store
                obj = _PROVIDERS[name]()
            if obj is None:
                obj = _saved_selection(name)
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

    def _params(self, stmt: Statement, namespace: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for tok in stmt.params:
            name = tok.text[1:]
            if name not in namespace:
                raise QueryError(
                    f"Parameter ${name} is not defined.",
                    statement=stmt.text,
                    position=tok.start,
                    hint=f"Define a Python variable named {name!r} (it is bound as a value, never pasted into the SQL).",
                )
            params[name] = _param_value(namespace[name])
        return params

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
