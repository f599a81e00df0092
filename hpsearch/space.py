"""Search boxes and the narrowing rule of the coarse-to-fine loop.

A *box* maps each searched parameter to the range round r samples from: a
:class:`~hpsearch.config.FloatRange`, :class:`~hpsearch.config.IntRange` or
:class:`~hpsearch.config.Choice` (the study file's own types). Round 0's box is
the study's search space.

Narrowing (after round r, from its top-k finished trials):
    * log parameters: the top-k values' min..max in log10 space, padded on each
      side by ``margin`` times box r's width in log10 space, clipped to box r
      -- except that when the best trial lies in the outer max(margin, 0.25)
      of the width next to an edge, the box slides out past that edge by that
      much (keeping its width), up to the hard limits the study file sets
      (``hard_low``/``hard_high``), so a search whose optimum lies outside the
      first box can still reach it;
    * other numbers: the same in linear space (ints rounded outwards, kept on
      the step grid);
    * categoricals: the choices seen among the top-k, in the original order.
The loop stops when the new box equals the old one (it no longer changes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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


def _to_axis(value: float, log: bool) -> float:
    return math.log10(value) if log else float(value)


def _from_axis(value: float, log: bool) -> float:
    return 10.0**value if log else value


MOVE_AT_LEAST = 0.25
"""A crowded edge moves out by max(margin, MOVE_AT_LEAST) of the box's width."""


def narrow_spec(
    spec: ParamSpec,
    values: Iterable[Any],
    margin: float,
    limit: tuple[float, float] | None = None,
) -> tuple[ParamSpec, list[str]]:
    """The next range of one parameter from the top trials' values.

    ``values`` come best first. Returns the new range and the edge
    (``low``/``high``) that moved out, if any. An edge moves out only when
    ``limit`` (the study file's hard limits) leaves room past it and the best
    value lies within ``s = max(margin, MOVE_AT_LEAST)`` of the box's width
    of it; the edge then moves out by ``s`` of the width, up to the limit, and
    the box keeps its width (it slides rather than shrinks).
    """
    values = list(values)
    if not values:
        return spec, []
    if isinstance(spec, Choice):
        seen = set(values)
        return Choice(choices=tuple(c for c in spec.choices if c in seen)), []
    lo_axis, hi_axis = _to_axis(spec.low, spec.log), _to_axis(spec.high, spec.log)
    width = hi_axis - lo_axis
    pad = margin * width
    top = [_to_axis(v, spec.log) for v in values]
    new_lo = max(lo_axis, min(top) - pad)
    new_hi = min(hi_axis, max(top) + pad)
    moved: list[str] = []
    if limit is not None and isinstance(spec, FloatRange):
        # The best trial (values come best first) near an edge pulls the box
        # out past that edge: it slides by ``step_out`` and keeps its width.
        step_out = max(margin, MOVE_AT_LEAST) * width
        hard_lo, hard_hi = _to_axis(limit[0], spec.log), _to_axis(limit[1], spec.log)
        best = top[0]
        if hard_lo < lo_axis and best - lo_axis <= step_out:
            new_lo, moved = max(hard_lo, lo_axis - step_out), ["low"]
            new_hi = max(new_hi, min(hi_axis, new_lo + width))
        elif hard_hi > hi_axis and hi_axis - best <= step_out:
            new_hi, moved = min(hard_hi, hi_axis + step_out), ["high"]
            new_lo = min(new_lo, max(lo_axis, new_hi - width))
    if isinstance(spec, FloatRange):
        low = spec.low if new_lo == lo_axis else _from_axis(new_lo, spec.log)
        high = spec.high if new_hi == hi_axis else _from_axis(new_hi, spec.log)
        return FloatRange(low=low, high=max(low, high), log=spec.log), moved
    low_f, high_f = _from_axis(new_lo, spec.log), _from_axis(new_hi, spec.log)
    step = spec.step
    low = spec.low + step * math.floor((low_f - spec.low) / step + 1e-9)
    high = spec.low + step * math.ceil((high_f - spec.low) / step - 1e-9)
    low, high = max(spec.low, low), min(spec.high, high)
    return IntRange(low=low, high=max(low, high), log=spec.log, step=step), []


def narrow(
    box: Box,
    top_params: list[Mapping[str, Any]],
    margin: float,
    limits: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, ParamSpec], list[str]]:
    """Box r+1 from box r and its top-k trials' parameters (see module doc).

    Returns the new box and the edges that moved out (``"lr.high"``, ...).
    """
    limits = limits or {}
    new: dict[str, ParamSpec] = {}
    moved: list[str] = []
    for name, spec in box.items():
        values = [p[name] for p in top_params if name in p]
        new[name], edges = narrow_spec(spec, values, margin, limits.get(name))
        moved.extend(f"{name}.{edge}" for edge in edges)
    return new, moved


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
