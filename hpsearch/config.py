"""The study file: TOML, parsed as data only, validated once into frozen objects.

A study file names the study, the data, the fixed trainer options, the search
space, the narrowing loop, the resources and the final evaluation::

    [study]
    name = "quick"            # required; ^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$
    metric = "val_accuracy"   # val_accuracy | best_val_accuracy | val_loss
    direction = "maximize"    # optional; follows the metric
    seed = 0                  # 0 .. 2**32 - 1 (Optuna's samplers need that)
    sampler = "random"        # random | tpe | qmc
    pruner = "none"           # none | median | asha | hyperband

    [data]
    dataset = "digits"        # digits | mnist5k | synthetic[:N] | mnist:DIR | npz:PATH
    train_samples = 1000      # optional; the subset split into train + validation
    val_fraction = 0.2        # in (0, 1)

    [model]                   # any trainer option except seed
    hidden_sizes = [50, 50]

    [search.lr]               # float range (log = true needs low > 0)
    low = 1e-3
    high = 1.0
    log = true
    [search.batch_size]       # int range: int = true, optional step and log
    low = 32
    high = 256
    int = true
    [search.batchnorm]        # categorical
    choices = [true, false]

    [narrowing]
    rounds = 3
    trials_per_round = 20
    top_k = 5                 # <= trials_per_round
    margin = 0.1

    [resources]
    workers = 2               # optional; default: the cluster's CPUs / cpus_per_trial
    cpus_per_trial = 1
    gpus_per_trial = 0

    [final_eval]
    enabled = false
    seeds = 5

With an ``[objective]`` table the trials run the user's own code instead of
the built-in MLP (see :mod:`hpsearch.objective`)::

    [study]
    metric = "score"          # any name the objective reports
    direction = "maximize"    # required unless the metric is a built-in one

    [objective]
    function = "my_model:train"   # or command = ["python", "train.py"]
    max_steps = 20            # optional: steps a full trial reports (pruners)
    kill_grace = 5.0          # optional: seconds from SIGTERM to SIGKILL (command)

    [params]                  # constants passed with the sampled parameters
    epochs = 20

    [search.any_name]         # floats, ints (int = true, log, step), choices

``[data]``, ``[model]``, ``pack_size`` > 1 and ``[final_eval] enabled`` are
the built-in objective's and are refused there; ``[params]`` is refused
without an ``[objective]``.

Every problem raises :class:`hpsearch.errors.ConfigError` with a one-line
message that names the key path, the bad value and what is allowed, e.g.
``search.lr: low (0.1) must be < high (0.01)``. The trainer-level meaning of
every value is checked by building a :class:`trainer.config.TrainConfig` from
the fixed options and from each end of every searched range (or each choice),
so a space that the trainer would reject later is rejected here, before
anything runs or is written.

Conventions the rest of hpsearch relies on:
    * ``StudyConfig.space`` keeps the order of the file.
    * ``FloatRange``/``IntRange`` ends are inclusive (Optuna's convention);
      an int range's ``high - low`` is a multiple of its ``step``.
    * Dataset paths (``mnist:DIR``, ``npz:PATH``) are kept as written; the
      loader resolves relative paths against its working directory.
    * ``source_text`` is the file's text verbatim and ``overrides`` the
      overrides applied to it, so ``from_record(source_text, overrides)``
      rebuilds the same configuration (e.g. from the results database).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from hpsearch.errors import ConfigError
from trainer.config import TrainConfig
from trainer.errors import ConfigError as TrainerConfigError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- constants

#: Metric name -> the direction that optimizes it.
METRICS: Mapping[str, str] = {
    "val_accuracy": "maximize",
    "best_val_accuracy": "maximize",
    "val_loss": "minimize",
}
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("random", "tpe", "qmc")
PRUNERS = ("none", "median", "asha", "hyperband")
DATASET_NAMES = ("digits", "mnist5k", "synthetic")
#: Dataset prefix -> (what follows it, its placeholder, an example).
DATASET_PREFIXES = {
    "synthetic:": ("a whole number of samples N >= 2", "N", "synthetic:2000"),
    "mnist:": ("a directory with the four MNIST IDX files", "DIR", "mnist:data/mnist"),
    "npz:": ("the path of an .npz file", "PATH", "npz:data/my.npz"),
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: Largest study seed: Optuna's samplers accept seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1

#: Trainer options a study may fix or search (everything but the trial seed).
TRAIN_OPTIONS: tuple[str, ...] = tuple(n for n in TrainConfig.field_names() if n != "seed")
#: Trainer options that take integers (searching them needs ``int = true``).
INT_OPTIONS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", int) and f.name != "seed"
)

SECTIONS = (
    "study",
    "data",
    "model",
    "search",
    "narrowing",
    "resources",
    "final_eval",
    "objective",
    "params",
)
STUDY_KEYS = ("name", "metric", "direction", "seed", "sampler", "pruner", "prune_after")
DATA_KEYS = ("dataset", "train_samples", "val_fraction")
NARROWING_KEYS = ("rounds", "trials_per_round", "top_k", "margin")
RESOURCES_KEYS = ("workers", "cpus_per_trial", "gpus_per_trial", "pack_size")
FINAL_EVAL_KEYS = ("enabled", "seeds")
OBJECTIVE_KEYS = ("function", "command", "max_steps", "kill_grace")
#: A metric name a user's objective reports (also a JSON key of a command's lines).
METRIC_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
#: A parameter name of a user's objective (passed as ``--name=value`` to a command).
PARAM_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
DEFAULT_KILL_GRACE = 5.0
PARAM_KEYS = ("low", "high", "log", "int", "step", "choices", "hard_low", "hard_high")
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "study": STUDY_KEYS,
    "data": DATA_KEYS,
    "model": TRAIN_OPTIONS,
    "narrowing": NARROWING_KEYS,
    "resources": RESOURCES_KEYS,
    "final_eval": FINAL_EVAL_KEYS,
    "objective": OBJECTIVE_KEYS,
}

DEFAULT_VAL_FRACTION = 0.2
DEFAULT_NARROWING = {"rounds": 3, "trials_per_round": 20, "top_k": 5, "margin": 0.1}

#: CLI option of each override (``with_overrides`` keyword -> option).
OVERRIDE_OPTIONS: Mapping[str, str] = {
    "name": "--name",
    "seed": "--seed",
    "rounds": "--rounds",
    "trials_per_round": "--trials-per-round",
    "top_k": "--top-k",
    "workers": "--workers",
    "final_eval": "--final-eval",
}

_MISSING: Any = object()


# --------------------------------------------------------------------------- read-only map


class FrozenMap(Mapping[str, Any]):
    """A read-only, ordered, picklable mapping (``types.MappingProxyType`` cannot be
    pickled, and a StudyConfig may travel to Ray workers)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True, kw_only=True)
class FloatRange:
    """A float parameter sampled from ``[low, high]``.

    Attributes:
        low: Lower end (inclusive); > 0 when ``log``.
        high: Upper end (inclusive); > ``low``.
        log: Sample uniformly in log10 space (``10 ** U(log10 low, log10 high)``);
            the narrowing loop also works in log10 space for such parameters.
    """

    low: float
    high: float
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of a :class:`hpsearch.records.RoundRecord` box."""
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True, kw_only=True)
class IntRange:
    """An integer parameter sampled from ``{low, low + step, ..., high}``.

    Attributes:
        low: Lower end (inclusive); >= 1 when ``log``.
        high: Upper end (inclusive); > ``low``; ``high - low`` is a multiple
            of ``step``.
        log: Sample in log space (then ``step`` is 1).
        step: Spacing of the values, >= 1.
    """

    low: int
    high: int
    log: bool = False
    step: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of a box entry (plus ``int`` and ``step``)."""
        return {"low": self.low, "high": self.high, "log": self.log, "int": True, "step": self.step}


@dataclass(frozen=True, kw_only=True)
class Choice:
    """A categorical parameter.

    Attributes:
        choices: Non-empty tuple of distinct scalars (str, int, float, bool),
            in the file's order.
    """

    choices: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of a box entry."""
        return {"choices": list(self.choices)}


ParamSpec = FloatRange | IntRange | Choice


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which data a study trains on.

    Attributes:
        dataset: ``digits``, ``mnist5k``, ``synthetic``, ``synthetic:N``,
            ``mnist:DIR`` or ``npz:PATH`` (surrounding blanks removed; paths as
            written, relative to the loader's working directory; the loader
            checks the files).
        train_samples: Size of the training subset before the validation split
            (``None``: all training data).
        val_fraction: Fraction of the training subset held out for validation,
            in (0, 1).
    """

    dataset: str
    train_samples: int | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION


@dataclass(frozen=True, kw_only=True)
class NarrowingConfig:
    """The coarse-to-fine loop.

    Attributes:
        rounds: Rounds of sampling, >= 1.
        trials_per_round: Finished trials each round asks for, >= 1.
        top_k: Best trials of a round that define the next box,
            1 <= top_k <= trials_per_round.
        margin: Padding added on each side of the top-k min-max, as a fraction
            of the current box's width (in log10 space for log parameters), >= 0.
    """

    rounds: int = DEFAULT_NARROWING["rounds"]
    trials_per_round: int = DEFAULT_NARROWING["trials_per_round"]
    top_k: int = DEFAULT_NARROWING["top_k"]
    margin: float = DEFAULT_NARROWING["margin"]


@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    """Ray resources.

    Attributes:
        workers: Concurrent trials, >= 1; ``None``: the cluster's CPUs divided
            by ``cpus_per_trial``.
        cpus_per_trial: Ray CPUs per trial, > 0 (fractions allowed).
        gpus_per_trial: Ray GPUs per trial, >= 0 (fractions allowed).
        pack_size: Trial packing: 0 (default) packs compatible trials, up to
            ``AUTO_PACK_SIZE`` per pack, when the network is small enough for
            packing to pay; 1 never packs; N >= 2 packs up to N whenever
            trials are compatible.
    """

    workers: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    pack_size: int = 0


@dataclass(frozen=True, kw_only=True)
class FinalEvalConfig:
    """Retraining the best configuration on train + validation.

    Attributes:
        enabled: Run the final evaluation after the search.
        seeds: Retrainings with different seeds, >= 1; test accuracy is
            reported as mean and std over them.
    """

    enabled: bool = False
    seeds: int = 5


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """What a trial runs (the ``[objective]`` table; absent: the built-in MLP).

    Attributes:
        function: ``module:callable`` of a Python function objective, imported
            with the study file's folder on ``sys.path`` and called as
            ``callable(params, trial)`` (see :mod:`hpsearch.objective`).
        command: A command objective: the program and its fixed arguments;
            each trial appends its parameters as ``--name=value``.
        max_steps: Steps a full trial reports (the pruner's largest rung,
            Hyperband's maximum resource); None: unknown (1 for the pruners).
        kill_grace: Seconds between SIGTERM and SIGKILL when a command's
            trial is pruned, >= 0.
    """

    function: str | None = None
    command: tuple[str, ...] | None = None
    max_steps: int | None = None
    kill_grace: float = DEFAULT_KILL_GRACE

    @property
    def kind(self) -> str:
        """``builtin``, ``function`` or ``command``."""
        if self.function is not None:
            return "function"
        if self.command is not None:
            return "command"
        return "builtin"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "function": self.function,
            "command": list(self.command) if self.command is not None else None,
            "max_steps": self.max_steps,
            "kill_grace": self.kill_grace,
        }


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """One validated study file (plus any overrides).

    Build it with :func:`load_study`, :func:`parse_study` or
    :func:`from_record`; the constructor itself does not validate.

    Attributes:
        name: Study name, safe as a file name (``NAME_PATTERN``).
        metric: ``val_accuracy`` (final epoch), ``best_val_accuracy`` (best
            epoch) or ``val_loss`` (final epoch).
        direction: ``maximize`` or ``minimize``; agrees with the metric.
        seed: Study seed in [0, 2**32 - 1]; seeds the sampler, and each
            trial's seed derives from it and the trial number.
        sampler: ``random``, ``tpe`` or ``qmc``.
        pruner: ``none``, ``median``, ``asha`` or ``hyperband``.
        prune_after: Epochs every trial trains before the pruner may stop it
            (ASHA's and Hyperband's first rung, the median pruner's warm-up);
            ``None``: a quarter of the epochs (:func:`hpsearch.pruning.grace_epochs`).
        data: The dataset and its split.
        model: Fixed trainer options (read-only; normalized by TrainConfig,
            lists as tuples); never contains ``seed``.
        space: Searched trainer options in the file's order (read-only);
            disjoint from ``model``.
        limits: Hard limits ``(hard_low, hard_high)`` per float parameter that
            sets them: how far a moving box may extend past the first range.
        narrowing: The coarse-to-fine loop.
        resources: Ray resources.
        final_eval: The final evaluation.
        source_text: The study file's text, verbatim.
        overrides: The overrides applied on top of ``source_text``
            (``with_overrides`` keyword -> value), JSON-ready.
        objective: What a trial runs; the built-in MLP unless the file has
            an ``[objective]`` table. With a user's objective, ``data`` is
            None, ``model`` is empty, ``space`` may name any parameter and
            ``metric`` any name the objective reports.
        params: Constants passed to a user's objective with every trial's
            sampled parameters (the ``[params]`` table; read-only).
        folder: The study file's folder (absolute; empty for a study parsed
            from text): where a user's objective is imported or run from,
            and what Ray ships to every worker.
    """

    name: str
    metric: str = "val_accuracy"
    direction: str = "maximize"
    seed: int = 0
    sampler: str = "random"
    pruner: str = "none"
    prune_after: int | None = None
    data: DataConfig | None
    model: Mapping[str, Any] = field(default_factory=FrozenMap)
    space: Mapping[str, ParamSpec] = field(default_factory=FrozenMap)
    limits: Mapping[str, tuple[float, float]] = field(default_factory=FrozenMap)
    narrowing: NarrowingConfig = field(default_factory=NarrowingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    final_eval: FinalEvalConfig = field(default_factory=FinalEvalConfig)
    source_text: str = ""
    overrides: Mapping[str, Any] = field(default_factory=FrozenMap)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    params: Mapping[str, Any] = field(default_factory=FrozenMap)
    folder: str = ""

    @property
    def builtin(self) -> bool:
        """True when trials train the built-in MLP (no ``[objective]`` table)."""
        return self.objective.kind == "builtin"

    def train_config(self, params: Mapping[str, Any], seed: int) -> TrainConfig:
        """The trainer configuration of one trial.

        Args:
            params: A value for every searched parameter (exactly the names
                of ``space``), e.g. from an Optuna trial's ``params``.
            seed: The trial's seed (>= 0).

        Returns:
            ``TrainConfig`` of the fixed ``model`` options, ``params`` and ``seed``.

        Raises:
            ConfigError: A parameter is not searched, a searched one is
                missing, or a value is not a valid trainer option.
        """
        unknown = [k for k in params if k not in self.space]
        if unknown:
            raise ConfigError(
                f"trial params: {unknown[0]!r} is not a searched parameter; "
                f"searched: {', '.join(self.space) or '(none)'}"
            )
        missing = [k for k in self.space if k not in params]
        if missing:
            raise ConfigError(
                f"trial params: missing {', '.join(missing)}; every searched parameter "
                f"needs a value ({', '.join(self.space)})"
            )
        values = {**self.model, **{k: _plain(v) for k, v in params.items()}, "seed": _plain(seed)}
        try:
            return TrainConfig(**values)
        except TrainerConfigError as exc:
            raise ConfigError(_one_line(f"trial params: {exc}")) from exc

    def with_overrides(
        self,
        *,
        name: str | None = None,
        seed: int | None = None,
        rounds: int | None = None,
        trials_per_round: int | None = None,
        top_k: int | None = None,
        workers: int | None = None,
        final_eval: bool | None = None,
    ) -> StudyConfig:
        """A copy with command-line overrides applied and validated.

        ``None`` leaves a setting as it is. Errors name the CLI option
        (``OVERRIDE_OPTIONS``), e.g. ``--rounds: got 0; expected an integer >= 1``.
        The result's ``overrides`` holds every override applied so far (the
        new ones win), so ``from_record(source_text, overrides)`` rebuilds it.

        Args:
            name: ``--name``: study name (``NAME_PATTERN``).
            seed: ``--seed``: study seed in [0, 2**32 - 1].
            rounds: ``--rounds``: >= 1.
            trials_per_round: ``--trials-per-round``: >= 1 and >= top_k.
            top_k: ``--top-k``: 1 <= top_k <= trials per round.
            workers: ``--workers``: >= 1.
            final_eval: ``--final-eval``: run the final evaluation (true) or
                not (false).

        Raises:
            ConfigError: An override is not allowed.
        """
        given = {
            k: v
            for k, v in {
                "name": name,
                "seed": seed,
                "rounds": rounds,
                "trials_per_round": trials_per_round,
                "top_k": top_k,
                "workers": workers,
                "final_eval": final_eval,
            }.items()
            if v is not None
        }
        if not given:
            return self
        opt = OVERRIDE_OPTIONS
        if "name" in given:
            _check_name(opt["name"], given["name"])
        if "seed" in given:
            _check_int(opt["seed"], given["seed"], low=0, high=MAX_SEED)
        for key in ("rounds", "trials_per_round", "top_k", "workers"):
            if key in given:
                _check_int(opt[key], given[key], low=1)
        if "final_eval" in given:
            _check_bool(opt["final_eval"], given["final_eval"])

        narrowing = dataclasses.replace(
            self.narrowing,
            **{k: given[k] for k in ("rounds", "trials_per_round", "top_k") if k in given},
        )
        if narrowing.top_k > narrowing.trials_per_round:
            if "top_k" in given:
                raise ConfigError(
                    f"{opt['top_k']}: got {narrowing.top_k}; must be <= the trials per round "
                    f"({narrowing.trials_per_round})"
                )
            raise ConfigError(
                f"{opt['trials_per_round']}: got {narrowing.trials_per_round}; must be >= "
                f"narrowing.top_k ({narrowing.top_k}) of the study file; lower it with "
                f"{opt['top_k']}"
            )
        resources = self.resources
        if "workers" in given:
            resources = dataclasses.replace(resources, workers=given["workers"])
        final = self.final_eval
        if "final_eval" in given:
            final = dataclasses.replace(final, enabled=given["final_eval"])
        return dataclasses.replace(
            self,
            name=given.get("name", self.name),
            seed=given.get("seed", self.seed),
            narrowing=narrowing,
            resources=resources,
            final_eval=final,
            overrides=FrozenMap({**self.overrides, **given}),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without ``source_text``), e.g. for logs and reports."""
        return {
            "name": self.name,
            "metric": self.metric,
            "direction": self.direction,
            "seed": self.seed,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "prune_after": self.prune_after,
            "data": dataclasses.asdict(self.data) if self.data is not None else None,
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()},
            "space": {k: spec.to_dict() for k, spec in self.space.items()},
            "narrowing": dataclasses.asdict(self.narrowing),
            "resources": dataclasses.asdict(self.resources),
            "final_eval": dataclasses.asdict(self.final_eval),
            "overrides": dict(self.overrides),
            "objective": self.objective.to_dict(),
            "params": dict(self.params),
        }


# --------------------------------------------------------------------------- entry points


def load_study(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: The TOML file.

    Returns:
        The validated configuration; ``source_text`` is the file's text.

    Raises:
        ConfigError: The file is missing, a directory, unreadable, not UTF-8,
            not valid TOML (with line and column) or not a valid study; the
            message starts with the path.
    """
    shown = os.fspath(path)
    file = Path(path)
    if not file.exists():
        raise ConfigError(_one_line(f"{shown}: study file not found"))
    if file.is_dir():
        raise ConfigError(_one_line(f"{shown}: is a directory; expected a study file (.toml)"))
    try:
        raw = file.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(_one_line(f"{shown}: cannot read the study file: {reason}")) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            _one_line(
                f"{shown}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                "save the study file as UTF-8"
            )
        ) from exc
    config = parse_study(text.removeprefix("\ufeff"), source=shown)
    return dataclasses.replace(config, folder=str(file.resolve().parent))


def parse_study(text: str, *, source: str = "<string>") -> StudyConfig:
    """Validate a study file's text.

    Args:
        text: TOML text (parsed as data only).
        source: Where the text came from; unless it is the default
            ``"<string>"``, every error message starts with ``"{source}: "``.

    Returns:
        The validated configuration, with ``source_text=text``.

    Raises:
        ConfigError: The text is not valid TOML or not a valid study.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_study needs the study text as str, got {type(text).__name__}")
    prefix = "" if source == "<string>" else f"{source}: "
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_one_line(f"{prefix}malformed TOML: {exc}")) from exc
    try:
        return _build(data, text)
    except ConfigError as exc:
        if not prefix:
            raise
        raise ConfigError(_one_line(f"{prefix}{exc}")) from exc


def from_record(
    source_text: str, overrides: Mapping[str, Any] | None = None, *, source: str = "<string>"
) -> StudyConfig:
    """Rebuild a study from its recorded text and overrides (e.g. on resume).

    Args:
        source_text: ``StudyConfig.source_text`` (recorded as
            ``hpsearch.records.STUDY_FILE_KEY``).
        overrides: ``StudyConfig.overrides`` (recorded as
            ``hpsearch.records.OVERRIDES_KEY``).
        source: Named in error messages, as in :func:`parse_study`.

    Raises:
        ConfigError: The text or an override is not valid.
    """
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in OVERRIDE_OPTIONS]
    if unknown:
        raise ConfigError(
            f"overrides: unknown override {unknown[0]!r}; allowed: {', '.join(OVERRIDE_OPTIONS)}"
        )
    return parse_study(source_text, source=source).with_overrides(**overrides)


# --------------------------------------------------------------------------- building


def _build(data: dict[str, Any], text: str) -> StudyConfig:
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(_unknown_top_level(key, value))
        if not isinstance(value, dict):
            raise ConfigError(
                f"{key}: got {_show(value)} ({_kind(value)}); expected a table [{key}]"
            )

    study = _section(data, "study")
    name = _get(study, "name", required=_missing_name)
    _check_name("study.name", name)
    objective = _build_objective(data.get("objective"))
    if objective.kind != "builtin":
        return _build_user(data, text, study, name, objective)
    for section in ("params",):
        if section in data:
            raise ConfigError(
                f"{section}: [params] holds constants of a user's objective; the built-in "
                "objective's fixed options go in [model] (or add an [objective] table)"
            )
    metric = _get_choice(study, "study", "metric", tuple(METRICS), default="val_accuracy")
    implied = METRICS[metric]
    direction = _get_choice(study, "study", "direction", DIRECTIONS, default=implied)
    if direction != implied:
        raise ConfigError(
            f"study.direction: got {_show(direction)}; metric {_show(metric)} is "
            f"{implied}d (set direction = {_show(implied)} or leave it out)"
        )
    seed = _get(study, "seed", default=0)
    _check_int("study.seed", seed, low=0, high=MAX_SEED)
    sampler = _get_choice(study, "study", "sampler", SAMPLERS, default="random")
    pruner = _get_choice(study, "study", "pruner", PRUNERS, default="none")
    prune_after = _get(study, "prune_after", default=None)

    data_cfg = _build_data(_section(data, "data", required=True))
    model_raw = _section(data, "model")
    space = _build_space(data.get("search", {}), model_raw)
    model = _check_trainer_meaning(model_raw, space)
    if prune_after is not None:
        _check_prune_after(prune_after, pruner, model.get("epochs"), "model.epochs")
    limits = _build_limits(data.get("search", {}), space)
    narrowing = _build_narrowing(_section(data, "narrowing"))
    resources = _build_resources(_section(data, "resources"))
    final = _section(data, "final_eval")
    enabled = _get(final, "enabled", default=False)
    _check_bool("final_eval.enabled", enabled)
    seeds = _get(final, "seeds", default=5)
    _check_int("final_eval.seeds", seeds, low=1)

    backend = model.get("backend", TrainConfig.backend)
    if resources.gpus_per_trial > 0 and "backend" not in space and backend == "numpy":
        logger.warning(
            "resources.gpus_per_trial = %s but the numpy backend never uses a GPU; "
            "set model.backend = 'torch' to train on it",
            resources.gpus_per_trial,
        )

    return StudyConfig(
        name=name,
        metric=metric,
        direction=direction,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        prune_after=prune_after,
        data=data_cfg,
        model=model,
        space=FrozenMap(space),
        limits=FrozenMap(limits),
        narrowing=narrowing,
        resources=resources,
        final_eval=FinalEvalConfig(enabled=enabled, seeds=seeds),
        source_text=text,
        overrides=FrozenMap(),
    )


def _build_objective(table: Any) -> ObjectiveConfig:
    """The ``[objective]`` table: exactly one of ``function`` and ``command``."""
    if table is None:
        return ObjectiveConfig()
    _check_keys("objective", table, OBJECTIVE_KEYS)
    has_function, has_command = "function" in table, "command" in table
    if has_function == has_command:
        got = "both" if has_function else "neither"
        raise ConfigError(
            f"objective: got {got} of function and command; give exactly one, e.g. "
            "function = 'my_model:train' or command = ['python', 'train.py']"
        )
    function = command = None
    if has_function:
        function = table["function"]
        module, colon, attr = function.partition(":") if isinstance(function, str) else ("", "", "")
        dotted = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
        if not (colon and dotted.fullmatch(module.strip()) and dotted.fullmatch(attr.strip())):
            raise ConfigError(
                f"objective.function: got {_show(function)}; expected 'module:callable' "
                "(a module importable from the study file's folder), e.g. 'my_model:train'"
            )
        function = f"{module.strip()}:{attr.strip()}"
    else:
        command = table["command"]
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a for a in command)
        ):
            raise ConfigError(
                f"objective.command: got {_show(command)}; expected a non-empty array of "
                "non-empty strings, e.g. ['python', 'train.py', '--epochs', '20']"
            )
        command = tuple(command)
    max_steps = table.get("max_steps")
    if max_steps is not None:
        _check_int("objective.max_steps", max_steps, low=1)
    grace = table.get("kill_grace", DEFAULT_KILL_GRACE)
    _check_number("objective.kill_grace", grace, low=0.0)
    return ObjectiveConfig(
        function=function, command=command, max_steps=max_steps, kill_grace=float(grace)
    )


def _build_user(
    data: dict[str, Any],
    text: str,
    study: dict[str, Any],
    name: str,
    objective: ObjectiveConfig,
) -> StudyConfig:
    """A study of a user's objective: any metric, any parameters, no trainer checks."""
    for section, why in (
        ("data", "the objective loads its own data"),
        ("model", "put the objective's constants in [params]"),
    ):
        if section in data:
            raise ConfigError(
                f"{section}: [{section}] is for the built-in objective; with [objective] {why}"
            )
    metric = study.get("metric", "val_accuracy")
    if not isinstance(metric, str) or not METRIC_PATTERN.fullmatch(metric):
        raise ConfigError(
            f"study.metric: got {_show(metric)}; expected the name the objective reports "
            "(letters, digits, '_', '.', '-'; starting with a letter or '_'), e.g. "
            "'val_accuracy'"
        )
    if "direction" in study:
        direction = _get_choice(study, "study", "direction", DIRECTIONS, default="maximize")
    elif metric in METRICS:
        direction = METRICS[metric]
    else:
        raise ConfigError(
            f"study.direction: missing; metric {_show(metric)} is not a built-in metric, "
            "so say whether to maximize or minimize it (direction = 'maximize' or 'minimize')"
        )
    seed = _get(study, "seed", default=0)
    _check_int("study.seed", seed, low=0, high=MAX_SEED)
    sampler = _get_choice(study, "study", "sampler", SAMPLERS, default="random")
    pruner = _get_choice(study, "study", "pruner", PRUNERS, default="none")
    prune_after = _get(study, "prune_after", default=None)
    if prune_after is not None:
        _check_prune_after(prune_after, pruner, objective.max_steps, "objective.max_steps")
    constants = _section(data, "params")
    for key, value in constants.items():
        path = f"params.{_show_key(key)}"
        if not PARAM_PATTERN.fullmatch(str(key)):
            raise ConfigError(
                f"{path}: not a parameter name; use letters, digits, '_', '.', '-', starting "
                "with a letter or '_'"
            )
        if isinstance(value, dict):
            raise ConfigError(
                f"{path}: got a table; a constant is a string, number, boolean or array"
            )
    space = _build_user_space(data.get("search", {}), constants)
    limits = _build_limits(data.get("search", {}), space, check_trainer=False)
    narrowing = _build_narrowing(_section(data, "narrowing"))
    resources = _build_resources(_section(data, "resources"))
    if resources.pack_size > 1:
        raise ConfigError(
            f"resources.pack_size: got {resources.pack_size}; packing is an ability of the "
            "built-in objective; a user's objective trains one trial at a time (leave it out)"
        )
    final = _section(data, "final_eval")
    if final.get("enabled", False):
        raise ConfigError(
            "final_eval.enabled: the final evaluation (test accuracy of the built-in MLP) "
            "needs the built-in objective; leave it out with [objective]"
        )
    return StudyConfig(
        name=name,
        metric=metric,
        direction=direction,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        prune_after=prune_after,
        data=None,
        model=FrozenMap(),
        space=FrozenMap(space),
        limits=FrozenMap(limits),
        narrowing=narrowing,
        resources=dataclasses.replace(resources, pack_size=1),
        final_eval=FinalEvalConfig(enabled=False, seeds=int(final.get("seeds", 5))),
        source_text=text,
        overrides=FrozenMap(),
        objective=objective,
        params=FrozenMap(constants),
    )


def _build_user_space(search: Any, constants: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """``[search.<any name>]`` of a user's objective: floats, ints, categoricals."""
    example = "e.g. [search.learning_rate] low = 1e-4, high = 1e-1, log = true"
    if not search:
        raise ConfigError(f"search: no parameter to search; add a [search.<name>] table, {example}")
    space: dict[str, ParamSpec] = {}
    for key, table in search.items():
        path = f"search.{_show_key(key)}"
        if not PARAM_PATTERN.fullmatch(str(key)):
            raise ConfigError(
                f"{path}: not a parameter name; use letters, digits, '_', '.', '-', starting "
                "with a letter or '_'"
            )
        if key in constants:
            raise ConfigError(
                f"{path}: {key} is also a constant in [params] (params.{key} = "
                f"{_show(constants[key])}); fix it or search it, not both"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: got {_show(table)} ({_kind(table)}); expected a table with low and "
                f"high or with choices, e.g. [search.{key}] low = ..., high = ..."
            )
        plain = {k: v for k, v in table.items() if k not in ("hard_low", "hard_high")}
        space[key] = _build_param(path, key, plain, user=True)
    return space


def _check_prune_after(value: Any, pruner: str, epochs: Any, where: str) -> None:
    _check_int("study.prune_after", value, low=1)
    if pruner == "none":
        raise ConfigError(
            f"study.prune_after: got {_show(value)} but study.pruner is 'none'; set a pruner "
            "(median, asha, hyperband) or leave prune_after out"
        )
    # A searched epochs count (or an objective without max_steps) is not checked here.
    if epochs is not None and value >= epochs:
        raise ConfigError(
            f"study.prune_after: got {_show(value)}; must be below {where} ({epochs}), "
            "or no trial could ever be pruned"
        )


def _missing_name() -> str:
    return "study.name: missing; every study needs a name, e.g. [study] name = 'quick'"


def _build_data(table: dict[str, Any]) -> DataConfig:
    allowed = ", ".join([*DATASET_NAMES, *(p + v[1] for p, v in DATASET_PREFIXES.items())])
    dataset = _get(table, "dataset", required=lambda: f"data.dataset: missing; allowed: {allowed}")
    if not isinstance(dataset, str):
        raise ConfigError(
            f"data.dataset: got {_show(dataset)} ({_kind(dataset)}); expected a string: {allowed}"
        )
    dataset = dataset.strip()
    if dataset not in DATASET_NAMES:
        prefix = next((p for p in DATASET_PREFIXES if dataset.startswith(p)), None)
        if prefix is None:
            raise ConfigError(
                f"data.dataset: got {_show(dataset)}{_did_you_mean(dataset, DATASET_NAMES)}; "
                f"allowed: {allowed}"
            )
        rest = dataset[len(prefix) :].strip()
        what, _, example = DATASET_PREFIXES[prefix]
        if not rest or (prefix == "synthetic:" and not (rest.isdigit() and int(rest) >= 2)):
            raise ConfigError(
                f"data.dataset: got {_show(dataset)}; {prefix!r} must be followed by "
                f"{what}, e.g. {example!r}"
            )
    train_samples = _get(table, "train_samples", default=None)
    if train_samples is not None:
        _check_int("data.train_samples", train_samples, low=1)
    val_fraction = _get(table, "val_fraction", default=DEFAULT_VAL_FRACTION)
    _check_number(
        "data.val_fraction", val_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    val_fraction = float(val_fraction)
    if train_samples is not None:
        # The loader's rule: max(1, round(val_fraction * n)) validation samples.
        n_val = max(1, round(val_fraction * train_samples))
        if n_val >= train_samples:
            raise ConfigError(
                f"data.train_samples: got {train_samples}; with val_fraction = "
                f"{_show(val_fraction)} that leaves {n_val} validation and "
                f"{train_samples - n_val} training samples; use at least "
                f"{_min_samples(val_fraction)} samples"
            )
    return DataConfig(dataset=dataset, train_samples=train_samples, val_fraction=val_fraction)


def _min_samples(val_fraction: float) -> int:
    n = 2
    while max(1, round(val_fraction * n)) >= n:
        n += 1
    return n


def _build_narrowing(table: dict[str, Any]) -> NarrowingConfig:
    values: dict[str, Any] = {}
    for key in ("rounds", "trials_per_round", "top_k"):
        values[key] = _get(table, key, default=DEFAULT_NARROWING[key])
        _check_int(f"narrowing.{key}", values[key], low=1)
    if values["top_k"] > values["trials_per_round"]:
        raise ConfigError(
            f"narrowing.top_k: got {values['top_k']}; must be <= narrowing.trials_per_round "
            f"({values['trials_per_round']})"
        )
    margin = _get(table, "margin", default=DEFAULT_NARROWING["margin"])
    _check_number("narrowing.margin", margin, low=0.0)
    return NarrowingConfig(**values, margin=float(margin))


def _build_resources(table: dict[str, Any]) -> ResourcesConfig:
    workers = _get(table, "workers", default=None)
    if workers is not None:
        _check_int("resources.workers", workers, low=1)
    cpus = _get(table, "cpus_per_trial", default=1.0)
    _check_number("resources.cpus_per_trial", cpus, low=0.0, low_open=True)
    gpus = _get(table, "gpus_per_trial", default=0.0)
    _check_number("resources.gpus_per_trial", gpus, low=0.0)
    pack_size = _get(table, "pack_size", default=0)
    _check_int("resources.pack_size", pack_size, low=0)
    return ResourcesConfig(
        workers=workers,
        cpus_per_trial=float(cpus),
        gpus_per_trial=float(gpus),
        pack_size=pack_size,
    )


def _build_space(search: Any, model: dict[str, Any]) -> dict[str, ParamSpec]:
    example = "e.g. [search.lr] low = 1e-4, high = 1e-1, log = true"
    if not search:
        raise ConfigError(
            f"search: no parameter to search; add a [search.<option>] table, {example}"
        )
    space: dict[str, ParamSpec] = {}
    for key, table in search.items():
        path = f"search.{_show_key(key)}"
        _check_option(path, key, "search")
        if key in model:
            raise ConfigError(
                f"{path}: {key} is also fixed in [model] (model.{key} = {_show(model[key])}); "
                "fix it or search it, not both"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: got {_show(table)} ({_kind(table)}); expected a table with low and "
                f"high or with choices, e.g. [search.{key}] low = ..., high = ..."
            )
        plain = {k: v for k, v in table.items() if k not in ("hard_low", "hard_high")}
        space[key] = _build_param(path, key, plain)
    return space


def _build_limits(
    search: Any, space: dict[str, ParamSpec], *, check_trainer: bool = True
) -> dict[str, tuple[float, float]]:
    """Hard limits a moving box may reach: ``hard_low``/``hard_high`` of float ranges.

    Without them a parameter's box never leaves its ``low``..``high``.
    """
    limits: dict[str, tuple[float, float]] = {}
    for key, table in (search or {}).items():
        if not isinstance(table, dict) or not ({"hard_low", "hard_high"} & set(table)):
            continue
        path = f"search.{_show_key(key)}"
        spec = space[key]
        if not isinstance(spec, FloatRange):
            raise ConfigError(
                f"{path}: hard_low/hard_high are for float ranges only; {key} is "
                f"{'an integer range' if isinstance(spec, IntRange) else 'a categorical'}"
            )
        lo = table.get("hard_low", spec.low)
        hi = table.get("hard_high", spec.high)
        _check_number(f"{path}.hard_low", lo)
        _check_number(f"{path}.hard_high", hi)
        if lo > spec.low:
            raise ConfigError(
                f"{path}.hard_low: got {_show(lo)}; it must be <= low ({_show(spec.low)})"
            )
        if hi < spec.high:
            raise ConfigError(
                f"{path}.hard_high: got {_show(hi)}; it must be >= high ({_show(spec.high)})"
            )
        if spec.log and lo <= 0:
            raise ConfigError(f"{path}.hard_low: got {_show(lo)}; a log range needs it > 0")
        for end, value in (("hard_low", lo), ("hard_high", hi)) if check_trainer else ():
            try:
                TrainConfig(**{key: value})
            except TrainerConfigError as exc:
                raise ConfigError(_one_line(f"{path}.{end}: {exc}")) from exc
        limits[key] = (float(lo), float(hi))
    return limits


def _build_param(path: str, key: str, table: dict[str, Any], *, user: bool = False) -> ParamSpec:
    _check_keys(path, table, PARAM_KEYS)
    if "choices" in table:
        others = [k for k in table if k != "choices"]
        if others:
            raise ConfigError(
                f"{path}.{others[0]}: not allowed with choices; a parameter is either a "
                "range (low, high, log, int, step) or a categorical (choices)"
            )
        return _build_choice(f"{path}.choices", table["choices"])
    for end in ("low", "high"):
        if end not in table:
            raise ConfigError(
                f"{path}.{end}: missing; a searched parameter needs low and high "
                "(a range) or choices (a categorical)"
            )
    is_int = table.get("int", False)
    _check_bool(f"{path}.int", is_int)
    log = table.get("log", False)
    _check_bool(f"{path}.log", log)
    low, high = table["low"], table["high"]
    if is_int:
        if not user and key not in INT_OPTIONS:
            raise ConfigError(
                f"{path}.int: got true; {key} is not an integer option; int = true is for: "
                f"{', '.join(INT_OPTIONS)}"
            )
        _check_int(f"{path}.low", low)
        _check_int(f"{path}.high", high)
        step = table.get("step", 1)
        _check_int(f"{path}.step", step, low=1)
    else:
        if "step" in table:
            raise ConfigError(
                f"{path}.step: got {_show(table['step'])}; step is only for integer ranges "
                "(int = true)"
            )
        if not user and key in INT_OPTIONS:
            raise ConfigError(
                f"{path}: {key} takes integers; add int = true (low = {_show(low)}, "
                f"high = {_show(high)})"
            )
        _check_number(f"{path}.low", low)
        _check_number(f"{path}.high", high)
        step = 1
    if low >= high:
        where = "[params]" if user else "[model]"
        same = f"; to fix the value, set it in {where} instead" if low == high else ""
        raise ConfigError(f"{path}: low ({_show(low)}) must be < high ({_show(high)}){same}")
    if log and low <= 0:
        raise ConfigError(f"{path}.low: got {_show(low)}; a log range needs low > 0")
    if is_int:
        if log and step != 1:
            raise ConfigError(f"{path}.step: got {step}; a log integer range needs step = 1")
        if (high - low) % step:
            raise ConfigError(
                f"{path}.step: got {step}; high - low ({high} - {low} = {high - low}) must be "
                f"a multiple of step (e.g. high = {low + (high - low) // step * step})"
            )
        return IntRange(low=low, high=high, log=log, step=step)
    return FloatRange(low=float(low), high=float(high), log=log)


def _build_choice(path: str, choices: Any) -> Choice:
    if not isinstance(choices, list):
        raise ConfigError(
            f"{path}: got {_show(choices)} ({_kind(choices)}); expected an array, "
            "e.g. [true, false]"
        )
    if not choices:
        raise ConfigError(f"{path}: got []; expected at least one choice")
    for i, value in enumerate(choices):
        if not isinstance(value, (str, bool, int, float)):
            raise ConfigError(
                f"{path}[{i}]: got {_show(value)} ({_kind(value)}); choices must be strings, "
                "numbers or booleans"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}[{i}]: got {_show(value)}; expected a finite number")
        for j in range(i):
            if choices[j] == value:
                raise ConfigError(
                    f"{path}[{i}]: got {_show(value)}; it duplicates {path}[{j}] "
                    f"({_show(choices[j])}); choices must be distinct"
                )
    return Choice(choices=tuple(choices))


def _check_trainer_meaning(model: dict[str, Any], space: dict[str, ParamSpec]) -> FrozenMap:
    """Build a TrainConfig from the fixed options and from each end of every range
    (each choice) and re-raise trainer errors under the study's key paths; return
    the fixed options as TrainConfig normalized them."""
    fixed = dict(model)
    probes = {k: _probe_values(k, spec) for k, spec in space.items()}
    base_values = {k: values[0][1] for k, values in probes.items()}
    base_paths = {k: values[0][0] for k, values in probes.items()}
    try:
        base = TrainConfig(**fixed, **base_values)
    except TrainerConfigError as exc:
        option = _failing_option(exc)
        if option in fixed:
            raise ConfigError(_retarget(f"model.{option}", option, exc)) from exc
        if option in base_paths:
            raise ConfigError(_retarget(base_paths[option], option, exc)) from exc
        raise ConfigError(_one_line(f"model: {exc}")) from exc
    for key, values in probes.items():
        for path, value in values[1:]:
            try:
                TrainConfig(**fixed, **{**base_values, key: value})
            except TrainerConfigError as exc:
                raise ConfigError(_retarget(path, key, exc)) from exc
    return FrozenMap({k: getattr(base, k) for k in fixed})


def _probe_values(key: str, spec: ParamSpec) -> list[tuple[str, Any]]:
    path = f"search.{key}"
    if isinstance(spec, Choice):
        return [(f"{path}.choices[{i}]", v) for i, v in enumerate(spec.choices)]
    return [(f"{path}.low", spec.low), (f"{path}.high", spec.high)]


def _failing_option(exc: Exception) -> str:
    """The trainer option a trainer ConfigError names (its messages start ``option: ``)."""
    head = str(exc).split(":", 1)[0]
    return head if head in TrainConfig.field_names() else ""


def _retarget(path: str, option: str, exc: Exception) -> str:
    """``"dropout_ratio: got 1.0; ..."`` -> ``"search.dropout_ratio.high: got 1.0; ..."``."""
    message = str(exc)
    if message.startswith(f"{option}: "):
        message = message[len(option) + 2 :]
    return _one_line(f"{path}: {message}")


# --------------------------------------------------------------------------- value checks


def _section(data: dict[str, Any], name: str, *, required: bool = False) -> dict[str, Any]:
    if name not in data:
        if required:
            raise ConfigError(f"{name}: missing section [{name}]")
        return {}
    table = data[name]
    if name in _SECTION_KEYS:
        _check_keys(name, table, _SECTION_KEYS[name])
    return table


def _check_keys(path: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            hint = _did_you_mean(key, allowed)
            if path == "model" and key == "seed":
                raise ConfigError(
                    "model.seed: each trial's seed is derived from study.seed and the trial "
                    "number; set study.seed instead"
                )
            raise ConfigError(
                f"{path}.{_show_key(key)}: unknown key{hint}; allowed: {', '.join(allowed)}"
            )


def _check_option(path: str, key: str, where: str) -> None:
    if key == "seed":
        raise ConfigError(
            f"{path}: each trial's seed is derived from study.seed and the trial number; "
            f"it cannot be {'searched' if where == 'search' else 'fixed'} (set study.seed)"
        )
    if key not in TRAIN_OPTIONS:
        raise ConfigError(
            f"{path}: unknown trainer option{_did_you_mean(key, TRAIN_OPTIONS)}; "
            f"allowed: {', '.join(TRAIN_OPTIONS)}"
        )


def _unknown_top_level(key: str, value: Any) -> str:
    if not isinstance(value, dict):
        owner = next((s for s, keys in _SECTION_KEYS.items() if key in keys and s != "model"), None)
        where = f" (did you mean {owner}.{key}, under [{owner}]?)" if owner else ""
        return (
            f"{_show_key(key)}: unknown top-level key{where}; the file holds the sections "
            + ", ".join(f"[{s}]" for s in SECTIONS)
        )
    return (
        f"{_show_key(key)}: unknown section{_did_you_mean(key, SECTIONS)}; allowed: "
        + ", ".join(f"[{s}]" for s in SECTIONS)
    )


def _get(
    table: dict[str, Any],
    key: str,
    *,
    default: Any = _MISSING,
    required: Any = None,
) -> Any:
    if key in table:
        return table[key]
    if required is not None:
        raise ConfigError(required())
    return default


def _get_choice(
    table: dict[str, Any], section: str, key: str, allowed: tuple[str, ...], *, default: str
) -> str:
    value = table.get(key, default)
    path = f"{section}.{key}"
    if not isinstance(value, str):
        raise ConfigError(
            f"{path}: got {_show(value)} ({_kind(value)}); expected a string: {', '.join(allowed)}"
        )
    if value not in allowed:
        raise ConfigError(
            f"{path}: got {_show(value)}{_did_you_mean(value, allowed)}; allowed: "
            f"{', '.join(allowed)}"
        )
    return value


def _check_name(path: str, value: Any) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        kind = "" if isinstance(value, str) else f" ({_kind(value)})"
        raise ConfigError(
            f"{path}: got {_show(value)}{kind}; expected 1-100 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit (it names export files)"
        )


def _check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: got {_show(value)} ({_kind(value)}); expected true or false")


def _check_int(path: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
    if low is not None and high is not None:
        allowed = f"an integer in [{low}, {high}]"
    elif low is not None:
        allowed = f"an integer >= {low}"
    else:
        allowed = "an integer"
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{path}: got {_show(value)} ({_kind(value)}); expected {allowed}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{path}: got {value}; expected {allowed}")


def _check_number(
    path: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if low is not None and high is not None:
        allowed = (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
    elif low is not None:
        allowed = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        allowed = "a finite number"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{path}: got {_show(value)} ({_kind(value)}); expected {allowed}")
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{path}: got {_show(value)}; expected {allowed}")


# --------------------------------------------------------------------------- formatting


def _kind(value: Any) -> str:
    """The TOML type of a value, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return type(value).__name__


def _show(value: Any, limit: int = 80) -> str:
    """A value as TOML spells it, on one line and at most ``limit`` characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_show(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = (
            "{" + ", ".join(f"{_show_key(k)} = {_show(v, limit)}" for k, v in value.items()) + "}"
        )
    elif isinstance(value, (datetime.date, datetime.time)):
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_key(key: Any) -> str:
    """A key as a path component: bare when TOML allows it, else quoted."""
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _show(key, 60)


def _did_you_mean(value: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(message: str) -> str:
    return " ".join(message.split("\n")).replace("\r", " ")


def _plain(value: Any) -> Any:
    """NumPy scalars (some samplers return them) as Python scalars."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value
