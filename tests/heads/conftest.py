import pytest

import mlnb


@pytest.fixture(scope="session")
def digits_frame(tmp_path_factory):
    return mlnb.datasets.digits(tmp_path_factory.mktemp("digits"))



@pytest.fixture(scope="session")
def _tiny_state():
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None)
    # Batch-norm statistics from a few random batches: with the initial ones (mean 0, var 1) the
    # features of a random network are ~1e-10, and nothing downstream is meaningful.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(16, 3, 32, 32) * 4 - 2)
    return {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.3")}


@pytest.fixture
def tiny_base(_tiny_state):
    """A tiny random-weight backbone persisted in the test's workspace as ``tiny_base`` (32x32
    input): fine-tuning and export tests run on it in seconds (they are about the plumbing,
    not about accuracy)."""
    from mlnb.features._user_models import persist_model

    persist_model("tiny_base", architecture="mobilenet_v3_small", state_dict=_tiny_state, input_size=32)
    return "tiny_base"
