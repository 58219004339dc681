"""Gradient estimators behind one interface: GenGS variants first, baselines after."""

from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    check_num_samples,
    check_temperature,
    inject_gradients,
)
from gengs_lightning.estimators.gengs import (
    GenGSEstimator,
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSStraightThrough,
)

__all__ = [
    "Estimator",
    "EstimatorOutput",
    "GenGSEstimator",
    "GenGSExplicit",
    "GenGSImplicit",
    "GenGSNonparametric",
    "GenGSStraightThrough",
    "Objective",
    "check_num_samples",
    "check_temperature",
    "inject_gradients",
]
