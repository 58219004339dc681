"""Rao-Blackwellised estimators on the truncated table: StoRB and UnOrd (GenGS-RB is with the GenGS kinds).

All three work on the truncated categorical representation of the latent, as
:class:`~gengs_lightning.estimators.GenGSExplicit` builds it: per latent dimension the encoder gives the
family's parameters (``raw_size = prior.raw_size``), the posterior is the prior's family on the window
(tails folded into the edge outcomes, journal Definition 3), a table ``(c, log q)`` of ``n`` outcomes,
and the KL is the closed form between that posterior and the prior truncated on the same window
(journal Proposition 6), exact and differentiated by autograd.

The GenGS papers compare against DetRB/StoRB (Liu et al. 2019), their variants with Kool et al.'s
built-in baseline (marked ``*``) and the unordered set estimator UnOrd (Kool et al. 2020), and adapt the
Rao-Blackwellisation to GenGS ("GenGS-RB": one category summed exactly, the rest estimated by GenGS,
NeurIPS Section 6.1). Those are estimators for one categorical variable. With ``D`` latent dimensions,
whose objective ``f(z_1, ..., z_D)`` couples them, the estimators here Rao-Blackwellise **per
dimension**: the gradient with respect to the parameters of dimension ``d`` is the one-variable
estimator applied to ``x -> f(x, z_{-d})``, with the other dimensions at an exact draw ``z_{-d}`` of
their posteriors, drawn independently of dimension ``d``'s noise (so the estimate stays unbiased).
This costs one objective evaluation per extra category per dimension instead of the ``m^D`` joint
combinations a joint sum would need (the complexity the NeurIPS paper points out). The configurations
are evaluated in one call of ``objective`` on a ``(S', B, D, *event)`` tensor; ``objective`` must accept
any number ``S'`` of samples (the models' objectives do).

Gradients of the model's own parameters (a decoder's) are the same Rao-Blackwellised averages of
``grad f`` (weights held fixed), averaged over the ``D`` per-dimension estimates, each of which is an
(unbiased, for StoRB and UnOrd) estimate of ``E f``. The ``surrogate``'s value is ``loss.mean()``; only
its gradient is the estimator's.

In eval mode every estimator draws ``num_samples`` exact samples of the table (Gumbel-max) and
evaluates the objective there only: validation and test losses are those of the discrete model.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from functools import lru_cache

import torch
from torch import Tensor

from gengs_lightning.checks import check_bool, check_int
from gengs_lightning.distributions import Prior, TruncatedDiscrete, floor_log_pmf, gumbel_top_k
from gengs_lightning.estimators.base import EstimatorOutput, Objective
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import WindowArg, WindowedEstimator

#: Largest set size of :class:`UnOrd`: its set probabilities enumerate the ``k!`` orderings.
MAX_SET_SIZE = 6


def log_mass_outside(log_pmf: Tensor, index: Tensor) -> Tensor:
    """``log(1 - sum_j q[index_j])`` computed as the log-sum of the other entries (no cancellation).

    Args:
        log_pmf: ``(..., n)`` log-probabilities, broadcastable to ``index``'s leading shape.
        index: ``(..., j)`` distinct category indices.

    Returns:
        ``(...)``; ``-inf`` when ``index`` covers the whole table.
    """
    log_pmf = log_pmf.expand(index.shape[:-1] + log_pmf.shape[-1:])
    return log_pmf.scatter(-1, index, -torch.inf).logsumexp(-1)


@lru_cache(maxsize=MAX_SET_SIZE + 1)
def _orderings(k: int) -> tuple[Tensor, Tensor]:
    """All ``k!`` orderings of ``range(k)`` in lexicographic order, and for each ``s`` the others in order."""
    perms = torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)
    others = torch.tensor([[t for t in range(k) if t != s] for s in range(k)], dtype=torch.long).reshape(k, k - 1)
    return perms, others


def unordered_set_probabilities(log_p: Tensor, log_outside: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Exact probabilities of a set drawn without replacement and of its first two draws.

    For an unordered set ``S = {s_1, ..., s_k}`` drawn without replacement from ``q`` (Kool et al. 2020),
    every ordering ``pi`` of ``S`` has probability ``prod_i q(pi_i) / (1 - sum_{j<i} q(pi_j))`` and
    ``p(S)`` is their sum. The ``k!`` orderings are enumerated (exact; ``k <= MAX_SET_SIZE``). The
    remaining mass before the ``i``-th draw is computed as ``q(outside S) + sum_{j >= i} q(pi_j)``: a
    sum of positive terms, so no cancellation even when ``S`` holds almost all the mass.

    Args:
        log_p: ``log q(s)`` of the set's elements, ``(..., k)``.
        log_outside: ``log q(D \ S)``, ``(...)`` (``-inf`` when ``S`` is the whole table).

    Returns:
        ``log p(S)`` ``(...)``; ``log P(b_1 = s | S) = log q(s) R(S, s)`` ``(..., k)`` with Kool's
        leave-one-out ratio ``R(S, s) = p^{D \ s}(S \ s) / p(S)``; and
        ``log P(b_1 = s, b_2 = s' | S)`` ``(..., k, k)`` (``-inf`` on the diagonal).
    """
    k = log_p.shape[-1]
    perms, others = _orderings(k)
    perms, others = perms.to(log_p.device), others.to(log_p.device)
    ordered = log_p[..., perms]  # (..., k!, k)
    remaining = torch.logaddexp(ordered.flip(-1).logcumsumexp(-1).flip(-1), log_outside[..., None, None])
    log_order = (ordered - remaining).sum(-1)  # (..., k!)
    log_set = log_order.logsumexp(-1)
    log_order = log_order - log_set.unsqueeze(-1)  # P(ordering | S)
    first = log_order.unflatten(-1, (k, -1)).logsumexp(-1)
    pair_compact = log_order.unflatten(-1, (k, k - 1, -1)).logsumexp(-1)  # second draw among the others
    pair = log_p.new_full(log_p.shape + (k,), -torch.inf)
    pair.scatter_(-1, others.expand(log_p.shape[:-1] + (k, k - 1)), pair_compact)
    return log_set, first, pair


def substitute(base: Tensor, alternatives: Tensor) -> Tensor:
    """The configurations that change one latent dimension of ``base`` at a time.

    Args:
        base: Samples ``(R, B, D, *event)``.
        alternatives: Values ``(R, B, D, J, *event)``: ``J`` alternatives for every dimension.

    Returns:
        ``(R * D * J, B, D, *event)``: entry ``(r, d, j)`` (row-major) is ``base[r]`` with dimension ``d``
        set to ``alternatives[r, :, d, j]``. Differentiable in ``alternatives``.
    """
    num_rep, batch, dim, num_alt = alternatives.shape[:4]
    event = base.shape[3:]
    trailing = tuple(range(4, 4 + len(event)))
    alt = alternatives.permute(0, 2, 3, 1, *trailing).unsqueeze(4)  # (R, D, J, B, 1, *event)
    mask = torch.eye(dim, dtype=torch.bool, device=base.device).reshape(1, dim, 1, 1, dim, *([1] * len(event)))
    configs = torch.where(mask, alt, base[:, None, None])  # (R, D, J, B, D, *event)
    return configs.reshape(num_rep * dim * num_alt, batch, dim, *event)


class RaoBlackwellEstimator(WindowedEstimator):
    """Shared machinery of the Rao-Blackwellised estimators on the truncated table.

    The posterior is the prior's family truncated on ``window`` (as :class:`GenGSExplicit`), the KL the
    closed form on that window (journal Proposition 6). Subclasses implement :meth:`_train_forward`.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Samples per example (see the subclass).
        tau: Temperature (used by :class:`GenGSRB` only; kept by the others for a uniform interface).
    """

    # -- the shared flow --------------------------------------------------------------------------------
    def check_table(self, posterior: TruncatedDiscrete, prior: Prior) -> None:
        """Check the table size against the estimator's arguments (before any objective call).

        Raises:
            ValueError: If the table has too few categories for the estimator.
        """

    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        posterior, prior_table = self.tables(params, prior)
        self.check_table(posterior, prior)
        kl_term = self.kl_term(posterior, prior_table, kl, params)
        stats = self.truncation_stats(posterior, prior_table, prior)
        if not self.training:
            return self.exact_output(posterior, objective, kl_term, stats)
        sample, value, estimate, extra_stats = self._train_forward(posterior, objective, params.shape[0])
        # The value is loss.mean(); the gradient is the KL's (exact) plus the estimate's.
        surrogate = (value.detach().mean(0) + kl_term).mean()
        if estimate.requires_grad:
            surrogate = surrogate + (estimate.mean() - estimate.mean().detach())
        stats.update(extra_stats)
        return self.output(sample, value, kl_term, posterior, stats, surrogate)

    @abstractmethod
    def _train_forward(
        self, posterior: TruncatedDiscrete, objective: Objective, batch: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Training pass: ``(sample, objective at sample, per-example estimate (B,), stats)``.

        The estimate's gradient is the estimator's gradient of ``E f`` (encoder and model parameters);
        its value is irrelevant.
        """

    def _exact_draws(self, posterior: TruncatedDiscrete) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``num_samples`` exact draws of the table, for the estimators that substitute single dimensions.

        Returns:
            ``log_pmf`` ``(B, D, n)`` (floored, differentiable), ``outcomes`` ``(n, *event)``, the drawn
            indices ``(S, B, D)`` and the samples ``(S, B, D, *event)``.
        """
        log_pmf = floor_log_pmf(posterior.log_pmf)
        outcomes = posterior.outcomes.to(log_pmf)
        with torch.no_grad():
            index = torch.distributions.Categorical(logits=log_pmf.detach()).sample((self.num_samples,))
        return log_pmf, outcomes, index, outcomes[index]

    def _evaluate(self, objective: Objective, configs: Tensor, batch: int) -> Tensor:
        """``objective(configs)`` for ``configs`` of shape ``(S', B, D, *event)``, checked to be ``(S', B)``."""
        return self.check_objective(objective(configs), batch, configs.shape[0], "Rao-Blackwellisation configurations")


class _SetEstimator(RaoBlackwellEstimator):
    """StoRB and UnOrd: ``k`` draws without replacement per dimension, weighted score-function terms.

    Per repetition ``r``, example and dimension ``d``, Gumbel-top-k gives ``b_1, ..., b_k``; ``b_1`` of
    every dimension forms the exact sample ``z``. ``F[j] = f(z with z_d = b_j)`` (``F[0] = f(z)``,
    shared by all dimensions). With weights ``a_j`` and baselines ``beta_j`` from the subclass
    (:meth:`_weights`, held fixed), the estimate of dimension ``d`` is
    ``sum_j (a_j (F_j - beta_j)) grad log q(b_j)`` for the encoder and ``sum_j a_j grad F_j`` (averaged over
    ``d``) for the model's parameters.
    """

    unbiased = True

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        return ({}, {"builtin_baseline": False})

    @abstractmethod
    def _shape(self) -> tuple[int, int]:
        """Independent repetitions ``R`` and draws per dimension ``k``."""

    def check_table(self, posterior: TruncatedDiscrete, prior: Prior) -> None:
        """``k`` distinct draws per dimension need a table of at least ``k`` categories.

        Raises:
            ValueError: Naming the argument, the posterior's window and size, and what is accepted.
        """
        n, k = posterior.num_outcomes, self._shape()[1]
        if k > n:
            argument, accepted = self._draws_described(n)
            where = f"window {posterior.window}" if posterior.window is not None else "its outcome table"
            raise ValueError(
                f"{argument} needs {k} distinct categories per dimension: the {prior.family.family_name} "
                f"posterior on {where} has n={n}; accepted: {accepted}"
            )

    @abstractmethod
    def _draws_described(self, n: int) -> tuple[str, str]:
        """For the message of :meth:`check_table`: the argument that sets ``k`` and its accepted range."""

    def _num_exact(self) -> int:
        """How many of the ``k`` draws are weighted exactly (logged as the mean mass ``rb_mass``)."""
        return self._shape()[1]

    @abstractmethod
    def _weights(self, log_pmf: Tensor, index: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, beta)`` from float64 ``log_pmf`` ``(R, B, D, n)``, ``index`` and ``values`` ``(R, B, D, k)``.

        ``a`` is ``(R, B, D, k)``; ``beta`` broadcasts to it.
        """

    def _reported(self, outcomes: Tensor, index: Tensor) -> Tensor:
        """The samples to report ``(S, B, D, *event)`` (their first row must be the exact sample ``z``)."""
        return outcomes[index[..., 0]]

    def _train_forward(self, posterior, objective, batch):
        num_rep, k = self._shape()
        log_pmf = floor_log_pmf(posterior.log_pmf)  # (B, D, n), differentiable
        outcomes = posterior.outcomes.to(log_pmf)
        dim = log_pmf.shape[1]
        index = gumbel_top_k(log_pmf, k, (num_rep,))  # (R, B, D, k)
        sample = self._reported(outcomes, index)
        value = self.check_objective(objective(sample), batch)
        base, base_value = sample[:num_rep], value[:num_rep]  # the exact draws b_1 and f there
        if dim == 1 and sample.shape[0] == k and num_rep == 1:
            # one latent dimension: the reported samples are the set itself
            values = value.T.reshape(1, batch, 1, k)
        else:
            configs = substitute(base, outcomes[index[..., 1:]])
            rest = self._evaluate(objective, configs, batch).reshape(num_rep, dim, k - 1, batch)
            values = torch.cat(
                [base_value[:, :, None, None].expand(num_rep, batch, dim, 1), rest.permute(0, 3, 1, 2)], -1
            )

        with torch.no_grad():
            a, beta = self._weights(
                log_pmf.detach().double().expand((num_rep,) + log_pmf.shape), index, values.double()
            )
            coeff = (a * (values.double() - beta)).to(log_pmf.dtype)
            a = a.to(log_pmf.dtype)
        log_q = log_pmf.expand((num_rep,) + log_pmf.shape).gather(-1, index)  # (R, B, D, k)
        score = (log_q * coeff).sum((-1, -2))  # encoder: summed over dimensions
        model = (a * values).sum(-1).mean(-1)  # model parameters: averaged over the D estimates
        estimate = (score + model).mean(0)
        return sample, value, estimate, {"rb_mass": log_q.detach()[..., : self._num_exact()].exp().sum(-1).mean()}


@register
class StoRB(_SetEstimator):
    """Stochastic Rao-Blackwellisation: the stochastic sum-and-sample estimator (Liu et al. 2019; Kool et al. 2020).

    Per latent dimension, an ordered sample without replacement ``b_1, ..., b_{m+1}`` of the truncated
    table (Gumbel-top-k): the ``m = num_summed`` categories ``C = {b_1, ..., b_m}`` are summed exactly
    and ``b_{m+1}``, an exact draw of the table restricted to the rest, estimates the remaining mass
    (Kool et al. 2020, Theorem 3; DetRB would take the ``m`` most probable categories instead)::

        grad E f = sum_{j <= m} grad q(b_j) f(b_j) + (1 - q(C)) grad log q(b_{m+1}) f(b_{m+1})

    unbiased because ``b_{m+1}`` given ``C`` is a draw of ``q`` off ``C`` (for any ``C``, hence for a
    random one). With ``builtin_baseline`` (Kool et al.'s "*" variant, "StoRB*" in the GenGS papers) ``f``
    is replaced by ``f - beta`` in both terms, ``beta`` the sum-and-sample estimate of ``E f`` built from
    the summed categories only, ``sum_{j<m} q(b_j) f(b_j) + (1 - sum_{j<m} q(b_j)) f(b_m)`` (``f(b_1)`` for
    ``m = 1``), as in Kool et al.'s reference implementation. It depends on ``C`` alone and
    ``E[(1 - q(C)) grad log q(b_{m+1}) | C] = -sum_{j<=m} grad q(b_j)``, so the baseline terms cancel in
    expectation: still unbiased, at no extra evaluation. With ``m = n - 1`` the sample is the one category
    left, weighted by its own mass: every category is evaluated and the estimate is the exact gradient
    (zero variance for one latent dimension); ``m >= n`` leaves nothing to sample and is rejected.

    Variance: without the baseline StoRB is a Rao-Blackwellisation of single-sample REINFORCE (never
    worse than it, per dimension), and UnOrd is in turn the Rao-Blackwellisation of StoRB over the order
    of the draws. At an equal number of evaluations StoRB need not beat REINFORCE averaged over i.i.d.
    draws: on the Poisson test problem (window 8) StoRB* with ``m = 1`` (2 evaluations) has a larger
    variance than plain REINFORCE with 2 draws, while UnOrd* with ``k = 2`` has a smaller one.

    Multiple latent dimensions: per dimension with the other dimensions at ``b_1`` (an exact draw),
    see the module docstring. The model's parameters get ``mean_d`` of the sum-and-sample averages of
    ``grad f``.

    Samples from: the posterior of the prior's family truncated on the window; ``sample`` holds the
    exact draws ``b_1`` (``num_samples`` independent repetitions, averaged), so the reported loss is an
    unbiased estimate of the discrete model's loss. KL: closed form between the truncated posterior and
    the prior truncated on the same window (journal Proposition 6).

    Cost per step: ``S (1 + D m)`` objective evaluations per example in training (``S = num_samples``,
    ``D`` latent dimensions; two calls of ``objective``: the ``S`` samples, then the ``S D m``
    configurations), ``S`` in eval mode.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`RaoBlackwellEstimator`).
        num_summed: Categories summed per dimension, ``m >= 1``; at run time ``m <= n - 1``.
        builtin_baseline: Subtract the built-in baseline (the "*" variant).
        num_samples: Independent repetitions per example, averaged.
        tau: Kept for the uniform interface (unused).

    Raises:
        ValueError: For an invalid window, ``num_summed``, ``builtin_baseline``, ``num_samples`` or ``tau``;
            at run time (before any objective call) if ``num_summed >= n``.
    """

    def __init__(
        self,
        window: WindowArg = None,
        num_summed: int = 1,
        builtin_baseline: bool = True,
        num_samples: int = 1,
        tau: float = 1.0,
    ):
        check_int("num_summed", num_summed, 1, meaning="categories summed per dimension")
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.num_summed = num_summed
        self.builtin_baseline = check_bool("builtin_baseline", builtin_baseline)

    def _draws_described(self, n: int) -> tuple[str, str]:
        return f"num_summed={self.num_summed} (m summed and one sampled)", f"1 <= num_summed <= n - 1 = {n - 1}"

    def _shape(self) -> tuple[int, int]:
        return self.num_samples, self.num_summed + 1

    def _num_exact(self) -> int:
        return self.num_summed

    def _weights(self, log_pmf: Tensor, index: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        m = self.num_summed
        log_q = log_pmf.gather(-1, index)
        rest = log_mass_outside(log_pmf, index[..., :m]).exp()
        a = torch.cat([log_q[..., :m].exp(), rest.unsqueeze(-1)], -1)
        if not self.builtin_baseline:
            return a, values.new_zeros(())
        if m == 1:
            beta = values[..., :1]
        else:
            tail = log_mass_outside(log_pmf, index[..., : m - 1]).exp()
            beta = (log_q[..., : m - 1].exp() * values[..., : m - 1]).sum(-1) + tail * values[..., m - 1]
            beta = beta.unsqueeze(-1)
        return a, beta

    def extra_repr(self) -> str:
        return f"num_summed={self.num_summed}, builtin_baseline={self.builtin_baseline}, {super().extra_repr()}"


@register
class UnOrd(_SetEstimator):
    r"""The unordered set estimator with its built-in baseline (Kool et al. 2020, Theorems 2 and 4).

    Per latent dimension, ``k = num_samples`` categories ``S`` drawn without replacement from the
    truncated table (Gumbel-top-k)::

        grad E f = sum_{s in S} grad q(s) R(S, s) (f(s) - B(s))
        B(s) = q(s) f(s) + sum_{s' in S, s' != s} q(s') R^{D \ s}(S, s') f(s')

    with the leave-one-out ratio ``R(S, s) = p^{D \ s}(S \ s) / p(S)`` (so ``q(s) R(S, s)`` is the
    probability that ``s`` was drawn first, given the set) and ``B(s)`` the unordered set estimate of
    ``E f`` given that ``s`` was drawn first (its conditional expectation is ``E f`` whatever ``s``, hence
    unbiased; ``builtin_baseline=False`` drops it). The set probabilities are exact: the ``k!`` orderings
    of the set are enumerated in float64 (:func:`unordered_set_probabilities`), so
    ``2 <= k <= MAX_SET_SIZE = 6``; the weights are held fixed (only ``q(s)`` is differentiated).
    ``k = n`` gives the exact gradient (zero variance for one latent dimension).

    Multiple latent dimensions: per dimension with the other dimensions at their first draws ``b_1``
    (an exact sample), see the module docstring.

    Samples from: the posterior of the prior's family truncated on the window. In training ``sample``
    holds the ``k`` draws without replacement (row ``s`` has every dimension at its ``s``-th draw; row 0
    is an exact sample), so the reported training loss, their plain mean, favours likely outcomes (it is
    not the estimator's weighted estimate); in eval mode ``k`` independent exact draws. KL: closed form
    between the truncated posterior and the prior truncated on the same window (journal Proposition 6).

    Cost per step: ``k`` objective evaluations per example for one latent dimension, ``k + D (k - 1)``
    for ``D > 1`` (two calls: the ``k`` reported rows, then the ``D (k - 1)`` configurations); ``k`` in
    eval mode.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`RaoBlackwellEstimator`).
        num_samples: The set size ``k``, ``2 <= k <= 6``; at run time ``k <= n``.
        builtin_baseline: Subtract the leave-one-out built-in baseline ``B(s)``.
        tau: Kept for the uniform interface (unused).

    Raises:
        ValueError: For an invalid window, ``num_samples``, ``builtin_baseline`` or ``tau``; at run time
            (before any objective call) if ``k > n``.
    """

    min_samples = 2  # a set of one has no leave-one-out baseline

    def __init__(
        self,
        window: WindowArg = None,
        num_samples: int = 2,
        builtin_baseline: bool = True,
        tau: float = 1.0,
    ):
        meaning = "the set size k of UnOrd, whose set probabilities enumerate the k! orderings"
        check_int("num_samples", num_samples, 2, MAX_SET_SIZE, meaning=meaning)
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.builtin_baseline = check_bool("builtin_baseline", builtin_baseline)

    def _draws_described(self, n: int) -> tuple[str, str]:
        return f"num_samples (set size k={self.num_samples})", f"2 <= k <= min(n, {MAX_SET_SIZE})"

    def _shape(self) -> tuple[int, int]:
        return 1, self.num_samples

    def _reported(self, outcomes: Tensor, index: Tensor) -> Tensor:
        return outcomes[index[0].movedim(-1, 0)]  # (k, B, D, *event)

    def _weights(self, log_pmf: Tensor, index: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        k = self.num_samples
        log_q = log_pmf.gather(-1, index)  # (R, B, D, k)
        log_outside = log_mass_outside(log_pmf, index)
        _, log_first, log_pair = unordered_set_probabilities(log_q, log_outside)
        a = log_first.exp()
        if not self.builtin_baseline:
            return a, values.new_zeros(())
        # 1 - q(s) = q(outside) + sum_{s' != s} q(s'), without cancellation
        eye = torch.eye(k, dtype=torch.bool, device=log_q.device)
        log_rest = torch.logaddexp(
            log_q.unsqueeze(-2).masked_fill(eye, -torch.inf).logsumexp(-1), log_outside[..., None]
        )
        second = (log_pair - log_first.unsqueeze(-1)).exp()  # P(b_2 = s' | b_1 = s, S)
        beta = log_q.exp() * values + log_rest.exp() * (second * values.unsqueeze(-2)).sum(-1)
        return a, beta

    def extra_repr(self) -> str:
        return f"builtin_baseline={self.builtin_baseline}, {super().extra_repr()}"
