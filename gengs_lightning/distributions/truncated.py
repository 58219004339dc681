"""Finite outcome tables and the folding of a count family onto a window.

GenGS turns a discrete variable into a categorical choice over an outcome vector ``c`` with PMF
vector ``pi`` (journal Section 3.1, NeurIPS Section 3.2). :class:`TruncatedDiscrete` is that table;
:class:`TruncatedCount` builds it for a non-negative integer family by computing the PMF on a window
``[a, b]`` and folding the mass outside into the edge categories, so that ``pi`` sums to one
(NeurIPS Definition 1, journal Definition 3).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions.utils import lazy_property

from gengs_lightning.distributions.grid import as_grid_param, folded_table
from gengs_lightning.distributions.gumbel import sample_gumbel
from gengs_lightning.distributions.nonparametric import quantile_window
from gengs_lightning.distributions.window import Window


def _float_tensor(value: Tensor | list[float] | float) -> Tensor:
    """``value`` as a tensor: a floating tensor keeps its dtype, anything else gets the default dtype."""
    if torch.is_tensor(value) and value.is_floating_point():
        return value
    return torch.as_tensor(value, dtype=torch.get_default_dtype())


class TruncatedDiscrete(Distribution):
    """A discrete distribution over a finite outcome table: ``P(Z = c_k) = pi_k``.

    This is the object that GenGS relaxes. The outcomes ``c`` are shared by the whole batch and are
    scalars (shape ``(n,)``, count families) or vectors (shape ``(n, K)``, the categorical one-hot and
    multinomial constructions of NeurIPS Appendix E). Used directly, it is the posterior of implicit
    inference (NeurIPS Section 4.1, Algorithm 3): free logits over the outcomes of a window.

    Args:
        log_pmf: Log-probabilities ``log pi`` of shape ``(*batch, n)``; normalised here unless
            ``normalized`` is true.
        outcomes: Outcome table ``c`` of shape ``(n,)`` or ``(n, K)``.
        window: The window the outcomes enumerate, for scalar count outcomes.
        normalized: Whether ``log_pmf`` already sums to one in probability space.
        validate_args: Whether to check arguments (see :class:`torch.distributions.Distribution`).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_enumerate_support = True

    def __init__(
        self,
        log_pmf: Tensor,
        outcomes: Tensor,
        window: Window | None = None,
        *,
        normalized: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        if log_pmf.dim() < 1 or outcomes.dim() not in (1, 2) or outcomes.shape[0] != log_pmf.shape[-1]:
            raise ValueError(
                f"log_pmf of shape {tuple(log_pmf.shape)} needs a trailing dimension n equal to the "
                f"number of outcomes, and outcomes must be (n,) or (n, K); got {tuple(outcomes.shape)}"
            )
        if validate_args and torch.isnan(log_pmf).any():
            raise ValueError(f"log_pmf must not contain NaN, got {log_pmf}")
        if not normalized:
            log_pmf = torch.log_softmax(log_pmf, -1)  # one fused pass, forward and backward
        self._set_table(log_pmf, outcomes, window, tail_mass=None)
        super().__init__(log_pmf.shape[:-1], outcomes.shape[1:], validate_args=validate_args)

    def _set_table(self, log_pmf: Tensor, outcomes: Tensor, window: Window | None, tail_mass: Tensor | None):
        self.log_pmf = log_pmf
        self.outcomes = outcomes
        self.window = window
        self._tail_mass = tail_mass

    @property
    def num_outcomes(self) -> int:
        """Number of categories ``n`` of the table."""
        return self.outcomes.shape[0]

    @lazy_property
    def pmf(self) -> Tensor:
        """PMF vector ``pi`` of shape ``(*batch, n)``."""
        return self.log_pmf.exp()

    @property
    def tail_mass(self) -> Tensor:
        """Mass of the underlying family outside the window, shape ``batch_shape``.

        Zero for tables that are not a truncation (implicit posteriors, categorical, multinomial).
        """
        if self._tail_mass is None:
            return self.log_pmf.new_zeros(self.batch_shape)
        return self._tail_mass

    @property
    def support(self) -> constraints.Constraint:
        if self.window is not None:
            return constraints.integer_interval(self.window.low, self.window.high)
        if self.outcomes.dim() == 1:
            return constraints.real
        return constraints.independent(constraints.real, 1)

    @property
    def mean(self) -> Tensor:
        return self.pmf @ self.outcomes

    @property
    def variance(self) -> Tensor:
        centred = self.outcomes - self.mean.unsqueeze(-1 - len(self.event_shape))
        if self.outcomes.dim() == 1:
            return (self.pmf * centred.square()).sum(-1)
        return (self.pmf.unsqueeze(-1) * centred.square()).sum(-2)

    @property
    def mode(self) -> Tensor:
        return self.outcomes[self.log_pmf.argmax(-1)]

    def entropy(self) -> Tensor:
        return -torch.special.xlogy(self.pmf, self.pmf).sum(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if self.window is not None:
            index = value - self.window.low
            inside = (index >= 0) & (index < self.num_outcomes) & (index == index.round())
            index = index.clamp(0, self.num_outcomes - 1).long()
            log_pmf, index = torch.broadcast_tensors(self.log_pmf, index.unsqueeze(-1))
            return log_pmf.gather(-1, index[..., :1]).squeeze(-1).masked_fill(~inside, -math.inf)
        if self.outcomes.dim() == 1:
            match = value.unsqueeze(-1) == self.outcomes
        else:
            match = (value.unsqueeze(-2) == self.outcomes).all(-1)
        match, log_pmf = torch.broadcast_tensors(match, self.log_pmf)
        return log_pmf.masked_fill(~match, -math.inf).logsumexp(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        """Exact draw by the Gumbel-Max trick over the table (NeurIPS Theorem 3)."""
        shape = torch.Size(sample_shape) + self.log_pmf.shape
        with torch.no_grad():
            noise = sample_gumbel(shape, self.log_pmf.dtype, self.log_pmf.device)
            index = noise.add_(self.log_pmf).argmax(-1)
            return self.outcomes[index]

    def enumerate_support(self, expand: bool = True) -> Tensor:
        n = self.num_outcomes
        values = self.outcomes.reshape((n,) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = values.expand((n,) + self.batch_shape + self.event_shape)
        return values

    def widen(self, eps: float = 1e-12, max_size: int = 100_000) -> TruncatedDiscrete:
        """The distribution this table approximates, enumerated on a window that holds ``1 - eps``.

        A plain table approximates only itself and is returned as is; a truncated count family is
        rebuilt on a window that also covers ``1 - eps`` of its mass (used for exact expectations).
        """
        return self

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance=None) -> TruncatedDiscrete:
        """Expand the batch shape; the result is a plain table with the same PMF and tail mass."""
        batch_shape = torch.Size(batch_shape)
        new = TruncatedDiscrete.__new__(TruncatedDiscrete)
        tail = None if self._tail_mass is None else self._tail_mass.expand(batch_shape)
        new._set_table(self.log_pmf.expand(batch_shape + (self.num_outcomes,)), self.outcomes, self.window, tail)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class DiscreteFamily(TruncatedDiscrete):
    """A named family of discrete distributions represented as an outcome table.

    The class attributes and class methods are what :class:`~gengs_lightning.distributions.Prior`
    and the estimators need to build a member of the family from a config or from an encoder.
    """

    #: Name of the family in configs (``Prior(family=...)``).
    family_name: ClassVar[str]
    #: Parameters fixed by the prior rather than inferred (e.g. a binomial's ``total_count``).
    structural_params: ClassVar[tuple[str, ...]] = ()
    #: Whether the outcomes are consecutive integers that a window can truncate.
    truncatable: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def params_from_raw(cls, raw: Tensor, **structural) -> dict[str, Tensor]:
        """Map unconstrained encoder outputs of shape ``(*batch, raw_size)`` to the family's parameters."""

    @classmethod
    def from_raw(cls, raw: Tensor, window: Window | None, **structural) -> DiscreteFamily:
        """Build a member from unconstrained encoder outputs of shape ``(*batch, raw_size)``."""
        window_arg = {"window": window} if cls.truncatable else {}
        return cls(**cls.params_from_raw(raw, **structural), **window_arg, validate_args=False)

    @classmethod
    @abstractmethod
    def untruncated(cls, **params) -> Distribution:
        """The family itself, without truncation, as a :mod:`torch.distributions` object."""

    @abstractmethod
    def to_raw(self) -> Tensor:
        """Encoder outputs ``(*batch, raw_size)`` that :meth:`from_raw` maps back to this member."""

    @classmethod
    def raw_size(cls, **params) -> int:
        """Number of encoder outputs per latent dimension for explicit inference."""
        return 1

    @classmethod
    def support_window(cls, **structural) -> Window | None:
        """The whole support as a window when it is finite, else ``None``."""
        return None


class TruncatedCount(DiscreteFamily):
    """A non-negative integer family truncated to a window, mass outside folded into the edges.

    For ``X ~ D(lambda)`` and a window ``[a, b]`` the truncated variable has (journal Definition 3)
    ``pi_a = P(X <= a)``, ``pi_k = P(X = k)`` for ``a < k < b`` and ``pi_b = P(X >= b)``. The table is
    computed by :func:`~gengs_lightning.distributions.grid.folded_table` in float64 log space, accurate
    to float64 rounding (and finite) for every parameter and window, and returned in the parameters'
    dtype.

    Subclasses give their parameters (:attr:`params`), their exponential-family form
    (:meth:`natural`, :meth:`base_measure`), their term recurrence (:meth:`recurrence`) and the family
    metadata of :class:`DiscreteFamily`.

    Args:
        window: The truncation window or level (see :meth:`Window.of`).
        batch_shape: Batch shape of the parameters.
        validate_args: Whether to check the parameters against :attr:`arg_constraints`.
    """

    def __init__(self, window: Window | int | tuple[int, int], batch_shape: torch.Size, validate_args=None):
        Distribution.__init__(self, batch_shape, torch.Size(), validate_args=validate_args)
        window = Window.of(window)
        self._check_window(window)
        dtype = self._dtype
        params64 = {name: p.double() if torch.is_tensor(p) else p for name, p in self.params.items()}
        eta, log_norm, mean = (x.expand(batch_shape) for x in self.natural(**params64))
        if window.size == 1:
            log_pmf = eta.new_zeros(batch_shape + (1,), dtype=dtype)
            with torch.no_grad():
                k = window.outcomes(torch.float64, eta.device)
                tail = -torch.expm1(eta * window.low + self._base_measure(k)[..., 0] - log_norm).to(dtype)
        else:
            with torch.no_grad():
                recurrence = self.recurrence(**params64)
            log_pmf, tail = folded_table(
                eta, log_norm, mean, recurrence, self._base_measure, window.low, window.high, dtype
            )
        self._set_table(log_pmf, window.outcomes(dtype, log_pmf.device), window, tail)

    # -- what a family provides -------------------------------------------------------------------
    @property
    @abstractmethod
    def params(self) -> dict[str, Tensor]:
        """The family's parameters by name: free ones as batch tensors, structural ones as given."""

    @staticmethod
    @abstractmethod
    def natural(**params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Natural parameter ``eta``, log-normaliser ``A(eta)`` and mean ``A'(eta)`` of the family."""

    @staticmethod
    @abstractmethod
    def recurrence(**params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha, beta, 1 - beta)`` of the family's recurrence ``(k + 1) p_{k+1} = (alpha + beta k) p_k``.

        Every family here is in Panjer's class (see :mod:`~gengs_lightning.distributions.grid`), with
        ``beta < 1``; ``1 - beta`` is computed without cancellation (it sets the tail's decay). The
        coefficients give the upper tail and its conditional mean.
        """

    @staticmethod
    @abstractmethod
    def base_measure(k: Tensor, **params: Tensor) -> Tensor:
        """Base measure ``h_k`` on integer points ``k`` (parameters shaped to broadcast with ``k``)."""

    def _base_measure(self, k: Tensor) -> Tensor:
        return self.base_measure(k, **{name: as_grid_param(p) for name, p in self.params.items()})

    def _check_window(self, window: Window) -> None:
        """Reject windows outside the support (hook for finite families)."""

    def widen(self, eps: float = 1e-12, max_size: int = 100_000) -> TruncatedCount:
        structural = {name: value for name, value in self.params.items() if name in self.structural_params}
        wide = self.support_window(**structural) or quantile_window(type(self), self.params, eps, max_size)
        window = Window(0, max(wide.high, self.window.high))
        return type(self)(**self.params, window=window, validate_args=False)

    @property
    def _dtype(self) -> torch.dtype:
        dtypes = [p.dtype for p in self.params.values() if torch.is_tensor(p) and p.is_floating_point()]
        return dtypes[0] if dtypes else torch.get_default_dtype()
