"""Edge students: label-free distillation from a teacher on unlabeled audio, and the accuracy/latency frontier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.deploy import export as exp
from astedge.model.checkpoint import save_checkpoint
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.model.ast_model import ASTModel, model_config

KWS = FbankConfig().with_dataset("speechcommands")
LABELS = ["low", "high"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def tones(folder, count: int, seed: int, seconds: float = 0.5, labelled: bool = False):
    rng, t = np.random.default_rng(seed), np.arange(int(16000 * seconds)) / 16000
    for k in range(count):
        label = LABELS[k % 2]
        low, high = (300, 500) if label == "low" else (3000, 4000)
        target = folder / label if labelled else folder
        target.mkdir(parents=True, exist_ok=True)
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(low, high) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(target / f"{label}{k}.wav", wave.astype(np.float32), 16000)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small AST that tells low from high tones (frame tokens learn it in 20 full-batch steps), exported."""
    from astedge.features.fbank import model_input

    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    net = ASTModel(model_config("tiny", depth=1, num_classes=2, target_length=128, patch_size=(128, 2), fstride=128,
                                tstride=2))
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    waves = [0.3 * np.sin(2 * np.pi * rng.uniform(*((300, 500) if k % 2 == 0 else (3000, 4000))) * t)
             + 0.01 * rng.standard_normal(t.size) for k in range(64)]
    x = torch.from_numpy(np.stack([model_input(w.astype(np.float32), KWS) for w in waves]))
    y = torch.arange(64) % 2
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    path = save_checkpoint(root / "teacher.safetensors", net.eval(), feature_config=KWS, labels=LABELS,
                           task="multiclass")
    exp.export(path, root / "export", engine=False, fp16=False, log=lambda m: None)
    return root


def test_label_free_distillation_reports_agreement_it_can_reproduce(teacher, tmp_path):
    from astedge.runtime.backends import choose_backend
    from astedge.train.distill import unlabeled_clips
    from astedge.runtime.windows import Windowing, clip_scores
    from astedge.audio.decode import load_audio

    tones(tmp_path / "audio", 40, seed=1)
    long = np.concatenate([0.3 * np.sin(2 * np.pi * 400 * np.arange(48000) / 16000)] * 2).astype(np.float32)
    sf.write(tmp_path / "audio" / "recording.wav", long, 16000)  # 6 s: cut into clips of the student's window
    tones(tmp_path / "eval", 20, seed=2, seconds=1.0, labelled=True)
    args = ["distill", str(teacher / "export"), str(tmp_path / "audio"), "-o", str(tmp_path / "run"), "--depth", "1",
            "--stride", "16/16", "--patch", "16x16", "--epochs", "2", "--eval", str(tmp_path / "eval"), "--json"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clips"] == 40 + 4 and len(list((tmp_path / "run" / "clips").rglob("*.wav"))) == 4
    assert json.loads((tmp_path / "run" / "distill.json").read_text()) == report
    # Agreement re-measured independently: the student's and the teacher's top-1 on the held-out clips.
    from astedge.data.datasets import holdout, Item

    clips = unlabeled_clips(tmp_path / "audio", tmp_path / "run", 1.28, 16000, lambda m: None)
    _, held = holdout([Item(c, (0,)) for c in clips], 0.2, 0)
    student = choose_backend(report["student"], "torch").backend
    master = choose_backend(teacher / "export").backend
    waves = [load_audio(i.path) for i in held]
    from astedge.features.fbank import model_input

    said = student.run(np.stack([model_input(w, student.feature_config) for w in waves])).argmax(1)  # each clip whole
    taught = clip_scores(master, waves, Windowing.from_seconds(master.feature_config)).argmax(1)  # the teacher's label
    agree = np.mean(said == taught)
    assert report["agreement"]["held_out"] == pytest.approx(agree) and report["agreement"]["clips"] == len(held)
    evaluation = report["eval"]
    assert evaluation["teacher"]["accuracy"] >= 0.8 and evaluation["metric"] == "accuracy"
    assert evaluation["student_vs_teacher"] == pytest.approx(evaluation["student"]["accuracy"]
                                                             / evaluation["teacher"]["accuracy"])
    again = cli(*args[:-3], "--epochs", "3", "--resume", "--json")  # resumable; the teacher's labels are cached
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["epochs"] == 3 and "cached" in again.stderr


def test_distill_errors_are_one_line(teacher, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, fragment in ((("distill", str(teacher / "export"), str(tmp_path / "empty"), "-o", str(tmp_path / "r")),
                            "holds no audio files"),
                           (("distill", str(tmp_path / "nothing"), str(tmp_path / "empty"), "-o", str(tmp_path / "r")),
                            "does not exist"),
                           (("distill", str(teacher / "export"), str(tmp_path / "empty"), "-o", str(tmp_path / "r"),
                             "--stride", "x"), "--stride expects")):
        result = cli(*args)
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "best.safetensors").exists()


def test_pareto_and_estimates():
    from astedge.measure.frontier import estimate_ms, pareto

    assert pareto([(0.9, 10.0), (0.95, 20.0), (0.85, 30.0), (0.9, 10.0)]) == [True, True, False, True]
    base = estimate_ms(261.0, 86.6e6, 163 * 2**20, 12, 1214, "fp16", "orin_agx")
    small = estimate_ms(22.9, 86.4e6, 5 * 2**20, 12, 130, "fp16", "orin_agx")
    assert 15 < base < 25  # the reference's estimate for AST-base on AGX Orin: about 18 ms
    assert small < base and estimate_ms(261.0, 86.6e6, 163 * 2**20, 12, 1214, "fp16", "orin_nano") > base
    assert estimate_ms(97.3, 86e6, 36 * 2**20, 12, 514, "int8", "orin_agx") < \
        estimate_ms(97.3, 86e6, 36 * 2**20, 12, 514, "fp16", "orin_agx")


def test_frontier_scores_times_and_names_the_fastest(teacher, tmp_path):
    from astedge.runtime.backends import choose_backend
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import score_clips

    tones(tmp_path / "eval", 20, seed=3, seconds=1.0, labelled=True)
    out = tmp_path / "frontier.json"
    result = cli("frontier", str(teacher / "teacher.safetensors"), str(teacher / "export"), "--eval",
                 str(tmp_path / "eval"), "--rounds", "2", "--min-accuracy", "0.5", "-o", str(out), "-o",
                 str(tmp_path / "frontier.md"), "--plot", str(tmp_path / "frontier.png"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report and (tmp_path / "frontier.png").stat().st_size > 1000
    rows = {r["candidate"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "export"} and rows["export"]["precision"] == "fp32"
    data = read_dataset(tmp_path / "eval")
    backend = choose_backend(teacher / "export").backend
    scores, targets = score_clips(backend, data, "val")
    assert rows["export"]["accuracy"] == pytest.approx(float((scores.argmax(1) == targets.argmax(1)).mean()))
    assert rows["export"]["tokens"] == 66 and rows["export"]["fused_int8_attention"]
    assert all(r["est_orin_agx_ms"] > 0 and r["cpu_ms_p50"] > 0 for r in rows.values())
    assert report["choices"]["cpu_ms_p50"] in rows and "ESTIMATE" in (tmp_path / "frontier.md").read_text()
