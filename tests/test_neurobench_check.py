"""The neurobench package's own metrics agree with apical's on the same integer network."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apical.flows.neurobench_check import IRMirror, neurobench_crosscheck
from apical.sw.errors import CheckFailed
from apical.sw.golden import run_golden
from apical.sw.ir import save_ir
from apical.sw.ir_random import random_inputs, random_ir


@pytest.mark.parametrize("seed", range(8))
def test_neurobench_agrees_with_apical(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    kind = ("dense", "sparse", "two_point", "mixed")[seed % 4]
    ir = random_ir(rng, kind=kind, layers=1 + seed % 3)
    inputs = random_inputs(rng, ir, 23, zero_fraction=0.4)
    r = neurobench_crosscheck(ir, inputs, batch_size=7)  # several batches: neurobench accumulates
    assert r["samples"] == 23
    assert all(r["agree"].values()), r
    golden = run_golden(ir, inputs)
    syn = sum(golden.counts[layer.name]["syn_ops"] for layer in ir.layers)
    assert r["neurobench"]["effective_syn_ops_per_inference"] == pytest.approx(float(syn.mean()), rel=1e-12)
    dense = sum(s.in_size * layer.size for layer in ir.layers for s in layer.sites.values())
    assert r["neurobench"]["dense_syn_ops_per_inference"] == dense


def test_gated_network_is_counted_ungated_by_neurobench_and_gated_by_apical() -> None:
    rng = np.random.default_rng(5)
    ir = random_ir(rng, kind="two_point", layers=2)
    gated = dataclasses.replace(
        ir, layers=tuple(dataclasses.replace(la, gate="r") if la.kind == "two_point" else la for la in ir.layers)
    )
    inputs = random_inputs(rng, ir, 40, zero_fraction=0.3)
    r = neurobench_crosscheck(gated, inputs)
    assert all(r["agree"].values())
    g = run_golden(gated, inputs)
    gated_ops = float(np.mean(sum(g.counts[la.name]["syn_ops"] for la in gated.layers)))
    assert r["apical"]["gated_syn_ops_per_inference"] == pytest.approx(gated_ops)
    assert gated_ops <= r["neurobench"]["effective_syn_ops_per_inference"]


def test_mirror_is_the_integer_network() -> None:
    rng = np.random.default_rng(11)
    ir = random_ir(rng, kind="mixed", layers=3)
    inputs = random_inputs(rng, ir, 17, zero_fraction=0.3)
    batch = torch.from_numpy(np.concatenate([inputs[t.name] for t in ir.inputs], axis=1).astype(np.float64))
    out = IRMirror(ir)(batch).numpy().astype(np.int64)
    np.testing.assert_array_equal(out, run_golden(ir, inputs).outputs[ir.layers[-1].name])


def test_a_mirror_that_differs_from_golden_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    ir = random_ir(rng, kind="dense", layers=2)
    inputs = random_inputs(rng, ir, 9, zero_fraction=0.2)
    real = IRMirror.__init__

    def off_by_one(self: IRMirror, ir_: object) -> None:
        real(self, ir_)
        lin = next(iter(self.sites.values()))
        with torch.no_grad():
            lin.weight[0, 0] += 1.0

    monkeypatch.setattr(IRMirror, "__init__", off_by_one)
    with pytest.raises(CheckFailed, match="accumulators differ from golden"):
        neurobench_crosscheck(ir, inputs)


def test_cli_writes_neurobench_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    ir = random_ir(rng, kind="two_point", layers=2)
    inputs = random_inputs(rng, ir, 12, zero_fraction=0.4)
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", **inputs)
    (run / "config.yaml").write_text("{}\n")
    cmd = [sys.executable, "-m", "apical.flows.cli", "neurobench", str(run), "--samples", "10"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    s = json.loads((run / "neurobench.json").read_text())
    assert s["samples"] == 10 and all(s["agree"].values())
    missing = subprocess.run([*cmd[:4], str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
