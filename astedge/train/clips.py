"""Training data: labelled clips -> model inputs, read once, augmented as AST's dataloader does and on the waveform.

:func:`prepare_data` reads headers (unreadable files reported once and skipped), fixes the feature config of
the run (clip length, window, normalization statistics) and keeps the audio in memory when it fits;
:class:`ClipDataset` turns a clip into ``(normalized fbank [T, F], target)`` with mixup, waveform augmentation
(:mod:`astedge.train.augment`), time shift, SpecAugment and noise, each clip's log-mel computed once (again only
for the clips an epoch mixes or augments); :func:`predict` scores a split. The loop is :mod:`astedge.train.loop`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astedge.audio import decode as audio_io
from astedge.features import fbank as feats
from astedge.data.datasets import DatasetIndex, Item, report_problems
from astedge.errors import UserError
from astedge.files import atomic_write
from astedge.train.augment import Augmenter
from astedge.train.frame_targets import crop_of_two, frame_targets
from astedge.train.recipes import Recipe, batch_warning

#: Clips whose waveforms together stay under this size are read once and kept in memory.
PRELOAD_BYTES = 2 << 30


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


def default_target_length(lengths: list[int], config: feats.FbankConfig, patch: int = 16, stride: int = 16) -> int:
    """Frames of the median clip, rounded up to the next length that the patches (time size `patch`, every `stride`
    frames) tile to its last frame: no column of padding is computed beyond what the grid needs."""
    frames = max(patch, feats.num_frames(int(np.median(lengths)), config))
    return patch + int(math.ceil((frames - patch) / stride)) * stride


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
    """Items -> (normalized fbank [T, F], target vector), with AST's training augmentation and the recipe's
    waveform augmentation (training only: a dataset with ``train=False`` returns every clip as it is).

    Order as in the original dataloader: waveform mixup -> waveform augmentation -> fbank -> pad/crop ->
    (time shift) -> SpecAugment (masked cells are 0 before normalization) -> normalize -> (Speech Commands) noise
    and roll. Randomness derives from (seed, epoch, index), so runs and resumed runs repeat exactly, whatever the
    worker count. Each clip's log-mel is computed once and kept in memory when the audio is (only the clips an
    epoch mixes or augments are recomputed). The augmenter (with its rooms) is made once, here.
    """

    def __init__(self, items: list[Item], num_labels: int, features: feats.FbankConfig, recipe: Recipe,
                 train: bool, waves: list[np.ndarray] | None = None, cache: FeatureCache | None = None,
                 frames=None, background: int | None = None):
        """`frames` (a :class:`~astedge.runtime.frames.FrameLayout`): training windows also bring a frame head's
        targets (:meth:`frame_batch`); `background`: the label index that is on where no event is."""
        self.items, self.num_labels, self.features, self.recipe, self.train = items, num_labels, features, recipe, train
        self.waves, self.cache = waves, cache
        self.frames, self.background = frames, background
        self._strong = [i for i, item in enumerate(items) if item.events is not None]
        self.epoch = 0
        self._memo: dict[int, np.ndarray] | None = {} if isinstance(waves, list) else None
        self.augmenter = Augmenter(recipe.augment, features.sample_rate, recipe.seed) \
            if train and recipe.augment.p > 0 else None

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
        """Raw log-mel of one clip: from memory, else the feature cache when there is one, else computed."""
        if self._memo is not None and index in self._memo:
            return self._memo[index]
        path = self.items[index].path
        cached = self.cache.load(path) if self.cache else None
        if cached is None:
            cached = _fbank(self.wave(index), self.features)
            if self.cache:
                self.cache.store(path, cached)
        if self._memo is not None:
            self._memo[index] = cached
        return cached

    def mixed(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """AST's waveform mixup of clip `index` with a random partner: (mixed wave, mixed target)."""
        other = int(rng.integers(len(self.items)))
        wave, partner = self.wave(index), self.wave(other)
        partner = np.pad(partner, (0, max(0, len(wave) - len(partner))))[: len(wave)]
        lam = rng.beta(10, 10)
        wave = feats.subtract_mean(lam * feats.subtract_mean(wave) + (1 - lam) * feats.subtract_mean(partner))
        return wave, lam * self.target(index) + (1 - lam) * self.target(other)

    def __getitem__(self, index: int):
        recipe, config = self.recipe, self.features
        rng = np.random.default_rng((recipe.seed, self.epoch, index))
        target, wave, events, crop = self.target(index), None, self.items[index].events, False
        if self.frames is not None and self.train and events is not None and rng.random() < recipe.crop_of_two:
            logmel, events, crop = *self.crop_of_two(index, rng), True
        else:
            if self.train and recipe.mixup > 0 and rng.random() < recipe.mixup:
                wave, target = self.mixed(index, rng)
                events = None  # two clips' sounds in one: their boundaries are no longer one clip's
            if self.augmenter is not None and rng.random() < recipe.augment.p:
                wave = self.augmenter(self.wave(index) if wave is None else wave, (recipe.seed, self.epoch, index, 1))
            logmel = self.logmel(index) if wave is None else _fbank(wave, config)
        real = min(len(logmel), config.target_length)
        x = feats.pad_or_crop(logmel, config.target_length)
        if self.train:
            if recipe.time_shift:
                shift = int(rng.integers(-recipe.time_shift, recipe.time_shift + 1))
                x, events = time_shift(x, shift), _shifted(events, shift * config.frame_shift_ms / 1000)
            x = spec_augment(x, recipe.freqm, recipe.timem, rng, recipe.freq_masks, recipe.time_masks)
        x = feats.normalize(x, config)
        if self.train and recipe.noise:
            x = x + rng.random(x.shape, np.float32) * np.float32(rng.random()) / 10
            x = np.roll(x, int(rng.integers(-10, 10)), axis=0)
        sample = (torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(target.astype(np.float32)))
        if self.frames is None or not self.train:
            return sample
        return sample + self.frame_batch(events, real, crop)

    def crop_of_two(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
        """A window of the end of clip `index` and the start of another clip with known boundaries."""
        other = self._strong[int(rng.integers(len(self._strong)))]
        first = self.logmel(index)
        second = feats.pad_or_crop(self.logmel(other), len(first))
        split = int(rng.integers(1, len(first))) if len(first) > 1 else 1
        return crop_of_two(first, self.items[index].events, second, self.items[other].events or (), split,
                           self.features.frame_shift_ms / 1000)

    def frame_batch(self, events, real_frames: int, crop: bool) -> tuple:
        """A frame head's part of a training sample: (targets [columns, labels], valid columns [columns], strong,
        clip weight): targets where the window's event boundaries are known, the clip's label otherwise (pooled);
        a window cut from two clips teaches frames only."""
        layout = self.frames
        valid = np.zeros(layout.columns, np.float32)
        valid[:layout.columns_seeing(real_frames)] = 1.0
        strong = events is not None
        targets = frame_targets(events, layout, self.num_labels, self.background) if strong else \
            np.zeros((layout.columns, self.num_labels), np.float32)
        return (torch.from_numpy(targets), torch.from_numpy(valid), torch.tensor(float(strong)),
                torch.tensor(0.0 if crop else 1.0))


def _fbank(wave: np.ndarray, config: feats.FbankConfig) -> np.ndarray:
    """fbank of a clip, zero-padded to one frame when shorter (a blip still yields one frame)."""
    if len(wave) < config.window_size:
        wave = np.pad(wave, (0, config.window_size - len(wave)))
    return feats.fbank(wave, config)


def spec_augment(x: np.ndarray, freqm: int, timem: int, rng: np.random.Generator, freq_masks: int = 1,
                 time_masks: int = 1) -> np.ndarray:
    """Frequency and time masks (widths uniform below freqm/timem), value 0, as torchaudio's masking; AST uses
    one of each, from-scratch recipes two."""
    x = x.copy()
    for axis, width_max, count in ((1, freqm, freq_masks), (0, timem, time_masks)):
        for _ in range(count if width_max > 0 else 0):
            width = int(rng.integers(0, width_max))
            start = int(rng.integers(0, max(1, x.shape[axis] - width)))
            index = [slice(None), slice(None)]
            index[axis] = slice(start, start + width)
            x[tuple(index)] = 0.0
    return x


def _shifted(events, seconds: float):
    """Events moved `seconds` later (None stays None: unknown boundaries)."""
    return None if events is None else tuple((on + seconds, off + seconds, label) for on, off, label in events)


def time_shift(x: np.ndarray, frames: int) -> np.ndarray:
    """The clip moved `frames` later (earlier when negative) in its window; uncovered frames are 0 (silence after
    the log, as AST pads)."""
    if frames == 0:
        return x
    out = np.zeros_like(x)
    if frames > 0:
        out[frames:] = x[:-frames]
    else:
        out[:frames] = x[-frames:]
    return out


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


def predict(model: nn.Module, dataset: ClipDataset, batch_size: int, device: torch.device, task: str,
            indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over `indices` of an (un-augmented) dataset."""
    indices = list(range(len(dataset))) if indices is None else indices
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=indices)
    scores, targets = [], []
    model.eval()
    with torch.no_grad():
        for x, y, *_ in loader:
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
    warning = batch_warning(recipe, len(splits["train"]))
    if warning:
        say(warning)

    features = dataclasses.replace(feats.DEFAULT, clip_seconds=round(float(np.median(lengths["train"])) / rate, 2))
    target = recipe.target_length or default_target_length(lengths["train"], features, int(recipe.patch_size[1]),
                                                           recipe.tstride)
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


def targets_of(dataset: ClipDataset) -> np.ndarray:
    """Every clip's target vector, stacked ``[clips, labels]``."""
    return np.stack([dataset.target(i) for i in range(len(dataset))]) if len(dataset) else np.zeros((0, 1))
