"""Baselines that share the harness: zero-shot (no prompt, same head) and a linear probe on frozen features.

The linear probe is scikit-learn's logistic regression on standardised mean-pooled features of the unprompted
backbone, trained on the same k-shot examples; its inverse regularisation C is chosen on the dev split from a fixed
grid (ties go to the smaller C), never on test.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from workbench.learn.tuner import metrics
from workbench.tasks.sources import C_GRID  # one grid of C for every linear probe



def linear_probe(train_x, train_y, dev_x, dev_y, test_x, test_y, n_classes: int, seed: int = 0) -> dict:

    scaler = StandardScaler().fit(train_x)
    tx, dx, sx = (scaler.transform(a) for a in (train_x, dev_x, test_x))
    best = None
    for C in C_GRID:
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(tx, train_y)
        dev = metrics(_logits(clf, dx, n_classes), np.asarray(dev_y), n_classes)
        if best is None or (dev["acc"], -dev["loss"]) > (best[1]["acc"], -best[1]["loss"]):
            best = (clf, dev, C)
    clf, dev, C = best
    test = metrics(_logits(clf, sx, n_classes), np.asarray(test_y), n_classes)
    return {"dev": dev, "test": test, "C": C}


def _logits(clf, x, n_classes):
    """Log-probabilities laid out over all classes (a class absent from train gets -inf-like scores)."""
    out = np.full((len(x), n_classes), -1e9)
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out
