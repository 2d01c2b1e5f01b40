"""Block tests of the top's sequencing parts (Amaranth simulator): `Controller` and `FinalisePipeline`.

The controller writes each input beat to its word and lane and steps through
every layer (gate passes included); the finalise pipeline writes every
neuron of a layer exactly once, at its stored position, with the reductions
its mode asks for and the counter increments the golden model counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from apical.hw.controller import Controller
from apical.hw.finalise import FinalisePipeline
from apical.hw.schedule import Schedule, compile_schedule
from apical.sw.ir_random import random_ir


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("pes", "gate"), [(1, None), (4, None), (2, "r")])
def test_controller_writes_inputs_and_sequences_layers(pes: int, gate: str | None) -> None:
    rng = np.random.default_rng(40 + pes)
    ir = random_ir(rng, kind="two_point" if gate else "mixed", layers=3, gate=gate)
    s = compile_schedule(ir, pes)
    dut = Controller(s, 16)
    n_beats = sum(s.tensors[t].size for t in range(s.n_inputs))
    # Expected fin_start sequence: (layer, gate pass), with the scan started alongside.
    expected = []
    for li, lp in enumerate(s.layers):
        if lp.gate is not None:
            expected.append((li, 1, lp.segments[lp.gate_segments]))
        nxt = s.layers[li + 1].segments[0] if li + 1 < len(s.layers) else None
        expected.append((li, 0, nxt))

    async def bench(ctx):
        beat = 0
        for t in range(s.n_inputs):
            tp = s.tensors[t]
            for e in range(tp.size):
                ctx.set(dut.input.valid, 1)
                ctx.set(dut.input.payload, (beat * 7 + 3) & 0xFFFF)
                assert ctx.get(dut.input.ready)
                assert ctx.get(dut.write.addr) == tp.word_base + e // s.lanes, (t, e)
                assert ctx.get(dut.write.en) == 1 << (e % s.lanes), (t, e)
                lane = ctx.get(dut.write.data) & ((1 << s.act_bits) - 1)
                assert lane == (beat * 7 + 3) & 0xFFFF & ((1 << s.act_bits) - 1)
                assert ctx.get(dut.clear_counters) == (beat == 0)
                assert ctx.get(dut.scan_start) == (beat == n_beats - 1)
                if beat == n_beats - 1:
                    assert ctx.get(dut.scan_seg) == 0
                assert not ctx.get(dut.running)
                await ctx.tick()
                beat += 1
        ctx.set(dut.input.valid, 0)
        assert not ctx.get(dut.input.ready)
        assert ctx.get(dut.running)
        # RUN: nothing starts while the scanner, the PEs or the finalisers are busy. Idleness is
        # registered: a busy flag holds the start back in the next cycle.
        for busy in (dut.scan_busy, dut.pe_busy, dut.fin_active):
            ctx.set(busy, 1)
            await ctx.tick()
            assert not ctx.get(dut.fin_start)
            ctx.set(busy, 0)
        await ctx.tick()
        for i, (layer, gate_pass, seg) in enumerate(expected):
            if i:
                # What was just started is busy from now on: the idleness seen in the start
                # cycle must not start anything again.
                assert not ctx.get(dut.fin_start)
                await ctx.tick()
            assert ctx.get(dut.fin_start)
            assert (ctx.get(dut.fin_layer), ctx.get(dut.fin_gate)) == (layer, gate_pass)
            assert ctx.get(dut.scan_start) == (seg is not None)
            if seg is not None:
                assert ctx.get(dut.scan_seg) == seg
            await ctx.tick()
        # FINISH: the output stage starts once no finaliser write is left.
        ctx.set(dut.fin_busy, 1)
        assert not ctx.get(dut.out_start)
        await ctx.tick()
        ctx.set(dut.fin_busy, 0)
        assert ctx.get(dut.out_start)
        await ctx.tick()
        ctx.set(dut.out_valid, 1)
        assert not ctx.get(dut.running)  # an output beat offered: the cycle count has stopped
        ctx.set(dut.out_done, 1)
        await ctx.tick()
        ctx.set(dut.out_done, 0)
        assert ctx.get(dut.input.ready)

    _run(dut, bench)


def _finalise_layer(s: Schedule, li: int, gate_pass: bool) -> dict:
    """Run one finalisation of layer ``li``; every PE's accumulators read 1 (bank 0) and 0 (bank 1)."""
    dut = FinalisePipeline(s)
    P = s.pes
    got = {"writes": [], "acc0": set(), "clear": [], "act_writes": 0, "requants": 0, "table_lookups": 0,
           "fix": 0, "words": 0}

    async def bench(ctx):
        for p in range(P):
            ctx.set(dut.acc0[p], 1)
            if dut.acc_ports == 2:
                ctx.set(dut.acc0_b[p], 1)
        ctx.set(dut.start, 1)
        ctx.set(dut.layer, li)
        ctx.set(dut.gate, int(gate_pass))
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(4 * s.acc_half + 20):
            for p in range(P):
                if ctx.get(dut.fin[p].valid):
                    got["acc0"].add(ctx.get(dut.fin[p].acc0))
            en = ctx.get(dut.write.en)
            for lane in range(P):
                if en >> lane & 1:
                    got["writes"].append((ctx.get(dut.write.addr), lane))
            if ctx.get(dut.clear):
                got["clear"].append(ctx.get(dut.clear))
            for c in ("act_writes", "requants", "table_lookups"):
                got[c] += ctx.get(getattr(dut, c))
            if s.gated:
                got["fix"] += sum(ctx.get(dut.fix_en[p]) for p in range(P))
            await ctx.tick()
        assert not ctx.get(dut.active) and not ctx.get(dut.busy)
        got["words"] = ctx.get(dut.words)

    _run(dut, bench)
    return got


@pytest.mark.parametrize(("pes", "mode", "seed"),
                         [(1, "neuron", 1), (4, "neuron", 2), (8, "group", 3), (2, "synapse", 10), (4, "synapse", 5)])
def test_finalise_pipeline_writes_every_neuron_once(pes: int, mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = (pes - 1, pes + 1) if mode == "synapse" else (pes + 3, 2 * pes + 3)
    ir = random_ir(rng, kind="two_point", layers=2, input_size=(20, 30), hidden_size=size, density=0.9)
    s = compile_schedule(ir, pes, max_group=1 if mode == "synapse" else 8)
    modes = {"synapse" if lp.mode == "synapse" else "group" if lp.group > 1 else "neuron" for lp in s.layers}
    assert mode in modes, modes
    for li, lp in enumerate(s.layers):
        got = _finalise_layer(s, li, False)
        tp = s.tensors[lp.out_tensor]
        want = sorted((tp.word_base + pos // s.lanes, pos % s.lanes) for pos in tp.positions)
        assert sorted(got["writes"]) == want, f"layer {li} ({lp.mode}, G={lp.group})"
        assert got["words"] == tp.words
        assert got["clear"] == [1 << lp.region]
        # The sums a lane finalises: its group's partial accumulators, or every PE's (synapse mode).
        assert got["acc0"] == {pes if lp.mode == "synapse" else lp.group}, (lp.mode, lp.group)
        assert got["act_writes"] == lp.size
        assert got["requants"] == lp.size * len(lp.sites)
        assert got["table_lookups"] == (lp.size if lp.kind == "two_point" else 0)


@pytest.mark.parametrize(("pes", "max_group", "seed"), [(16, 8, 1), (32, 4, 2), (64, 8, 3), (32, 1, 4), (16, 1, 5)])
def test_finalise_reduction_sums_each_group_through_its_registers(pes: int, max_group: int, seed: int) -> None:
    """The testbench stands for the PEs' registered reads: every PE holds a different value at
    every address, presented the cycle after the address. Each lane must get, for the step it is
    told (``fin.k``), its group's sum (neuron mode) or the sum over all PEs (synapse mode, the
    second tree for odd lanes when dual), so the reduction's registers and the delay line agree."""
    rng = np.random.default_rng(seed)
    size = (pes // 4, pes // 2) if max_group == 1 else (pes // 2 + 1, pes + 3)
    ir = random_ir(rng, kind="two_point", layers=2, input_size=(20, 30), hidden_size=size, density=0.9)
    s = compile_schedule(ir, pes, max_group=max_group)
    table = rng.integers(-1000, 1000, size=(3, pes, s.acc_depth)).tolist()  # acc0, acc1, acc0 port b
    seen = set()
    for li, lp in enumerate(s.layers):
        seen.add((lp.mode, lp.group))
        dut = FinalisePipeline(s)
        got: dict[int, dict] = {p: {} for p in range(pes)}

        async def bench(ctx, dut=dut, got=got, li=li):
            ctx.set(dut.start, 1)
            ctx.set(dut.layer, li)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(2 * s.acc_half + 20):
                for p in range(pes):
                    if ctx.get(dut.fin[p].valid):
                        got[p][ctx.get(dut.fin[p].k)] = (ctx.get(dut.fin[p].acc0), ctx.get(dut.fin[p].acc1))
                addr = ctx.get(dut.acc_addr) % s.acc_depth  # beyond the layer when idle
                addr_b = ctx.get(dut.acc_addr_b) % s.acc_depth if dut.acc_ports == 2 else 0
                await ctx.tick()
                for q in range(pes):
                    ctx.set(dut.acc0[q], table[0][q][addr])
                    ctx.set(dut.acc1[q], table[1][q][addr])
                    if dut.acc_ports == 2:
                        ctx.set(dut.acc0_b[q], table[2][q][addr_b])
                        ctx.set(dut.acc1_b[q], table[1][q][addr_b])

        _run(dut, bench)
        base = lp.region * s.acc_half
        for p in range(pes):
            assert got[p], f"P={pes} layer {li}: lane {p} never valid"
            for k, sums in got[p].items():
                a = base + k
                if lp.mode == "synapse":
                    t0 = table[2] if dut.acc_ports == 2 and p % 2 else table[0]
                    want = (sum(t0[q][a] for q in range(pes)), sum(table[1][q][a] for q in range(pes)))
                else:
                    g = lp.group
                    group = range((p % (pes // g)) * g, (p % (pes // g)) * g + g)
                    want = (sum(table[0][q][a] for q in group), sum(table[1][q][a] for q in group))
                assert sums == want, f"P={pes} layer {li} ({lp.mode}, G={lp.group}) lane {p} step {k}"
    assert seen != {("neuron", 1)}, seen  # some layer sums over several PEs


@pytest.mark.parametrize(("gate", "pes", "max_group"), [("r", 2, 8), ("c", 4, 1)])
def test_finalise_pipeline_gate_pass_writes_fixed_bits_not_outputs(gate: str, pes: int, max_group: int) -> None:
    ir = random_ir(np.random.default_rng(7), kind="two_point", layers=2, input_size=(20, 30),
                   hidden_size=(pes + 3, pes + 3), gate=gate)
    s = compile_schedule(ir, pes, max_group=max_group)
    li, lp = next((i, lp) for i, lp in enumerate(s.layers) if lp.gate is not None)
    got = _finalise_layer(s, li, True)
    assert got["writes"] == [] and got["act_writes"] == 0 and got["table_lookups"] == 0
    assert got["clear"] == []  # the layer's own finalisation still reads the region
    assert got["requants"] == lp.size  # the gate site of every neuron
    assert got["fix"] > 0


def test_parameters_are_validated_with_named_errors() -> None:
    s = compile_schedule(random_ir(np.random.default_rng(2), kind="dense", layers=1), 2)
    with pytest.raises(TypeError, match="schedule"):
        FinalisePipeline("s")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schedule"):
        Controller(None, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_width"):
        Controller(s, 0)
