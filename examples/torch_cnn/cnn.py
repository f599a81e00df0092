"""A function objective in PyTorch: a small CNN on the 8x8 digits (needs the torch extra).

``train(params, trial)`` builds a one-convolution network with ``channels``
filters, trains it with ``optimizer`` at ``lr`` for ``epochs`` epochs,
reports the validation accuracy (and the training loss) after every epoch,
stops when the pruner says so, and returns the last validation accuracy.
It trains on the GPU Ray assigned to the trial (``gpus_per_trial``), else
on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import hpsearch


def _data() -> tuple[torch.Tensor, ...]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.int64)
    order = torch.tensor(np.random.default_rng(0).permutation(len(y)))  # one fixed split
    x, y = x[order], y[order]
    n_val = len(y) // 5
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def train(params: dict, trial: hpsearch.Trial) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(trial.seed)
    shuffle = torch.Generator().manual_seed(trial.seed)
    x, y, x_val, y_val = (t.to(device) for t in _data())
    channels = int(params["channels"])
    model = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 16, 10),
    ).to(device)
    make = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[params["optimizer"]]
    optimizer = make(model.parameters(), lr=params["lr"])
    loss_fn = nn.CrossEntropyLoss()
    val_accuracy = 0.0
    for epoch in range(1, int(params["epochs"]) + 1):
        model.train()
        total = 0.0
        batches = torch.randperm(len(y), generator=shuffle).split(int(params["batch_size"]))
        for idx in batches:
            idx = idx.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() / len(batches)
        model.eval()
        with torch.no_grad():
            val_accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
        trial.report(val_accuracy, epoch, train_loss=total)
        if trial.should_prune():
            raise hpsearch.TrialPruned()
    return val_accuracy
