"""A study: a grid of command-line runs and a budget, read from ``studies/<name>.yaml``.

A study file names the flags every run gets, one or more named budgets and the grid, whose axes are
multiplied out into runs::

    name: table1_mnist
    args: {--data.data_dir: ../shared/data/mnist, --test_after_fit: true}
    budgets:                         # the first one is the default
      cpu: {--trainer.max_epochs: 20}
      paper: {--trainer.max_epochs: 300}
    grid:
      prior:                         # an axis of named settings, each a set of flags
        poisson2: {--config: configs/vae/mnist_poisson2.yaml}
      estimator:
        GenGSExplicit: {--model.estimator: gengs_lightning.estimators.GenGSExplicit}
        VIMCO5: {--model.estimator: gengs_lightning.estimators.VIMCO, --model.estimator.init_args.num_samples: 5}
      seed: {flag: --seed_everything, values: [0, 1, 2]}   # an axis of values of one flag
    exclude:                         # combinations that do not apply (the report shows n/a)
      - {prior: multinomial, estimator: GenGSNonparametric}
      - {estimator: IndeCateR, budget: cpu}   # ... or only under one budget (too costly there)
    report: {...}                    # how the report lays the results out (see gengs_lightning.study.report)

A run's command is ``python -m gengs_lightning <command>`` with every ``--config`` first (study flags, then
the axes in order), then the study's other flags, the axes' flags and the budget's, so that an axis can
override the study and the budget overrides everything. Its id names its setting on every axis
(``poisson2/GenGSExplicit/seed0``) and is the name of its result file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gengs_lightning.estimators.registry import class_path, registered

#: The keys of a study file.
STUDY_KEYS = ("name", "title", "command", "args", "budgets", "grid", "exclude", "report")
#: Flags whose value depends on the machine, not on the run (left out of the argument hash).
MACHINE_FLAGS = ("--data.data_dir", "--data.init_args.data_dir")
#: What a setting name may hold: it names files and is matched by ``--only`` glob patterns.
SETTING_NAME = re.compile(r"[A-Za-z0-9_.=+-]+")
#: The key of an ``exclude`` rule that limits it to one budget.
BUDGET_KEY = "budget"
#: Flags a study may not set: the runner owns where a run logs.
RESERVED_FLAGS = ("--trainer.logger.init_args.save_dir", "--trainer.logger.init_args.name")


class StudyError(ValueError):
    """A study file that cannot be run, with the file and what is wrong."""


def _flag_value(value: Any) -> str:
    """A YAML value as a command-line value (``true``/``false`` for booleans, JSON for lists)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _flags(where: str, mapping: Any) -> dict[str, str]:
    """Validate a ``{--flag: value}`` mapping and render its values."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise StudyError(f"{where} must be a mapping of --flags to values, got {mapping!r}")
    flags = {}
    for flag, value in mapping.items():
        if not isinstance(flag, str) or not flag.startswith("--"):
            raise StudyError(f"{where}: {flag!r} is not a flag (flags start with --)")
        if flag in RESERVED_FLAGS:
            raise StudyError(f"{where}: {flag} is set by the study runner (runs log under runs/<study>/)")
        flags[flag] = _flag_value(value)
    return flags


@dataclass(frozen=True)
class Setting:
    """One value of one axis: its name in run ids and reports, and the flags it sets."""

    axis: str
    name: str
    flags: dict[str, str]


@dataclass(frozen=True)
class Run:
    """One run of a study: a setting on every axis and the resulting command-line arguments."""

    study: str
    settings: tuple[Setting, ...]
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        """``<setting>/<setting>/...``: unique within the study, stable across machines."""
        return "/".join(s.name for s in self.settings)

    @property
    def file_stem(self) -> str:
        """The id as a file name (``poisson2__GenGSExplicit__seed0``)."""
        return self.id.replace("/", "__")

    @property
    def axes(self) -> dict[str, str]:
        """Axis name -> setting name."""
        return {s.axis: s.name for s in self.settings}

    @property
    def args_hash(self) -> str:
        """Short hash of the arguments but :data:`MACHINE_FLAGS`: a result with another hash is stale."""
        kept = [arg for arg in self.args if not arg.startswith(tuple(f"{flag}=" for flag in MACHINE_FLAGS))]
        return hashlib.sha256("\0".join(kept).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Study:
    """A parsed study file.

    Attributes:
        name: The study's name (its results live in ``results/<name>/``).
        path: The file it was read from.
        command: The CLI subcommand of every run (``fit``).
        args: Flags every run gets.
        budgets: Budget name -> flags; the first is the default.
        axes: Axis name -> its settings, in file order.
        exclude: Partial combinations (axis -> setting name) whose runs are left out.
        report: The report's layout (free-form, read by :mod:`gengs_lightning.study.report`).
        title: A title for the report.
    """

    name: str
    path: Path
    command: str
    args: dict[str, str]
    budgets: dict[str, dict[str, str]]
    axes: dict[str, list[Setting]]
    exclude: tuple[dict[str, str], ...] = ()
    report: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Study:
        """Read and check a study file.

        Raises:
            StudyError: Naming the file and the entry that is wrong.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise StudyError(f"no study file {path}") from None
        except yaml.YAMLError as error:
            raise StudyError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(data, Mapping):
            raise StudyError(f"{path} must hold a mapping with name, grid and budgets")
        unknown = sorted(set(data) - set(STUDY_KEYS))
        if unknown:
            raise StudyError(f"{path}: unknown key(s) {unknown}; accepted: {', '.join(STUDY_KEYS)}")
        name = data.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise StudyError(f"{path}: name must be a non-empty string without '/', got {name!r}")
        budgets = data.get("budgets") or {}
        if not isinstance(budgets, Mapping) or not budgets:
            raise StudyError(
                f"{path}: budgets must name at least one budget, e.g. budgets: {{cpu: {{--trainer.max_epochs: 20}}}}"
            )
        grid = data.get("grid")
        if not isinstance(grid, Mapping) or not grid:
            raise StudyError(f"{path}: grid must name at least one axis")
        if BUDGET_KEY in grid:
            raise StudyError(f"{path}: grid axis {BUDGET_KEY!r} is reserved (exclude rules name budgets by it)")
        axes = {str(axis): _settings(path, str(axis), spec) for axis, spec in grid.items()}
        _check_estimators(f"{path}: args", _flags(f"{path}: args", data.get("args")))
        for settings in axes.values():
            for setting in settings:
                _check_estimators(f"{path}: grid.{setting.axis}.{setting.name}", setting.flags)
        return cls(
            name=name,
            path=path,
            command=str(data.get("command", "fit")),
            args=_flags(f"{path}: args", data.get("args")),
            budgets={str(k): _flags(f"{path}: budgets.{k}", v) for k, v in budgets.items()},
            axes=axes,
            exclude=_exclusions(path, data.get("exclude"), axes, budgets),
            report=dict(data.get("report") or {}),
            title=str(data.get("title", name)),
        )

    def budget(self, name: str | None) -> tuple[str, dict[str, str]]:
        """The budget called ``name`` (``None``: the default, the first listed).

        Raises:
            StudyError: For an unknown budget, listing the study's.
        """
        if name is None:
            name = next(iter(self.budgets))
        if name not in self.budgets:
            raise StudyError(f"study {self.name} has no budget {name!r}; accepted: {', '.join(self.budgets)}")
        return name, self.budgets[name]

    @property
    def curve_tags(self) -> tuple[str, ...]:
        """Scalar tags besides ``val/*`` whose curves the report needs.

        Its ``curve`` and ``curves_extra``, and the tags of ``<prefix>:<tag>`` metrics.
        """
        report = self.report
        metrics = [report.get("metric", ""), *(report.get("also") or ())]
        tags = [report.get("curve"), *(report.get("curves_extra") or ())]
        tags += [metric.partition(":")[2] for metric in metrics if ":" in metric]
        return tuple(dict.fromkeys(tag for tag in tags if tag))

    def excludes(self, axes: Mapping[str, str], budget: str | None = None) -> bool:
        """Whether a combination of settings (axis -> name, possibly partial) is excluded under ``budget``.

        A rule's ``budget`` entry, where it has one, is matched like an axis (``None``: the default budget).
        """
        where = {**axes, BUDGET_KEY: self.budget(budget)[0]}
        return any(all(where.get(axis, name) == name for axis, name in rule.items()) for rule in self.exclude)

    def runs(self, budget: str | None = None, overrides: Mapping[str, str] | None = None) -> list[Run]:
        """Every run of the grid with ``budget``, flags in ``overrides`` replacing the study's own."""
        budget, budget_flags = self.budget(budget)
        runs = []
        for settings in itertools.product(*self.axes.values()):
            if self.excludes({s.axis: s.name for s in settings}, budget):
                continue
            flags: dict[str, str] = {}
            configs: list[str] = []
            for source in (self.args, *(s.flags for s in settings), budget_flags, overrides or {}):
                for flag, value in source.items():
                    if flag == "--config":
                        configs.append(value)
                    else:
                        flags.pop(flag, None)  # a later source wins and keeps its own position
                        flags[flag] = value
            args = [self.command]
            for config in configs:
                args += ["--config", config]
            for flag, value in flags.items():
                args.append(f"{flag}={value}")
            runs.append(Run(self.name, tuple(settings), tuple(args)))
        return runs


#: The package's own estimators are named by class paths under this prefix.
ESTIMATOR_PREFIX = "gengs_lightning.estimators."


def _check_estimators(where: str, flags: Mapping[str, str]) -> None:
    """Refuse an estimator flag naming a ``gengs_lightning.estimators`` class the registry does not hold.

    A typo then stops the study at load time, not one run after hours of others; class paths of a
    user's own package are left for the CLI to import.

    Raises:
        StudyError: Naming the entry, the flag and the registered estimators.
    """
    for flag, value in flags.items():
        if not (flag.endswith(".estimator") and value.startswith(ESTIMATOR_PREFIX)):
            continue
        known = [class_path(cls) for cls in registered()]
        if value not in known:
            names = ", ".join(path.removeprefix(ESTIMATOR_PREFIX) for path in known)
            raise StudyError(f"{where}: {flag} names {value!r}, not a registered estimator; accepted: {names}")


def _settings(path: Path, axis: str, spec: Any) -> list[Setting]:
    """The settings of one axis: ``{name: {--flag: value}}`` or ``{flag: --f, values: [...]}``."""
    where = f"{path}: grid.{axis}"
    if isinstance(spec, Mapping) and set(spec) == {"flag", "values"}:
        flag, values = spec["flag"], spec["values"]
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}.values must be a non-empty list")
        settings = [Setting(axis, f"{axis}{_flag_value(v)}", _flags(where, {flag: v})) for v in values]
        bad = [s.name for s in settings if not SETTING_NAME.fullmatch(s.name)]
        if bad:
            raise StudyError(f"{where}.values: {bad} would not make file names; name the settings instead")
        return settings
    if not isinstance(spec, Mapping) or not spec:
        raise StudyError(f"{where} must map setting names to flags, or be {{flag: --name, values: [...]}}")
    settings = []
    for name, flags in spec.items():
        if not isinstance(name, str) or not SETTING_NAME.fullmatch(name):
            raise StudyError(f"{where}: setting name {name!r} may hold only letters, digits and _ . = + -")
        settings.append(Setting(axis, name, _flags(f"{where}.{name}", flags)))
    return settings


def _exclusions(
    path: Path, spec: Any, axes: dict[str, list[Setting]], budgets: Mapping[str, Any]
) -> tuple[dict[str, str], ...]:
    """The ``exclude`` list: each entry maps axes of the grid to names of their settings (and maybe a budget)."""
    if spec is None:
        return ()
    if not isinstance(spec, list) or not all(isinstance(rule, Mapping) and rule for rule in spec):
        raise StudyError(f"{path}: exclude must be a list of {{axis: setting}} mappings")
    for rule in spec:
        for axis, name in rule.items():
            if axis == BUDGET_KEY:
                if name not in budgets:
                    raise StudyError(f"{path}: exclude names budget {name!r}; accepted: {', '.join(budgets)}")
                continue
            names = [s.name for s in axes.get(axis, [])]
            if name not in names:
                raise StudyError(f"{path}: exclude names {axis}={name!r}, which is not in the grid ({axis}: {names})")
    return tuple({str(k): str(v) for k, v in rule.items()} for rule in spec)
