"""A command objective: any program that takes --name=value options and prints JSON lines.

hpsearch runs ``python train.py --epochs=6 --lr=... --alpha=... --hidden=... --solver=...``
in this folder once per trial, with HPSEARCH_TRIAL_NUMBER and HPSEARCH_SEED in
the environment. Each line ``{"step": 3, "val_accuracy": 0.91}`` on stdout is a
curve point and a pruning report; the last val_accuracy is the trial's value.
Anything else it prints is ignored (and kept, with stderr, if the trial fails).
A pruned trial gets SIGTERM. Here: scikit-learn's MLP, one epoch per step.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--solver", choices=["adam", "sgd"], default="adam")
    args = parser.parse_args()
    seed = int(os.environ.get("HPSEARCH_SEED", "0"))
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.2, random_state=0)
    model = MLPClassifier(
        hidden_layer_sizes=(args.hidden,),
        learning_rate_init=args.lr,
        alpha=args.alpha,
        solver=args.solver,
        random_state=seed,
    )
    classes = np.unique(y)
    warnings.simplefilter("ignore", ConvergenceWarning)
    for epoch in range(1, args.epochs + 1):
        model.partial_fit(x_train, y_train, classes=classes)
        accuracy = float(model.score(x_val, y_val))
        point = {"step": epoch, "val_accuracy": accuracy, "loss": model.loss_}
        print(json.dumps(point), flush=True)


if __name__ == "__main__":
    main()
