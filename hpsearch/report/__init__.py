"""A study's search as figures and one self-contained HTML page.

:func:`write_report` reads a recorded study through :mod:`hpsearch.results`
(and ``optuna.load_study`` for parameter importances), draws five PNG figures
with matplotlib (Agg, no screen) and writes ``index.html`` beside them:

1. ``curves.png``: the chapter's figure: for the top N trials, validation
   accuracy per epoch (solid) and training accuracy (dashed), one panel each;
2. ``lr_weight_decay.png``: lr against weight decay on log axes, every trial
   coloured by its metric (PRUNED and FAILED marked apart), each round's box
   drawn so the narrowing shows;
3. ``rounds.png``: best, median and interquartile spread of the metric per
   round;
4. ``batchnorm_dropout.png``: the metric with batch norm off vs on, and
   against the dropout ratio;
5. ``importances.png``: Optuna's fANOVA parameter importances (with at least
   :data:`~hpsearch.report.data.MIN_IMPORTANCE_TRIALS` COMPLETE trials and
   :data:`~hpsearch.report.data.MIN_IMPORTANCE_PARAMS` varying parameters).

The page also holds the rounds table, the best trial, the final evaluation
when one is recorded, the failed trials with their reasons and the recorded
study file. A figure that has nothing to show (one round, only failed trials,
a single trial, no curves, a parameter that was not searched) is left out and
the page says what is missing and why.

Nothing recorded in a study makes the report fail: a figure, the parameter
importances or a section of the page that cannot be computed (an exception
from matplotlib or Optuna's fANOVA included) is left out with one line in the
page saying why, and a warning is logged for it (one line on the CLI's
stderr); the rest of the report is written.

The data behind each figure comes from plain functions of
:mod:`hpsearch.report.data` (``lr_wd_points``, ``round_stats``, ...) that
return DataFrames or dicts. Nothing here starts Ray or writes to the
database.

Example:
    >>> from hpsearch.report import write_report
    >>> write_report("sqlite:///hpsearch.db", "quick")  # doctest: +SKIP
    PosixPath('reports/quick/index.html')
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import HPSearchError
from hpsearch.report.data import (
    MIN_IMPORTANCE_PARAMS,
    MIN_IMPORTANCE_TRIALS,
    StudyData,
    batchnorm_points,
    complete_trials,
    dropout_points,
    load_study_data,
    lr_wd_points,
    metric_label,
    param_importances,
    round_boxes,
    round_stats,
    round_values,
    top_curves,
    top_trials,
)
from hpsearch.report.figures import FIGURES

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REPORTS_DIR",
    "DEFAULT_TOP",
    "FIGURES",
    "MIN_IMPORTANCE_PARAMS",
    "MIN_IMPORTANCE_TRIALS",
    "StudyData",
    "batchnorm_points",
    "complete_trials",
    "default_report_dir",
    "dropout_points",
    "load_study_data",
    "lr_wd_points",
    "metric_label",
    "param_importances",
    "round_boxes",
    "round_stats",
    "round_values",
    "top_curves",
    "top_trials",
    "write_report",
]

DEFAULT_REPORTS_DIR = Path("reports")
"""Reports go to ``reports/<study name>/`` under the current directory by default."""
DEFAULT_TOP = 20
"""Trials in the learning-curve figure by default."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_report_dir(name: str) -> Path:
    """``reports/<name>/``, with characters other than letters, digits, ``._-`` as ``_``."""
    safe = _UNSAFE.sub("_", name).strip(".") or "study"
    return DEFAULT_REPORTS_DIR / safe


def write_report(
    storage: str | BaseStorage,
    name: str,
    out_dir: str | os.PathLike[str] | None = None,
    top: int = DEFAULT_TOP,
) -> Path:
    """Write the report of study ``name`` and return the path of its ``index.html``.

    Args:
        storage: Results database URL (``sqlite:///hpsearch.db``, ...) or an
            Optuna storage; read only, never created or changed.
        name: Study name.
        out_dir: Directory for ``index.html`` and the PNGs (created, with
            parents; files of an earlier report there are replaced, and the
            PNG of a figure that is not drawn this time is removed). Default:
            :func:`default_report_dir` (``reports/<name>/``).
        top: Trials in the learning-curve figure (>= 1).

    Returns:
        ``out_dir / "index.html"``.

    Raises:
        StudyNotFoundError, StorageError: As :mod:`hpsearch.results` (missing
            study or database, malformed URL).
        HPSearchError: ``top`` < 1, or the directory cannot be written.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise HPSearchError(f"report --top: got {top!r}; expected a whole number >= 1")
    from hpsearch.report.figures import draw_all
    from hpsearch.report.page import render_page
    from hpsearch.storage_url import mask_url

    data = load_study_data(storage, name)
    out = Path(out_dir) if out_dir is not None else default_report_dir(name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HPSearchError(f"report: cannot create {out}: {exc.strerror or exc}") from exc
    importances = _importances(data)
    label = mask_url(storage) if isinstance(storage, str) else type(storage).__name__
    index = out / "index.html"
    try:
        figures = draw_all(data, out, top=top, importances=importances)
        page = render_page(data, figures, storage_label=label)
        tmp = out / ".index.html.tmp"
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(index)
    except OSError as exc:
        raise HPSearchError(f"report: cannot write in {out}: {exc.strerror or exc}") from exc
    for fig in figures:
        if fig.file is None:
            logger.warning(
                "report %r: left out the figure %r: %s", name, fig.title, "; ".join(fig.notes)
            )
        else:
            for note in fig.notes:
                logger.info("report %r: %s: %s", name, fig.key, note)
    return index


def _importances(data: StudyData) -> dict[str, Any]:
    """:func:`param_importances`, or an empty result whose note says why it failed."""
    try:
        return param_importances(data)
    except Exception as exc:  # e.g. the study cannot be loaded by Optuna: leave it out
        logger.debug("parameter importances failed", exc_info=exc)
        why = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"
        return {
            "importances": {},
            "n_trials": len(complete_trials(data)),
            "params": [],
            "skipped": {},
            "note": f"parameter importances could not be computed ({why})",
        }
