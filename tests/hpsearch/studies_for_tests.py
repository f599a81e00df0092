"""Small study files shared by the end-to-end tests (digits, seconds per round)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SMALL = """
[study]
name = "{name}"
seed = 11
sampler = "random"

[data]
dataset = "digits"
train_samples = 400
val_fraction = 0.2

[model]
hidden_sizes = {hidden}
epochs = {epochs}
batch_size = 40

[search.lr]
low = {lr_low}
high = {lr_high}
log = true

[search.weight_decay]
low = 1e-8
high = 1e-3
log = true

[search.dropout_ratio]
low = 0.0
high = 0.4

[narrowing]
rounds = {rounds}
trials_per_round = {trials}
top_k = 3

[resources]
workers = {workers}
"""


def small_study(
    path: Path,
    name: str,
    *,
    epochs: int = 3,
    rounds: int = 3,
    trials: int = 8,
    workers: int = 2,
    lr_low: float = 1e-3,
    lr_high: float = 1.0,
    hidden: tuple[int, ...] = (24,),
) -> Path:
    path.write_text(
        SMALL.format(
            name=name,
            epochs=epochs,
            rounds=rounds,
            trials=trials,
            workers=workers,
            lr_low=lr_low,
            lr_high=lr_high,
            hidden=list(hidden),
        )
    )
    return path


def hpsearch_process(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``hpsearch ARGS`` as a separate driver process (stdout/stderr piped)."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
