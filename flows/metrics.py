"""NeuroBench-style static and workload metrics of an IR on a test set.

Contract: `neurobench_metrics(ir, golden_result, schedule, inputs=...)` returns a plain,
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

from apical.hw.schedule import Schedule
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.ir import IR

__all__ = ["footprint", "neurobench_metrics"]

def footprint(schedule: Schedule) -> dict[str, int]:
    """Bytes of the stored model, as the PE array holds it (its initialised memories).

    From the compiled schedule the RTL is built from (`Schedule.memories`): the
    weight memories (one accumulator address + bank + weight entry per stored
    synapse, replicated fan-outs included), the fan-out index memories, the
    bias memories, the event mask and the two-point tables. Each part is
    rounded up to whole bytes. Requantisation shifts and per-layer multipliers
    are constants in the logic, not memory; per-neuron multipliers and offsets
    (imported float/per-channel/BatchNorm models) live in the requant memory
    beside the biases and are counted with them.
    """
    mem = schedule.memories()
    parts = {
        "weights_bytes": math.ceil(mem["weight"].bits / 8),
        "pointers_bytes": math.ceil(
            (mem["index"].bits + mem["event_mask"].bits + (mem["target"].bits if "target" in mem else 0)) / 8),
        "biases_bytes": math.ceil((mem["bias"].bits + (mem["requant"].bits if "requant" in mem else 0)) / 8),
        "tables_bytes": math.ceil(mem["table"].bits / 8) if "table" in mem else 0,
    }
    return {"footprint_bytes": sum(parts.values()), "synapse_word_bits": mem["weight"].width, **parts}


def neurobench_metrics(
    ir: IR, golden_result: Any, schedule: Schedule, *, inputs: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """NeuroBench-style metrics of ``ir`` over the samples ``golden_result`` was run on.

    ``schedule`` is ``ir`` compiled for the array (`apical.hw.schedule.compile_schedule`):
    the footprint is that of its memories.
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
        **footprint(schedule),
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
