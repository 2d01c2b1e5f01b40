"""QONNX in and out: import quantized MLPs (Brevitas, FINN) as IRs; export trained apical models.

`import_qonnx(path)` normalises the graph with qonnx's transformations
(`apical.sw.qonnx_graph`), refuses it once with every unsupported node listed,
or walks it as a chain: the input (after any Reshape/Flatten and scalar
Mul/Add, which become part of the input quantizer) feeds a Quant or
BipolarQuant that gives the integer input codes; each MatMul with quantized
weights, then any Add (bias) / Mul (scale, folded BatchNorm) / Relu, then a
Quant, a BipolarQuant or the graph output, becomes one dense IR layer.

Every activation is tracked as ``real = scale * code + offset`` (a bipolar
tensor is the 1-bit code ``b`` with value ``2b - 1``), so a layer's real
pre-activation is ``A[j] * acc[j] + C[j]`` with ``acc`` the integer
accumulator. The requantisation maps ``(A, C)`` onto the IR exactly where it
can and as a fixed-point multiply otherwise:

* every ``A[j] / scale_out`` the same power of two, ``C / A`` integral
  (po2 per-tensor scales, integer biases): a shift and an integer bias, exact;
* the same non-po2 ratio (float per-tensor scales): one multiplier of
  `MULT_BITS` bits and a shift;
* otherwise (per-channel scales, folded BatchNorm, float biases): per-neuron
  multipliers and offsets;
* a BipolarQuant output: an integer threshold per neuron (exact), found by
  evaluating the float32 chain the executor runs;
* an unquantized output (logits, FINN's TensorNorm): the accumulator itself on
  a grid fine enough to be exact when it can be, with the common offset kept
  in ``meta["output_offset"]``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write_bytes, atomic_write_json
from apical.sw.config import Config, ModelKind
from apical.sw.errors import ApicalError
from apical.sw.ir import IR, Layer, Requant, Site, TensorSpec, acc_bits_needed, save_ir, validate_ir
from apical.sw.qonnx_graph import QUANT_OPS, attrs, const, nid, normalise, problems, refuse

__all__ = ["MULT_BITS", "TWO_POINT_REASON", "export_qonnx_run", "import_qonnx", "import_run", "quantize_input"]

TWO_POINT_REASON = (
    "QONNX cannot express a two-point layer: its output is a 2-D modulation table indexed by "
    "two quantized tensors (R_q, C_q), and QONNX has no integer 2-D lookup op"
)

# Multipliers in [2**16, 2**17): the widest unsigned value the DSP48E2's 18-bit
# signed B port takes, so the requantisation multiply stays one DSP.
MULT_BITS = 17
_MAX_OUT_BITS = 16


@dataclass(frozen=True)
class _Act:
    """An activation tensor: IR tensor spec and ``real = scale * code + offset``."""

    spec: TensorSpec
    scale: float
    offset: float


def _integral(v: np.ndarray) -> bool:
    r = np.round(v)
    return bool(np.all(np.abs(v - r) <= 1e-6 * np.maximum(1.0, np.abs(r))))


def _fixed(ratio: float) -> tuple[int, int]:
    """(multiplier, shift) with ``multiplier / 2**shift ~ ratio``, multiplier < 2**MULT_BITS."""
    e = math.frexp(ratio)[1]
    sh = MULT_BITS - e
    m = round(ratio * 2.0**sh)
    if m >= 1 << MULT_BITS:
        m, sh = m >> 1, sh - 1
    return max(1, m), sh


def _quant(model: Any, node: Any) -> tuple[np.ndarray, int, bool, bool]:
    """(scale array, bits, signed, narrow) of a Quant node; bipolar: (scale, 1, True, False)."""
    if node.op_type == "BipolarQuant":
        return np.asarray(const(model, node.input[1]), dtype=np.float64), 1, True, False
    a = attrs(node)
    bits = int(float(const(model, node.input[3]).reshape(-1)[0]))
    return (np.asarray(const(model, node.input[1]), dtype=np.float64), bits, bool(a.get("signed", 1)),
            bool(a.get("narrow", 0)))


def _dequant_const(model: Any, tensor: str, where: str) -> tuple[np.ndarray, bool]:
    """A constant operand's float value (a Quant of a constant evaluated as qonnx does); quantized?"""
    v = const(model, tensor)
    if v is not None:
        return np.asarray(v, dtype=np.float64), False
    prod = model.find_producer(tensor)
    if prod is None or prod.op_type != "Quant" or const(model, prod.input[0]) is None:
        raise ApicalError(f"QONNX {where}: operand {tensor!r} must be a constant or Quant(constant)")
    from qonnx.custom_op.general.intquant import int_quant

    scale, bits, signed, narrow = _quant(model, prod)
    val = int_quant(const(model, prod.input[0]).astype(np.float32), scale.astype(np.float32), np.float32(0.0),
                np.float32(bits), signed, narrow, "ROUND")
    return np.asarray(val, dtype=np.float64), True


def _weights(model: Any, node: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer weights ``[in, out]``, per-output scale ``[out]`` and bit width of a MatMul's B."""
    prod = model.find_producer(node.input[1])
    raw = np.asarray(const(model, prod.input[0]), dtype=np.float64)
    scale, bits, signed, narrow = _quant(model, prod)
    where = nid(prod)
    if raw.ndim != 2:
        raise ApicalError(f"QONNX {where}: weights of shape {raw.shape} (only 2-D dense weights)")
    s = np.broadcast_to(scale, raw.shape) if scale.size > 1 else np.full(raw.shape, float(scale.reshape(-1)[0]))
    if not np.all(s == s[:1, :]):
        raise ApicalError(f"QONNX {where}: the weight scale varies along the input axis (per-input-channel "
                          "scales cannot be factored out of the accumulator)")
    if prod.op_type == "BipolarQuant":
        codes = np.where(raw >= 0, 1, -1).astype(np.int64)
        return codes, s[0].copy(), 2
    if not signed:
        raise ApicalError(f"QONNX {where}: unsigned weights are not supported")
    lo = -(2 ** (bits - 1)) + int(narrow)
    hi = 2 ** (bits - 1) - 1
    codes = np.clip(np.round(raw / s), lo, hi)  # what Quant computes, in integer units
    return codes.astype(np.int64), s[0].copy(), bits


def _bits_for(lo: int, hi: int) -> int:
    return max(2, max(abs(lo), abs(hi)).bit_length() + 1)


class _Importer:
    def __init__(self, model: Any, path: Path) -> None:
        self.m, self.p = model, path
        self.notes: list[str] = []

    def consumer(self, tensor: str) -> Any | None:
        cons = self.m.find_consumers(tensor)
        return cons[0] if cons else None

    def scalar(self, node: Any) -> float:
        c = const(self.m, node.input[1])
        if c is None or c.size != 1:
            raise ApicalError(f"QONNX {nid(node)}: only a scalar constant is supported here "
                              "(per-element scaling of the input or between layers)")
        return float(c.reshape(-1)[0])

    def run(self) -> IR:
        g = self.m.graph
        inp = next(i for i in g.input if const(self.m, i.name) is None)
        out_name = g.output[0].name
        shape = self.m.get_tensor_shape(inp.name)
        size_in = int(np.prod(shape[1:]))
        pre: list[list[Any]] = []
        t, node = inp.name, self.consumer(inp.name)
        while node is not None and node.op_type in ("Reshape", "Flatten", "Mul", "Add"):
            if node.op_type in ("Mul", "Add"):
                pre.append([node.op_type.lower(), self.scalar(node)])
            t = node.output[0]
            node = self.consumer(t)
        if node is None or node.op_type not in QUANT_OPS:
            got = "the graph output" if node is None else nid(node)
            raise ApicalError(f"{self.p}: the input must reach a Quant or BipolarQuant (QuantIdentity), got {got}")
        scale, bits, signed, narrow = _quant(self.m, node)
        if scale.size != 1:
            raise ApicalError(f"QONNX {nid(node)}: per-channel input scales are not supported")
        s_in = float(scale.reshape(-1)[0])
        bipolar = node.op_type == "BipolarQuant"
        if not bipolar and bits > _MAX_OUT_BITS:
            raise ApicalError(f"QONNX {nid(node)}: input bit width {bits} > {_MAX_OUT_BITS}")
        spec_in = TensorSpec("x", size_in, 1 if bipolar else bits, False if bipolar else signed,
                             2 * s_in if bipolar else s_in)
        self.input_quant = {"ops": pre, "scale": s_in, "bits": bits, "signed": signed, "narrow": narrow,
                            "bipolar": bipolar}
        act = _Act(spec_in, 2 * s_in if bipolar else s_in, -s_in if bipolar else 0.0)
        t = node.output[0]
        layers: list[Layer] = []
        kinds: list[str] = []
        while t != out_name:
            node = self.consumer(t)
            if node is None:
                raise ApicalError(f"{self.p}: tensor {t!r} leads nowhere before the graph output")
            if node.op_type in ("Reshape", "Flatten"):
                t = node.output[0]
            elif node.op_type == "Mul":
                c = self.scalar(node)
                act = _Act(act.spec, act.scale * c, act.offset * c)
                t = node.output[0]
            elif node.op_type == "Add":
                act = _Act(act.spec, act.scale, act.offset + self.scalar(node))
                t = node.output[0]
            elif node.op_type == "MatMul":
                layer, t, act, kind = self.layer(node, act, len(layers), out_name)
                layers.append(layer)
                kinds.append(kind)
            else:
                raise ApicalError(f"{self.p}: {nid(node)} here is not supported (expected MatMul after a Quant)")
        if not layers:
            raise ApicalError(f"{self.p}: no MatMul/Gemm layer found")
        if act.scale <= 0:
            raise ApicalError(f"{self.p}: the output is scaled by {act.scale} (must be positive)")
        last = layers[-1]
        layers[-1] = Layer("out", last.kind, last.size, last.sites, last.out_bits, last.out_signed, act.scale)
        scaling = "po2" if all(k == "shift" for k in kinds) else "float"
        meta = {"model_kind": "qonnx", "scaling": scaling, "source": self.p.name, "requant": kinds,
                "input_quant": self.input_quant, "output_offset": float(act.offset)}
        ir = IR(inputs=(spec_in,), layers=tuple(layers), meta=meta)
        validate_ir(ir)
        return ir

    def layer(self, node: Any, act: _Act, index: int, out_name: str) -> tuple[Layer, str, _Act, str]:
        """One MatMul [Add | Mul]* [Relu] (Quant | BipolarQuant | graph output) chain."""
        where = nid(node)
        w, s_w, wq_bits = _weights(self.m, node)
        if w.shape[0] != act.spec.size:
            raise ApicalError(f"QONNX {where}: weight shape {w.shape} does not match input size {act.spec.size}")
        size = w.shape[1]
        a_vec = s_w * act.scale
        c_vec = s_w * act.offset * w.sum(axis=0)
        chain: list[tuple[str, np.ndarray]] = []  # the float ops after the MatMul, for float32 replay
        t = node.output[0]
        nxt = self.consumer(t)
        float_bias = False
        while nxt is not None and nxt.op_type in ("Add", "Mul", "Reshape", "Flatten"):
            if nxt.op_type in ("Add", "Mul"):
                val, quantized = _dequant_const(self.m, nxt.input[1], nid(nxt))
                if val.size not in (1, size):
                    raise ApicalError(f"QONNX {nid(nxt)}: constant of {val.size} values for {size} neurons")
                vec = np.broadcast_to(val.reshape(-1), (size,)).astype(np.float64)
                if nxt.op_type == "Add":
                    c_vec = c_vec + vec
                    # a bias: an Add straight after the MatMul (BatchNorm's Add follows its Mul)
                    float_bias |= not quantized and val.size == size and not chain
                else:
                    a_vec, c_vec = a_vec * vec, c_vec * vec
                chain.append((nxt.op_type, vec))
            t = nxt.output[0]
            nxt = self.consumer(t)
        relu = False
        if nxt is not None and nxt.op_type == "Relu":
            relu, t = True, nxt.output[0]
            nxt = self.consumer(t)
        neg = a_vec < 0
        w = np.where(neg[None, :], -w, w)
        a_abs = np.abs(a_vec)
        src = act.spec
        name = f"fc{index + 1}"
        if nxt is not None and nxt.op_type == "Quant":
            o_scale, bits, signed, narrow = _quant(self.m, nxt)
            if o_scale.size != 1:
                raise ApicalError(f"QONNX {nid(nxt)}: per-channel activation scales are not supported")
            if bits > _MAX_OUT_BITS:
                raise ApicalError(f"QONNX {nid(nxt)}: activation bit width {bits} > {_MAX_OUT_BITS}")
            so = float(o_scale.reshape(-1)[0])
            site, kind = self.requant_site(w, src, wq_bits, a_abs / so, c_vec / so, bits, signed, narrow, relu)
            layer = Layer(name, "dense", size, {"main": site}, bits, signed, so)
            nact = _Act(layer.output, so, 0.0)
            t = nxt.output[0]
        elif nxt is not None and nxt.op_type == "BipolarQuant":
            if relu:
                raise ApicalError(f"QONNX {nid(nxt)}: a Relu before a BipolarQuant is not supported")
            sb = float(const(self.m, nxt.input[1]).reshape(-1)[0])
            site = self.bipolar_site(w, src, wq_bits, s_w * act.scale, s_w * act.offset, chain, neg)
            kind = "threshold"
            layer = Layer(name, "dense", size, {"main": site}, 1, False, 2 * sb)
            nact = _Act(layer.output, 2 * sb, -sb)
            t = nxt.output[0]
        elif t == out_name:
            site, scale, offset, kind = self.output_site(w, src, wq_bits, a_abs, c_vec, relu)
            layer = Layer(name, "dense", size, {"main": site}, site.bits, True, scale)
            nact = _Act(layer.output, scale, offset)
        else:
            got = "the graph output" if nxt is None else nid(nxt)
            raise ApicalError(f"QONNX {where}: must be followed by a Quant, BipolarQuant or the graph output, "
                              f"got {got}")
        if float_bias and kind not in ("shift", "multiplier"):
            self.notes.append(f"{name}: float bias (no bias quantizer) folded into per-neuron offsets; "
                              "bias_quant=Int32Bias makes it exact under po2 scales")
        return layer, t, nact, kind

    def site(self, w: np.ndarray, src: TensorSpec, wq_bits: int, bias: np.ndarray, rq: Requant, bits: int,
             signed: bool, relu: bool, narrow: bool = False, mult: np.ndarray | None = None,
             off: np.ndarray | None = None) -> Site:
        """A dense site from integer weights ``[in, out]`` (zeros not stored)."""
        in_size, size = w.shape
        nz = w != 0
        indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
        rows_i, targets = np.nonzero(nz)
        data = w[rows_i, targets].astype(np.int64)
        wbits = max(wq_bits, _bits_for(int(data.min()), int(data.max())) if data.size else 2)
        site = Site(
            sources=(src.name,), in_size=in_size, weight_bits=wbits, indptr=indptr,
            indices=targets.astype(np.int64), data=data, bias=np.asarray(bias, dtype=np.int64), acc_bits=2,
            requant=rq, bits=bits, signed=signed, activation="relu" if relu else "identity",
            narrow=narrow and signed, multipliers=mult, offsets=off,
        )
        return Site(**{**site.__dict__, "acc_bits": acc_bits_needed(site, size, [src])})

    def requant_site(self, w: np.ndarray, src: TensorSpec, wq_bits: int, r: np.ndarray, c: np.ndarray,
                     bits: int, signed: bool, narrow: bool, relu: bool) -> tuple[Site, str]:
        """``q = sat(round(r * acc + c))`` as an IR site: shift, multiplier or per-neuron (module docstring)."""
        zero = r == 0
        w = np.where(zero[None, :], 0, w)
        r = np.where(zero, 1.0, r)
        if np.all(r == r[0]) and not zero.any():
            b = c / r[0]
            if _integral(b):
                mant, e = math.frexp(float(r[0]))
                if mant == 0.5:
                    return self.site(w, src, wq_bits, np.round(b), Requant(1 - e), bits, signed, relu, narrow), "shift"
                mlt, sh = _fixed(float(r[0]))
                return (self.site(w, src, wq_bits, np.round(b), Requant(sh, mlt), bits, signed, relu, narrow),
                        "multiplier")
        sh = MULT_BITS - math.frexp(float(r.max()))[1]
        if not -32 <= sh <= 63:
            raise ApicalError(f"QONNX: requantisation ratio {float(r.max())} out of the IR's shift range")
        mult = np.maximum(1, np.round(r * 2.0**sh)).astype(np.int64)
        mult = np.where(zero, 1, mult)
        off = np.round(c * 2.0**sh).astype(np.int64)
        site = self.site(w, src, wq_bits, np.zeros(len(r)), Requant(sh), bits, signed, relu, narrow, mult, off)
        return site, "per-neuron"

    def bipolar_site(self, w: np.ndarray, src: TensorSpec, wq_bits: int, a0: np.ndarray, o0: np.ndarray,
                     chain: list[tuple[str, np.ndarray]], neg: np.ndarray) -> Site:
        """``b = (y >= 0)`` with ``y`` the float32 chain of the integer accumulator: one threshold per neuron.

        ``w`` already has the rows of negative slope negated; the threshold is
        found on the original accumulator by replaying, in float32, the ops the
        executor runs (MatMul result, then each Mul/Add), around the exact
        float64 crossing.
        """
        size = w.shape[1]
        w_orig = np.where(neg[None, :], -w, w)
        rowsum = w_orig.sum(axis=0)

        def y32(acc: np.ndarray, j: int) -> np.ndarray:
            v = (np.float32(a0[j]) * acc.astype(np.float32) + np.float32(o0[j]) * np.float32(rowsum[j]))
            v = v.astype(np.float32)
            for op, vec in chain:
                v = (v * np.float32(vec[j]) if op == "Mul" else v + np.float32(vec[j])).astype(np.float32)
            return v

        a = a0.copy()
        c = o0 * rowsum
        for op, vec in chain:
            a, c = (a * vec, c * vec) if op == "Mul" else (a, c + vec)
        bias = np.zeros(size, dtype=np.int64)
        w = w.copy()
        for j in range(size):
            if a[j] == 0:
                w[:, j] = 0
                bias[j] = 1 if c[j] >= 0 else 0
                continue
            t = -c[j] / a[j]
            cand = np.arange(math.floor(t) - 3, math.floor(t) + 4)
            ok = cand[y32(cand, j) >= 0]
            if a[j] > 0:
                thr = int(ok.min()) if ok.size else math.ceil(t)  # b = 1 iff acc >= thr
                bias[j] = 1 - thr
            else:
                thr = int(ok.max()) if ok.size else math.floor(t)  # b = 1 iff acc <= thr iff -acc >= -thr
                bias[j] = 1 + thr
        return self.site(w, src, wq_bits, bias, Requant(0), 1, False, False)

    def output_site(self, w: np.ndarray, src: TensorSpec, wq_bits: int, a: np.ndarray, c: np.ndarray,
                    relu: bool) -> tuple[Site, float, float, str]:
        """An unquantized output: (site, output scale, common offset, kind)."""
        c0 = float(c[0])
        probe = self.site(w, src, wq_bits, np.zeros(len(a)), Requant(0), 2, True, relu)
        acc_max = (1 << (probe.acc_bits - 1)) - 1
        if np.all(a == a[0]) and a[0] > 0:
            d = (c - c0) / a[0]
            for k in range(9):
                if not _integral(d * 2**k):
                    continue
                dk = np.round(d * 2**k).astype(np.int64)
                hi = acc_max * 2**k + int(np.abs(dk).max())
                bits = _bits_for(-hi, hi)
                if bits > _MAX_OUT_BITS:
                    break
                if k == 0:
                    site = self.site(w, src, wq_bits, dk, Requant(0), bits, True, relu)
                else:
                    site = self.site(w, src, wq_bits, np.zeros(len(a)), Requant(0), bits, True, relu,
                                     mult=np.full(len(a), 2**k, dtype=np.int64), off=dk)
                return site, float(a[0]) / 2**k, c0, "shift" if k == 0 else "per-neuron"
        # per-channel or non-dyadic: a 16-bit grid over the whole output range, fixed-point multiplies
        span = float(np.max(a * acc_max + np.abs(c - c0)))
        so = span / (2 ** (_MAX_OUT_BITS - 1) - 1) if span > 0 else 1.0
        site, kind = self.requant_site(w, src, wq_bits, a / so, (c - c0) / so, _MAX_OUT_BITS, True, False, relu)
        self.notes.append(f"unquantized output put on a {_MAX_OUT_BITS}-bit grid of step {so:.3g}")
        return site, so, c0, kind


def import_qonnx(path: str | Path) -> IR:
    """Map a QONNX MLP to a validated IR (see module docstring); every problem is named at once."""
    return _import(Path(path))[0]


def _import(p: Path) -> tuple[IR, list[str]]:
    model = normalise(p)
    found = problems(model)
    if found:
        raise refuse(p, found)
    imp = _Importer(model, p)
    return imp.run(), imp.notes


def quantize_input(ir: IR, x: np.ndarray) -> np.ndarray:
    """Float input data -> the IR input's integer codes, with the model's own input quantizer.

    Replays what the imported graph does before its first Quant (scalar
    Mul/Add, in float32 as the executor does), then the Quant itself: round
    half to even of ``x / scale``, clipped to the (narrow) range; a
    BipolarQuant gives code 1 for ``x >= 0`` and 0 otherwise (value ``2b - 1``).
    """
    q = ir.meta.get("input_quant")
    if not isinstance(q, dict):
        raise ApicalError("float inputs need the input quantizer of an imported QONNX model; give integer codes")
    v = np.asarray(x, dtype=np.float32)
    for op, c in q["ops"]:
        v = (v * np.float32(c) if op == "mul" else v + np.float32(c)).astype(np.float32)
    if q["bipolar"]:
        return (v >= 0).astype(np.int64)
    bits, signed = int(q["bits"]), bool(q["signed"])
    lo = -(2 ** (bits - 1)) + int(bool(q["narrow"])) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    return np.clip(np.round(v / np.float32(q["scale"])), lo, hi).astype(np.int64)


def import_run(onnx_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Import a QONNX file into ``out_dir/ir/`` and write the summary ``out_dir/import.json``."""
    t0 = time.perf_counter()
    src = Path(onnx_path)
    ir, notes = _import(src)
    out = Path(out_dir)
    save_ir(ir, out / "ir")
    kinds = ir.meta["requant"]
    summary = {
        "source": src.name,
        "inputs": [{"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed, "scale": t.scale}
                   for t in ir.inputs],
        "input_quantizer": ir.meta["input_quant"],
        "layers": [
            {
                "name": la.name,
                "in_size": la.sites["main"].in_size,
                "size": la.size,
                "weight_bits": la.sites["main"].weight_bits,
                "out_bits": la.out_bits,
                "out_signed": la.out_signed,
                "narrow": la.sites["main"].narrow,
                "activation": la.sites["main"].activation,
                "requant": kind,
                "shift": la.sites["main"].requant.shift,
                "multiplier": la.sites["main"].requant.multiplier,
                "synapses": la.sites["main"].nnz,
            }
            for la, kind in zip(ir.layers, kinds, strict=True)
        ],
        "synapses": ir.synapses,
        "scaling": ir.meta["scaling"],
        "exact": all(k in ("shift", "threshold") for k in kinds),
        "output_offset": ir.meta["output_offset"],
        "notes": notes,
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
