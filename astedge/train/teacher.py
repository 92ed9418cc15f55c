"""Teachers for AST's distillation token: a timm CNN trained here, or any model astedge can run.

DeiT (which AST's class + distillation tokens come from) learned from little data by distilling a CNN:
the CNN's inductive bias (locality, translation invariance) reaches the transformer through its
distillation token. A teacher here is a callable ``[B, T, F]`` student input (normalized log-mel, as
the student sees it, augmentation included) -> ``[B, classes]`` logits in the student's label order,
without gradients. Three kinds, from a spec string:

- ``timm:NAME`` (``timm:resnet18``, ``timm:mobilenetv3_small_100``, ...): a timm CNN with one input
  channel on the same fbank input, trained first on the same data with the same augmentation
  (:func:`train_cnn_teacher`) and cached in the run folder as ``teacher.safetensors``;
- a teacher checkpoint (that ``teacher.safetensors``), or an astedge AST checkpoint (``.safetensors``);
- an export folder (ONNX Runtime / TensorRT through :mod:`astedge.runtime.backends`).

A teacher with another feature config (normalization statistics, window) gets the student's input
converted back to raw log-mel and re-normalized, padded or cropped its way; labels are matched by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astedge.errors import UserError
from astedge.features import fbank as feats
from astedge.measure import metrics
from astedge.model.tensorfile import read_header, read_tensors, write_tensors
from astedge.train.clips import ClipDataset, RunData, epoch_indices, predict
from astedge.train.objectives import label_loss, objective
from astedge.train.optimization import make_optimizer, steps_per_epoch, train_epoch
from astedge.train.recipes import Recipe
from astedge.train.run_state import RunState

TEACHER_FORMAT = "1"
TIMM_PREFIX = "timm:"


class CnnClassifier(nn.Module):
    """A timm CNN on AST's input: ``[B, T, F]`` log-mel -> ``[B, 1, F, T]`` image (frequency as height) -> logits.

    Built with one input channel and no pretrained weights (none can be downloaded; timm builds a
    1-channel stem). timm, not a hand-written CNN: its models are tested and their sizes known.
    """

    def __init__(self, name: str, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        import timm

        try:
            self.net = timm.create_model(name, pretrained=False, in_chans=1, num_classes=num_classes,
                                         drop_rate=drop_rate)
        except (RuntimeError, ValueError, TypeError) as err:  # timm: "Unknown model (x)"
            raise UserError(f"--teacher timm:{name}: timm cannot build it ({str(err).splitlines()[0]}); any timm "
                            "CNN works, e.g. timm:resnet18, timm:mobilenetv3_small_100, timm:efficientnet_b0") from None
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1).transpose(2, 3))


def timm_name(spec: str) -> str | None:
    """The timm model name of a ``timm:NAME`` spec (None for a path)."""
    return spec[len(TIMM_PREFIX):] if spec.startswith(TIMM_PREFIX) else None


def save_cnn(path: Path, model: CnnClassifier, *, labels, task: str, features: feats.FbankConfig,
             fingerprint: str, metrics: dict) -> Path:
    """A trained CNN teacher as safetensors + JSON metadata (no pickle), atomically."""
    return write_tensors(path, model.state_dict(), {
        "astedge_teacher": TEACHER_FORMAT, "timm": model.name, "labels": list(labels), "task": task,
        "feature_config": features.to_dict(), "fingerprint": fingerprint, "metrics": metrics})


def read_metadata(path: Path) -> dict | None:
    """A teacher checkpoint's metadata; None for any other file (an AST checkpoint, a foreign file)."""
    try:
        metadata = read_header(path)
    except UserError:
        return None
    return metadata if metadata.get("astedge_teacher") == TEACHER_FORMAT else None


def load_cnn(path: Path) -> tuple[CnnClassifier, dict]:
    """A teacher checkpoint's CNN (eval mode) and its metadata."""
    metadata = read_metadata(path)
    if metadata is None:
        raise UserError("is not an astedge teacher checkpoint", path)
    labels = json.loads(metadata["labels"])
    model = CnnClassifier(metadata["timm"], len(labels))
    try:
        model.load_state_dict(read_tensors(path, framework="pt")[0])
    except RuntimeError as err:
        raise UserError(f"weights do not fit timm:{metadata['timm']} ({str(err).splitlines()[0]})", path) from None
    return model.eval(), metadata


@dataclass
class Teacher:
    """A frozen model that labels the student's batches (see the module docstring)."""

    describe: str
    run_logits: object  # [B, T, F] teacher input (torch, CPU) -> [B, teacher classes] logits (torch)
    columns: list[int]  # the teacher's output for each student label
    convert: object  # student input -> teacher input

    def eval(self) -> "Teacher":
        return self  # frozen already; lets scoring code treat it like a module

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.run_logits(self.convert(x))
        return logits[:, self.columns].to(x.device, torch.float32)


def _converter(student: feats.FbankConfig, teacher: feats.FbankConfig):
    """Student model input -> teacher model input: back to raw log-mel, then the teacher's normalization and window."""
    if (student.mean, student.std, student.target_length) == (teacher.mean, teacher.std, teacher.target_length):
        return lambda x: x
    if student.num_mel_bins != teacher.num_mel_bins:
        raise UserError(f"the teacher takes {teacher.num_mel_bins} mel bins, the student {student.num_mel_bins}")

    def convert(x: torch.Tensor) -> torch.Tensor:
        raw = x * (2 * student.std) + student.mean  # padding rows become 0 again, as AST pads
        y = (raw - teacher.mean) / (2 * teacher.std)
        frames = y.shape[1]
        if frames >= teacher.target_length:
            return y[:, :teacher.target_length]
        pad = torch.full((y.shape[0], teacher.target_length - frames, y.shape[2]), teacher.pad_value, dtype=y.dtype,
                         device=y.device)
        return torch.cat([y, pad], dim=1)
    return convert


def _columns(teacher_labels, student_labels, source) -> list[int]:
    index = {label: i for i, label in enumerate(teacher_labels)}
    missing = [label for label in student_labels if label not in index]
    if missing:
        from astedge.errors import some

        raise UserError(f"the teacher has no output for the labels {some(missing)}; a teacher must know every label "
                        "of the student's data", source)
    return [index[label] for label in student_labels]


def load_teacher(spec: str | Path, labels, features: feats.FbankConfig, device: torch.device) -> Teacher:
    """A :class:`Teacher` from a teacher checkpoint, an AST checkpoint or an export folder (not ``timm:``)."""
    from astedge.runtime.model_path import resolve_model

    path = Path(spec)
    if path.is_file() and read_metadata(path) is not None:
        model, metadata = load_cnn(path)
        model = model.to(device)
        teacher_features = feats.FbankConfig.from_dict(json.loads(metadata["feature_config"]))
        return Teacher(f"timm:{metadata['timm']} from {path}", model, _columns(json.loads(metadata["labels"]), labels,
                       path), _converter(features, teacher_features))
    ref = resolve_model(path)  # a UserError saying what is accepted
    if ref.kind == "checkpoint":
        from astedge.model.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(ref.path)
        model = checkpoint.build_model().to(device)
        return Teacher(f"AST checkpoint {path}", model, _columns(checkpoint.labels, labels, path),
                       _converter(features, checkpoint.feature_config))
    from astedge.runtime.backends import choose_backend

    backend = choose_backend(path).backend

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(backend.run(x.detach().cpu().numpy().astype(np.float32)))

    return Teacher(f"{backend.name} export {path}", run, _columns(backend.labels, labels, path),
                   _converter(features, backend.feature_config))


# ---------------------------------------------------------------------------------------------
# A timm CNN teacher, trained on the student's data first


#: How a timm CNN teacher is trained (its own values, whatever the student's recipe: a CNN from scratch learns
#: well with these; measured on the keyword data, see benchmarks/results/training-*.md).
TEACHER_TRAINING = dict(optimizer="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, schedule="cosine",
                        wa_start=0, wa_end=0, drop_path=0.0)


def teacher_for(recipe: Recipe, run: RunData, train_set: ClipDataset, val_set: ClipDataset, labels, task: str,
                loss_name: str, run_dir: Path, device, world: int, say):
    """The recipe's teacher: loaded, or (timm:NAME) trained on this data first and cached in the run folder."""
    name = timm_name(recipe.teacher)
    if name is None:
        teacher = load_teacher(recipe.teacher, labels, run.features, device)
        say(f"teacher: {teacher.describe}")
        return teacher
    path = run_dir / "teacher.safetensors"
    fingerprint = _teacher_fingerprint(name, run, labels, recipe)
    cached = read_metadata(path) if path.is_file() else None
    if cached is not None and cached.get("fingerprint") == fingerprint:
        say(f"teacher: timm:{name} from {path} (cached: trained on the same data with the same recipe)")
    else:
        if world > 1:
            raise UserError(f"train the timm:{name} teacher in one process first (astedge train ... --teacher "
                            f"timm:{name}), then pass --teacher RUN/teacher.safetensors to the distributed run")
        train_cnn_teacher(name, recipe, train_set, val_set, labels, task, loss_name, path, fingerprint, device, say)
    return load_teacher(path, labels, run.features, device)


def _teacher_fingerprint(name: str, run: RunData, labels, recipe: Recipe) -> str:
    """What a cached teacher must have been trained on: files (path, size, mtime), features, labels, recipe."""
    files = [(str(i.path), i.path.stat().st_size, i.path.stat().st_mtime_ns, i.targets)
             for split in ("train", "val") for i in run.splits[split]]
    fields = {k: v for k, v in recipe.to_dict().items()
              if k not in ("teacher", "distillation", "distill_alpha", "distill_tau", "model", "depth", "patch_size",
                           "fstride", "tstride", "init", "pos_embed", "preset", "variant", "num_workers")}
    blob = json.dumps([name, files, list(labels), run.features.to_dict(), fields, TEACHER_TRAINING], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def train_cnn_teacher(name: str, recipe: Recipe, train_set: ClipDataset, val_set: ClipDataset, labels, task: str,
                      loss_name: str, path: Path, fingerprint: str, device, say) -> Path:
    """Train a timm CNN (one input channel) on the student's data and augmentation; keep its best epoch."""
    teacher_recipe = recipe.with_overrides({**TEACHER_TRAINING, "epochs": recipe.teacher_epochs or recipe.epochs})
    torch.manual_seed(recipe.seed)
    model = CnnClassifier(name, len(labels)).to(device)
    optimizer = make_optimizer(model, teacher_recipe)
    fn = objective(model, label_loss(loss_name, recipe.label_smoothing))
    metric = metrics.main_metric(task)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    say(f"teacher: training timm:{name} ({params_m:.2f} M parameters, 1 input channel) for {teacher_recipe.epochs} "
        "epochs on the same data and augmentation")
    state, best, best_state = RunState(), -math.inf, None
    total = steps_per_epoch(len(train_set), recipe.batch_size, 1) * teacher_recipe.epochs
    for epoch in range(1, teacher_recipe.epochs + 1):
        started = time.perf_counter()
        train_set.epoch = epoch
        loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size,
                                             sampler=epoch_indices(len(train_set), epoch, recipe.seed, 0, 1),
                                             drop_last=len(train_set) > recipe.batch_size)
        losses, _ = train_epoch(fn, model, loader, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                                teacher_recipe, epoch, state, total, device, False)
        value = metrics.evaluate(*predict(model, val_set, 2 * recipe.batch_size, device, task), task)[metric]
        if value > best:
            best, best_state = value, {k: v.detach().clone() for k, v in model.state_dict().items()}
        say(f"teacher epoch {epoch}: loss {np.mean(losses):.4f}, val {metric} {value:.4f}, "
            f"{time.perf_counter() - started:.1f} s")
    model.load_state_dict(best_state)
    save_cnn(path, model, labels=labels, task=task, features=train_set.features, fingerprint=fingerprint,
             metrics={metric: best})
    say(f"teacher: timm:{name} val {metric} {best:.4f}, saved as {path} (reuse it: --teacher {path})")
    return path

