"""A linear or MLP head in torch, trained with early stopping, on the GPU when there is one.

A scikit-learn estimator: ``__init__`` stores hyperparameters, ``fit`` returns
``self``, learned state ends in ``_``, ``predict_proba`` columns follow ``classes_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


class TorchHead(ClassifierMixin, BaseEstimator):
    """Softmax regression (``hidden=0``) or a one-hidden-layer MLP on feature vectors.

    Parameters
    ----------
    hidden : int
        Hidden units (0: linear head).
    epochs : int
        Most passes over the data; training stops earlier when the held-out
        loss has not improved for ``patience`` epochs.
    lr, weight_decay, batch_size, dropout, patience, validation_fraction, random_state
        The usual.
    device : str or None
        ``None`` follows ``mlnb.config.device``.
    """

    def __init__(
        self,
        hidden: int = 0,
        epochs: int = 200,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        dropout: float = 0.1,
        patience: int = 10,
        validation_fraction: float = 0.1,
        random_state: int | None = 0,
        device: str | None = None,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    def _build(self, n_in: int, n_out: int) -> Any:
        from torch import nn

        if self.hidden:
            return nn.Sequential(nn.Linear(n_in, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, n_out))
        return nn.Sequential(nn.Linear(n_in, n_out))

    def fit(self, X: Any, y: Any, progress: Any = None) -> TorchHead:
        import torch

        from ..device import resolve_device

        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        dev = resolve_device(self.device)
        gen = torch.Generator().manual_seed(0 if self.random_state is None else int(self.random_state))
        torch.manual_seed(0 if self.random_state is None else int(self.random_state))
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(X))
        n_val = int(round(len(X) * self.validation_fraction)) if len(X) >= 20 else 0
        val, tr = order[:n_val], order[n_val:]
        # Centre each feature, and scale all of them by one number: CNN features (pooled ReLU outputs) are
        # sparse, and a unit almost never active in the training rows has a std near 0, so dividing by it
        # turns its rare activation in a new row into a huge input. Measured by benchmarks/bench_heads.py
        # (5-fold, efficientnet_lite0 features), linear head: per-feature scaling 0.844 (digits) / 0.905
        # (lfw_subset), one scale 0.932 / 0.995, level with or above logistic regression (0.923 / 0.980).
        self.mean_ = X[tr].mean(axis=0)
        self.scale_ = np.full(X.shape[1], (X[tr] - self.mean_).std() + 1e-6, dtype=np.float32)
        Xt = torch.from_numpy((X - self.mean_) / self.scale_).to(dev)
        yt = torch.from_numpy(yi.astype(np.int64)).to(dev)
        model = self._build(X.shape[1], len(self.classes_)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        best, best_state, bad = float("inf"), None, 0
        self.loss_curve_: list[float] = []
        self.validation_curve_: list[float] = []
        tr_t = torch.from_numpy(tr).to(dev)
        # Small data sets still get several steps per epoch.
        bs = int(min(self.batch_size, max(32, len(tr) // 8)))
        for _epoch in range(self.epochs):
            model.train()
            perm = tr_t[torch.randperm(len(tr_t), generator=gen).to(dev)]
            total = torch.zeros((), device=dev)  # summed on the device: one sync per epoch, not per step
            for i in range(0, len(perm), bs):
                idx = perm[i : i + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            self.loss_curve_.append(float(total) / max(1, len(tr)))
            if n_val:
                model.eval()
                with torch.no_grad():
                    vl = float(loss_fn(model(Xt[val]), yt[val]))
                self.validation_curve_.append(vl)
                if vl < best - 1e-4:
                    best, bad = vl, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
            if progress is not None:
                progress(_epoch, self.loss_curve_[-1], self.validation_curve_[-1] if n_val else None)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.n_epochs_ = len(self.loss_curve_)
        self.model_ = model.cpu()
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        import torch

        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with torch.no_grad():
            logits = self.model_(torch.from_numpy((X - self.mean_) / self.scale_))
            return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted-ness first
        return self.classes_[np.argmax(proba, axis=1)]

    # -- persistence without pickle: tensors + JSON --------------------------
    def to_tensors(self) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        tensors = {f"net.{k}": v.detach().contiguous() for k, v in self.model_.state_dict().items()}
        tensors["mean"] = torch.from_numpy(np.ascontiguousarray(self.mean_))
        tensors["scale"] = torch.from_numpy(np.ascontiguousarray(self.scale_))
        meta = {"params": self.get_params(), "classes": [str(c) for c in self.classes_], "n_features_in": int(self.n_features_in_), "n_epochs": self.n_epochs_}
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict[str, Any], meta: dict[str, Any]) -> TorchHead:
        head = cls(**meta["params"])
        head.classes_ = np.array(meta["classes"], dtype=object)
        head.n_features_in_ = int(meta["n_features_in"])
        head.n_epochs_ = int(meta.get("n_epochs", 0))
        head.mean_ = tensors["mean"].numpy()
        head.scale_ = tensors["scale"].numpy()
        if head.mean_.shape != (head.n_features_in_,) or head.scale_.shape != (head.n_features_in_,):
            raise ValueError(f"mean/scale have shape {tuple(head.mean_.shape)}, not ({head.n_features_in_},)")
        model = head._build(head.n_features_in_, len(head.classes_))
        model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        head.model_ = model.eval()
        return head
