"""Every head follows the scikit-learn estimator contract."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from mlnb.heads.torch_head import TorchHead


@parametrize_with_checks([TorchHead(hidden=8, epochs=60)])
def test_sklearn_contract(estimator, check):
    check(estimator)
