"""Hyperparameter search for classifier and regressor heads: a grid or random trials, each cross-validated.

::

    CREATE [OR REPLACE] CLASSIFIER digit USING logistic WITH (C = [0.01, 0.1, 1, 10]) AS SELECT ...
    CREATE CLASSIFIER digit USING mlp
        WITH (search = 'random', trials = 20, alpha = [1e-5, 1e-1], hidden = [64, 512], seed = 1) AS SELECT ...
    SELECT * FROM trials('digit')            -- every trial of the latest version ('digit@2': of version 2)
    CREATE REGRESSOR age_of USING gbdt WITH (learning_rate = [0.03, 0.1, 0.3]) AS SELECT ...  -- best by rmse

How an option is read
---------------------
* **Grid** (the default when an option is a list): each list is the values to try; several lists
  make every combination (at most :data:`MAX_TRIALS`). Options given one value are fixed.
* **Random** (``search = 'random'``, ``trials = N``, default 10; ``seed = S``, default 0):
  a list of **two numbers** is a range, both ends included: whole numbers for an option that
  takes whole numbers (``k``, ``hidden``), log-uniform for a positive scale option (:data:`LOG_SCALE`:
  ``C``, ``alpha``, ``lr``, ``weight_decay`` ...), uniform otherwise. Any other list (strings,
  booleans, three or more numbers) is a set of choices, drawn uniformly. Trials that draw the
  same values are drawn again.
* ``metric = 'accuracy'`` (default), ``'macro_f1'`` or ``'log_loss'`` (lower is better) picks the best
  trial: its mean over the folds, ties going to the lower log-loss, then to the earlier trial. A
  regressor's search picks by ``'rmse'`` (default), ``'mae'`` (both lower is better) or ``'r2'``,
  ties going to the lower RMSE.

Every value is checked with the algorithm's option rules (:func:`~mlnb.heads.algorithms.check_options`)
and against the data (:func:`~mlnb.heads.algorithms.check_data`) before the first trial trains: a bad
value, an unknown option, an empty list or too many combinations is an error that names them.

Every trial is cross-validated with the statement's folds (by default 5, fewer when a class has fewer
rows, at least 2). The best trial's options are trained again on all rows and saved as the new version;
its ``meta.json`` keeps the search (method, space, metric, every trial), which is what ``trials('name')``
reads, so the trials stay with the head in every later kernel. A search that fails keeps the old head
(``OR REPLACE`` included): nothing is saved before the last trial has run.

MLflow
------
When ``mlflow`` (or ``mlflow-skinny``) is importable and ``mlnb.config.mlflow`` is ``"search"`` (the
default) or ``"all"``, a search is logged to MLflow's tracking URI (``MLFLOW_TRACKING_URI``, or what
``mlflow.set_tracking_uri`` set, else MLflow's default) and experiment (``MLFLOW_EXPERIMENT_NAME`` or
``mlflow.set_experiment``): a parent run with the search's settings and the best trial's metrics, one
child run per trial (its options as params, its mean and std metrics), and, once saved, the head's
files as artifacts (``head/``) and its ``name@version`` as the tag ``mlnb.head``. With ``"all"``, a
head trained without a search is logged as one run too; ``"off"`` logs nothing (env ``MLNB_MLFLOW``).
A tracking store that cannot be reached gives a warning; the head is trained and saved all the same.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import MlnbError

#: The most trials one search may run (grid combinations or random trials).
MAX_TRIALS = 200
#: Options drawn log-uniformly by a random search when a range's low end is above 0 (names ignore case).
LOG_SCALE = frozenset({"c", "alpha", "lr", "learning_rate", "weight_decay", "l2_regularization", "reg_alpha", "reg_lambda"})
#: Metrics a search may pick its best trial by; True where higher is better.
METRICS = {"accuracy": True, "macro_f1": True, "log_loss": False}
#: The same for a regressor's search (the first is the default, and breaks ties).
REGRESSION_METRICS = {"rmse": False, "mae": False, "r2": True}
SEARCH_KEYS = ("search", "trials", "seed", "metric")


@dataclass
class Plan:
    """A checked search: what to try, how many times, and how to pick the best."""

    algo: Any
    algo_name: str
    method: str  # "grid" or "random"
    fixed: dict[str, Any]
    space: dict[str, Any]  # name -> list of values (grid, choices) or {"low", "high", "scale"} (random range)
    candidates: list[dict[str, Any]]
    metric: str = "accuracy"
    seed: int | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    tracker: Any = None
    task: str = "classification"  # or "regression"

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "space": self.space, "fixed": self.fixed, "metric": self.metric, "seed": self.seed}


def _metrics_of(task: str) -> dict[str, bool]:
    return REGRESSION_METRICS if task == "regression" else METRICS


def plan_search(algo: Any, options: dict[str, Any] | None, search: Any = None, *, task: str = "classification") -> Plan | None:
    """The search ``options`` (and ``search=``) ask for, checked; ``None`` when they ask for none.

    ``search`` is ``"grid"``, ``"random"`` or a dict with ``method``, ``trials``, ``seed``, ``metric``;
    the same keys may come inside ``options`` (SQL's ``WITH (search = 'random', trials = 20)``).
    ``task="regression"`` plans a regressor's search (its algorithms, options and metrics).
    """

    # An option the algorithm itself has (a scikit-learn estimator's ``metric``) stays the algorithm's;
    # the search's own setting of that name then goes in ``search={...}``.
    if isinstance(algo, str):
        own = {k.lower() for k in _rules(task).get(algo.lower(), {})}
    else:
        own = {k.lower() for k in algo.get_params()} if hasattr(algo, "get_params") else set()
    opts = dict(options or {})
    settings: dict[str, Any] = {}
    for key in list(opts):
        if str(key).lower() in SEARCH_KEYS and str(key).lower() not in own:
            settings[str(key).lower()] = opts.pop(key)
    if isinstance(search, dict):
        extra = set(search) - {"method", *SEARCH_KEYS}
        if extra:
            raise MlnbError(f"search= takes method, trials, seed and metric; not {', '.join(sorted(map(repr, extra)))}.")
        settings.update({("search" if k == "method" else k): v for k, v in search.items()})
    elif search is not None:
        settings["search"] = search
    lists = {k: v for k, v in opts.items() if isinstance(v, (list, tuple))}
    method = settings.get("search")
    if method is None and not lists:
        if settings:
            raise MlnbError(f"{', '.join(sorted(settings))} set{'s' if len(settings) == 1 else ''} up a search, but no option is a list of values to try, e.g. C = [0.1, 1, 10].")
        return None
    method = str(method or "grid").lower()
    if method not in ("grid", "random"):
        raise MlnbError(f"search must be 'grid' or 'random', not {settings.get('search')!r}.")
    if not lists:
        raise MlnbError(f"A {method} search needs at least one option given as a list of values, e.g. C = [0.01, 100].")
    for k, v in lists.items():
        if not v:
            k = _canonical(algo, k, task)
            raise MlnbError(f"Option {k} is an empty list: give the values to try, e.g. {k} = [0.1, 1, 10].")
    metrics = _metrics_of(task)
    metric = str(settings.get("metric", next(iter(metrics)))).lower()
    if metric not in metrics:
        raise MlnbError(f"metric must be one of {', '.join(metrics)}, not {settings.get('metric')!r}.")
    algo_name = algo if isinstance(algo, str) else type(algo).__name__
    fixed = _check(algo, {k: v for k, v in opts.items() if k not in lists}, task)
    if method == "grid":
        if "trials" in settings or "seed" in settings:
            raise MlnbError("trials and seed belong to search = 'random'; a grid tries every combination of the lists.")
        space = {}
        for k, values in lists.items():
            checked = [_check_one(algo, k, v, values, task) for v in values]
            space[_canonical(algo, k, task)] = list(dict.fromkeys(checked))  # the same value twice is one trial
        n = math.prod(len(v) for v in space.values())
        if n > MAX_TRIALS:
            sizes = " × ".join(str(len(v)) for v in space.values())
            raise MlnbError(f"The grid has {sizes} = {n} combinations, more than {MAX_TRIALS}: use fewer values, or search = 'random' with trials = N.")
        candidates = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
        return Plan(algo, algo_name, "grid", fixed, space, candidates, metric, task=task)
    trials = _whole("trials", settings.get("trials", 10), 1, MAX_TRIALS)
    seed = _whole("seed", settings.get("seed", 0), 0, None)
    space = {}
    for k, values in lists.items():
        name = _canonical(algo, k, task)
        space[name] = _range_or_choices(algo, name, k, list(values), task)
    candidates = _draw(space, trials, seed)
    return Plan(algo, algo_name, "random", fixed, space, candidates, metric, seed, task=task)


def _whole(what: str, value: Any, low: int, high: int | None) -> int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if not ok or value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise MlnbError(f"{what} must be a whole number {limit}, not {value!r}.")
    return int(value)


def _rules(task: str) -> dict[str, Any]:
    from .algorithms import OPTIONS, REGRESSION_OPTIONS

    return REGRESSION_OPTIONS if task == "regression" else OPTIONS


def _canonical(algo: Any, key: str, task: str = "classification") -> str:
    rules = _rules(task)
    if isinstance(algo, str) and algo.lower() in rules:
        return {k.lower(): k for k in rules[algo.lower()]}.get(str(key).lower(), key)
    return key


def _check(algo: Any, options: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    """``options`` converted by the algorithm's rules (an ``MlnbError`` naming a bad one)."""
    from .algorithms import ALGORITHMS, REGRESSION_ALGORITHMS, check_options, make_estimator

    if isinstance(algo, str):
        if algo.lower() not in (REGRESSION_ALGORITHMS if task == "regression" else ALGORITHMS):
            make_estimator(algo, task=task)  # the unknown-algorithm error, with its suggestions
        return check_options(algo.lower(), options, task=task)
    est = make_estimator(algo, options, task=task)  # checks the names; scikit-learn checks values below
    validate = getattr(est, "_validate_params", None)  # scikit-learn >= 1.2
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise MlnbError(f"{type(algo).__name__}: {exc}") from None
    return dict(options)


def _check_one(algo: Any, key: str, value: Any, values: list[Any], task: str = "classification") -> Any:
    try:
        return next(iter(_check(algo, {key: value}, task).values()))
    except MlnbError as exc:
        raise MlnbError(f"In the search list {_canonical(algo, key, task)} = {_show(values)}: {exc}") from None


def _show(values: Any) -> str:
    return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else repr(v) for v in values) + "]"


def _range_or_choices(algo: Any, name: str, key: str, values: list[Any], task: str = "classification") -> Any:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not (numeric and len(values) == 2):
        return list(dict.fromkeys(_check_one(algo, key, v, values, task) for v in values))
    low, high = (_check_one(algo, key, v, values, task) for v in values)
    if not low < high:
        raise MlnbError(f"The range {name} = {_show(values)} must go from a lower to a higher value.")
    rule = _rules(task).get(algo.lower(), {}).get(name) if isinstance(algo, str) else None
    rule = getattr(rule, "rule", rule)  # a word or a number (max_features = 'sqrt' | 0.5): the number's rule
    kind = getattr(rule, "kind", None)
    whole = kind == "int" if kind is not None else all(isinstance(v, int) for v in values)
    if whole:
        return {"low": int(low), "high": int(high), "scale": "int"}
    scale = "log" if name.lower() in LOG_SCALE and low > 0 else "uniform"
    return {"low": float(low), "high": float(high), "scale": scale}


def _draw(space: dict[str, Any], trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` distinct draws (fewer when the space holds fewer distinct combinations)."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for _ in range(trials * 20):
        if len(out) == trials:
            break
        combo = {k: _draw_one(rng, s) for k, s in space.items()}
        key = json.dumps(combo, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(combo)
    return out


def _draw_one(rng: np.random.Generator, s: Any) -> Any:
    if isinstance(s, list):
        return s[int(rng.integers(len(s)))]
    if s["scale"] == "int":
        return int(rng.integers(s["low"], s["high"] + 1))
    if s["scale"] == "log":
        v = math.exp(rng.uniform(math.log(s["low"]), math.log(s["high"])))
    else:
        v = rng.uniform(s["low"], s["high"])
    return min(max(float(f"{v:.4g}"), s["low"]), s["high"])  # readable values, still inside the range


def search_folds(folds: int | None, counts: np.ndarray) -> int:
    """The folds every trial is cross-validated with: the statement's, else 5 (fewer for a small class)."""
    if folds is not None and not isinstance(folds, bool) and isinstance(folds, (int, float)) and int(folds) >= 2:
        return int(folds)
    if folds is not None:
        raise MlnbError(f"A search compares its trials by cross-validation: folds must be at least 2, not {folds!r}.")
    k = int(min(5, counts.min()))
    if k < 2:
        raise MlnbError("A search compares its trials by cross-validation, which needs at least 2 rows of every class: label more rows.")
    return k


def run_search(plan: Plan, X: np.ndarray, y: np.ndarray, folds: int, *, progress: Any = None,
               on_trial: Any = None, name: str | None = None, feature_model: str | None = None) -> tuple[dict[str, Any], Any]:
    """Cross-validate every candidate; returns the best options and the best trial's evaluation.

    Each trial's record is appended to ``plan.trials`` (and given to ``on_trial``) as it finishes,
    and logged to MLflow as a child run when tracking is on. ``progress(fold, folds, metrics)`` is
    called after each fold of each trial.
    """
    from .algorithms import check_data, make_estimator
    from .head import cross_validate
    from .regressor import check_regression_data, cross_validate_regressor

    regression = plan.task == "regression"
    estimators = []
    for cand in plan.candidates:  # every trial is checked against the data before any trains
        est = make_estimator(plan.algo, {**plan.fixed, **cand}, task=plan.task)
        try:
            if regression:
                check_regression_data(est, plan.algo_name, len(y), folds)
            else:
                check_data(est, plan.algo_name, y, folds)
        except MlnbError as exc:
            raise MlnbError(f"Search trial {_params_text(cand)}: {exc}") from None
        estimators.append(est)
    plan.tracker = Tracker.start(plan, name=name, folds=folds, n_rows=len(y), feature_model=feature_model)
    best: tuple[Any, ...] | None = None
    try:
        for i, (cand, est) in enumerate(zip(plan.candidates, estimators), start=1):
            t0 = time.perf_counter()
            try:
                ev = cross_validate_regressor(est, X, y, folds) if regression else cross_validate(est, X, y, folds, progress=progress)
                error = None
            except ValueError as exc:  # scikit-learn refusing this combination: the others still run
                ev, error = None, f"{type(exc).__name__}: {exc}"
            rec = trial_record(i, cand, ev, folds, time.perf_counter() - t0, error, plan.task)
            plan.trials.append(rec)
            plan.tracker.trial(rec)
            if on_trial is not None:
                on_trial(rec)
            if ev is not None:
                key = _rank_key(rec, plan.metric, plan.task)
                if best is None or key > best[0]:
                    best = (key, i, cand, ev)
        if best is None:
            raise MlnbError(f"Every trial of the search failed; the first: {plan.trials[0]['error']}")
    except BaseException as exc:  # a failed or stopped search is a failed MLflow run, not a running one
        plan.tracker.end("FAILED" if isinstance(exc, MlnbError) else "KILLED")
        raise
    for rec in plan.trials:
        rec["best"] = rec["trial"] == best[1]
    plan.tracker.searched(next(r for r in plan.trials if r["best"]))
    return {**plan.fixed, **best[2]}, best[3]


def _rank_key(rec: dict[str, Any], metric: str, task: str = "classification") -> tuple[float, float, int]:
    """Higher is better: the metric (lower-is-better ones negated), then the lower log-loss (a
    regressor's: RMSE), then the earlier trial."""

    def num(v: Any) -> float | None:
        return None if v is None or v != v else float(v)

    tie = "rmse" if task == "regression" else "log_loss"
    m, ll = num(rec[metric]), num(rec[tie])
    value = float("-inf") if m is None else (m if _metrics_of(task)[metric] else -m)
    return value, float("-inf") if ll is None else -ll, -rec["trial"]


def trial_record(i: int, params: dict[str, Any], ev: Any, folds: int, seconds: float, error: str | None,
                 task: str = "classification") -> dict[str, Any]:
    """One row of the trials table: trial, params (a struct), a column per option, mean and std of
    each metric over the folds, folds, seconds, best, error."""
    rec: dict[str, Any] = {"trial": i, "params": dict(params), **params}
    for m in _metrics_of(task):
        mean = std = None
        if ev is not None:
            col = ev.folds[m]
            mean, std = _num(col.mean()), _num(col.std())
        rec[m], rec[f"{m}_std"] = mean, std
    rec.update({"folds": folds, "seconds": round(seconds, 4), "best": False, "error": error})
    return rec


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in params.items())


def search_meta(plan: Plan, folds: int) -> dict[str, Any]:
    """What the head's ``meta.json`` keeps of the search (``meta["search"]``)."""
    best = next(r for r in plan.trials if r["best"])
    return {**plan.describe(), "folds": folds, "n_trials": len(plan.trials), "best_trial": best["trial"],
            "best_params": best["params"], "trials": plan.trials}


def trials_frame(meta: dict[str, Any]) -> Any:
    """The trials of a head's search as a Polars frame (``None`` for a head trained without one)."""
    search = meta.get("search")
    return records_frame(search["trials"]) if search else None


def records_frame(records: list[dict[str, Any]]) -> Any:
    """Trial records (:func:`trial_record`) as a Polars frame."""
    import polars as pl

    return pl.DataFrame(records, infer_schema_length=None).with_columns(pl.col("error").cast(pl.String))


def result_columns(head: Any) -> dict[str, list[Any]]:
    """Extra columns of ``CREATE CLASSIFIER``'s answer for a searched head: the best trial and where the rest are."""
    s = head.meta.get("search")
    if not s:
        return {}
    return {
        "search": [f"{s['method']}: {s['n_trials']} trials, best #{s['best_trial']} by {s['metric']}"],
        "best_params": [json.dumps(s["best_params"])],
        "trials": [f"SELECT * FROM trials('{head.ref}')"],
    }


def saving(head: Any, plan: Plan | None, save: Any) -> None:
    """``save()`` the head (``None``: an unsaved head), then finish its MLflow run (a search's
    parent run, or with ``config.mlflow = "all"`` a run of its own)."""
    tracker = plan.tracker if plan is not None else Tracker.for_head(head)
    if save is None:
        tracker.end("FINISHED")
        return
    try:
        save()
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.saved(head)


# -- MLflow ------------------------------------------------------------------------
_warned: set[str] = set()


class Tracker:
    """Logs a search to MLflow (parent run, a child run per trial, the saved head); does
    nothing when MLflow is off or not installed. A tracking store that fails gives one
    warning and turns this tracker off: training never fails because of MLflow."""

    def __init__(self, client: Any = None, run_id: str | None = None) -> None:
        self.client, self.run_id = client, run_id
        self.experiment_id: str | None = None

    @classmethod
    def start(cls, plan: Plan, *, name: str | None, folds: int, n_rows: int, feature_model: str | None) -> Tracker:
        params = {"algorithm": plan.algo_name, "search": plan.method, "metric": plan.metric, "folds": folds,
                  "n_trials": len(plan.candidates), "n_rows": n_rows, "feature_model": feature_model,
                  "space": json.dumps(plan.space, default=str), **{f"fixed.{k}": v for k, v in plan.fixed.items()}}
        if plan.seed is not None:
            params["seed"] = plan.seed
        return cls._open("search", f"{name or 'unsaved'} {plan.algo_name} {plan.method} search", params)

    @classmethod
    def for_head(cls, head: Any) -> Tracker:
        from ..config import config

        if config.mlflow != "all":
            return cls()
        m = head.meta
        params = {"algorithm": m["algorithm"], "n_rows": m["n_rows"], "feature_model": m.get("feature_model"), **m.get("options", {})}
        t = cls._open("all", f"{m.get('name') or 'unsaved'} {m['algorithm']}", params)
        t._log(metrics=_metrics(m["metrics"]))
        return t

    @classmethod
    def _open(cls, level: str, run_name: str, params: dict[str, Any]) -> Tracker:
        from ..config import config

        if config.mlflow == "off" or (level == "all" and config.mlflow != "all"):
            return cls()
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError:
            return cls()
        t = cls()
        try:
            t.client = MlflowClient()
            t.experiment_id = _experiment_id(mlflow)
            run = t.client.create_run(t.experiment_id, run_name=run_name, tags={"mlnb.kind": level})
            t.run_id = run.info.run_id
            t._log(params=params)
        except Exception as exc:  # noqa: BLE001 - any tracking-store failure
            t._give_up(exc)
        return t

    def _give_up(self, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {str(exc)[:300]}"
        if "MLFLOW_ALLOW_FILE_STORE" in str(exc):  # MLflow 3.x refuses its file store unless told
            why = "MLflow refuses its file store (a file: tracking URI) unless MLFLOW_ALLOW_FILE_STORE=true is set"
        self.client = None
        if why in _warned:  # once per process and reason, not once per search
            return
        _warned.add(why)
        warnings.warn(
            f"mlnb: not logging to MLflow ({why}). Set MLFLOW_TRACKING_URI to a store MLflow can open "
            "(sqlite:///mlflow.db needs the full mlflow package), or turn logging off with mlnb.config.mlflow = 'off'.",
            stacklevel=4,
        )

    def _log(self, run_id: str | None = None, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
             tags: dict[str, str] | None = None) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(
                run_id or self.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
                params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items() if v is not None],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)

    def trial(self, rec: dict[str, Any]) -> None:
        """One trial as a child run of the search."""
        if self.client is None:
            return
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        try:
            child = self.client.create_run(self.experiment_id, run_name=f"trial {rec['trial']}",
                                           tags={MLFLOW_PARENT_RUN_ID: self.run_id, "mlnb.kind": "trial", "mlnb.trial": str(rec["trial"])})
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)
            return
        cid = child.info.run_id
        self._log(cid, params=rec["params"], metrics={**_metrics(rec), "seconds": rec["seconds"]},
                  tags={"mlnb.error": rec["error"]} if rec["error"] else None)
        if self.client is not None:
            self.client.set_terminated(cid, "FAILED" if rec["error"] else "FINISHED")

    def searched(self, best: dict[str, Any]) -> None:
        """The search is done: the best trial's options and metrics on the parent run."""
        self._log(params={f"best.{k}": v for k, v in best["params"].items()},
                  metrics={**{f"best_{k}": v for k, v in _metrics(best).items()}, "best_trial": best["trial"]})

    def saved(self, head: Any) -> None:
        """The head is saved: its name@version as a tag, its files as artifacts; the run ends."""
        if self.client is None:
            return
        from . import store

        self._log(tags={"mlnb.head": head.ref})
        try:
            if self.client is not None:
                self.client.log_artifacts(self.run_id, str(store.heads_root() / head.name / f"v{head.version}"), "head")
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)
        self.end("FINISHED")

    def end(self, status: str) -> None:
        if self.client is None:
            return
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)


def _metrics(rec: dict[str, Any]) -> dict[str, float]:
    names = (*METRICS, *REGRESSION_METRICS)
    return {k: float(rec[k]) for k in (*names, *(f"{m}_std" for m in names))
            if isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool) and rec[k] == rec[k]}


def _experiment_id(mlflow: Any) -> str:
    """MLflow's own choice: mlflow.set_experiment, MLFLOW_EXPERIMENT_NAME / _ID, else its default."""
    try:
        from mlflow.tracking.fluent import _get_experiment_id

        exp = _get_experiment_id()
        if exp is not None:
            return str(exp)
    except ImportError:
        pass
    return "0"


# -- SQL: trials('name') --------------------------------------------------------
def _trials_source(ref: Any) -> Any:
    """The meta.json holding a head's trials (the path), or an error saying why there are none."""
    import pyarrow as pa

    from . import store

    out = []
    for r in ref.to_pylist():
        if r is None:
            out.append(None)
            continue
        name, version = store.resolve(str(r))
        meta = store.read_meta(name, version)
        if not meta.get("search"):
            searched = [v for v in store.versions(name) if store.read_meta(name, v).get("search")]
            where = f" Versions with trials: {', '.join(f'{name}@{v}' for v in searched)}." if searched else ""
            example = ("CREATE REGRESSOR ... WITH (alpha = [0.1, 1, 10])" if meta.get("kind") == "regressor"
                       else "CREATE CLASSIFIER ... WITH (C = [0.1, 1, 10])")
            kind = "Regressor" if meta.get("kind") == "regressor" else "Classifier"
            raise MlnbError(f"{kind} {name}@{version} was trained without a search, so it has no trials.{where} "
                            f"A search is {example} AS SELECT ...")
        out.append(str(store.heads_root() / name / f"v{version}" / "meta.json"))
    return pa.array(out, type=pa.string())


def _trials(name: str) -> Any:
    """Python twin of ``trials('name')``: the same SQL, through the session."""
    from ..sql import get_session

    return get_session().run("SELECT * FROM trials($name)", {"name": str(name)})


def _register() -> Any:
    from ..functions import Function, Param, registry, table_function

    registry.add(
        Function(
            name="classifier_trials_file", impl=_trials_source, params=(Param("name", "VARCHAR"),), returns="VARCHAR",
            doc="The meta.json file that holds the trials of a head's hyperparameter search (used by trials()).",
        ),
        replace=True,
    )
    return table_function(
        "trials",
        # error is null in every trial of a search where none failed: typed here, not left to JSON inference.
        "SELECT * REPLACE (CAST(error AS VARCHAR) AS error) FROM "
        "(SELECT unnest(t) FROM (SELECT unnest(search.trials) AS t FROM read_json(classifier_trials_file(name))))",
        params=[Param("name", "VARCHAR")],
        returns="TABLE(trial BIGINT, params STRUCT, <one column per option>, accuracy DOUBLE, accuracy_std DOUBLE, "
        "macro_f1 DOUBLE, macro_f1_std DOUBLE, log_loss DOUBLE, log_loss_std DOUBLE, folds BIGINT, seconds DOUBLE, "
        "best BOOLEAN, error VARCHAR)",
        doc=(
            "The trials of a head's hyperparameter search (CREATE CLASSIFIER ... WITH (C = [0.1, 1, 10])): "
            "one row per trial with its options (as a struct and one column each), the mean and std over the "
            "folds of accuracy, macro-F1 and log-loss (a regressor's: rmse, mae, r2), seconds, and which trial "
            "was kept. trials('name') is the latest version, trials('name@2') version 2."
        ),
        impl=_trials,
    )


#: ``trials('digit')`` in SQL; ``mlnb.trials("digit")`` in Python (a Polars frame).
trials = _register()
