import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# CI runs a bounded, derandomized profile; HYPOTHESIS_PROFILE=long explores much further locally.
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def poisoned_results():
    """Results the kernels allocate start as NaN, not as whatever memory held (zeros, often): a position
    a kernel leaves unwritten fails the comparison with naive."""
    from fastconv import _workspace

    _workspace.POISON = True
    yield
    _workspace.POISON = False


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
