"""Training: data -> AST -> a self-describing checkpoint, with a recipe (:mod:`astedge.train.recipes`), optionally a
teacher through the distillation token; the data side is :mod:`astedge.train.clips`.

One code path for a single CPU process and for `torchrun` data-parallel training (DDP; gloo on
CPU, NCCL on GPUs): every rank draws the same per-epoch order from the seed and takes its shard.
Rank 0 validates, logs and writes. Each epoch ends with `last.safetensors` (+ `last.state.safetensors`
for resuming: optimizer, schedule, weight-averaging sums) and, when it improves, `best.safetensors`,
all written atomically, so an interruption loses at most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from astedge.audio import decode as audio_io
from astedge.measure import metrics
from astedge.model.checkpoint import load_checkpoint, save_checkpoint
from astedge.data.datasets import DatasetIndex
from astedge.errors import UserError
from astedge.files import atomic_write
from astedge.model.ast_model import ASTModel, imagenet_init, model_config, with_target_length
from astedge.train.recipes import Recipe
from astedge.train.clips import (ClipDataset, FeatureCache, RunData, balanced_weights, check_items, epoch_indices,
                                   predict, prepare_data, targets_of)

# ---------------------------------------------------------------------------------------------
# Model and state


def initial_model(recipe: Recipe, num_classes: int, labels: list[str], target_length: int, num_mel_bins: int,
                  log) -> ASTModel:
    """The model training starts from, as `recipe.init` says: random, ImageNet (timm DeiT file) or an astedge
    checkpoint, fine-tuned with its own architecture (a new head when its labels differ; its position grid
    resized when the data's clips are longer or shorter)."""
    overrides = dict(num_classes=num_classes, target_length=target_length, num_mel_bins=num_mel_bins,
                     patch_size=tuple(int(p) for p in recipe.patch_size), fstride=recipe.fstride, tstride=recipe.tstride)
    if recipe.depth:
        overrides["depth"] = recipe.depth
    config = model_config(recipe.model, **overrides)
    init = recipe.init
    if init == "random":
        return ASTModel(config, drop_path=recipe.drop_path)
    if init.startswith("imagenet:"):
        from astedge.model.importer import read_state_dict

        log(f"initialising the backbone from ImageNet weights {init[9:]} (positions: {recipe.pos_embed})")
        return imagenet_init(config, read_state_dict(init[9:]), recipe.pos_embed, drop_path=recipe.drop_path)
    checkpoint = load_checkpoint(init)
    source = checkpoint.build_model()
    if source.config.num_mel_bins != num_mel_bins:
        raise UserError(f"takes {source.config.num_mel_bins} mel bins, the data's features have {num_mel_bins}", init)
    if source.config.target_length != target_length:
        source = with_target_length(source, target_length, recipe.pos_embed)
    config = dataclasses.replace(source.config, num_classes=num_classes)
    log(f"fine-tuning {init}: {config.embed_dim}-d x {config.depth} layers, patches {config.patch_size[0]}x"
        f"{config.patch_size[1]} at strides {config.fstride}/{config.tstride} (the checkpoint's architecture)"
        + (f", a new head for {num_classes} labels" if list(checkpoint.labels) != list(labels) else ""))
    model = ASTModel(config, drop_path=recipe.drop_path)
    state = source.state_dict()
    if list(checkpoint.labels) != list(labels):
        state = {k: v for k, v in state.items() if not k.startswith("mlp_head.1.")}
    model.load_state_dict(state, strict=False)
    return model


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state as tensors (for safetensors) + JSON-able rest: resuming needs no pickle."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(path: Path, optimizer, progress: dict, wa_sum: dict | None) -> None:
    from safetensors.torch import save

    tensors, meta = _flatten_optimizer(optimizer)
    if wa_sum:
        tensors.update({f"wa.{k}": v.contiguous() for k, v in wa_sum.items()})
    data = save(tensors, metadata={"progress": json.dumps(progress), "optimizer": json.dumps(meta)})
    with atomic_write(path) as handle:
        handle.write(data)


def load_state(path: Path) -> tuple[dict, dict, dict]:
    from safetensors.torch import load_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    wa = {k[3:]: v for k, v in tensors.items() if k.startswith("wa.")}
    return tensors, json.loads(metadata["optimizer"]), {"progress": json.loads(metadata["progress"]), "wa": wa}


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    run_dir: Path
    best: Path
    metric: str
    best_value: float
    best_epoch: int | str
    history: list[dict]
    problems: list[str]
    test: dict = field(default_factory=dict)  # {"clips", "student": metrics, "teacher": metrics} on a test split

    def summary(self) -> dict:
        """What `astedge train --json` prints and result.json holds."""
        return {"best": str(self.best), "metric": self.metric, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "epochs": len(self.history), "skipped_files": len(self.problems),
                "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in self.history])), 2)
                if self.history else None, "test": self.test}


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def _lr_at(recipe: Recipe, epoch: int, step: int, total_steps: int | None = None) -> float:
    """Warm-up (stepwise, from 0), then AST's MultiStep decay after epochs lr_start, lr_start + lr_step, ...
    (1-based), or a cosine from the warm-up's end to 0 at `total_steps`."""
    lr = recipe.lr
    if recipe.schedule == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps")
        span = max(1, total_steps - recipe.warmup_steps)
        done = min(1.0, max(0, step - recipe.warmup_steps) / span)
        lr *= 0.5 * (1.0 + math.cos(math.pi * done))
    else:
        decays = 0 if epoch <= recipe.lr_start else len(range(recipe.lr_start, epoch, recipe.lr_step))
        lr *= recipe.lr_decay**decays
    if recipe.warmup_steps and step <= recipe.warmup_steps:
        lr *= (step // recipe.warmup_every * recipe.warmup_every) / recipe.warmup_steps
    return lr


@dataclass
class RunState:
    """Where a run stands after an epoch: what resuming restores."""

    epoch: int = 0
    step: int = 0
    best_value: float = -math.inf
    best_epoch: int | str = 0
    history: list[dict] = field(default_factory=list)
    wa_sum: dict = field(default_factory=dict)

    def progress(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "history": self.history}


def _resume(run_dir: Path, model: nn.Module, optimizer) -> RunState:
    model.load_state_dict({k: torch.as_tensor(v) for k, v in load_checkpoint(run_dir / "last.safetensors").state_dict.items()})
    tensors, opt_meta, saved = load_state(run_dir / "last.state.safetensors")
    _restore_optimizer(optimizer, tensors, opt_meta)
    progress = saved["progress"]
    return RunState(progress["epoch"], progress["step"], progress["best_value"], progress["best_epoch"],
                    progress["history"], saved["wa"])


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


def _train_epoch(objective_fn, params: nn.Module, loader, optimizer, scaler, recipe: Recipe, epoch: int,
                 state: RunState, total_steps: int, device, use_amp: bool, bar=None) -> tuple[list[float], list[float]]:
    """One pass over the epoch's batches (progress on a rich `bar` when given); returns the per-step losses and
    label losses."""
    params.train()
    losses, label_losses = [], []
    job = bar.add_task("train", total=len(loader), loss="-") if bar is not None else None
    for x, y in loader:
        state.step += 1
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(recipe, epoch, state.step, total_steps)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss, label = objective_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        label_losses.append(label.item())
        if bar is not None:
            bar.update(job, advance=1, loss=f"{np.mean(losses[-20:]):.3f}")
    return losses, label_losses


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam (AST) or AdamW; AdamW leaves norms, biases and tokens/positions out of weight decay (as DeiT/timm)."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=tuple(recipe.betas),
                                weight_decay=recipe.weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "dist_token", "pos_embed")) else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=tuple(recipe.betas))


def _validate(model: nn.Module, val_set: ClipDataset, batch_size: int, device, task: str, rank: int,
              world: int) -> dict:
    """Each rank scores its shard of the validation set; every rank gets the metrics of all of it."""
    scores, targets = predict(model, val_set, batch_size, device, task, list(range(rank, len(val_set), world)))
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (scores, targets))
        scores = np.concatenate([g[0] for g in gathered])
        targets = np.concatenate([g[1] for g in gathered])
    return metrics.evaluate(scores, targets, task)


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
            from astedge.train.recipes import SCRATCH

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


def train(data: DatasetIndex, run_dir: str | Path, recipe: Recipe, *, resume: bool = False, force: bool = False,
          cache_dir: str | Path | None = None, log=print, show_progress: bool = True) -> TrainResult:
    """Train on `data` into `run_dir` (best.safetensors, last.safetensors, metrics.jsonl, curves.png, result.json).

    `cache_dir` keeps each clip's raw log-mel on disk (see :class:`FeatureCache`). With `recipe.teacher`, the
    teacher comes first (a timm CNN is trained on the same data and cached as ``teacher.safetensors``); a
    ``test`` split, when the data has one, is scored at the end with the best checkpoint (and the teacher).
    """
    from astedge.train.recipes import describe_variant

    rank, world, device = _distributed()
    lead = rank == 0
    run_dir = Path(run_dir)
    say = log if lead else (lambda *a, **k: None)
    if lead:
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError("exists and is not a folder; give the run a folder with -o", run_dir)
        if (run_dir / "last.safetensors").exists() and not (resume or force):
            raise UserError("already holds a training run: pass --resume to continue it or --force to start over",
                            run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    say(describe_variant(recipe))
    run = prepare_data(data, recipe, say)
    features = run.features
    say(f"{data.summary()}; {features.target_length} frames per clip; normalization mean {features.mean:.4f}, "
        f"std {features.std:.4f}")

    labels, task = list(data.labels), data.task
    loss_name = recipe.loss if recipe.loss != "auto" else ("ce" if task == "multiclass" else "bce")
    cache = FeatureCache(cache_dir, features) if cache_dir else None
    train_set = ClipDataset(run.splits["train"], len(labels), features, recipe, True, run.waves["train"], cache)
    val_set = ClipDataset(run.splits["val"], len(labels), features, recipe, False, run.waves["val"], cache)
    weights = balanced_weights(run.splits["train"], len(labels)) if recipe.balanced_sampling else None
    base = label_loss(loss_name, recipe.label_smoothing)
    teacher = None
    if recipe.teacher:
        teacher = _teacher_for(recipe, run, train_set, val_set, labels, task, loss_name, run_dir, device, world, say)

    model = initial_model(recipe, len(labels), labels, features.target_length, features.num_mel_bins, say).to(device)
    optimizer = make_optimizer(model, recipe)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    objective_fn = objective(net, base, teacher, distill_loss(recipe.distillation, task, recipe.distill_tau),
                             recipe.distill_alpha)
    metric = metrics.main_metric(task)
    check = LearningCheck(task, targets_of(train_set), targets_of(val_set), loss_name, recipe.label_smoothing,
                          recipe=recipe)

    state = RunState()
    if resume and (run_dir / "last.state.safetensors").exists():
        state = _resume(run_dir, model, optimizer)
        say(f"resuming after epoch {state.epoch} (best {metric} {state.best_value:.4f} at epoch {state.best_epoch})")

    def write(path: Path, state_model: nn.Module, extra: dict) -> None:
        save_checkpoint(path, state_model, feature_config=features, labels=labels, task=task,
                        provenance={"source": "astedge train", "recipe": recipe.to_dict(), "layout": data.layout,
                                    **extra})

    if lead:
        with atomic_write(run_dir / "recipe.json", "w") as handle:
            handle.write(json.dumps({**recipe.to_dict(), "loss": loss_name}, indent=2) + "\n")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress_console = Console(stderr=True)  # stdout stays clean for --json
    show_progress = show_progress and progress_console.is_terminal  # a log file gets the epoch lines only
    steps_per_epoch = _steps_per_epoch(len(train_set), recipe.batch_size, world)
    for epoch in range(state.epoch + 1, recipe.epochs + 1):
        started = time.perf_counter()
        train_set.epoch = epoch
        indices = epoch_indices(len(train_set), epoch, recipe.seed, rank, world, weights)
        loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size, sampler=indices,
                                             num_workers=recipe.num_workers, drop_last=len(indices) > recipe.batch_size)
        with Progress(TextColumn(f"epoch {epoch}/{recipe.epochs}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), disable=not (lead and show_progress),
                      transient=True, console=progress_console) as bar:
            losses, label_losses = _train_epoch(objective_fn, net, loader, optimizer, scaler, recipe, epoch, state,
                                                steps_per_epoch * recipe.epochs, device, use_amp, bar)
        if recipe.wa_start and recipe.wa_start <= epoch <= recipe.wa_end:
            for k, v in model.state_dict().items():
                state.wa_sum[k] = state.wa_sum.get(k, torch.zeros_like(v, dtype=torch.float64)) + v.detach().cpu().double()

        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
                  "train_label_loss": float(np.mean(label_losses)),
                  **_validate(model, val_set, 2 * recipe.batch_size, device, task, rank, world),
                  "seconds": round(time.perf_counter() - started, 2)}
        state.history.append(record)
        state.epoch = epoch
        improved = record[metric] > state.best_value
        if improved:
            state.best_value, state.best_epoch = record[metric], epoch
        if lead:
            if improved:
                write(run_dir / "best.safetensors", model, {"epoch": epoch, metric: record[metric]})
            write(run_dir / "last.safetensors", model, {"epoch": epoch, metric: record[metric]})
            save_state(run_dir / "last.state.safetensors", optimizer, state.progress(), state.wa_sum)
            with open(run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            plot_curves(state.history, run_dir / "curves.png", metric)
            say(f"epoch {epoch}: loss {record['train_loss']:.4f}, val {metric} {record[metric]:.4f}"
                f"{' (best)' if improved else ''}, lr {record['lr']:.2e}, {record['seconds']:.1f} s")
            warning = check.update(record)
            if warning:
                say(warning)
        if world > 1:
            dist.barrier()

    if state.wa_sum and recipe.wa_end >= recipe.wa_start:
        _finish_weight_average(model, val_set, recipe, state, device, task, metric, lead, write, run_dir, say)
    if world > 1:
        dist.barrier()
    test = _score_test_split(run, data, labels, features, recipe, run_dir, teacher, device, task, say) if lead else {}
    result = TrainResult(run_dir, run_dir / "best.safetensors", metric, state.best_value, state.best_epoch,
                         state.history, run.problems, test)
    if lead:
        with atomic_write(run_dir / "result.json", "w") as handle:
            handle.write(json.dumps(result.summary(), indent=2) + "\n")
    return result


#: How a timm CNN teacher is trained (its own values, whatever the student's recipe: a CNN from scratch learns
#: well with these; measured on the keyword data, see benchmarks/results/training-*.md).
TEACHER_TRAINING = dict(optimizer="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, schedule="cosine",
                        wa_start=0, wa_end=0, drop_path=0.0)


def _teacher_for(recipe: Recipe, run: RunData, train_set: ClipDataset, val_set: ClipDataset, labels, task: str,
                 loss_name: str, run_dir: Path, device, world: int, say):
    """The recipe's teacher: loaded, or (timm:NAME) trained on this data first and cached in the run folder."""
    from astedge.train.teacher import load_teacher, read_metadata, timm_name

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
    import hashlib

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
    from astedge.train.teacher import CnnClassifier, save_cnn

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
    total = _steps_per_epoch(len(train_set), recipe.batch_size, 1) * teacher_recipe.epochs
    for epoch in range(1, teacher_recipe.epochs + 1):
        started = time.perf_counter()
        train_set.epoch = epoch
        loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size,
                                             sampler=epoch_indices(len(train_set), epoch, recipe.seed, 0, 1),
                                             drop_last=len(train_set) > recipe.batch_size)
        losses, _ = _train_epoch(fn, model, loader, optimizer, torch.amp.GradScaler("cuda", enabled=False),
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


def _steps_per_epoch(count: int, batch_size: int, world: int) -> int:
    per_rank = math.ceil(count / world)
    return per_rank // batch_size if per_rank > batch_size else 1


def _score_test_split(run: RunData, data: DatasetIndex, labels, features, recipe: Recipe, run_dir: Path, teacher,
                      device, task: str, say) -> dict:
    """The best checkpoint (and the teacher) on the data's test split, when it has one: clips no epoch chose."""
    items = data.splits.get("test") or []
    items, bad, _ = check_items(items, features.sample_rate)
    if not items:
        return {}
    test_set = ClipDataset(items, len(labels), features, recipe, False, [audio_io.load_audio(i.path, features.sample_rate)
                                                                        for i in items])
    best = load_checkpoint(run_dir / "best.safetensors").build_model().to(device)
    out = {"clips": len(items), "student": metrics.evaluate(*predict(best, test_set, 2 * recipe.batch_size, device, task),
                                                            task)}
    if teacher is not None:
        out["teacher"] = metrics.evaluate(*predict(teacher, test_set, 2 * recipe.batch_size, device, task), task)
    metric = metrics.main_metric(task)
    say(f"test split ({len(items)} clips never used for training or model selection): {metric} "
        f"{out['student'][metric]:.4f}" + (f"; teacher {out['teacher'][metric]:.4f}" if teacher is not None else ""))
    return out


def _finish_weight_average(model, val_set, recipe: Recipe, state: RunState, device, task: str, metric: str, lead: bool,
                           write, run_dir: Path, say) -> None:
    """Load the average of epochs wa_start..wa_end; it becomes the best checkpoint when it validates at least as well."""
    count = min(recipe.wa_end, recipe.epochs) - recipe.wa_start + 1
    averaged = {k: (v / count).to(model.state_dict()[k].dtype) for k, v in state.wa_sum.items()}
    model.load_state_dict(averaged)
    scores, targets = predict(model, val_set, 2 * recipe.batch_size, device, task)
    value = metrics.evaluate(scores, targets, task)[metric]
    span = [recipe.wa_start, recipe.wa_end]
    say(f"weight average of epochs {recipe.wa_start}-{min(recipe.wa_end, recipe.epochs)}: val {metric} {value:.4f}")
    if lead:
        write(run_dir / "wa.safetensors", model, {"weight_average": span, metric: value})
        if value >= state.best_value:
            state.best_value, state.best_epoch = value, "wa"
            write(run_dir / "best.safetensors", model, {"weight_average": span, metric: value})


def plot_curves(history: list[dict], path: Path, metric: str) -> None:
    """Training loss and validation metric per epoch, as a PNG beside the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="train loss", title="loss")
    right.plot(epochs, [h[metric] for h in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel=f"val {metric}", title=metric)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=80)
    plt.close(fig)
