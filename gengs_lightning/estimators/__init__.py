"""Gradient estimators behind one interface: GenGS variants first, baselines after.

One file per family of estimators: :mod:`.gengs` (the GenGS kinds, GenGS-RB included),
:mod:`.gumbel_softmax`, :mod:`.igr`, :mod:`.score_function` (REINFORCE, RF*, VIMCO),
:mod:`.control_variates` (NVIL, MuProp, REBAR, RELAX), :mod:`.rao_blackwell` (StoRB, UnOrd),
:mod:`.straight_through` (ReinMax, Gapped ST, Gumbel-Rao), :mod:`.indecater` (IndeCateR) and
:mod:`.go_gradient` (GO gradient), on the
interface of :mod:`.base` and the windowed base of :mod:`.windowed`; :mod:`.registry` lists them.
"""

from gengs_lightning.distributions import (
    IGRCategorical,
    UntruncatedPosterior,
    conditional_gumbel,
    fit_igr_prior,
    untruncated_kl,
)
from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    ParameterRangeError,
    check_num_samples,
    check_temperature,
    inject_gradients,
)
from gengs_lightning.estimators.control_variates import NVIL, REBAR, RELAX, ControlVariateEstimator, MuProp
from gengs_lightning.estimators.gengs import (
    GenGSEstimator,
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSRB,
    GenGSStraightThrough,
)
from gengs_lightning.estimators.go_gradient import GOGradient
from gengs_lightning.estimators.gumbel_softmax import GumbelSoftmax
from gengs_lightning.estimators.igr import IGR
from gengs_lightning.estimators.indecater import IndeCateR
from gengs_lightning.estimators.rao_blackwell import RaoBlackwellEstimator, StoRB, UnOrd
from gengs_lightning.estimators.registry import register, registered
from gengs_lightning.estimators.score_function import VIMCO, Reinforce, ReinforceLOO, ScoreFunctionEstimator
from gengs_lightning.estimators.straight_through import (
    GappedStraightThrough,
    GumbelRao,
    ReinMax,
    StraightThroughEstimator,
)
from gengs_lightning.estimators.windowed import WindowedEstimator, check_window, edge_mass, truncation_stats

__all__ = [
    "IGR",
    "GOGradient",
    "IndeCateR",
    "GumbelSoftmax",
    "GappedStraightThrough",
    "GumbelRao",
    "ReinMax",
    "StraightThroughEstimator",
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
    "WindowedEstimator",
    "check_num_samples",
    "check_temperature",
    "check_window",
    "edge_mass",
    "inject_gradients",
    "register",
    "registered",
    "truncation_stats",
]
