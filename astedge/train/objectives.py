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


def objective(net: nn.Module, base, teacher=None, distill=None, alpha: float = 0.5, frame_weight: float | None = None,
              frame_softmax: bool = False):
    """(x, y) -> (loss to minimize, the label loss alone). With a teacher, DeiT's split: the class token learns the
    labels, the distillation token the teacher, which sees the same augmented batch. With `frame_weight` (a frame
    head), batches also bring frame targets: see :func:`frame_objective`."""
    if frame_weight is not None:
        return frame_objective(net, base, frame_weight, teacher, distill, alpha, frame_softmax)
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


def frame_objective(net: nn.Module, base, weight: float, teacher=None, distill=None, alpha: float = 0.5,
                    softmax: bool = False):
    """(x, y, frame targets, valid columns, strong, clip weight) -> (loss, clip loss): the clip loss over the windows
    that are one clip (`clip weight` 1; windows cut from two clips have 0), plus `weight` x the frames' loss: BCE
    against the targets over the valid columns where boundaries are known (`strong` 1), else BCE of the clip labels
    against the frames pooled into a clip score (linear softmax; multiple-instance learning). With a teacher, the
    clip loss is DeiT's split between the class and distillation tokens, as :func:`objective`'s. `softmax`: frames
    are single-label (:func:`astedge.runtime.frames.frame_activation`): cross-entropy instead of BCE."""

    def framed(x, y, frame_y, valid, strong, clip_weight):
        if teacher is None:
            clip, frames = net(x, frames=True)
            clip_loss = lambda keep: base(clip[keep].float(), y[keep])  # noqa: E731
        else:
            cls, dist, frames = net(x, distilled=True, frames=True)
            guide = teacher(x)
            clip_loss = lambda keep: (1 - alpha) * base(cls[keep].float(), y[keep]) + \
                alpha * distill(dist[keep].float(), guide[keep])  # noqa: E731
        one_clip = clip_weight > 0
        label = clip_loss(one_clip) if one_clip.any() else frames.sum() * 0.0
        return label + weight * frame_loss(frames.float(), y, frame_y, valid, strong, softmax), label
    return framed


def frame_loss(frames, y, frame_y, valid, strong, softmax: bool = False):
    """The frames' loss of a batch: against the targets over the valid columns of windows with known boundaries (BCE
    per class, or with `softmax` cross-entropy to the one class each frame is), BCE of the clip labels against the
    pooled frame probabilities of the others."""
    import torch.nn.functional as F

    from astedge.train.frame_targets import pooled

    known, total = strong > 0, frames.new_zeros(())
    if known.any():
        if softmax:
            per_cell = F.cross_entropy(frames[known].transpose(1, 2), frame_y[known].argmax(-1), reduction="none")
        else:
            per_cell = F.binary_cross_entropy_with_logits(frames[known], frame_y[known], reduction="none").mean(-1)
        total = total + (per_cell * valid[known]).sum() / valid[known].sum().clamp_min(1.0)
    if (~known).any():
        probabilities = frames[~known].softmax(-1) if softmax else torch.sigmoid(frames[~known])
        clip_scores = pooled(probabilities, valid[~known]).clamp(1e-6, 1 - 1e-6)
        total = total + F.binary_cross_entropy(clip_scores, y[~known].clamp(0, 1))
    return total
