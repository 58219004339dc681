"""Named families and the ``Prior``: a fixed member of a family that configs can describe."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from gengs_lightning.distributions.binomial import TruncatedBinomial
from gengs_lightning.distributions.categorical import TruncatedCategorical
from gengs_lightning.distributions.geometric import TruncatedGeometric
from gengs_lightning.distributions.multinomial import TruncatedMultinomial
from gengs_lightning.distributions.negative_binomial import TruncatedNegativeBinomial
from gengs_lightning.distributions.nonparametric import quantile_window
from gengs_lightning.distributions.poisson import TruncatedPoisson
from gengs_lightning.distributions.truncated import DiscreteFamily
from gengs_lightning.distributions.window import Window

#: Families by the name configs use.
FAMILIES: dict[str, type[DiscreteFamily]] = {
    cls.family_name: cls
    for cls in (
        TruncatedPoisson,
        TruncatedGeometric,
        TruncatedNegativeBinomial,
        TruncatedBinomial,
        TruncatedCategorical,
        TruncatedMultinomial,
    )
}

#: The count families: those a window truncates.
COUNT_FAMILIES: tuple[str, ...] = tuple(name for name, cls in FAMILIES.items() if cls.truncatable)

#: Tail mass a default window leaves outside the prior.
DEFAULT_WINDOW_EPS = 1e-6
#: Largest default window.
DEFAULT_MAX_WINDOW = 4096


def family_class(name: str) -> type[DiscreteFamily]:
    """The family registered under ``name``.

    Raises:
        ValueError: For an unknown name, listing the accepted ones.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown family {name!r}; accepted: {', '.join(sorted(FAMILIES))}") from None


def _accepted_params(family: type[DiscreteFamily]) -> list[str]:
    skip = {"self", "window", "validate_args"}
    return [name for name in inspect.signature(family.__init__).parameters if name not in skip]


class Prior(nn.Module):
    """A fixed member of a family: the prior of a latent variable (or the toy task's target).

    Holds the family, its structural parameters (e.g. a binomial's ``total_count``) and its free
    parameters as buffers, so it moves with the model and is saved in checkpoints. It tells the
    estimators how to build posteriors of the same family (:meth:`posterior`), truncates itself on a
    window for the KL (:meth:`truncated`) and picks a default window (:meth:`resolve_window`).

    Example:
        ``Prior("poisson", {"rate": 2.0})``, ``Prior("negative_binomial", {"total_count": 3, "probs": 0.5})``;
        in YAML ``prior: {family: poisson, params: {rate: 2.0}}``. A list gives one value per latent
        dimension.

    Args:
        family: Family name, one of :data:`FAMILIES`.
        params: The family's parameters by name (the ``torch.distributions`` names and conventions).

    Raises:
        ValueError: For an unknown family, unknown or missing parameters, or invalid values (infinite or
            NaN ones included).
    """

    def __init__(self, family: str, params: dict[str, float | list[float]]):
        super().__init__()
        self.family = family_class(family)
        accepted = _accepted_params(self.family)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"family {family!r} has no parameter(s) {unknown}; accepted: {accepted}")
        self.structural = {k: v for k, v in params.items() if k in self.family.structural_params}
        for name, value in params.items():
            if name not in self.structural:
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.get_default_dtype()))
        self._free_names = [name for name in params if name not in self.structural]
        self._cache: dict[tuple, object] = {}
        infinite = [name for name in self._free_names if not torch.isfinite(getattr(self, name)).all()]
        if infinite:
            raise ValueError(f"invalid {family} prior {dict(params)}: {', '.join(infinite)} must be finite")
        try:
            self.truncated(self.family.support_window(**self.structural) or Window(0, 0), validate=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid {family} prior {dict(params)}: {error}") from None

    def with_params(self, **free: Tensor) -> Prior:
        """The same family and structural parameters with other free parameters.

        For conditional priors, e.g. the Poisson rates of a topic layer computed from the sample of the
        layer above (NVPDEF): the parameters may be batch-shaped and require gradients, so the result
        is neither validated nor cached and its tables are differentiable.
        """
        prior = Prior.__new__(Prior)
        nn.Module.__init__(prior)
        prior.family, prior.structural, prior._free_names, prior._cache = self.family, self.structural, list(free), None
        for name, value in free.items():
            object.__setattr__(prior, name, value)
        return prior

    @property
    def params(self) -> dict[str, Tensor | float]:
        """All parameters by name: structural ones as given, free ones as buffers."""
        return {**self.structural, **{name: getattr(self, name) for name in self._free_names}}

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one latent value: ``()`` for counts, ``(K,)`` for one-hot and multinomial vectors."""
        return self.truncated(self.family.support_window(**self.structural) or Window(0, 0)).event_shape

    @property
    def raw_size(self) -> int:
        """Encoder outputs per latent dimension that explicit inference needs for this family."""
        return self.family.raw_size(**self.params)

    def resolve_window(self, spec: Window | int | tuple[int, int] | None) -> Window | None:
        """The window an estimator uses for this prior.

        ``None`` picks the whole support of a finite family, and otherwise the smallest window holding
        ``1 - 1e-6`` of the prior's mass (:func:`quantile_window`) and at least two outcomes (a prior with
        ``1 - 1e-6`` on ``0``, e.g. a tiny rate, gets ``[0, 1]``): one outcome is a constant latent, with
        no gradient, which the estimators reject as an explicit window too.

        Raises:
            ValueError: If a window is given for a family without one (categorical, multinomial), or if
                ``spec`` is ``None`` and the finite support holds one outcome (a binomial with
                ``total_count=0``).
        """
        if not self.family.truncatable:
            if spec is not None:
                raise ValueError(
                    f"the {self.family.family_name} family has a finite outcome table and takes no window, got {spec!r}"
                )
            return None
        if spec is not None:
            return Window.of(spec)
        return self._cached(("default_window",), self._default_window)

    def _default_window(self) -> Window:
        """The window of :meth:`resolve_window` ``(None)`` for a family with windows (not cached)."""
        support = self.family.support_window(**self.structural)
        if support is None:
            params = self.truncated(Window(0, 0)).params
            window = quantile_window(self.family, params, DEFAULT_WINDOW_EPS, DEFAULT_MAX_WINDOW)
            return Window(window.low, max(window.high, window.low + 1))
        if support.size < 2:
            raise ValueError(
                f"the default window must hold at least 2 outcomes (one outcome is a constant latent, with no "
                f"gradient); the {self.family.family_name} prior {self.structural} has the support {support}"
            )
        return support

    def truncated(self, window: Window | None, validate: bool = False) -> DiscreteFamily:
        """The prior as a table on ``window`` (``None`` for families without windows).

        Tables are cached per window, device and parameter version (the prior is a constant), so
        estimators can ask for them on every step.
        """
        kwargs = {"window": window} if self.family.truncatable else {}
        if validate:
            return self.family(**self.params, **kwargs, validate_args=True)
        return self._cached(("table", window), lambda: self.family(**self.params, **kwargs, validate_args=False))

    def _cached(self, key: tuple, build):
        """``build()`` memoised on ``key`` and the identity and version of every buffer (not for conditional priors)."""
        if self._cache is None:
            return build()
        state = tuple((id(b), b._version) for b in self.buffers())
        hit = self._cache.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        with torch.no_grad():
            value = build()
        self._cache[key] = (state, value)
        return value

    def posterior(self, raw: Tensor, window: Window | None) -> DiscreteFamily:
        """A member of the family built from encoder outputs ``raw`` of shape ``(*batch, raw_size)``."""
        return self.family.from_raw(raw, window, **self.structural)

    def untruncated_posterior(self, raw: Tensor) -> Distribution:
        """The untruncated family with parameters from encoder outputs (score-function estimators)."""
        return self.family.untruncated(**self.family.params_from_raw(raw, **self.structural))

    def untruncated(self) -> Distribution:
        """The prior itself as a :mod:`torch.distributions` object (no truncation)."""
        return self.family.untruncated(**self.params)

    def extra_repr(self) -> str:
        shown = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in self.params.items()}
        return f"family={self.family.family_name!r}, params={shown}"
