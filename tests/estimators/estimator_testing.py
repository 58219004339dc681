"""Shared cases, objectives and independent float64 reference tables for the estimator tests."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gengs_lightning.distributions import Prior, Window
from gengs_lightning.distributions.grid import SERIES_TERMS, SERIES_THRESHOLD
from gengs_lightning.estimators import (
    Estimator,
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSStraightThrough,
    registered,
)
from gengs_lightning.models import VAE

#: Unit roundoff of float32 / float64 (half the machine epsilon).
U32 = torch.finfo(torch.float32).eps / 2
U64 = torch.finfo(torch.float64).eps / 2

#: The prior of each family and the windows the tests use for it (``None``: the family takes none).
FAMILIES: dict[str, tuple[dict, tuple]] = {
    "poisson": ({"rate": 2.0}, (8, (1, 7))),
    "geometric": ({"probs": 0.25}, (12, (2, 14))),
    "negative_binomial": ({"total_count": 3, "probs": 0.5}, (10, (1, 9))),
    "binomial": ({"total_count": 20, "probs": 0.3}, (12, (2, 12))),
    "categorical": ({"probs": [0.7, 0.2, 0.1]}, (None,)),
    "multinomial": ({"total_count": 3, "probs": [0.7, 0.2, 0.1]}, (None,)),
}
COUNT_FAMILIES = ("poisson", "geometric", "negative_binomial", "binomial")

KINDS = {
    "explicit": GenGSExplicit,
    "implicit": GenGSImplicit,
    "straight_through": GenGSStraightThrough,
    "nonparametric": GenGSNonparametric,
}


def make_prior(family: str) -> Prior:
    return Prior(family, FAMILIES[family][0])


@dataclass(frozen=True)
class Case:
    """One estimator configuration on one family."""

    kind: str
    family: str
    window: int | tuple[int, int] | None = None
    two_sided: bool = False

    @property
    def id(self) -> str:
        if self.kind == "nonparametric":
            return f"{self.kind}-{self.family}-{'two_sided' if self.two_sided else 'one_sided'}"
        window = "none" if self.window is None else str(self.window).replace(" ", "")
        return f"{self.kind}-{self.family}-w{window}"

    def estimator(self, num_samples: int = 1, tau: float = 1.0, hard: bool = False):
        """The estimator of this case (``hard`` is implied for straight-through)."""
        if self.kind == "nonparametric":
            return GenGSNonparametric(two_sided=self.two_sided, num_samples=num_samples, tau=tau, hard=hard)
        if self.kind == "straight_through":
            return GenGSStraightThrough(window=self.window, num_samples=num_samples, tau=tau)
        return KINDS[self.kind](window=self.window, num_samples=num_samples, tau=tau, hard=hard)


def _build_cases() -> list[Case]:
    cases = []
    for kind in ("explicit", "implicit", "straight_through"):
        for family, (_, windows) in FAMILIES.items():
            cases.extend(Case(kind, family, window) for window in windows)
    for family in COUNT_FAMILIES:
        cases.extend(Case("nonparametric", family, two_sided=two_sided) for two_sided in (False, True))
    return cases


CASES = _build_cases()
CASE_IDS = [case.id for case in CASES]


@dataclass(frozen=True)
class Example:
    """One example construction of a registered estimator (:meth:`Estimator.examples`) on one family it supports."""

    cls: type[Estimator]
    kwargs: tuple[tuple[str, Any], ...]
    family: str

    @property
    def id(self) -> str:
        return f"{self.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in self.kwargs)})-{self.family}"

    def build(self, num_samples: int = 1) -> Estimator:
        """The estimator, with ``num_samples`` raised to the class's minimum."""
        return self.cls(num_samples=max(num_samples, self.cls.min_samples), **dict(self.kwargs))


def registry_examples() -> list[Example]:
    """Every registered estimator's examples on every family of :data:`FAMILIES` it supports, read at call time."""
    return [
        Example(cls, tuple(kwargs.items()), family)
        for cls in registered()
        for kwargs in cls.examples()
        for family in cls.families
        if family in FAMILIES
    ]


def random_params(estimator, prior: Prior, batch: int = 4, dim: int = 2, seed: int = 0, dtype=torch.float32) -> Tensor:
    """Encoder outputs ``(batch, dim, raw_size)`` drawn from a fixed seed, requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, dim, estimator.raw_size(prior), generator=generator, dtype=dtype)
    return raw.requires_grad_()


def linear_objective(z: Tensor) -> Tensor:
    """``(S, B)`` losses ``sum_j w_j z_j`` over the flattened ``(D, *event)`` with distinct weights ``1, 2, ...``.

    Distinct weights matter: a one-hot sample sums to one whatever the class, so a plain sum would be a
    constant with a zero gradient.
    """
    flat = z.flatten(2)
    weights = torch.arange(1, flat.shape[-1] + 1, dtype=z.dtype, device=z.device)
    return flat @ weights


def quadratic_objective(z: Tensor) -> Tensor:
    """A deterministic nonlinear ``(S, B)`` objective: ``sum_j w_j (z_j - 1)^2``."""
    flat = (z.flatten(2) - 1.0).square()
    weights = torch.arange(1, flat.shape[-1] + 1, dtype=z.dtype, device=z.device)
    return flat @ weights


# --------------------------------------------------------------------------------------------------
# Independent reference tables (torch.distributions, float64)
# --------------------------------------------------------------------------------------------------

#: Outcomes summed for reference masses: ``0 .. REFERENCE_SUPPORT - 1``. :func:`reference_pmf_grid`
#: checks that the mass beyond is negligible for every distribution it is used on.
REFERENCE_SUPPORT = 2048


def _torch_count(family: str, params: dict):
    """The untruncated count distribution in :mod:`torch.distributions`, float64, from the package's
    parameters: ``rate`` (Poisson) or ``logits`` and the structural ``total_count``.

    These share the package's conventions: geometric counts failures before the first success and
    the negative binomial counts successes before ``total_count`` failures.
    """
    if family == "poisson":
        return torch.distributions.Poisson(params["rate"])
    logits = params["logits"]
    if family == "geometric":
        return torch.distributions.Geometric(logits=logits)
    if family == "negative_binomial":
        total = torch.as_tensor(params["total_count"], dtype=torch.float64)
        return torch.distributions.NegativeBinomial(total, logits=logits)
    if family == "binomial":
        return torch.distributions.Binomial(int(params["total_count"]), logits=logits)
    raise ValueError(family)


def count_params(table) -> dict:
    """The parameters of a package count table (posterior or prior), free ones as float64 tensors."""
    out = {}
    for name in ("rate", "logits", "total_count"):
        if hasattr(table, name):
            value = getattr(table, name)
            out[name] = value.detach().double() if torch.is_tensor(value) else value
    return out


def _log_pmf_grid(family: str, params: dict, support: int) -> Tensor:
    """``log P(X = k)`` for ``k = 0 .. support - 1``, shape ``(*batch, support)`` (``-inf`` off the support).

    With ``support = REFERENCE_SUPPORT`` it asserts that the grid holds the whole mass to float64
    precision, so that sums over it are exact references.
    """
    dist = _torch_count(family, params)
    k = torch.arange(support, dtype=torch.float64).reshape((-1,) + (1,) * len(dist.batch_shape))
    if family == "binomial":
        total = int(params["total_count"])
        inside = k <= total
        log_pmf = torch.where(inside, dist.log_prob(torch.where(inside, k, 0.0)), -math.inf)
    else:
        log_pmf = dist.log_prob(k)
    log_pmf = log_pmf.movedim(0, -1)
    if support == REFERENCE_SUPPORT:
        missing = -torch.expm1(log_pmf.logsumexp(-1))
        assert (missing.abs() <= support * U64).all(), f"reference grid misses mass {missing.max()}"
    return log_pmf


def reference_count_log_table(family: str, params: dict, window: Window) -> np.ndarray:
    """``log pi`` on ``window``, folded by hand: ``log P(X <= a)``, ``log P(X = k)``, ``log P(X >= b)``.

    Edge masses are log-sum-exps of positive pmf terms (no cancellation), over
    :data:`REFERENCE_SUPPORT` outcomes. Returns a float64 array ``(*batch, n)``.
    """
    grid = _log_pmf_grid(family, params, REFERENCE_SUPPORT)
    table = grid[..., window.low : window.high + 1].clone()
    if window.size == 1:
        table[..., 0] = 0.0
    else:
        table[..., 0] = grid[..., : window.low + 1].logsumexp(-1)
        table[..., -1] = grid[..., window.high :].logsumexp(-1)
    return table.numpy()


def reference_outside_mass(family: str, params: dict, window: Window) -> np.ndarray:
    """``P(X < a) + P(X > b)`` of the untruncated family, float64, ``(*batch,)``."""
    pmf = _log_pmf_grid(family, params, REFERENCE_SUPPORT).exp()
    return (pmf[..., : window.low].sum(-1) + pmf[..., window.high + 1 :].sum(-1)).numpy()


def reference_upper_tail(family: str, params: dict, support: int = REFERENCE_SUPPORT) -> Tensor:
    """``P(X >= n)`` for ``n = 0 .. support - 1``, float64 ``(*batch, support)`` (reverse cumulative sums)."""
    pmf = _log_pmf_grid(family, params, support).exp()
    return pmf.flip(-1).cumsum(-1).flip(-1)


def reference_vector_log_table(family: str, logits: Tensor, outcomes: Tensor, total_count: int | None) -> np.ndarray:
    """``log pi`` over the given one-hot or count-vector outcomes for class logits ``(*batch, K)``."""
    log_probs = torch.log_softmax(logits.detach().double(), -1).numpy()
    counts = outcomes.detach().double().numpy()
    if family == "categorical":
        return log_probs @ counts.T
    log_base = math.lgamma(total_count + 1.0) - torch.lgamma(torch.as_tensor(counts) + 1.0).numpy().sum(-1)
    return log_probs @ counts.T + log_base


# --------------------------------------------------------------------------------------------------
# Error bounds of the package's float32 tables
# --------------------------------------------------------------------------------------------------


def num_terms(window: Window) -> int:
    """A bound on the float64 terms the package's folding sums for a window: outcomes ``0 .. high``, tail terms."""
    return window.high + SERIES_TERMS + 1


def count_table_error(family: str, params: dict, window: Window, log_table: np.ndarray) -> np.ndarray:
    """Per-entry bound on the error of a folded count table computed in float64 and rounded to float32.

    * Rounding to float32 costs ``U32 |log pi|``; float64 sums of ``m`` terms (:func:`num_terms`) cost
      ``m U64 (1 + |log pi|)``.
    * The upper edge ``P(X >= b)`` is ``1 - P(X < b)`` while it holds at least ``SERIES_THRESHOLD``: the
      head's float64 error ``m U64`` becomes a relative error ``m U64 / P(X >= b)``.
    * Below that the package sums a tail series with a proven remainder bracket or evaluates a continued
      fraction, both to float64 precision. The bound used here is looser, so it holds for either: the
      first ``SERIES_TERMS`` terms plus the geometric series ``t_J / (1 - t_J / t_{J-1})``
      (``J = b + SERIES_TERMS``), which bounds the rest for these families (their term ratios never
      increase), relative to ``P(X >= b)``.
    """
    magnitude = np.abs(log_table)
    terms = num_terms(window)
    error = U32 * magnitude + terms * U64 * (1.0 + magnitude)
    if window.size > 1:
        log_pmf = _log_pmf_grid(family, params, window.high + SERIES_TERMS + 1).numpy()
        tail = np.exp(log_table[..., -1])
        last, after = log_pmf[..., -2], log_pmf[..., -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = np.exp(after) / -np.expm1(np.minimum(after - last, 0.0))
            complement = terms * U64 / tail
            series = terms * U64 + np.nan_to_num(rest / tail, nan=0.0)
        error[..., -1] += np.where(tail >= SERIES_THRESHOLD, complement, series)
    return error


def rounded_vector_error(log_table: np.ndarray, logits: Tensor, total_count: int) -> np.ndarray:
    """Bound on a multinomial table ``log_softmax(logits) @ c + log_base`` computed in float64, rounded to float32."""
    log_probs = torch.log_softmax(logits.detach().double(), -1).abs().amax(-1, keepdim=True).numpy()
    num_classes = logits.shape[-1]
    magnitude = np.abs(log_table)
    return U32 * magnitude + (num_classes + 4) * U64 * (1.0 + magnitude + total_count * log_probs)


def log_softmax_error(logits: Tensor) -> np.ndarray:
    """Bound on the error of a float32 ``log_softmax`` of ``logits`` ``(*batch, n)``, per entry.

    ``x_k - logsumexp(x)``: the log-sum-exp of ``n`` terms carries at most ``n + 2`` roundings of
    magnitude ``max |x| + |logsumexp x|``, the subtraction one more.
    """
    x = logits.detach().double()
    n = x.shape[-1]
    scale = x.abs().amax(-1, keepdim=True) + x.logsumexp(-1, keepdim=True).abs() + 1.0
    return ((n + 3) * U32 * scale).expand(x.shape).numpy()


def reference_log_tables(case: Case, prior: Prior, out, params: Tensor):
    """Independent float64 ``(log q, err q, log p, err p)`` on the estimator's outcomes.

    ``log q`` is rebuilt from the posterior's parameters (or, for implicit inference, from the raw
    logits) and ``log p`` from the parameters of ``prior.truncated(window)``: only parameters are taken
    from the package. ``err`` bounds the error of the package's float32 table of the same entries.
    """
    posterior = out.posterior
    count = case.family in COUNT_FAMILIES
    window = posterior.window if count else None
    prior_table = prior.truncated(window)
    if count:
        log_p = reference_count_log_table(case.family, count_params(prior_table), window)
        err_p = count_table_error(case.family, count_params(prior_table), window, log_p)
    elif case.family == "categorical":
        log_p = reference_vector_log_table(case.family, prior_table.logits, posterior.outcomes, None)
        err_p = log_softmax_error(prior_table.logits)
    else:
        log_p = reference_vector_log_table(case.family, prior_table.logits, posterior.outcomes, prior_table.total_count)
        err_p = rounded_vector_error(log_p, prior_table.logits, prior_table.total_count)
    if case.kind == "implicit":
        log_q = torch.log_softmax(params.detach().double(), -1).numpy()
        err_q = log_softmax_error(params)
    elif count:
        log_q = reference_count_log_table(case.family, count_params(posterior), window)
        err_q = count_table_error(case.family, count_params(posterior), window, log_q)
    elif case.family == "categorical":
        log_q = reference_vector_log_table(case.family, posterior.logits, posterior.outcomes, None)
        err_q = log_softmax_error(posterior.logits)
    else:
        log_q = reference_vector_log_table(case.family, posterior.logits, posterior.outcomes, posterior.total_count)
        err_q = rounded_vector_error(log_q, posterior.logits, posterior.total_count)
    return log_q, err_q, log_p, err_p


def kl_and_tolerance(log_q, err_q, log_p, err_p) -> tuple[np.ndarray, np.ndarray]:
    """Reference ``KL = sum_{d,k} q_k (log q_k - log p_k)`` per example and a bound on the float32 error.

    First-order error analysis: input errors ``e_q``, ``e_p`` of the log tables move the KL by at most
    ``sum q (e_q (|log q - log p| + 1) + e_p)``; ``exp``, the subtraction, the product and the sums over
    ``n`` outcomes and ``D`` dimensions add at most ``(n + D + 2) U32 sum q |log q - log p|``.
    """
    shape = np.broadcast_shapes(np.shape(log_q), np.shape(log_p))
    log_q, err_q = np.broadcast_to(log_q, shape), np.broadcast_to(err_q, shape)
    log_p, err_p = np.broadcast_to(log_p, shape), np.broadcast_to(err_p, shape)
    q = np.exp(log_q)
    diff = np.where(q > 0, log_q - log_p, 0.0)
    kl = (q * diff).sum((-1, -2))
    n, dim = shape[-1], shape[-2]
    input_error = (q * (err_q * (np.abs(diff) + 1.0) + err_p)).sum((-1, -2))
    rounding = (n + dim + 2) * U32 * (q * np.abs(diff)).sum((-1, -2))
    return kl, input_error + rounding


def assert_table_close(actual: Tensor, expected: np.ndarray, error: np.ndarray, what: str) -> None:
    """``|actual - expected| <= error`` entrywise (``error`` from the bounds above)."""
    actual = actual.detach().double().numpy()
    expected = np.broadcast_to(expected, actual.shape)
    error = np.broadcast_to(error, actual.shape)
    gap = np.abs(actual - expected)
    bad = ~(gap <= error)
    assert not bad.any(), (
        f"{what}: {bad.sum()} entries off; worst gap {gap.max():.3g} vs bound {error.flat[gap.argmax()]:.3g}\n"
        f"actual {actual[bad][:5]}\nexpected {expected[bad][:5]}"
    )


def reference_cdf(family: str, params: dict, support: int = REFERENCE_SUPPORT) -> Tensor:
    """``P(X <= k)`` for ``k = 0 .. support - 1``, float64 ``(*batch, support)`` (cumulative pmf sums)."""
    return _log_pmf_grid(family, params, support).exp().cumsum(-1)


def digits_vae(estimator, prior: Prior | None = None, **kwargs):
    """A small VAE on the 8x8 digits (4 latent dimensions, one hidden layer of 16) for smoke tests."""
    prior = Prior("poisson", {"rate": 2.0}) if prior is None else prior
    return VAE(estimator, prior, data_dim=64, latent_dim=4, encoder_hidden=(16,), image_shape=(8, 8), **kwargs)


# --------------------------------------------------------------------------------------------------
# A coupled two-dimensional problem with an exact gradient by enumeration (GO, IndeCateR)
# --------------------------------------------------------------------------------------------------

#: Latent dimensions and independent estimates (rows of one batch) of the coupled problem.
COUPLED_DIM, COUPLED_DRAWS = 2, 4000


def coupled_objective(v: Tensor):
    """``f(z) = sum_j w_j (z_j - 1)^2 + v_b z_first z_last`` over the flattened ``(D, *event)``: couples dimensions."""

    def objective(z: Tensor) -> Tensor:
        flat = z.flatten(2)
        weights = torch.arange(1, flat.shape[-1] + 1, dtype=z.dtype)
        return (flat - 1.0).square() @ weights + v * flat[..., 0] * flat[..., -1]

    return objective


def coupled_exact_gradient(estimator, prior: Prior, raw: Tensor, v: float) -> Tensor:
    """``grad (E_q f + KL)`` w.r.t. the encoder output ``(1, D, raw)`` and ``v``, flattened, by enumerating ``n^D`` outcomes."""
    raw = raw.clone().requires_grad_()
    v_param = torch.tensor(v, dtype=raw.dtype, requires_grad=True)
    posterior = estimator.posterior(raw, prior)  # (1, D, n)
    dim, n = raw.shape[1], posterior.num_outcomes
    combos = torch.tensor(list(itertools.product(range(n), repeat=dim)))  # (n^D, D)
    z = posterior.outcomes.to(raw)[combos].unsqueeze(1)  # (n^D, 1, D, *event)
    log_p = posterior.log_pmf[0, torch.arange(dim), combos].sum(-1)  # (n^D,)
    expected = (log_p.exp() * coupled_objective(v_param)(z)[:, 0]).sum()
    kl = torch.distributions.kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum()
    grad_raw, grad_v = torch.autograd.grad(expected + kl, (raw, v_param))
    return torch.cat([grad_raw.flatten(), grad_v.reshape(1)])


def coupled_estimates(estimator, prior: Prior, v: float = 0.5, seed: int = 7):
    """``COUPLED_DRAWS`` independent estimates of the coupled problem's gradient and its exact value.

    Each row of one batch is an estimate: the same encoder output in every row and one entry of ``v`` per
    row (the surrogate is a batch mean, so ``B * grad`` of a row is that row's estimate).

    Returns:
        ``(estimates (draws, P), exact (P,), output)`` in float64, ``P`` the encoder outputs plus ``v``.
    """
    raw = random_params(estimator, prior, 1, COUPLED_DIM, seed=5).detach()
    params = raw.expand(COUPLED_DRAWS, COUPLED_DIM, -1).clone().requires_grad_()
    v_rows = torch.full((COUPLED_DRAWS,), v, requires_grad=True)
    torch.manual_seed(seed)
    out = estimator(params, coupled_objective(v_rows), prior)
    out.surrogate.backward()
    estimates = torch.cat([params.grad.flatten(1), v_rows.grad[:, None]], 1).double() * COUPLED_DRAWS
    return estimates, coupled_exact_gradient(estimator, prior, raw.double(), v), out


def assert_mean_within(estimates: Tensor, exact: Tensor, num_se: float = 4.0) -> Tensor:
    """The mean of the estimates is within ``num_se`` standard errors (plus a float32 term) of ``exact``; the SE."""
    mean, se = estimates.mean(0), estimates.std(0) / estimates.shape[0] ** 0.5
    tolerance = num_se * se + 1e-4 * (exact.abs() + 1)
    assert ((mean - exact).abs() <= tolerance).all(), f"mean {mean} vs exact {exact} ({num_se} SE {num_se * se})"
    return se
