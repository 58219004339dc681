"""Invertible Gaussian Reparameterization (Potapczynski, Loaiza-Ganem and Cunningham, NeurIPS 2020) as an estimator.

The relaxation, the categorical it induces and its prior fit are in
:mod:`gengs_lightning.distributions.igr` and :mod:`gengs_lightning.distributions.igr_prior`; this module
is the estimator: the encoder's Gaussian, the relaxed sample over the window's outcomes, the Gaussian
KL and the stats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gengs_lightning.checks import check_choice, check_int, check_number
from gengs_lightning.distributions import DiscreteFamily, IGRCategorical, IGRPriorFit, Prior, Window
from gengs_lightning.distributions.igr import (
    _LOG_SQRT_2PI,
    VARIANTS,
    IGRVariant,
    apply_planar_flows,
    gaussian_kl,
    softmax_pp,
    stick_breaking,
    stick_breaking_remaining,
    stick_breaking_truncation,
)
from gengs_lightning.distributions.igr_prior import cached_igr_prior_fit
from gengs_lightning.estimators.base import EstimatorOutput, Objective
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import WindowArg, WindowedEstimator


@register
class IGR(WindowedEstimator):
    """Invertible Gaussian Reparameterization (Potapczynski, Loaiza-Ganem and Cunningham, NeurIPS 2020).

    Per latent dimension the encoder outputs the mean and log standard deviation of a Gaussian ``y`` in
    ``R^(K-1)``, ``K`` being the number of outcomes of the prior's table on the window (raw layout
    ``[mu (K-1), log sigma (K-1), flows]``). A training sample ``y = mu + sigma eps`` goes through the
    variant's invertible map ``h`` and ``softmax++(h(y) / tau)`` (:func:`softmax_pp`, ``delta`` = 1 by
    default as in the paper's text; the authors' code uses 0.1) to a relaxed one-hot ``w``, mapped to the
    value ``z = sum_k w_k c_k`` with the table's outcomes. Variants:

    * ``I``: ``h`` is the identity.
    * ``SB``: the paper's stick breaking (its code, ``IGR_SB``): fractions ``kappa = sigmoid(y)``, pieces
      ``eta_k = kappa_k prod_{j<k} (1 - kappa_j)`` and ``w = softmax++(eta / tau)``. The countably infinite
      support is truncated per batch: the batch keeps the first ``n`` sticks, the smallest ``n`` for which
      every sample's remaining stick is below ``threshold`` (the code keeps a quantile of the samples;
      here all of them), capped at the ``K - 1`` sticks of the window. ``w`` then has ``n + 1`` categories
      (the last, ``softmax++``'s extra one) over the first ``n + 1`` outcomes. As ``tau -> 0`` the category
      is that of the largest piece, never the extra one; since ``eta`` lies in ``(0, 1)`` the relaxation
      is soft unless ``tau`` is small (the authors fit priors at ``tau = 0.01``).
    * ``Planar``: ``num_flows`` planar flows (:func:`planar_flow`, with the invertibility constraint on
      ``u``) before ``softmax++``. Their parameters ``(u, w, b)`` come from the encoder (amortised, as in
      Rezende and Mohamed 2015; the IGR code keeps one global flow instead): ``num_flows (2 (K-1) + 1)``
      extra outputs. :meth:`raw_like` gives identity flows (``u_hat = 0``).

    KL: ``I`` and ``SB`` use the closed-form Gaussian KL between ``N(mu, sigma^2)`` and the fitted
    Gaussian prior in ``y``-space (the map from ``y`` to the relaxed sample is invertible and shared by
    posterior and prior, so it equals the KL of the relaxed variables; for SB it is the KL of the
    untruncated sticks, an upper bound on that of the truncated ones). ``Planar``'s prior is the fitted
    Gaussian on the flowed space (no flow: its induced categorical is the fitted one), so the KL has no
    closed form; it is the Monte Carlo estimate ``mean_S [log N(y; mu, sigma) - log |det J_f(y)| -
    log N(f(y); prior)]`` at the training samples (unbiased, may be negative for one sample).

    The prior: for every window's table (per prior dimension) a Gaussian ``N(mu0, diag sigma0^2)`` is
    fitted on first use (:func:`fit_igr_prior`; exact Newton solve with ``sigma0 = 1`` for I and Planar,
    Monte Carlo fit for SB) and cached; :meth:`fitted_prior` returns it with its total-variation distance
    to the table. :meth:`raw_like` returns the fitted prior's parameters, so a model initialised with it
    starts at the prior.

    Eval mode: the exact ``tau -> 0`` sample, the outcome of ``argmax(h(y), 0)`` for a Gaussian draw
    ``y`` (SB: the largest of all ``K - 1`` pieces). :meth:`posterior` returns :class:`IGRCategorical`,
    the law of that category (exact for I; a fixed-seed Monte Carlo estimate for SB and Planar, see
    there), used for ``log_prob`` (importance weights) and expectations; :meth:`prior_distribution` the
    fitted prior's induced categorical. Logged: ``trunc_n`` (categories of the relaxation; SB's ``n + 1``),
    ``trunc_tail_mass`` (the prior's mass outside the window) and, for SB, ``sb_remaining_mass``.

    Args:
        variant: ``"I"``, ``"SB"`` or ``"Planar"``.
        window: Truncation level ``n`` or window ``[a, b]`` (see :class:`GumbelSoftmax`); ``K`` is its size.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        num_flows: Planar flows (``Planar`` only; validated for every variant).
        threshold: Remaining stick mass at which SB stops breaking, in ``(0, 1)`` (the authors' 0.99 of
            accumulated mass is 0.01 here).
        delta: The positive constant of ``softmax++``.
        mc_samples: Monte Carlo draws of the SB and Planar posterior tables (see :class:`IGRCategorical`)
            and of the SB prior fit.
        quadrature_nodes: Gauss-Legendre nodes per panel of the I tables (see :func:`gaussian_argmax_log_probs`).
        seed: Seed of the Monte Carlo tables and fits (fixed, so tables are deterministic functions).

    Raises:
        ValueError: For an unknown variant (listing I, SB, Planar), a non-positive temperature,
            ``num_flows < 1``, a threshold outside ``(0, 1)``, a non-positive ``delta``, too few Monte
            Carlo draws or quadrature nodes, or a window (later: a table) with fewer than two outcomes.
    """

    relaxed = True

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        """The three variants (Monte Carlo tables of 512 draws, to keep the tests quick)."""
        return ({"variant": "I"}, {"variant": "SB", "mc_samples": 512}, {"variant": "Planar", "mc_samples": 512})

    def __init__(
        self,
        variant: IGRVariant = "I",
        window: WindowArg = None,
        num_samples: int = 1,
        tau: float = 1.0,
        num_flows: int = 2,
        threshold: float = 0.01,
        delta: float = 1.0,
        mc_samples: int = 4096,
        quadrature_nodes: int = 8,
        seed: int = 0,
    ):
        check_choice("IGR variant", variant, VARIANTS)
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.variant = variant
        self.num_flows = check_int("num_flows", num_flows, 1)
        meaning = "the remaining stick mass at which SB stops"
        self.threshold = float(check_number("threshold", threshold, 0, 1, meaning=meaning))
        self.delta = float(check_number("delta", delta, 0))
        self.mc_samples = check_int("mc_samples", mc_samples, 2)
        self.quadrature_nodes = check_int("quadrature_nodes", quadrature_nodes, 2)
        self.seed = check_int("seed", seed, 0)
        self._fits: dict[int, tuple[DiscreteFamily, IGRPriorFit]] = {}

    # -- sizes and layout -----------------------------------------------------------------------------
    def prior_table(self, prior: Prior) -> DiscreteFamily:
        """The prior's table on the window, of at least two outcomes (``K``)."""
        table = super().prior_table(prior)
        if table.num_outcomes < 2:
            raise ValueError(
                f"IGR needs a table of at least two outcomes; the {prior.family.family_name} prior on window "
                f"{table.window} has {table.num_outcomes}"
            )
        return table

    def raw_size(self, prior: Prior) -> int:
        m = self.prior_table(prior).num_outcomes - 1
        return 2 * m + (self.num_flows * (2 * m + 1) if self.variant == "Planar" else 0)

    def _split(self, params: Tensor, m: int) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        loc, log_scale = params[..., :m], params[..., m : 2 * m]
        if self.variant != "Planar":
            return loc, log_scale, None
        flows = params[..., 2 * m :].unflatten(-1, (self.num_flows, 2 * m + 1))
        return loc, log_scale, (flows[..., :m], flows[..., m : 2 * m], flows[..., 2 * m])

    # -- the prior ------------------------------------------------------------------------------------
    def fitted_prior(self, prior: Prior) -> IGRPriorFit:
        """The Gaussian prior fitted to ``prior``'s table on the window (cached per table and settings)."""
        table = self.prior_table(prior)
        hit = self._fits.get(id(table))  # the prior caches its tables: the same object while it is unchanged
        if hit is not None and hit[0] is table:
            return hit[1]
        fit = cached_igr_prior_fit(
            table.log_pmf.detach().double().cpu(),
            "SB" if self.variant == "SB" else "I",
            mc_samples=self.mc_samples,
            seed=self.seed,
            quadrature_nodes=self.quadrature_nodes,
        )
        self._fits[id(table)] = (table, fit)
        return fit

    def raw_like(self, prior: Prior) -> Tensor:
        """Encoder outputs whose Gaussian is the fitted prior (with identity flows for Planar)."""
        table = self.prior_table(prior)
        fit = self.fitted_prior(prior)
        parts = [fit.loc, fit.log_scale]
        if self.variant == "Planar":
            parts.append(self._identity_flows(fit.loc.shape[-1]).expand(fit.loc.shape[:-1] + (-1,)))
        return torch.cat(parts, -1).to(table.log_pmf)

    def _identity_flows(self, m: int) -> Tensor:
        """Flow parameters with ``u_hat = 0``: fixed random unit normals ``w``, ``u = log(e - 1) w``, ``b = 0``.

        ``u`` parallel to ``w`` with ``w . u = log(e - 1)`` gives ``softplus(w . u) - 1 = 0``, hence
        ``u_hat = 0`` and ``f(y) = y``; distinct ``w`` per flow break the symmetry between flows.
        """
        generator = torch.Generator().manual_seed(self.seed + 2)
        w = torch.randn(self.num_flows, m, generator=generator, dtype=torch.float64)
        w = w / w.norm(dim=-1, keepdim=True)
        u = math.log(math.e - 1.0) * w
        return torch.cat([u, w, torch.zeros(self.num_flows, 1, dtype=torch.float64)], -1).flatten()

    def prior_distribution(self, posterior: IGRCategorical, prior: Prior) -> IGRCategorical:
        """The categorical induced by the fitted Gaussian prior (exact for I and Planar, estimated for SB)."""
        table = self.prior_table(prior)
        fit = self.fitted_prior(prior)
        like = table.log_pmf if posterior is None else posterior.outcomes
        return IGRCategorical(
            fit.loc.to(like),
            fit.log_scale.to(like),
            table.outcomes.to(like),
            table.window,
            variant="SB" if self.variant == "SB" else "I",
            log_pmf=fit.log_probs.to(like),
            tail_mass=table.tail_mass,
        )

    def posterior(self, params: Tensor, prior: Prior) -> IGRCategorical:
        """The categorical the posterior Gaussian induces as ``tau -> 0`` (see :class:`IGRCategorical`)."""
        table = self.prior_table(prior)
        loc, log_scale, flows = self._split(params, table.num_outcomes - 1)
        return self._induced_categorical(loc, log_scale, flows, table.outcomes.to(params), table.window)

    def _induced_categorical(
        self,
        loc: Tensor,
        log_scale: Tensor,
        flows: tuple[Tensor, Tensor, Tensor] | None,
        outcomes: Tensor,
        window: Window,
    ) -> IGRCategorical:
        """The categorical over ``outcomes`` that this estimator's Gaussian ``(loc, log_scale)`` induces."""
        return IGRCategorical(
            loc,
            log_scale,
            outcomes,
            window,
            variant=self.variant,
            flows=flows,
            mc_samples=self.mc_samples,
            quadrature_nodes=self.quadrature_nodes,
            seed=self.seed,
        )

    # -- the estimate ---------------------------------------------------------------------------------
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        table = self.prior_table(prior)
        m = table.num_outcomes - 1
        outcomes = table.outcomes.to(params)
        loc, log_scale, flows = self._split(params, m)
        noise = torch.randn((self.num_samples,) + loc.shape, dtype=params.dtype, device=params.device)
        y = loc + log_scale.exp() * noise
        log_det = None
        if self.variant == "SB":
            x = stick_breaking(y)
        elif self.variant == "Planar":
            x, log_det = apply_planar_flows(y, flows)
        else:
            x = y
        stats = {"trunc_n": torch.tensor(float(table.num_outcomes))}
        if self.training:
            used = m
            if self.variant == "SB":
                used = stick_breaking_truncation(y, self.threshold)
                remaining = stick_breaking_remaining(y.detach())[..., used - 1].exp().max()
                stats.update(trunc_n=torch.tensor(float(used + 1)), sb_remaining_mass=remaining.float())
            weights = softmax_pp(x[..., :used], self.tau, self.delta)
            sample = weights @ outcomes[: used + 1]
        else:
            scores = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
            sample = outcomes[scores.argmax(-1)]
        value = self.check_objective(objective(sample), params.shape[0])
        if not kl:
            kl_term = value.new_zeros(params.shape[0])
        else:
            fit = self.fitted_prior(prior)
            loc0, log_scale0 = fit.loc.to(params), fit.log_scale.to(params)
            if self.variant == "Planar":
                log_q = (-log_scale - 0.5 * noise.square() - _LOG_SQRT_2PI).sum(-1)
                log_p = (-log_scale0 - 0.5 * ((x - loc0) / log_scale0.exp()).square() - _LOG_SQRT_2PI).sum(-1)
                kl_term = (log_q - log_det - log_p).sum(-1).mean(0)
            else:
                kl_term = gaussian_kl(loc, log_scale, loc0, log_scale0).sum(-1)
        loss = value.mean(0) + kl_term
        stats["trunc_tail_mass"] = table.tail_mass.detach().float().mean()
        posterior = self._induced_categorical(loc, log_scale, flows, outcomes, table.window)
        return EstimatorOutput(sample, value, kl_term, loss, loss.mean(), posterior, stats)

    def extra_repr(self) -> str:
        extra = {"SB": f"threshold={self.threshold}, ", "Planar": f"num_flows={self.num_flows}, "}.get(self.variant, "")
        return f"variant={self.variant!r}, {extra}delta={self.delta}, {super().extra_repr()}"
