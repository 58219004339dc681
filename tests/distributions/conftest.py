import pytest
import torch


@pytest.fixture
def float64_default():
    """Run a test with float64 as the default dtype (categorical/multinomial build in the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Keep global torch state (default dtype, grad mode) from leaking between tests."""
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
