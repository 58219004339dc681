"""Estimator tests: every test starts from the same global seed (the estimators draw their noise from it)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_restore_torch_state():
    """Seed torch's global generator and keep default dtype and grad mode from leaking between tests."""
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
