"""Live progress of a run on stderr, and the summary table at the end.

On a terminal one status line is redrawn in place (at most 10 times a
second); otherwise a line is written every few seconds and at every round's
end, so logs of a long run stay readable.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from hpsearch.records import RoundRecord
from hpsearch.search import SearchObserver


def format_box(box: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, spec in box.items():
        if "choices" in spec:
            parts.append(f"{name}={{{','.join(str(c) for c in spec['choices'])}}}")
        elif spec.get("int"):
            parts.append(f"{name}=[{spec['low']},{spec['high']}]")
        else:
            parts.append(f"{name}=[{spec['low']:.3g},{spec['high']:.3g}]")
    return " ".join(parts)


def _fmt(value: float | None, digits: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressDisplay(SearchObserver):
    """Draws round, trials done / total, running, best so far, elapsed and ETA."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else interval
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._round = 0
        self._rounds = 1
        self._trials_per_round = 0
        self._round_start = self.start
        self._done_before = 0
        self._line_open = False

    def _write_line(self, text: str, *, transient: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("" if transient else "\n"))
            self._line_open = transient
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def round_started(self, record: RoundRecord, total_rounds: int) -> None:
        self._round, self._rounds = record.index, total_rounds
        self._trials_per_round = record.n_trials
        self._round_start = time.monotonic()
        self._write_line(
            f"round {record.index + 1}/{total_rounds}: {record.n_trials} trials in "
            f"{format_box(record.box)}",
            transient=False,
        )

    def trials_finished(
        self, round_index: int, done: int, total: int, running: int, best: float | None
    ) -> None:
        now = time.monotonic()
        if now - self._last_draw < self.interval and done < total:
            return
        self._last_draw = now
        elapsed = now - self.start
        round_elapsed = now - self._round_start
        per_trial = round_elapsed / max(done, 1)
        remaining = (total - done) + (self._rounds - round_index - 1) * total
        eta = _duration(per_trial * remaining) if done else "?"
        self._write_line(
            f"round {round_index + 1}/{self._rounds}  trials {done}/{total}  running {running}  "
            f"best {_fmt(best)}  elapsed {_duration(elapsed)}  eta {eta}",
            transient=True,
        )

    def round_finished(self, record: RoundRecord) -> None:
        self._write_line(
            f"round {record.index + 1}/{self._rounds} done: best {_fmt(record.best)}  "
            f"median {_fmt(record.median)}  top trials {record.top_trials}",
            transient=False,
        )
        if record.decision and record.index + 1 < self._rounds:
            self._write_line(f"  next box: {record.decision}: {record.reason}", transient=False)

    def final_eval_started(self, seeds: int) -> None:
        self._write_line(
            f"final evaluation: retraining the best configuration with {seeds} seeds",
            transient=False,
        )


def summary_table(rounds: list[RoundRecord]) -> str:
    """Each round's box, trials, best and median metric, wall time, and what the
    round rule did after it (``then``: shrink, hold, grow, slide, restart)."""
    from datetime import datetime

    lines = [
        f"{'round':>5}  {'trials':>6}  {'best':>7}  {'median':>7}  {'wall':>7}  {'then':<8}  box"
    ]
    for r in rounds:
        wall = "-"
        if r.started_at and r.ended_at:
            seconds = (
                datetime.fromisoformat(r.ended_at) - datetime.fromisoformat(r.started_at)
            ).total_seconds()
            wall = f"{seconds:.1f}s"
        lines.append(
            f"{r.index + 1:>5}  {r.n_trials:>6}  {_fmt(r.best):>7}  {_fmt(r.median):>7}  "
            f"{wall:>7}  {(r.decision or '-') if r is not rounds[-1] else '-':<8}  "
            f"{format_box(r.box)}"
        )
    return "\n".join(lines)
