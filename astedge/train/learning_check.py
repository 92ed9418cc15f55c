"""The learning check: one warning line when validation stays at chance, saying which failure it is and what to try."""

from __future__ import annotations

import numpy as np

from astedge.measure import metrics
from astedge.train.recipes import SCRATCH, Recipe


class LearningCheck:
    """Says once, in one line, when validation stays at chance for `patience` epochs in a row, and why.

    Chance: the majority-class rate for single-label data (accuracy), the class prior for multi-label data
    (mAP of random scores), each with its sampling noise on this validation set. The training label loss
    then tells two failures apart: stuck at the loss of a constant guess (the model learns nothing: wrong
    lr, a pretrained recipe from scratch, too little data) or falling (it memorizes without generalizing).
    Silent on runs that learn.
    """

    def __init__(self, task: str, train_targets: np.ndarray, val_targets: np.ndarray, loss_name: str,
                 smoothing: float, patience: int = 3, recipe: Recipe | None = None):
        self.task, self.patience, self.recipe = task, patience, recipe
        self.metric = metrics.main_metric(task)
        self.chance, self.noise = metrics.chance_level(val_targets, task)
        self.chance_loss = metrics.constant_guess_loss(train_targets, loss_name, smoothing)
        self.streak, self.first_loss, self.warned = 0, None, False

    def update(self, record: dict) -> str | None:
        loss = record["train_label_loss"]
        self.first_loss = loss if self.first_loss is None else self.first_loss
        at_chance = record[self.metric] <= self.chance + self.noise
        self.streak = self.streak + 1 if at_chance else 0
        if self.warned or self.streak < self.patience:
            return None
        self.warned = True
        what = "the majority-class rate" if self.task == "multiclass" else "the mAP of random scores"
        head = (f"warning: validation {self.metric} has stayed at chance ({self.chance:.3f} +- {self.noise:.3f}, {what}) "
                f"for {self.patience} epochs")
        if loss >= 0.9 * self.chance_loss:
            recipe = self.recipe
            scratch_hint = ("the preset's from-scratch variant (drop the --set/--config values that override it)"
                            if recipe is not None and recipe.init == "random" and recipe.preset in SCRATCH and
                            recipe.variant != "scratch" else "")
            teacher_hint = "" if recipe is not None and recipe.teacher else "a CNN teacher (--teacher timm:resnet18)"
            tries = [t for t in (scratch_hint, "a lower --set lr=", teacher_hint,
                                 "a pretrained checkpoint (--init CHECKPOINT)", "more data") if t]
            return (f"{head}, and the training loss {loss:.4f} is stuck at a constant guess's {self.chance_loss:.4f}: "
                    f"the model is not learning. Try {', '.join(tries[:-1])} or {tries[-1]}")
        return (f"{head}, while the training loss fell from {self.first_loss:.4f} to {loss:.4f} (a constant guess: "
                f"{self.chance_loss:.4f}): the model memorizes the training set without generalizing. Try stronger "
                "augmentation (--set freqm=, timem=, mixup=), fewer layers (--set depth=4), more data, or a CNN "
                "teacher (--teacher timm:resnet18)")

