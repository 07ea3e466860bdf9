"""Head algorithms by name, each a scikit-learn estimator built from ``WITH (...)`` options.

========== ==========================================================================
name       estimator
========== ==========================================================================
logistic   standardise + LogisticRegression (options: C, max_iter)
linear_svm standardise + LinearSVC with calibrated probabilities (options: C, cv)
knn        k-nearest neighbours, cosine distance, distance-weighted (options: k)
mlp        scikit-learn MLPClassifier with early stopping (options: hidden, alpha, max_iter)
torch      :class:`TorchHead`, linear (hidden = 0) or MLP, GPU when there is one
           (options: hidden, epochs, lr, weight_decay, batch_size, dropout, patience)
========== ==========================================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..exceptions import MlnbError


def _logistic(C: float = 1.0, max_iter: int = 2000) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=int(max_iter)))


def _linear_svm(C: float = 0.1, cv: int = 3) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), CalibratedClassifierCV(LinearSVC(C=float(C), max_iter=5000), cv=int(cv)))


def _knn(k: int = 5) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(k), metric="cosine", weights="distance", algorithm="brute")


def _mlp(hidden: int = 256, alpha: float = 1e-4, max_iter: int = 300) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(int(hidden),), alpha=float(alpha), max_iter=int(max_iter),
            early_stopping=True, n_iter_no_change=25, random_state=0,
        ),
    )


def _torch(**options: Any) -> Any:
    from .torch_head import TorchHead

    return TorchHead(**options)


ALGORITHMS: dict[str, Callable[..., Any]] = {
    "logistic": _logistic,
    "linear_svm": _linear_svm,
    "knn": _knn,
    "mlp": _mlp,
    "torch": _torch,
}


def make_estimator(algo: Any, options: dict[str, Any] | None = None) -> Any:
    """An unfitted estimator for ``algo`` (a name above, or any scikit-learn classifier)."""
    options = dict(options or {})
    if not isinstance(algo, str):
        from sklearn.base import clone, is_classifier

        if not is_classifier(algo):
            raise MlnbError(f"{type(algo).__name__} is not a scikit-learn classifier.")
        est = clone(algo)
        return est.set_params(**options) if options else est
    try:
        factory = ALGORITHMS[algo.lower()]
    except KeyError:
        close = difflib.get_close_matches(algo.lower(), ALGORITHMS, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise MlnbError(f"Unknown algorithm {algo!r}.{hint} Choose from: {', '.join(ALGORITHMS)}.") from None
    import inspect

    target = TorchHead_params() if algo.lower() == "torch" else list(inspect.signature(factory).parameters)
    by_lower = {p.lower(): p for p in target}
    options = {by_lower.get(k.lower(), k): v for k, v in options.items()}  # SQL option names ignore case
    try:
        return factory(**options)
    except TypeError as exc:
        allowed = [p for p in target if p != "options"]
        raise MlnbError(f"Bad option for {algo}: {exc}. Options: {', '.join(allowed)}.") from None


def TorchHead_params() -> list[str]:  # noqa: N802 - named after the class it describes
    import inspect

    from .torch_head import TorchHead

    return list(inspect.signature(TorchHead).parameters)
