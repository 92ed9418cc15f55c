"""The precisions an artefact comes in, in one table: the ONNX files each writes and runs, and how TensorRT builds it.

Every door that takes a precision (``astedge export --precision``, ``build-engine --precision``, the runtime's
``--precision``, a device profile's ``[engine] precision``) checks it here, with one message. File fields are keys
of ``astedge.json``'s ``files`` (their names are in :mod:`astedge.artefact`). Only the standard library: deploy and
the Jetson's runtime import this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from astedge.errors import UserError


@dataclass(frozen=True)
class Precision:
    """How one precision is exported, run and built into a TensorRT engine."""

    name: str
    #: The ONNX files an export of this precision writes, in order (each one verified before it is kept).
    exports: tuple[str, ...]
    #: The file ONNX Runtime runs for this precision.
    onnx: str
    #: The file a weakly typed TensorRT build parses (TensorRT 10 only), with these builder flags.
    weak_onnx: str
    weak_flags: tuple[str, ...]
    #: The file a strongly typed build prefers: its casts say what runs in FP16 and keep LayerNorm FP32 (None: the
    #: weak file already is the typed graph).
    typed_onnx: str | None


#: INT8 is explicit quantization: the Q/DQ nodes say where INT8 runs and nothing is calibrated on the device;
#: strongly typed INT8 (the only kind on TensorRT 11, which has no INT8/FP16 builder flags) parses
#: model.int8.fp16.onnx, whose float parts are FP16, or else model.int8.onnx with its float parts in FP32. An INT8
#: export writes the FP16 graph too (the FP16 pass makes the INT8 graph's FP16 twin).
PRECISION_TABLE: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", exports=("onnx",), onnx="onnx", weak_onnx="onnx", weak_flags=(), typed_onnx=None),
    Precision("fp16", exports=("onnx", "onnx_fp16"), onnx="onnx_fp16", weak_onnx="onnx", weak_flags=("FP16",),
              typed_onnx="onnx_fp16"),
    Precision("int8", exports=("onnx", "onnx_fp16", "onnx_int8", "onnx_int8_fp16"), onnx="onnx_int8",
              weak_onnx="onnx_int8", weak_flags=("INT8", "FP16"), typed_onnx="onnx_int8_fp16"),
)}
#: The precisions an artefact's models and engines come in.
PRECISIONS = tuple(PRECISION_TABLE)
#: What the runtime may be asked for: "auto" (the backend's best for the export), or one of :data:`PRECISIONS`.
AUTO = "auto"
RUNTIME_PRECISIONS = (AUTO, *PRECISIONS)


def precision_problem(name: str, *, auto: bool = False) -> str | None:
    """Why `name` is not a precision (None when it is); `auto` admits "auto" (the runtime's choice)."""
    choices = RUNTIME_PRECISIONS if auto else PRECISIONS
    return None if name in choices else f"precision must be one of {', '.join(choices)}, got {name!r}"


def check_precision(name: str, *, auto: bool = False) -> str:
    """`name`, or a :class:`UserError` when it is not one of :data:`PRECISIONS` (or "auto", with `auto`)."""
    problem = precision_problem(name, auto=auto)
    if problem:
        raise UserError(problem)
    return name


def precision_spec(name: str) -> Precision:
    """The table's row for `name` (checked)."""
    return PRECISION_TABLE[check_precision(name)]


def requested_precision(precision: str | None = None, *, fp16: bool | None = None, int8: bool = False) -> str | None:
    """The precision an export was asked for: `precision`, or its aliases (``--fp16`` / ``--no-fp16``, ``--int8``).

    ``--fp16`` says the FP16 ONNX is written (true of fp16 and int8), ``--no-fp16`` that it is not (fp32), ``--int8``
    is int8; a combination naming different precisions is a one-line :class:`UserError`. None: nothing was asked
    (the device profile's precision applies).
    """
    if precision is None and not int8 and fp16 is None:
        return None
    spec = precision_spec(precision or ("int8" if int8 else "fp16" if fp16 else "fp32"))
    if (int8 and spec.name != "int8") or (fp16 is not None and fp16 != ("onnx_fp16" in spec.exports)):
        given = ([f"--precision {precision}"] if precision else []) + (["--int8"] if int8 else []) + \
            ([] if fp16 is None else ["--fp16" if fp16 else "--no-fp16"])
        raise UserError(f"conflicting precision options {' '.join(given)}: pass one of --precision fp32|fp16|int8 "
                        "(--no-fp16, --fp16 and --int8 are its aliases; an INT8 export writes the FP16 ONNX too)")
    return spec.name
