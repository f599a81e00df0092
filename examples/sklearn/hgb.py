"""A function objective around scikit-learn: gradient-boosted trees on the breast-cancer data.

``train(params, trial)`` fits ``HistGradientBoostingClassifier`` with the
sampled ``learning_rate`` (log), ``max_leaf_nodes`` (int) and
``l2_regularization`` (log), reports the validation accuracy every ``chunk``
boosting iterations (warm start), so the pruner can stop a poor trial early,
and returns the final validation accuracy.
"""

from __future__ import annotations

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split

import hpsearch


def train(params: dict, trial: hpsearch.Trial) -> float:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    model = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"],
        max_leaf_nodes=params["max_leaf_nodes"],
        l2_regularization=params["l2_regularization"],
        early_stopping=False,
        warm_start=True,
        random_state=trial.seed % 2**31,
    )
    accuracy = 0.0
    chunk = int(params["chunk"])
    for step in range(1, int(params["steps"]) + 1):
        model.set_params(max_iter=step * chunk)
        model.fit(x_train, y_train)
        accuracy = float(model.score(x_val, y_val))
        trial.report(accuracy, step, train_accuracy=float(model.score(x_train, y_train)))
        if trial.should_prune():
            raise hpsearch.TrialPruned()
    return accuracy
