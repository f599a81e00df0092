"""hpsearch: distributed hyperparameter search for neural-network training.

Importing this package starts nothing; :mod:`hpsearch.results` reads the
results database with pandas without importing Ray.
"""

from __future__ import annotations

__version__ = "0.1.0"
