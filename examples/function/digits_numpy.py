"""A function objective: softmax regression with one hidden layer, in NumPy, on the digits.

hpsearch imports this module (the study file's folder is on ``sys.path``) and
calls ``train(params, trial)`` once per trial, in a Ray worker:

* ``params`` holds the sampled parameters (``lr``, ``hidden``, ``activation``)
  and the constants of the study file's ``[params]`` table (``epochs``);
* ``trial.report(value, step, **more)`` records a curve point and tells the
  pruner; ``trial.should_prune()`` says whether to stop; raising
  ``hpsearch.TrialPruned`` stops the trial as PRUNED;
* the return value is the study's metric (here a dict holding it).

It knows nothing of Ray or Optuna; run it alone with ``python digits_numpy.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import hpsearch


def _data(seed: int) -> tuple[np.ndarray, ...]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))  # one fixed split for every trial
    x, y = x[order], y[order]
    n_val = len(y) // 5
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def train(params: dict, trial: hpsearch.Trial) -> dict:
    rng = np.random.default_rng(trial.seed)
    x, y, x_val, y_val = _data(trial.seed)
    hidden, lr = int(params["hidden"]), float(params["lr"])
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[params["activation"]]
    w1 = rng.normal(0, np.sqrt(2 / x.shape[1]), (x.shape[1], hidden)).astype(np.float32)
    w2 = rng.normal(0, np.sqrt(1 / hidden), (hidden, 10)).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)
    for epoch in range(1, int(params["epochs"]) + 1):
        loss = 0.0
        for idx in np.array_split(rng.permutation(len(y)), len(y) // 50):
            h = act(x[idx] @ w1)
            logits = h @ w2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            loss += float(-np.log(p[np.arange(len(idx)), y[idx]] + 1e-12).mean()) / (len(y) // 50)
            g = (p - onehot[y[idx]]) / len(idx)
            gh = g @ w2.T
            gh = gh * (h > 0) if params["activation"] == "relu" else gh * (1 - h**2)
            w2 -= lr * h.T @ g
            w1 -= lr * x[idx].T @ gh
        val_accuracy = float((act(x_val @ w1) @ w2).argmax(1).__eq__(y_val).mean())
        trial.report(val_accuracy, step=epoch, train_loss=loss)
        if trial.should_prune():
            raise hpsearch.TrialPruned()
    return {"val_accuracy": val_accuracy, "train_loss": loss}


if __name__ == "__main__":
    result = train(
        {"lr": 0.1, "hidden": 32, "activation": "relu", "epochs": 5},
        hpsearch.Trial(number=0, seed=0, params={}, metric="val_accuracy"),
    )
    print(result)
