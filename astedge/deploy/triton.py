"""A Triton Inference Server model repository entry for an export folder (``--triton-repo DIR``).

Layout: ``DIR/<name>/config.pbtxt``, ``DIR/<name>/labels.txt`` and ``DIR/<name>/1/model.plan``
(platform ``tensorrt_plan``, when the folder has an engine) or ``DIR/<name>/1/model.onnx``
(platform ``onnxruntime_onnx``: the FP16 ONNX when the export made one, which ONNX Runtime's CUDA
provider runs in FP16 with FP32 I/O, else the FP32 ONNX). ``max_batch_size`` > 0 makes the batch
implicit, so ``dims`` leave it out: input ``fbank`` ``[frames, mel]``, output ``logits``
``[classes]`` with ``label_filename`` for Triton's classification extension. A plan only loads in
a Triton whose bundled TensorRT built it (the config's header says which one did).

Torch-free: ``astedge build-engine --triton-repo`` writes entries on the device.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from astedge import __version__
from astedge import artefact as art
from astedge.errors import UserError


def model_name(text: str) -> str:
    """A Triton model name (the directory name) from `text`: letters, digits, ``_ . -``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._-")
    if not name:
        raise UserError(f"cannot make a Triton model name from {text!r}")
    return name


def check_destination(repo: str | Path, name: str, force: bool) -> Path:
    """Fail early when ``repo/name`` cannot be written."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UserError("Triton repository path exists and is not a directory", repo)
    if not repo.exists():
        if not repo.parent.is_dir():
            raise UserError("Triton repository's parent directory does not exist", repo.parent)
        return repo / name
    return art.check_destination(repo / name, force)


def model_kind(meta: dict) -> str:
    return "plan" if meta.get("engine") and meta["files"].get("engine") else "onnx"


def config_pbtxt(name: str, meta: dict) -> str:
    """The ``config.pbtxt`` text for an export folder's metadata."""
    profile = meta.get("profile") or {}
    kind = model_kind(meta)
    if kind == "plan":
        batch = meta["engine"]["batch"]
        platform, max_batch, opt_batch = "tensorrt_plan", batch["max"], batch["opt"]
        gpu = meta["engine"]["gpu"]
        origin = (f"# model.plan: TensorRT {meta['engine']['tensorrt']} engine for {gpu['name']} (sm "
                  f"{gpu['compute_capability']}); it loads only in a Triton built on that TensorRT version, on that GPU.\n")
    else:
        platform = "onnxruntime_onnx"
        max_batch, opt_batch = profile.get("max_batch", 8), profile.get("opt_batch", 1)
        origin = f"# model.onnx: {'FP16 compute with FP32 I/O' if meta['files'].get('onnx_fp16') else 'FP32'}.\n"
    frames, mel = meta["input"]["shape"][1:]
    classes = meta["output"]["shape"][1]
    batching = [f"  max_queue_delay_microseconds: {int(profile.get('max_queue_delay_us', 1000))}"]
    if 1 < opt_batch <= max_batch:
        batching.insert(0, f"  preferred_batch_size: [ {opt_batch} ]")
    return (
        f"# Written by astedge {__version__} from {meta.get('source', {}).get('checkpoint', '?')}.\n"
        + origin +
        f"# Input: normalized log-mel [batch, {frames}, {mel}] (astedge features); output: raw logits "
        f"({meta['output'].get('activation', 'sigmoid')} for scores).\n"
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {int(max_batch)}\n"
        "input [\n  {\n"
        f'    name: "{meta["input"]["name"]}"\n    data_type: TYPE_FP32\n    dims: [ {frames}, {mel} ]\n'
        "  }\n]\n"
        "output [\n  {\n"
        f'    name: "{meta["output"]["name"]}"\n    data_type: TYPE_FP32\n    dims: [ {classes} ]\n'
        f'    label_filename: "{art.LABELS_FILE}"\n'
        "  }\n]\n"
        "dynamic_batching {\n" + "\n".join(batching) + "\n}\n"
        "instance_group [\n  {\n"
        f"    count: {int(profile.get('instance_count', 1))}\n    kind: KIND_GPU\n"
        "  }\n]\n"
    )


def write_model(repo: str | Path, name: str, folder: str | Path, force: bool = False) -> Path:
    """Write ``repo/name`` (atomically; an existing entry needs `force`) for the export `folder`."""
    folder = art.artefact_dir(folder)
    meta = art.read_metadata(folder)
    name = model_name(name)
    dest = check_destination(repo, name, force)
    dest.parent.mkdir(exist_ok=True)
    files = meta["files"]
    with art.staged_folder(dest, force) as tmp:
        version = tmp / "1"
        version.mkdir()
        if model_kind(meta) == "plan":
            shutil.copyfile(folder / files["engine"], version / "model.plan")
        else:
            source = folder / (files.get("onnx_fp16") or files["onnx"])
            data = source.with_name(source.name + ".data")
            if data.exists():  # external weights: Triton takes a model.onnx/ directory holding both
                (version / "model.onnx").mkdir()
                shutil.copyfile(source, version / "model.onnx" / "model.onnx")
                shutil.copyfile(data, version / "model.onnx" / data.name)
            else:
                shutil.copyfile(source, version / "model.onnx")
        (tmp / art.LABELS_FILE).write_text("".join(label + "\n" for label in meta["labels"]), encoding="utf-8")
        (tmp / "config.pbtxt").write_text(config_pbtxt(name, meta), encoding="utf-8")
    return dest
