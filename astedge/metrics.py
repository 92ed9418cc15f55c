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


def evaluate(scores: np.ndarray, targets: np.ndarray, task: str) -> dict:
    """The metrics of `task`; `scores` are probabilities (softmax or sigmoid) ``[N, classes]``."""
    if task == "multiclass":
        return {"accuracy": accuracy(scores, targets)}
    return {**multilabel(scores, targets), "accuracy": accuracy(scores, targets)}


def main_metric(task: str) -> str:
    return "accuracy" if task == "multiclass" else "mAP"
