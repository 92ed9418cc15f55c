"""Domain shift on spoken keywords: does a model trained on one synthesizer's voices recognize the words in
another's? And does fine-tuning with the default ``--init`` recipe beat training from scratch on 10 clips a word?

Run: python benchmarks/domain_shift.py --work /work/data/shift [--quick] [--jobs 2]
Writes benchmarks/results/domain-shift-cpu-<date>.{json,md} (--quick: domain-shift-quick-<date>, a plumbing check).

Data (benchmarks/speech_data.py, made once under --work and reused; every split voice-disjoint):

* ``espeak``: ten keywords said by espeak-ng formant voices (train 100 speakers x 2, val 15, test 15; the
  splits hold different variant families);
* ``other``: the same words said by flite and festival voices (their donors shared out between the splits);
* ``digits-espeak``: the ten digits, espeak-ng voices, 10 training clips a word (val, test: unseen voices);
* ``digits-other``: the ten digits said by flite and festival voices (for scoring only).

Experiments, each trained through the CLI (``astedge train DATA --preset speechcommands``, the from-scratch
variant) with its waveform augmentation and with ``--no-augment``; the validation split picks the best epoch:

1. espeak-ng -> flite + festival: in-domain = ``espeak``'s test split (voices never heard), out-of-domain =
   every clip of ``other``.
2. flite + festival -> espeak-ng: in-domain = ``other``'s test split, out-of-domain = every clip of ``espeak``.
3. Transfer: ``digits-espeak`` (100 training clips) from scratch (the default from-scratch variant, and that
   variant with the fine-tuning variant's batch, for a like-for-like comparison) and fine-tuned from the
   augmented espeak-ng keyword model with the default ``--init`` recipe (the fine-tuning variant); scored on
   ``digits-espeak``'s test split (unseen espeak-ng voices) and every clip of ``digits-other``.

Goals (issue #25): out-of-domain >= 75 % with in-domain unseen voices >= 97 % (experiment 1, augmented);
transfer >= 15 points over from scratch on unseen voices.

Engines: espeak-ng, flite and festival with its kal_diphone voice are Debian packages (``apt-get install
espeak-ng flite festival festvox-kallpc16k``); more festival voices make the out-of-domain set broader:
``apt-get install festvox-kdlpc16k festvox-us-slt-hts`` (ked_diphone, cmu_us_slt_arctic_hts; Debian main).
Voices that are not installed are left out (speech_data.py says which). Accuracy figures are valid on a shared
CPU (timings are not: the JSON's seconds are for orientation only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine_header, write_results  # noqa: E402

KEYWORDS = "yes,no,up,down,left,right,on,off,stop,go"
DIGITS = "zero,one,two,three,four,five,six,seven,eight,nine"
# name -> speech_data.make_dataset arguments (the full configuration)
SETS = {
    "espeak": dict(words=KEYWORDS, engines="espeak"),
    "other": dict(words=KEYWORDS, engines="flite,festival"),
    "digits-espeak": dict(words=DIGITS, engines="espeak", clips_per_word=10),
    "digits-other": dict(words=DIGITS, engines="flite,festival", train_speakers=30),
}
QUICK_SETS = {
    "espeak": dict(words="yes,no,up"), "other": dict(words="yes,no,up"),
    "digits-espeak": dict(words="one,two,three", clips_per_word=4), "digits-other": dict(words="one,two,three"),
}
QUICK_SIZES = dict(train_speakers=8, per_speaker=1, val_speakers="3", test_speakers="3")
#: --quick trains one epoch of a one-layer model with two synthesized rooms: it checks the plumbing, not accuracy.
QUICK_TRAIN = ["--epochs", "1", "--set", "depth=1", "--set", "augment.rooms=2"]


def make_sets(work: Path, quick: bool, jobs: int, log) -> dict[str, Path]:
    """The four data sets under `work` (made when missing; a finished one has generation.json)."""
    import speech_data

    folders = {}
    for name, spec in SETS.items():
        folder = work / name
        folders[name] = folder
        if (folder / "generation.json").is_file():
            continue
        args = {**spec, **(QUICK_SETS[name] if quick else {})}
        if quick:
            args.update(QUICK_SIZES)
        log(f"making {name}: {args}")
        summary = speech_data.make_dataset(folder, jobs=jobs, force=folder.exists(), log=log, **args)
        if summary["failed"]:
            raise SystemExit(f"{name}: {summary['failed']} clips failed to synthesize")
    return folders


def train_cli(data: Path, out: Path, *options: str, log=print) -> dict:
    """`astedge train DATA -o OUT --preset speechcommands OPTIONS --json`; a finished run (result.json) is reused."""
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    command = [sys.executable, "-m", "astedge", "train", str(data), "-o", str(out), "--preset", "speechcommands",
               "--json", "--force", *options]
    log("$ " + " ".join(command[2:]))
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}): {done.stderr[-3000:]}")
    notes = [line for line in done.stderr.splitlines() if line.startswith(("recipe ", "warning"))]
    for line in notes:
        log("  " + line)
    return json.loads(done.stdout[done.stdout.index("{"):])


def accuracy(checkpoint: Path, folder: Path, splits: tuple[str, ...]) -> dict:
    """Top-1 accuracy of `checkpoint` on the clips of `folder`'s `splits` (no augmentation: a scoring dataset)."""
    import numpy as np
    import torch

    from astedge.audio.decode import load_audio
    from astedge.data.datasets import read_dataset
    from astedge.measure import metrics
    from astedge.model.checkpoint import load_checkpoint
    from astedge.train.clips import ClipDataset, predict
    from astedge.train.recipes import load_recipe

    ckpt = load_checkpoint(checkpoint)
    data = read_dataset(folder)
    if list(data.labels) != list(ckpt.labels):
        raise SystemExit(f"{folder}: labels {data.labels} are not the model's {ckpt.labels}")
    items = [item for split in splits for item in data.splits.get(split, [])]
    config = ckpt.feature_config
    dataset = ClipDataset(items, len(data.labels), config, load_recipe("demo"), False,
                          [load_audio(i.path, config.sample_rate) for i in items])
    scores, targets = predict(ckpt.build_model(), dataset, 64, torch.device("cpu"), "multiclass")
    return {"accuracy": float(metrics.accuracy(scores, targets)), "clips": len(items),
            "chance": float(np.bincount(targets.argmax(1)).max() / len(items))}


def shift_rows(folders: dict[str, Path], runs: Path, extra: list[str], log) -> list[dict]:
    """Experiments 1 and 2: each direction with and without waveform augmentation."""
    rows = []
    for source, target, name in (("espeak", "other", "espeak-ng -> flite + festival"),
                                 ("other", "espeak", "flite + festival -> espeak-ng")):
        for augmented in (True, False):
            out = runs / f"{source}-{'aug' if augmented else 'noaug'}"
            summary = train_cli(folders[source], out, *extra, *([] if augmented else ["--no-augment"]), log=log)
            best = Path(summary["best"])
            row = {"direction": name, "train": source, "augmentation": augmented, "run": str(out),
                   "val": summary["best_value"], "best_epoch": summary["best_epoch"],
                   "in_domain": accuracy(best, folders[source], ("test",)),
                   "out_of_domain": accuracy(best, folders[target], ("train", "val", "test")),
                   "seconds_per_epoch": summary.get("seconds_per_epoch")}
            rows.append(row)
            log(f"{name}, augmentation {'on' if augmented else 'off'}: in-domain "
                f"{row['in_domain']['accuracy']:.3f}, out-of-domain {row['out_of_domain']['accuracy']:.3f}")
    return rows


def transfer_rows(folders: dict[str, Path], runs: Path, source: Path, extra: list[str], log) -> list[dict]:
    """Experiment 3: 10 clips a word of new words, from scratch vs the default --init recipe."""
    recipe = json.loads((source.parent / "recipe.json").read_text())
    tuned_dir = runs / "digits-init"
    configs = [("from scratch (default from-scratch variant)", runs / "digits-scratch", []),
               ("--init the keyword model (default fine-tuning variant)", tuned_dir, ["--init", str(source)])]
    rows = []
    for name, out, options in configs:
        summary = train_cli(folders["digits-espeak"], out, *extra, *options, log=log)
        rows.append(_transfer_row(name, out, summary, folders))
        if out == tuned_dir:  # the same data at the fine-tuning variant's batch, from scratch: like for like
            batch = json.loads((out / "recipe.json").read_text())["batch_size"]
            like = runs / "digits-scratch-batch"
            summary = train_cli(folders["digits-espeak"], like, *extra, "--set", f"batch_size={batch}", log=log)
            rows.append(_transfer_row(f"from scratch at the fine-tuning batch ({batch})", like, summary, folders))
    for row in rows:
        row["source_model"] = {"run": str(source.parent), "variant": recipe.get("variant")}
    return rows


def _transfer_row(name: str, out: Path, summary: dict, folders: dict[str, Path]) -> dict:
    best, recipe = Path(summary["best"]), json.loads((out / "recipe.json").read_text())
    return {"run": name, "folder": str(out), "variant": recipe["variant"], "batch_size": recipe["batch_size"],
            "lr": recipe["lr"], "warmup_steps": recipe["warmup_steps"], "augmentation": recipe["augment"]["p"] > 0,
            "val": summary["best_value"], "unseen_voices": accuracy(best, folders["digits-espeak"], ("test",)),
            "other_synthesizers": accuracy(best, folders["digits-other"], ("train", "val", "test"))}


def markdown(payload: dict) -> str:
    m, shift, transfer = payload["machine"], payload["shift"], payload["transfer"]
    pct = lambda r: f"{100 * r['accuracy']:.1f} % ({r['clips']})"  # noqa: E731
    lines = [f"# Domain shift on synthesized keywords — {m['cpu']}, {m['cores']} cores, {m['date'][:10]}", "",
             f"Configuration: {payload['configuration']}. Data made by benchmarks/speech_data.py under "
             f"`{payload['work']}` (voices per set in each folder's generation.json); training through "
             "`astedge train --preset speechcommands` (the from-scratch variant), best epoch by validation "
             "accuracy; accuracy in % (clips).", "",
             "| direction | waveform augmentation | val (unseen voices, selects the epoch) | in-domain unseen voices "
             "(test) | out-of-domain voices (every clip) |", "|---|---|---|---|---|"]
    lines += [f"| {r['direction']} | {'on' if r['augmentation'] else 'off'} | {100 * r['val']:.1f} % | "
              f"{pct(r['in_domain'])} | {pct(r['out_of_domain'])} |" for r in shift]
    lines += ["", "Transfer: the ten digits, 10 training clips a word (espeak-ng voices); the keyword model is the "
              "augmented espeak-ng run above.", "",
              "| run | variant | batch | lr | warm-up steps | augmentation | unseen espeak-ng voices (test) | "
              "other synthesizers (every clip) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['variant']} | {r['batch_size']} | {r['lr']:g} | {r['warmup_steps']} | "
              f"{'on' if r['augmentation'] else 'off'} | {pct(r['unseen_voices'])} | {pct(r['other_synthesizers'])} |"
              for r in transfer]
    lines += ["", "Goals (issue #25): " + "; ".join(f"{k}: {'met' if v else 'NOT met'}"
                                                     for k, v in payload["goals"].items()), ""]
    return "\n".join(lines)


def goals(shift: list[dict], transfer: list[dict]) -> dict:
    main = next(r for r in shift if r["train"] == "espeak" and r["augmentation"])
    scratch = next(r for r in transfer if r["variant"] == "scratch")
    tuned = next(r for r in transfer if r["variant"] == "finetune")
    gain = tuned["unseen_voices"]["accuracy"] - scratch["unseen_voices"]["accuracy"]
    return {"out-of-domain >= 75 %": main["out_of_domain"]["accuracy"] >= 0.75,
            "in-domain unseen voices >= 97 %": main["in_domain"]["accuracy"] >= 0.97,
            f"transfer beats from scratch by >= 15 points (got {100 * gain:+.1f})": gain >= 0.15}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data sets and the runs (reused)")
    parser.add_argument("--quick", action="store_true", help="tiny data, one epoch of a one-layer model: plumbing")
    parser.add_argument("--jobs", type=int, default=2, help="synthesis processes")
    args = parser.parse_args()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    folders = make_sets(args.work / "data", args.quick, args.jobs, log)
    runs, extra = args.work / "runs", QUICK_TRAIN if args.quick else []
    shift = shift_rows(folders, runs, extra, log)
    source = Path(next(r["run"] for r in shift if r["train"] == "espeak" and r["augmentation"])) / "best.safetensors"
    transfer = transfer_rows(folders, runs, source, extra, log)
    payload = {"benchmark": "domain-shift", "machine": machine_header(("audiomentations", "pyroomacoustics")),
               "configuration": "quick (plumbing only: 3 words, 8 training speakers, 1 epoch, 1 layer)" if args.quick
               else "full (10 words, 100 training speakers x 2, the recipe's epochs and model)",
               "work": str(args.work), "shift": shift, "transfer": transfer,
               "sets": {n: json.loads((f / "generation.json").read_text()).get("summary") for n, f in folders.items()}}
    payload["goals"] = goals(shift, transfer)
    write_results("domain-shift-quick" if args.quick else "domain-shift-cpu", payload, markdown(payload))


if __name__ == "__main__":
    main()
