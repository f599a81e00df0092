"""Explicit seeds for every random draw of a run (never the global RNG).

One run seed is split with :class:`numpy.random.SeedSequence` into independent
streams, so changing how many draws one part makes never shifts another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunSeeds:
    """The independent streams of one run.

    Attributes:
        init: Seed of the weight initialisation (a numpy Generator in both
            backends, so the same seed gives the same initial weights).
        shuffle: Seed of the per-epoch mini-batch permutations.
        dropout: Seed of the dropout masks (numpy Generator or torch.Generator).
    """

    init: int
    shuffle: int
    dropout: int


def run_seeds(seed: int) -> RunSeeds:
    """Split a run seed into its independent streams."""
    init, shuffle, dropout = (
        int(s.generate_state(1, dtype=np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(3)
    )
    return RunSeeds(init=init, shuffle=shuffle, dropout=dropout)
