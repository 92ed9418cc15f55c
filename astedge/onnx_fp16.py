"""FP32 ONNX -> FP16 ONNX with FP32 inputs/outputs and chosen ops (LayerNorm) kept in FP32.

A small graph pass on ``onnx`` alone (no torch, no onnxconverter-common): every float32 tensor gets
a *home* precision (FP32 when a kept op or a graph input produces it, FP16 otherwise), float
initializers are stored in the precision their consumers need (a kept op's weights stay exact
FP32), and a ``Cast`` is inserted wherever a consumer needs the other precision. The graph inputs
and outputs keep their FP32 names and types, so callers feed and read float32 exactly as with the
FP32 model.

The result is a *typed* graph, what TensorRT 11 requires (strongly typed networks; the FP16
builder flag is gone) and what ONNX Runtime's CUDA provider runs in FP16. The pass refuses what it
does not handle (subgraphs, dtype attributes it does not know) instead of guessing, and the result
must pass strict shape inference and ``onnx.checker`` before it is returned.
"""

from __future__ import annotations

import numpy as np

#: ONNX ops that stay FP32 by default: LayerNorm's variance overflows FP16 (TensorRT #3692, #2564),
#: and AST's eps (1e-6 / 1e-12) is below FP16's smallest normal.
DEFAULT_FP32_OPS = ("LayerNormalization",)
FP16_MAX = float(np.finfo(np.float16).max)


def float_types(model) -> dict[str, int]:
    """Element type of every tensor of `model` (after shape inference), by name."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def convert_fp16(model, fp32_ops=DEFAULT_FP32_OPS):
    """A new ModelProto computing in FP16 except `fp32_ops`, with FP32 graph inputs and outputs."""
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    fp32_ops = frozenset(fp32_ops)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # a copy, with every type known
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    names = set(types) | {out for node in graph.node for out in node.output}

    def unique(base: str) -> str:
        name, index = base, 1
        while name in names:
            name, index = f"{base}_{index}", index + 1
        names.add(name)
        return name

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise NotImplementedError(f"{node.op_type} node {node.name!r} has a subgraph")
            if node.op_type not in ("Cast", "Constant", "ConstantOfShape") and attr.name in ("to", "dtype") \
                    and attr.i == FLOAT and node.op_type not in fp32_ops:
                raise NotImplementedError(f"{node.op_type} node {node.name!r} creates float32 tensors")
        for out in node.output:
            if out and out not in types:
                raise ValueError(f"shape inference gave no type for {out!r}")

    def needs(node) -> int:
        return FLOAT if node.op_type in fp32_ops else HALF

    # Where each float tensor lives.
    home = {i.name: FLOAT for i in graph.input if is_float(i.name)}
    for node in graph.node:
        for out in node.output:
            if is_float(out):
                home[out] = needs(node)

    # Graph outputs computed in FP16 get an FP32 Cast under their own name.
    tail = []
    for output in graph.output:
        name = output.name
        if home.get(name) == HALF:
            inner = unique(f"{name}__fp16")
            for node in graph.node:
                node.output[:] = [inner if x == name else x for x in node.output]
                node.input[:] = [inner if x == name else x for x in node.input]
            home[inner], types[inner] = HALF, FLOAT
            tail.append(helper.make_node("Cast", [inner], [name], to=FLOAT, name=unique(f"{name}__to_fp32")))

    # Initializers: stored in what their consumers need (both, when both need it).
    initializers = {init.name: init for init in graph.initializer if init.data_type == FLOAT}
    wanted: dict[str, set[int]] = {}
    for node in graph.node:
        for name in node.input:
            if name in initializers:
                wanted.setdefault(name, set()).add(needs(node))
    fp32_copy = {}
    kept = [init for init in graph.initializer if init.name not in initializers]
    for name, init in initializers.items():
        precisions = wanted.get(name, {HALF})
        array = numpy_helper.to_array(init)
        if HALF in precisions:
            if np.abs(array).max(initial=0.0) > FP16_MAX:
                raise ValueError(f"initializer {name!r} exceeds the FP16 range (|x| > {FP16_MAX:g})")
            kept.append(numpy_helper.from_array(array.astype(np.float16), name))
            if FLOAT in precisions:
                fp32_copy[name] = unique(f"{name}__fp32")
                kept.append(numpy_helper.from_array(array, fp32_copy[name]))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)

    nodes, casts = [], {}

    def as_precision(name: str, precision: int) -> str:
        if name in initializers:
            return fp32_copy.get(name, name) if precision == FLOAT else name
        if not is_float(name) or home.get(name, precision) == precision:
            return name
        if (name, precision) not in casts:
            suffix = "fp32" if precision == FLOAT else "fp16"
            cast = unique(f"{name}__{suffix}")
            nodes.append(helper.make_node("Cast", [name], [cast], to=precision, name=unique(f"{name}__to_{suffix}")))
            casts[name, precision] = cast
        return casts[name, precision]

    for node in graph.node:
        precision = needs(node)
        node.input[:] = [as_precision(x, precision) for x in node.input]
        if precision == HALF:
            _retype_attributes(node, FLOAT, HALF, numpy_helper)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes + tail)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _retype_attributes(node, FLOAT: int, HALF: int, numpy_helper) -> None:
    """Make a node that creates float32 values create float16 ones (Cast targets, constants)."""
    from onnx import AttributeProto

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF
        elif attr.type == AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            array = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            values = np.array(attr.f if attr.name == "value_float" else list(attr.floats), np.float16)
            tensor = numpy_helper.from_array(values.reshape(()) if attr.name == "value_float" else values)
            attr.Clear()
            attr.name, attr.type = "value", AttributeProto.TENSOR
            attr.t.CopyFrom(tensor)


def precision_report(model, fp32_ops=DEFAULT_FP32_OPS) -> dict:
    """What runs in which precision: counts of nodes by op and precision, casts, and the I/O types."""
    from onnx import TensorProto

    types = float_types(model)
    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16"}
    by_op: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        kinds = {names.get(types.get(x)) for x in node.output if x} - {None}
        for kind in kinds:
            counts = by_op.setdefault(node.op_type, {})
            counts[kind] = counts.get(kind, 0) + 1
    return {
        "fp32_ops": list(fp32_ops),
        "casts": sum(node.op_type == "Cast" for node in model.graph.node),
        "nodes_by_precision": dict(sorted(by_op.items())),
        "inputs": {i.name: names.get(types[i.name], str(types[i.name])) for i in model.graph.input},
        "outputs": {o.name: names.get(types[o.name], str(types[o.name])) for o in model.graph.output},
    }
