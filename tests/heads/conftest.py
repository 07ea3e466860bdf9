import pytest

import mlnb


@pytest.fixture(scope="session")
def digits_frame(tmp_path_factory):
    return mlnb.datasets.digits(tmp_path_factory.mktemp("digits"))
