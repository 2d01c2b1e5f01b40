"""Whole-top tests of `ApicalTop` in the Amaranth simulator against `run_golden`.

Small random IRs (dense, sparse K, two-point, multi-source) on 1, 2, 4 and 8
PEs: every output value, the class and every counter must equal the golden
model's; back-pressure is random on both streams; a reset in the middle of a
stream must leave the design able to run inferences again.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from apical.hw.schedule import compile_schedule
from apical.hw.top import ApicalTop
from apical.sw.counts import COUNTERS
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Requant, validate_ir
from apical.sw.ir_random import ir_strategy, random_inputs, random_ir


def _beats(ir: IR, inputs: dict[str, np.ndarray], n: int) -> list[int]:
    """Input stream of sample ``n``: every IR input in order, two's complement in the tdata width."""
    return [int(v) for t in ir.inputs for v in inputs[t.name][n]]


def simulate(ir: IR, pes: int, inputs: dict[str, np.ndarray], *, seed: int = 0,
             in_stall: float = 0.3, out_stall: float = 0.3, reset_after: int | None = None,
             schedule=None):
    """Run every sample through the top; return per-sample (values, class, counters)."""
    top = ApicalTop(ir, pes, schedule=schedule)
    rst = None
    rng = np.random.default_rng(seed)
    n_samples = next(iter(inputs.values())).shape[0]
    in_w = len(top.s_axis_tdata)
    out_w = len(top.m_axis_tdata)
    last = ir.layers[-1]
    results = []

    async def bench(ctx):
        if reset_after is not None:
            # Feed part of a stream, reset mid-inference, then run normally.
            beats = _beats(ir, inputs, 0)[:reset_after]
            for b in beats:
                ctx.set(top.s_axis_tdata, b & ((1 << in_w) - 1))
                ctx.set(top.s_axis_tvalid, 1)
                await ctx.tick()
            ctx.set(top.s_axis_tvalid, 0)
            for _ in range(3):
                await ctx.tick()
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
        for n in range(n_samples):
            beats = _beats(ir, inputs, n)
            i = 0
            while i < len(beats):
                stall = rng.random() < in_stall
                ctx.set(top.s_axis_tvalid, 0 if stall else 1)
                ctx.set(top.s_axis_tdata, beats[i] & ((1 << in_w) - 1))
                ctx.set(top.s_axis_tlast, int(i == len(beats) - 1))
                accepted = not stall and ctx.get(top.s_axis_tready)
                await ctx.tick()
                if accepted:
                    i += 1
            ctx.set(top.s_axis_tvalid, 0)
            got = []
            cycles = 0
            while True:
                ready = rng.random() >= out_stall
                ctx.set(top.m_axis_tready, int(ready))
                beat = None
                if ready and ctx.get(top.m_axis_tvalid):
                    beat = (ctx.get(top.m_axis_tdata), ctx.get(top.m_axis_tlast))
                await ctx.tick()
                cycles += 1
                assert cycles < 20_000, f"sample {n}: no output after {cycles} cycles"
                if beat is not None:
                    got.append(beat)
                    if beat[1]:
                        break
            ctx.set(top.m_axis_tready, 0)
            vals = []
            for v, _ in got[:-1]:
                vals.append(v - (1 << out_w) if last.out_signed and v >> (out_w - 1) else v)
            counters = {c: ctx.get(getattr(top, f"cnt_{c}")) for c in ("cycles", *COUNTERS)}
            results.append((vals, got[-1][0], counters, [b for _, b in got]))

    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.top = top
    rst = cd.rst
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def check(ir: IR, pes: int, inputs: dict[str, np.ndarray], **kw) -> list[dict]:
    g = run_golden(ir, inputs)
    res = simulate(ir, pes, inputs, **kw)
    last = ir.layers[-1].name
    totals = g.total_counts()
    out = []
    for n, (vals, cls, counters, lasts) in enumerate(res):
        exp = g.outputs[last][n].tolist()
        assert len(vals) == len(exp), f"sample {n}: {len(vals)} output beats, expected {len(exp)}"
        assert lasts[:-1] == [0] * len(exp), f"sample {n}: tlast before the class beat"
        for j, (a, b) in enumerate(zip(vals, exp, strict=True)):
            assert a == b, f"P={pes} sample {n}: layer {last} neuron {j}: expected {b}, got {a}"
        assert cls == int(g.classes[n]), f"P={pes} sample {n}: class expected {int(g.classes[n])}, got {cls}"
        for c in COUNTERS:
            assert counters[c] == int(totals[c][n]), (
                f"P={pes} sample {n}: counter {c}: expected {int(totals[c][n])}, got {counters[c]}")
        # No PE does more than one synapse per cycle: the cycle counter is bounded below.
        assert counters["cycles"] * pes >= counters["syn_ops"], f"sample {n}: cycles {counters['cycles']} too few"
        out.append(counters)
    return out


@pytest.mark.parametrize("pes", [1, 2, 4, 8])
@pytest.mark.parametrize("kind", ["dense", "sparse", "two_point", "mixed"])
def test_top_matches_golden(kind: str, pes: int) -> None:
    seed = {"dense": 1, "sparse": 2, "two_point": 3, "mixed": 4}[kind] * 10 + pes
    rng = np.random.default_rng(seed)
    ir = random_ir(rng, kind=kind, layers=3 if kind == "mixed" else 2)
    inputs = random_inputs(rng, ir, 3)
    check(ir, pes, inputs, seed=seed)


@pytest.mark.parametrize("pes", [2, 4, 8])
def test_top_small_output_layers_synapse_partitioned(pes: int) -> None:
    # Wide inputs onto few outputs: the schedule spreads synapses (partial sums + reduction,
    # replicated fan-out with least-loaded dispatch); check that path bit-exactly.
    rng = np.random.default_rng(70 + pes)
    ir = random_ir(rng, kind="dense", layers=2, input_size=(24, 28), hidden_size=(pes + 1, pes + 1),
                   density=0.9)
    sched = compile_schedule(ir, pes, max_group=1)
    assert any(lp.mode == "synapse" and lp.replicas > 1 for lp in sched.layers), [
        (lp.mode, lp.replicas) for lp in sched.layers]
    check(ir, pes, random_inputs(rng, ir, 3), seed=pes, schedule=sched)


@pytest.mark.parametrize("pes", [4, 8])
def test_top_neurons_shared_by_groups_of_pes(pes: int) -> None:
    # Few neurons per PE: each neuron's synapses are dealt over a group of PEs and the
    # partial sums added at finalisation (lane p finalises group p % (P / G)).
    rng = np.random.default_rng(90 + pes)
    ir = random_ir(rng, kind="two_point", layers=2, input_size=(20, 30), hidden_size=(pes + 3, pes + 3),
                   density=0.8)
    sched = compile_schedule(ir, pes)
    assert any(lp.mode == "neuron" and lp.group > 1 for lp in sched.layers), [
        (lp.mode, lp.group) for lp in sched.layers]
    check(ir, pes, random_inputs(rng, ir, 3), seed=pes, schedule=sched)


@pytest.mark.parametrize(("pes", "where"), [(2, "input"), (4, "compute")])
def test_reset_mid_stream_recovers(pes: int, where: str) -> None:
    rng = np.random.default_rng(50 + pes)
    ir = random_ir(rng, kind="mixed", layers=2)
    inputs = random_inputs(rng, ir, 2)
    n_beats = sum(t.size for t in ir.inputs)
    # "input": reset after part of the first stream; "compute": after all of it, while layers run.
    reset_after = max(1, n_beats // 2) if where == "input" else n_beats
    check(ir, pes, inputs, seed=pes, reset_after=reset_after)


def test_argmax_takes_first_index_on_ties() -> None:
    rng = np.random.default_rng(61)
    ir = random_ir(rng, kind="dense", layers=2, hidden_size=(6, 6))
    last = ir.layers[-1]
    site = last.sites["main"]
    big = 1 << (site.acc_bits - 2)
    # Neurons 2 and 4 saturate at the top of the range, the others at the bottom: a tie at 2.
    bias = np.full(last.size, -big, dtype=np.int64)
    bias[[2, 4]] = big
    acc_bits = site.acc_bits + 1
    from apical.sw.ir import replace_site
    last = replace_site(last, "main", bias=bias, acc_bits=acc_bits, requant=Requant(0, 1))
    ir = IR(ir.inputs, (ir.layers[0], last), ir.meta)
    validate_ir(ir)
    inputs = random_inputs(rng, ir, 2)
    g = run_golden(ir, inputs)
    assert (g.outputs[last.name][:, 2] == g.outputs[last.name][:, 4]).all()
    assert (g.classes == 2).all()
    check(ir, 2, inputs)


def test_zero_activity_costs_no_synaptic_cycles() -> None:
    rng = np.random.default_rng(80)
    ir = random_ir(rng, kind="dense", layers=2, input_size=(16, 16), hidden_size=(8, 8), density=0.9,
                   bits=(2, 8), raw_output=0.0)
    inputs = random_inputs(rng, ir, 2, zero_fraction=0.0)
    zero = {k: np.zeros_like(v) for k, v in inputs.items()}
    busy = check(ir, 2, inputs)
    idle = check(ir, 2, zero)
    for b, z in zip(busy, idle, strict=True):
        assert z["syn_ops"] < b["syn_ops"]
        # Every synapse skipped in the zero run is at least half a cycle saved on 2 PEs.
        assert b["cycles"] - z["cycles"] >= (b["syn_ops"] - z["syn_ops"]) // 2 - 4, (b, z)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(ir=ir_strategy(layers=2), pes=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_top_matches_golden_on_random_irs(ir: IR, pes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    check(ir, pes, random_inputs(rng, ir, 2), seed=seed)


@pytest.mark.parametrize("pes", [1, 2, 4, 8])
@pytest.mark.parametrize("gate", ["r", "c"])
def test_top_context_gated_matches_golden(gate: str, pes: int) -> None:
    # The gate site first, a gate pass setting fixed bits, then the other site with the
    # synapses into fixed neurons skipped: every value and counter equals the gated golden model.
    seed = 100 + pes + (10 if gate == "c" else 0)
    rng = np.random.default_rng(seed)
    ir = random_ir(rng, kind="two_point", layers=3, gate=gate)
    assert ir.gated
    inputs = random_inputs(rng, ir, 3)
    gated = check(ir, pes, inputs, seed=seed)
    ungated = run_golden(ir.ungated(), inputs).total_counts()
    skipped = [int(ungated["syn_ops"][n]) - c["syn_ops"] for n, c in enumerate(gated)]
    assert sum(skipped) > 0, skipped  # the draw really skips synapses


@pytest.mark.parametrize(("gate", "pes", "max_group", "seed"),
                         [("r", 4, 1, 301), ("c", 8, 1, 301), ("r", 8, 8, 300), ("c", 4, 8, 300)])
def test_top_context_gated_synapse_and_group_partitioned(gate: str, pes: int, max_group: int, seed: int) -> None:
    # Fixed bits reach every PE holding a neuron: all PEs (synapse mode), a group's PEs (groups of G).
    rng = np.random.default_rng(seed)
    size = (pes - 1, pes + 1) if max_group == 1 else (pes + 3, pes + 3)
    ir = random_ir(rng, kind="two_point", layers=2, input_size=(20, 30), hidden_size=size, density=0.9, gate=gate)
    sched = compile_schedule(ir, pes, max_group=max_group)
    modes = [(lp.mode, lp.group) for lp in sched.layers if lp.gate is not None]
    want = "synapse" if max_group == 1 else "neuron"
    assert any(mo == want and (want == "synapse" or g > 1) for mo, g in modes), modes
    check(ir, pes, random_inputs(rng, ir, 3), seed=pes, schedule=sched)


@pytest.mark.parametrize(("gate", "pes"), [("r", 1), ("c", 2)])
def test_top_context_gated_events_wait_for_a_long_gate_pass(gate: str, pes: int) -> None:
    # Many neurons per PE: the gate pass outlasts the other site's scan-to-PE latency, so
    # the PEs must hold those events until every fixed bit is written (else they count more).
    rng = np.random.default_rng(500 + pes)
    ir = random_ir(rng, kind="two_point", layers=2, hidden_size=(16, 24), gate=gate)
    check(ir, pes, random_inputs(rng, ir, 3), seed=1)
