"""Pure-torch maths: truncated families, the relaxed GenGS distribution, the KLs, the prior, IGR's categorical."""

from gengs_lightning.distributions import kl as _kl  # noqa: F401  (registers the KL pair)
from gengs_lightning.distributions.binomial import TruncatedBinomial
from gengs_lightning.distributions.categorical import TruncatedCategorical
from gengs_lightning.distributions.geometric import TruncatedGeometric
from gengs_lightning.distributions.gumbel import (
    conditional_gumbel,
    floor_log_pmf,
    gumbel_top_k,
    sample_gumbel,
    sample_uniform,
    with_samples,
)
from gengs_lightning.distributions.igr import IGRCategorical
from gengs_lightning.distributions.igr_prior import IGRPriorFit, fit_igr_prior
from gengs_lightning.distributions.kl import kl_truncated_truncated
from gengs_lightning.distributions.multinomial import TruncatedMultinomial, compositions
from gengs_lightning.distributions.negative_binomial import TruncatedNegativeBinomial
from gengs_lightning.distributions.nonparametric import check_eps, quantile_window
from gengs_lightning.distributions.poisson import TruncatedPoisson
from gengs_lightning.distributions.prior import COUNT_FAMILIES, FAMILIES, Prior, family_class
from gengs_lightning.distributions.relaxed import GenGS, relaxed_outcome
from gengs_lightning.distributions.truncated import DiscreteFamily, TruncatedCount, TruncatedDiscrete
from gengs_lightning.distributions.untruncated import (
    Untruncated,
    UntruncatedPosterior,
    UntruncatedPrior,
    kl_untruncated,
    untruncated_kl,
)
from gengs_lightning.distributions.window import Window

__all__ = [
    "COUNT_FAMILIES",
    "FAMILIES",
    "DiscreteFamily",
    "GenGS",
    "IGRCategorical",
    "IGRPriorFit",
    "Prior",
    "TruncatedBinomial",
    "TruncatedCategorical",
    "TruncatedCount",
    "TruncatedDiscrete",
    "TruncatedGeometric",
    "TruncatedMultinomial",
    "TruncatedNegativeBinomial",
    "TruncatedPoisson",
    "Untruncated",
    "UntruncatedPosterior",
    "UntruncatedPrior",
    "Window",
    "check_eps",
    "compositions",
    "conditional_gumbel",
    "family_class",
    "fit_igr_prior",
    "floor_log_pmf",
    "gumbel_top_k",
    "kl_truncated_truncated",
    "kl_untruncated",
    "quantile_window",
    "relaxed_outcome",
    "sample_gumbel",
    "sample_uniform",
    "untruncated_kl",
    "with_samples",
]
