"""QONNX graph normalisation before import, and the check that lists every problem at once.

`normalise(path)` loads a QONNX model and rewrites it with qonnx's own
transformations into the small op set the importer walks: shape inference and
constant folding (Quant/BipolarQuant kept: they carry the bit widths),
``GemmToMatMul`` (a Gemm becomes MatMul + Mul(alpha) + Add(bias)),
``BatchNormToAffine`` (Mul + Add), ``ConvertSubToAdd``, ``ConvertDivToMul``,
``FoldTransposeIntoQuantInit`` (weights transposed at the source),
``RemoveIdentityOps`` (exactly: Identity, Dropout, Add 0, Mul 1) and
``SortCommutativeInputsInitializerLast``. Nodes keep the exporter's names;
nodes a transformation created get ``<op>_<n>``.

`problems(model)` returns one line per node the importer cannot map (node,
op type, why), so a refused model is refused once with all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.errors import ApicalError

__all__ = ["SUPPORTED_OPS", "attrs", "const", "nid", "normalise", "problems", "refuse"]

QUANT_OPS = ("Quant", "BipolarQuant")
SUPPORTED_OPS = ("Quant", "BipolarQuant", "MatMul", "Add", "Mul", "Relu", "Reshape", "Flatten")
MAX_BITS = 16  # activations and weights; biases may be up to 32 bits
_WHY = {
    "Conv": "convolutions are not supported (dense layers only)",
    "Sigmoid": "only relu and identity activations map to the array",
    "Tanh": "only relu and identity activations map to the array",
    "MaxPool": "pooling is not supported (dense layers only)",
    "Softmax": "softmax is not supported: argmax of the logits is the class",
    "Trunc": "Trunc (average pooling) is not supported",
}


def nid(node: Any) -> str:
    return f"{node.op_type} node {node.name!r}"


def attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def const(model: Any, name: str) -> np.ndarray | None:
    v = model.get_initializer(name)
    return None if v is None else np.asarray(v)


def refuse(path: Path, found: list[str]) -> ApicalError:
    """One error for every problem: a header line, then one line per problem."""
    if len(found) == 1:
        return ApicalError(f"{path}: QONNX import refused: {found[0]}")
    lines = "\n".join(f"  - {p}" for p in found)
    return ApicalError(f"{path}: QONNX import refused, {len(found)} problems:\n{lines}")


def normalise(path: Path) -> Any:
    """The model at ``path`` rewritten by qonnx's transformations (see module docstring)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.general import (
        ConvertDivToMul,
        ConvertSubToAdd,
        GiveUniqueParameterTensors,
        RemoveStaticGraphInputs,
        RemoveUnusedTensors,
        SortCommutativeInputsInitializerLast,
    )
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit
    from qonnx.transformation.remove import RemoveIdentityOps

    if not path.is_file():
        raise ApicalError(f"{path}: QONNX file missing")
    try:
        model = ModelWrapper(str(path))
    except Exception as e:
        raise ApicalError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    for node in model.graph.node:
        if node.op_type in ("Quant", "Trunc", "BipolarQuant"):
            node.domain = "qonnx.custom_op.general"  # what qonnx's cleanup does too
    for node in model.graph.node:
        if node.op_type == "Gemm" and (len(node.input) < 3 or not node.input[2]):
            # GemmToMatMul needs input C; a zero C is removed again by RemoveIdentityOps
            zero = model.make_new_valueinfo_name()
            model.set_initializer(zero, np.zeros(1, dtype=np.float32))
            del node.input[2:]
            node.input.append(zero)
    keep = ["Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"]
    steps = [InferShapes(), GiveUniqueParameterTensors(), FoldConstants(exclude_op_types=keep),
             GemmToMatMul(), BatchNormToAffine(), ConvertSubToAdd(), ConvertDivToMul(),
             FoldTransposeIntoQuantInit(), RemoveIdentityOps(atol=0.0),
             FoldConstants(exclude_op_types=keep), SortCommutativeInputsInitializerLast(),
             RemoveUnusedTensors(), RemoveStaticGraphInputs(), InferShapes()]
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GemmToMatMul warns on every opset but 9
            for t in steps:
                model = model.transform(t)
    except Exception as e:
        raise ApicalError(f"{path}: QONNX normalisation failed ({type(e).__name__}: {e})") from None
    seen: set[str] = set()
    for k, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{k}"
        seen.add(node.name)
    return model


def _is_const(model: Any, tensor: str) -> bool:
    """A constant, or a Quant of a constant (a quantized bias)."""
    if const(model, tensor) is not None:
        return True
    prod = model.find_producer(tensor)
    return prod is not None and prod.op_type == "Quant" and const(model, prod.input[0]) is not None


def _quant_problem(model: Any, node: Any) -> str | None:
    if node.op_type == "BipolarQuant":
        if len(node.input) != 2 or const(model, node.input[1]) is None:
            return f"{nid(node)}: the scale must be a constant"
        if const(model, node.input[1]).size != 1:
            return f"{nid(node)}: per-channel bipolar scales are not supported"
        return None
    if len(node.input) != 4:
        return f"{nid(node)}: expected 4 inputs (x, scale, zeropt, bitwidth)"
    scale, zp, bw = (const(model, n) for n in node.input[1:])
    if scale is None or zp is None or bw is None:
        return f"{nid(node)}: scale, zero point and bit width must be constants"
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        return f"{nid(node)}: scales must be finite and positive"
    if np.any(zp != 0):
        return f"{nid(node)}: non-zero zero point (asymmetric quantizer) is not supported; use a symmetric one"
    flat = bw.reshape(-1)
    # Checked in this order so a NaN, an infinity or an empty array is a reason, never a crash.
    if flat.size != 1 or not np.isfinite(flat[0]) or float(flat[0]) != int(flat[0]) or not 2 <= flat[0] <= 32:
        return f"{nid(node)}: bit width {flat[:4].tolist()} must be one integer in [2, 32]"
    mode = str(attrs(node).get("rounding_mode", "ROUND")).upper()
    if mode not in ("ROUND", "HALF_EVEN"):
        return f"{nid(node)}: rounding_mode {mode} is not supported (need ROUND)"
    return None


def problems(model: Any) -> list[str]:
    """One line per node that cannot be imported: its op type, name and why."""
    found: list[str] = []
    g = model.graph
    real_inputs = [i for i in g.input if const(model, i.name) is None]
    if len(real_inputs) != 1 or len(g.output) != 1:
        found.append(f"graph: one input and one output are supported, got {len(real_inputs)} and {len(g.output)}")
    for node in g.node:
        op = node.op_type
        if op not in SUPPORTED_OPS:
            why = _WHY.get(op, f"op not supported (the importer maps {', '.join(SUPPORTED_OPS)})")
            found.append(f"{nid(node)}: {why}")
            continue
        dyn = [t for t in node.input if t and not _is_const(model, t)]
        if op in QUANT_OPS:
            p = _quant_problem(model, node)
            if p:
                found.append(p)
        elif op in ("Add", "Mul"):
            if len(dyn) != 1:
                found.append(f"{nid(node)}: needs one constant operand (elementwise ops on two activations, "
                             "as in residual branches, are not supported)")
        elif op == "MatMul":
            prod = model.find_producer(node.input[1])
            if prod is None or prod.op_type not in QUANT_OPS or const(model, prod.input[0]) is None:
                found.append(f"{nid(node)}: weights must be Quant/BipolarQuant of a constant (QuantLinear)")
            shape = model.get_tensor_shape(node.input[1])
            if shape is not None and len(shape) != 2:
                found.append(f"{nid(node)}: weights of shape {shape} (only 2-D dense weights)")
        elif op in ("Reshape", "Flatten"):
            ishape = model.get_tensor_shape(node.input[0]) or []
            oshape = model.get_tensor_shape(node.output[0]) or []
            if len(oshape) != 2 or (ishape and ishape[0] != oshape[0]):
                found.append(f"{nid(node)}: only a flatten to [batch, features] is supported, got {oshape}")
        for t in node.output:
            cons = model.find_consumers(t)
            if len(cons) > 1:
                found.append(f"{nid(node)}: its output feeds {len(cons)} nodes "
                             f"({', '.join(nid(c) for c in cons)}); only chains (MLPs) are supported")
    return found
