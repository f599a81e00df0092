"""The NumPy backend: layers, optimizers, the multi-layer network and its model.

Conventions (batch norm, inverted dropout, weight decay on Affine weights
only) are those of the design notes and :mod:`trainer.config`; each module
states the ones it implements.
"""

from __future__ import annotations

from trainer.numpy_backend.model import NumpyModel
from trainer.numpy_backend.network import MultiLayerNet
from trainer.numpy_backend.optimizers import make_optimizer

__all__ = ["MultiLayerNet", "NumpyModel", "make_optimizer"]
