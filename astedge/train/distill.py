"""``astedge distill``: a smaller AST learns from a bigger model on the user's unlabeled audio.

Any model astedge can run (an imported AudioSet AST, a trained checkpoint, an export folder) labels
audio from the user's domain; a student of any AST configuration (``--model tiny --depth 4 --stride
16/16``) then trains through :func:`astedge.train.loop.train` with the teacher attached: its distillation
token learns the teacher's outputs on every (augmented) batch (soft targets at a temperature; sigmoid
targets for multi-label teachers), its class token the teacher's decisions (top-1, or every class the
teacher scores >= 0.5), or the true labels of a labelled set when one is given. Validation is agreement
with the teacher on held-out clips; ``--eval DATA`` adds accuracy / mAP of student and teacher on a
labelled set. Runs resume like ``astedge train`` (the teacher's labels are cached in the run folder).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from astedge.data.datasets import AUDIO_SUFFIXES, DatasetIndex, Item, holdout, read_dataset
from astedge.errors import UserError
from astedge.files import atomic_write

#: Longer recordings are cut into clips of the student's window (written under RUN/clips/).
SEGMENT_FACTOR = 2.0


def unlabeled_clips(folder: str | Path, run_dir: Path, seconds: float, rate: int, log) -> list[Path]:
    """Every audio file under `folder`; files longer than twice `seconds` are cut into `seconds`-long clips."""
    import soundfile as sf

    from astedge.audio.decode import audio_info, load_audio

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("is not a folder of audio" if folder.exists() else "does not exist", folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})", folder)
    clips, skipped, cut = [], [], 0
    for path in files:
        try:
            info = audio_info(path)
        except UserError as err:
            skipped.append(str(err))
            continue
        if info.frames / info.samplerate <= SEGMENT_FACTOR * seconds:
            clips.append(path)
            continue
        wave = load_audio(path, rate)
        step = int(seconds * rate)
        out = run_dir / "clips" / hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        out.mkdir(parents=True, exist_ok=True)
        for k, start in enumerate(range(0, len(wave) - step + 1, step)):
            target = out / f"{path.stem}_{k:05d}.wav"
            if not target.exists():
                with atomic_write(target) as handle:
                    sf.write(handle, wave[start:start + step], rate, format="WAV", subtype="PCM_16")
            clips.append(target)
            cut += 1
    if skipped:
        log(f"skipped {len(skipped)} unreadable file(s): {'; '.join(skipped[:3])}")
    if not clips:
        raise UserError("holds no readable audio", folder)
    if cut:
        log(f"cut the long recordings into {cut} clips of {seconds:g} s under {run_dir / 'clips'}")
    return clips


def teacher_labels(teacher, clips: list[Path], run_dir: Path, log) -> np.ndarray:
    """The teacher's clip scores ``[clips, classes]``, cached in RUN/teacher_scores.npz (keyed by the clips)."""
    from astedge.audio.decode import load_audio
    from astedge.runtime.windows import Windowing, clip_scores

    key = hashlib.sha256(json.dumps([teacher.name, list(teacher.labels),
                                     [(str(c), c.stat().st_size) for c in clips]]).encode()).hexdigest()
    cache = run_dir / "teacher_scores.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                log(f"teacher labels: cached in {cache}")
                return data["scores"]
    log(f"teacher labels: {teacher.name} scores {len(clips)} clips")
    windowing = Windowing.from_seconds(teacher.feature_config)
    scores = np.concatenate([clip_scores(teacher, [load_audio(c, teacher.feature_config.sample_rate)
                                                   for c in clips[i:i + 64]], windowing)
                             for i in range(0, len(clips), 64)])
    with atomic_write(cache) as handle:
        np.savez(handle, key=np.array(key), scores=scores.astype(np.float32))
    return scores


def pseudo_dataset(clips: list[Path], scores: np.ndarray, labels, task: str, val_fraction: float, seed: int,
                   labelled: DatasetIndex | None = None) -> DatasetIndex:
    """Clips with the teacher's decisions as targets (top-1; for multi-label teachers also every class >= 0.5),
    split into train / held-out (agreement) by file name; a labelled set's train clips join with their labels."""
    items = []
    for path, row in zip(clips, scores, strict=True):
        chosen = {int(np.argmax(row))}
        if task == "multilabel":
            chosen |= {int(i) for i in np.flatnonzero(row >= 0.5)}
        items.append(Item(path, tuple(sorted(chosen))))
    train, val = holdout(items, val_fraction, seed)
    if labelled is not None:
        index = {label: i for i, label in enumerate(labels)}
        missing = [label for label in labelled.labels if label not in index]
        if missing:
            raise UserError(f"the labelled set's labels {', '.join(missing[:5])} are not the teacher's")
        train += [Item(i.path, tuple(index[labelled.labels[t]] for t in i.targets))
                  for i in labelled.splits.get("train", [])]
    return DatasetIndex(list(labels), task, {"train": train, "val": val}, "teacher-labelled audio")


def distill(teacher_path: str | Path, audio_dir: str | Path, run_dir: str | Path, recipe, *,
            labelled: str | Path | None = None, eval_data: str | Path | None = None, resume: bool = False,
            force: bool = False, log=print, show_progress: bool = True) -> dict:
    """Label `audio_dir` with the teacher, train the student `recipe` describes (teacher attached), report."""
    from astedge.runtime.backends import choose_backend
    from astedge.train.loop import train

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("exists and is not a folder; give the run a folder with -o", run_dir)
    if (run_dir / "last.safetensors").exists() and not (resume or force):
        raise UserError("already holds a run: pass --resume to continue it or --force to start over", run_dir)
    teacher = choose_backend(teacher_path).backend  # a UserError when the teacher cannot run here
    try:
        labelled_index = read_dataset(labelled) if labelled is not None else None
        config = teacher.feature_config
        seconds = (recipe.target_length or config.target_length) * config.frame_shift_ms / 1000
        clips = unlabeled_clips(audio_dir, run_dir, seconds, config.sample_rate, log)
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad input leaves no run folder behind
        scores = teacher_labels(teacher, clips, run_dir, log)
        data = pseudo_dataset(clips, scores, teacher.labels, teacher.task, recipe.val_fraction, recipe.seed,
                              labelled_index)
    finally:
        teacher.close()
    recipe = recipe.with_overrides({"teacher": str(teacher_path),
                                    "target_length": recipe.target_length or config.target_length})
    result = train(data, run_dir, recipe, resume=resume, force=force, log=log, show_progress=show_progress)
    report = {"student": str(result.best), "teacher": str(teacher_path), "clips": len(clips),
              "agreement": {"metric": result.metric, "held_out": result.best_value,
                            "clips": len(data.splits["val"])}, "epochs": len(result.history)}
    if eval_data is not None:
        report["eval"] = evaluate_pair(teacher_path, result.best, eval_data, log)
    with atomic_write(run_dir / "distill.json", "w") as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    return report


def evaluate_pair(teacher_path, student_path, eval_data, log) -> dict:
    """Teacher and student on a labelled set (its test split, else val): metrics and the student/teacher ratio."""
    from astedge.runtime.backends import choose_backend
    from astedge.measure.evaluation import clip_metrics, score_clips
    from astedge.measure.metrics import main_metric

    data = read_dataset(eval_data)
    split = "test" if data.splits.get("test") else "val"
    out = {"data": str(eval_data), "split": split}
    for name, path in (("teacher", teacher_path), ("student", student_path)):
        backend = choose_backend(path).backend
        try:
            scores, targets = score_clips(backend, data, split, log=log)
            columns = [list(backend.labels).index(label) for label in data.labels]
            out[name] = clip_metrics(scores, targets, data.task, columns)
        finally:
            backend.close()
    metric = main_metric(data.task)
    out["metric"] = metric
    out["student_vs_teacher"] = out["student"][metric] / max(out["teacher"][metric], 1e-12)
    log(f"on {split} of {eval_data}: teacher {metric} {out['teacher'][metric]:.4f}, student "
        f"{out['student'][metric]:.4f} ({out['student_vs_teacher']:.1%} of the teacher)")
    return out
