"""QONNX in and out: import Brevitas-exported quantized MLPs as IRs; export trained apical models.

`import_qonnx(path)` reads a QONNX model (as written by Brevitas
``export_qonnx``) made of Quant, Gemm/MatMul, Add and Relu nodes, that is an
MLP of QuantIdentity/QuantLinear/QuantReLU with power-of-two scales, and maps
it to dense IR layers: the first Quant gives the integer input tensor; each
(Gemm | MatMul [+ Add]) [+ Relu] + Quant chain becomes one layer with integer
weights ``Quant(W) / scale_w``, integer bias ``bias / (scale_in * scale_w)``
and the requant shift ``log2(scale_out / (scale_in * scale_w))``. Because every
scale is a power of two, QONNX's float execution (``x / scale``, round half to
even, clip) equals the IR's integer arithmetic exactly. Any other node, a
non-po2 or per-channel scale, a zero point or a narrow activation range raises
`ApicalError` naming the node (op type and name).

`export_qonnx_run(cfg, run_dir)` writes ``run_dir/model.onnx`` for point and
sparse-modular models. Two-point models cannot be expressed in QONNX: their
output is a 2-D integer lookup ``table[R_q, C_q]`` indexed by two quantized
tensors, and QONNX/ONNX have no op for a table indexed by two integer tensors
(Gather indexes one axis by one tensor; composing ``R_q * 2**bC + C_q`` needs
the integer codes of both Quant outputs, which QONNX only exposes as scaled
floats), so the export raises `ApicalError` saying so (see docs/qonnx.md).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write_bytes, atomic_write_json
from apical.sw.config import Config, ModelKind
from apical.sw.errors import ApicalError
from apical.sw.ir import IR, Layer, Requant, Site, TensorSpec, acc_bits_needed, save_ir, validate_ir

__all__ = ["TWO_POINT_REASON", "export_qonnx_run", "import_qonnx", "import_run"]

TWO_POINT_REASON = (
    "QONNX cannot express a two-point layer: its output is a 2-D modulation table indexed by "
    "two quantized tensors (R_q, C_q), and QONNX has no integer 2-D lookup op"
)

_LINEAR_OPS = ("Gemm", "MatMul")
_SUPPORTED_OPS = ("Quant", "Gemm", "MatMul", "Add", "Relu")


def _nid(node: Any) -> str:
    return f"{node.op_type} node {node.name!r}"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _log2_exact(value: float, what: str) -> int:
    if not value > 0 or not math.isfinite(value):
        raise ApicalError(f"{what}: scale {value} is not a positive power of two")
    m, e = math.frexp(value)
    if m != 0.5:
        raise ApicalError(f"{what}: scale {value} is not a power of two (QONNX import needs po2 scales)")
    return e - 1


class _Graph:
    """The model wrapper plus the few queries the importer makes."""

    def __init__(self, model: Any) -> None:
        self.m = model

    def const(self, name: str) -> np.ndarray | None:
        v = self.m.get_initializer(name)
        return None if v is None else np.asarray(v)

    def consumer(self, tensor: str) -> Any | None:
        cons = self.m.find_consumers(tensor)
        if len(cons) > 1:
            raise ApicalError(
                f"QONNX tensor {tensor!r} feeds {len(cons)} nodes ({', '.join(_nid(c) for c in cons)}): "
                "only chains (MLPs) are supported"
            )
        return cons[0] if cons else None

    def quant_params(self, node: Any, max_bits: int = 16) -> tuple[float, int, bool, bool]:
        """(scale, bits, signed, narrow) of a per-tensor Quant node with zero point 0."""
        if len(node.input) != 4:
            raise ApicalError(f"QONNX {_nid(node)}: expected 4 inputs (x, scale, zeropt, bitwidth)")
        scale, zp, bw = (self.const(n) for n in node.input[1:])
        if scale is None or zp is None or bw is None:
            raise ApicalError(f"QONNX {_nid(node)}: scale, zero point and bit width must be constants")
        if scale.size != 1:
            raise ApicalError(f"QONNX {_nid(node)}: per-channel scales ({scale.size}) are not supported; use per-tensor")
        if np.any(zp != 0):
            raise ApicalError(f"QONNX {_nid(node)}: non-zero zero point is not supported")
        bits = float(bw.reshape(-1)[0])
        if bits != int(bits) or not 2 <= bits <= max_bits:
            raise ApicalError(f"QONNX {_nid(node)}: bit width {bits} must be an integer in [2, {max_bits}]")
        a = _attrs(node)
        mode = str(a.get("rounding_mode", "ROUND")).upper()
        if mode not in ("ROUND", "HALF_EVEN"):
            raise ApicalError(f"QONNX {_nid(node)}: rounding_mode {mode} is not supported (need ROUND)")
        return float(scale.reshape(-1)[0]), int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 0))

    def const_int(self, tensor: str, scale: float, where: str) -> tuple[np.ndarray, int | None]:
        """A constant operand as integers in units of ``scale``, and its Quant bit width if quantized.

        ``tensor`` is an initializer (float values) or the output of a Quant of
        an initializer; either way the value divided by ``scale`` must be integral.
        """
        v = self.const(tensor)
        bits = None
        if v is None:
            prod = self.m.find_producer(tensor)
            if prod is None or prod.op_type != "Quant":
                got = "graph input" if prod is None else _nid(prod)
                raise ApicalError(f"QONNX {where}: operand {tensor!r} must be a constant or Quant(constant), got {got}")
            raw = self.const(prod.input[0])
            if raw is None:
                raise ApicalError(f"QONNX {_nid(prod)}: input must be a constant (weights/bias)")
            qs, bits, signed, narrow = self.quant_params(prod, max_bits=32)  # biases may be 32-bit
            from qonnx.custom_op.general.intquant import int_quant

            v = int_quant(raw.astype(np.float64), np.float64(qs), np.float64(0.0), np.float64(bits), signed, narrow, "ROUND")
        ints = np.asarray(v, dtype=np.float64) / scale
        r = np.round(ints)
        if np.any(np.abs(ints - r) > 1e-9 * np.maximum(1.0, np.abs(r))):
            raise ApicalError(f"QONNX {where}: operand {tensor!r} is not an integer multiple of scale {scale}")
        return r.astype(np.int64), bits


def _load_model(path: Path) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (
        GiveUniqueNodeNames,
        GiveUniqueParameterTensors,
        RemoveStaticGraphInputs,
        RemoveUnusedTensors,
    )
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    if not path.is_file():
        raise ApicalError(f"{path}: QONNX file missing")
    try:
        model = ModelWrapper(str(path))
    except Exception as e:
        raise ApicalError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    for node in model.graph.node:
        if node.op_type in ("Quant", "Trunc", "BipolarQuant"):
            node.domain = "qonnx.custom_op.general"  # what qonnx's cleanup does too
    # qonnx's cleanup_model minus the renaming, so errors name the nodes as the
    # exporter wrote them; names are only given where missing or duplicated.
    steps = [InferShapes(), GiveUniqueParameterTensors(),
             FoldConstants(exclude_op_types=["Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"]),
             FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs()]
    names = [n.name for n in model.graph.node]
    if "" in names or len(set(names)) != len(names):
        steps.append(GiveUniqueNodeNames())
    try:
        for t in steps:
            model = model.transform(t)
    except Exception as e:
        raise ApicalError(f"{path}: QONNX cleanup failed ({type(e).__name__}: {e})") from None
    for node in model.graph.node:
        if node.op_type not in _SUPPORTED_OPS:
            raise ApicalError(f"{path}: unsupported node {_nid(node)} (QONNX import supports {', '.join(_SUPPORTED_OPS)})")
    return model


def _dense_site(weight: np.ndarray, bias: np.ndarray, src: TensorSpec, wbits: int, rq: Requant,
                bits: int, signed: bool, act: str) -> Site:
    """A dense site from an integer weight matrix ``[out, in]`` (zeros not stored)."""
    size, in_size = weight.shape
    cols = weight.T  # [in, out]: fan-out order
    nz = cols != 0
    indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
    rows_i, targets = np.nonzero(nz)
    site = Site(
        sources=(src.name,), in_size=in_size, weight_bits=wbits, indptr=indptr,
        indices=targets.astype(np.int64), data=cols[rows_i, targets].astype(np.int64),
        bias=bias.astype(np.int64), acc_bits=2, requant=rq, bits=bits, signed=signed, activation=act,
    )
    need = acc_bits_needed(site, size, [src])
    return Site(**{**site.__dict__, "acc_bits": need})


def import_qonnx(path: str | Path) -> IR:
    """Map a Brevitas-exported QONNX MLP to a validated IR (see module docstring)."""
    p = Path(path)
    g = _Graph(_load_model(p))
    graph = g.m.graph
    real_inputs = [i for i in graph.input if g.const(i.name) is None]
    if len(real_inputs) != 1 or len(graph.output) != 1:
        raise ApicalError(f"{p}: QONNX import supports one input and one output, got "
                          f"{len(real_inputs)} and {len(graph.output)}")
    out_name = graph.output[0].name

    first = g.consumer(real_inputs[0].name)
    if first is None or first.op_type != "Quant":
        got = "nothing" if first is None else _nid(first)
        raise ApicalError(f"{p}: the input must feed a Quant node (QuantIdentity), got {got}")
    in_scale, in_bits, in_signed, _narrow = g.quant_params(first)
    _log2_exact(in_scale, f"QONNX {_nid(first)}")
    size_in = int(np.prod(g.m.get_tensor_shape(real_inputs[0].name)[1:]))
    cur = TensorSpec("x", size_in, in_bits, in_signed, in_scale)
    tensor = first.output[0]
    layers: list[Layer] = []
    while tensor != out_name:
        node = g.consumer(tensor)
        if node is None:
            raise ApicalError(f"{p}: tensor {tensor!r} leads nowhere before the graph output")
        if node.op_type not in _LINEAR_OPS:
            raise ApicalError(f"{p}: unsupported node {_nid(node)} here (expected Gemm or MatMul after a Quant)")
        layer, tensor, cur = _import_layer(g, node, tensor, cur, len(layers), out_name, p)
        layers.append(layer)
    if not layers:
        raise ApicalError(f"{p}: no Gemm/MatMul layer found")
    # the last layer is the network output: name it as apical's exports do
    last = layers[-1]
    layers[-1] = Layer("out", last.kind, last.size, last.sites, last.out_bits, last.out_signed, last.out_scale)
    ir = IR(inputs=(TensorSpec("x", size_in, in_bits, in_signed, in_scale),), layers=tuple(layers),
            meta={"model_kind": "qonnx", "scaling": "po2", "source": p.name})
    validate_ir(ir)
    return ir


def _import_layer(g: _Graph, node: Any, tensor: str, cur: TensorSpec, index: int, out_name: str,
                  p: Path) -> tuple[Layer, str, TensorSpec]:
    """One (Gemm | MatMul [+ Add]) [+ Relu] [+ Quant] chain starting at ``node``."""
    where = _nid(node)
    a = _attrs(node)
    if node.input[0] != tensor:
        raise ApicalError(f"QONNX {where}: activation must be the first operand")
    if node.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
        raise ApicalError(f"QONNX {where}: transA/alpha/beta other than 0/1/1 are not supported")
    w_scale = _weight_scale(g, node.input[1], where)
    acc_scale = cur.scale * w_scale
    w, wbits = g.const_int(node.input[1], w_scale, where)
    if node.op_type == "MatMul" or not a.get("transB", 0):
        w = w.T  # ONNX MatMul/Gemm B is [in, out]; the IR wants [out, in]
    if w.ndim != 2 or w.shape[1] != cur.size:
        raise ApicalError(f"QONNX {where}: weight shape {w.shape} does not match input size {cur.size}")
    size = w.shape[0]
    bias = np.zeros(size, dtype=np.int64)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias, _ = g.const_int(node.input[2], acc_scale, f"{where} bias")
    tensor = node.output[0]
    nxt = g.consumer(tensor)
    if nxt is not None and nxt.op_type == "Add":
        other = nxt.input[1] if nxt.input[0] == tensor else nxt.input[0]
        add, _ = g.const_int(other, acc_scale, f"{_nid(nxt)} bias")
        bias = bias + np.broadcast_to(add.reshape(-1), (size,))
        tensor = nxt.output[0]
        nxt = g.consumer(tensor)
    bias = np.broadcast_to(np.asarray(bias).reshape(-1), (size,)).astype(np.int64)
    act = "identity"
    if nxt is not None and nxt.op_type == "Relu":
        act, tensor = "relu", nxt.output[0]
        nxt = g.consumer(tensor)
    wbits = wbits or max(2, int(np.abs(w).max()).bit_length() + 1)
    if nxt is not None and nxt.op_type == "Quant":
        o_scale, bits, signed, narrow = g.quant_params(nxt)
        if narrow:
            raise ApicalError(f"QONNX {_nid(nxt)}: narrow-range activations are not supported")
        shift = _log2_exact(o_scale, f"QONNX {_nid(nxt)}") - _log2_exact(acc_scale, f"QONNX {where} input*weight")
        tensor = nxt.output[0]
    elif tensor == out_name and act == "identity":
        # unquantized logits: the accumulator itself is the output (shift 0, full width)
        tmp = _dense_site(w, bias, cur, wbits, Requant(0), 2, True, act)
        o_scale, bits, signed, shift = acc_scale, tmp.acc_bits, True, 0
        if bits > 16:
            raise ApicalError(f"QONNX {where}: unquantized output needs {bits} bits (> 16); add an output QuantIdentity")
    else:
        got = "the graph output" if nxt is None else _nid(nxt)
        raise ApicalError(f"QONNX {where}: must be followed by a Quant (QuantReLU/QuantIdentity), got {got}")
    name = f"fc{index + 1}"
    site = _dense_site(w, bias, cur, wbits, Requant(shift), bits, signed, act)
    layer = Layer(name, "dense", size, {"main": site}, out_bits=bits, out_signed=signed, out_scale=o_scale)
    return layer, tensor, layer.output


def _weight_scale(g: _Graph, tensor: str, where: str) -> float:
    prod = g.m.find_producer(tensor)
    if prod is None or prod.op_type != "Quant":
        raise ApicalError(f"QONNX {where}: weights {tensor!r} are not quantized (need a Quant node)")
    scale, _bits, _signed, _narrow = g.quant_params(prod)
    _log2_exact(scale, f"QONNX {_nid(prod)}")
    return scale


def import_run(onnx_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Import a QONNX file into ``out_dir/ir/`` and write the summary ``out_dir/import.json``."""
    t0 = time.perf_counter()
    src = Path(onnx_path)
    ir = import_qonnx(src)
    out = Path(out_dir)
    save_ir(ir, out / "ir")
    summary = {
        "source": src.name,
        "inputs": [{"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed, "scale": t.scale}
                   for t in ir.inputs],
        "layers": [
            {
                "name": la.name,
                "in_size": la.sites["main"].in_size,
                "size": la.size,
                "weight_bits": la.sites["main"].weight_bits,
                "out_bits": la.out_bits,
                "out_signed": la.out_signed,
                "activation": la.sites["main"].activation,
                "shift": la.sites["main"].requant.shift,
                "synapses": la.sites["main"].nnz,
            }
            for la in ir.layers
        ],
        "synapses": ir.synapses,
        "scaling": "po2",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(out / "import.json", summary)
    return summary


def export_qonnx_run(cfg: Config, run_dir: str | Path) -> Path:
    """Write ``run_dir/model.onnx`` (Brevitas ``export_qonnx``) for point and sparse-modular runs.

    Two-point models raise `ApicalError`: QONNX has no op for their modulation
    table, a 2-D lookup indexed by two quantized tensors (see `TWO_POINT_REASON`).
    """
    from apical.sw.checkpoint import load_model

    rd = Path(run_dir)
    if cfg.model.kind is ModelKind.TWO_POINT:
        raise ApicalError(f"{rd}: export --qonnx: {TWO_POINT_REASON}; use the apical IR (ir/) instead")
    run_cfg, model = load_model(rd)
    if run_cfg.model.kind is ModelKind.TWO_POINT:
        raise ApicalError(f"{rd}: export --qonnx: {TWO_POINT_REASON}; use the apical IR (ir/) instead")
    model.eval()
    import torch
    from brevitas.export import export_qonnx

    from apical.sw.data import load_dataset

    # one real test sample: the trace follows the path real inputs take
    example = (torch.from_numpy(np.array(load_dataset(run_cfg).test.x[:1], dtype=np.float32)),)
    fd, tmp = tempfile.mkstemp(dir=rd, prefix=".model.onnx.", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad():
            # TorchScript exporter: apical's models pass Brevitas quant tensors between
            # layers, which the dynamo exporter (torch.export) cannot trace
            export_qonnx(model, args=example, export_path=tmp, dynamo=False)
        data = Path(tmp).read_bytes()
    except ApicalError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ApicalError(f"{rd}: QONNX export failed ({type(e).__name__}: {first})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return atomic_write_bytes(rd / "model.onnx", data)
