"""The generated ``apical_top`` in cocotb against the golden model, on Icarus and Verilator.

Each case generates the RTL of a random IR at a given P, runs back-to-back
inferences with random back-pressure on both AXI streams (plus, where asked,
a reset in the middle of an input stream followed by clean inferences) and
compares every output value, the class and every counter with the golden
model, both in the testbench (first mismatch fails, naming sample, layer and
neuron) and here on the returned arrays.

The matrix covers dense, sparse fan-in K, two-point (also context-gated on
either site) and mixed IRs, bit widths
2..16 (inputs narrower than the widest tensor, raw accumulator logits), P in
{1, 2, 4, 8}, on Icarus; Verilator (20-40 s per build) runs a few
representative cases, marked slow. ``verilator --lint-only`` checks the
generated Verilog has no errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from apical.hw.generate import generate_rtl
from apical.sim.runner import SimResult, lint_rtl, sim_run, simulate
from apical.sw.config import Config, HardwareConfig
from apical.sw.golden import GoldenResult, run_golden
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import ir_strategy, random_inputs, random_ir

# Shared across runs (ignored by git): builds are keyed by simulator, P and
# an RTL hash, so an unchanged design is not recompiled (Verilator: minutes saved).
BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim_build"

# (case id, random_ir kwargs, P, seed)
CASES = [
    ("dense-P1", {"kind": "dense"}, 1, 11),
    ("dense-P4", {"kind": "dense", "layers": 3}, 4, 12),
    ("sparse-K3-P2", {"kind": "sparse", "fan_in": 3}, 2, 13),
    ("sparse-K4-P8", {"kind": "sparse", "fan_in": 4, "hidden_size": (8, 24)}, 8, 14),
    ("two_point-P1", {"kind": "two_point"}, 1, 15),
    ("two_point-P4", {"kind": "two_point", "layers": 3}, 4, 16),
    ("mixed-P2", {"kind": "mixed", "layers": 3}, 2, 17),
    ("mixed-P8", {"kind": "mixed", "layers": 3}, 8, 18),
    # 9..16-bit tensors with narrower inputs, and raw accumulator logits (no requantisation)
    ("wide-P8", {"kind": "mixed", "layers": 3, "bits": (9, 16)}, 8, 19),
    ("raw-logits-P4", {"kind": "dense", "layers": 3, "bits": (2, 4), "raw_output": 1.0}, 4, 20),
    # context gating: the gate site first, the other site's synapses into fixed neurons skipped
    # (the fast path in test_sim_fast covers the other gate at each P)
    ("gated-r-P1", {"kind": "two_point", "layers": 3, "gate": "r"}, 1, 21),
    ("gated-c-P2", {"kind": "two_point", "layers": 3, "gate": "c"}, 2, 22),
    ("gated-r-P4", {"kind": "two_point", "layers": 3, "gate": "r"}, 4, 23),
    ("gated-c-P8", {"kind": "two_point", "layers": 3, "gate": "c"}, 8, 24),
]
VERILATOR_CASES = ["mixed-P8", "two_point-P4", "wide-P8", "raw-logits-P4", "gated-r-P4", "gated-c-P8"]


def make_case(case: str, rtl_dir: Path) -> tuple[IR, int, int]:
    _, kwargs, pes, seed = next(c for c in CASES if c[0] == case)
    ir = random_ir(np.random.default_rng(seed), **kwargs)
    generate_rtl(ir, pes, rtl_dir)
    return ir, pes, seed


def describe(ir: IR, pes: int) -> str:
    """One line naming an IR's shape, for failure reports of generated cases."""
    ins = ", ".join(f"{t.name}[{t.size}]x{t.bits}{'s' if t.signed else 'u'}" for t in ir.inputs)
    layers = ", ".join(
        f"{lay.name}:{lay.kind}[{lay.size}]<-" + "+".join(f"{k}({'/'.join(s.sources)})" for k, s in lay.sites.items())
        for lay in ir.layers
    )
    return f"P={pes} inputs {ins}; layers {layers}"


def check_against_golden(ir: IR, golden: GoldenResult, res: SimResult, n: int) -> None:
    """Every output value, class and counter of every sample (the TB checked too; this is independent)."""
    if res.failure is not None:
        raise AssertionError(f"{res.simulator} P={res.pes}: {res.failure}")
    assert len(res.sample_ids) == n, f"only {len(res.sample_ids)} of {n} results came back"
    last = ir.layers[-1].name
    np.testing.assert_array_equal(res.outputs, golden.outputs[last], err_msg=f"layer {last} outputs")
    np.testing.assert_array_equal(res.classes, golden.classes, err_msg="classes")
    for c, v in golden.total_counts().items():
        np.testing.assert_array_equal(res.counters[c], v, err_msg=f"counter {c}")
    assert (res.cycles > 0).all()


def run_case(
    tmp_path: Path, case: str, simulator: str, *, n: int = 5, backpressure: bool = True, reset_test: bool = True
) -> SimResult:
    ir, pes, seed = make_case(case, tmp_path / "rtl")
    inputs = random_inputs(np.random.default_rng(seed + 1000), ir, n, zero_fraction=0.3)
    golden = run_golden(ir, inputs)
    if ir.gated:  # the draw really skips synapses
        assert golden.total_counts()["syn_ops"].sum() < run_golden(ir.ungated(), inputs).total_counts()["syn_ops"].sum()
    res = simulate(
        ir,
        inputs,
        rtl_dir=tmp_path / "rtl",
        pes=pes,
        simulator=simulator,
        build_dir=BUILD_ROOT,
        golden=golden,
        backpressure=backpressure,
        reset_test=reset_test,
        seed=seed,
    )
    check_against_golden(ir, golden, res, n)
    if reset_test:
        assert res.reset is not None
        if res.reset["failure"] is not None:
            raise AssertionError(f"after a mid-stream reset: {res.reset['failure']}")
        rows = res.reset["samples"]
        assert len(rows) == min(2, n)
        for k, row in enumerate(rows):
            assert row["outputs"] == golden.outputs[ir.layers[-1].name][k].tolist(), f"after reset, sample {k}"
            assert row["class"] == int(golden.classes[k])
    return res


def _param(*values: str, slow: bool = False) -> object:
    """A case that shares its build folder with other tests: same xdist worker (no build races)."""
    marks = [pytest.mark.xdist_group(values[-1])] + ([pytest.mark.slow] if slow else [])
    return pytest.param(*values, marks=marks, id="-".join(values))


@pytest.mark.parametrize("case", [_param(c[0]) for c in CASES])
def test_rtl_icarus(tmp_path: Path, case: str) -> None:
    run_case(tmp_path, case, "icarus")


@pytest.mark.parametrize("case", [_param(c, slow=True) for c in VERILATOR_CASES])
def test_rtl_verilator(tmp_path: Path, case: str) -> None:
    run_case(tmp_path, case, "verilator")


@pytest.mark.parametrize(
    ("simulator", "case"),
    [_param("icarus", "sparse-K4-P8"), _param("verilator", "mixed-P8", slow=True)],
)
def test_back_to_back_full_speed(tmp_path: Path, simulator: str, case: str) -> None:
    """No back-pressure at all: inputs and results at full rate, many samples in one stream."""
    run_case(tmp_path, case, simulator, n=12, backpressure=False, reset_test=False)


@pytest.mark.parametrize("case", ["dense-P1", "two_point-P4", "mixed-P8"])
def test_verilator_lint_clean(tmp_path: Path, case: str) -> None:
    make_case(case, tmp_path / "rtl")
    lint = lint_rtl(tmp_path / "rtl" / "apical_top.v")
    assert lint.errors == (), "\n".join(lint.errors)


def test_sim_step_generates_rtl_and_writes_sim_json(tmp_path: Path) -> None:
    """`sim_run` on a run directory without rtl/: generates it, simulates, summarises."""
    ir = random_ir(np.random.default_rng(21), kind="dense")
    inputs = random_inputs(np.random.default_rng(22), ir, 6)
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", labels=np.zeros(6, dtype=np.int64), **inputs)
    cfg = Config().replace(hardware=HardwareConfig(pes=2))
    summary = sim_run(cfg, run, simulator="icarus", samples=4, waves=False)
    assert (run / "rtl" / "apical_top.v").is_file()
    assert json.loads((run / "sim.json").read_text())["bit_exact"] is True
    assert summary["pes"] == 2 and summary["samples"] == 4 and summary["sample_indices"] == [0, 1, 2, 3]
    golden = run_golden(ir, {k: v[:4] for k, v in inputs.items()})
    totals = golden.total_counts()
    assert summary["counters_match"]
    assert summary["golden_totals"] == {c: int(v.sum()) for c, v in totals.items()}
    cycles = np.array([s["cycles"] for s in summary["per_sample"]])
    bound = sum(-(-golden.counts[name]["syn_ops"] // 2) for name in golden.counts)
    assert [s["cycle_lower_bound"] for s in summary["per_sample"]] == bound.tolist()
    assert (cycles >= bound).all()  # no schedule beats the bound
    assert summary["utilization"] == pytest.approx(int(totals["syn_ops"].sum()) / (2 * cycles.sum()))


@pytest.mark.slow
# No shrinking: every example is an RTL build, and the failure message already
# names sample, layer and neuron.
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ir=ir_strategy(layers=2), pes=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2**16))
def test_random_irs_bit_exact(tmp_path_factory: pytest.TempPathFactory, ir: IR, pes: int, seed: int) -> None:
    """Property: any random IR (tensors 2..16 bits) at any P is bit-exact, counters included."""
    _property_case(tmp_path_factory, ir, pes, seed, "icarus")


@pytest.mark.slow
@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ir=ir_strategy(layers=2, bits=(6, 16)), pes=st.sampled_from([2, 8]), seed=st.integers(0, 2**16))
def test_random_wide_irs_bit_exact_verilator(
    tmp_path_factory: pytest.TempPathFactory, ir: IR, pes: int, seed: int
) -> None:
    """The same property on Verilator, biased to wide tensors (each example is a C++ build)."""
    _property_case(tmp_path_factory, ir, pes, seed, "verilator")


@pytest.mark.slow
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ir=st.sampled_from(["r", "c"]).flatmap(lambda g: ir_strategy(kind="two_point", layers=2, gate=g)),
       pes=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2**16))
def test_random_gated_irs_bit_exact(tmp_path_factory: pytest.TempPathFactory, ir: IR, pes: int, seed: int) -> None:
    """Property: context-gated random IRs at any P are bit-exact, counters (the skips) included."""
    _property_case(tmp_path_factory, ir, pes, seed, "icarus")


def _property_case(tmp_path_factory: pytest.TempPathFactory, ir: IR, pes: int, seed: int, simulator: str) -> None:
    note(describe(ir, pes))
    rtl = tmp_path_factory.mktemp("prop") / "rtl"
    generate_rtl(ir, pes, rtl)
    inputs = random_inputs(np.random.default_rng(seed), ir, 3, zero_fraction=0.4)
    golden = run_golden(ir, inputs)
    res = simulate(ir, inputs, rtl_dir=rtl, pes=pes, simulator=simulator, build_dir=BUILD_ROOT,
                   golden=golden, seed=seed)
    check_against_golden(ir, golden, res, 3)
