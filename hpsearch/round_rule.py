"""The round rule of the narrowing loop: a round's box and trials -> the next box, and why.

A pure function, :func:`decide`, of the round's box, the study's region, the
finished trials of every round so far and a few settings; no Ray, no database.
The driver records its :class:`Decision` with the round (``decision``,
``reason``, ``evidence``), and ``hpsearch show``, :func:`hpsearch.results.rounds`
and the report display it.

Terms:
    region: where the study may search at all: the study file's ranges,
        widened to ``hard_low``/``hard_high`` where it sets them, every choice.
    box: where one round samples; inside the region. Numbers are handled on
        their *axis*: log10 for log ranges, linear otherwise; an int range
        keeps its step grid; a categorical's box is a subset of its choices.
    floor: the value of a trial that learned nothing (chance accuracy for
        the built-in accuracy metrics; given by the caller) or, when nothing
        says, the median value of the round.
    noise: the standard error of one trial's value (given by the caller, e.g.
        binomial on the validation split, or estimated from the trials'
        curves); 0 when nothing says.
    informative trial: one whose value (the metric, or the last value a
        pruned trial reported) beats the floor by more than ``Z * noise``. A
        trial at chance, or pruned before it learned anything, is not.

The rule, after round r, with the informative trials of rounds 0..r ranked
best first (:func:`hpsearch.ranking.rank_points`: complete trials by value,
then pruned ones by depth and value):

1. *No signal*: no informative trial in any round. Shrinking would follow
   noise, so the box keeps its place: it *holds* when it is already the
   region, else it *grows* (twice its width about its centre, within the
   region; every choice back).
2. *Failure*: the round has no informative trial although earlier ones had,
   or its best is below the k-th best of the earlier rounds by more than
   ``Z * noise``: the box may have cut away the good region. It grows back
   (twice its width about the best trial so far, every choice back), or
   *restarts* at the region when it had collapsed (narrower than
   :data:`COLLAPSED` of the region on every numeric axis).
3. *Signal*: the top-k informative trials of all rounds so far span the next
   box (min..max on each axis, padded by ``margin`` times the box's width,
   within the region; the choices they use). The box keeps at least
   :data:`KEEP` of its width when k trials are informative, and more when
   fewer are: ``KEEP + (1 - KEEP) * (1 - n/k)`` for n < k informative trials
   (one weak trial barely moves it), and its choices stay until k are.
   When the best trial lies within :data:`EDGE` of the box's width of an
   edge the region extends past, that edge moves out by :data:`SLIDE`
   of the width or :data:`HALFWAY` to the region's edge, whichever is more,
   so the search follows an optimum outside the first box in a few rounds.

The action recorded names what happened to the box: ``shrink`` (inside the old
box, smaller), ``hold`` (the same), ``grow`` (contains the old box), ``slide``
(some edge moved out and another in) or ``restart`` (the region, after a
collapse). The reason states the evidence in one sentence.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpsearch.config import Choice, FloatRange, IntRange, ParamSpec

ACTIONS = ("shrink", "hold", "grow", "slide", "restart")

Z = 3.0
"""How many noise units a trial must beat the floor by to count as informative."""
KEEP = 0.25
"""A shrinking box keeps at least this fraction of its width per round (with k
informative trials; more with fewer)."""
EDGE = 0.15
"""The best trial within this fraction of the width of an edge crowds it."""
SLIDE = 0.5
"""A crowded edge moves out by at least this fraction of the box's width..."""
HALFWAY = 0.5
"""... and at least this fraction of its distance to the region's edge."""
COLLAPSED = 0.05
"""A box narrower than this fraction of the region on every numeric axis has collapsed."""


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial as the rule sees it.

    Attributes:
        number: The trial number (ties are broken by it).
        round: 0-based round it ran in.
        params: Its parameters.
        value: The metric of a COMPLETE trial, or the last value a PRUNED one
            reported.
        depth: Steps (epochs) it trained; a COMPLETE trial's is its full length.
        complete: Whether it ran to the end (COMPLETE) or was pruned.
    """

    number: int
    round: int
    params: Mapping[str, Any]
    value: float
    depth: int
    complete: bool


@dataclass(frozen=True)
class MetricScale:
    """What the caller knows of the metric's scale (None: not known).

    Attributes:
        floor: The value of a trial that learned nothing (e.g. chance accuracy).
        noise: Standard error of one trial's value.
        floor_source, noise_source: How they were obtained, for the record.
    """

    floor: float | None = None
    noise: float | None = None
    floor_source: str = ""
    noise_source: str = ""


@dataclass(frozen=True)
class RuleSettings:
    """The study's narrowing settings the rule uses."""

    top_k: int
    margin: float
    maximize: bool


@dataclass(frozen=True)
class Decision:
    """What the rule decided after a round.

    Attributes:
        action: One of :data:`ACTIONS`.
        box: The next round's box.
        reason: One sentence: the evidence and what it made the rule do.
        evidence: The numbers behind it (JSON-ready): floor, noise,
            threshold, informative trials, best values, top trials.
        moved_edges: Edges of ``box`` past the old box (``"lr.high"``, ...).
        top_trials: Numbers of the trials that spanned the box, best first
            (empty when no trial was informative).
    """

    action: str
    box: dict[str, ParamSpec]
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    moved_edges: tuple[str, ...] = ()
    top_trials: tuple[int, ...] = ()


# --------------------------------------------------------------------------- axes


def _axis(value: float, spec: FloatRange | IntRange) -> float:
    return math.log10(value) if spec.log else float(value)


def _span(spec: FloatRange | IntRange) -> tuple[float, float]:
    return _axis(spec.low, spec), _axis(spec.high, spec)


def _on_grid(
    lo: float, hi: float, template: FloatRange | IntRange, region: FloatRange | IntRange
) -> FloatRange | IntRange:
    """The range ``lo..hi`` (axis units) of ``template``'s kind, within ``region``."""
    r_lo, r_hi = _span(region)
    lo, hi = max(lo, r_lo), min(hi, r_hi)
    if isinstance(template, FloatRange):
        low = region.low if lo <= r_lo else (10.0**lo if template.log else lo)
        high = region.high if hi >= r_hi else (10.0**hi if template.log else hi)
        return FloatRange(low=low, high=max(low, high), log=template.log)
    assert isinstance(region, IntRange)
    step = region.step
    low_f = 10.0**lo if template.log else lo
    high_f = 10.0**hi if template.log else hi
    low = region.low + step * math.floor((low_f - region.low) / step + 1e-9)
    high = region.low + step * math.ceil((high_f - region.low) / step - 1e-9)
    low, high = max(region.low, low), min(region.high, high)
    return IntRange(low=low, high=max(low, high), log=template.log, step=step)


def _fit_width(lo: float, hi: float, width: float, r_lo: float, r_hi: float) -> tuple[float, float]:
    """Widen ``lo..hi`` about its centre to at least ``width``, shifted into ``r_lo..r_hi``."""
    if hi - lo < width:
        centre = (lo + hi) / 2
        lo, hi = centre - width / 2, centre + width / 2
    if lo < r_lo:
        lo, hi = r_lo, min(r_hi, hi + (r_lo - lo))
    if hi > r_hi:
        lo, hi = max(r_lo, lo - (hi - r_hi)), r_hi
    return lo, hi


def _same(a: ParamSpec, b: ParamSpec) -> bool:
    if isinstance(a, Choice) or isinstance(b, Choice):
        return a == b
    tol = 1e-9 * max(1.0, abs(a.high - a.low))
    return abs(a.low - b.low) <= tol and abs(a.high - b.high) <= tol


def _within(inner: ParamSpec, outer: ParamSpec) -> bool:
    if isinstance(inner, Choice):
        return set(inner.choices) <= set(outer.choices)  # type: ignore[union-attr]
    tol = 1e-9 * max(1.0, abs(outer.high - outer.low))  # type: ignore[union-attr]
    return inner.low >= outer.low - tol and inner.high <= outer.high + tol  # type: ignore[union-attr]


def is_collapsed(box: Mapping[str, ParamSpec], region: Mapping[str, ParamSpec]) -> bool:
    """True when every numeric range of ``box`` is narrower than :data:`COLLAPSED`
    of the region's (a box without numeric ranges never collapses)."""
    widths = []
    for name, spec in box.items():
        if isinstance(spec, Choice):
            continue
        r_lo, r_hi = _span(region[name])  # type: ignore[arg-type]
        lo, hi = _span(spec)
        widths.append((hi - lo) / (r_hi - r_lo) if r_hi > r_lo else 0.0)
    return bool(widths) and all(w < COLLAPSED for w in widths)


# --------------------------------------------------------------------------- boxes


def _grown(
    box: Mapping[str, ParamSpec], region: Mapping[str, ParamSpec], centre_on: Mapping[str, Any]
) -> dict[str, ParamSpec]:
    """Twice the box's width about ``centre_on``'s values (else the box's centre),
    within the region; every choice of the region back."""
    out: dict[str, ParamSpec] = {}
    for name, spec in box.items():
        reg = region[name]
        if isinstance(spec, Choice):
            out[name] = reg
            continue
        lo, hi = _span(spec)
        r_lo, r_hi = _span(reg)  # type: ignore[arg-type]
        centre = _axis(centre_on[name], spec) if name in centre_on else (lo + hi) / 2
        width = 2 * (hi - lo)
        out[name] = _on_grid(*_fit_width(centre, centre, width, r_lo, r_hi), spec, reg)  # type: ignore[arg-type]
    return out


def _spanned(
    box: Mapping[str, ParamSpec],
    region: Mapping[str, ParamSpec],
    top: Sequence[TrialPoint],
    margin: float,
    top_k: int,
) -> tuple[dict[str, ParamSpec], list[str]]:
    """The box the top trials span (see rule 3), and the edges that crowded and moved."""
    # Evidence from fewer than k informative trials narrows less: on the deep tanh
    # problem three trials barely above chance shrank the box onto a slow-learning
    # corner (lr < 2e-4) far from where the network learns well.
    filled = min(1.0, len(top) / top_k)
    keep = KEEP + (1 - KEEP) * (1 - filled)
    out: dict[str, ParamSpec] = {}
    crowded: list[str] = []
    best = top[0].params
    for name, spec in box.items():
        reg = region[name]
        values = [p.params[name] for p in top if name in p.params]
        if isinstance(spec, Choice):
            seen = set(values) if filled == 1.0 else set(spec.choices)
            out[name] = Choice(choices=tuple(c for c in reg.choices if c in seen) or spec.choices)  # type: ignore[union-attr]
            continue
        lo, hi = _span(spec)
        r_lo, r_hi = _span(reg)  # type: ignore[arg-type]
        width = hi - lo
        axis = [_axis(v, spec) for v in values]
        new_lo, new_hi = min(axis) - margin * width, max(axis) + margin * width
        new_lo, new_hi = _fit_width(new_lo, new_hi, keep * width, r_lo, r_hi)
        b = _axis(best[name], spec) if name in best else (lo + hi) / 2
        near = EDGE * width
        # The best trial near an edge the region extends past: that edge moves
        # out by SLIDE of the width, the other keeps the box's width (it slides).
        if hi < r_hi and hi - b <= near:
            new_hi = max(new_hi, min(r_hi, hi + max(SLIDE * width, HALFWAY * (r_hi - hi))))
            new_lo = min(new_lo, max(lo, new_hi - width))
            crowded.append(f"{name}.high")
        elif lo > r_lo and b - lo <= near:
            new_lo = min(new_lo, max(r_lo, lo - max(SLIDE * width, HALFWAY * (lo - r_lo))))
            new_hi = max(new_hi, min(hi, new_lo + width))
            crowded.append(f"{name}.low")
        out[name] = _on_grid(new_lo, new_hi, spec, reg)  # type: ignore[arg-type]
    return out, crowded


def moved_edges(old: Mapping[str, ParamSpec], new: Mapping[str, ParamSpec]) -> list[str]:
    """Edges of ``new`` that lie outside ``old`` (``"lr.high"``; a categorical's new
    choices as ``"batchnorm.choices"``)."""
    out: list[str] = []
    for name, spec in new.items():
        before = old[name]
        if isinstance(spec, Choice):
            if not set(spec.choices) <= set(before.choices):  # type: ignore[union-attr]
                out.append(f"{name}.choices")
            continue
        tol = 1e-9 * max(1.0, abs(before.high - before.low))  # type: ignore[union-attr]
        if spec.low < before.low - tol:  # type: ignore[union-attr]
            out.append(f"{name}.low")
        if spec.high > before.high + tol:  # type: ignore[union-attr]
            out.append(f"{name}.high")
    return out


def _action(old: Mapping[str, ParamSpec], new: Mapping[str, ParamSpec]) -> str:
    if all(_same(new[n], old[n]) for n in old):
        return "hold"
    if all(_within(new[n], old[n]) for n in old):
        return "shrink"
    if all(_within(old[n], new[n]) for n in old):
        return "grow"
    return "slide"


# --------------------------------------------------------------------------- the rule


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def signal_threshold(scale: MetricScale, *, maximize: bool) -> float | None:
    """The value an informative trial must beat (``floor`` +- ``Z * noise``), or
    None when the floor is not known beforehand (it is then the round's median,
    which only :func:`decide` can take)."""
    if scale.floor is None:
        return None
    sign = 1.0 if maximize else -1.0
    return float(scale.floor) + sign * Z * float(scale.noise or 0.0)


def rank_points(points: Sequence[TrialPoint], *, maximize: bool) -> list[TrialPoint]:
    """Best first: complete trials by value, then pruned ones by depth (deeper
    first) and value; ties by trial number (as :mod:`hpsearch.ranking`)."""
    sign = -1.0 if maximize else 1.0
    return sorted(
        points,
        key=lambda p: (
            0 if p.complete else 1,
            0 if p.complete else -p.depth,
            sign * p.value,
            p.number,
        ),
    )


def decide(
    box: Mapping[str, ParamSpec],
    region: Mapping[str, ParamSpec],
    points: Sequence[TrialPoint],
    *,
    round_index: int,
    settings: RuleSettings,
    scale: MetricScale | None = None,
) -> Decision:
    """The next box after round ``round_index`` (see the module docstring).

    Args:
        box: The round's box.
        region: The study's region (every parameter of ``box``).
        points: Finished (COMPLETE or PRUNED) trials of rounds 0..round_index
            with finite values; trials of later rounds are ignored.
        round_index: The round that just ended (0-based).
        settings: top-k, margin and the direction.
        scale: The metric's floor and noise, when the caller knows them.
    """
    scale = scale or MetricScale()
    sign = 1.0 if settings.maximize else -1.0
    points = [p for p in points if p.round <= round_index and math.isfinite(p.value)]
    this = [p for p in points if p.round == round_index]
    if scale.floor is not None:
        floor, floor_source = float(scale.floor), scale.floor_source or "given"
    elif this:
        floor, floor_source = statistics.median(p.value for p in this), "the round's median"
    else:
        floor, floor_source = math.nan, "no trial"
    noise = float(scale.noise) if scale.noise is not None else 0.0
    threshold = floor + sign * Z * noise

    def clears(value: float) -> bool:
        return sign * (value - threshold) > 0

    informative = rank_points([p for p in points if clears(p.value)], maximize=settings.maximize)
    this_inf = [p for p in informative if p.round == round_index]
    earlier_inf = [p for p in informative if p.round < round_index]
    this_best = rank_points(this, maximize=settings.maximize)[:1]
    evidence: dict[str, Any] = {
        "floor": None if math.isnan(floor) else floor,
        "floor_source": floor_source,
        "noise": noise,
        "noise_source": scale.noise_source or ("given" if scale.noise is not None else "unknown"),
        "threshold": None if math.isnan(threshold) else threshold,
        "trials": len(this),
        "informative": len(this_inf),
        "round_best": this_best[0].value if this_best else None,
        "round_best_trial": this_best[0].number if this_best else None,
    }
    above = (
        f"above {floor_source} {_fmt(floor)}"
        + (f" + {Z:g} x noise {noise:.3g}" if noise > 0 else "")
        + f" = {_fmt(threshold)}"
    )

    if not informative:
        whole = all(_same(box[n], region[n]) for n in box)
        reason = (
            f"no trial clearly {above} (round best {_fmt(evidence['round_best'])}): "
            "shrinking would follow noise"
        )
        if whole:
            return _decision(
                "hold", dict(box), box, f"{reason}; the box stays the region", evidence
            )
        grown = _grown(box, region, {})
        return _decision(
            "grow", grown, box, f"{reason}; the box doubles toward the region", evidence
        )

    top = informative[: settings.top_k]
    evidence["top"] = [p.number for p in top]
    evidence["best_so_far"] = top[0].value
    evidence["best_trial"] = top[0].number
    kth_earlier = earlier_inf[min(settings.top_k, len(earlier_inf)) - 1] if earlier_inf else None
    failed = None
    if earlier_inf and not this_inf:
        failed = f"round {round_index + 1} has no trial {above}, while earlier rounds had"
    elif (
        kth_earlier is not None
        and sign * (this_inf[0].value + sign * Z * noise - kth_earlier.value) < 0
    ):
        failed = (
            f"round best {_fmt(this_inf[0].value)} falls short of the earlier rounds' "
            f"top-{settings.top_k} (down to {_fmt(kth_earlier.value)})"
            + (f" by more than {Z:g} x noise {noise:.3g}" if noise > 0 else "")
        )
    if failed is not None:
        evidence["failure"] = True
        if is_collapsed(box, region):
            return _decision(
                "restart",
                dict(region),
                box,
                f"{failed}, and the box had collapsed: restart from the region",
                evidence,
                top,
            )
        grown = _grown(box, region, top[0].params)
        return _decision(
            "grow",
            grown,
            box,
            f"{failed}: the box may have cut the good region away; it doubles about the "
            f"best trial so far ({top[0].number}, {_fmt(top[0].value)})",
            evidence,
            top,
        )
    spanned, crowded = _spanned(box, region, top, settings.margin, settings.top_k)
    evidence["crowded_edges"] = crowded
    reason = (
        f"{len(this_inf)} of {len(this)} trials {above}; the top {len(top)} "
        f"(best {top[0].number}: {_fmt(top[0].value)}) span the next box"
    )
    if crowded:
        verb = "moves" if len(crowded) == 1 else "move"
        reason += f"; the best crowds {', '.join(crowded)}, which {verb} out"
    # Top trials of earlier rounds (or the margin) can reach past this box: say so,
    # or a "slide" would be left unexplained.
    spread = [e for e in moved_edges(box, spanned) if e not in crowded]
    if spread:
        verb = "moves" if len(spread) == 1 else "move"
        reason += f"; {', '.join(spread)} {verb} out to hold them (with the margin)"
    return _decision(_action(box, spanned), spanned, box, reason, evidence, top)


def _decision(
    action: str,
    new: dict[str, ParamSpec],
    old: Mapping[str, ParamSpec],
    reason: str,
    evidence: dict[str, Any],
    top: Sequence[TrialPoint] = (),
) -> Decision:
    if action != "restart":  # otherwise the action names what happened to the box
        action = _action(old, new)
    return Decision(
        action=action,
        box=new,
        reason=reason,
        evidence=evidence,
        moved_edges=tuple(moved_edges(old, new)),
        top_trials=tuple(p.number for p in top),
    )
