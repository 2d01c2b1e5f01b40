"""Faults: reproducible draws, a 0 % rate changes nothing, golden with faults == RTL with faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apical.hw.faults import (
    WeightWords,
    draw_seu,
    fault_schedule,
    fault_verilog,
    hardware_faults,
    seu_effects,
)
from apical.sw.faults import (
    ACTIVATION_KINDS,
    FaultSet,
    draw_activation_faults,
    fault_rng,
    merge,
    run_faulty,
)
from apical.sw.golden import run_golden
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import random_inputs, random_ir

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim_build"


def _ir(seed: int = 16, kind: str = "two_point") -> IR:
    return random_ir(np.random.default_rng(seed), kind=kind, layers=3)


def _same(a, b) -> None:
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=f"layer {k}")
    np.testing.assert_array_equal(a.classes, b.classes)
    for layer in a.counts:
        for c in a.counts[layer]:
            np.testing.assert_array_equal(a.counts[layer][c], b.counts[layer][c], err_msg=f"{layer} {c}")


def _all_kinds(ir: IR, ww: WeightWords, rate: float, seed: int):
    rng = fault_rng(seed, 7)
    act = merge(*(draw_activation_faults(ir, k, rate, rng) for k in ACTIVATION_KINDS))
    flips = draw_seu(ww, rate, rng)
    seu, tally = seu_effects(ir, ww, flips)
    return act, flips, FaultSet(merge(seu, act)), tally


@pytest.mark.parametrize("kind,pes", [("two_point", 4), ("mixed", 8), ("dense", 1)])
def test_no_faults_is_golden(kind: str, pes: int) -> None:
    ir = _ir(kind=kind)
    inputs = random_inputs(np.random.default_rng(1), ir, 20)
    gold = run_golden(ir, inputs)
    _same(gold, run_faulty(ir, inputs, None))
    for parity in (False, True):
        ww = WeightWords.of(ir, fault_schedule(ir, pes), parity=parity)
        _act, flips, fs, tally = _all_kinds(ir, ww, 0.0, 3)
        assert tally["bits_flipped"] == 0 and not any(f.any() for f in flips)
        _same(gold, run_faulty(ir, inputs, fs))  # a 0 % rate leaves every output and counter unchanged


def test_same_seed_same_draw() -> None:
    ir = _ir()
    ww = WeightWords.of(ir, fault_schedule(ir, 4), parity=True)
    for kind in ACTIVATION_KINDS:
        a = draw_activation_faults(ir, kind, 0.3, fault_rng(5, 1, 2))
        b = draw_activation_faults(ir, kind, 0.3, fault_rng(5, 1, 2))
        c = draw_activation_faults(ir, kind, 0.3, fault_rng(6, 1, 2))
        assert a.keys() == b.keys() and a
        for name in a:
            for f in ("and_mask", "or_mask"):
                x, y = getattr(a[name], f), getattr(b[name], f)
                assert (x is None and y is None) or np.array_equal(x, y)
            assert a[name].kill.keys() == b[name].kill.keys()
            assert all(np.array_equal(a[name].kill[k], b[name].kill[k]) for k in a[name].kill)
        if kind == "damage":
            assert any(not np.array_equal(a[n].and_mask, c[n].and_mask) for n in a), "another seed, another draw"
    f1 = draw_seu(ww, 0.05, fault_rng(5, 3))
    f2 = draw_seu(ww, 0.05, fault_rng(5, 3))
    f3 = draw_seu(ww, 0.05, fault_rng(9, 3))
    assert all(np.array_equal(x, y) for x, y in zip(f1, f2, strict=True))
    assert sum(int(x.any()) for x in f1) and not all(np.array_equal(x, y) for x, y in zip(f1, f3, strict=True))


def test_damage_silences_units_and_faults_change_outputs() -> None:
    ir = _ir()
    inputs = random_inputs(np.random.default_rng(2), ir, 30, zero_fraction=0.1)
    hidden = ir.layers[0].name
    lf = draw_activation_faults(ir, "damage", 1.0, fault_rng(0), [hidden])
    res = run_faulty(ir, inputs, FaultSet(lf))
    assert (res.outputs[hidden] == 0).all()
    ww = WeightWords.of(ir, fault_schedule(ir, 4))
    _, _, fs, tally = _all_kinds(ir, ww, 0.05, 4)
    assert tally["bits_flipped"] > 0
    gold, faulty = run_golden(ir, inputs), run_faulty(ir, inputs, fs)
    assert any((gold.outputs[k] != faulty.outputs[k]).any() for k in gold.outputs)


def test_parity_detects_single_flips() -> None:
    ir = _ir()
    ww = WeightWords.of(ir, fault_schedule(ir, 4), parity=True)
    flips = tuple(np.where(np.arange(len(w)) % 3 == 0, 1 << (ww.width - 2), 0).astype(np.int64) for w in ww.words)
    eff, tally = seu_effects(ir, ww, flips)
    assert tally["detected"] == tally["words_hit"] > 0
    inputs = random_inputs(np.random.default_rng(3), ir, 10)
    # Every detected synapse is skipped; the others keep their weights and targets.
    layers = {la.name: la for la in ir.layers}
    for name, lf in eff.items():
        total_f = sum(int(np.abs(m).sum()) for m in lf.weights.values())
        total_c = sum(int(np.abs(s.data).sum()) for s in layers[name].sites.values())
        assert total_f < total_c
    run_faulty(ir, inputs, FaultSet(eff))


@pytest.mark.slow
@pytest.mark.parametrize("seed,pes,kind,parity", [(16, 4, "two_point", False), (18, 8, "mixed", True)])
def test_rtl_with_faults_equals_golden_with_faults(tmp_path: Path, seed: int, pes: int, kind: str,
                                                   parity: bool) -> None:
    from apical.sim.runner import simulate

    ir = random_ir(np.random.default_rng(seed), kind=kind, layers=3)
    inputs = random_inputs(np.random.default_rng(seed + 1000), ir, 5, zero_fraction=0.3)
    sched = fault_schedule(ir, pes)
    ww = WeightWords.of(ir, sched, parity=parity)
    act, flips, fs, tally = _all_kinds(ir, ww, 0.05, seed)
    assert tally["bits_flipped"] > 0
    golden = run_faulty(ir, inputs, fs)
    assert (golden.outputs[ir.layers[-1].name] != run_golden(ir, inputs).outputs[ir.layers[-1].name]).any()
    (tmp_path / "apical_top.v").write_text(fault_verilog(ir, sched, hardware_faults(ir, ww, flips, act)))
    res = simulate(ir, inputs, rtl_dir=tmp_path, pes=pes, simulator="icarus", build_dir=BUILD_ROOT,
                   golden=golden, stop_on_mismatch=False)
    assert res.failure is None, res.failure
    np.testing.assert_array_equal(res.outputs, golden.outputs[ir.layers[-1].name])
    np.testing.assert_array_equal(res.classes, golden.classes)
    for c, v in golden.total_counts().items():
        np.testing.assert_array_equal(res.counters[c], v, err_msg=f"counter {c}")


def test_faults_command_on_a_run_directory(tmp_path: Path) -> None:
    from apical.flows.faults import faults_run
    from apical.sw.config import load_config

    ir = _ir()
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    inputs = random_inputs(np.random.default_rng(4), ir, 40)
    labels = run_golden(ir, inputs).classes
    np.savez(run / "test_vectors.npz", labels=labels, **inputs)
    cfg = load_config(None)
    s = faults_run(cfg, run, kinds=["damage", "damage_c", "seu", "seu_parity"], rates=[0.0, 0.2], draws=2,
                   seed=1, rtl_draws=0)
    data = json.loads((run / "faults.json").read_text())
    assert data["nets"][0]["accuracy"] == 1.0 and s["rtl_matches_golden"] is None
    for kind in ("damage", "damage_c", "seu", "seu_parity"):
        rows = data["nets"][0]["kinds"][kind]["rates"]
        assert rows[0]["rate"] == 0.0 and rows[0]["accuracy"]["min"] == 1.0 and rows[0]["outputs_unchanged"]
    assert data["nets"][0]["kinds"]["damage"]["rates"][1]["accuracy"]["mean"] < 1.0
    assert (run / "faults.png").stat().st_size > 0
    again = faults_run(cfg, run, kinds=["damage", "seu"], rates=[0.2], draws=2, seed=1, rtl_draws=0)
    assert again["nets"][0]["kinds"]["damage"] == {"rates": [data["nets"][0]["kinds"]["damage"]["rates"][1]]}


def test_cli_faults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from apical.flows.cli import main
    from apical.flows.flow import write_run_config
    from apical.sw.config import load_config

    ir = _ir(seed=12, kind="dense")
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    inputs = random_inputs(np.random.default_rng(4), ir, 12)
    np.savez(run / "test_vectors.npz", labels=run_golden(ir, inputs).classes, **inputs)
    write_run_config(load_config(None), run)
    assert main(["faults", str(run), "--kinds", "damage,stuck", "--rates", "0,0.5", "--draws", "2",
                 "--rtl-draws", "0"]) == 0
    data = json.loads((run / "faults.json").read_text())
    assert set(data["nets"][0]["kinds"]) == {"damage", "stuck"} and data["draws"] == 2
    assert main(["faults", str(run), "--kinds", "meteor"]) == 1
    assert "kind must be one of" in capsys.readouterr().err
    assert main(["faults", str(run), "--rates", "0,2"]) == 1


def test_parity_design_elaborates_with_wider_weight_words() -> None:
    from apical.hw.faults import parity_faults
    from apical.hw.generate import verilog_text

    ir = _ir()
    sched = fault_schedule(ir, 4)
    ww = WeightWords.of(ir, sched, parity=True)
    plain = WeightWords.of(ir, sched)
    assert ww.width == plain.width + 1
    text = fault_verilog(ir, sched, parity_faults(ww))
    assert text != verilog_text(ir, 4, schedule=sched)
    assert f"reg [{ww.width - 1}:0] weight_mem" in text or f"[{ww.width - 1}:0]" in text
