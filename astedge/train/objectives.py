"""What training minimizes: the loss against the labels, the distillation token's loss against a teacher, and
their combination into one objective (DeiT's split between the class and distillation tokens)."""

from __future__ import annotations

import torch
from torch import nn


def label_loss(loss_name: str, smoothing: float):
    """The loss against the labels: CE on (soft, mixup-able) class probabilities, or BCE; both with label
    smoothing ``y (1 - e) + e / K`` (CE, K classes) or ``y (1 - e) + e / 2`` (BCE, per class)."""
    import torch.nn.functional as F

    if loss_name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=smoothing)
    return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y * (1 - smoothing) + smoothing / 2)


def distill_loss(kind: str, task: str, tau: float):
    """The distillation token's loss against the teacher's logits (DeiT): hard = CE to the teacher's decision
    (sigmoid > 0.5 for multi-label teachers), soft = KL divergence at temperature tau (sigmoid targets for
    multi-label), scaled by tau^2."""
    import torch.nn.functional as F

    if kind == "hard":
        if task == "multiclass":
            return lambda logits, teacher: F.cross_entropy(logits, teacher.argmax(-1))
        return lambda logits, teacher: F.binary_cross_entropy_with_logits(logits, (teacher > 0).float())
    if task == "multiclass":
        return lambda logits, teacher: F.kl_div(F.log_softmax(logits / tau, -1), F.log_softmax(teacher / tau, -1),
                                                reduction="batchmean", log_target=True) * tau**2
    return lambda logits, teacher: F.binary_cross_entropy_with_logits(logits / tau, torch.sigmoid(teacher / tau)) * tau**2


def objective(net: nn.Module, base, teacher=None, distill=None, alpha: float = 0.5):
    """(x, y) -> (loss to minimize, the label loss alone). With a teacher, DeiT's split: the class token learns the
    labels, the distillation token the teacher, which sees the same augmented batch."""
    if teacher is None:
        def plain(x, y):
            loss = base(net(x).float(), y)
            return loss, loss
        return plain

    def distilled(x, y):
        cls, dist = net(x, distilled=True)
        label = base(cls.float(), y)
        return (1 - alpha) * label + alpha * distill(dist.float(), teacher(x)), label
    return distilled
