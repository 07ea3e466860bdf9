"""The head trainer's controller: cross-validate heads on one or several feature
columns, keep every run (persisted, and the SQL table ``runs``), and look
inside a run — per-class precision/recall, the confusion matrix and the images
behind each cell, the worst errors — then register the chosen one as a SQL
function through the classifier mechanism."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from ..exceptions import MlnbError
from ..runs import append_run, read_runs, runs_frame
from ._base import Controller


class Stopped(Exception):
    """Raised between folds when the user pressed Stop."""


class Trainer(Controller):
    """Compare heads: ``mlnb.train(df, features=["lite0", "resnet"], label="label", image="path")``."""

    def __init__(
        self,
        frame: Any,
        *,
        features: str | list[str] = "features",
        label: str = "label",
        image: str | None = None,
        algorithms: tuple[str, ...] | None = None,
        folds: int = 5,
    ) -> None:
        from .._frames import to_polars

        df = to_polars(frame)
        if df.height == 0:
            raise MlnbError("The frame is empty: there is nothing to train on.")
        self.features = [features] if isinstance(features, str) else list(features)
        for col in [*self.features, label, *( [image] if image else [])]:
            if col not in df.columns:
                raise MlnbError(f"No column {col!r} in the frame; columns: {', '.join(df.columns)}.")
        self.frame = df
        self.label = label
        self.image = image
        if algorithms is None:  # every head algorithm mlnb has (gbdt and random_forest included)
            from ..heads.algorithms import ALGORITHMS

            algorithms = tuple(ALGORITHMS)
        self.algorithms = tuple(algorithms)
        self.folds = folds
        self.evaluations: dict[str, Any] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self.running = False
        self.status = ""

    # -- running ---------------------------------------------------------
    def stop(self) -> None:
        """Stop after the fold in progress; finished runs stay recorded."""
        self._stop.set()

    def run(self, features: str | None = None, algo: str = "logistic", options: dict[str, Any] | None = None, *, progress: Any = None) -> str:
        """Cross-validate one head; returns its run id. ``progress(fold, folds, metrics)`` after each fold.

        Options given as lists (``{"C": [0.01, 0.1, 1]}``, with ``search="random"``, ``trials=N`` for
        random trials) are a hyperparameter search (:mod:`mlnb.heads._search`): every trial is
        cross-validated, the run is the best trial, and :meth:`trials` lists them all."""
        import numpy as np

        from ..heads._data import feature_matrix
        from ..heads._search import plan_search, run_search
        from ..heads.algorithms import make_estimator
        from ..heads.head import cross_validate

        col = features or self.features[0]
        if col not in self.features:
            raise MlnbError(f"{col!r} is not one of this trainer's feature columns: {', '.join(self.features)}.")
        plan = plan_search(algo, options)  # None: one head; a bad grid is refused before anything trains
        X, ok = feature_matrix(self.frame.get_column(col))
        y = self.frame.get_column(self.label)
        ok &= ~y.is_null().to_numpy()
        yv = y.cast(str).to_numpy()[ok]
        classes, counts = np.unique(yv, return_counts=True)
        if len(classes) < 2:
            raise MlnbError("Training needs at least two classes with labels and features.")
        folds = int(min(self.folds, counts.min()))
        if folds < 2:
            raise MlnbError(f"Class {classes[counts.argmin()]!r} has one labelled row: cross-validation needs two per class.")
        self._stop.clear()
        self.running = True

        def on_fold(i: int, k: int, metrics: dict[str, Any]) -> None:
            if progress is not None:
                progress(i, k, metrics)
            if self._stop.is_set():
                raise Stopped

        run_id = uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        try:
            if plan is None:
                ev = cross_validate(make_estimator(algo, options), X[ok], yv, folds, progress=on_fold)
            else:
                options, ev = run_search(plan, X[ok], yv, folds, progress=on_fold, feature_model=col)
                plan.tracker.end("FINISHED")  # MLflow: nothing is saved from a trainer search
            status = "done"
        except Stopped:
            self.running = False
            self.status = "stopped"
            return ""
        finally:
            self.running = False
        rows = np.flatnonzero(ok)
        ev.point_rows_at(rows)
        ev.predictions = ev.predictions.with_columns(__row=rows)
        acc = ev.summary.filter(ev.summary["metric"] == "accuracy").row(0, named=True)
        m = ev.metrics.row(0, named=True)
        record = {
            "run": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "features": col, "algorithm": algo,
            "options": json.dumps(options or {}), "folds": folds, "n": int(ok.sum()), "accuracy": m["accuracy"],
            "accuracy_std": acc["std"], "macro_f1": m["macro_f1"], "log_loss": m["log_loss"],
            "train_seconds": round(time.perf_counter() - t0, 3), "status": status,
        }
        if plan is not None:  # kept in the run's record, so later sessions can list the trials too
            record["search"] = f"{plan.method}: {len(plan.trials)} trials"
            record["trials"] = plan.trials
        append_run(record)
        self.evaluations[run_id] = ev
        self.meta[run_id] = record
        self.status = f"{algo} on {col}: accuracy {m['accuracy']:.3f} ({folds}-fold)"
        if plan is not None:
            self.status += f", best of {len(plan.trials)} trials: {', '.join(f'{k}={v}' for k, v in options.items())}"
        return run_id

    def trials(self, run_id: str | None = None) -> Any:
        """The trials of a search run (default: this trainer's latest), one row per trial, as a Polars frame."""
        from ..heads._search import records_frame

        if run_id is None:
            run_id = next((r for r in reversed(list(self.meta)) if "trials" in self.meta[r]), None)
            if run_id is None:
                raise MlnbError("No search run yet: give an option a list of values, e.g. options={'C': [0.1, 1, 10]}.")
        rec = self.meta.get(run_id) or next((r for r in read_runs() if r["run"] == run_id), None)
        if rec is None:
            raise MlnbError(f"No run {run_id!r}.")
        if "trials" not in rec:
            raise MlnbError(f"Run {run_id} was not a search: it has no trials.")
        return records_frame(rec["trials"])

    def run_all(
        self, *, features: list[str] | None = None, algorithms: list[str] | None = None, options: dict[str, Any] | None = None, progress: Any = None
    ) -> list[str]:
        """Every (features, algorithm) pair; stops early when :meth:`stop` is called.
        ``options`` go to each algorithm that takes them (names ignore case)."""
        ids = []
        for col in features or self.features:
            for algo in algorithms or self.algorithms:
                if self._stop.is_set():
                    return ids
                rid = self.run(col, algo, _options_for(algo, options), progress=progress)
                if not rid:
                    return ids
                ids.append(rid)
        return ids

    # -- looking inside a run ------------------------------------------------
    @property
    def runs(self) -> Any:
        return runs_frame()

    def _ev(self, run_id: str) -> Any:
        try:
            return self.evaluations[run_id]
        except KeyError:
            raise MlnbError(f"No run {run_id!r} in this trainer (runs from earlier sessions keep only their metrics).") from None

    def per_class(self, run_id: str) -> Any:
        return self._ev(run_id).per_class

    def confusion(self, run_id: str) -> Any:
        return self._ev(run_id).confusion

    def cell(self, run_id: str, true: str, predicted: str) -> Any:
        """The rows behind one cell of the confusion matrix (out-of-fold predictions)."""
        import polars as pl

        p = self._ev(run_id).predictions.filter((pl.col("true") == true) & (pl.col("predicted") == predicted))
        rows = p.get_column("__row").to_list()
        return self.frame[rows].with_columns(p.get_column("confidence").alias("confidence"))

    def worst_errors(self, run_id: str, n: int = 24) -> Any:
        """Misclassified rows, most confident first, with true and predicted labels."""
        import polars as pl

        err = self._ev(run_id).errors.head(n)
        rows = err.get_column("row").to_list()
        return self.frame[rows].select(pl.exclude(self.features)).with_columns(
            err.get_column("true").alias("true"), err.get_column("predicted").alias("predicted"), err.get_column("confidence").alias("confidence")
        )

    def register(self, run_id: str, name: str) -> Any:
        """Train the run's head on every row and save it as SQL functions ``name(...)``, ``name_proba(...)``."""
        from ..heads import train_classifier

        rec = self.meta.get(run_id) or next((r for r in read_runs() if r["run"] == run_id), None)
        if rec is None:
            raise MlnbError(f"No run {run_id!r}.")
        head = train_classifier(
            self.frame, features=rec["features"], label=self.label, algo=rec["algorithm"], options=json.loads(rec["options"]),
            name=name, folds=rec["folds"],
        )
        self.status = f"registered {head.ref}: SELECT {name}({rec['features']}) ..."
        return head

    def _make_view(self) -> Any:
        from ._trainer_view import trainer_view

        return trainer_view(self)


def _options_for(algo: str, options: dict[str, Any] | None) -> dict[str, Any]:
    import inspect

    from ..heads._search import SEARCH_KEYS
    from ..heads.algorithms import ALGORITHMS, TorchHead_params

    if not options:
        return {}
    names = TorchHead_params() if algo == "torch" else list(inspect.signature(ALGORITHMS[algo]).parameters)
    lower = {n.lower() for n in names}
    out = {k: v for k, v in options.items() if k.lower() in lower}
    if any(isinstance(v, (list, tuple)) for v in out.values()):  # a search's settings go with its lists
        out.update({k: v for k, v in options.items() if k.lower() in SEARCH_KEYS})
    return out


def train(frame: Any, *, features: str | list[str] = "features", label: str = "label", image: str | None = None, **kwargs: Any) -> Trainer:
    """Open the head trainer on a frame (see :class:`Trainer`)."""
    return Trainer(frame, features=features, label=label, image=image, **kwargs)
