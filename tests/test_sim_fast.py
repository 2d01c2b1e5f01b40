"""The fast simulation path (`apical.sim.fast`): the HDL harness streams every vector, Python compares after.

Random IRs are bit-exact against the golden model (every output value, class
and counter) on Icarus with and without back-pressure, and on Verilator (slow:
one optimised build); the build is cached by content; a deliberately corrupted
design is caught through the real CLI, which names sample, layer and neuron;
`apical sim` on a run directory takes the fast path over the whole split by
default and the cocotb path on request.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from apical.flows.cli import main
from apical.flows.flow import write_run_config
from apical.hw.generate import generate_rtl
from apical.hw.schedule import compile_schedule
from apical.sim.fast import build_fast, port_widths, simulate_fast
from apical.sim.runner import SimResult, check_summary, summarize
from apical.sw.config import Config, HardwareConfig, load_config
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.golden import run_golden
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import random_inputs, random_ir

sys.path.insert(0, str(Path(__file__).parent))
from test_sim_checks import _corrupt_weights, _wide_ir  # one copy of the corruption helper

# Shared across runs (ignored by git): fast builds are keyed by content.
BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim_build"

# (case id, random_ir kwargs, P, seed)
CASES = {
    "dense-P4": ({"kind": "dense", "layers": 3}, 4, 12),
    "sparse-K3-P2": ({"kind": "sparse", "fan_in": 3}, 2, 13),
    "two_point-P1": ({"kind": "two_point"}, 1, 15),
    "mixed-P8": ({"kind": "mixed", "layers": 3}, 8, 18),
    "wide-P8": ({"kind": "mixed", "layers": 3, "bits": (9, 16)}, 8, 19),
    # context gating (test_sim_rtl's cocotb matrix has the other gate at each P)
    "gated-c-P1": ({"kind": "two_point", "layers": 3, "gate": "c"}, 1, 31),
    "gated-r-P2": ({"kind": "two_point", "layers": 3, "gate": "r"}, 2, 32),
    "gated-c-P4": ({"kind": "two_point", "layers": 3, "gate": "c"}, 4, 33),
    "gated-r-P8": ({"kind": "two_point", "layers": 3, "gate": "r"}, 8, 34),
}


def _case(case: str, rtl_dir: Path) -> tuple[IR, int, int]:
    kwargs, pes, seed = CASES[case]
    ir = random_ir(np.random.default_rng(seed), **kwargs)
    generate_rtl(ir, pes, rtl_dir)
    return ir, pes, seed


def _assert_bit_exact(ir: IR, inputs: dict[str, np.ndarray], res: SimResult) -> None:
    """Every value against golden, independently of `summarize`, then `summarize` agrees."""
    golden = run_golden(ir, inputs)
    n = golden.classes.shape[0]
    assert res.failure is None, res.failure
    assert len(res.sample_ids) == n, f"{len(res.sample_ids)} of {n} results"
    last = ir.layers[-1].name
    np.testing.assert_array_equal(res.outputs, golden.outputs[last], err_msg=f"layer {last}")
    np.testing.assert_array_equal(res.classes, golden.classes, err_msg="classes")
    for c, v in golden.total_counts().items():
        np.testing.assert_array_equal(res.counters[c], v, err_msg=f"counter {c}")
    assert (res.cycles > 0).all()
    s = summarize(ir, golden, res)
    assert s["bit_exact"] and s["counters_match"] and s["mismatches"]["count"] == 0
    assert s["path"] == "fast" and s["sim_cycles"] >= int(res.cycles.sum())


@pytest.mark.parametrize("case", ["dense-P4", "sparse-K3-P2", "two_point-P1", "wide-P8",
                                  "gated-c-P1", "gated-r-P2", "gated-c-P4", "gated-r-P8"])
def test_fast_icarus_bit_exact(tmp_path: Path, case: str) -> None:
    ir, pes, seed = _case(case, tmp_path / "rtl")
    in_w, out_w = port_widths(tmp_path / "rtl" / "apical_top.v")
    assert in_w % 8 == 0 and in_w >= max(t.bits for t in ir.inputs) and out_w >= ir.output.bits
    inputs = random_inputs(np.random.default_rng(seed + 1000), ir, 6, zero_fraction=0.3)
    if ir.gated:  # the draw really skips synapses
        assert run_golden(ir, inputs).total_counts()["syn_ops"].sum() < \
            run_golden(ir.ungated(), inputs).total_counts()["syn_ops"].sum()
    res = simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=pes, simulator="icarus",
                        build_dir=BUILD_ROOT, seed=seed)
    _assert_bit_exact(ir, inputs, res)
    # Without back-pressure the same results come back in fewer cycles: the
    # pseudo-random pattern really stalls both streams.
    free = simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=pes, simulator="icarus",
                         build_dir=BUILD_ROOT, seed=seed, backpressure=False)
    _assert_bit_exact(ir, inputs, free)
    assert free.sim_cycles < res.sim_cycles


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mixed-P8", "wide-P8", "gated-r-P8", "gated-c-P4"])
def test_fast_verilator_bit_exact(tmp_path: Path, case: str) -> None:
    ir, pes, seed = _case(case, tmp_path / "rtl")
    inputs = random_inputs(np.random.default_rng(seed + 1000), ir, 40, zero_fraction=0.3)
    res = simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=pes, simulator="verilator",
                        build_dir=BUILD_ROOT, seed=seed)
    _assert_bit_exact(ir, inputs, res)
    # The same harness, seed and design give the same cycle on both simulators.
    ica = simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=pes, simulator="icarus",
                        build_dir=BUILD_ROOT, seed=seed)
    assert ica.sim_cycles == res.sim_cycles
    np.testing.assert_array_equal(ica.cycles, res.cycles)


def test_fast_build_is_cached_by_content(tmp_path: Path) -> None:
    ir, _, _ = _case("dense-P4", tmp_path / "rtl")
    exe, _ = build_fast(tmp_path / "rtl", "icarus", tmp_path / "b")
    again, secs = build_fast(tmp_path / "rtl", "icarus", tmp_path / "b")
    assert again == exe and secs == 0.0
    # A different design (another P) is a different build, never the stale one.
    generate_rtl(ir, 2, tmp_path / "rtl")
    other, secs = build_fast(tmp_path / "rtl", "icarus", tmp_path / "b")
    assert other != exe and secs > 0.0 and exe.is_file() and other.is_file()


def test_fast_timeout_is_an_incomplete_run(tmp_path: Path) -> None:
    ir, pes, seed = _case("dense-P4", tmp_path / "rtl")
    inputs = random_inputs(np.random.default_rng(seed), ir, 3)
    # No result can come within 2 cycles of the last: the harness gives up, as on a hung design.
    res = simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=pes, simulator="icarus",
                        build_dir=BUILD_ROOT, timeout_cycles=2)
    assert res.failure == "timeout: no result within 2 cycles after 0 results"
    assert len(res.sample_ids) == 0 and res.log is not None and res.log.is_file()
    summary = summarize(ir, run_golden(ir, inputs), res)
    assert summary["mismatches"]["missing_results"] == 3 and not summary["bit_exact"]
    with pytest.raises(CheckFailed, match=r"sim: RTL run incomplete \(icarus P=4\): timeout"):
        check_summary(summary, tmp_path / "sim.json")


def test_missing_rtl_is_one_line(tmp_path: Path) -> None:
    ir = random_ir(np.random.default_rng(0), kind="dense")
    inputs = random_inputs(np.random.default_rng(0), ir, 2)
    with pytest.raises(ApicalError, match=r"apical_top\.v: generated Verilog missing"):
        simulate_fast(ir, inputs, rtl_dir=tmp_path / "nowhere", pes=8, simulator="icarus", build_dir=tmp_path)


# --------------------------------------------------------------------------- the CLI


def _run_dir(tmp_path: Path, ir: IR, pes: int, n: int, *, seed: int = 0) -> Path:
    """A run directory holding an IR and ``n`` test vectors; the config keeps every sim default."""
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    inputs = random_inputs(np.random.default_rng(seed), ir, n, zero_fraction=0.2)
    np.savez(run / "test_vectors.npz", labels=np.zeros(n, dtype=np.int64), **inputs)
    write_run_config(Config().replace(hardware=HardwareConfig(pes=pes)), run)
    return run


def test_cli_fast_path_whole_split_catches_a_corrupted_design(tmp_path: Path, capsys) -> None:
    ir = _wide_ir(40)
    n = 4
    run = _run_dir(tmp_path, ir, 2, n)
    assert main(["rtl", str(run)]) == 0
    # Defaults: the fast path over every test vector.
    assert main(["sim", str(run)]) == 0
    sim = json.loads((run / "sim.json").read_text())
    assert sim["path"] == "fast" and sim["simulator"] == "icarus"
    assert sim["samples"] == n and sim["sample_indices"] == list(range(n))
    assert sim["bit_exact"] and sim["counters_match"] and sim["sim_cycles_per_s"] > 0
    assert sim["sim_wall_per_inference_s"] > 0 and len(sim["per_sample"]) == n
    # The energy step reads the RTL counters of every simulated sample.
    assert main(["energy", str(run)]) == 0
    energy = json.loads((run / "energy.json").read_text())
    assert energy["rtl"]["samples"] == n and energy["rtl_matches_golden"] is True

    sched = compile_schedule(ir, 2)
    assert _corrupt_weights(run / "rtl" / "apical_top.v", sched.weight_bits) > 0
    capsys.readouterr()
    rc = main(["sim", str(run)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("apical: ")]
    assert rc == 1 and len(lines) == 1, lines
    err = lines[0]
    sim = json.loads((run / "sim.json").read_text())  # still written, and says why
    assert sim["path"] == "fast" and sim["bit_exact"] is False and sim["mismatches"]["count"] > 0
    first = sim["mismatches"]["first"][0]
    assert first["kind"] == "output" and first["layer"] == ir.layers[-1].name
    assert f"sample {first['sample']}: layer {first['layer']} neuron {first['index']}: " \
           f"expected {first['expected']}, got {first['got']}" in err, err

    # The cocotb path on request, on a prefix of the split: it sees the same corruption.
    rc = main(["sim", str(run), "--path", "cocotb", "--samples", "2"])
    sim = json.loads((run / "sim.json").read_text())
    assert rc == 1 and sim["path"] == "cocotb" and sim["samples"] == 2 and not sim["bit_exact"]


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ("sim_path: slow", "cfg.yaml: hardware.sim_path: must be one of 'fast', 'cocotb', got 'slow'"),
        ("sim_samples: -1", "cfg.yaml: hardware.sim_samples: must be in [0, 100000], got -1"),
        ("waves: true", "cfg.yaml: hardware.waves: the fast path writes no waveform"),
    ],
)
def test_sim_config_errors(tmp_path: Path, hardware: str, message: str) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_text(f"hardware:\n  {hardware}\n")
    with pytest.raises(ApicalError, match=re.escape(message)):
        load_config(p)
