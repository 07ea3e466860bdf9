"""The Ray engine: the local engine's work spread over a Ray cluster by a pool of actors.

A job takes a frame and its image column and writes the frame back, with a
features column (and one column per head scorer), as Parquet shards:

    <job folder>/job.json             what was asked (model, layer, input digest, shard size)
    <job folder>/part-00000.parquet   rows [0, shard_size) of the input, in order
    <job folder>/part-00001.parquet   ...

Shards are the unit of work and of failure. They go, two at a time per
actor, to a pool of Ray actors: one actor per GPU, or CPU actors where there
is none; each actor loads the model once and runs the *local* engine
(:func:`~mlnb.features.engine.embed_images`) on its shard, so images are read,
cached and reported exactly as on one machine. An actor writes its shard to a
temporary name and renames it into place, so a shard on disk is always whole.
A worker that dies is restarted by Ray and its shard redone; the rename makes
a redone shard replace, never duplicate, rows. Running the same job again
skips the shards already on disk.

The pool outlives the job: the next job with the same model, layer, device,
precision and workspace reuses its actors (model loaded) and starts at once,
instead of paying actor start-up and model load again (about 7 s on 2 CPUs).
Another model or setting replaces the pool; it is closed when Python exits
(a kernel shutdown) and forgotten when Ray is shut down.

Nothing here imports Ray until a job runs.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._report import capturing, report_failure
from ..config import DEFAULT_MODEL
from ..exceptions import Interrupted, MissingDependencyError, MlnbError

PART = "part-{:05d}.parquet"
CONNECT_TIMEOUT_S = 3.0
_JOB_FORMAT = 1


# -- the cluster -----------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "The Ray engine") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    default = 10001 if address.startswith("ray://") else 6379
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host:
        return rest, default
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise MlnbError(f"Cannot read the Ray address {address!r}: write host:port or ray://host:port.") from None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a clear error, within ``timeout`` seconds, if nothing listens at ``address``."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        timed_out = isinstance(exc, TimeoutError | socket.timeout)
        why = f"no answer in {timeout:g} s" if timed_out else (exc.strerror or str(exc)).lower()
        raise MlnbError(
            f"No Ray cluster reachable at {address!r} ({why}). Check the address "
            "and that the cluster is up (`ray status` on its head node), or set mlnb.config.ray_address = None "
            "to start a local Ray."
        ) from None


def check_is_ray(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a clear error if what answers at ``address`` is not a Ray head node (GCS).

    ``ray.init`` itself keeps retrying for tens of seconds; this asks the GCS
    for its cluster id once, in a thread that is given ``timeout`` seconds.
    """
    try:
        from ray._raylet import GcsClient  # Ray's own client: the one ray.init uses
    except ImportError:  # a Ray without it: ray.init will say
        return
    import threading

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            GcsClient(address=address)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    if not outcome:
        raise MlnbError(f"No answer from a Ray cluster at {address!r} within {timeout:g} s: is it the head node's GCS port (6379 by default)?")
    if outcome[0] is not None and _is_ray_refusal(outcome[0]):
        return  # a Ray GCS that wants credentials: ray.init brings them
    if outcome[0] is not None:
        first = str(outcome[0]).strip().splitlines()[0] if str(outcome[0]).strip() else type(outcome[0]).__name__
        raise MlnbError(
            f"Something answers at {address!r}, but not a Ray cluster ({first}). Use the head node's GCS address "
            "(host:6379, as `ray start --head` prints it) or ray://host:10001 for Ray Client."
        )


def _is_ray_refusal(exc: BaseException) -> bool:
    """An answer only a Ray GCS gives: it refused this probe's (missing) authentication token."""
    text = str(exc)
    return "AuthToken" in text or "UNAUTHENTICATED" in text.upper()


def connect(address: str | None = None) -> Any:
    """Ray, initialised: the running one, the cluster at ``address`` (or
    ``mlnb.config.ray_address``), or a local one started here."""
    from ..config import config

    running = sys.modules.get("ray")
    if running is not None and running.is_initialized():
        return running
    address = address if address is not None else config.ray_address
    _precheck(address)
    with _CONNECT_LOCK:  # DuckDB may call from several threads at once
        return _connect(address)


_CONNECT_LOCK = threading.Lock()


def _precheck(address: str | None) -> None:
    """Before importing Ray (seconds) or loading a model: a wrong address fails at once."""
    running = sys.modules.get("ray")
    if address and address not in ("auto", "local") and not (running is not None and running.is_initialized()):
        check_reachable(address)


def _connect(address: str | None) -> Any:
    running = sys.modules.get("ray")
    if running is not None and running.is_initialized():
        return running
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    ray = _import_ray()
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        check_is_ray(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise MlnbError(f"Could not start {where}: {first}") from None
    return ray


# -- storage ---------------------------------------------------------------------
def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return fs.FileSystem.from_uri(uri)


def _finished_shards(filesystem: Any, folder: str) -> set[int]:
    from pyarrow import fs

    done: set[int] = set()
    for info in filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True)):
        name = info.base_name
        if info.type == fs.FileType.File and name.startswith("part-") and name.endswith(".parquet"):
            try:
                done.add(int(name[5:-8]))
            except ValueError:
                continue
    return done


def _write_bytes(filesystem: Any, path: str, data: bytes) -> None:
    """Whole or absent: local files through the workspace's atomic write (temp, fsync, rename);
    other stores by writing a temporary object and moving it (an object PUT is atomic anyway)."""
    from pyarrow import fs

    if isinstance(filesystem, fs.LocalFileSystem):
        from pathlib import Path

        from ..workspace import atomic_write_bytes

        atomic_write_bytes(Path(path), data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with filesystem.open_output_stream(tmp) as f:
        f.write(data)
    filesystem.move(tmp, path)


def _write_shard(filesystem: Any, path: str, table: Any) -> None:
    """One shard as a Parquet file, whole or absent."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    _write_bytes(filesystem, path, sink.getvalue())


# -- the worker ------------------------------------------------------------------
class ShardWorker:
    """A Ray actor: one warm model, the local engine, one shard per call."""

    def __init__(self, *, model: str, layer: str, settings: dict[str, Any], spec: Any = None) -> None:
        from ..config import config
        from .engine import get_loaded
        from .zoo import add_spec

        for key in ("device", "precision", "batch_size"):
            setattr(config, key, settings[key])
        # The driver's workspace (and so its embedding cache) where this node sees it; else one per node.
        ws = settings["workspace"]
        config.workspace = ws if os.path.isdir(ws) else os.path.join(tempfile.gettempdir(), "mlnb-ray-workspace")
        if spec is not None:
            add_spec(spec, replace=True)
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # the actor's share of the node, not every core of it
            torch.set_num_threads(max(1, int(cpus)))
        self.model, self.layer = model, layer
        self.loaded = get_loaded(model)  # once per actor: every shard of every job it runs reuses it

    def run_shard(
        self, shard: int, data: bytes, column: str, name: str, folder: str, scorers: dict[str, Callable[[Any], Any]]
    ) -> tuple[int, int, list[tuple[str, str]], str]:
        """Embed one shard and write it: ``(shard, rows, failures, cache namespace)``."""
        import polars as pl

        from ..config import using_engine
        from .engine import embed_images, features_series

        df = pl.read_ipc(io.BytesIO(data))
        with capturing() as failures, using_engine("local"):
            feats, ok = embed_images(df.get_column(column).to_list(), model=self.model, layer=self.layer, progress=False)
        feature_col = features_series(name, feats, ok)
        df = df.with_columns(feature_col)
        for col, scorer in scorers.items():
            df = df.with_columns(pl.Series(col, scorer(feature_col)))
        filesystem, folder = _filesystem(folder)
        _write_shard(filesystem, f"{folder}/{PART.format(shard)}", df.to_arrow())
        return shard, df.height, failures, self.loaded.namespace(self.layer)


# -- the actor pool kept between jobs ------------------------------------------------
@dataclass
class _Pool:
    key: tuple[Any, ...]
    cluster: str
    actors: list[Any]
    ask: dict[str, Any]
    spec: Any  # held so that id(spec) in the key stays this spec's

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a._actor_id.hex() for a in self.actors)


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _cluster_id(ray: Any) -> str:
    """Which Ray this process is connected to: a new ``ray.init`` after ``ray.shutdown`` is another."""
    ctx = ray.get_runtime_context()
    return f"{ctx.gcs_address}|{ctx.get_job_id()}"


def _pool_for(ray: Any, key: tuple[Any, ...], size: int, ask: dict[str, Any], make: Callable[[], Any], spec: Any) -> tuple[_Pool, bool]:
    """The kept pool if it fits (same key, cluster, resources and at least ``size`` actors), else a new one.
    Returns ``(pool, reused)``."""
    global _POOL
    cluster = _cluster_id(ray)
    with _POOL_LOCK:
        pool = _POOL
        if pool is not None and pool.key == key and pool.cluster == cluster and pool.ask == ask and len(pool.actors) >= size:
            return pool, True
        _close(pool, ray if pool is not None and pool.cluster == cluster else None)  # frees its CPUs/GPUs for the new one
        _POOL = _Pool(key, cluster, [make() for _ in range(size)], dict(ask), spec)
        return _POOL, False


def _close(pool: _Pool | None, ray: Any) -> None:
    if pool is None or ray is None:
        return
    for actor in pool.actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def close_pool() -> None:
    """Stop the kept actors (their models are unloaded). Runs when Python exits; a later job starts a new pool."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    ray = sys.modules.get("ray")
    if pool is not None and ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            if _cluster_id(ray) == pool.cluster:
                _close(pool, ray)


atexit.register(close_pool)


# -- the driver ------------------------------------------------------------------
@dataclass
class RayJob:
    """A finished Ray job: its Parquet shards and what this call did.

    ``scan()`` gives the rows (input order) as a Polars LazyFrame; ``%%mlsql``
    can also read them with ``read_parquet('<path>/part-*.parquet')``.
    """

    path: str
    rows: int
    shards: int
    computed: int
    reused: int
    workers: int
    seconds: float
    failures: int
    namespaces: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()  # the Ray actors that ran it: the same ones job after job while the pool is kept

    @property
    def files(self) -> list[str]:
        return [f"{self.path}/{PART.format(i)}" for i in range(self.shards)]

    def scan(self) -> Any:
        import polars as pl

        if not self.shards:
            raise MlnbError("This Ray job had no rows.")
        return pl.scan_parquet(self.files)

    def __repr__(self) -> str:
        rate = f", {self.rows / self.seconds:.1f} rows/s" if self.computed and self.seconds else ""
        return (
            f"RayJob({self.path!r}: {self.rows} rows in {self.shards} shards; {self.computed} computed by "
            f"{self.workers} worker(s), {self.reused} already done{rate})"
        )


def _digest(df: Any) -> str:
    sink = io.BytesIO()
    df.write_ipc(sink, compression="uncompressed")
    return hashlib.sha1(sink.getvalue()).hexdigest()


def _plan_workers(ray: Any, wanted: int | None, shards: int) -> tuple[int, dict[str, Any]]:
    """How many actors, and what each asks of Ray: one per GPU, else CPU actors."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    workers = wanted or (gpus if gpus else max(1, cpus // 4))
    workers = min(workers, gpus or cpus)  # an actor pool that cannot be placed would wait forever
    workers = max(1, min(workers, shards))
    ask: dict[str, Any] = {"num_cpus": max(1, cpus // workers) if not gpus else max(1, min(4, cpus // max(gpus, 1)))}
    if gpus:
        ask["num_gpus"] = 1
    return workers, ask


def run_job(
    frame: Any,
    column: str,
    *,
    model: str = DEFAULT_MODEL,
    layer: str = "pool",
    name: str = "features",
    scorers: dict[str, Callable[[Any], Any]] | None = None,
    output: str | None = None,
    shard_size: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> RayJob:
    """Embed ``frame[column]`` on Ray; write the frame plus features as Parquet shards.

    ``output`` is the job's folder or URI (default: a folder per job under
    ``mlnb.config.ray_output`` or ``<workspace>/ray``). ``scorers`` maps a new
    column name to a function of the features column (head scoring on the
    workers). ``on_shard(done, total)`` is called as shards finish.
    """
    import polars as pl

    from .._frames import to_polars
    from ..config import config
    from ..workspace import get_workspace
    from .zoo import get_spec

    df = to_polars(frame)
    if column not in df.columns:
        raise MlnbError(f"No column {column!r} in the frame. Columns: {', '.join(df.columns)}")
    if df.schema[column] not in (pl.String, pl.Binary):
        raise MlnbError(
            f"The Ray engine reads images from paths, URLs, archive members or bytes; column {column!r} is "
            f"{df.schema[column]}. Use the local engine for in-memory images."
        )
    if name in df.columns:
        raise MlnbError(f"The frame already has a column {name!r}: pass another name.")
    _precheck(config.ray_address)
    spec = get_spec(model)
    scorers = dict(scorers or {})
    ident = {
        "format": _JOB_FORMAT,
        "model": model,
        "layer": layer,
        "name": name,
        "column": column,
        "scorers": sorted(scorers),
        "precision": config.precision,
        "preprocessing": spec.preprocessing_id,
        "input": _digest(df),
        "rows": df.height,
    }
    job_id = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    if output is None:
        base = config.ray_output or str(get_workspace().root / "ray")
        output = f"{base.rstrip('/')}/{model}-{layer}-{job_id}"
    filesystem, folder = _filesystem(output)
    filesystem.create_dir(folder, recursive=True)
    meta_path = f"{folder}/job.json"
    try:
        with filesystem.open_input_stream(meta_path) as f:
            meta = json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        meta = None
    if meta is not None and meta.get("id") != job_id:
        raise MlnbError(f"{output} holds another job's results (other input or settings): give another output, or delete it.")

    ray = connect()
    n = df.height
    if meta is None:
        # About eight shards a worker: even load, and a progress bar that moves.
        k = _plan_workers(ray, workers or config.ray_workers, 1 << 30)[0]
        shard_size = shard_size or max(16, min(2048, math.ceil(n / (8 * k))))
        meta = {"id": job_id, "shard_size": shard_size, **ident}
        _write_bytes(filesystem, meta_path, json.dumps(meta, indent=1).encode())
    shard_size = int(meta["shard_size"])  # a resumed job keeps its shards
    shards = math.ceil(n / shard_size) if n else 0
    done = {i for i in _finished_shards(filesystem, folder) if i < shards}
    todo = [i for i in range(shards) if i not in done]

    t0 = time.perf_counter()
    nworkers, failures = 0, 0
    actor_ids: tuple[str, ...] = ()
    namespaces: set[str] = set()
    if todo:
        nworkers, ask = _plan_workers(ray, workers or config.ray_workers, len(todo))
        settings = {
            "device": config.device,
            "precision": config.precision,
            "batch_size": config.batch_size,
            "workspace": str(get_workspace().root),
        }
        user_spec = spec if spec.is_user_model else None
        key = (model, layer, tuple(sorted(settings.items())), spec.preprocessing_id, id(user_spec))
        remote = ray.remote(ShardWorker).options(max_restarts=-1, max_task_retries=3, **ask)
        pool, _reused = _pool_for(
            ray, key, nworkers, ask, lambda: remote.remote(model=model, layer=layer, settings=settings, spec=user_spec), user_spec
        )
        actors = pool.actors[:nworkers]
        actor_ids = pool.ids[:nworkers]
        where_to = output if "://" in output else folder
        items = []
        for i in todo:
            sink = io.BytesIO()
            df.slice(i * shard_size, shard_size).write_ipc(sink)
            items.append((i, sink.getvalue()))
        bar = None
        if progress is not False:
            from tqdm.auto import tqdm

            where = "GPU" if "num_gpus" in ask else "CPU"
            already = sum(min(shard_size, n - i * shard_size) for i in done)
            bar = tqdm(total=n, initial=already, unit="img",
                       desc=f"Ray: {nworkers} {where} worker(s)", smoothing=0.1)
        finished = len(done)
        queue = list(reversed(items))
        running: dict[Any, Any] = {}  # task -> its actor

        def feed(actor: Any) -> None:
            if queue:
                shard, data = queue.pop()
                running[actor.run_shard.remote(shard, data, column, name, where_to, scorers)] = actor

        try:
            for actor in actors:  # two shards an actor: the next one waits in its queue, not on a round trip
                feed(actor)
                feed(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor = running.pop(ready[0])
                _shard, rows, fails, namespace = ray.get(ready[0])
                feed(actor)
                namespaces.add(namespace)
                for src, reason in fails:
                    report_failure(src, reason)
                    failures += 1
                finished += 1
                if bar is not None:
                    bar.update(int(rows))
                if on_shard is not None:
                    on_shard(finished, shards)
        except KeyboardInterrupt:
            kept = len(_finished_shards(filesystem, folder))
            raise Interrupted(
                f"interrupted after {kept} of {shards} shards; they are saved in {output}: run the same call again to finish"
            ) from None
        except MlnbError:
            raise
        except Exception as exc:  # noqa: BLE001 - a Ray failure, made short
            text = str(exc).strip().splitlines()
            raise MlnbError(f"The Ray job failed: {text[-1] if text else type(exc).__name__}. Finished shards are kept in {output}.") from None
        finally:
            for task in running:  # no new shards start after an interrupt or a failure
                with contextlib.suppress(Exception):
                    ray.cancel(task)
            if bar is not None:
                bar.close()

    have = _finished_shards(filesystem, folder)
    missing = [i for i in range(shards) if i not in have]
    if missing:
        raise MlnbError(f"The Ray job finished without shards {missing[:5]}: run it again to redo them.")
    return RayJob(
        path=output.rstrip("/") if "://" in output else folder,
        rows=n,
        shards=shards,
        computed=len(todo),
        reused=len(done),
        workers=nworkers,
        seconds=time.perf_counter() - t0,
        failures=failures,
        namespaces=tuple(sorted(namespaces)),
        actors=actor_ids,
    )


@contextlib.contextmanager
def statement_on_ray(dry_run: Callable[[], bool]) -> Iterator[bool]:
    """A SQL statement that calls ``embed``/``imagenet_labels``, on the Ray engine.

    DuckDB calls a function once per 2,048-row chunk, from several threads; a Ray
    job per chunk would pay a job's start-up cost each time. So the statement is
    first dry-run with the functions only gathering the images that miss the
    cache (no model runs, they return NULL); those go to Ray as one job; the real
    run then finds every feature computed. (The ``offload`` of those functions.)
    """
    from ..config import current_engine, using_engine
    from .engine import features_given, gathering

    if current_engine() != "ray":
        yield False
        return
    with gathering() as wanted:
        if not dry_run():
            yield False  # no safe dry run: each chunk goes to Ray as it comes
            return
    with contextlib.ExitStack() as stack:
        for (model, layer), todo in wanted.items():
            keys = list(todo)
            feats, ok = embed_sources([todo[k] for k in keys], model=model, layer=layer, keys=keys)
            stack.enter_context(features_given(model, layer, {k: feats[i] for i, k in enumerate(keys) if ok[i]}))
        # What the dry run did not gather (images that failed on Ray) is retried here, and fails the same way.
        stack.enter_context(using_engine("local"))
        yield True


def embed_sources(
    images: Sequence[Any],
    *,
    model: str,
    layer: str,
    progress: bool | None = None,
    keys: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``embed_images`` on Ray: ``(features[N, D], ok[N])`` for paths, URLs or bytes.

    Features come back from the job's shards; where the driver's cache uses
    the same precision as the workers, they are also added to it.
    """
    import polars as pl

    from .cache import get_cache
    from .engine import cache_namespace, feature_dim
    from .zoo import get_spec

    dim = feature_dim(model, layer)
    n = len(images)
    feats = np.full((n, dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    kinds = {type(im) for im in images if im is not None}
    if kinds - {str, bytes}:
        bad = sorted(k.__name__ for k in kinds - {str, bytes})
        raise MlnbError(
            f"The Ray engine reads images from paths, URLs, archive members or bytes, not {', '.join(bad)}: "
            "use engine='local' for in-memory images."
        )
    namespaces: set[str] = set()
    for kind in (str, bytes):
        rows = [i for i, im in enumerate(images) if isinstance(im, kind)]
        if not rows:
            continue
        frame = pl.DataFrame({"image": [images[i] for i in rows]}, schema={"image": pl.String if kind is str else pl.Binary})
        job = run_job(frame, "image", model=model, layer=layer, progress=progress)
        col = job.scan().select("features").collect().get_column("features")
        idx = np.asarray(rows)
        feats[idx] = col.to_numpy().reshape(len(rows), dim)  # NULL rows come out as NaN
        ok[idx] = col.is_not_null().to_numpy()
        namespaces |= set(job.namespaces)
    ns = cache_namespace(get_spec(model), layer)
    # Only where the workers computed what this machine would (same model, layer and precision).
    if keys is not None and namespaces == {ns}:
        _remember(get_cache(), ns, keys, feats, ok)
    return feats, ok


def _remember(cache: Any, ns: str, keys: Sequence[Any], feats: np.ndarray, ok: np.ndarray) -> None:
    """Add results to the driver's cache (a no-op for a local Ray, whose workers share it)."""
    wanted = [(k, i) for i, k in enumerate(keys) if isinstance(k, str) and ok[i]]
    if not wanted:
        return
    new = set(cache.missing(ns, [k for k, _ in wanted]))
    cache.put_many(ns, [(k, feats[i]) for k, i in wanted if k in new])
