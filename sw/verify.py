"""The verify step: Brevitas eval forward vs the golden integer model on the whole test split.

`verify_run(cfg, run_dir)` loads the trained model (``checkpoint.pt``) and the
exported IR (``ir/``), quantizes the test split through Brevitas
(`brevitas_trace`), runs `run_golden` on exactly those integer inputs, and
compares every value of every layer (and every two-point site Brevitas
exposes). It writes ``verify.json`` atomically and returns it. Under po2
scales the contract is zero mismatches everywhere (``bit_exact: true``); under
float scales the deviation is measured (largest |deviation| in LSBs of the
layer's output) and reported, with argmax agreement and both accuracies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write_json
from apical.sw.config import Config
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.golden import GoldenResult, run_golden
from apical.sw.ir import IR, load_ir

__all__ = ["compare_traces", "verify_run"]


def _as_int(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    if not np.issubdtype(arr.dtype, np.integer):
        r = np.round(arr)
        if not np.array_equal(r, arr):
            raise ApicalError(f"verify: traced tensor {name}: Brevitas integer values are not integral")
        arr = r
    return arr.astype(np.int64).reshape(arr.shape[0], -1)


def _compare(expected: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    diff = np.abs(expected - got)
    bad = diff != 0
    entry: dict[str, Any] = {
        "values": int(expected.size),
        "mismatches": int(bad.sum()),
        "mismatched_samples": int(bad.any(axis=1).sum()),
        "max_abs_dev_lsb": int(diff.max()) if diff.size else 0,
        "mean_abs_dev_lsb": float(diff.mean()) if diff.size else 0.0,
    }
    if bad.any():
        s, j = (int(v) for v in np.argwhere(bad)[0])
        entry["first_mismatch"] = {"sample": s, "neuron": j, "brevitas": int(expected[s, j]), "golden": int(got[s, j])}
    return entry


def compare_traces(ir: IR, golden: GoldenResult, traced: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-layer (and per-site, where traced) comparison of Brevitas integers with the golden model.

    ``traced`` maps IR layer names (and ``"<layer>.<site>"`` for two-point
    sites) to int ``[N, size]``; every IR layer must be present.
    """
    layers: dict[str, Any] = {}
    sites: dict[str, Any] = {}
    for layer in ir.layers:
        if layer.name not in traced:
            raise ApicalError(f"verify: layer {layer.name}: Brevitas trace has no tensor of that name")
        exp = _as_int(layer.name, traced[layer.name])
        got = golden.outputs[layer.name]
        if exp.shape != got.shape:
            raise ApicalError(f"verify: layer {layer.name}: Brevitas shape {exp.shape} != IR shape {got.shape}")
        layers[layer.name] = _compare(exp, got)
        if layer.kind == "two_point":
            for key in layer.site_order:
                tname = f"{layer.name}.{key}"
                if tname in traced:
                    sites[tname] = _compare(_as_int(tname, traced[tname]), golden.sites[(layer.name, key)])
    return {"layers": layers, "sites": sites}


def _site_trace(model: Any, split: Any, ir: IR, batch: int = 1024) -> dict[str, np.ndarray]:
    """Integers of every two-point site (``"<layer>.r"`` / ``"<layer>.c"``) the model's trace exposes."""
    import torch

    keys = [f"{la.name}.{k}" for la in ir.layers if la.kind == "two_point" for k in la.site_order]
    if not keys:
        return {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    with torch.no_grad():
        for lo in range(0, len(split), batch):
            x = torch.from_numpy(np.array(split.x[lo : lo + batch], dtype=np.float32))
            ctx = None
            if "ctx" in model.input_names and split.ctx is not None:
                ctx = torch.from_numpy(np.array(split.ctx[lo : lo + batch], dtype=np.float32))
            t = model.trace(x, ctx)
            for k in keys:
                q = t.get(k)
                if q is not None and hasattr(q, "scale"):
                    parts[k].append(torch.round(q.value / q.scale).to(torch.int64).numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def verify_run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Compare Brevitas and the golden model on the test split; write and return ``verify.json``."""
    from apical.sw.checkpoint import load_model
    from apical.sw.data import load_dataset
    from apical.sw.export import brevitas_trace

    t0 = time.perf_counter()
    rd = Path(run_dir)
    run_cfg, model = load_model(rd)
    ir = load_ir(rd / "ir")
    split = load_dataset(cfg).test
    int_inputs, int_outputs = brevitas_trace(model, split)
    inputs = {t.name: _as_int(t.name, int_inputs[t.name]) for t in ir.inputs if t.name in int_inputs}
    missing = [t.name for t in ir.inputs if t.name not in int_inputs]
    if missing:
        raise ApicalError(f"verify: IR input {missing[0]}: Brevitas trace has no tensor of that name")
    golden = run_golden(ir, inputs)
    cmp = compare_traces(ir, golden, {**_site_trace(model, split, ir), **int_outputs})

    labels = np.asarray(split.y, dtype=np.int64)
    out_name = ir.layers[-1].name
    brev_logits = _as_int(out_name, int_outputs[out_name])
    brev_cls = np.argmax(brev_logits, axis=1)
    n = int(labels.shape[0])
    if brev_cls.shape[0] != n:
        raise ApicalError(f"verify: test split has {n} labels but Brevitas traced {brev_cls.shape[0]} samples")
    all_entries = list(cmp["layers"].values()) + list(cmp["sites"].values())
    mismatches = sum(e["mismatches"] for e in all_entries)
    summary: dict[str, Any] = {
        "bit_exact": mismatches == 0,
        "scaling": run_cfg.quant.scaling.value,  # the checkpoint's config made the model
        "model_kind": run_cfg.model.kind.value,
        "samples": n,
        "mismatches": int(mismatches),
        "max_abs_dev_lsb": max((e["max_abs_dev_lsb"] for e in all_entries), default=0),
        "layers": cmp["layers"],
        "sites": cmp["sites"],
        "argmax_agreement": float(np.mean(brev_cls == golden.classes)) if n else 1.0,
        "brevitas_accuracy": float(np.mean(brev_cls == labels)) if n else 0.0,
        "golden_accuracy": float(np.mean(golden.classes == labels)) if n else 0.0,
        "synapses": ir.synapses,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(rd / "verify.json", summary)
    if mismatches and run_cfg.quant.scaling.value == "po2":
        # Under power-of-two scales the contract is exact: a difference is a failure.
        name, entry = next((k, e) for k, e in {**cmp["layers"], **cmp["sites"]}.items() if e["mismatches"])
        fm = entry.get("first_mismatch", {})
        raise CheckFailed(
            f"verify: Brevitas and golden differ under po2 scales: sample {fm.get('sample')}: {name} "
            f"neuron {fm.get('neuron')}: Brevitas {fm.get('brevitas')}, golden {fm.get('golden')}; "
            f"{mismatches} values in all (see {rd / 'verify.json'})")
    return summary
