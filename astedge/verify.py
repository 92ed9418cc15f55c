"""The verification gates every exported model and engine passes before it is kept: logit comparisons and limits.

Export checks ONNX against PyTorch and FP16 against FP32, INT8 calibration checks agreement with FP32, and the
engine build checks the engine on the GPU against the logits the export stored; all of them describe a candidate
with :func:`compare` and judge it here. Only numpy: the Jetson's ``build-engine`` imports this without torch.
"""

from __future__ import annotations

import numpy as np

from astedge.errors import UserError


class VerificationError(UserError):
    """An exported model disagrees with its reference beyond tolerance; nothing was written."""


def top_k_sets(logits: np.ndarray, k: int) -> list[set[int]]:
    order = np.argsort(-np.asarray(logits, np.float64), axis=-1, kind="stable")[:, :k]
    return [set(map(int, row)) for row in order]


def compare(reference: np.ndarray, candidate: np.ndarray, classes: int | None = None) -> dict:
    """How far `candidate` outputs ``[N, W]`` are from `reference`: max/mean abs diff over every value, top-1 and
    top-5 agreement of the clip logits (the first `classes` columns; all of them when None).

    Top-1 agreement is the fraction of rows whose arg-max matches; top-5 agreement the mean overlap of
    the two top-5 sets divided by 5 (1.0: the same 5 classes, in any order; ``top5_k`` says how many
    classes were compared when the head has fewer than 5). With a frame head (``W > classes``), the frame
    logits' own max abs diff is ``frames_max_abs_diff``.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    classes = reference.shape[-1] if classes is None else classes
    finite = bool(np.isfinite(candidate).all())
    diff = np.abs(reference - candidate)
    clip_ref, clip_cand = reference[:, :classes], candidate[:, :classes]
    k = min(5, classes)
    overlap = [len(a & b) / k for a, b in zip(top_k_sets(clip_ref, k), top_k_sets(clip_cand, k), strict=True)]
    figures = {
        "count": int(reference.shape[0]),
        "finite": finite,
        "max_abs_diff": float(diff.max()) if finite else float("inf"),
        "mean_abs_diff": float(diff.mean()) if finite else float("inf"),
        "reference_max_abs": float(np.abs(reference).max()),
        "top1_agreement": float(np.mean(clip_ref.argmax(-1) == clip_cand.argmax(-1))),
        "top5_agreement": float(np.mean(overlap)),
        "top5_k": k,
    }
    if reference.shape[-1] > classes:
        figures["frames_max_abs_diff"] = float(diff[:, classes:].max()) if finite else float("inf")
    return figures


#: An FP16 result fails when it has non-finite values or its max abs difference exceeds this fraction
#: of the reference's largest |logit| (at least 1): a gate for broken graphs (overflow, wrong casts),
#: far above the rounding differences FP16 normally shows (about 1e-3 relative).
FP16_RELATIVE_LIMIT = 0.05


def fp16_gate(figures: dict) -> str | None:
    """Why an FP16 comparison fails (None when it passes)."""
    return _relative_gate(figures, FP16_RELATIVE_LIMIT, "non-finite logits (FP16 overflow?)", "")


#: An INT8 engine is checked against the INT8 ONNX on ONNX Runtime (the same Q/DQ scales): TensorRT's INT8 kernels
#: round and fuse differently and run the float parts in FP16, so the limit is twice the FP16 one.
INT8_RELATIVE_LIMIT = 0.10


def int8_engine_gate(figures: dict) -> str | None:
    """Why an INT8 engine's comparison with the INT8 ONNX fails (None when it passes)."""
    return _relative_gate(figures, INT8_RELATIVE_LIMIT, "non-finite logits", " from the INT8 ONNX")


def _relative_gate(figures: dict, fraction: float, non_finite: str, against: str) -> str | None:
    """Fails on non-finite logits or a max abs difference above `fraction` of the reference's largest |logit| (>= 1)."""
    if not figures["finite"]:
        return non_finite
    limit = fraction * max(1.0, figures["reference_max_abs"])
    if figures["max_abs_diff"] > limit:
        return f"max abs logit difference {figures['max_abs_diff']:.3g}{against} exceeds {limit:.3g}"
    return None


def batch_chunks(count: int, max_batch: int, min_batch: int = 1) -> list[slice]:
    """Split `count` rows into batches for verification: one of `min_batch`, then the largest allowed.

    Exercises both a single-row batch and batches > 1 (when the range allows them).
    """
    if count < min_batch:
        raise ValueError(f"{count} rows cannot fill a batch of at least {min_batch}")
    chunks, start = [], 0
    sizes = [min_batch] + [max_batch] * count
    for size in sizes:
        if start >= count:
            break
        size = min(size, count - start)
        if size < min_batch:  # the tail is smaller than the engine allows: overlap the previous rows
            start = count - min_batch
            size = min_batch
        chunks.append(slice(start, start + size))
        start += size
    return chunks
