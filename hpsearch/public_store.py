"""The results database through Optuna's public storage API only.

:class:`PublicStudyStore` is what :meth:`hpsearch.storage.StudyStore.open`
returns when :mod:`hpsearch.internals` has turned Optuna's fast paths off (an
Optuna release hpsearch was not tested with, or ``HPSEARCH_PUBLIC_API_ONLY=1``).
It records the same things as :class:`~hpsearch.storage.StudyStore` - the same
trials, numbers, attributes, intermediate values, values and round records -
with ``BaseStorage``'s public methods: one call per row instead of one
transaction per batch (slower), and without the study-row lock that serialises
several drivers on one study (see :mod:`hpsearch.internals` for what that
costs).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpsearch import records
from hpsearch.records import RoundRecord
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome

logger = logging.getLogger(__name__)


class PublicStudyStore(StudyStore):
    """:class:`~hpsearch.storage.StudyStore` on Optuna's public storage API."""

    def create_running_trials(
        self,
        batch: list[tuple[Mapping[str, Any], int]],
        distributions: Mapping[str, BaseDistribution],
        *,
        round_limit: int | None = None,
        driver: str | None = None,
    ) -> list[tuple[int, int]]:
        if not batch:
            return []
        if round_limit is not None:
            room = round_limit - self.count_round(batch[0][1])
            batch = batch[: max(0, room)]
        out = []
        for params, round_index in batch:
            attrs: dict[str, Any] = {records.TRIAL_ROUND: round_index}
            if driver is not None:
                attrs[records.TRIAL_DRIVER] = driver
            template = FrozenTrial(
                number=0,  # Optuna numbers the trial
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.datetime.now(),  # Optuna sets its own
                datetime_complete=None,
                params=dict(params),
                distributions={name: distributions[name] for name in params},
                user_attrs=attrs,
                system_attrs={},
                intermediate_values={},
                trial_id=0,
            )
            trial_id = self.rdb.create_new_trial(self.study_id, template_trial=template)
            out.append((trial_id, self.rdb.get_trial_number_from_id(trial_id)))
        return out

    def finish_trials(self, outcomes: list[TrialOutcome]) -> None:
        for outcome in outcomes:
            trial_id = outcome.trial_id
            try:
                if self.rdb.get_trial(trial_id).state.is_finished():
                    raise UpdateFinishedTrialError
                attrs, steps, value = self._outcome_record(outcome)
                for key, attr in attrs.items():
                    self.rdb.set_trial_user_attr(trial_id, key, attr)
                for epoch, step_value in steps.items():
                    self.rdb.set_trial_intermediate_value(trial_id, epoch, step_value)
                self.rdb.set_trial_state_values(
                    trial_id, TrialState[outcome.state], None if value is None else [value]
                )
            except (KeyError, UpdateFinishedTrialError):
                logger.warning("trial %d is not running; not recorded again", outcome.number)

    def fail_trial(self, trial_id: int, reason: str) -> bool:
        try:
            if self.rdb.get_trial(trial_id).state.is_finished():
                return False
            self.rdb.set_trial_user_attr(trial_id, records.TRIAL_FAIL_REASON, reason)
            return bool(self.rdb.set_trial_state_values(trial_id, TrialState.FAIL))
        except UpdateFinishedTrialError:
            return False

    def count_round(self, round_index: int) -> int:
        count = 0
        for trial in self.rdb.get_all_trials(self.study_id, deepcopy=False):
            attrs = trial.user_attrs
            if records.TRIAL_ROUND not in attrs or attrs[records.TRIAL_ROUND] != round_index:
                continue
            reason = attrs.get(records.TRIAL_FAIL_REASON)
            if isinstance(reason, str) and reason.startswith(records.STALE_PREFIX):
                continue
            count += 1
        return count

    def start_first_round(self, record: RoundRecord) -> RoundRecord:
        existing = self.user_attrs().get(records.round_key(record.index))
        if existing is not None:
            return RoundRecord.from_dict(existing)
        self.set_study_attr(records.round_key(record.index), record.to_dict())
        return record

    def close_round(
        self,
        ended: RoundRecord,
        following: RoundRecord | None,
        status: dict[str, Any] | None,
    ) -> tuple[RoundRecord, bool]:
        existing = self.user_attrs().get(records.round_key(ended.index))
        if existing is not None and existing.get("ended_at"):
            return RoundRecord.from_dict(existing), False
        self.set_study_attr(records.round_key(ended.index), ended.to_dict())
        if following is not None:
            self.set_study_attr(records.round_key(following.index), following.to_dict())
        if status is not None:
            self.set_study_attr(records.STATUS_KEY, status)
        return ended, True
