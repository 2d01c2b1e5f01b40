"""NeuroBench-style metrics against an independent computation from dense weights and activations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apical.flows.metrics import footprint, neurobench_metrics
from apical.hw.schedule import compile_schedule
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import IR
from apical.sw.ir_random import random_inputs, random_ir


def independent(ir: IR, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Recompute the metrics from dense matrices and the golden layer outputs."""
    g = run_golden(ir, inputs)
    tensors = {**inputs, **g.outputs}
    nonzero_w = dense = 0
    macs = np.zeros(next(iter(inputs.values())).shape[0], dtype=np.int64)
    for layer in ir.layers:
        for site in layer.sites.values():
            w = site.dense_weights(layer.size)  # [size, in_size]
            nonzero_w += int(np.count_nonzero(w))
            dense += w.size
            x = np.concatenate([tensors[s] for s in site.sources], axis=1)
            # every (non-zero activation, non-zero weight) pair is one effective MAC
            macs += ((x[:, None, :] != 0) & (w[None, :, :] != 0)).sum(axis=(1, 2))
    acts = [inputs[t.name] for t in ir.inputs] + [g.outputs[layer.name] for layer in ir.layers]
    zeros = sum(int((a == 0).sum()) for a in acts)
    total = sum(a.size for a in acts)
    return {
        "connection_sparsity": 1 - nonzero_w / dense,
        "activation_sparsity": zeros / total,
        "dense": dense,
        "effective": float(macs.mean()),
    }


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_independent_computation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    kind = ("dense", "sparse", "two_point", "mixed")[seed % 4]
    ir = random_ir(rng, kind=kind, layers=1 + seed % 3)
    inputs = random_inputs(rng, ir, 9, zero_fraction=0.4)
    m = neurobench_metrics(ir, run_golden(ir, inputs), compile_schedule(ir, 4), inputs=inputs)
    ref = independent(ir, inputs)
    assert m["connection_sparsity"] == pytest.approx(ref["connection_sparsity"], abs=1e-15)
    assert m["activation_sparsity"] == pytest.approx(ref["activation_sparsity"], abs=1e-15)
    assert m["dense_syn_ops_per_inference"] == ref["dense"]
    assert m["effective_syn_ops_per_inference"] == pytest.approx(ref["effective"], rel=1e-15)
    assert m["samples"] == 9
    assert m["activation_sparsity_scope"] == "inputs and layer outputs"


def test_activation_sparsity_without_inputs_covers_outputs_only() -> None:
    rng = np.random.default_rng(7)
    ir = random_ir(rng, kind="mixed", layers=2)
    inputs = random_inputs(rng, ir, 6)
    g = run_golden(ir, inputs)
    m = neurobench_metrics(ir, g, compile_schedule(ir, 2))
    outs = [g.outputs[layer.name] for layer in ir.layers]
    assert m["activation_sparsity"] == pytest.approx(sum(int((a == 0).sum()) for a in outs) / sum(a.size for a in outs))
    assert m["activation_sparsity_scope"] == "layer outputs"


@pytest.mark.parametrize("seed", range(4))
def test_footprint_rule(seed: int) -> None:
    """Footprint recomputed from the schedule's memory images with the rule of docs/energy.md."""
    rng = np.random.default_rng(200 + seed)
    ir = random_ir(rng, kind=("dense", "two_point", "sparse", "mixed")[seed], layers=2)
    s = compile_schedule(ir, 3)
    entry = max(1, (s.acc_depth - 1).bit_length()) + 1 + s.weight_bits
    weights = entry * sum(max(1, len(im.weights)) for im in s.images)
    index_w = max(1, s.weight_depth.bit_length()) + max(1, s.max_fanout.bit_length())
    pointers = 3 * s.index_depth * index_w + s.index_depth * 3
    biases = 3 * max(1, s.bias_depth) * 2 * s.acc_bits
    tables = 3 * len(s.table) * s.act_bits
    f = footprint(s)
    expect = [math.ceil(b / 8) for b in (weights, pointers, biases, tables)]
    got = [f[k] for k in ("weights_bytes", "pointers_bytes", "biases_bytes", "tables_bytes")]
    assert got == expect
    assert f["footprint_bytes"] == sum(expect)
    assert weights >= ir.synapses * entry  # replicated fan-outs are stored once per replica


def test_metrics_reject_incomplete_golden_result() -> None:
    rng = np.random.default_rng(3)
    ir = random_ir(rng, layers=2)
    g = run_golden(ir, random_inputs(rng, ir, 3))
    del g.counts[ir.layers[-1].name]
    with pytest.raises(ApicalError, match=f"IR layer {ir.layers[-1].name!r}"):
        neurobench_metrics(ir, g, compile_schedule(ir, 2))
