"""Gradient estimators behind one interface: GenGS variants first, baselines after."""

from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    ParameterRangeError,
    check_num_samples,
    check_temperature,
    check_window,
    edge_mass,
    inject_gradients,
    truncation_stats,
)
from gengs_lightning.estimators.control_variates import REBAR, RELAX, ControlVariateEstimator, conditional_gumbel
from gengs_lightning.estimators.gengs import (
    GenGSEstimator,
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSStraightThrough,
)
from gengs_lightning.estimators.rao_blackwell import GenGSRB, RaoBlackwellEstimator, StoRB, UnOrd
from gengs_lightning.estimators.relaxations import IGR, GumbelSoftmax, IGRCategorical, fit_igr_prior
from gengs_lightning.estimators.score_function import (
    NVIL,
    VIMCO,
    MuProp,
    Reinforce,
    ReinforceLOO,
    ScoreFunctionEstimator,
    UntruncatedPosterior,
    untruncated_kl,
)

__all__ = [
    "IGR",
    "GumbelSoftmax",
    "IGRCategorical",
    "fit_igr_prior",
    "REBAR",
    "RELAX",
    "ControlVariateEstimator",
    "conditional_gumbel",
    "NVIL",
    "VIMCO",
    "GenGSRB",
    "MuProp",
    "RaoBlackwellEstimator",
    "Reinforce",
    "ReinforceLOO",
    "ScoreFunctionEstimator",
    "StoRB",
    "UnOrd",
    "UntruncatedPosterior",
    "untruncated_kl",
    "Estimator",
    "EstimatorOutput",
    "GenGSEstimator",
    "GenGSExplicit",
    "GenGSImplicit",
    "GenGSNonparametric",
    "GenGSStraightThrough",
    "Objective",
    "ParameterRangeError",
    "check_num_samples",
    "check_temperature",
    "check_window",
    "edge_mass",
    "inject_gradients",
    "truncation_stats",
]
