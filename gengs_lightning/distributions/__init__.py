"""Pure-torch maths of GenGS: truncated families, the relaxed distribution, the KL, the prior."""

from gengs_lightning.distributions import kl as _kl  # noqa: F401  (registers the KL pair)
from gengs_lightning.distributions.binomial import TruncatedBinomial
from gengs_lightning.distributions.categorical import TruncatedCategorical
from gengs_lightning.distributions.geometric import TruncatedGeometric
from gengs_lightning.distributions.gumbel import sample_gumbel
from gengs_lightning.distributions.kl import kl_truncated_truncated
from gengs_lightning.distributions.multinomial import TruncatedMultinomial, compositions
from gengs_lightning.distributions.negative_binomial import TruncatedNegativeBinomial
from gengs_lightning.distributions.nonparametric import check_eps, quantile_window
from gengs_lightning.distributions.poisson import TruncatedPoisson
from gengs_lightning.distributions.prior import FAMILIES, Prior, family_class
from gengs_lightning.distributions.relaxed import GenGS, relaxed_outcome
from gengs_lightning.distributions.truncated import DiscreteFamily, TruncatedCount, TruncatedDiscrete
from gengs_lightning.distributions.window import Window

__all__ = [
    "FAMILIES",
    "DiscreteFamily",
    "GenGS",
    "Prior",
    "TruncatedBinomial",
    "TruncatedCategorical",
    "TruncatedCount",
    "TruncatedDiscrete",
    "TruncatedGeometric",
    "TruncatedMultinomial",
    "TruncatedNegativeBinomial",
    "TruncatedPoisson",
    "Window",
    "check_eps",
    "compositions",
    "family_class",
    "kl_truncated_truncated",
    "quantile_window",
    "relaxed_outcome",
    "sample_gumbel",
]
