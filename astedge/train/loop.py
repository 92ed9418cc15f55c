"""Training: data -> AST -> a self-describing checkpoint, with a recipe (:mod:`astedge.train.recipes`), optionally a
teacher through the distillation token; the data side is :mod:`astedge.train.clips`.

One code path for a single CPU process and for `torchrun` data-parallel training (DDP; gloo on
CPU, NCCL on GPUs): every rank draws the same per-epoch order from the seed and takes its shard.
Rank 0 validates, logs and writes. Each epoch ends with `last.state.safetensors` first (the commit: weights,
optimizer, schedule, weight-averaging sums; :mod:`~astedge.train.run_state`), then `last.safetensors` and, when
it improves, `best.safetensors`, all written atomically, so an interruption loses at most the epoch in progress
and `--resume` rewrites the checkpoints a cut left behind.

The parts: what is minimized (:mod:`~astedge.train.objectives`), how the weights move
(:mod:`~astedge.train.optimization`), where a run stands (:mod:`~astedge.train.run_state`), the warning for runs
that do not learn (:mod:`~astedge.train.learning_check`), the CNN teacher (:mod:`~astedge.train.teacher`) and the
run folder's other files (:mod:`~astedge.train.run_folder`). This module puts them in order.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from astedge.audio import decode as audio_io
from astedge.data.datasets import DatasetIndex
from astedge.errors import UserError
from astedge.measure import metrics
from astedge.model.ast_model import ASTModel, imagenet_init, model_config, with_target_length
from astedge.model.checkpoint import load_checkpoint, save_checkpoint, set_events
from astedge.runtime.frames import FrameLayout, frame_activation
from astedge.train.clips import (ClipDataset, FeatureCache, RunData, balanced_weights, check_items, epoch_indices,
                                 predict, prepare_data, targets_of)
from astedge.train.learning_check import LearningCheck
from astedge.train.objectives import distill_loss, label_loss, objective
from astedge.train.optimization import make_optimizer, steps_per_epoch, train_epoch
from astedge.train.recipes import Recipe, describe_variant, wants_frames
from astedge.train.run_folder import log_epoch, open_run_folder, write_json
from astedge.train.run_state import STATE_FILE, RunState, check_resumable, resume_run, save_state
from astedge.train.teacher import teacher_for


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


def train(data: DatasetIndex, run_dir: str | Path, recipe: Recipe, *, resume: bool = False, force: bool = False,
          cache_dir: str | Path | None = None, log=print, show_progress: bool = True) -> TrainResult:
    """Train on `data` into `run_dir` (best.safetensors, last.safetensors, metrics.jsonl, curves.png, result.json).

    `cache_dir` keeps each clip's raw log-mel on disk (see :class:`FeatureCache`). With `recipe.teacher`, the
    teacher comes first (a timm CNN is trained on the same data and cached as ``teacher.safetensors``); a
    ``test`` split, when the data has one, is scored at the end with the best checkpoint (and the teacher).
    """
    process = _Process.start(Path(run_dir), log, show_progress)
    if process.lead:
        open_run_folder(process.run_dir, resume, force)
        if resume:
            check_resumable(process.run_dir)
    torch.manual_seed(recipe.seed)
    process.say(describe_variant(recipe))
    setup = _prepare(data, recipe, cache_dir, process)
    trainer = _build(setup, process)
    state = _resume(setup, trainer, process) if resume else RunState()
    if process.lead:
        write_json(process.run_dir / "recipe.json", {**recipe.to_dict(), "loss": setup.loss_name})
    for epoch in range(state.epoch + 1, recipe.epochs + 1):
        record = _run_epoch(setup, trainer, process, state, epoch)
        state.record(record, setup.metric)
        if process.lead:
            _save_epoch(setup, trainer, process, state)
        if process.world > 1:
            dist.barrier()
    return _finish(setup, trainer, process, state)


#: Test hook (tests/test_interrupt.py): ``ASTEDGE_KILL_AT=POINT:EPOCH`` makes the process SIGKILL itself at POINT
#: of EPOCH: ``steps`` (the epoch's steps done, nothing of it written) or ``state`` (its state file written, its
#: checkpoints and logs not yet), so tests show what a real interruption there leaves to resume.
KILL_HOOK = "ASTEDGE_KILL_AT"


def _kill_point(point: str, epoch: int) -> None:
    if os.environ.get(KILL_HOOK) == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def _resume(setup: _Setup, trainer: _Trainer, process: _Process) -> RunState:
    """Where `--resume` continues: after the last committed epoch (its checkpoints and logs rewritten, in case the
    cut came after its state file), or at epoch 1 when none was committed; one line says which."""
    state = resume_run(process.run_dir, trainer.model, trainer.optimizer)
    if state is None:
        process.say(f"{process.run_dir}: no finished epoch to resume from (cut in its first); starting at epoch 1")
        return RunState()
    process.say(f"resuming after epoch {state.epoch} (best {setup.metric} {state.best_value:.4f} at epoch "
                f"{state.best_epoch})")
    if process.lead:
        _save_checkpoints(setup, trainer.model, process.run_dir, state)
        log_epoch(process.run_dir, state.history, setup.metric)
    return state


@dataclass
class _Process:
    """This process's part in the run: its rank among `world` (DDP), its device, the log (rank 0's only) and
    where the progress bar goes (stderr: stdout stays clean for --json)."""

    rank: int
    world: int
    device: torch.device
    run_dir: Path
    say: Callable
    console: object
    show_progress: bool

    @property
    def lead(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, run_dir: Path, log, show_progress: bool) -> "_Process":
        from rich.console import Console

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank() if world > 1 else 0
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        console = Console(stderr=True)
        return cls(rank, world, device, run_dir, log if rank == 0 else (lambda *a, **k: None), console,
                   show_progress and console.is_terminal)  # a log file gets the epoch lines only


@dataclass
class _Setup:
    """What a run trains on: the recipe, the data as datasets, the loss, the teacher; and how it writes checkpoints."""

    data: DatasetIndex
    recipe: Recipe
    run: RunData
    loss_name: str
    train_set: ClipDataset
    val_set: ClipDataset
    weights: np.ndarray | None
    teacher: object | None

    @property
    def labels(self) -> list[str]:
        return list(self.data.labels)

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def metric(self) -> str:
        return metrics.main_metric(self.task)

    def save(self, path: Path, model: nn.Module, extra: dict) -> None:
        events = {"background": self.data.background} if self.data.background else None
        save_checkpoint(path, model, feature_config=self.run.features, labels=self.labels, task=self.task,
                        provenance={"source": "astedge train", "recipe": self.recipe.to_dict(),
                                    "layout": self.data.layout, **extra}, events=events)


@dataclass
class _Trainer:
    """The model and what optimizes it."""

    model: ASTModel
    net: nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    objective_fn: Callable
    total_steps: int
    check: LearningCheck


def _prepare(data: DatasetIndex, recipe: Recipe, cache_dir, process: _Process) -> _Setup:
    """Read and check the data, make the datasets and the loss, and get the teacher (training it first if needed)."""
    say = process.say
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
    teacher = None
    if recipe.teacher:
        teacher = teacher_for(recipe, run, train_set, val_set, labels, task, loss_name, process.run_dir,
                              process.device, process.world, say)
    return _Setup(data, recipe, run, loss_name, train_set, val_set, weights, teacher)


def _build(setup: _Setup, process: _Process) -> _Trainer:
    """The model to start from, its optimizer, DDP wrapper, mixed precision and objective, and the learning check."""
    recipe, features, device = setup.recipe, setup.run.features, process.device
    frames = wants_frames(recipe, sum(i.events is not None for i in setup.run.splits["train"]))
    model = initial_model(recipe, len(setup.labels), setup.labels, features.target_length, features.num_mel_bins,
                          process.say, frames=frames).to(device)
    if device.type == "cpu":  # timm's plain attention beats the fused CPU kernel on short sequences of narrow heads
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    if model.config.frame_head:
        setup.train_set.frames = FrameLayout.of(model.config, features)
        setup.train_set.background = setup.labels.index(setup.data.background) if setup.data.background else None
    optimizer = make_optimizer(model, recipe)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if process.world > 1 else model
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    objective_fn = objective(net, label_loss(setup.loss_name, recipe.label_smoothing), setup.teacher,
                             distill_loss(recipe.distillation, setup.task, recipe.distill_tau), recipe.distill_alpha,
                             recipe.frame_weight if model.config.frame_head else None,
                             frame_activation(setup.task, setup.data.background) == "softmax")
    check = LearningCheck(setup.task, targets_of(setup.train_set), targets_of(setup.val_set), setup.loss_name,
                          recipe.label_smoothing, recipe=recipe)
    total_steps = steps_per_epoch(len(setup.train_set), recipe.batch_size, process.world) * recipe.epochs
    return _Trainer(model, net, optimizer, scaler, use_amp, objective_fn, total_steps, check)


def initial_model(recipe: Recipe, num_classes: int, labels: list[str], target_length: int, num_mel_bins: int,
                  log, frames: bool = False) -> ASTModel:
    """The model training starts from, as `recipe.init` says: random, ImageNet (timm DeiT file) or an astedge
    checkpoint, fine-tuned with its own architecture (new heads when its labels differ; its position grid
    resized when the data's clips are longer or shorter). `frames`: with a frame head (a new one when the
    checkpoint has none: an imported AudioSet model gains one here)."""
    overrides = dict(num_classes=num_classes, target_length=target_length, num_mel_bins=num_mel_bins,
                     patch_size=tuple(int(p) for p in recipe.patch_size), fstride=recipe.fstride, tstride=recipe.tstride,
                     frame_head=frames)
    init = recipe.init
    # ImageNet weights fix the width
    widths = () if init.startswith("imagenet:") else ("embed_dim", "num_heads", "mlp_ratio")
    overrides.update({k: getattr(recipe, k) for k in ("depth", *widths) if getattr(recipe, k)})
    config = model_config(recipe.model, **overrides)
    if init == "random":
        return ASTModel(config, drop_path=recipe.drop_path)
    if init.startswith("imagenet:"):
        from astedge.model.importer import read_state_dict

        log(f"initialising the backbone from ImageNet weights {init[9:]} ({recipe.model}: {config.embed_dim} wide, "
            f"{config.num_heads} heads; positions: {recipe.pos_embed})")
        return imagenet_init(config, read_state_dict(init[9:]), recipe.pos_embed, drop_path=recipe.drop_path)
    checkpoint = load_checkpoint(init)
    source = checkpoint.build_model()
    if source.config.num_mel_bins != num_mel_bins:
        raise UserError(f"takes {source.config.num_mel_bins} mel bins, the data's features have {num_mel_bins}", init)
    if source.config.target_length != target_length:
        source = with_target_length(source, target_length, recipe.pos_embed)
    config = dataclasses.replace(source.config, num_classes=num_classes, frame_head=frames)
    new_labels = list(checkpoint.labels) != list(labels)
    log(f"fine-tuning {init}: {config.embed_dim}-d x {config.depth} layers, patches {config.patch_size[0]}x"
        f"{config.patch_size[1]} at strides {config.fstride}/{config.tstride} (the checkpoint's architecture)"
        + (f", a new head for {num_classes} labels" if new_labels else "")
        + (", a new frame head" if frames and (new_labels or not source.config.frame_head) else ""))
    model = ASTModel(config, drop_path=recipe.drop_path)
    state = source.state_dict()
    fresh = ("mlp_head.1.", "frame_head.1.") if new_labels else ()
    state = {k: v for k, v in state.items() if not k.startswith(fresh) and (frames or not k.startswith("frame_head."))}
    model.load_state_dict(state, strict=False)
    return model


def _run_epoch(setup: _Setup, trainer: _Trainer, process: _Process, state: RunState, epoch: int) -> dict:
    """One epoch of steps on this rank's shard (progress bar on rank 0), then validation: the epoch's record."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    recipe, train_set = setup.recipe, setup.train_set
    started = time.perf_counter()
    train_set.epoch = epoch
    indices = epoch_indices(len(train_set), epoch, recipe.seed, process.rank, process.world, setup.weights)
    loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size, sampler=indices,
                                         num_workers=recipe.num_workers, drop_last=len(indices) > recipe.batch_size)
    with Progress(TextColumn(f"epoch {epoch}/{recipe.epochs}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                  disable=not (process.lead and process.show_progress), transient=True, console=process.console) as bar:
        losses, label_losses = train_epoch(trainer.objective_fn, trainer.net, loader, trainer.optimizer,
                                           trainer.scaler, recipe, epoch, state, trainer.total_steps, process.device,
                                           trainer.use_amp, bar)
    _kill_point("steps", epoch)
    if recipe.wa_start and recipe.wa_start <= epoch <= recipe.wa_end:
        state.add_to_average(trainer.model)
    return {"epoch": epoch, "lr": trainer.optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
            "train_label_loss": float(np.mean(label_losses)),
            **_validate(trainer.model, setup.val_set, 2 * recipe.batch_size, process.device, setup.task, process.rank,
                        process.world),
            "seconds": round(time.perf_counter() - started, 2)}


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


def _save_epoch(setup: _Setup, trainer: _Trainer, process: _Process, state: RunState) -> None:
    """Rank 0 after an epoch: the state to resume from (the commit, first), the checkpoints, the run folder's logs,
    one line."""
    run_dir, metric, record = process.run_dir, setup.metric, state.history[-1]
    epoch = record["epoch"]
    save_state(run_dir / STATE_FILE, trainer.model, trainer.optimizer, state)
    _kill_point("state", epoch)
    _save_checkpoints(setup, trainer.model, run_dir, state)
    log_epoch(run_dir, state.history, metric, last=epoch == setup.recipe.epochs)
    process.say(f"epoch {epoch}: loss {record['train_loss']:.4f}, val {metric} {record[metric]:.4f}"
                f"{' (best)' if state.best_epoch == epoch else ''}, lr {record['lr']:.2e}, {record['seconds']:.1f} s")
    warning = trainer.check.update(record)
    if warning:
        process.say(warning)


def _save_checkpoints(setup: _Setup, model: nn.Module, run_dir: Path, state: RunState) -> None:
    """`last.safetensors`, and `best.safetensors` when the state's last epoch is the best, stamped with the epoch."""
    record = state.history[-1]
    stamp = {"epoch": record["epoch"], setup.metric: record[setup.metric]}
    if state.best_epoch == record["epoch"]:
        setup.save(run_dir / "best.safetensors", model, stamp)
    setup.save(run_dir / "last.safetensors", model, stamp)


def _finish(setup: _Setup, trainer: _Trainer, process: _Process, state: RunState) -> TrainResult:
    """The weight average (when the recipe asks for one), the test split, result.json."""
    recipe = setup.recipe
    if state.wa_sum and recipe.wa_end >= recipe.wa_start:
        _finish_weight_average(setup, trainer.model, process, state)
    if process.world > 1:
        dist.barrier()
    if process.lead and trainer.model.config.frame_head:
        _calibrate_events(setup, process)
    test = _score_test_split(setup, process) if process.lead else {}
    result = TrainResult(process.run_dir, process.run_dir / "best.safetensors", setup.metric, state.best_value,
                         state.best_epoch, state.history, setup.run.problems, test)
    if process.lead:
        write_json(process.run_dir / "result.json", result.summary())
    return result


def _finish_weight_average(setup: _Setup, model: nn.Module, process: _Process, state: RunState) -> None:
    """Load the average of epochs wa_start..wa_end; it becomes the best checkpoint when it validates at least as well."""
    recipe, metric, run_dir = setup.recipe, setup.metric, process.run_dir
    count = min(recipe.wa_end, recipe.epochs) - recipe.wa_start + 1
    averaged = {k: (v / count).to(model.state_dict()[k].dtype) for k, v in state.wa_sum.items()}
    model.load_state_dict(averaged)
    scores, targets = predict(model, setup.val_set, 2 * recipe.batch_size, process.device, setup.task)
    value = metrics.evaluate(scores, targets, setup.task)[metric]
    span = [recipe.wa_start, recipe.wa_end]
    process.say(f"weight average of epochs {recipe.wa_start}-{min(recipe.wa_end, recipe.epochs)}: val {metric} "
                f"{value:.4f}")
    if process.lead:
        setup.save(run_dir / "wa.safetensors", model, {"weight_average": span, metric: value})
        if value >= state.best_value:
            state.best_value, state.best_epoch = value, "wa"
            setup.save(run_dir / "best.safetensors", model, {"weight_average": span, metric: value})


def _calibrate_events(setup: _Setup, process: _Process) -> None:
    """The best checkpoint's decision layer calibrated on streams of validation clips (thresholds per class, median
    filter, minimum duration) and written into it, so that ``classify --events`` with no flags uses them."""
    from astedge.measure.calibration import calibrate_events, held_out_streams
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    best = process.run_dir / "best.safetensors"
    val = DatasetIndex(setup.labels, setup.task, {"val": setup.run.splits["val"]}, setup.data.layout, [],
                       setup.data.background)
    streams = held_out_streams(val, "val", seed=setup.recipe.seed, log=process.say)
    with Classifier.from_options(best, ClassifierOptions(backend="torch", events=True)) as classifier:
        events = calibrate_events(classifier, streams, log=process.say)
    set_events(best, events)


def _score_test_split(setup: _Setup, process: _Process) -> dict:
    """The best checkpoint (and the teacher) on the data's test split, when it has one: clips no epoch chose; with
    subgroups (a manifest's --group-by column), each group apart, on the test split or else the validation split."""
    features, recipe, task, device = setup.run.features, setup.recipe, setup.task, process.device
    items, bad, _ = check_items(setup.data.splits.get("test") or [], features.sample_rate)
    grouped = "test" if any(i.group is not None for i in items) else \
        "val" if any(i.group is not None for i in setup.val_set.items) else None
    if not items and grouped is None:
        return {}
    best = load_checkpoint(process.run_dir / "best.safetensors").build_model().to(device)
    out = {}
    if items:
        test_set = ClipDataset(items, len(setup.labels), features, recipe, False,
                               [audio_io.load_audio(i.path, features.sample_rate) for i in items])
        scores, targets = predict(best, test_set, 2 * recipe.batch_size, device, task)
        out = {"clips": len(items), "student": metrics.evaluate(scores, targets, task)}
        if setup.teacher is not None:
            out["teacher"] = metrics.evaluate(*predict(setup.teacher, test_set, 2 * recipe.batch_size, device, task),
                                              task)
        metric = setup.metric
        process.say(f"test split ({len(items)} clips never used for training or model selection): {metric} "
                    f"{out['student'][metric]:.4f}" + (f"; teacher {out['teacher'][metric]:.4f}"
                                                       if setup.teacher is not None else ""))
    if grouped == "val":  # the validation clips, from memory
        items = setup.val_set.items
        scores, targets = predict(best, setup.val_set, 2 * recipe.batch_size, device, task)
    if grouped is not None:
        out["groups"] = _score_groups(scores, targets, items, grouped, setup, process)
    return out


def _score_groups(scores: np.ndarray, targets: np.ndarray, items: list, split: str, setup: _Setup,
                  process: _Process) -> dict:
    """The metric of each subgroup of a split's scored `items` (speaker, device: the manifest's --group-by column),
    in one line."""
    groups = metrics.by_group(scores, targets, [i.group for i in items], setup.task)
    process.say(f"{split} split by group: " + ", ".join(f"{g} {m[setup.metric]:.4f} ({m['clips']} clips)"
                                                        for g, m in groups.items()))
    return {"split": split, "by_group": groups}
