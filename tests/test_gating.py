"""Context gating in the golden model: exact by construction, counted against an event-walk reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from apical.sw.errors import ApicalError
from apical.sw.export import choose_gate
from apical.sw.golden import run_golden
from apical.sw.ir import IR, gating_values, load_ir, save_ir, validate_ir
from apical.sw.ir_random import random_inputs, random_ir


def _gateable(rng: np.random.Generator, gate: str) -> IR:
    """A random two-point IR whose tables fix the output on a random part of the ``gate`` site's values."""
    return random_ir(rng, kind="two_point", layers=3, hidden_size=(3, 9), input_size=(4, 12), gate=gate)


def _reference_skipped(ir: IR, gold, inputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Walk every event's fan-out list; count synapses into neurons whose output the gate fixes."""
    layer = ir.layer(name)
    gate, other = layer.gate, layer.gated_site
    tensors = {**inputs, **gold.outputs}
    site = layer.sites[other]
    x = np.concatenate([tensors[s] for s in site.sources], axis=1)
    v = gold.sites[(name, gate)] - layer.sites[gate].range[0]
    t = layer.table
    out = np.zeros(x.shape[0], dtype=np.int64)
    for n in range(x.shape[0]):
        for i in np.flatnonzero(x[n]):
            for j in site.indices[site.indptr[i] : site.indptr[i + 1]]:
                row = t[v[n, j], :] if gate == "r" else t[:, v[n, j]]
                out[n] += int((row == row[0]).all())
    return out


@pytest.mark.parametrize("gate", ["r", "c"])
@pytest.mark.parametrize("seed", range(6))
def test_gating_changes_counts_only(gate: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ir = _gateable(rng, gate)
    inputs = random_inputs(rng, ir, 20)
    g = run_golden(ir, inputs)
    u = run_golden(ir.ungated(), inputs)
    for name in u.outputs:
        assert np.array_equal(g.outputs[name], u.outputs[name]), name
    assert np.array_equal(g.classes, u.classes)
    total_skipped = 0
    for layer in ir.layers:
        gc, uc = g.counts[layer.name], u.counts[layer.name]
        if layer.gate is None:
            assert all(np.array_equal(gc[c], uc[c]) for c in gc)
            continue
        skipped = _reference_skipped(ir, g, inputs, layer.name)
        total_skipped += int(skipped.sum())
        assert np.array_equal(uc["syn_ops"] - gc["syn_ops"], skipped)
        assert np.array_equal(gc["weight_reads"], gc["syn_ops"]) and np.array_equal(gc["acc_updates"], gc["syn_ops"])
        v = g.sites[(layer.name, gate)] - layer.sites[gate].range[0]
        fixed = gating_values(layer.table, gate)[v].sum(axis=1)
        assert np.array_equal(uc["requants"] - gc["requants"], fixed)
        for c in ("events", "act_reads", "act_writes", "table_lookups"):
            assert np.array_equal(gc[c], uc[c]), c
    assert total_skipped > 0  # the draw really exercised the skip


def test_gating_values_of_a_kay_like_table() -> None:
    r = np.arange(-8, 8)[:, None]
    c = np.arange(-8, 8)[None, :]
    table = np.clip(np.maximum(r, 0) * (2 + (r * c > 0)), 0, 15)  # zero for every R <= 0
    assert gating_values(table, "r").tolist() == [True] * 9 + [False] * 7
    assert not gating_values(table, "c").any()
    with pytest.raises(ApicalError, match="gate"):
        gating_values(table, "x")


def test_choose_gate_takes_the_site_that_fixes_outputs() -> None:
    rng = np.random.default_rng(3)
    for gate in ("r", "c"):
        ir = _gateable(rng, gate)
        for layer in ir.layers:
            if layer.kind == "two_point":
                other = layer.gated_site
                if layer.sites[other].nnz and gating_values(layer.table, gate).any():
                    assert choose_gate(dataclasses.replace(layer, gate=None)) == gate


def test_gate_round_trips_and_is_validated(tmp_path: Path) -> None:
    ir = _gateable(np.random.default_rng(1), "r")
    save_ir(ir, tmp_path / "ir")
    back = load_ir(tmp_path / "ir")
    assert [la.gate for la in back.layers] == [la.gate for la in ir.layers] and back.gated
    assert not ir.ungated().gated
    bad = dataclasses.replace(ir, layers=(dataclasses.replace(ir.layers[0], gate="z"), *ir.layers[1:]))
    with pytest.raises(ApicalError, match=rf"{ir.layers[0].name}.*gate"):
        validate_ir(bad)
    dense = dataclasses.replace(ir, layers=(*ir.layers[:-1], dataclasses.replace(ir.layers[-1], gate="r")))
    with pytest.raises(ApicalError, match="gate"):
        validate_ir(dense)


def test_rtl_step_builds_a_gated_ir(tmp_path: Path) -> None:
    from apical.flows.steps import step_rtl
    from apical.sw.config import load_config

    ir = _gateable(np.random.default_rng(2), "r")
    save_ir(ir, tmp_path / "ir")
    summary = step_rtl(load_config(None), tmp_path)
    assert (tmp_path / "rtl" / "apical_top.v").is_file()
    assert {la["name"]: la["gate"] for la in summary["layers"]} == {la.name: la.gate for la in ir.layers}
    assert "target" in summary["memories"]  # the PEs' synapse-target memory of a gated build


def test_rtl_fault_injection_refuses_a_gated_top() -> None:
    from apical.hw.top import ApicalTop

    ir = _gateable(np.random.default_rng(2), "r")
    with pytest.raises(ValueError, match="context-gated"):
        ApicalTop(ir, 2, faults=object())


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_trained_model_gated_in_rtl(tmp_path: Path, simulator: str) -> None:
    # A trained kay net exported with and without gating (the run's config decides, not the
    # checkpoint's): the same outputs, fewer synaptic ops, and the RTL equals golden both ways.
    from apical.sim.runner import sim_run
    from apical.sw.config import config_to_dict, load_config, parse_config
    from apical.sw.export import export_run
    from apical.sw.train import train

    d = config_to_dict(load_config())
    d["data"]["max_samples"] = 300
    d["model"].update({"kind": "two_point", "hidden": [12], "modulation": "kay"})
    d["train"].update({"epochs": 1, "batch_size": 32, "patience": 5})
    cfg = parse_config(d)
    train(cfg, tmp_path / "off", progress=False)
    (tmp_path / "on").mkdir()
    (tmp_path / "on" / "checkpoint.pt").write_bytes((tmp_path / "off" / "checkpoint.pt").read_bytes())
    sims = {}
    for name, gating in (("off", False), ("on", True)):
        run = tmp_path / name
        rcfg = cfg.replace(hardware=dataclasses.replace(cfg.hardware, pes=4, context_gating=gating))
        export_run(rcfg, run)
        assert load_ir(run / "ir").gated == gating
        sims[name] = sim_run(rcfg, run, simulator=simulator, samples=12, waves=False)
        assert sims[name]["bit_exact"] and sims[name]["counters_match"], sims[name]["failure"]
    assert [s["outputs"] for s in sims["on"]["per_sample"]] == [s["outputs"] for s in sims["off"]["per_sample"]]
    assert sims["on"]["counter_totals"]["syn_ops"] < sims["off"]["counter_totals"]["syn_ops"]
