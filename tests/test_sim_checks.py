"""A simulation that disagrees with golden is a failure: `apical sim` exits non-zero, names the
first mismatch and still writes ``sim.json``; wide tensors (9..16 bits, raw accumulator outputs)
are bit-exact in RTL, imported models included.

The corrupted-design test edits the generated Verilog's weight memory initial
contents (every stored weight negated in its field), the way a broken generator
or a flipped bit would, and runs the real CLI on it.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from torch import nn

from apical.flows.cli import main
from apical.flows.flow import write_run_config
from apical.hw.generate import generate_rtl
from apical.hw.schedule import compile_schedule
from apical.sim.runner import SimResult, check_summary, summarize
from apical.sw.config import Config, HardwareConfig
from apical.sw.errors import CheckFailed
from apical.sw.golden import run_golden
from apical.sw.ir import IR, load_ir, save_ir
from apical.sw.ir_random import random_inputs, random_ir

sys.path.insert(0, str(Path(__file__).parent))


def _wide_ir(seed: int) -> IR:
    """A 3-layer IR whose tensors are 9..16 bits wide and whose logits are the raw accumulator."""
    for s in range(seed, seed + 50):
        ir = random_ir(np.random.default_rng(s), kind="dense", layers=3, input_size=(6, 10),
                       hidden_size=(4, 8), bits=(2, 12), raw_output=1.0)
        last = ir.layers[-1].sites["main"]
        if last.requant.shift == 0 and last.bits == last.acc_bits and last.bits > 8:
            return ir
    raise AssertionError("no raw wide IR drawn")


def _run_dir(tmp_path: Path, ir: IR, pes: int, n: int, *, seed: int = 0) -> Path:
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    inputs = random_inputs(np.random.default_rng(seed), ir, n, zero_fraction=0.2)
    np.savez(run / "test_vectors.npz", labels=np.zeros(n, dtype=np.int64), **inputs)
    write_run_config(Config().replace(hardware=HardwareConfig(pes=pes, sim_samples=n)), run)
    return run


def _corrupt_weights(verilog: Path, weight_bits: int) -> int:
    """Negate the weight field (the top ``weight_bits`` of each entry) of every stored synapse."""
    text = verilog.read_text()
    pat = re.compile(r"(weight_mem\[\d+\] = )(\d+)'h([0-9a-f]+);")
    count = 0

    def flip(mt: re.Match) -> str:
        nonlocal count
        width, word = int(mt.group(2)), int(mt.group(3), 16)
        low = width - weight_bits
        w = word >> low
        w = w - (1 << weight_bits) if w >> (weight_bits - 1) else w
        if w == 0:
            return mt.group(0)
        nw = (-w) & ((1 << weight_bits) - 1) if w != -(1 << (weight_bits - 1)) else (1 << (weight_bits - 1)) - 1
        count += 1
        new = (nw << low) | (word & ((1 << low) - 1))
        return f"{mt.group(1)}{width}'h{new:0{(width + 3) // 4}x};"

    verilog.write_text(pat.sub(flip, text))
    return count


def test_sim_exits_nonzero_and_names_the_mismatch_on_a_corrupted_design(tmp_path: Path, capsys) -> None:
    ir = _wide_ir(40)
    run = _run_dir(tmp_path, ir, 2, 4)
    assert main(["rtl", str(run)]) == 0
    sched = compile_schedule(ir, 2)
    assert _corrupt_weights(run / "rtl" / "apical_top.v", sched.weight_bits) > 0
    capsys.readouterr()
    rc = main(["sim", str(run)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("apical: ")]
    assert rc == 1 and len(lines) == 1, lines
    err = lines[0]
    assert re.search(r"sample \d+: layer out neuron \d+: expected -?\d+, got -?\d+", err), err
    sim = json.loads((run / "sim.json").read_text())  # still written, and says why
    assert sim["bit_exact"] is False and sim["mismatches"]["count"] > 0
    first = sim["mismatches"]["first"][0]
    assert f"sample {first['sample']}: layer {first['layer']} neuron {first['index']}" in err
    flow = json.loads((run / "flow.json").read_text())
    assert flow["steps"]["sim"]["status"] == "failed"  # a re-run runs it again
    # The same run with the design regenerated passes.
    assert main(["rtl", str(run)]) == 0
    assert main(["sim", str(run)]) == 0
    assert json.loads((run / "sim.json").read_text())["bit_exact"] is True


def test_wide_raw_output_bit_exact_through_the_sim_step(tmp_path: Path) -> None:
    ir = _wide_ir(7)
    assert max(t.bits for t in [*ir.inputs, *(la.output for la in ir.layers)]) > 8
    run = _run_dir(tmp_path, ir, 4, 6, seed=3)
    assert main(["rtl", str(run)]) == 0
    assert main(["sim", str(run)]) == 0
    sim = json.loads((run / "sim.json").read_text())
    assert sim["bit_exact"] and sim["counters_match"] and 0 < sim["utilization"] <= 1


def _fake_result(golden, pes: int, cycles: np.ndarray, outputs: np.ndarray) -> SimResult:
    totals = golden.total_counts()
    counters = {c: np.asarray(v, dtype=np.int64) for c, v in totals.items()}
    counters["cycles"] = cycles
    return SimResult(simulator="icarus", pes=pes, sample_ids=np.arange(len(cycles)), outputs=outputs,
                     classes=golden.classes.copy(), counters=counters, sim_cycles=int(cycles.sum()),
                     tb_wall_s=1.0, build_s=0.0, wall_s=1.0, failure=None, build_dir=Path("."))


def test_utilization_above_one_is_a_fault_not_a_figure() -> None:
    ir = random_ir(np.random.default_rng(3), kind="dense")
    inputs = random_inputs(np.random.default_rng(4), ir, 3, zero_fraction=0.0)
    g = run_golden(ir, inputs)
    out = g.outputs[ir.layers[-1].name]
    ok = summarize(ir, g, _fake_result(g, 2, g.total_counts()["syn_ops"] + 10, out))
    check_summary(ok, Path("sim.json"))  # a clean pass raises nothing
    assert 0 < ok["utilization"] <= 1 and ok["fault"] is None
    bad = summarize(ir, g, _fake_result(g, 2, np.ones(3, dtype=np.int64), out))
    assert bad["utilization"] is None and "utilization" in bad["fault"]
    with pytest.raises(CheckFailed, match=r"utilization .* > 1 is impossible"):
        check_summary(bad, Path("sim.json"))
    wrong = out.copy()
    wrong[1, 0] += 1
    res = summarize(ir, g, _fake_result(g, 2, g.total_counts()["syn_ops"] + 10, wrong))
    with pytest.raises(CheckFailed, match=r"sample 1: layer out neuron 0: expected"):
        check_summary(res, Path("sim.json"))


class RawLogitsMLP(nn.Module):
    """2-bit weights and activations, no output quantizer: the logits are the raw accumulator."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=2, return_quant_tensor=True)
        dims = [64, 64, 64]
        body: list[nn.Module] = []
        for i, o in itertools.pairwise(dims):
            body += [QuantLinear(i, o, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=2,
                                 return_quant_tensor=True),
                     QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=2, return_quant_tensor=True)]
        self.body = nn.Sequential(*body)
        self.fc_out = QuantLinear(dims[-1], 10, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                  weight_bit_width=2, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.body(self.inp(x)))


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_imported_model_with_unquantized_logits_bit_exact(tmp_path: Path, simulator: str) -> None:
    torch.manual_seed(0)
    m = RawLogitsMLP()
    m.train()
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn(128, 64))
    m.eval()
    onnx_path = tmp_path / "raw.onnx"
    export_qonnx(m, torch.randn(1, 64), str(onnx_path), dynamo=False)
    run = tmp_path / "run"
    assert main(["import", str(onnx_path), "--out", str(run)]) == 0
    ir = load_ir(run / "ir")
    last = ir.layers[-1]
    assert last.sites["main"].requant.shift == 0 and last.out_bits >= 9 and last.out_signed
    assert main(["rtl", str(run), "--pes", "4"]) == 0
    assert main(["sim", str(run), "--samples", "8" if simulator == "icarus" else "4",
                 "--simulator", simulator]) == 0
    sim = json.loads((run / "sim.json").read_text())
    assert sim["bit_exact"] and sim["counters_match"]
    # outputs really use the wide range (not all saturated or zero)
    outs = np.array([s["outputs"] for s in sim["per_sample"]])
    assert np.abs(outs).max() > 127 or len(np.unique(outs)) > 8


def test_generate_refuses_what_does_not_fit_before_writing(tmp_path: Path) -> None:
    """Everything `load_ir` accepts up to 16 bits is built; a weight too wide for the DSP is refused."""
    from dataclasses import replace

    from apical.sw.errors import ApicalError

    ir = random_ir(np.random.default_rng(5), kind="dense")
    layer = ir.layers[0]
    site = replace(layer.sites["main"], weight_bits=20)
    bad = replace(ir, layers=(replace(layer, sites={"main": site}), *ir.layers[1:]))
    with pytest.raises(ApicalError, match=r"IR layer l1: sites.main.weight_bits: 20"):
        generate_rtl(bad, 2, tmp_path / "rtl")
    assert not (tmp_path / "rtl" / "apical_top.v").exists()
