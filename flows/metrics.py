"""NeuroBench-style static and workload metrics of an IR on a test set.

Contract: `neurobench_metrics(ir, golden_result, inputs=...)` returns a plain,
JSON-ready dict: footprint (bytes of the stored model under the rule in
`footprint`), connection sparsity, activation sparsity, dense and effective
synaptic operations per inference (means over the test set). Definitions follow
NeuroBench (Yik et al., 2023/2024) adapted to integer, event-driven hardware;
docs/energy.md states each rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.ir import IR

__all__ = ["footprint", "neurobench_metrics"]

# Requantisation parameters stored per site: shift in [-32, 63] (7 bits) and, for
# float scaling, a multiplier below 2**24 (24 bits).
_SHIFT_BITS = 7
_MULT_BITS = 24


def _bits_for(n: int) -> int:
    return max(1, (n - 1).bit_length())


def footprint(ir: IR) -> dict[str, int]:
    """Bytes of the stored model, as the PE array holds it.

    Rule: every synapse is one word of the widest weight plus a target-neuron
    index wide enough for the largest layer (the PE weight memory word is
    shared by all layers); each site stores ``in_size + 1`` fan-out pointers of
    ``ceil(log2(nnz + 1))`` bits, one bias per neuron at the accumulator width,
    and its requantisation shift (7 bits) and multiplier (24 bits, only when
    not shift-only); each two-point layer stores its table at the output width.
    Each part is rounded up to whole bytes.
    """
    sites = [(layer, s) for layer in ir.layers for s in layer.sites.values()]
    word = max(s.weight_bits for _, s in sites) + _bits_for(max(layer.size for layer in ir.layers))
    weight_bits = ir.synapses * word
    pointer_bits = sum((s.in_size + 1) * _bits_for(s.nnz + 1) for _, s in sites)
    bias_bits = sum(layer.size * s.acc_bits for layer, s in sites)
    requant_bits = sum(_SHIFT_BITS + (0 if s.requant.is_shift_only else _MULT_BITS) for _, s in sites)
    table_bits = sum(layer.table.size * layer.out_bits for layer in ir.layers if layer.table is not None)
    parts = {
        "weights_bytes": math.ceil(weight_bits / 8),
        "pointers_bytes": math.ceil(pointer_bits / 8),
        "biases_bytes": math.ceil(bias_bits / 8),
        "requant_bytes": math.ceil(requant_bits / 8),
        "tables_bytes": math.ceil(table_bits / 8),
    }
    return {"footprint_bytes": sum(parts.values()), "synapse_word_bits": word, **parts}


def neurobench_metrics(ir: IR, golden_result: Any, *, inputs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """NeuroBench-style metrics of ``ir`` over the samples ``golden_result`` was run on.

    ``golden_result`` is an `apical.sw.golden.GoldenResult` (``outputs`` and
    ``counts`` are read). ``inputs`` are the integer network inputs the golden
    model ran on; with them, activation sparsity covers inputs and layer outputs
    (NeuroBench's definition over all activations), without them layer outputs only.
    """
    outputs = getattr(golden_result, "outputs", None)
    counts = getattr(golden_result, "counts", None)
    if not isinstance(outputs, dict) or not isinstance(counts, dict):
        raise ApicalError("metrics: golden_result: needs .outputs and .counts mappings")
    for layer in ir.layers:
        if layer.name not in outputs or layer.name not in counts:
            raise ApicalError(f"metrics: golden_result: no outputs/counts for IR layer {layer.name!r}")
        for c in COUNTERS:
            if c not in counts[layer.name]:
                raise ApicalError(f"metrics: golden_result: counts[{layer.name!r}] lacks {c!r}")

    dense = sum(s.in_size * layer.size for layer in ir.layers for s in layer.sites.values())
    nnz = ir.synapses

    zeros = total = 0
    per_tensor: dict[str, float] = {}
    tensors: list[tuple[str, np.ndarray]] = []
    if inputs is not None:
        for t in ir.inputs:
            if t.name not in inputs:
                raise ApicalError(f"metrics: inputs: no array for IR input {t.name!r}")
            tensors.append((t.name, np.asarray(inputs[t.name])))
    tensors += [(layer.name, np.asarray(outputs[layer.name])) for layer in ir.layers]
    for name, a in tensors:
        z = int(np.count_nonzero(a == 0))
        zeros += z
        total += a.size
        per_tensor[name] = z / a.size if a.size else 0.0

    syn = np.sum([np.asarray(counts[layer.name]["syn_ops"], dtype=np.int64) for layer in ir.layers], axis=0)
    n = int(np.asarray(syn).shape[0]) if np.ndim(syn) else 0
    eff_mean = float(np.mean(syn)) if n else 0.0
    return {
        **footprint(ir),
        "synapses": nnz,
        "dense_synapses": dense,
        "connection_sparsity": 1.0 - nnz / dense if dense else 0.0,
        "activation_sparsity": zeros / total if total else 0.0,
        "activation_sparsity_scope": "inputs and layer outputs" if inputs is not None else "layer outputs",
        "activation_sparsity_per_tensor": per_tensor,
        "dense_syn_ops_per_inference": dense,
        "effective_syn_ops_per_inference": eff_mean,
        "effective_syn_ops_fraction": eff_mean / dense if dense else 0.0,
        "samples": n,
    }
