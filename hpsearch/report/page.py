"""Render the report's ``index.html``: one self-contained page.

The page has inline CSS, links its figures by relative file name, loads
nothing from anywhere else and needs no JavaScript. Every piece of text from
the database is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Iterable, Sequence
from html import escape
from typing import Any

import pandas as pd

from hpsearch import results
from hpsearch.report import data as rd
from hpsearch.report.figures import FigureResult

__all__ = ["render_page"]

logger = logging.getLogger(__name__)

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0 auto; max-width: 1240px; padding: 16px 24px 48px; color: #1d2430;
  background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; padding-bottom: 4px;
  border-bottom: 1px solid #d8dee6; }
.sub { color: #556070; margin: 0 0 1em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #556070; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.92em; margin: 0.4em 0; }
th, td { border: 1px solid #d8dee6; padding: 3px 9px; text-align: right;
  font-variant-numeric: tabular-nums; vertical-align: top; }
th { background: #f2f5f8; white-space: nowrap; }
.tablewrap { overflow-x: auto; max-width: 100%; }
td.text, th.text { text-align: left; }
td.nowrap { white-space: nowrap; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 12px;
  margin: 6px 0; }
.ok { background: #eaf6ec; border-left: 4px solid #2ca02c; padding: 6px 12px; margin: 6px 0; }
figure { margin: 0.6em 0 1.2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
figcaption { color: #3a4454; font-size: 0.93em; max-width: 980px; margin-top: 4px; }
ul.notes { margin: 0.3em 0; padding-left: 1.4em; }
nav a { margin-right: 14px; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.85em; }
details summary { cursor: pointer; color: #1f5fa8; }
footer { margin-top: 3em; color: #7a8596; font-size: 0.85em; }
"""

_TRIAL_FIELDS = ("round", "seed", "epochs_completed", "train_seconds", "node", "backend")


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, digits: int = 4) -> str:
    if _missing(value):
        return "–"
    return f"{float(value):.{digits}f}"


def _param(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_param(v) for v in value) if value else "–"
    if _missing(value):
        return "–"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        v = float(value)
        return f"{v:.4g}"
    return str(value)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    text_cols: set[int],
    nowrap_cols: frozenset[int] = frozenset(),
) -> str:
    def cls(i: int) -> str:
        names = (["text"] if i in text_cols else []) + (["nowrap"] if i in nowrap_cols else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _note(text: str) -> str:
    return f'<div class="note">{_e(text)}</div>'


def _guarded(what: str, render: Callable[[], str], study: str) -> str:
    """``render()``, or, when it raises, a note that ``what`` was left out and why.

    The note is also logged as a warning (one line on the CLI's stderr); the
    page is written either way.
    """
    try:
        return render()
    except Exception as exc:  # one section that cannot be computed never costs the page
        logger.debug("report section %s failed", what, exc_info=exc)
        why = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"
        logger.warning(
            "report %r: left out the %s: it could not be computed (%s)", study, what, why
        )
        return _note(f"The {what} could not be computed ({why}), so it is left out.")


# --- sections -----------------------------------------------------------------------------


def _facts(data: rd.StudyData, storage_label: str) -> str:
    t = data.trials
    counts = t["state"].value_counts()
    states = ", ".join(f"{int(counts[s])} {s}" for s in results.TRIAL_STATES if counts.get(s, 0))
    status = data.info.status or {}
    rows = [
        ("metric", f"{data.metric} ({data.info.direction})"),
        ("trials", f"{len(t)}" + (f" ({states})" if states else "")),
        ("rounds", str(len(data.rounds)) if not data.rounds.empty else "none recorded"),
        (
            "status",
            f"{status.get('state', '?')}"
            + (f" — {status['reason']}" if status.get("reason") else "")
            if status
            else "not finished (or not an hpsearch run)",
        ),
        ("parameters", ", ".join(data.params) if data.params else "none"),
        ("storage", storage_label),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="facts">{items}</dl>'


def _best_section(data: rd.StudyData) -> str:
    done = rd.complete_trials(data)
    if done.empty:
        return _note(
            "No best trial: no trial completed with a value, so there is no best trial and no "
            "metric to compare."
        )
    row = done.iloc[0]
    rows: list[tuple[str, str]] = [
        ("trial", str(int(row["number"]))),
        (data.metric, _num(row["value"])),
    ]
    rows += [(p, _param(row[p])) for p in data.params]
    for column in _TRIAL_FIELDS:
        if column in row.index and not _missing(row[column]):
            value = row[column]
            if column == "round":
                text = f"{int(value)}"
            elif column == "train_seconds":
                text = f"{float(value):.2f} s"
            else:
                text = str(value)
            rows.append((column.replace("_", " "), text))
    return _table(["", "value"], rows, {0, 1})


def _final_eval_section(data: rd.StudyData) -> str:
    fe = data.info.final_eval
    if not fe:
        return _note(
            "No final evaluation is recorded: the best configuration was not retrained on "
            "train+validation and scored on the test split (run with --final-eval)."
        )
    mean, std = fe.get("mean"), fe.get("std")
    if mean is None:
        return _note("A final evaluation ran but no seed finished, so there is no test accuracy.")
    seeds = fe.get("seeds") or []
    accs = fe.get("test_accuracy") or []
    text = f"Test accuracy {float(mean):.4f}"
    if std is not None:
        text += f" ± {float(std):.4f} (standard deviation)"
    if seeds:
        text += f" over {len(seeds)} seeds"
    if fe.get("trial") is not None:
        text += f", trial {fe['trial']}'s configuration retrained on train+validation"
    parts = [f'<p class="ok">{_e(text)}.</p>']
    if accs and len(accs) == len(seeds):
        parts.append(
            _table(
                ["seed", "test accuracy"],
                [(s, _num(a)) for s, a in zip(seeds, accs, strict=True)],
                set(),
            )
        )
    return "".join(parts)


def _rounds_section(data: rd.StudyData) -> str:
    r = data.rounds
    if r.empty:
        return _note(
            "No narrowing rounds are recorded (the study was not made by hpsearch run, or its "
            "first round has not started)."
        )
    stats = rd.round_stats(data).set_index("round")
    box_params: list[str] = []
    for column in r.columns[len(results.ROUND_COLUMNS) :]:
        pname, _, part = column.rpartition("_")
        if part in ("low", "choices") and pname not in box_params:
            box_params.append(pname)
    header = ["round", "sampled", "complete", "best", "median", "wall (s)", "top trials"]
    header += [f"{p} box" for p in box_params]
    rows = []
    for rec in r.itertuples(index=False):
        rec = rec._asdict()
        index = int(rec["round"])
        complete = int(stats.loc[index, "n_complete"]) if index in stats.index else 0
        row = [
            index,
            _param(rec["n_trials"]),
            complete,
            _num(rec["best"]),
            _num(rec["median"]),
            _num(rec["wall_seconds"], 2),
            ", ".join(str(n) for n in rec["top_trials"]) or "–",
        ]
        for p in box_params:
            if f"{p}_choices" in rec and rec[f"{p}_choices"] is not None:
                row.append("{" + ", ".join(_param(c) for c in rec[f"{p}_choices"]) + "}")
            elif f"{p}_low" in rec and not _missing(rec[f"{p}_low"]):
                row.append(f"{rec[f'{p}_low']:.3g} … {rec[f'{p}_high']:.3g}")
            else:
                row.append("–")
        rows.append(row)
    box_cols = frozenset(range(7, 7 + len(box_params)))
    out = _table(header, rows, {6, *box_cols}, box_cols)
    if len(r) == 1:
        out += _note("Only one round ran, so the search did not narrow.")
    out += (
        '<p class="sub">Rounds are numbered from 1 (stored 0-based). best and median are over '
        "the round's COMPLETE trials; each box is where that round sampled.</p>"
    )
    return out + _decisions(r)


def _decisions(r: pd.DataFrame) -> str:
    """What the round rule decided after each round, and why (rounds that recorded it)."""
    decided = [
        (int(rec.round), rec.decision, rec.reason)
        for rec in r.itertuples()
        if not _missing(rec.decision)
    ]
    if not decided:
        return ""
    last = int(r["round"].max())
    rows = [
        [
            index,
            str(decision),
            "the next box" if index < last else "a warm start (--from)",
            str(reason),
        ]
        for index, decision, reason in decided
    ]
    return "<h3>The round rule's decisions</h3>" + _table(
        ["after round", "decision", "gives", "why"], rows, {1, 2, 3}
    )


def _failures_section(data: rd.StudyData, limit: int = 30) -> str:
    t = data.trials
    failed = t[t["state"] == "FAIL"]
    if failed.empty:
        return ""
    rows = [
        (
            int(f["number"]),
            "–" if _missing(f["round"]) else int(f["round"]),
            "–" if _missing(f["fail_reason"]) else f["fail_reason"],
        )
        for _, f in failed.head(limit).iterrows()
    ]
    more = f'<p class="sub">… and {len(failed) - limit} more.</p>' if len(failed) > limit else ""
    return (
        f'<h2 id="failed">Failed trials ({len(failed)})</h2>'
        + _table(["trial", "round", "reason"], rows, {2})
        + more
    )


def _figure_section(fig: FigureResult) -> str:
    parts = [f'<h2 id="{_e(fig.key)}">{_e(fig.title)}</h2>']
    if fig.file is None:
        parts.append(_note("Figure not drawn: " + "; ".join(fig.notes) + "."))
        if fig.caption:
            parts.append(f'<p class="sub">{_e(fig.caption)}</p>')
        return "".join(parts)
    alt = f"{fig.title}. {fig.caption}"
    parts.append(
        f'<figure><a href="{_e(fig.file)}"><img src="{_e(fig.file)}" alt="{_e(alt)}"></a>'
        f"<figcaption>{_e(fig.caption)}</figcaption></figure>"
    )
    parts.extend(_note(n[0].upper() + n[1:] + ".") for n in fig.notes)
    return "".join(parts)


def _summary_notes(data: rd.StudyData, figures: Sequence[FigureResult]) -> str:
    missing = [f for f in figures if f.file is None]
    partial = [f for f in figures if f.file is not None and f.notes]
    if not missing and not partial:
        return ""
    items = [
        f'<li><a href="#{_e(f.key)}">{_e(f.title)}</a>: not drawn — {_e("; ".join(f.notes))}</li>'
        for f in missing
    ]
    items += [
        f'<li><a href="#{_e(f.key)}">{_e(f.title)}</a>: {_e("; ".join(f.notes))}</li>'
        for f in partial
    ]
    return (
        '<div class="note"><strong>What is missing from this report, and why:</strong>'
        f'<ul class="notes">{"".join(items)}</ul></div>'
    )


def render_page(data: rd.StudyData, figures: Sequence[FigureResult], *, storage_label: str) -> str:
    """The whole ``index.html`` as text."""
    nav = " ".join(
        f'<a href="#{_e(k)}">{_e(t)}</a>'
        for k, t in [
            ("best", "best trial"),
            ("final", "final evaluation"),
            ("rounds-table", "rounds"),
            *((f.key, f.title.split(",")[0]) for f in figures),
        ]
    )
    study_file = data.info.study_file
    study_block = (
        f"<details><summary>The recorded study file</summary><pre>{_e(study_file)}</pre>"
        + (
            f"<p>Command-line overrides: {_e(data.info.overrides)}</p>"
            if data.info.overrides
            else ""
        )
        + "</details>"
        if study_file
        else ""
    )
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    name = data.name
    body = [
        f"<h1>Search report: {_e(data.name)}</h1>",
        f'<p class="sub">Coarse-to-fine hyperparameter search recorded by hpsearch. '
        f"Generated {generated}.</p>",
        f"<nav>{nav}</nav>",
        "<h2>Study</h2>",
        _guarded("study summary", lambda: _facts(data, storage_label), name),
        _summary_notes(data, figures),
        '<h2 id="best">Best trial</h2>',
        _guarded("best trial", lambda: _best_section(data), name),
        '<h2 id="final">Final evaluation</h2>',
        _guarded("final evaluation", lambda: _final_eval_section(data), name),
        '<h2 id="rounds-table">Rounds</h2>',
        _guarded("rounds table", lambda: _rounds_section(data), name),
        *(_figure_section(f) for f in figures),
        _guarded("failed trials table", lambda: _failures_section(data), name),
        study_block,
        "<footer>Made by <code>hpsearch report</code>. The figures are PNG files next to this "
        "page; the data behind them comes from hpsearch.results.</footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>hpsearch report: {_e(data.name)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )
