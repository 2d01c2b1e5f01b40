"""Block tests of the PE array against the golden building blocks (Amaranth simulator).

Requantiser vs `requantize`, PE accumulation vs a numpy dot, finaliser
(requantise + modulation table) vs `modulate`, and the schedule's bookkeeping.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from apical.hw.finaliser import LATENCY, Finaliser, finaliser_in_bits
from apical.hw.pe import ProcessingElement
from apical.hw.requant import Requantizer
from apical.hw.schedule import compile_schedule
from apical.sw.golden import modulate, requantize
from apical.sw.ir import Requant, Site, int_range
from apical.sw.ir_random import random_inputs, random_ir


def _site(shift: int, mult: int, relu: bool, bits: int, signed: bool) -> Site:
    z = np.zeros(0, dtype=np.int64)
    return Site(sources=("x",), in_size=0, weight_bits=4, indptr=np.zeros(1, dtype=np.int64), indices=z,
                data=z, bias=z, acc_bits=20, requant=Requant(shift, mult), bits=bits, signed=signed,
                activation="relu" if relu else "identity")


@pytest.mark.parametrize(
    ("shift", "mult", "relu", "bits", "signed"),
    [(3, 1, False, 4, True), (1, 1, True, 3, False), (0, 1, False, 6, True), (-2, 1, False, 8, True),
     (9, 37, True, 5, False), (5, 200, False, 7, True), (30, 1, False, 4, True)],
)
def test_requantizer_matches_golden(shift: int, mult: int, relu: bool, bits: int, signed: bool) -> None:
    in_bits = 20
    dut = Requantizer(in_bits=in_bits, shift=shift, multiplier=mult, relu=relu, bits=bits, signed_out=signed)
    site = _site(shift, mult, relu, bits, signed)
    rng = np.random.default_rng(abs(shift) * 1000 + mult)
    lo, hi = int_range(in_bits, True)
    # Random values plus every rounding tie around a few multiples of 2**shift and the extremes.
    vals = list(rng.integers(lo, hi + 1, size=300))
    if shift > 0:
        for q in (-3, -2, -1, 0, 1, 2, 5):
            base = q << shift
            vals += [base + (1 << (shift - 1)) + d for d in (-1, 0, 1) if lo <= base + (1 << (shift - 1)) + d <= hi]
    vals += [lo, hi, 0, -1, 1]
    expected = requantize(np.array(vals, dtype=np.int64), site)
    got = []

    async def bench(ctx):
        for v in vals:
            ctx.set(dut.i, int(v))
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    for v, e, g in zip(vals, expected.tolist(), got, strict=True):
        assert g == e, f"requant(shift={shift}, mult={mult}, relu={relu}) of {v}: expected {e}, got {g}"


@pytest.mark.parametrize("pes", [1, 3])
def test_pe_accumulates_like_a_dot_product(pes: int) -> None:
    rng = np.random.default_rng(7 + pes)
    ir = random_ir(rng, kind="dense", layers=1, input_size=(6, 9), hidden_size=(4, 7))
    layer = ir.layers[0]
    site = layer.sites["main"]
    sched = compile_schedule(ir, pes, max_group=1)
    lp = sched.layers[0]
    seg = sched.segments[lp.segments[0]]
    tp = sched.tensors[seg.tensor]
    x = random_inputs(rng, ir, 1)["x"][0]
    w = site.dense_weights(layer.size)
    expected = w @ x  # without bias: the finaliser adds it
    for p in range(pes):
        # Two queues (issue slots), events alternating between them.
        dut = ProcessingElement(sched, p, queue_depth=4, slots=2)
        sums = {}

        async def bench(ctx, dut=dut, p=p, sums=sums):
            sent = 0
            for e, v in enumerate(x):
                if v == 0 or not (sched.mask[seg.index_base + tp.positions[e]] >> p) & 1:
                    continue
                port = dut.event[sent % 2]
                sent += 1
                ctx.set(port.valid, 1)
                ctx.set(port.payload.addr, seg.index_base + tp.positions[e])
                ctx.set(port.payload.value, int(v))
                while not ctx.get(port.ready):
                    await ctx.tick()
                await ctx.tick()
                ctx.set(port.valid, 0)
            for _ in range(200):
                if not ctx.get(dut.busy):
                    break
                await ctx.tick()
            assert not ctx.get(dut.busy), f"PE {p} still busy"
            for k in range(sched.acc_half):
                ctx.set(dut.fin_addr, lp.region * sched.acc_half + k)
                await ctx.tick()  # a registered read
                sums[k] = ctx.get(dut.fin_acc0)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        if lp.mode == "neuron":
            for n in range(layer.size):
                if sched.tensors[lp.out_tensor].positions[n] % pes == p:
                    k = sched.tensors[lp.out_tensor].positions[n] // pes
                    assert sums[k] == expected[n], f"PE {p} neuron {n}: expected {expected[n]}, got {sums[k]}"
        else:
            pytest.fail("a one-layer dense IR at this size should be neuron-partitioned")


def test_finaliser_two_point_matches_modulate() -> None:
    rng = np.random.default_rng(5)
    ir = random_ir(rng, kind="two_point", layers=2, hidden_size=(5, 5))
    layer = ir.layers[0]
    r_site, c_site = layer.sites["r"], layer.sites["c"]
    sched = compile_schedule(ir, 1)
    lp = sched.layers[0]
    assert lp.mode == "neuron"
    dut = Finaliser(sched, 0)
    lim = 1 << (finaliser_in_bits(sched) - 2)
    acc_r = rng.integers(-min(lim, 4000), min(lim, 4000), size=layer.size)
    acc_c = rng.integers(-min(lim, 4000), min(lim, 4000), size=layer.size)
    pos = sched.tensors[lp.out_tensor].positions
    got = {}

    async def bench(ctx):
        ctx.set(dut.layer, 0)
        ctx.set(dut.valid, 1)
        outs = []
        for k in range(lp.steps + LATENCY):
            if k < lp.steps:
                n = pos.index(k)
                ctx.set(dut.k, k)
                ctx.set(dut.acc0, int(acc_r[n]))
                ctx.set(dut.acc1, int(acc_c[n]))
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                outs.append(ctx.get(dut.out_data))
        for k, v in enumerate(outs):
            got[pos.index(k)] = v

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    r = requantize(acc_r + r_site.bias, r_site)
    c = requantize(acc_c + c_site.bias, c_site)
    expected = modulate(layer.table, r, c, r_site, c_site)
    mask = (1 << sched.act_bits) - 1
    assert len(got) == layer.size
    for n in range(layer.size):
        assert got[n] == int(expected[n]) & mask, f"neuron {n}: expected {expected[n]}, got {got[n]}"


def test_schedule_places_every_synapse_once_and_balances() -> None:
    rng = np.random.default_rng(3)
    ir = random_ir(rng, kind="mixed", layers=3, hidden_size=(10, 30), input_size=(10, 20))
    for pes in (1, 2, 4, 8):
        sched = compile_schedule(ir, pes)
        for layer, lp in zip(ir.layers, sched.layers, strict=True):
            nnz = sum(s.nnz for s in layer.sites.values())
            assert sum(lp.syn_per_pe) == nnz, f"P={pes} layer {layer.name}: synapses lost"
            assert sorted(sched.tensors[lp.out_tensor].positions) == sorted(set(sched.tensors[lp.out_tensor].positions))
            if lp.mode == "neuron":
                assert max(lp.slots) == lp.steps == -(-layer.size // (pes // lp.group))
        assert sum(sched.synapses_per_pe) == ir.synapses


def test_schedule_picks_synapse_partitioning_for_small_layers() -> None:
    rng = np.random.default_rng(4)
    ir = random_ir(rng, kind="dense", layers=2, input_size=(60, 60), hidden_size=(60, 60), density=0.9)
    last = ir.layers[-1]
    ir = dataclasses.replace(ir, layers=(ir.layers[0], dataclasses.replace(last, size=last.size)))
    sched = compile_schedule(ir, 8)
    modes = [lp.mode for lp in sched.layers]
    # 60 inputs onto a 60-neuron layer balances by neurons; a layer of <= 8 outputs cannot.
    assert modes[0] == "neuron"
    if last.size <= 8:
        assert modes[1] == "synapse"
    for lp in sched.layers:
        assert lp.est_cycles <= lp.est_cycles_other


def test_parameters_are_validated_with_named_errors() -> None:
    from apical.hw.top import ApicalTop

    ir = random_ir(np.random.default_rng(2), kind="dense", layers=1)
    with pytest.raises(ValueError, match="pes"):
        ApicalTop(ir, 0)
    with pytest.raises(TypeError, match="pes"):
        ApicalTop(ir, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_depth"):
        ApicalTop(ir, 2, queue_depth=1)
    with pytest.raises(ValueError, match="schedule"):
        ApicalTop(ir, 2, schedule=compile_schedule(ir, 4))
    with pytest.raises(ValueError, match="multiplier"):
        Requantizer(in_bits=8, shift=1, multiplier=0, bits=4, signed_out=True)
    with pytest.raises(TypeError, match="shift"):
        Requantizer(in_bits=8, shift=1.5, bits=4, signed_out=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        ProcessingElement(compile_schedule(ir, 2), 2)
