"""Search boxes: the ranges a round samples from, as Optuna distributions and records.

A *box* maps each searched parameter to the range round r samples from: a
:class:`~hpsearch.config.FloatRange`, :class:`~hpsearch.config.IntRange` or
:class:`~hpsearch.config.Choice` (the study file's own types). Round 0's box is
the study's search space; the *region* is that space widened to the hard
limits. How a round's box follows from the previous one is the round rule's
(:mod:`hpsearch.round_rule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpsearch.config import Choice, FloatRange, IntRange, ParamSpec

Box = Mapping[str, ParamSpec]


def to_distribution(spec: ParamSpec) -> BaseDistribution:
    """The Optuna distribution that samples ``spec``."""
    if isinstance(spec, FloatRange):
        return FloatDistribution(spec.low, spec.high, log=spec.log)
    if isinstance(spec, IntRange):
        return IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return CategoricalDistribution(list(spec.choices))


def distributions(box: Box) -> dict[str, BaseDistribution]:
    return {name: to_distribution(spec) for name, spec in box.items()}


def contains(box: Box, params: Mapping[str, Any]) -> bool:
    """True when every parameter of ``params`` named in the box lies inside it."""
    for name, spec in box.items():
        if name not in params:
            return False
        value = params[name]
        if isinstance(spec, Choice):
            if value not in spec.choices:
                return False
        elif not (spec.low - _slack(spec) <= value <= spec.high + _slack(spec)):
            return False
    return True


def _slack(spec: FloatRange | IntRange) -> float:
    # Floats pass through 10**log10(x): allow a relative rounding error.
    if isinstance(spec, IntRange):
        return 0.0
    return 1e-12 * max(abs(spec.low), abs(spec.high))


def region(
    space: Box, limits: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, ParamSpec]:
    """Where a study may search at all: its ranges widened to the hard limits
    (``hard_low``/``hard_high``) where the study file sets them."""
    limits = limits or {}
    out: dict[str, ParamSpec] = {}
    for name, spec in space.items():
        if name in limits and isinstance(spec, FloatRange):
            low, high = limits[name]
            out[name] = FloatRange(low=min(low, spec.low), high=max(high, spec.high), log=spec.log)
        else:
            out[name] = spec
    return out


def is_point(box: Box) -> bool:
    """True when every parameter of the box has a single value: nothing left to search."""
    return all(
        len(spec.choices) == 1 if isinstance(spec, Choice) else spec.low == spec.high
        for spec in box.values()
    )


def spec_to_record(spec: ParamSpec) -> dict[str, Any]:
    if isinstance(spec, Choice):
        return {"choices": list(spec.choices)}
    out: dict[str, Any] = {"low": spec.low, "high": spec.high, "log": spec.log}
    if isinstance(spec, IntRange):
        out["step"] = spec.step
        out["int"] = True
    return out


def spec_from_record(data: Mapping[str, Any]) -> ParamSpec:
    if "choices" in data:
        return Choice(choices=tuple(data["choices"]))
    if data.get("int"):
        return IntRange(
            low=int(data["low"]),
            high=int(data["high"]),
            log=bool(data["log"]),
            step=int(data.get("step", 1)),
        )
    return FloatRange(low=float(data["low"]), high=float(data["high"]), log=bool(data["log"]))


def box_to_record(box: Box) -> dict[str, dict[str, Any]]:
    return {name: spec_to_record(spec) for name, spec in box.items()}


def box_from_record(data: Mapping[str, Mapping[str, Any]]) -> dict[str, ParamSpec]:
    return {name: spec_from_record(spec) for name, spec in data.items()}


def inside(inner: Box, outer: Box) -> bool:
    """True when every range of ``inner`` lies within ``outer``'s."""
    for name, spec in inner.items():
        other = outer[name]
        if isinstance(spec, Choice):
            if not set(spec.choices) <= set(other.choices):  # type: ignore[union-attr]
                return False
        elif spec.low < other.low - _slack(other) or spec.high > other.high + _slack(other):  # type: ignore[union-attr]
            return False
    return True
