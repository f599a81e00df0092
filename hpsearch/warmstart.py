"""Warm start: begin a study from the best region of a finished one (``--from NAME``).

The new study's first box is where the previous study's narrowing would have
gone next: the box the round rule chose after its last round (recorded as that
round's ``next_box``; for studies recorded before the rule recorded it, the
rule is applied to the study's trials now, with the metric's scale unknown).
Its top-k trials overall (best first; k = the new study's ``top_k``) are
enqueued as the first trials of round 0, so the
best known configurations are re-measured under the new study's seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch import ranking, records, round_rule, space
from hpsearch.config import Choice, ParamSpec, StudyConfig
from hpsearch.errors import ConfigError, StudyNotFoundError
from hpsearch.records import RoundRecord


@dataclass(frozen=True)
class WarmStart:
    source: str
    box: dict[str, ParamSpec]
    enqueue: list[dict[str, Any]]
    source_trials: list[int]

    def to_record(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "box": space.box_to_record(self.box),
            "enqueued_from_trials": self.source_trials,
        }


def warm_start(storage: Any, source: str, config: StudyConfig) -> WarmStart:
    """The first box and enqueued trials for ``config`` from study ``source``."""
    try:
        previous = optuna.load_study(study_name=source, storage=storage)
    except KeyError as exc:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        raise StudyNotFoundError(
            f"--from: no study named {source!r} in the storage; studies: "
            f"{', '.join(names) or '(none)'}"
        ) from exc
    attrs = previous.user_attrs
    rounds = [
        RoundRecord.from_dict(v)
        for k, v in sorted(attrs.items())
        if k.startswith(records.ROUND_KEY_PREFIX)
    ]
    complete = previous.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"--from: study {source!r} has no COMPLETE trial to start from")
    names = set(config.space)
    for trial in complete:
        if set(trial.params) != names:
            raise ConfigError(
                f"--from: study {source!r} searched {', '.join(sorted(trial.params))}; this "
                f"study searches {', '.join(sorted(names))}: they must search the same parameters"
            )
    maximize = previous.direction == StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))
    top = ranked[: config.narrowing.top_k]

    box = dict(config.space)
    if rounds:
        last = rounds[-1]
        if last.next_box is not None:
            recorded = space.box_from_record(last.next_box)
        else:
            recorded = _next_box(previous.get_trials(deepcopy=False), last, config, maximize)
        if set(recorded) == names:
            box = recorded
    box = _within_study_space(box, config)
    enqueue = [dict(t.params) for t in top if space.contains(box, t.params)]
    return WarmStart(source=source, box=box, enqueue=enqueue, source_trials=[t.number for t in top])


def _next_box(
    trials: list[FrozenTrial], last: RoundRecord, config: StudyConfig, maximize: bool
) -> dict[str, ParamSpec]:
    """The round rule's box after ``last``, from the recorded trials."""
    points = [p for p in map(ranking.to_point, trials) if p is not None]
    decision = round_rule.decide(
        space.box_from_record(last.box),
        space.region(config.space, config.limits),
        points,
        round_index=last.index,
        settings=round_rule.RuleSettings(
            top_k=config.narrowing.top_k, margin=config.narrowing.margin, maximize=maximize
        ),
    )
    return decision.box


def _within_study_space(box: dict[str, ParamSpec], config: StudyConfig) -> dict[str, ParamSpec]:
    """Keep the box inside what this study file allows (its ranges or hard limits)."""
    out: dict[str, ParamSpec] = {}
    for name, spec in box.items():
        allowed = config.space[name]
        if isinstance(allowed, Choice) or isinstance(spec, Choice):
            choices = tuple(c for c in spec.choices if c in allowed.choices)  # type: ignore[union-attr]
            out[name] = Choice(choices=choices or allowed.choices)  # type: ignore[union-attr]
            continue
        lo, hi = config.limits.get(name, (allowed.low, allowed.high))
        low, high = max(spec.low, lo), min(spec.high, hi)
        out[name] = (
            allowed if low > high else type(spec)(**{**spec.__dict__, "low": low, "high": high})
        )
    return out
