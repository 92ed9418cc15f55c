"""Evaluation metrics as AST reports them: accuracy for single-label data; mAP, mean AUC and d-prime
for multi-label data (per-class average precision and ROC AUC, averaged over classes with both
positives and negatives)."""

from __future__ import annotations

import math

import numpy as np


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy; `targets` are class indices or (mixup-style) target vectors."""
    truth = targets if targets.ndim == 1 else targets.argmax(axis=1)
    return float((scores.argmax(axis=1) == truth).mean())


def d_prime(auc: float) -> float:
    """Sensitivity index from an AUC: ``sqrt(2) * Phi^-1(AUC)``."""
    from scipy.stats import norm

    return float(math.sqrt(2.0) * norm.ppf(auc))


def multilabel(scores: np.ndarray, targets: np.ndarray) -> dict:
    """mAP, mAUC and d-prime over the classes that have both positive and negative examples."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    binary = targets > 0.5
    usable = [c for c in range(targets.shape[1]) if 0 < binary[:, c].sum() < len(binary)]
    if not usable:
        return {"mAP": float("nan"), "mAUC": float("nan"), "d_prime": float("nan"), "classes_scored": 0}
    ap = [average_precision_score(binary[:, c], scores[:, c]) for c in usable]
    auc = float(np.mean([roc_auc_score(binary[:, c], scores[:, c]) for c in usable]))
    return {"mAP": float(np.mean(ap)), "mAUC": auc, "d_prime": d_prime(min(auc, 1 - 1e-12)),
            "classes_scored": len(usable)}


def by_group(scores: np.ndarray, targets: np.ndarray, groups: list, task: str) -> dict:
    """:func:`evaluate` of each subgroup apart (``{group: {metrics..., "clips": n}}``, sorted by name), so that a
    speaker, device or room the model fails on shows beside the overall figure."""
    groups = np.asarray([str(g) for g in groups])
    return {g: {**evaluate(scores[groups == g], targets[groups == g], task), "clips": int((groups == g).sum())}
            for g in sorted(set(groups.tolist()))}


def evaluate(scores: np.ndarray, targets: np.ndarray, task: str) -> dict:
    """The metrics of `task`; `scores` are probabilities (softmax or sigmoid) ``[N, classes]``."""
    if task == "multiclass":
        return {"accuracy": accuracy(scores, targets)}
    return {**multilabel(scores, targets), "accuracy": accuracy(scores, targets)}


def main_metric(task: str) -> str:
    return "accuracy" if task == "multiclass" else "mAP"


def chance_level(targets: np.ndarray, task: str, draws: int = 20, seed: int = 0) -> tuple[float, float]:
    """What the main metric reads for a model that learned nothing, and its sampling noise on these targets.

    Single-label: the majority-class rate (predicting the commonest class), noise two binomial standard
    errors. Multi-label: the mAP of random scores (about the class prior), noise two standard deviations
    over `draws` random scorings.
    """
    n = len(targets)
    if n == 0:
        return float("nan"), 0.0
    if task == "multiclass":
        truth = targets if targets.ndim == 1 else targets.argmax(axis=1)
        rate = float(np.bincount(truth).max() / n)
        return rate, 2.0 * math.sqrt(rate * (1.0 - rate) / n) + 1.0 / n
    rng = np.random.default_rng(seed)
    values = [multilabel(rng.random(targets.shape), targets)["mAP"] for _ in range(draws)]
    return float(np.mean(values)), 2.0 * float(np.std(values))


def constant_guess_loss(targets: np.ndarray, loss: str, smoothing: float = 0.0) -> float:
    """The training loss of the best constant prediction (the class prior), with the recipe's label smoothing:
    what a model that learns nothing settles at. CE: the entropy of the mean target; BCE: the mean binary
    entropy of each class's rate."""
    classes = targets.shape[1]
    if loss == "ce":
        prior = targets.mean(axis=0) * (1.0 - smoothing) + smoothing / classes
        prior = prior[prior > 0]
        return float(-(prior * np.log(prior)).sum())
    rate = np.clip(targets.mean(axis=0) * (1.0 - smoothing) + smoothing / 2, 1e-12, 1 - 1e-12)
    return float(np.mean(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))))
