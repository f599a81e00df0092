"""Soak: 1,000 tiny trials on SQLite while another process keeps reading the results.

The driver runs in this process (``hpsearch run`` through :func:`hpsearch.cli.main`
on the module's local Ray, 2 workers); a reader in a separate process polls
:func:`hpsearch.results.trials` and :func:`hpsearch.results.curves` the whole
time, as a notebook or a dashboard would. What must hold:

* no lost rows: exactly 1,000 finished trials, numbers 0..999 once each, two
  curve rows (train, validation) per trial, both rounds recorded; and from the
  reader's side, a finished trial once seen never disappears;
* no ``database is locked`` (nor any other error) in the reader or the driver;
* the driver's memory growth is reported (VmRSS at start, half way and at the
  end, and the peak) and bounded generously, so only a real leak fails the test.

The figures are printed at the end (run with ``-s`` or look at the CI log).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hpsearch import results
from hpsearch.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROUNDS = 2
TRIALS_PER_ROUND = 500
TRIALS = ROUNDS * TRIALS_PER_ROUND
#: Generous: the driver holds 1,000 small trials; a leak per trial of a few
#: hundred KB (e.g. keeping every dataset copy or every frozen trial twice) fails.
MAX_RSS_GROWTH_MB = 500
FINISHED = ("COMPLETE", "PRUNED", "FAIL")

STUDY = f"""\
[study]
name = "soak"
seed = 5
sampler = "random"

[data]
dataset = "digits"
train_samples = 60
val_fraction = 0.2

[model]
hidden_sizes = [8]
epochs = 1
batch_size = 48

[search.lr]
low = 1e-3
high = 0.5
log = true

[search.weight_decay]
low = 1e-8
high = 1e-3
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[narrowing]
rounds = {ROUNDS}
trials_per_round = {TRIALS_PER_ROUND}
top_k = 5

[resources]
workers = 2
"""


def _rss_mb() -> float:
    """This process's resident set size now, in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _reader(url: str, name: str, stop: Any, out: Any, ready: Any) -> None:
    """Poll trials() and curves() until told to stop; send back what was seen."""
    from hpsearch.errors import StorageError, StudyNotFoundError

    ready.set()  # imports done: the driver starts now, so every write is read along

    polls = 0
    waits = 0
    errors: list[str] = []
    lost: list[str] = []
    seen: set[int] = set()
    curve_rows = 0
    slowest = 0.0
    started = False
    partial = 0  # polls that saw the study part way through (the run still writing)
    while not stop.is_set():
        begin = time.perf_counter()
        try:
            trials = results.trials(url, name)
            curves = results.curves(url, name)
        except (StorageError, StudyNotFoundError) as exc:
            text = f"{type(exc).__name__}: {exc}"
            if started or "locked" in text.lower():
                errors.append(text)
            else:  # the database or the study does not exist yet
                waits += 1
            time.sleep(0.02)
            continue
        except Exception as exc:  # every failure is a finding
            errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)
            continue
        started = True
        polls += 1
        slowest = max(slowest, time.perf_counter() - begin)
        done = set(trials.loc[trials["state"].isin(FINISHED), "number"].astype(int))
        if not seen <= done:
            lost.append(f"poll {polls}: finished trials vanished: {sorted(seen - done)[:10]}")
        seen = done
        partial += 0 < len(done) < TRIALS
        if len(curves) < curve_rows:
            lost.append(f"poll {polls}: curve rows went from {curve_rows} to {len(curves)}")
        curve_rows = len(curves)
        if len(errors) > 50:
            break
    out.put(
        {
            "polls": polls,
            "partial_polls": partial,
            "waits": waits,
            "errors": errors,
            "lost": lost,
            "finished_seen": len(seen),
            "curve_rows": curve_rows,
            "slowest_poll_s": slowest,
        }
    )


def test_thousand_trials_with_a_reader_polling(tmp_path, ray_local, capsys, caplog):
    caplog.set_level(logging.WARNING)
    study = tmp_path / "soak.toml"
    study.write_text(STUDY)
    url = f"sqlite:///{tmp_path / 'soak.db'}"

    context = multiprocessing.get_context("spawn")  # no fork of a process running Ray
    stop = context.Event()
    queue = context.Queue()
    ready = context.Event()
    reader = context.Process(target=_reader, args=(url, "soak", stop, queue, ready), daemon=True)
    reader.start()
    assert ready.wait(120), "the reader process did not start"

    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    sampling = threading.Event()

    def sample_rss() -> None:
        while not sampling.wait(0.25):
            samples.append((time.perf_counter() - began, _rss_mb()))

    rss_start = _rss_mb()
    began = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        code = main(["run", str(study), "--storage", url, "--quiet"])
    finally:
        elapsed = time.perf_counter() - began
        rss_end = _rss_mb()
        sampling.set()
        sampler.join()
        time.sleep(0.5)  # one more poll of the finished study
        stop.set()
        seen = queue.get(timeout=60)
        reader.join(timeout=30)
    _, err = capsys.readouterr()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # RSS half way through the run: the first half pays the one-time costs (imports,
    # Ray actors, Optuna's caches); growth after it is what a longer run would add.
    rss_half = next((rss for t, rss in samples if t >= elapsed / 2), rss_end)

    with capsys.disabled():
        print(
            f"\nsoak: {TRIALS} trials in {elapsed:.1f} s ({TRIALS / elapsed:.1f} trials/s); "
            f"reader: {seen['polls']} polls (slowest {seen['slowest_poll_s'] * 1e3:.0f} ms), "
            f"{len(seen['errors'])} errors; driver RSS {rss_start:.0f} MB at start, "
            f"{rss_half:.0f} MB half way, {rss_end:.0f} MB at end "
            f"(+{rss_end - rss_start:.0f} MB; +{rss_end - rss_half:.0f} MB in the second half; "
            f"peak {peak:.0f} MB)"
        )

    # The driver finished cleanly, without lock errors.
    assert code == 0, err
    driver_text = err + "\n".join(r.getMessage() for r in caplog.records)
    assert "locked" not in driver_text.lower(), driver_text[-2000:]

    # No lost or duplicated rows.
    trials = results.trials(url, "soak")
    assert len(trials) == TRIALS
    assert sorted(trials["number"]) == list(range(TRIALS))
    assert trials["state"].isin(FINISHED).all(), trials["state"].value_counts()
    assert (trials["state"] == "COMPLETE").sum() >= TRIALS * 0.95
    assert trials["round"].value_counts().sort_index().tolist() == [TRIALS_PER_ROUND] * ROUNDS
    curves = results.curves(url, "soak")
    complete = trials.loc[trials["state"] == "COMPLETE", "number"]
    assert len(curves[curves["trial"].isin(complete)]) == 2 * len(complete)
    assert len(results.rounds(url, "soak")) == ROUNDS

    # The reader read all along, never failed, and never saw a row disappear.
    assert seen["errors"] == [], seen["errors"][:5]
    assert seen["lost"] == [], seen["lost"][:5]
    # Read along, not only at the end: whatever the run's speed (1,000 trials
    # take ~4 s at the fastest here, a poll up to ~0.4 s), several polls
    # landed while the driver was writing.
    assert seen["partial_polls"] >= 3, seen
    assert seen["finished_seen"] == TRIALS

    # Memory: reported above; only a real leak fails.
    assert rss_end - rss_start < MAX_RSS_GROWTH_MB
