"""Energy model: table loading and validation, the arithmetic against hand computation,
exactness between per-layer and summed counts, the golden-vs-RTL check and the baseline ratio.

Expected energies are recomputed here from counts x table entries with the rules
of docs/energy.md, never pasted numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from apical.flows.energy import (
    ALL_LAYERS,
    COMPONENTS,
    energy_from_counts,
    energy_run,
    hardware_words,
    load_energy_table,
    parse_energy_table,
    shipped_tables,
)
from apical.hw.schedule import compile_schedule
from apical.sw.config import load_config
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, Requant, Site, TensorSpec, acc_bits_needed, save_ir, validate_ir
from apical.sw.ir_random import random_inputs, random_ir

# --------------------------------------------------------------------------- helpers


def make_site(w: np.ndarray, sources: tuple[str, ...], in_specs: list[TensorSpec], *, weight_bits: int,
              bits: int, signed: bool, activation: str = "relu", shift: int = 1) -> Site:
    """A site from a dense ``[size, in_size]`` weight matrix, stored in fan-out (CSC) order."""
    size, in_size = w.shape
    indptr, indices, data = [0], [], []
    for i in range(in_size):
        rows = np.nonzero(w[:, i])[0]
        indices += rows.tolist()
        data += w[rows, i].tolist()
        indptr.append(len(indices))
    site = Site(
        sources=sources, in_size=in_size, weight_bits=weight_bits,
        indptr=np.array(indptr, dtype=np.int64), indices=np.array(indices, dtype=np.int64),
        data=np.array(data, dtype=np.int64), bias=np.arange(size, dtype=np.int64) - 1,
        acc_bits=2, requant=Requant(shift=shift), bits=bits, signed=signed, activation=activation,
    )
    need = acc_bits_needed(site, size, in_specs)
    return Site(**{**site.__dict__, "acc_bits": need})


def tiny_ir() -> IR:
    """x (3, 4-bit unsigned) -> dense h (2 neurons, 3-bit weights) -> two-point out (3 neurons,
    r from h with 5-bit weights, c from ctx with 2-bit weights)."""
    x = TensorSpec("x", 3, 4, False)
    ctx = TensorSpec("ctx", 2, 2, False)
    wh = np.array([[1, 0, -3], [2, 3, 0]])
    h = Layer("h", "dense", 2, {"main": make_site(wh, ("x",), [x], weight_bits=3, bits=4, signed=False)}, 4, False)
    hs = h.output
    wr = np.array([[7, -9], [0, 5], [-16, 0]])
    wc = np.array([[1, 0], [-1, 1], [0, -2]])
    r = make_site(wr, ("h",), [hs], weight_bits=5, bits=3, signed=True, activation="identity", shift=3)
    c = make_site(wc, ("ctx",), [ctx], weight_bits=2, bits=3, signed=True, activation="identity", shift=0)
    table = (np.arange(64).reshape(8, 8) % 16).astype(np.int64)
    out = Layer("out", "two_point", 3, {"r": r, "c": c}, 4, False, table=table, modulation="kay")
    ir = IR(inputs=(x, ctx), layers=(h, out))
    validate_ir(ir)
    return ir


def table_yaml(**actions: Any) -> dict[str, Any]:
    acts = {c: {"pJ": 0.0} for c in COUNTERS}
    acts.update(actions)
    return {"format": "apical-energy-table", "version": 1, "name": "test", "static_mW": 0.0, "actions": acts}


def write_table(path: Path, raw: Any) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def random_counts(rng: np.random.Generator, ir: IR, n: int) -> dict[str, dict[str, np.ndarray]]:
    return {layer.name: {c: rng.integers(0, 50, n).astype(np.int64) for c in COUNTERS} for layer in ir.layers}


# --------------------------------------------------------------------------- tables


def test_shipped_tables_load() -> None:
    assert set(shipped_tables()) >= {"mcc-ultrascale", "horowitz-45nm"}
    mcc = load_energy_table("mcc-ultrascale")
    # All of the paper's 80 pJ per synapse sits on the synaptic operation.
    assert mcc.actions["syn_ops"].energy_pJ(4, 0.0) == 80.0
    assert all(mcc.actions[c].energy_pJ(4, 0.0) == 0.0 for c in COUNTERS if c != "syn_ops")
    hz = load_energy_table("horowitz-45nm")
    # The published anchor points are reproduced by the scaling rules.
    assert hz.actions["syn_ops"].energy_pJ(8, 0.0) == pytest.approx(0.2)
    assert hz.actions["acc_updates"].energy_pJ(32, 0.0) == pytest.approx(0.1)
    assert hz.actions["weight_reads"].energy_pJ(64, 8 * 1024) == pytest.approx(10.0)
    assert hz.actions["weight_reads"].energy_pJ(64, 8 * 1024 + 1) == pytest.approx(20.0)
    assert hz.actions["weight_reads"].energy_pJ(64, 1024 * 1024) == pytest.approx(100.0)


def test_user_table_from_path(tmp_path: Path) -> None:
    raw = table_yaml(syn_ops={"by_bits": {2: 1.5, 5: 4.0}}, events={"pJ": 2.0})
    raw["static_mW"] = 3
    t = load_energy_table(write_table(tmp_path / "mine.yaml", raw))
    assert t.name == "test" and t.static_mW == 3.0 and t.source.endswith("mine.yaml")
    assert t.actions["syn_ops"].energy_pJ(5, 0.0) == 4.0
    with pytest.raises(ApicalError, match=r"actions\.syn_ops\.by_bits: no entry for 3 bits"):
        t.actions["syn_ops"].energy_pJ(3, 0.0, "energy table test")


BAD_TABLES = [
    (lambda r: r["actions"].update(flops={"pJ": 1.0}), r"actions\.flops: unknown field"),
    (lambda r: r["actions"].update(syn_ops={"pJ": -1.0}), r"actions\.syn_ops\.pJ: must be in \[0, "),
    (lambda r: r["actions"].pop("events"), r"actions\.events: missing"),
    (lambda r: r["actions"].update(syn_ops={"pJ": "80"}), r"actions\.syn_ops\.pJ: must be a number"),
    (lambda r: r.pop("static_mW"), r"static_mW: missing"),
    (lambda r: r.update(static_mW=-2), r"static_mW: must be in \[0, "),
    (lambda r: r.update(static_mW=True), r"static_mW: must be a number"),
    (lambda r: r.update(format="accelergy"), r"format: must be one of 'apical-energy-table', got 'accelergy'"),
    (lambda r: r.update(colour="red"), r"colour: unknown field"),
    (lambda r: r.update(name=7), r"name: must be a string"),
    (lambda r: r["actions"].update(syn_ops={"pJ": 1.0, "by_bits": {4: 1.0}}), r"actions\.syn_ops: needs exactly one"),
    (lambda r: r["actions"].update(syn_ops={"joules": 1.0}), r"actions\.syn_ops\.joules: unknown field"),
    (lambda r: r["actions"].update(syn_ops={"scaling": {"ref_bits": 8, "ref_pJ": 0.2}}),
     r"actions\.syn_ops\.scaling\.exponent: missing"),
    (lambda r: r["actions"].update(syn_ops={"scaling": {"ref_bits": 0, "ref_pJ": 0.2, "exponent": 2}}),
     r"actions\.syn_ops\.scaling\.ref_bits: must be in \[1, 64\], got 0"),
    (lambda r: r["actions"].update(weight_reads={"sram_per_bit": [{"kbytes": 32, "pJ": 1}, {"kbytes": 8, "pJ": 2}]}),
     r"actions\.weight_reads\.sram_per_bit: kbytes must be strictly ascending"),
    (lambda r: r["actions"].update(act_reads={"by_bits": {"four": 1.0}}), r"actions\.act_reads\.by_bits\.four: must be an integer"),
    (lambda r: r.update(actions=[1, 2]), r"actions: must be a mapping"),
    (lambda r: r.update(static_mW=float("nan")), r"static_mW: must be a finite number, got nan"),
    (lambda r: r["actions"].update(events={"pJ": float("inf")}), r"actions\.events\.pJ: must be a finite number"),
    (lambda r: r["actions"].update(events={"by_bits": {4: -1.0}}), r"actions\.events\.by_bits\.4: must be in \[0, "),
    (lambda r: r.update(version=2), r"version: must be one of 1, got 2"),
]


@pytest.mark.parametrize(("edit", "message"), BAD_TABLES)
def test_bad_table_names_file_and_field(tmp_path: Path, edit: Any, message: str) -> None:
    raw = table_yaml()
    edit(raw)
    path = write_table(tmp_path / "bad.yaml", raw)
    with pytest.raises(ApicalError, match=message) as e:
        load_energy_table(path)
    assert str(e.value).startswith(path)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_table_files(tmp_path: Path) -> None:
    with pytest.raises(ApicalError, match="energy table not found"):
        load_energy_table(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "broken.yaml"
    bad.write_text("actions: [unclosed\n")
    with pytest.raises(ApicalError, match=r"broken\.yaml.*malformed YAML"):
        load_energy_table(str(bad))


# --------------------------------------------------------------------------- arithmetic


def test_hand_computed_energy_flat_table() -> None:
    """Flat per-action energies and static power: expectation = counts x pJ + mW x time."""
    ir = tiny_ir()
    pj = {c: float(i + 1) * 0.5 + 0.25 for i, c in enumerate(COUNTERS)}
    raw = table_yaml(**{c: {"pJ": pj[c]} for c in COUNTERS})
    raw["static_mW"] = 12.5
    table = parse_energy_table(raw, "test")
    rng = np.random.default_rng(1)
    counts = random_counts(rng, ir, 5)
    pes, clock = 3, 125.0
    e = energy_from_counts(ir, counts, table, schedule=compile_schedule(ir, pes), clock_mhz=clock)
    for n in range(5):
        dyn = sum(int(counts[layer.name][c][n]) * pj[c] for layer in ir.layers for c in COUNTERS)
        cycles = sum(math.ceil(int(counts[layer.name]["syn_ops"][n]) / pes) for layer in ir.layers)
        static = 12.5e-3 * (cycles / (clock * 1e6)) * 1e12  # W x s -> pJ
        assert e.cycles[n] == cycles
        assert e.static_pJ[n] == pytest.approx(static, rel=1e-12)
        assert e.total_pJ[n] == pytest.approx(dyn + static, rel=1e-12)
        for li, layer in enumerate(ir.layers):
            for ai, c in enumerate(COUNTERS):
                assert e.per_layer_pJ[n, li, ai] == int(counts[layer.name][c][n]) * pj[c]
    syn = sum(int(counts[layer.name]["syn_ops"].sum()) for layer in ir.layers)
    assert e.per_synapse_pJ == pytest.approx(float(e.total_pJ.sum()) / syn, rel=1e-12)
    s = e.summary()
    assert s["per_inference_pJ"]["max"] == pytest.approx(float(e.total_pJ.max()))
    assert set(s["per_component_pJ"]) == set(COMPONENTS)
    assert sum(s["per_component_pJ"].values()) == pytest.approx(s["per_inference_pJ"]["mean"], rel=1e-12)


def test_hand_computed_energy_bit_and_memory_rules() -> None:
    """Bit-width and memory-size rules, applied to the tiny IR's hardware words by hand."""
    ir = tiny_ir()
    raw = table_yaml(
        syn_ops={"scaling": {"ref_bits": 8, "ref_pJ": 0.2, "exponent": 2}},
        weight_reads={"sram_per_bit": [{"kbytes": 0.005, "pJ": 0.1}, {"kbytes": 1, "pJ": 0.7}]},
        acc_updates={"by_bits": {b: float(b) for b in range(2, 49)}},
        table_lookups={"sram_per_bit": [{"kbytes": 0.01, "pJ": 0.3}, {"kbytes": 64, "pJ": 0.9}]},
    )
    table = parse_energy_table(raw, "test")
    pes = 2
    sched = compile_schedule(ir, pes)
    # By hand, from the stored entry: accumulator address + bank + widest weight (5 bits).
    word = max(1, (sched.acc_depth - 1).bit_length()) + 1 + 5
    weight_mem = max(sched.synapses_per_pe) * word / 8  # the largest PE weight memory
    acc = max(s.acc_bits for layer in ir.layers for s in layer.sites.values())
    table_bytes = len(sched.table) * sched.act_bits / 8
    hw = hardware_words(sched)
    assert hw.bits["syn_ops"] == 5 and hw.bits["weight_reads"] == word
    assert hw.memory_bytes["weight_reads"] == weight_mem
    rng = np.random.default_rng(2)
    counts = random_counts(rng, ir, 4)
    e = energy_from_counts(ir, counts, table, schedule=compile_schedule(ir, pes), clock_mhz=100.0)
    unit = {c: 0.0 for c in COUNTERS}
    unit["syn_ops"] = 0.2 * (5 / 8) ** 2
    unit["weight_reads"] = (0.1 if weight_mem <= 0.005 * 1024 else 0.7) * word
    unit["acc_updates"] = float(acc)
    unit["table_lookups"] = (0.3 if table_bytes <= 0.01 * 1024 else 0.9) * sched.act_bits
    for c in COUNTERS:
        assert e.unit_pJ[c] == pytest.approx(unit[c], rel=1e-12), c
    tot = {c: sum(counts[layer.name][c] for layer in ir.layers) for c in COUNTERS}
    expect = sum(tot[c] * unit[c] for c in COUNTERS)
    np.testing.assert_allclose(e.total_pJ, expect, rtol=1e-12)


def test_golden_counts_on_tiny_ir() -> None:
    """Golden counts of the hand-built IR through the mcc table: 80 pJ x synaptic ops."""
    ir = tiny_ir()
    rng = np.random.default_rng(3)
    inputs = random_inputs(rng, ir, 16)
    g = run_golden(ir, inputs)
    e = energy_from_counts(ir, g.counts, load_energy_table("mcc-ultrascale"), schedule=compile_schedule(ir, 4), clock_mhz=200.0)
    # syn_ops recounted independently: each non-zero input walks its whole fan-out column.
    x = np.concatenate([inputs["x"]], axis=1)
    h = g.outputs["h"]
    fan = lambda w: (np.asarray(w) != 0).sum(axis=0)  # noqa: E731
    wh = ir.layers[0].sites["main"].dense_weights(2)
    wr = ir.layers[1].sites["r"].dense_weights(3)
    wc = ir.layers[1].sites["c"].dense_weights(3)
    syn = (x != 0) @ fan(wh) + (h != 0) @ fan(wr) + (inputs["ctx"] != 0) @ fan(wc)
    np.testing.assert_array_equal(e.syn_ops, syn)
    np.testing.assert_array_equal(e.total_pJ, syn * 80.0)
    assert e.per_synapse_pJ == 80.0 or syn.sum() == 0


@pytest.mark.parametrize("seed", range(6))
def test_per_layer_and_total_counts_give_identical_energy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ir = random_ir(rng, layers=3)
    g = run_golden(ir, random_inputs(rng, ir, 12))
    table = load_energy_table("horowitz-45nm")
    a = energy_from_counts(ir, g.counts, table, schedule=compile_schedule(ir, 4), clock_mhz=150.0)
    b = energy_from_counts(ir, {ALL_LAYERS: g.total_counts()}, table, schedule=compile_schedule(ir, 4), clock_mhz=150.0, cycles=a.cycles)
    assert np.array_equal(a.component_pJ(), b.component_pJ())
    assert np.array_equal(a.total_pJ, b.total_pJ)


def test_bad_counts() -> None:
    ir = tiny_ir()
    table = load_energy_table("mcc-ultrascale")
    counts = random_counts(np.random.default_rng(0), ir, 3)
    with pytest.raises(ApicalError, match="cycles: required"):
        energy_from_counts(ir, {ALL_LAYERS: counts["h"]}, table, schedule=compile_schedule(ir, 2), clock_mhz=100.0)
    del counts["out"]["events"]
    with pytest.raises(ApicalError, match=r"counts\['out'\]: missing counter 'events'"):
        energy_from_counts(ir, counts, table, schedule=compile_schedule(ir, 2), clock_mhz=100.0)
    with pytest.raises(ApicalError, match="no counts for IR layer 'out'"):
        energy_from_counts(ir, {"h": counts["h"]}, table, schedule=compile_schedule(ir, 2), clock_mhz=100.0)


# --------------------------------------------------------------------------- the energy step


def make_run(tmp_path: Path, seed: int = 0, n: int = 10, baseline: bool = False) -> tuple[Path, IR, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ir = random_ir(rng, kind="mixed", layers=2)
    inputs = random_inputs(rng, ir, n)
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", **inputs, labels=np.zeros(n, dtype=np.int64))
    if baseline:
        bir = random_ir(rng, kind="dense", layers=2)
        save_ir(bir, run / "baseline" / "ir")
        np.savez(run / "baseline" / "test_vectors.npz", **random_inputs(rng, bir, n))
    return run, ir, inputs


def write_sim(run: Path, ir: IR, inputs: dict[str, np.ndarray], indices: list[int],
              perturb: tuple[int, str] | None = None) -> None:
    g = run_golden(ir, inputs)
    tot = g.total_counts()
    per = []
    for k, i in enumerate(indices):
        counters = {c: int(tot[c][i]) for c in COUNTERS}
        if perturb is not None and perturb[0] == k:
            counters[perturb[1]] += 1
        per.append({"counters": counters, "cycles": 7 + 3 * k})
    (run / "sim.json").write_text(json.dumps({"sample_indices": indices, "per_sample": per, "pes": 8}))


def test_energy_run_rtl_agrees(tmp_path: Path) -> None:
    run, ir, inputs = make_run(tmp_path)
    write_sim(run, ir, inputs, [1, 4, 5])
    out = energy_run(load_config(), run, table="horowitz-45nm")
    on_disk = json.loads((run / "energy.json").read_text())
    assert on_disk["rtl"] == out["rtl"]
    assert out["rtl_matches_golden"] is True
    assert out["rtl"]["rtl_pJ"] == out["rtl"]["golden_pJ"]
    assert out["rtl"]["mismatched_counters"] == []
    assert out["baseline"]["available"] is False and out["ratios"] is None
    assert out["table"] == "horowitz-45nm" and out["samples"] == 10
    assert "metrics" in out and out["metrics"]["synapses"] == ir.synapses


@pytest.mark.parametrize(("counter", "energy_differs"), [("syn_ops", True), ("act_reads", False)])
def test_energy_run_rtl_perturbed_counter(tmp_path: Path, counter: str, energy_differs: bool) -> None:
    """mcc-ultrascale costs only syn_ops: a wrong act_reads counter leaves the energy equal
    but must still fail the check."""
    run, ir, inputs = make_run(tmp_path, seed=1)
    write_sim(run, ir, inputs, [0, 2, 3], perturb=(1, counter))
    out = energy_run(load_config(), run, table="mcc-ultrascale")
    rtl = out["rtl"]
    assert out["rtl_matches_golden"] is False
    assert rtl["mismatched_counters"] == [counter]
    assert rtl["energy_match"] is (not energy_differs)
    assert (rtl["rtl_pJ"] != rtl["golden_pJ"]) is energy_differs


def test_energy_run_baseline_ratio(tmp_path: Path) -> None:
    run, ir, inputs = make_run(tmp_path, seed=2, baseline=True)
    out = energy_run(load_config(), run)
    assert out["table"] == "mcc-ultrascale"
    g = run_golden(ir, inputs)
    syn = g.total_counts()["syn_ops"]
    assert out["per_inference_pJ"]["mean"] == pytest.approx(80.0 * syn.mean(), rel=1e-12)
    assert out["per_synapse_pJ"] == pytest.approx(80.0)
    base = out["baseline"]
    assert base["available"] is True
    assert out["ratios"]["per_inference"] == pytest.approx(out["per_inference_pJ"]["mean"] / base["per_inference_pJ"]["mean"])
    assert out["ratios"]["per_synapse"] == pytest.approx(1.0)


def test_energy_run_malformed_sim_json(tmp_path: Path) -> None:
    run, _, _ = make_run(tmp_path, seed=3)
    (run / "sim.json").write_text("{not json")
    with pytest.raises(ApicalError, match=r"sim\.json: malformed JSON"):
        energy_run(load_config(), run)
    (run / "sim.json").write_text(json.dumps({"sample_indices": [99], "per_sample": [{"counters": {}}]}))
    with pytest.raises(ApicalError, match=r"sim\.json: sample_indices: 99"):
        energy_run(load_config(), run)
