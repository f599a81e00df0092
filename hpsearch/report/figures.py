"""Draw the report's figures as PNG files with matplotlib (Agg, no screen).

Each ``draw_*`` function takes a :class:`~hpsearch.report.data.StudyData`, reads
its numbers through the functions of :mod:`hpsearch.report.data`, writes one
PNG into a directory and returns a :class:`FigureResult`. A figure that cannot
be drawn (nothing to show) writes no file; its result says why, and the page
shows that note instead. Figures are built on ``matplotlib.figure.Figure``
directly, never through ``pyplot``, so no GUI backend is ever selected and no
global figure state is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpsearch.report import data as rd

logger = logging.getLogger(__name__)

__all__ = [
    "FIGURES",
    "FigureResult",
    "draw_batchnorm_dropout",
    "draw_curves",
    "draw_importances",
    "draw_lr_wd",
    "draw_rounds",
    "figure_title",
]

DPI = 100
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.facecolor": "white",
}
_VAL_COLOR = "#1f77b4"
_TRAIN_COLOR = "#ff7f0e"
_PRUNED_COLOR = "#ff7f0e"
_FAIL_COLOR = "#d62728"
_OTHER_COLOR = "#7f7f7f"
_BN_COLORS = {True: "#2ca02c", False: "#9467bd"}
_ROUND_COLORS = ("#000000", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
_ROUND_STYLES = ("-", "--", "-.", ":")


@dataclass(frozen=True)
class FigureResult:
    """One figure of the report.

    Attributes:
        key: Stable identifier (``curves``, ``lr_weight_decay``, ...).
        title: Heading on the page.
        file: The PNG's file name in the report directory, or None when the
            figure was not drawn.
        caption: What the figure shows and how to read it.
        notes: What is missing from it, and why (shown on the page).
    """

    key: str
    title: str
    file: str | None
    caption: str
    notes: tuple[str, ...] = field(default=())


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI)


def _round_name(index: int) -> str:
    return f"round {int(index)}"


def _fmt(value: float) -> str:
    """A parameter value in 3 significant digits (scientific when small or large)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}"


def _plural(n: int, word: str) -> str:
    """``1 trial``, ``2 trials``, ``3 round boxes``."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}{'es' if word.endswith(('x', 's')) else 's'}"


def _positive(*series: pd.Series) -> bool:
    return all(len(s) == 0 or bool((s > 0).all()) for s in series)


# --- 1. the chapter's figure ----------------------------------------------------------------


def draw_curves(data: rd.StudyData, out_dir: Path, *, top: int = 20) -> FigureResult:
    """Validation (solid) and training (dashed) accuracy per epoch of the top trials."""
    key, file = "curves", "curves.png"
    title = figure_title(key, top=top)
    ranked = rd.top_trials(data, top=top)
    curves = rd.top_curves(data, top=top)
    caption = (
        f"The best {_plural(len(ranked) or top, 'COMPLETE trial')} by {data.metric}, best "
        "first, one panel each: "
        "validation accuracy per epoch as a solid line, training accuracy dashed. A gap between "
        "them is overfitting. Panel titles give the rank, the metric, the learning rate (lr) "
        "and the weight decay (wd)."
    )
    notes: list[str] = []
    if ranked.empty:
        return FigureResult(key, title, None, caption, (_no_complete_note(data),))
    if curves.empty:
        notes.append(
            "no per-epoch curves are recorded for the top trials "
            "(the trials hold a final value only, or come from your own objective, whose "
            "curves of any metric hpsearch.results.metric_curves reads), so there is nothing "
            "to plot"
        )
        return FigureResult(key, title, None, caption, tuple(notes))
    if len(ranked) < top:
        notes.append(
            f"only {_plural(len(ranked), 'trial')} completed, fewer than the {top} asked for"
        )
    with_curve = set(curves["trial"])
    missing = [int(n) for n in ranked["number"] if n not in with_curve]
    if missing:
        notes.append(
            "no curve recorded for trial(s) " + ", ".join(map(str, missing)) + " (empty panels)"
        )
    if curves["train_accuracy"].isna().all():
        notes.append(
            "training accuracy is not recorded (only Optuna's intermediate values, which are "
            "the validation accuracy), so there are no dashed lines"
        )

    n = len(ranked)
    ncols = min(5, n)
    nrows = math.ceil(n / ncols)
    # Fixed margins in inches (constrained layout costs ~1 s on 20 panels).
    panel_w, panel_h, gap_w, gap_h = 2.9, 1.7, 0.2, 0.62
    left, right, top_m, bottom = 0.7, 0.2, 1.1, 0.55
    width = max(left + right + ncols * panel_w + (ncols - 1) * gap_w, 6.5)
    height = top_m + bottom + nrows * panel_h + (nrows - 1) * gap_h
    fig = _new_figure(width, height, layout=None)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top_m / height,
        bottom=bottom / height,
        wspace=gap_w / panel_w,
        hspace=gap_h / panel_h,
    )
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    accuracies = curves[["train_accuracy", "val_accuracy"]].to_numpy(dtype=float)
    finite = accuracies[np.isfinite(accuracies)]
    low = float(finite.min()) if finite.size else 0.0
    ylow = max(0.0, math.floor(low * 10) / 10 - 0.02)
    max_epoch = int(curves["epoch"].max())
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        row = ranked.iloc[i]
        c = curves[curves["trial"] == row["number"]]
        ax.plot(c["epoch"], c["val_accuracy"], "-", color=_VAL_COLOR, lw=1.6, marker="o", ms=2.5)
        ax.plot(c["epoch"], c["train_accuracy"], "--", color=_TRAIN_COLOR, lw=1.4)
        if c.empty:
            ax.text(0.5, 0.5, "no curve", ha="center", va="center", transform=ax.transAxes)
        parts = [
            f"#{int(row['rank'])}  trial {int(row['number'])}  {data.metric}={row['value']:.4f}"
        ]
        hp = []
        if "lr" in ranked.columns:
            hp.append(f"lr={_fmt(row['lr'])}")
        if "weight_decay" in ranked.columns:
            hp.append(f"wd={_fmt(row['weight_decay'])}")
        if hp:
            parts.append("  ".join(hp))
        ax.set_title("\n".join(parts), fontsize=8.5)
        ax.set_ylim(ylow, 1.01)
        ax.set_xlim(0.5, max_epoch + 0.5)
        ax.tick_params(labelsize=8)
        if i % ncols == 0:
            ax.set_ylabel("accuracy")
        if i >= n - ncols:
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
        if max_epoch <= 12:
            ax.set_xticks(range(1, max_epoch + 1, 1 if max_epoch <= 6 else 2))
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=_VAL_COLOR, lw=1.6, marker="o", ms=3, label="validation accuracy"),
        Line2D([], [], color=_TRAIN_COLOR, lw=1.4, ls="--", label="training accuracy"),
    ]
    fig.legend(
        handles=handles,
        loc="upper right",
        bbox_to_anchor=(1 - right / width, 1 - 0.36 / height),
        ncols=2,
        frameon=False,
    )
    fig.suptitle(
        f"{data.name}: top {_plural(n, 'trial')} by {data.metric} — accuracy (fraction correct) "
        "per epoch",
        fontsize=11,
        x=left / width,
        y=1 - 0.12 / height,
        ha="left",
        va="top",
    )
    _save(fig, out_dir / file)
    return FigureResult(key, title, file, caption, tuple(notes))


def _no_complete_note(data: rd.StudyData) -> str:
    t = data.trials
    if t.empty:
        return "the study has no trials yet"
    counts = t["state"].value_counts()
    states = ", ".join(f"{int(v)} {k}" for k, v in counts.items() if v)
    return f"no trial completed with a value ({states}), so there is no metric to show"


# --- 2. lr against weight decay --------------------------------------------------------------


def draw_lr_wd(data: rd.StudyData, out_dir: Path) -> FigureResult:
    """Each trial at its (lr, weight decay), coloured by the metric, with each round's box."""
    key, file = "lr_weight_decay", "lr_weight_decay.png"
    title = figure_title(key)
    points = rd.lr_wd_points(data)
    boxes = rd.round_boxes(data)
    caption = (
        "Every trial at its learning rate and weight decay (log axes): COMPLETE trials as dots "
        f"coloured by {data.metric}, PRUNED and FAILED trials with their own markers. Each "
        "rectangle is the box a round sampled in; nested rectangles show the search narrowing "
        "round by round. The star is the best trial."
    )
    if points.empty:
        missing = [p for p in ("lr", "weight_decay") if p not in data.params]
        why = (
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not searched "
            "in this study"
            if missing
            else "no trial has both lr and weight_decay"
        )
        return FigureResult(key, title, None, caption, (f"nothing to plot: {why}",))
    notes: list[str] = []
    log_axes = _positive(
        points["lr"], points["weight_decay"], *(boxes[c] for c in boxes.columns[1:])
    )
    if not log_axes:
        notes.append("some values are zero or negative, so the axes are linear, not log")
    if boxes.empty and data.rounds.empty:
        notes.append("no round boxes are recorded (not a narrowing study), so none are drawn")
    elif boxes.empty:
        notes.append(
            "the recorded rounds have no numeric lr and weight_decay ranges (one of them is a "
            "list of choices), so no boxes are drawn"
        )
    elif len(boxes) == 1:
        notes.append("only one round ran, so there is no narrowing to see: one box")

    fig = _new_figure(8.6, 6.2)
    ax = fig.add_subplot()
    complete = points[rd.finished_with_value(points)]
    pruned = points[points["state"] == "PRUNED"]
    failed = points[points["state"] == "FAIL"]
    other = points[
        ~points["state"].isin(["COMPLETE", "PRUNED", "FAIL"])
        | ((points["state"] == "COMPLETE") & ~rd.finished_with_value(points))
    ]

    from matplotlib.patches import Rectangle

    for i, row in enumerate(boxes.itertuples(index=False)):
        color = _ROUND_COLORS[i % len(_ROUND_COLORS)]
        ax.add_patch(
            Rectangle(
                (row.lr_low, row.weight_decay_low),
                row.lr_high - row.lr_low,
                row.weight_decay_high - row.weight_decay_low,
                fill=False,
                edgecolor=color,
                lw=1.8 if i == 0 else 1.5,
                ls=_ROUND_STYLES[i % len(_ROUND_STYLES)],
                label=f"{_round_name(row.round)} box",
                zorder=1,
            )
        )
    if not complete.empty:
        cmap = "viridis" if data.maximize else "viridis_r"
        vmin, vmax, extend = _colour_range(complete["value"], maximize=data.maximize)
        if extend != "neither":
            pct = "10th" if data.maximize else "90th"
            caption += (
                f" The colours stop at the {pct} percentile of the metric (the arrow on the "
                "colour bar) so the differences among the good trials show; worse trials share "
                "the end colour."
            )
        sc = ax.scatter(
            complete["lr"],
            complete["weight_decay"],
            c=complete["value"],
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            s=42,
            edgecolors="black",
            linewidths=0.4,
            label=f"COMPLETE ({len(complete)})",
            zorder=3,
        )
        cb = fig.colorbar(sc, ax=ax, pad=0.02, extend=extend)
        cb.set_label(rd.metric_label(data.metric))
        best = complete.iloc[
            int(np.argmax(complete["value"]) if data.maximize else np.argmin(complete["value"]))
        ]
        ax.scatter(
            [best["lr"]],
            [best["weight_decay"]],
            marker="*",
            s=320,
            facecolors="none",
            edgecolors=_FAIL_COLOR,
            linewidths=1.5,
            label=f"best (trial {int(best['number'])})",
            zorder=4,
        )
    if not pruned.empty:
        ax.scatter(
            pruned["lr"],
            pruned["weight_decay"],
            marker="^",
            s=46,
            facecolors="none",
            edgecolors=_PRUNED_COLOR,
            linewidths=1.3,
            label=f"PRUNED ({len(pruned)})",
            zorder=3,
        )
    if not failed.empty:
        ax.scatter(
            failed["lr"],
            failed["weight_decay"],
            marker="x",
            s=46,
            color=_FAIL_COLOR,
            linewidths=1.6,
            label=f"FAILED ({len(failed)})",
            zorder=3,
        )
    if not other.empty:
        ax.scatter(
            other["lr"],
            other["weight_decay"],
            marker="+",
            s=46,
            color=_OTHER_COLOR,
            label=f"running / no value ({len(other)})",
            zorder=3,
        )
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    _pad_limits(ax, points, boxes, log=log_axes)
    scale = " (log scale)" if log_axes else ""
    ax.set_xlabel(f"learning rate lr{scale}")
    ax.set_ylabel(f"weight decay λ{scale}")
    ax.set_title(
        f"{data.name}: {_plural(len(points), 'trial')}, {_plural(len(boxes), 'round box')}"
    )
    fig.legend(loc="outside lower center", ncols=4, frameon=False)
    _save(fig, out_dir / file)
    return FigureResult(key, title, file, caption, tuple(notes))


def _colour_range(values: pd.Series, *, maximize: bool) -> tuple[float, float, str]:
    """Colour limits: the worst tail beyond the 10th percentile is clipped when it is
    far from the rest (a few diverged trials would otherwise wash out the colours)."""
    v = values.to_numpy(dtype=float)
    lo, hi = float(v.min()), float(v.max())
    if len(v) < 5 or hi == lo:
        return lo, hi, "neither"
    if maximize:
        cut = float(np.percentile(v, 10))
        if (cut - lo) > 0.25 * (hi - lo):
            return cut, hi, "min"
    else:
        cut = float(np.percentile(v, 90))
        if (hi - cut) > 0.25 * (hi - lo):
            return lo, cut, "max"
    return lo, hi, "neither"


def _pad_limits(ax: Any, points: pd.DataFrame, boxes: pd.DataFrame, *, log: bool) -> None:
    xs = list(points["lr"]) + list(boxes.get("lr_low", [])) + list(boxes.get("lr_high", []))
    ys = (
        list(points["weight_decay"])
        + list(boxes.get("weight_decay_low", []))
        + list(boxes.get("weight_decay_high", []))
    )
    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        lo, hi = float(min(values)), float(max(values))
        if log:
            llo, lhi = math.log10(lo), math.log10(hi)
            pad = max((lhi - llo) * 0.06, 0.15)
            setter(10 ** (llo - pad), 10 ** (lhi + pad))
        else:
            pad = max((hi - lo) * 0.06, abs(hi) * 0.05, 1e-12)
            setter(lo - pad, hi + pad)


# --- 3. the metric per round ---------------------------------------------------------------


def draw_rounds(data: rd.StudyData, out_dir: Path) -> FigureResult:
    """Box plot of the metric per round with the best and the median marked."""
    key, file = "rounds", "rounds.png"
    title = figure_title(key)
    stats = rd.round_stats(data)
    values = rd.round_values(data)
    better = "highest" if data.maximize else "lowest"
    caption = (
        f"For each round, the {data.metric} of its COMPLETE trials: the box spans the 25th to "
        "75th percentile (the interquartile range), whiskers reach the furthest trial within "
        f"1.5 × that range, dots are single trials; the line with squares is the round's best "
        f"({better}) and the diamonds its median. n = COMPLETE / sampled trials."
    )
    if stats.empty:
        return FigureResult(
            key,
            title,
            None,
            caption,
            (
                "no narrowing rounds are recorded (not an hpsearch study), so there is nothing "
                "to compare round by round",
            ),
        )
    if values.empty:
        return FigureResult(key, title, None, caption, (_no_complete_note(data),))
    notes: list[str] = []
    if len(stats) == 1:
        notes.append("only one round ran, so there is no round-to-round change to see")
    t = data.trials
    unfinished = set(t.loc[t["state"].isin(["RUNNING", "WAITING"]) & t["round"].notna(), "round"])
    for r, n in zip(stats["round"], stats["n_complete"], strict=True):
        if n:
            continue
        if r in unfinished:
            notes.append(f"{_round_name(r)} is still running: none of its trials completed yet")
        else:
            notes.append(f"no trial completed in {_round_name(r)}")

    fig = _new_figure(max(5.5, 1.4 * len(stats) + 3.0), 4.6)
    ax = fig.add_subplot()
    positions = np.arange(1, len(stats) + 1)
    groups = [values.loc[values["round"] == r, "value"].to_numpy() for r in stats["round"]]
    drawn = [(p, g) for p, g in zip(positions, groups, strict=True) if len(g)]
    bp = ax.boxplot(
        [g for _, g in drawn],
        positions=[p for p, _ in drawn],
        widths=0.5,
        patch_artist=True,
        showfliers=False,
        medianprops={"color": "none"},
    )
    for patch in bp["boxes"]:
        patch.set_facecolor("#c6dbef")
        patch.set_edgecolor("#3b6ea5")
    rng = np.random.default_rng(0)
    for p, g in drawn:
        jitter = rng.uniform(-0.12, 0.12, size=len(g))
        ax.scatter(p + jitter, g, s=14, color="#3b6ea5", alpha=0.6, zorder=3, linewidths=0)
    has = stats["n_complete"].to_numpy() > 0
    ax.plot(
        positions[has],
        stats["best"][has],
        "-s",
        color=_FAIL_COLOR,
        ms=6,
        lw=1.5,
        label=f"best ({better})",
        zorder=4,
    )
    ax.plot(
        positions[has],
        stats["median"][has],
        "D",
        color="black",
        ms=5,
        label="median",
        zorder=4,
    )
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="#c6dbef", edgecolor="#3b6ea5", label="25th–75th percentile"))
    ax.legend(handles=handles, loc="best", framealpha=0.9)
    ax.set_xticks(
        positions,
        [
            f"{_round_name(r)}\nn={c}/{n}"
            for r, c, n in zip(stats["round"], stats["n_complete"], stats["n_trials"], strict=True)
        ],
    )
    ax.set_xlim(0.4, len(stats) + 0.6)
    ax.set_xlabel("narrowing round")
    ax.set_ylabel(rd.metric_label(data.metric))
    ax.set_title(f"{data.name}: {data.metric} per round")
    _save(fig, out_dir / file)
    return FigureResult(key, title, file, caption, tuple(notes))


# --- 4. batch norm and dropout -------------------------------------------------------------------


def draw_batchnorm_dropout(data: rd.StudyData, out_dir: Path) -> FigureResult:
    """The metric with batch norm off vs on, and against the dropout ratio."""
    key, file = "batchnorm_dropout", "batchnorm_dropout.png"
    title = figure_title(key)
    bn = rd.batchnorm_points(data)
    dr = rd.dropout_points(data)
    caption = (
        f"Left: {data.metric} of the COMPLETE trials with batch normalization off and on (box = "
        "25th–75th percentile, line = median, dots = trials). Right: the metric against the "
        "dropout ratio (the fraction of hidden units dropped while training), coloured by batch "
        "norm. Trials differ in the other parameters too, so these are associations, not "
        "controlled comparisons."
    )
    notes: list[str] = []
    done = rd.complete_trials(data)
    if done.empty:
        return FigureResult(key, title, None, caption, (_no_complete_note(data),))
    show_bn = not bn.empty
    show_dr = not dr.empty
    if not show_bn:
        notes.append(
            "batchnorm is not a searched parameter in this study (it is fixed or absent), "
            "so its effect cannot be shown"
        )
    elif bn["batchnorm"].nunique() < 2:
        only = "on" if bool(bn["batchnorm"].iloc[0]) else "off"
        notes.append(f"every COMPLETE trial had batch norm {only}, so there is nothing to compare")
    if not show_dr:
        notes.append(
            "dropout_ratio is not a searched parameter in this study (it is fixed or absent), "
            "so its effect cannot be shown"
        )
    if not (show_bn or show_dr):
        return FigureResult(key, title, None, caption, tuple(notes))

    panels = int(show_bn) + int(show_dr)
    fig = _new_figure(5.2 * panels + (0.6 if panels == 1 else 0), 4.4)
    axes = list(np.atleast_1d(fig.subplots(1, panels, sharey=True, squeeze=False)).ravel())
    if show_bn:
        ax = axes.pop(0)
        labels, groups, colors = [], [], []
        for flag in (False, True):
            g = bn.loc[bn["batchnorm"] == flag, "value"].to_numpy()
            labels.append(f"{'on' if flag else 'off'}\n(n={len(g)})")
            groups.append(g)
            colors.append(_BN_COLORS[flag])
        pos = [1, 2]
        drawn = [(p, g, c) for p, g, c in zip(pos, groups, colors, strict=True) if len(g)]
        bp = ax.boxplot(
            [g for _, g, _ in drawn],
            positions=[p for p, _, _ in drawn],
            widths=0.5,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black", "lw": 1.5},
        )
        for patch, (_, _, c) in zip(bp["boxes"], drawn, strict=True):
            patch.set_facecolor(c)
            patch.set_alpha(0.35)
        rng = np.random.default_rng(0)
        for p, g, c in drawn:
            ax.scatter(
                p + rng.uniform(-0.13, 0.13, size=len(g)),
                g,
                s=16,
                color=c,
                zorder=3,
                linewidths=0,
            )
        ax.set_xticks(pos, labels)
        ax.set_xlim(0.4, 2.6)
        ax.set_xlabel("batch normalization")
        ax.set_ylabel(rd.metric_label(data.metric))
        ax.set_title("batch norm off vs on")
    if show_dr:
        ax = axes.pop(0)
        if "batchnorm" in dr.columns and dr["batchnorm"].notna().any():
            for flag in (False, True):
                sel = dr[dr["batchnorm"] == flag]
                if sel.empty:
                    continue
                ax.scatter(
                    sel["dropout_ratio"],
                    sel["value"],
                    s=24,
                    color=_BN_COLORS[flag],
                    edgecolors="black",
                    linewidths=0.3,
                    label=f"batch norm {'on' if flag else 'off'} ({len(sel)})",
                )
            ax.legend(loc="best", framealpha=0.9)
        else:
            ax.scatter(
                dr["dropout_ratio"],
                dr["value"],
                s=24,
                color=_VAL_COLOR,
                edgecolors="black",
                linewidths=0.3,
            )
        ax.set_xlabel("dropout ratio (fraction of units dropped)")
        if not show_bn:
            ax.set_ylabel(rd.metric_label(data.metric))
        else:
            ax.yaxis.set_tick_params(labelleft=True)
        ax.set_title("metric against dropout ratio")
    fig.suptitle(f"{data.name}: batch norm and dropout ({_plural(len(done), 'COMPLETE trial')})")
    _save(fig, out_dir / file)
    return FigureResult(key, title, file, caption, tuple(notes))


# --- 5. parameter importances -------------------------------------------------------------------


def draw_importances(
    data: rd.StudyData, out_dir: Path, importances: dict[str, Any] | None = None
) -> FigureResult:
    """Horizontal bars of Optuna's fANOVA parameter importances."""
    key, file = "importances", "importances.png"
    title = figure_title(key)
    info = importances if importances is not None else rd.param_importances(data)
    evaluated = f"the {info['n_trials']} COMPLETE trials"
    if info.get("of_trials", info["n_trials"]) > info["n_trials"]:
        evaluated = (
            f"a seeded random sample of {info['n_trials']} of the {info['of_trials']} COMPLETE "
            "trials (fANOVA's cost grows too fast to fit them all)"
        )
    caption = (
        "How much of the variation of the metric each parameter explains, from Optuna's "
        f"fANOVA evaluator (optuna.importance.get_param_importances) over {evaluated}; "
        "shares sum to 1. Because the narrowing samples later rounds in smaller boxes, "
        "this describes the sampled trials, not the full range."
    )
    notes = [f"{p} left out: {why}" for p, why in info.get("skipped", {}).items()]
    shares = info["importances"]
    if not shares:
        return FigureResult(key, title, None, caption, (info["note"], *notes))
    names = list(shares)[::-1]
    vals = [shares[n] for n in names]
    fig = _new_figure(7.0, 1.2 + 0.55 * len(names))
    ax = fig.add_subplot()
    bars = ax.barh(names, vals, color=_VAL_COLOR, height=0.6)
    for bar, v in zip(bars, vals, strict=True):
        ax.text(
            bar.get_width() + 0.01,
            bar.get_y() + bar.get_height() / 2,
            f"{v:.2f}",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, min(1.0, max(vals) + 0.12) if vals else 1.0)
    ax.set_xlabel("importance (share of the metric's variance, fANOVA)")
    ax.set_ylabel("parameter")
    ax.grid(axis="y", visible=False)
    ax.set_title(
        f"{data.name}: importance for {data.metric} ({_plural(info['n_trials'], 'trial')})"
    )
    _save(fig, out_dir / file)
    return FigureResult(key, title, file, caption, tuple(notes))


FIGURES = ("curves", "lr_weight_decay", "rounds", "batchnorm_dropout", "importances")
"""The figures' keys in page order; each writes ``<key>.png``."""

_TITLES = {
    "lr_weight_decay": "Learning rate against weight decay, and the narrowing boxes",
    "rounds": "The metric round by round",
    "batchnorm_dropout": "Effect of batch norm and dropout",
    "importances": "Parameter importances",
}


def figure_title(key: str, *, top: int = 20) -> str:
    """The heading of figure ``key`` on the page."""
    if key == "curves":
        return f"Learning curves of the top {top} trials"
    return _TITLES[key]


def draw_all(
    data: rd.StudyData, out_dir: Path, *, top: int, importances: dict[str, Any]
) -> list[FigureResult]:
    """Draw every figure into ``out_dir``; figures that are not drawn leave no file.

    A figure whose drawing raises (anything but an :class:`OSError` writing its
    file, which propagates) is left out: its result has no file and one note
    naming the exception, so one odd study never costs the whole report.
    """
    draws = {
        "curves": lambda: draw_curves(data, out_dir, top=top),
        "lr_weight_decay": lambda: draw_lr_wd(data, out_dir),
        "rounds": lambda: draw_rounds(data, out_dir),
        "batchnorm_dropout": lambda: draw_batchnorm_dropout(data, out_dir),
        "importances": lambda: draw_importances(data, out_dir, importances),
    }
    drawn = []
    with _style():
        for key in FIGURES:
            try:
                drawn.append(draws[key]())
            except OSError:
                raise
            except Exception as exc:  # a figure that cannot be drawn is left out, never fatal
                logger.debug("figure %s failed", key, exc_info=exc)
                why = " ".join(str(exc).split()) or "no message"
                note = f"it could not be drawn ({type(exc).__name__}: {why})"
                drawn.append(FigureResult(key, figure_title(key, top=top), None, "", (note,)))
    for fig in drawn:
        if fig.file is None:  # no stale (or half-written) PNG may be shown
            (out_dir / f"{fig.key}.png").unlink(missing_ok=True)
    return drawn
