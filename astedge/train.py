"""Training: data -> AST -> a self-describing checkpoint, with AST's recipe (see :mod:`astedge.recipes`).

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

from astedge import audio as audio_io
from astedge import features as feats
from astedge import metrics
from astedge.checkpoint import load_checkpoint, save_checkpoint
from astedge.datasets import DatasetIndex, Item, report_problems
from astedge.errors import UserError
from astedge.files import atomic_write
from astedge.model import ASTModel, imagenet_init, model_config, with_target_length
from astedge.recipes import Recipe

#: Clips whose waveforms together stay under this size are read once and kept in memory.
PRELOAD_BYTES = 2 << 30


# ---------------------------------------------------------------------------------------------
# Data


def check_items(items: list[Item], rate: int = feats.DEFAULT.sample_rate) -> tuple[list[Item], list[str], list[int]]:
    """Headers of every file: the readable items, one problem line per unreadable file, and lengths at `rate`."""
    good, problems, lengths = [], [], []
    for item in items:
        try:
            info = audio_io.audio_info(item.path)
        except UserError as err:
            problems.append(str(err))
            continue
        good.append(item)
        lengths.append(int(info.frames * rate / info.samplerate))
    return good, problems, lengths


def default_target_length(lengths: list[int], config: feats.FbankConfig) -> int:
    """Frames of the median clip, rounded up to a multiple of 16 (AST's patch)."""
    frames = feats.num_frames(int(np.median(lengths)), config)
    return max(16, int(math.ceil(frames / 16) * 16))


class FeatureCache:
    """Raw log-mel of each clip on disk, keyed by the file's content and the fbank settings.

    A later epoch or run reads `<dir>/<sha256(file)[:20]>-<settings>.npy` instead of decoding,
    resampling and computing the fbank again. Only un-mixed clips are cached (mixup changes the audio);
    files are written atomically, so a shared cache never holds half an array.
    """

    def __init__(self, folder: str | Path, config: feats.FbankConfig):
        import hashlib

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        fbank_fields = {k: v for k, v in config.to_dict().items() if k not in ("target_length", "mean", "std", "clip_seconds")}
        self.settings = hashlib.sha256(json.dumps(fbank_fields, sort_keys=True).encode()).hexdigest()[:12]
        self._keys: dict[Path, str] = {}

    def path(self, audio: Path) -> Path:
        from astedge.files import sha256_file

        if audio not in self._keys:
            self._keys[audio] = sha256_file(audio)[:20]
        return self.folder / f"{self._keys[audio]}-{self.settings}.npy"

    def load(self, audio: Path) -> np.ndarray | None:
        path = self.path(audio)
        return np.load(path) if path.is_file() else None

    def store(self, audio: Path, logmel: np.ndarray) -> None:
        with atomic_write(self.path(audio)) as handle:
            np.save(handle, logmel)


class ClipDataset(torch.utils.data.Dataset):
    """Items -> (normalized fbank [T, F], target vector), with AST's training augmentation.

    Order as in the original dataloader: waveform mixup -> fbank -> pad/crop -> SpecAugment
    (masked cells are 0 before normalization) -> normalize -> (Speech Commands) noise and roll.
    Randomness derives from (seed, epoch, index), so runs and resumed runs repeat exactly.
    """

    def __init__(self, items: list[Item], num_labels: int, features: feats.FbankConfig, recipe: Recipe,
                 train: bool, waves: list[np.ndarray] | None = None, cache: FeatureCache | None = None):
        self.items, self.num_labels, self.features, self.recipe, self.train = items, num_labels, features, recipe, train
        self.waves, self.cache = waves, cache
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def wave(self, index: int) -> np.ndarray:
        if self.waves is not None:
            return self.waves[index]
        return audio_io.load_audio(self.items[index].path, self.features.sample_rate)

    def target(self, index: int) -> np.ndarray:
        vector = np.zeros(self.num_labels, np.float32)
        vector[list(self.items[index].targets)] = 1.0
        return vector

    def logmel(self, index: int) -> np.ndarray:
        """Raw log-mel of one clip, through the feature cache when there is one."""
        path = self.items[index].path
        cached = self.cache.load(path) if self.cache else None
        if cached is None:
            cached = _fbank(self.wave(index), self.features)
            if self.cache:
                self.cache.store(path, cached)
        return cached

    def __getitem__(self, index: int):
        recipe, config = self.recipe, self.features
        rng = np.random.default_rng((recipe.seed, self.epoch, index))
        target = self.target(index)
        if self.train and recipe.mixup > 0 and rng.random() < recipe.mixup:
            other = int(rng.integers(len(self.items)))
            wave, partner = self.wave(index), self.wave(other)
            partner = np.pad(partner, (0, max(0, len(wave) - len(partner))))[: len(wave)]
            lam = rng.beta(10, 10)
            wave = feats.subtract_mean(lam * feats.subtract_mean(wave) + (1 - lam) * feats.subtract_mean(partner))
            target = lam * target + (1 - lam) * self.target(other)
            logmel = _fbank(wave, config)
        else:
            logmel = self.logmel(index)
        x = feats.pad_or_crop(logmel, config.target_length)
        if self.train:
            x = spec_augment(x, recipe.freqm, recipe.timem, rng)
        x = feats.normalize(x, config)
        if self.train and recipe.noise:
            x = x + rng.random(x.shape, np.float32) * np.float32(rng.random()) / 10
            x = np.roll(x, int(rng.integers(-10, 10)), axis=0)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(target.astype(np.float32))


def _fbank(wave: np.ndarray, config: feats.FbankConfig) -> np.ndarray:
    """fbank of a clip, zero-padded to one frame when shorter (a blip still yields one frame)."""
    if len(wave) < config.window_size:
        wave = np.pad(wave, (0, config.window_size - len(wave)))
    return feats.fbank(wave, config)


def spec_augment(x: np.ndarray, freqm: int, timem: int, rng: np.random.Generator) -> np.ndarray:
    """One frequency and one time mask (widths uniform below freqm/timem), value 0, as torchaudio's masking."""
    x = x.copy()
    for axis, width_max in ((1, freqm), (0, timem)):
        if width_max > 0:
            width = int(rng.integers(0, width_max))
            start = int(rng.integers(0, max(1, x.shape[axis] - width)))
            index = [slice(None), slice(None)]
            index[axis] = slice(start, start + width)
            x[tuple(index)] = 0.0
    return x


def balanced_weights(items: list[Item], num_labels: int) -> np.ndarray:
    """AST's sampling weights: each class 1000 / (count + 0.01); a clip sums its labels' weights."""
    counts = np.zeros(num_labels)
    for item in items:
        counts[list(item.targets)] += 1
    class_weight = 1000.0 / (counts + 0.01)
    return np.array([class_weight[list(item.targets)].sum() for item in items])


def epoch_indices(count: int, epoch: int, seed: int, rank: int, world: int, weights: np.ndarray | None = None) -> list[int]:
    """This rank's share of the epoch's order: the same draw on every rank, padded to split evenly."""
    generator = np.random.default_rng((seed, 7919, epoch))
    if weights is None:
        order = generator.permutation(count)
    else:
        order = generator.choice(count, size=count, replace=True, p=weights / weights.sum())
    if len(order) % world:
        order = np.concatenate([order, order[: world - len(order) % world]])
    return order[rank::world].tolist()


def normalization_stats(waves, config: feats.FbankConfig, limit: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the un-normalized, padded fbank over up to `limit` training clips (AST's get_norm_stats)."""
    order = np.random.default_rng(seed).permutation(len(waves))[:limit]
    total, total_sq, cells = 0.0, 0.0, 0
    for index in order:
        x = feats.pad_or_crop(_fbank(waves[int(index)], config), config.target_length).astype(np.float64)
        total, total_sq, cells = total + x.sum(), total_sq + (x**2).sum(), cells + x.size
    mean = total / cells
    return float(mean), float(math.sqrt(max(total_sq / cells - mean**2, 1e-12)))


class _LazyWaves:
    """Sequence view that reads each clip from disk on access (for datasets too large to preload)."""

    def __init__(self, items, rate):
        self.items, self.rate = items, rate

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return audio_io.load_audio(self.items[index].path, self.rate)


# ---------------------------------------------------------------------------------------------
# Model and state


def initial_model(recipe: Recipe, num_classes: int, labels: list[str], target_length: int, num_mel_bins: int,
                  log) -> ASTModel:
    """The model training starts from, as `recipe.init` says: random, ImageNet (timm DeiT file) or an astedge
    checkpoint (fine-tuned; a new head when its labels differ)."""
    overrides = dict(num_classes=num_classes, target_length=target_length, num_mel_bins=num_mel_bins,
                     patch_size=tuple(int(p) for p in recipe.patch_size), fstride=recipe.fstride, tstride=recipe.tstride)
    if recipe.depth:
        overrides["depth"] = recipe.depth
    config = model_config(recipe.model, **overrides)
    init = recipe.init
    if init == "random":
        return ASTModel(config)
    if init.startswith("imagenet:"):
        from astedge.importer import read_state_dict

        log(f"initialising the backbone from ImageNet weights {init[9:]} (positions: {recipe.pos_embed})")
        return imagenet_init(config, read_state_dict(init[9:]), recipe.pos_embed)
    checkpoint = load_checkpoint(init)
    source = checkpoint.build_model()
    if source.config.target_length != target_length:
        source = with_target_length(source, target_length, recipe.pos_embed)
    if dataclasses.replace(source.config, num_classes=num_classes) != config:
        raise UserError(f"--init checkpoint has a different architecture ({source.config}) than the recipe "
                        f"asks for ({config}); set the recipe's model/strides to match", init)
    model = ASTModel(config)
    state = source.state_dict()
    if list(checkpoint.labels) != list(labels):
        log(f"fine-tuning {init} with a new head for {num_classes} labels")
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


def _lr_at(recipe: Recipe, epoch: int, step: int) -> float:
    """Warm-up (stepwise, from 0) then MultiStep decay after epochs lr_start, lr_start + lr_step, ... (1-based)."""
    lr = recipe.lr
    decays = 0 if epoch <= recipe.lr_start else len(range(recipe.lr_start, epoch, recipe.lr_step))
    lr *= recipe.lr_decay**decays
    if recipe.warmup_steps and step <= recipe.warmup_steps:
        lr *= (step // recipe.warmup_every * recipe.warmup_every) / recipe.warmup_steps
    return lr


def predict(model: nn.Module, dataset: ClipDataset, batch_size: int, device: torch.device, task: str,
            indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over `indices` of an (un-augmented) dataset."""
    indices = list(range(len(dataset))) if indices is None else indices
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=indices)
    scores, targets = [], []
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            logits = model(x.to(device)).float()
            scores.append((logits.softmax(-1) if task == "multiclass" else logits.sigmoid()).cpu().numpy())
            targets.append(y.numpy())
    if not scores:
        return np.zeros((0, dataset.num_labels), np.float32), np.zeros((0, dataset.num_labels), np.float32)
    return np.concatenate(scores), np.concatenate(targets)


@dataclass
class RunData:
    """What a run trains on, read once: the readable items per split, their audio, the feature config."""

    splits: dict[str, list[Item]]
    waves: dict[str, object]  # split -> list of waveforms (or a lazy view for large datasets)
    features: feats.FbankConfig
    problems: list[str]


def prepare_data(data: DatasetIndex, recipe: Recipe, say) -> RunData:
    """Headers first (unreadable files are reported once and skipped), then the feature config (the clip length,
    the window, the normalization statistics) and the audio (kept in memory when it fits)."""
    if "train" not in data.splits or "val" not in data.splits:
        raise UserError(f"dataset needs train and validation splits, got {', '.join(data.splits)}")
    rate = feats.DEFAULT.sample_rate
    problems = list(data.problems)
    splits, lengths = {}, {}
    for name in ("train", "val"):
        splits[name], bad, lengths[name] = check_items(data.splits[name], rate)
        problems += bad
    if problems:
        say(report_problems(problems))
    if not splits["train"] or not splits["val"]:
        raise UserError("no readable audio left in the train or validation split")

    features = dataclasses.replace(feats.DEFAULT, clip_seconds=round(float(np.median(lengths["train"])) / rate, 2))
    target = recipe.target_length or default_target_length(lengths["train"], features)
    features = dataclasses.replace(features, target_length=target)
    if 4 * (sum(lengths["train"]) + sum(lengths["val"])) <= PRELOAD_BYTES:
        waves = {name: [audio_io.load_audio(i.path, rate) for i in splits[name]] for name in splits}
    else:
        waves = {name: _LazyWaves(splits[name], rate) for name in splits}
    mean, std = _norm_stats(recipe, waves["train"], features)
    return RunData(splits, waves, dataclasses.replace(features, mean=mean, std=std), problems)


def _norm_stats(recipe: Recipe, waves, features: feats.FbankConfig) -> tuple[float, float]:
    """The recipe's normalization: computed from the training set, a published dataset's, or "MEAN,STD"."""
    if recipe.norm_stats == "computed":
        return normalization_stats(waves, features, seed=recipe.seed)
    if "," in recipe.norm_stats:
        mean, std = (float(v) for v in recipe.norm_stats.split(","))
        return mean, std
    stats = feats.DATASET_STATS.get(recipe.norm_stats)
    if stats is None:
        raise UserError(f"unknown norm_stats {recipe.norm_stats!r}")
    return stats["mean"], stats["std"]


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


def _train_epoch(net: nn.Module, loader, optimizer, scaler, criterion, loss_name: str, recipe: Recipe, epoch: int,
                 state: RunState, device, use_amp: bool, bar) -> list[float]:
    """One pass over the epoch's batches; returns the per-step losses."""
    net.train()
    losses = []
    job = bar.add_task("train", total=len(loader), loss="-")
    for x, y in loader:
        state.step += 1
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(recipe, epoch, state.step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = net(x)
            loss = criterion(logits.float(), y.argmax(-1) if loss_name == "ce" else y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        bar.update(job, advance=1, loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


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


def train(data: DatasetIndex, run_dir: str | Path, recipe: Recipe, *, resume: bool = False, force: bool = False,
          cache_dir: str | Path | None = None, log=print, show_progress: bool = True) -> TrainResult:
    """Train on `data` into `run_dir` (best.safetensors, last.safetensors, metrics.jsonl, curves.png).

    `cache_dir` keeps each clip's raw log-mel on disk (see :class:`FeatureCache`).
    """
    rank, world, device = _distributed()
    lead = rank == 0
    run_dir = Path(run_dir)
    say = log if lead else (lambda *a, **k: None)
    if lead:
        if (run_dir / "last.safetensors").exists() and not (resume or force):
            raise UserError("already holds a training run: pass --resume to continue it or --force to start over",
                            run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
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

    model = initial_model(recipe, len(labels), labels, features.target_length, features.num_mel_bins, say).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=tuple(recipe.betas),
                                 weight_decay=recipe.weight_decay)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss() if loss_name == "ce" else nn.BCEWithLogitsLoss()
    metric = metrics.main_metric(task)

    state = RunState()
    if resume and (run_dir / "last.state.safetensors").exists():
        state = _resume(run_dir, model, optimizer)
        say(f"resuming after epoch {state.epoch} (best {metric} {state.best_value:.4f} at epoch {state.best_epoch})")

    def write(path: Path, state_model: nn.Module, extra: dict) -> None:
        save_checkpoint(path, state_model, feature_config=features, labels=labels, task=task,
                        provenance={"source": "astedge train", "recipe": recipe.to_dict(), "layout": data.layout,
                                    **extra})

    if lead:
        (run_dir / "recipe.json").write_text(json.dumps({**recipe.to_dict(), "loss": loss_name}, indent=2) + "\n")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress_console = Console(stderr=True)  # stdout stays clean for --json
    for epoch in range(state.epoch + 1, recipe.epochs + 1):
        started = time.perf_counter()
        train_set.epoch = epoch
        indices = epoch_indices(len(train_set), epoch, recipe.seed, rank, world, weights)
        loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size, sampler=indices,
                                             num_workers=recipe.num_workers, drop_last=len(indices) > recipe.batch_size)
        with Progress(TextColumn(f"epoch {epoch}/{recipe.epochs}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), disable=not (lead and show_progress),
                      transient=True, console=progress_console) as bar:
            losses = _train_epoch(net, loader, optimizer, scaler, criterion, loss_name, recipe, epoch, state, device,
                                  use_amp, bar)
        if recipe.wa_start and recipe.wa_start <= epoch <= recipe.wa_end:
            for k, v in model.state_dict().items():
                state.wa_sum[k] = state.wa_sum.get(k, torch.zeros_like(v, dtype=torch.float64)) + v.detach().cpu().double()

        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
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
        if world > 1:
            dist.barrier()

    if state.wa_sum and recipe.wa_end >= recipe.wa_start:
        _finish_weight_average(model, val_set, recipe, state, device, task, metric, lead, write, run_dir, say)
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, run_dir / "best.safetensors", metric, state.best_value, state.best_epoch,
                       state.history, run.problems)


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
