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
    """A new ModelProto computing in FP16 except `fp32_ops`, with FP32 graph inputs and outputs.

    Steps: type every tensor (shape inference), refuse what the pass does not handle, give each float
    tensor its home precision, keep the graph outputs FP32 under their own names, store initializers in
    the precision(s) their consumers need, then insert the casts and check the result.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # a copy, with every type known
    graph = _Graph(model.graph, frozenset(fp32_ops))
    graph.refuse_unsupported()
    graph.assign_homes()
    tail = graph.keep_outputs_fp32()
    graph.store_initializers()
    graph.insert_casts(tail)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


class _Graph:
    """The state of one conversion: tensor types, home precisions, new names and inserted casts."""

    def __init__(self, graph, fp32_ops: frozenset):
        from onnx import TensorProto

        self.graph, self.fp32_ops = graph, fp32_ops
        self.FLOAT, self.HALF = TensorProto.FLOAT, TensorProto.FLOAT16
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)}
        self.types.update({init.name: init.data_type for init in graph.initializer})
        self.names = set(self.types) | {out for node in graph.node for out in node.output}
        self.home: dict[str, int] = {}
        self.initializers = {init.name: init for init in graph.initializer if init.data_type == self.FLOAT}
        self.fp32_copy: dict[str, str] = {}

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.names:
            name, index = f"{base}_{index}", index + 1
        self.names.add(name)
        return name

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == self.FLOAT

    def needs(self, node) -> int:
        return self.FLOAT if node.op_type in self.fp32_ops else self.HALF

    def refuse_unsupported(self) -> None:
        """Subgraphs and ops that create float32 values from attributes are not handled: refuse, never guess."""
        from onnx import AttributeProto

        for node in self.graph.node:
            for attr in node.attribute:
                if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                    raise NotImplementedError(f"{node.op_type} node {node.name!r} has a subgraph")
                if node.op_type not in ("Cast", "Constant", "ConstantOfShape") and attr.name in ("to", "dtype") \
                        and attr.i == self.FLOAT and node.op_type not in self.fp32_ops:
                    raise NotImplementedError(f"{node.op_type} node {node.name!r} creates float32 tensors")
            for out in node.output:
                if out and out not in self.types:
                    raise ValueError(f"shape inference gave no type for {out!r}")

    def assign_homes(self) -> None:
        """Where each float tensor lives: FP32 for graph inputs and kept ops' outputs, FP16 otherwise."""
        self.home = {i.name: self.FLOAT for i in self.graph.input if self.is_float(i.name)}
        for node in self.graph.node:
            for out in node.output:
                if self.is_float(out):
                    self.home[out] = self.needs(node)

    def keep_outputs_fp32(self) -> list:
        """Graph outputs computed in FP16 get an FP32 Cast under their own name; returns those Cast nodes."""
        from onnx import helper

        tail = []
        for output in self.graph.output:
            name = output.name
            if self.home.get(name) == self.HALF:
                inner = self.unique(f"{name}__fp16")
                for node in self.graph.node:
                    node.output[:] = [inner if x == name else x for x in node.output]
                    node.input[:] = [inner if x == name else x for x in node.input]
                self.home[inner], self.types[inner] = self.HALF, self.FLOAT
                tail.append(helper.make_node("Cast", [inner], [name], to=self.FLOAT,
                                             name=self.unique(f"{name}__to_fp32")))
        return tail

    def store_initializers(self) -> None:
        """Float initializers stored in what their consumers need (both, when both need it)."""
        from onnx import numpy_helper

        wanted: dict[str, set[int]] = {}
        for node in self.graph.node:
            for name in node.input:
                if name in self.initializers:
                    wanted.setdefault(name, set()).add(self.needs(node))
        kept = [init for init in self.graph.initializer if init.name not in self.initializers]
        for name, init in self.initializers.items():
            precisions = wanted.get(name, {self.HALF})
            array = numpy_helper.to_array(init)
            if self.HALF in precisions:
                if np.abs(array).max(initial=0.0) > FP16_MAX:
                    raise ValueError(f"initializer {name!r} exceeds the FP16 range (|x| > {FP16_MAX:g})")
                kept.append(numpy_helper.from_array(array.astype(np.float16), name))
                if self.FLOAT in precisions:
                    self.fp32_copy[name] = self.unique(f"{name}__fp32")
                    kept.append(numpy_helper.from_array(array, self.fp32_copy[name]))
            else:
                kept.append(init)
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)

    def insert_casts(self, tail: list) -> None:
        """Feed every node its inputs in the precision it computes in, casting where the home differs."""
        from onnx import helper, numpy_helper

        nodes, casts = [], {}

        def as_precision(name: str, precision: int) -> str:
            if name in self.initializers:
                return self.fp32_copy.get(name, name) if precision == self.FLOAT else name
            if not self.is_float(name) or self.home.get(name, precision) == precision:
                return name
            if (name, precision) not in casts:
                suffix = "fp32" if precision == self.FLOAT else "fp16"
                cast = self.unique(f"{name}__{suffix}")
                nodes.append(helper.make_node("Cast", [name], [cast], to=precision,
                                              name=self.unique(f"{name}__to_{suffix}")))
                casts[name, precision] = cast
            return casts[name, precision]

        for node in self.graph.node:
            precision = self.needs(node)
            node.input[:] = [as_precision(x, precision) for x in node.input]
            if precision == self.HALF:
                _retype_attributes(node, self.FLOAT, self.HALF, numpy_helper)
            nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(nodes + tail)
        del self.graph.value_info[:]


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
