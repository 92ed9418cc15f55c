"""Reading ONNX graphs for INT8: the node groups Q/DQ placement chooses from, the attention's size, and what a
Q/DQ graph quantizes and how it departs from TensorRT's explicit quantization (:func:`qdq_report`).

:mod:`astedge.deploy.quantize` places Q/DQ by these groups and refuses any result the report finds a problem
in; the benchmarks read other quantizers' graphs with the same report. Only onnx and numpy.
"""

from __future__ import annotations

import numpy as np

#: Op types that get Q/DQ on their inputs.
LINEAR_OPS = ("MatMul", "Gemm")
#: Op types that must never read a dequantized tensor (checked on every result).
FLOAT_OPS = ("LayerNormalization", "Softmax", "Conv")
#: Node groups that can be kept float: the patch embedding, the attention MatMuls, the classifier head.
GROUPS = ("patch_embed", "attention", "head")
#: Explicit quantization (QuantizeLinear/DequantizeLinear with per-axis scales) needs at least this opset.
MIN_OPSET = 13


def _constant_names(graph) -> set[str]:
    return {init.name for init in graph.initializer} | {
        out for node in graph.node if node.op_type == "Constant" for out in node.output}


def node_groups(model) -> dict[str, list[str]]:
    """Names of the nodes of each group: patch_embed (Conv), attention (MatMul of two activations), head
    (the Gemm/MatMul that makes a graph output, through at most an Add), weights (the other GEMMs)."""
    graph = model.graph
    constants = _constant_names(graph)
    outputs = {o.name for o in graph.output}
    feeds_output = set(outputs)
    for node in graph.node:  # a MatMul + bias Add head
        if node.op_type == "Add" and set(node.output) & outputs:
            feeds_output.update(node.input)
    groups: dict[str, list[str]] = {"patch_embed": [], "attention": [], "head": [], "weights": []}
    for node in graph.node:
        if node.op_type == "Conv":
            groups["patch_embed"].append(node.name)
        elif node.op_type in LINEAR_OPS:
            if not any(name in constants for name in node.input[:2]):
                groups["attention"].append(node.name)
            elif set(node.output) & feeds_output:
                groups["head"].append(node.name)
            else:
                groups["weights"].append(node.name)
    return groups


def attention_shape(model) -> tuple[int | None, int]:
    """(tokens, attention-score elements per clip summed over every Softmax) from shape inference; (None, 0) if unknown."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # data_prop: Shape -> Concat -> Reshape
    shapes = {vi.name: [d.dim_value or None for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    tokens, elements = None, 0
    for node in inferred.graph.node:
        dims = shapes.get(node.input[0]) if node.op_type == "Softmax" else None
        if dims and all(dims[1:]):
            tokens = tokens or dims[-1]
            elements += int(np.prod(dims[1:]))
    return tokens, elements


def qdq_report(model) -> dict:
    """What a Q/DQ graph quantizes, and every way it departs from what TensorRT's explicit quantization takes.

    Counts of Q and DQ nodes, the op types reading DQ outputs, per-channel weight DQs by consumer and
    axis. ``problems`` lists (one line each) what TensorRT's parser refuses or misreads: a non-INT8 or
    non-zero zero point, a non-positive or non-constant scale, a per-channel activation, a weight DQ on
    another axis than the output channels, an opset below 13. ``float_op_inputs`` lists DQs feeding one
    of :data:`FLOAT_OPS` (legal, but not astedge's placement). Weights may be INT8 initializers behind a DQ
    or float initializers behind a Q/DQ pair. :func:`astedge.deploy.quantize.quantize_int8` requires both lists empty.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def weight_of(name: str):
        """The initializer a DQ input holds: INT8 weights (DQ only) or float weights behind a Q (Q/DQ pair)."""
        if name in inits:
            return inits[name]
        source = producer.get(name)
        if source is not None and source.op_type == "QuantizeLinear" and source.input[0] in inits:
            return inits[source.input[0]]
        return None

    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    problems = [] if opset >= MIN_OPSET else [f"opset {opset} < {MIN_OPSET}"]
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    float_inputs: list[str] = []
    fed: dict[str, int] = {}
    weights: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in counts:
            continue
        counts[node.op_type] += 1
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None or zero.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zero) != 0):
            problems.append(f"{node.name}: zero point is not an INT8 zero")
        if scale is None or not np.all(scale > 0):
            problems.append(f"{node.name}: scale is not a positive constant")
        if node.op_type != "DequantizeLinear":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        for user in consumers.get(node.output[0], []):
            fed[user.op_type] = fed.get(user.op_type, 0) + 1
            if user.op_type in FLOAT_OPS:
                float_inputs.append(f"{node.name}: a dequantized tensor feeds {user.op_type} {user.name}")
        weight = weight_of(node.input[0])
        if scale is not None and scale.size > 1 and weight is None:
            problems.append(f"{node.name}: per-channel scale on an activation")
        if scale is not None and scale.size > 1 and weight is not None:
            rank = len(weight.dims)
            for user in consumers.get(node.output[0], []):
                trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
                want = {"Conv": 0, "MatMul": rank - 1, "Gemm": 0 if trans_b else 1}.get(user.op_type)
                if want is not None and axis % rank != want:
                    problems.append(f"{node.name}: per-channel axis {axis} is not {user.op_type}'s output channels")
                key = f"{user.op_type} axis {axis % rank}"
                weights[key] = weights.get(key, 0) + 1
    return {"opset": opset, **counts, "dq_consumers": dict(sorted(fed.items())),
            "per_channel_weights": dict(sorted(weights.items())), "problems": problems, "float_op_inputs": float_inputs}
