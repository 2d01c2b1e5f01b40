"""Integer export: a trained Brevitas model -> the IR, plus the integer trace of its eval forward.

`export_ir(model, cfg)` reads every quantized tensor the eval forward uses
(weight integers and scales, bias at accumulator scale, site and output
quantizers, two-point tables from the model's own modulation) and writes them
as IR layers: weights in fan-out (CSC) order without zeros, requantization as
a shift (po2 scales) or a <= 16-bit multiplier and a shift (float scales).
`brevitas_trace(model, split)` runs the eval forward and returns the exact
integers (quant value / scale) of every IR input and every IR layer output:
the verify step compares them with the golden model. `export_run(cfg,
run_dir)` is the export step: ``ir/``, ``test_vectors.npz``, ``export.json``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor

from apical.sw.atomic import atomic_write, atomic_write_json
from apical.sw.config import Config, Scaling, config_hash
from apical.sw.data import Split, load_dataset
from apical.sw.errors import ApicalError
from apical.sw.ir import (
    IR,
    Layer,
    Requant,
    Site,
    TensorSpec,
    acc_bits_needed,
    gating_values,
    save_ir,
)
from apical.sw.models.base import ApicalNet, LayerSpec, SiteSpec

__all__ = [
    "MULTIPLIER_BITS",
    "brevitas_trace",
    "choose_gate",
    "export_ir",
    "export_run",
    "export_summary",
    "float_requant",
    "po2_exponent",
]

MULTIPLIER_BITS = 16  # float-scale requantization: multiplier < 2**16
FLOAT32_EXACT_BITS = 24  # float32 sums of po2-scaled integers are exact below 2**24 ulps
TRACE_BATCH = 1024


def _ints(q: IntQuantTensor | torch.Tensor, scale: torch.Tensor | None = None) -> np.ndarray:
    """Exact integers of a quant tensor: value / scale (the division is exact for po2 scales)."""
    if isinstance(q, IntQuantTensor):
        value, scale = q.value, q.scale
    else:
        value = q
    return torch.round(value.detach() / scale.detach()).to(torch.int64).numpy()


def po2_exponent(scale: float, what: str) -> int:
    """The integer e with scale == 2**e; raises if the scale is not a power of two."""
    mant, exp = math.frexp(float(scale))
    if mant != 0.5:
        raise ApicalError(f"export: {what}: scale {scale!r} is not a power of two (quant.scaling: po2)")
    return exp - 1


def float_requant(ratio: float, what: str) -> Requant:
    """Multiplier (< 2**16) and shift approximating ``ratio`` = accumulator scale / output scale."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ApicalError(f"export: {what}: requantization ratio {ratio!r} must be positive and finite")
    shift = (MULTIPLIER_BITS - 1) - math.floor(math.log2(ratio))
    shift = min(shift, 63)
    mult = round(ratio * 2.0**shift)
    if mult >= 1 << MULTIPLIER_BITS:  # rounding carried into bit 16
        shift -= 1
        mult = round(ratio * 2.0**shift)
    if shift < -32:
        raise ApicalError(f"export: {what}: requantization ratio {ratio:g} too large for a shift >= -32")
    return Requant(shift=shift, multiplier=max(1, mult))


def _inputs(model: ApicalNet, n: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    d = model.dims
    ctx = torch.zeros(n, d.ctx_dim) if (d.ctx_dim and "ctx" in model.input_names) else None
    return torch.zeros(n, d.x_dim), ctx


def _csc(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[size, in_size] dense ints -> (indptr, indices, data) in fan-out order, zeros dropped."""
    cols, rows = np.nonzero(w.T)  # row-major over w.T: input ascending, then target ascending
    indptr = np.zeros(w.shape[1] + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=w.shape[1]), out=indptr[1:])
    return indptr, rows.astype(np.int64), w[rows, cols].astype(np.int64)


def _site(
    layer: str,
    key: str,
    spec: SiteSpec,
    size: int,
    out: IntQuantTensor,
    tensors: dict[str, TensorSpec],
    traced: dict[str, IntQuantTensor],
    po2: bool,
) -> Site:
    what = f"layer {layer} site {key}"
    srcs = [tensors[s] for s in spec.sources]
    in_size = sum(t.size for t in srcs)
    w = np.zeros((size, in_size), dtype=np.int64)
    bias = np.zeros(size, dtype=np.int64)
    wbits = 2
    s_out = float(out.scale)
    requant = Requant(shift=0)
    lin = spec.linear
    if lin is not None:
        qw = lin.quant_weight()
        wbits = int(qw.bit_width)
        s_in_t = traced[spec.scale_source].scale.detach()
        for s in spec.sources:
            if s in traced and float(traced[s].scale) != float(s_in_t):
                raise ApicalError(f"export: {what}: sources {list(spec.sources)} do not share one scale")
        w_all = _ints(qw)
        cols = spec.columns if spec.columns is not None else slice(None)
        w_sel = w_all[:, cols]
        if w_sel.shape[1] not in (0, in_size):
            raise ApicalError(f"export: {what}: {w_sel.shape[1]} weight columns for {in_size} inputs")
        if w_sel.shape[1]:
            w = w_sel
        # Brevitas' Int32Bias: round(bias / (input scale * weight scale)), in float32 like the forward.
        s_acc_t = s_in_t * qw.scale.detach()
        bias = _ints(lin.bias.detach(), s_acc_t)
        s_acc = float(s_acc_t)
        if po2:
            shift = po2_exponent(s_out, f"{what} output") - po2_exponent(s_acc, f"{what} accumulator")
            requant = Requant(shift=shift)
        else:
            requant = float_requant(s_acc / s_out, what)
    indptr, indices, data = _csc(w)
    site = Site(
        sources=tuple(spec.sources),
        in_size=in_size,
        weight_bits=wbits,
        indptr=indptr,
        indices=indices,
        data=data,
        bias=bias,
        acc_bits=2,
        requant=requant,
        bits=int(out.bit_width),
        signed=bool(out.signed),
        activation=spec.activation,
    )
    return _with_acc_bits(site, size, srcs)


def _with_acc_bits(site: Site, size: int, srcs: list[TensorSpec]) -> Site:
    return dataclasses.replace(site, acc_bits=acc_bits_needed(site, size, srcs))


def _tensor_spec(name: str, q: IntQuantTensor) -> TensorSpec:
    return TensorSpec(name, int(q.value.shape[1]), int(q.bit_width), bool(q.signed), float(q.scale))


def _layer(ls: LayerSpec, tensors: dict[str, TensorSpec], traced: dict[str, IntQuantTensor], po2: bool) -> Layer:
    out = traced[ls.name]
    size = int(out.value.shape[1])
    sites = {}
    for key, spec in ls.sites.items():
        site_q = out if ls.kind == "dense" else traced[f"{ls.name}.{key}"]
        sites[key] = _site(ls.name, key, spec, size, site_q, tensors, traced, po2)
    table = None
    modulation = None
    if ls.kind == "two_point":
        mod = ls.modulation
        table = mod.table_ints(traced[f"{ls.name}.r"], traced[f"{ls.name}.c"]).numpy()
        modulation = mod.name.value
    return Layer(
        name=ls.name,
        kind=ls.kind,
        size=size,
        sites=sites,
        out_bits=int(out.bit_width),
        out_signed=bool(out.signed),
        out_scale=float(out.scale),
        table=table,
        modulation=modulation,
    )


def choose_gate(layer: Layer) -> str | None:
    """The site a two-point layer evaluates first under context gating, or None when neither helps.

    Each order is scored by the share of the gating site's values that fix the
    output (from the table alone) times the synapses of the site it would skip.
    """
    if layer.kind != "two_point" or layer.table is None:
        return None
    scores = {
        "r": float(gating_values(layer.table, "r").mean()) * layer.sites["c"].nnz,
        "c": float(gating_values(layer.table, "c").mean()) * layer.sites["r"].nnz,
    }
    best = max(scores, key=lambda k: (scores[k], k == "r"))
    return best if scores[best] > 0 else None


@torch.no_grad()
def export_ir(model: ApicalNet, cfg: Config) -> IR:
    """The integer model of ``model``'s eval forward (the model is put in eval mode)."""
    model.eval()
    po2 = cfg.quant.scaling is Scaling.PO2
    # Scales are parameters or weight statistics, never input-dependent: one dummy sample reveals them.
    traced = model.trace(*_inputs(model))
    tensors: dict[str, TensorSpec] = {n: _tensor_spec(n, traced[n]) for n in model.input_names}
    inputs = tuple(tensors.values())
    layers = []
    for ls in model.layer_specs():
        layer = _layer(ls, tensors, traced, po2)
        if cfg.hardware.context_gating and layer.kind == "two_point":
            layer = dataclasses.replace(layer, gate=choose_gate(layer))
        layers.append(layer)
        tensors[layer.name] = layer.output
    meta = {
        "model_kind": model.kind,
        "config_hash": config_hash(cfg),
        "config_name": cfg.name,
        "scaling": cfg.quant.scaling.value,
        "context_gating": bool(cfg.hardware.context_gating),
    }
    return IR(inputs=inputs, layers=tuple(layers), meta=meta)


@torch.no_grad()
def brevitas_trace(model: ApicalNet, split: Split) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(IR inputs, IR layer outputs) of the eval forward on ``split``, as exact int64 [N, size]."""
    model.eval()
    names = [ls.name for ls in model.layer_specs()]
    ins: dict[str, list[np.ndarray]] = {n: [] for n in model.input_names}
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for lo in range(0, len(split), TRACE_BATCH):
        x = torch.from_numpy(np.array(split.x[lo : lo + TRACE_BATCH], dtype=np.float32))
        ctx = None
        if "ctx" in model.input_names:
            if split.ctx is None:
                raise ApicalError("export: the model needs the context input but the split has none")
            ctx = torch.from_numpy(np.array(split.ctx[lo : lo + TRACE_BATCH], dtype=np.float32))
        t = model.trace(x, ctx)
        for n in ins:
            ins[n].append(_ints(t[n]))
        for n in outs:
            outs[n].append(_ints(t[n]))
    return ({n: np.concatenate(v) for n, v in ins.items()}, {n: np.concatenate(v) for n, v in outs.items()})


def export_summary(ir: IR) -> dict[str, Any]:
    """Per-layer sizes, synapses, bits and the float32-exactness margin of each site."""
    layers = []
    for layer in ir.layers:
        sites = {}
        for key in layer.site_order:
            s = layer.sites[key]
            dense = layer.size * s.in_size
            sites[key] = {
                "sources": list(s.sources),
                "in_size": s.in_size,
                "synapses": s.nnz,
                "connection_sparsity": 1.0 - s.nnz / dense if dense else 1.0,
                "weight_bits": s.weight_bits,
                "acc_bits": s.acc_bits,
                "bits": s.bits,
                "signed": s.signed,
                "shift": s.requant.shift,
                "multiplier": s.requant.multiplier,
                # Brevitas accumulates in float32: exact while the worst-case sum fits 24 bits.
                "float32_exact": s.acc_bits - 1 <= FLOAT32_EXACT_BITS,
            }
        layers.append({
            "name": layer.name,
            "kind": layer.kind,
            "size": layer.size,
            "out_bits": layer.out_bits,
            "out_signed": layer.out_signed,
            "synapses": sum(s.nnz for s in layer.sites.values()),
            "table_entries": int(layer.table.size) if layer.table is not None else 0,
            "gate": layer.gate,
            "sites": sites,
        })
    return {
        "model_kind": ir.meta.get("model_kind"),
        "scaling": ir.meta.get("scaling"),
        "config_hash": ir.meta.get("config_hash"),
        "inputs": [{"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed} for t in ir.inputs],
        "layers": layers,
        "synapses": ir.synapses,
        "output": ir.output.name,
    }


def export_run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The export step: ``ir/``, ``test_vectors.npz`` and ``export.json`` from ``checkpoint.pt``."""
    from apical.sw.checkpoint import load_model

    run_dir = Path(run_dir)
    ck_cfg, model = load_model(run_dir)
    # Context gating is an export-time choice of the given config, not of the training run.
    gating = dataclasses.replace(ck_cfg.hardware, context_gating=cfg.hardware.context_gating)
    ir = export_ir(model, ck_cfg.replace(hardware=gating))
    save_ir(ir, run_dir / "ir")
    ds = load_dataset(ck_cfg)
    inputs, _ = brevitas_trace(model, ds.test)
    arrays = {n: v for n, v in inputs.items()}
    arrays["labels"] = ds.test.y.astype(np.int64)
    atomic_write(run_dir / "test_vectors.npz", lambda f: np.savez(f, **arrays))
    summary = export_summary(ir)
    summary["test_samples"] = len(ds.test)
    # Compared section by section (recorded reads, see apical.sw.config.record_reads),
    # not by config_hash, so the note follows exactly the fields an export uses.
    if (ck_cfg.seed, ck_cfg.data, ck_cfg.model, ck_cfg.quant) != (cfg.seed, cfg.data, cfg.model, cfg.quant):
        summary["note"] = "exported with the config stored in checkpoint.pt (it differs from the given one)"
    atomic_write_json(run_dir / "export.json", summary)
    return summary
