"""Functions defined in SQL that persist in the workspace (MLDB's ``sql.expression``).

::

    CREATE [OR REPLACE] FUNCTION brand(url) AS car_head(embed(url))
    CREATE FUNCTION near(q) AS TABLE SELECT path FROM read_images('photos/*.jpg')
        ORDER BY array_cosine_similarity(embed(path), embed(q)) DESC LIMIT 5
    DROP FUNCTION [IF EXISTS] brand

Each is a JSON file ``<workspace>/functions/<name>.json`` (name, arguments,
expression, return type, created), written atomically. Like heads, persisted
functions belong to the workspace in use: the registry asks
:class:`PersistedResolver` for a name when a statement runs, and the session
installs the function as a DuckDB macro (and, first, the functions its body
calls: heads, models, other persisted functions). So a function created in
one kernel is callable in the next, and in any process using the workspace.

The expression is checked when it is created: parsed by DuckDB, checked for
calls to itself, bound (with NULL arguments) so that an unknown function or
column fails then, with nothing written; a failed ``OR REPLACE`` keeps the
old definition.

Listing API (used by ``mlnb serve`` and ``SHOW FUNCTIONS``):
:func:`persisted_functions` (``mlnb.persisted_functions()``) returns one dict per function: ``name``, ``args``,
``expression``, ``kind`` (``scalar`` or ``table``), ``returns``, ``created``.
The Python twins are :func:`create_function`, :func:`drop_function`, and the
function itself: ``mlnb.functions.registry.get("brand")("cat.jpg")``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import MlnbError, ModelNotFoundError, QueryError
from ..functions import Function, Param, registry
from ..workspace import check_identifier, get_workspace
from ._parse import Statement, parse


@dataclass
class PersistedFunction(Function):
    """A function whose body is a SQL expression (or ``TABLE`` query), installed as a DuckDB macro."""

    args: tuple[str, ...] = ()
    expression: str = ""  # as the user wrote it
    body: str = ""  # as DuckDB runs it (mlnb's rewrites applied)
    depends: tuple[str, ...] = ()  # functions the body calls
    uses: tuple[str, ...] = ()  # those of them that were mlnb's (heads, persisted) when it was created
    uses_args: tuple[tuple[str, int], ...] = ()  # (persisted function it calls, its number of arguments then)
    models: tuple[str, ...] = ()  # models its body names (embed(x, model := 'cars'))
    created: str = ""
    #: Why it cannot run (its file is damaged, a function it calls is gone), or "" when it can.
    broken: str = ""
    broken_hint: str = ""

    def install(self, con: Any, context: Any = None) -> None:
        if self.broken:
            raise QueryError(self.broken, hint=self.broken_hint)
        table = "TABLE " if self.kind == "table" else ""
        try:
            con.execute(f"CREATE OR REPLACE MACRO {_ident(self.name)}({', '.join(self.args)}) AS {table}{self.body}")
        except Exception as exc:  # noqa: BLE001 - DuckDB checks the body's functions when the macro is made
            raise QueryError(
                f"The persisted function {self.name} no longer works: {str(exc).splitlines()[0]}",
                hint=f"Its body is {self.expression}. Something it calls was dropped or changed: "
                f"redefine it (CREATE OR REPLACE FUNCTION {self.name}...) or DROP FUNCTION {self.name}.",
            ) from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The Python twin: one value per argument (a result), or columns (a Series / a frame)."""
        import polars as pl

        from ._session import get_session

        if self.broken:
            raise QueryError(self.broken, hint=self.broken_hint)
        if kwargs:
            raise MlnbError(f"{self.name}() takes positional arguments only ({', '.join(self.args) or 'none'}).")
        if len(args) != len(self.args):
            raise MlnbError(f"{self.name}() takes {len(self.args)} argument(s) ({', '.join(self.args)}), got {len(args)}.")
        names = [f"a{i}" for i in range(len(args))]
        columns = [isinstance(a, (list, tuple, pl.Series)) or _is_array(a) for a in args]
        session = get_session()
        call = f"{_ident(self.name)}({', '.join('$' + n if not c else n for n, c in zip(names, columns))})"
        ns: dict[str, Any] = {n: a for n, a, c in zip(names, args, columns) if not c}
        if self.kind == "table":
            return session.run(f"SELECT * FROM {call}", ns)
        if any(columns):
            frame = pl.DataFrame({n: list(a) if not isinstance(a, pl.Series) else a for n, a, c in zip(names, args, columns) if c})
            ns["__mlnb_args"] = frame
            return session.run(f"SELECT {call} AS {_ident(self.name)} FROM __mlnb_args", ns).to_series()
        return session.run(f"SELECT {call} AS r", ns).item()


def _is_array(a: Any) -> bool:
    return type(a).__module__.split(".")[0] in ("numpy", "pyarrow", "pandas") and getattr(a, "ndim", 1) >= 1 and not isinstance(a, (str, bytes))


def _ident(name: str) -> str:
    # Always quoted: a name DuckDB reads as a keyword when bare (semi, left, anti ...) is still a
    # macro name when quoted, and a bare call to it parses (checked when it is created).
    return '"' + name.replace('"', '""') + '"'


# -- the store -----------------------------------------------------------------
def functions_root() -> Path:
    return get_workspace().path("functions", "x", create=False).parent


def check_function_name(name: Any, what: str = "Function names") -> str:
    return check_identifier(name, what)


def _read(name: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``(file key, record)`` of the function ``name``; None when there is none or its file is damaged."""
    hit = _load(name)
    return None if hit is None or isinstance(hit[1], str) else hit  # type: ignore[return-value]


def _load(name: str) -> tuple[tuple[Any, ...], dict[str, Any] | str] | None:
    """``(file key, record)``, or ``(file key, what is wrong with the file)``; None when there is no file."""
    path = functions_root() / f"{name}.json"
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    with _cache_lock:
        hit = _file_cache.get(str(path))
    if hit is not None and hit[0] == key:
        return hit
    try:
        rec: dict[str, Any] | str = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None  # dropped under us
    except OSError as exc:
        rec = f"cannot be read ({exc.strerror or exc})"
    except (ValueError, UnicodeDecodeError) as exc:
        rec = f"is not valid JSON ({exc})"
    else:
        rec = _record_problem(name, rec) or rec
    out = (key, rec)
    with _cache_lock:
        _file_cache[str(path)] = out
    return out


def _record_problem(name: str, rec: Any) -> str | None:
    """What makes ``rec`` not a function record mlnb wrote (a hand edit), or None."""
    if not isinstance(rec, dict):
        return f"holds a JSON {type(rec).__name__}, not an object"
    if rec.get("name") != name:
        return f"names the function {rec.get('name')!r}, not {name!r}"
    args = rec.get("args")
    if not isinstance(args, list) or not all(isinstance(a, str) and a.isidentifier() for a in args):
        return f'has "args" {args!r}: a list of argument names is expected'
    if len(set(args)) != len(args):
        return f'names an argument twice in "args" {args!r}'
    if not isinstance(rec.get("expression"), str) or not rec["expression"].strip():
        return 'has no "expression" (the body, a string)'
    if rec.get("kind", "scalar") not in ("scalar", "table"):
        return f'has "kind" {rec.get("kind")!r}: "scalar" or "table" is expected'
    if not isinstance(rec.get("returns") or "", str) or not isinstance(rec.get("uses") or [], list):
        return 'has a "returns" or "uses" of the wrong type'
    ua = rec.get("uses_args") or {}
    if not isinstance(ua, dict) or not all(isinstance(v, int) for v in ua.values()):
        return 'has a "uses_args" of the wrong type'
    return None


_file_cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | str]] = {}
# (file key, body) -> the Function: the same object while nothing changed, so a session installs it once.
_made: dict[tuple[Any, ...], PersistedFunction] = {}
_cache_lock = threading.Lock()


def names() -> list[str]:
    root = functions_root()
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.json") if p.stem.isidentifier() and p.stem == p.stem.lower())


def persisted_functions() -> list[dict[str, Any]]:
    """Every function persisted in the workspace in use: ``name``, ``args``, ``expression``,
    ``kind``, ``returns``, ``created`` (the listing ``mlnb serve`` and ``SHOW FUNCTIONS`` use).
    A function whose file is damaged is left out (:func:`function_problems` names it)."""
    out = []
    for n in names():
        hit = _read(n)
        if hit is not None:
            rec = hit[1]
            out.append({k: rec.get(k) for k in ("name", "args", "expression", "kind", "returns", "created")})
    return out


def function_problems() -> list[dict[str, str]]:
    """``{"name", "error"}`` for each persisted function whose file is damaged."""
    out = []
    for n in names():
        hit = _load(n)
        if hit is not None and isinstance(hit[1], str):
            out.append({"name": n, "error": _damaged_message(n, hit[1])})
    return out


def _damaged_message(name: str, problem: str) -> str:
    return f"The persisted function {name} cannot be used: its file {functions_root() / (name + '.json')} {problem}."


def _damaged_hint(name: str) -> str:
    return f"Fix the file by hand, or define the function again: CREATE OR REPLACE FUNCTION {name}(...) AS ..., or DROP FUNCTION {name}."


class _SpecialiseOnly:
    """A function as seen by the rewrite of a stored body: its return type is made
    exact (``embed`` → ``FLOAT[d]``), its checks already ran when the body was created."""

    def __init__(self, fn: Any) -> None:
        self.specialise, self.bind_options, self.check = fn.specialise, fn.bind_options, None


def _specialised_lookup(name: str) -> Any:
    fn = registry.lookup(name)
    return None if fn is None or fn.specialise is None else _SpecialiseOnly(fn)


def _body_statement(kind: str, expression: str) -> Statement:
    """The body as a statement of its own (``SELECT <expr>``, or the table query)."""
    text = expression if kind == "table" else "SELECT " + expression
    stmts = parse(text)
    if len(stmts) != 1:
        raise QueryError("A function's body is one expression (or, after AS TABLE, one query): remove the ';'.",
                         statement=expression)
    return stmts[0]


def _rewritten(kind: str, expression: str, lookup: Any) -> tuple[str, tuple[str, ...]]:
    """``(body as DuckDB runs it, names of the functions it calls)``."""
    from ._rewrite import call_edits
    from ._rowexpr import apply_edits

    stmt = _body_statement(kind, expression)
    if stmt.row_exprs:
        raise QueryError("Row expressions ({...}, * EXCLUDING) cannot be part of a function's body.", statement=expression)
    text = apply_edits(stmt.text, call_edits(stmt, lookup))
    if kind != "table":
        text = text[len("SELECT "):]
    return text, tuple(dict.fromkeys(c.name for c in stmt.calls))


def _models_named(kind: str, expression: str) -> tuple[str, ...]:
    """The models the body names in a literal ``model := '...'`` option (``embed(x, model := 'cars')``)."""
    try:
        stmt = _body_statement(kind, expression)
    except Exception:  # noqa: BLE001 - a body that does not parse names none
        return ()
    found = []
    for call in stmt.calls:
        model = (stmt.literal_options(call) or {}).get("model")
        if isinstance(model, str) and model:
            found.append(model)
    return tuple(dict.fromkeys(found))


def _function(rec: dict[str, Any], key: tuple[Any, ...]) -> PersistedFunction | None:
    kind = rec.get("kind", "scalar")
    try:
        body, depends = _rewritten(kind, rec["expression"], _specialised_lookup)
    except Exception:  # noqa: BLE001 - a model it uses is gone: run the body as written, DuckDB says what fails
        body = rec["expression"]
        try:
            depends = tuple(dict.fromkeys(c.name for c in _body_statement(kind, body).calls))
        except Exception:  # noqa: BLE001
            depends = ()
    mkey = (key, body)
    with _cache_lock:
        fn = _made.get(mkey)
    if fn is not None:
        return _checked(fn)
    fn = PersistedFunction(
        name=rec["name"],
        impl=lambda *a: None,
        params=tuple(Param(a, "ANY") for a in rec["args"]),
        returns=rec.get("returns") or "ANY",
        doc=f"{rec['name']}({', '.join(rec['args'])}) AS {'TABLE ' if kind == 'table' else ''}{rec['expression']}",
        kind=kind,
        sql=body if kind == "table" else None,  # a table macro's body (not one computed in Python)
        origin="persisted",
        args=tuple(rec["args"]),
        expression=rec["expression"],
        body=body,
        depends=depends,
        created=rec.get("created", ""),
        uses=tuple(rec.get("uses") or ()),
        uses_args=tuple((str(k), int(v)) for k, v in (rec.get("uses_args") or {}).items()),
        models=_models_named(kind, rec["expression"]),
    )
    with _cache_lock:
        fn = _made.setdefault(mkey, fn)
    return _checked(fn)


_resolving = threading.local()


def _checked(fn: PersistedFunction) -> PersistedFunction:
    """``fn``, or a stand-in that says which function it calls is gone (dropped since it was
    created): a statement calling ``fn`` then fails with that, not with DuckDB's "does not exist"."""
    uses = fn.uses
    if not uses and not fn.models:
        return fn
    stack = getattr(_resolving, "names", None)
    if stack is None:
        stack = _resolving.names = set()
    if fn.name in stack:  # a cycle made by hand-editing files: the install will say so
        return fn
    stack.add(fn.name)
    try:
        gone = [u for u in uses if registry.lookup(u) is None]
        broken = next((registry.lookup(u) for u in uses if getattr(registry.lookup(u), "broken", "")), None)
        reshaped = [(u, n, registry.lookup(u)) for u, n in fn.uses_args]
        reshaped = [(u, n, f) for u, n, f in reshaped if isinstance(f, PersistedFunction) and not f.broken
                    and len(f.args) != n]
    finally:
        stack.discard(fn.name)
    dropped_models = [] if gone or broken is not None or reshaped else [m for m in fn.models if not _model_exists(m)]
    if not gone and broken is None and not reshaped and not dropped_models:
        return fn
    from dataclasses import replace

    if dropped_models:
        why = f"The persisted function {fn.name} uses the model {dropped_models[0]!r}, which no longer exists (it was dropped)."
        what = f"Create the model {dropped_models[0]} again (CREATE MODEL {dropped_models[0]} FROM ...)"
    elif gone:
        why = f"The persisted function {fn.name} calls {gone[0]}, which no longer exists (it was dropped)."
        what = f"Create {gone[0]} again"
    elif broken is not None:
        why = f"The persisted function {fn.name} calls {broken.name}, which cannot be used: {broken.broken}"
        what = f"Create {broken.name} again"
    else:
        u, n, f = reshaped[0]
        why = (f"The persisted function {fn.name} calls {u} with {n} argument(s), but {u} was redefined since: "
               f"{u}({', '.join(f.args)}).")
        what = f"Change {u} back"
    hint = (f"Its body is {fn.expression}. {what}, or redefine this one "
            f"(CREATE OR REPLACE FUNCTION {fn.name}...), or DROP FUNCTION {fn.name}.")
    return replace(fn, broken=why, broken_hint=hint)


def _model_exists(name: str) -> bool:
    """Whether ``embed(..., model := name)`` finds a model (a damaged one counts: using it says what is wrong)."""
    from ..features import _user_models
    from ..features.zoo import _REGISTRY

    if name in _REGISTRY:
        return True
    try:
        return _user_models.lookup(name) is not None
    except MlnbError:
        return True


def dependents(name: str, *, model: bool = False) -> list[str]:
    """The persisted functions whose body calls the function or head ``name`` (``model=True``: names
    the model ``name``): what a DROP of it would break."""
    out = []
    for n in names():
        if n == name and not model:
            continue
        fn = _resolver.lookup(n)
        if isinstance(fn, PersistedFunction) and (name in fn.models if model else any(d.lower() == name.lower() for d in (*fn.depends, *fn.uses))):
            out.append(n)
    return out


def warn_dependents(name: str, what: str, *, model: bool = False) -> None:
    """After a DROP: one warning naming the persisted functions that use what was dropped."""
    users = dependents(name, model=model)
    if users:
        import warnings

        listed = ", ".join(users[:5]) + (" ..." if len(users) > 5 else "")
        warnings.warn(
            f"Dropped {what} {name}, which persisted function{'s' if len(users) > 1 else ''} {listed} "
            f"use{'' if len(users) > 1 else 's'}: {'they fail' if len(users) > 1 else 'it fails'} until {name} is "
            f"created again (or DROP FUNCTION {users[0]}).",
            stacklevel=3,
        )


def _damaged(name: str, problem: str) -> PersistedFunction:
    """A stand-in for a function whose file is damaged: listed (SHOW FUNCTIONS), and any use of it
    says which file is wrong."""
    return PersistedFunction(
        name=name, impl=lambda *a: None, params=(), returns="ANY", doc=f"Damaged: its file {problem}.",
        kind="scalar", origin="persisted", broken=_damaged_message(name, problem), broken_hint=_damaged_hint(name),
    )


class PersistedResolver:
    """The registry's source of persisted functions: those of the workspace in use."""

    def lookup(self, name: str) -> Function | None:
        if not isinstance(name, str) or not name.isidentifier():
            return None
        name = name.lower()  # SQL names are case-insensitive: stored in lower case
        hit = _load(name)
        if hit is None:
            return None
        if isinstance(hit[1], str):
            return _damaged(name, hit[1])
        return _function(hit[1], hit[0])

    def functions(self) -> list[Function]:
        out = []
        for n in names():
            fn = self.lookup(n)
            if fn is not None:
                out.append(fn)
        return out


_resolver = PersistedResolver()
registry.add_resolver(_resolver)


# -- creating and dropping ---------------------------------------------------------
def _clash(name: str, con: Any) -> str | None:
    """Why ``name`` cannot be a persisted function (a built-in, a head, DuckDB's own), or None."""
    from .. import _ensure_builtins

    _ensure_builtins()
    if registry.is_static(name):
        return f"{name!r} is one of mlnb's built-in functions"
    fn = registry.lookup(name)
    if fn is not None and getattr(fn, "origin", "") != "persisted":
        return f"{name!r} is the function of classifier {name.removesuffix('_proba').split('@')[0]!r}"
    with contextlib.suppress(Exception):
        from ..heads import store

        if store.versions(name):
            return f"{name!r} is a classifier"
    rows = con.execute(
        "SELECT function_type FROM duckdb_functions() WHERE lower(function_name) = lower(?) AND internal LIMIT 1", [name]
    ).fetchall()
    if rows:
        return f"{name!r} is one of DuckDB's {rows[0][0]} functions"
    return None


@functools.lru_cache(maxsize=1)
def _duckdb_builtins() -> dict[str, str]:
    """DuckDB's own function names (lower case) → their type (scalar, aggregate, table ...)."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute("SELECT DISTINCT lower(function_name), function_type FROM duckdb_functions() WHERE internal").fetchall()
    finally:
        con.close()
    return dict(rows)


def builtin_clash(name: str) -> str | None:
    """Why SQL's ``name(...)`` already means something (one of mlnb's or DuckDB's functions), or None:
    a head or persisted function of that name would hide it in every query of the workspace."""
    from .. import _ensure_builtins

    _ensure_builtins()
    if registry.is_static(name) or registry.is_static(name.lower()):
        return f"{name!r} is one of mlnb's built-in functions"
    kind = _duckdb_builtins().get(name.lower())
    return f"{name!r} is one of DuckDB's {kind} functions" if kind else None


def check_callable_name(name: str, example: str) -> str:
    """``name`` if a call ``name(...)`` parses in DuckDB; otherwise an error saying it is a SQL keyword
    (``select``, ``real``, ``time`` ...) and suggesting ``example``. The one check of every name mlnb
    makes callable in SQL: persisted functions and classifier or regressor heads."""
    if not _parses_as_call(name):
        raise MlnbError(
            f"{name!r} is a SQL keyword, so a call {name}(...) would not parse: choose another name (e.g. {example})."
        )
    return name


@functools.lru_cache(maxsize=4096)
def _parses_as_call(name: str) -> bool:
    """Tried on a scratch connection exactly as a function of that name is created and called."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP MACRO {_ident(name)}(x) AS x")
        con.execute(f"SELECT {name}(1)").fetchall()
    except duckdb.Error:
        return False
    finally:
        con.close()
    return True


def _check_words(name: str, args: Sequence[str]) -> None:
    """Refuse a name or argument DuckDB reads as a keyword (``select``, ``time``, ``left`` ...),
    tried on a scratch connection exactly as the function will be created and called."""
    import duckdb

    check_callable_name(name, f"{name}_fn")
    con = duckdb.connect()
    try:
        for a in args:
            try:
                con.execute(f"CREATE OR REPLACE TEMP MACRO f({a}) AS {a}")
                con.execute("SELECT f(1)").fetchall()
            except duckdb.Error:
                raise MlnbError(f"Argument {a!r} is a SQL keyword: choose another name (e.g. {a}_).") from None
    finally:
        con.close()


def _check_body(session: Any, name: str, args: Sequence[str], kind: str, expression: str) -> tuple[str, str, list[str]]:
    """Parse, rewrite and bind the body; ``(body, return type, mlnb functions it calls)``.
    Raises and writes nothing on a fault."""
    from . import _errors

    stmt = _body_statement(kind, expression)
    if stmt.params:
        p = stmt.params[0].text
        raise QueryError(
            f"A persisted function's body cannot use the parameter {p}: it is a variable of this notebook, and the "
            f"function outlives it. Make it an argument ({name}({', '.join([*args, p[1:]])})) or write its value.",
            statement=expression, position=stmt.params[0].start,
        )
    body, depends = _rewritten(kind, expression, registry.lookup)  # runs each call's check (a head's backbone)
    _check_cycle(name, depends)
    uses = [d for d in depends if not registry.is_static(d) and registry.lookup(d) is not None]
    for d in uses:
        broken = getattr(registry.lookup(d), "broken", "")
        if broken:
            raise QueryError(f"The body of function {name} calls {d}, which cannot be used: {broken}", statement=expression)
    # The functions the body calls, installed as a statement calling them would have them.
    session._resolve_functions(stmt)
    probe = "__mlnb_check_" + name
    table = "TABLE " if kind == "table" else ""
    nulls = ", ".join("NULL" for _ in args)
    try:
        session.con.execute(f"CREATE OR REPLACE TEMP MACRO {probe}({', '.join(args)}) AS {table}{body}")
        if kind == "table":
            rows = session.con.execute(f"DESCRIBE SELECT * FROM {probe}({nulls})").fetchall()
            returns = "TABLE(" + ", ".join(f"{r[0]} {r[1]}" for r in rows) + ")"
        else:
            returns = str(session.con.execute(f"DESCRIBE SELECT {probe}({nulls}) AS r").fetchall()[0][1])
            if returns == '"NULL"':
                returns = "ANY"
    except Exception as exc:  # noqa: BLE001 - DuckDB's parser or binder error
        text = str(exc)
        if "Could not choose a best candidate" in text or "No function matches" in text:
            returns = "ANY"  # a type only the real arguments decide (NULL fits several overloads)
        elif "NULL" in text.split("\n")[0] and args:
            # A function of the body that refuses a NULL argument (read_parquet(p): "cannot take NULL list"):
            # the body parsed and its macro was made; what it returns is known from real arguments only.
            returns = "TABLE" if kind == "table" else "ANY"
        else:
            err = _errors.from_engine(exc, statement=stmt, executed=body, frames=())
            raise QueryError(f"The body of function {name} does not work: {err.message}", statement=expression,
                             hint=err.hint) from None
    finally:
        with contextlib.suppress(Exception):
            session.con.execute(f"DROP MACRO IF EXISTS {probe}")
        with contextlib.suppress(Exception):
            session.con.execute(f"DROP MACRO TABLE IF EXISTS {probe}")
    return body, returns, uses


_scratch: Any = None
_scratch_lock = threading.Lock()


def _check_in_a_new_session(session: Any, name: str, args: Sequence[str], kind: str,
                            expression: str) -> tuple[str, str, list[str]]:
    """:func:`_check_body` on a session of its own, as a new kernel (or ``mlnb serve``) would run
    the function: a body that reads a table or calls a macro made in this session only fails now,
    saying so, rather than in the next kernel."""
    global _scratch
    from ._session import Session

    with _scratch_lock:
        if _scratch is None:
            import atexit

            _scratch = Session()
            atexit.register(_scratch.close)
        try:
            with _scratch._lock:
                return _check_body(_scratch, name, args, kind, expression)
        except QueryError as exc:
            first = exc
    try:
        _check_body(session, name, args, kind, expression)
    except Exception:  # noqa: BLE001 - it fails here too: the first error says why
        raise first from None
    reason = first.message.split(": ", 1)[-1]
    raise QueryError(
        f"The body of function {name} uses something that exists only in this session ({reason}): a persisted "
        "function runs in later kernels and in mlnb serve, where it would fail.",
        statement=expression,
        hint="Persist what it uses: CREATE FUNCTION for a macro, a file it reads (read_parquet('prices.parquet')) "
        "for a table; or keep the function for this session with CREATE MACRO.",
    ) from None


def _check_cycle(name: str, depends: Sequence[str]) -> None:
    seen: set[str] = set()
    todo = [(d, (name, d)) for d in depends]
    while todo:
        dep, path = todo.pop()
        if dep == name:
            raise QueryError(f"Function {name} would call itself ({' -> '.join(path)}): a persisted function cannot be recursive.")
        if dep in seen:
            continue
        seen.add(dep)
        fn = registry.lookup(dep)
        for d in getattr(fn, "depends", ()):
            todo.append((d, (*path, d)))


def _args(args: Sequence[str]) -> tuple[str, ...]:
    out = tuple(args)
    for a in out:
        check_function_name(a, "Argument names")
    dup = sorted({a for a in out if out.count(a) > 1})
    if dup:
        raise MlnbError(f"Argument {dup[0]!r} is named twice.")
    return out


def create_function(name: str, args: Sequence[str], expression: str, *, replace: bool = False, table: bool = False,
                    session: Any = None) -> Function:
    """Persist ``name(args) AS expression`` in the workspace; it is callable in SQL from now on,
    here and in every later process that uses the workspace (``CREATE FUNCTION``).

    ``table=True`` makes a table function: ``expression`` is a query (``AS TABLE``).
    The body is checked first; on any fault nothing is written (and with
    ``replace=True`` the old definition stays).

    Examples
    --------
    >>> import mlnb
    >>> from mlnb.sql import create_function
    >>> create_function("double_it", ["x"], "2 * x")("21")  # doctest: +SKIP
    42
    """
    from ._session import get_session

    name = check_function_name(name).lower()  # as DuckDB reads an unquoted name
    args = _args(args)
    expression = (expression or "").strip().rstrip(";").rstrip()
    if not expression:
        raise MlnbError(f"Function {name} needs a body: CREATE FUNCTION {name}(...) AS <expression>.")
    _check_words(name, args)
    kind = "table" if table else "scalar"
    session = session or get_session()
    with session._lock:
        why = _clash(name, session.con)
        if why:
            raise MlnbError(f"Cannot create function {name}: {why}. Choose another name.")
        ws = get_workspace()
        with ws.lock(f"function-{name}"):
            if not replace and _load(name) is not None:
                raise MlnbError(f"A function named {name!r} already exists: use CREATE OR REPLACE FUNCTION (replace=True).")
            _body, returns, uses = _check_in_a_new_session(session, name, args, kind, expression)
            from .._version import __version__

            persisted_args = {u: len(f.args) for u in uses if isinstance(f := registry.lookup(u), PersistedFunction)}
            rec = {
                "name": name, "args": list(args), "expression": expression, "kind": kind, "returns": returns,
                "uses": uses, "uses_args": persisted_args, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "mlnb_version": __version__,
            }
            path = functions_root() / f"{name}.json"
            try:
                old = path.read_bytes()
            except OSError:
                old = None
            ws.write_json(f"functions/{name}.json", rec)
            try:
                fn = _resolver.lookup(name)
                assert fn is not None
                session._resolve_functions(_body_statement(kind, expression))  # what it calls, first
                session._install(fn)
            except BaseException:
                # What was checked did not install (a bug, not the user's): put back what was there.
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    from ..workspace import atomic_write_bytes

                    atomic_write_bytes(path, old)
                raise
    return fn


def drop_function(name: str, *, missing_ok: bool = False, session: Any = None) -> bool:
    """Remove the persisted function ``name`` from the workspace (``DROP FUNCTION``)."""
    name = check_function_name(name).lower()  # as DuckDB reads an unquoted name
    path = functions_root() / f"{name}.json"
    with get_workspace().lock(f"function-{name}"):
        try:
            path.unlink()
        except FileNotFoundError:
            if missing_ok:
                return False
            close = difflib.get_close_matches(name, names(), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ModelNotFoundError(f"No persisted function {name!r}.{hint} SHOW FUNCTIONS lists them.") from None
    if session is not None:
        with session._lock:
            session._uninstall(name)
    warn_dependents(name, "function")
    return True
