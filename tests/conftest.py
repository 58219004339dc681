"""Shared fixtures: quiet toy runs of the CLI under a temporary directory; global torch state restored."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: small ops, no oversubscription

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import CONFIGS  # noqa: E402
from torch.distributions import Distribution  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_distribution_validation():
    """Keep torch.distributions' default argument validation from leaking between tests.

    ``torch.compile`` turns it off for the whole process on first use (torch/_dynamo/eval_frame.py), so a
    test that compiles would change what later tests in its worker see.
    """
    default = Distribution._validate_args
    yield
    Distribution.set_default_validate_args(default)


@pytest.fixture
def toy_args(tmp_path: Path) -> Callable[..., list[str]]:
    """CLI arguments for a quiet toy run that logs under ``tmp_path/logs``."""

    def build(family: str = "poisson", *extra: str) -> list[str]:
        return [
            "--config",
            str(CONFIGS / "toy" / f"{family}.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *extra,
        ]

    return build
