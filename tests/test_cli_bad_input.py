"""Every command's bad input, as `features` has it (tests/test_cli.py): a table of mistakes per command, each one
exit 2, exactly one line on stderr naming the problem, no traceback, and nothing left where outputs go (no
--events-csv, no calibrate -o, no run or export folder, no temp file). The mistakes are found before any work, so the
one line is all a user sees."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.model.ast_model import ASTModel, model_config
from astedge.model.checkpoint import save_checkpoint
from astedge.features.fbank import FbankConfig
from test_cli_contract import astedge

CLASSES = ["low", "high", "noise"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A random 3-class checkpoint (the mistakes are refused before it would run), audio, clips, truth tables."""
    root = tmp_path_factory.mktemp("bad-input")
    torch.manual_seed(0)
    net = ASTModel(model_config("tiny", depth=1, num_classes=3, target_length=128, patch_size=(128, 2), fstride=128,
                                tstride=2))
    features = FbankConfig().with_dataset("speechcommands")
    save_checkpoint(root / "model.safetensors", net, feature_config=features, labels=CLASSES, task="multiclass")
    rng = np.random.default_rng(0)
    sf.write(root / "stream.wav", (0.1 * rng.standard_normal(48000)).astype(np.float32), 16000)
    (root / "garbage.wav").write_bytes(b"RIFF\x00\x00not audio at all" * 8)
    (root / "truth.csv").write_text("onset,offset,label\n0.5,1.5,low\n")
    (root / "bad-truth.csv").write_text("onset,offset,label\n0.5,1.5,low\n2.0,x,high\n")
    for label in CLASSES:
        (root / "clips" / label).mkdir(parents=True)
        for k in range(3):
            sf.write(root / "clips" / label / f"{k}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    (root / "no-audio").mkdir()
    (root / "no-audio" / "notes.txt").write_text("no audio here\n")
    (root / "with-garbage").mkdir()
    (root / "with-garbage" / "ok.wav").write_bytes((root / "stream.wav").read_bytes())
    (root / "with-garbage" / "broken.wav").write_bytes((root / "garbage.wav").read_bytes())
    return {name: root / name for name in ("model.safetensors", "stream.wav", "garbage.wav", "truth.csv",
                                          "bad-truth.csv", "clips", "no-audio", "with-garbage")} | {"root": root}


def _args(template: tuple[str, ...], inputs: dict, out) -> list[str]:
    names = {"model": inputs["model.safetensors"], "wav": inputs["stream.wav"], "garbage": inputs["garbage.wav"],
             "truth": inputs["truth.csv"], "bad_truth": inputs["bad-truth.csv"], "clips": inputs["clips"],
             "no_audio": inputs["no-audio"], "with_garbage": inputs["with-garbage"], "out": out,
             "nope": inputs["root"] / "nope.wav"}
    return [part.format(**names) for part in template]


MISTAKES = {
    "classify": [
        (("classify", "{nope}", "-m", "{model}"), "nope.wav: no such file"),
        (("classify", "{wav}", "{garbage}", "-m", "{model}", "--events-csv", "{out}/e.csv"), "not a readable audio"),
        (("classify", "{wav}", "-m", "{model}", "--threshold", "2"), "--threshold must be in [0, 1], got 2"),
        (("classify", "{wav}", "-m", "{model}", "--events", "--threshold", "-0.5"), "--threshold must be in [0, 1]"),
        (("classify", "{no_audio}", "-m", "{model}"), "folder to classify has no audio files"),
        (("classify", "{wav}", "-m", "{model}", "--events-csv", "{out}/missing/e.csv"), "its folder does not exist"),
        (("classify", "{wav}"), "no model: pass -m/--model"),
        (("classify", "{wav}", "-m", "{model}", "--top-k", "many"), "Invalid value for '-k' / '--top-k'"),
    ],
    "listen": [
        (("listen", "-m", "{model}", "--source", "{wav}", "--threshold", "2"), "--threshold must be in [0, 1]"),
        (("listen", "-m", "{model}", "--device", "cuda"), "the CPU or GPU is chosen with --backend"),
        (("listen", "-m", "{model}", "--mic", "0", "--source", "{wav}"), "--mic selects a microphone"),
        (("listen", "-m", "{model}", "--realtime"), "--realtime and --speed apply to --source"),
        (("listen", "-m", "{model}", "--source", "{wav}", "--events-csv", "{out}/missing/e.csv"), "its folder does "
                                                                                                  "not exist"),
        (("listen", "-m", "{model}", "--source", "{wav}", "--speed", "fast"), "Invalid value for '--speed'"),
    ],
    "evaluate": [
        (("evaluate", "{wav}", "-m", "{model}", "--truth", "{bad_truth}", "--events-csv", "{out}/e.csv"), "row 3"),
        (("evaluate", "{wav}", "{wav}", "-m", "{model}", "--truth", "{truth}"), "has no file column"),
        (("evaluate", "{model}", "{wav}", "--truth", "{truth}"), "the model is given with -m/--model"),
        (("evaluate", "{wav}", "-m", "{model}", "--truth", "{truth}", "--threshold", "2"), "--threshold must be in"),
        (("evaluate", "{wav}", "-m", "{model}", "--truth", "{truth}", "--events-csv", "{out}/missing/e.csv"),
         "its folder does not exist"),
        (("evaluate", "{garbage}", "-m", "{model}", "--truth", "{truth}", "--events-csv", "{out}/e.csv"),
         "not a readable audio"),
        (("evaluate", "{wav}", "-m", "{model}"), "evaluate needs --truth"),
        (("evaluate", "{clips}", "-m", "{model}", "--split", "test"), "the dataset has no 'test' split"),
        (("evaluate", "{clips}", "-m", "{model}", "--group-by", "speaker"), "--group-by names a column of a CSV"),
        (("evaluate", "{wav}", "-m", "{model}", "--truth", "{truth}", "--group-by", "speaker"),
         "--split and --group-by score a dataset's clips"),
    ],
    "calibrate": [
        (("calibrate", "{model}", "{clips}", "-o", "{out}/t.json"), "the model is given with -m/--model"),
        (("calibrate", "{clips}", "-m", "{model}", "-o", "{out}/t.json", "--precision", "0.95"),
         "pass --target-precision 0.95"),
        (("calibrate", "{clips}", "-m", "{model}", "-o", "{out}/t.json", "--target-precision", "1.5"),
         "--target-precision must be in (0, 1], got 1.5"),
        (("calibrate", "{clips}", "-m", "{model}", "-o", "{out}/missing/t.json"), "its folder does not exist"),
        (("calibrate", "{no_audio}", "-m", "{model}", "-o", "{out}/t.json"), "needs at least two class sub-folders"),
    ],
    "distill": [
        (("distill", "{nope}", "{clips}", "-o", "{out}/run"), "does not exist"),
        (("distill", "{model}", "{no_audio}", "-o", "{out}/run"), "no audio files"),
        (("distill", "{model}", "{clips}", "-o", "{out}/run", "--stride", "x"), "--stride expects"),
        (("distill", "{model}", "{clips}", "-o", "{out}/run", "--set", "lr"), "--set expects KEY=VALUE"),
        (("distill", "{model}", "{clips}", "-o", "{out}/run", "--depth", "0"), "Invalid value for '--depth'"),
    ],
    "train": [
        (("train", "{nope}", "-o", "{out}/run"), "no such dataset"),
        (("train", "{clips}", "-o", "{out}/run", "--set", "lr"), "--set expects KEY=VALUE"),
        (("train", "{clips}", "-o", "{out}/run", "--pos-embed", "cubic"), "pos_embed must be one of"),
        (("train", "{clips}", "-o", "{out}/run", "--preset", "nope"), "nope"),
        (("train", "{clips}", "-o", "{out}/run", "--epochs", "0"), "Invalid value for '--epochs'"),
    ],
    "export --int8": [
        (("export", "-m", "{model}", "-o", "{out}/exp", "--int8"), "INT8 export needs calibration audio"),
        (("export", "-m", "{model}", "-o", "{out}/exp", "--int8", "--calibration", "{no_audio}"),
         "calibration folder has no audio files"),
        (("export", "-m", "{model}", "-o", "{out}/exp", "--int8", "--calibration", "{nope}"),
         "calibration folder does not exist"),
        (("export", "-m", "{model}", "-o", "{out}/exp", "--int8", "--calibration", "{clips}",
          "--int8-min-agreement", "1.5"), "--int8-min-agreement must be a fraction in [0, 1]"),
        (("export", "-m", "{model}", "-o", "{out}/exp", "--int8", "--calibration", "{with_garbage}"),
         "broken.wav: not a readable audio file"),
        (("export", "-m", "{model}", "-o", "{out}/exp", "--calibration", "{clips}"), "are for INT8 exports"),
    ],
}
CASES = [pytest.param(command, args, fragment, id=f"{command}-{k}")
         for command, rows in MISTAKES.items() for k, (args, fragment) in enumerate(rows)]


@pytest.mark.parametrize("command, template, fragment", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(inputs, tmp_path, monkeypatch, command, template, fragment):
    monkeypatch.delenv("ASTEDGE_MODEL", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    result = astedge(*_args(template, inputs, out))
    assert result.code == 2, (result.code, result.err)
    assert len(result.lines) == 1 and fragment in result.lines[0], result.err
    assert "Traceback" not in result.err and result.out == ""
    assert list(out.iterdir()) == []  # no output, no temp file, no run or export folder


def test_a_file_refused_midway_leaves_no_events_csv(inputs, tmp_path):
    """classify refuses the second file only once the first is done (it is too long): the error is the last line and
    no --events-csv of the unfinished run is written."""
    short = tmp_path / "short.wav"
    short.write_bytes(inputs["stream.wav"].read_bytes())
    sf.write(tmp_path / "long.wav", np.zeros(5 * 16000, np.float32), 16000)
    out = tmp_path / "out"
    out.mkdir()
    result = astedge("classify", short, tmp_path / "long.wav", "-m", inputs["model.safetensors"], "--max-seconds",
                     "4", "--events-csv", out / "e.csv")
    assert result.code == 2 and "long.wav: is 5.0 s long, over the 4 s limit" in result.lines[-1], result.err
    assert "Traceback" not in result.err and list(out.iterdir()) == []
