"""The IR extension QONNX import needs: per-neuron requantisation (multiplier and post-multiply
offset) and narrow-range saturation, in the golden model, on disk, and in the RTL blocks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from apical.hw.finaliser import Finaliser, finaliser_in_bits, finaliser_latency
from apical.hw.requant import Requantizer
from apical.hw.schedule import compile_schedule
from apical.sw.errors import ApicalError
from apical.sw.golden import modulate, requantize, run_golden
from apical.sw.ir import Requant, Site, load_ir, save_ir, validate_ir
from apical.sw.ir_random import random_inputs, random_ir


def _per_neuron(ir, rng, narrow: bool = False, acc_hint: int = 10):  # type: ignore[no-untyped-def]
    """A copy of ``ir`` with per-neuron multipliers/offsets (and narrow range) on every site."""
    layers = []
    for layer in ir.layers:
        sites = {}
        for k, s in layer.sites.items():
            mult = rng.integers(1 << 10, 1 << 17, size=layer.size)
            shift = acc_hint + 14 - s.bits
            # offsets that mostly cancel the bias, so requantised values spread over the range
            off = -s.bias * mult + rng.integers(-(1 << shift), 1 << shift, size=layer.size)
            sites[k] = dataclasses.replace(s, requant=Requant(shift), multipliers=mult, offsets=off,
                                           narrow=narrow and s.signed and s.bits >= 2)
        layers.append(dataclasses.replace(layer, sites=sites))
    return dataclasses.replace(ir, layers=tuple(layers))


def test_golden_per_neuron_formula() -> None:
    z = np.zeros(0, dtype=np.int64)
    site = Site(sources=("x",), in_size=0, weight_bits=4, indptr=np.zeros(1, dtype=np.int64), indices=z, data=z,
                bias=np.zeros(3, dtype=np.int64), acc_bits=20, requant=Requant(4), bits=4, signed=True,
                multipliers=np.array([16, 24, 3]), offsets=np.array([0, 8, -100]), narrow=True)
    acc = np.array([[1, 1, 1], [-100, 5, 40], [8, 0, 0]])
    # rhe((acc * m + o) / 16), saturated to the narrow 4-bit range [-7, 7]
    assert requantize(acc, site).tolist() == [[1, 2, -6], [-7, 7, 1], [7, 0, -6]]
    full = dataclasses.replace(site, narrow=False)
    assert requantize(np.array([[-100, 0, 0]]), full).tolist() == [[-8, 0, -6]]


def test_per_neuron_ir_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ir = _per_neuron(random_ir(rng, kind="mixed", layers=2), rng, narrow=True)
    save_ir(ir, tmp_path / "ir")
    back = load_ir(tmp_path / "ir")
    for a, b in zip(ir.layers, back.layers, strict=True):
        for k in a.sites:
            assert np.array_equal(a.sites[k].multipliers, b.sites[k].multipliers)
            assert np.array_equal(a.sites[k].offsets, b.sites[k].offsets)
            assert a.sites[k].narrow == b.sites[k].narrow
    x = random_inputs(rng, ir, 8)
    assert all(np.array_equal(run_golden(ir, x).outputs[n], run_golden(back, x).outputs[n])
               for n in (la.name for la in ir.layers))
    # an IR without the new fields is written as before (backward compatible manifest)
    plain = random_ir(np.random.default_rng(2), kind="mixed", layers=2)
    save_ir(plain, tmp_path / "plain")
    assert "per_neuron" not in (tmp_path / "plain" / "model.yaml").read_text()


def test_per_neuron_validated() -> None:
    rng = np.random.default_rng(4)
    ir = _per_neuron(random_ir(rng, kind="dense", layers=1), rng)
    layer = ir.layers[0]
    bad = dataclasses.replace(layer.sites["main"], multipliers=np.zeros(layer.size, dtype=np.int64))
    with pytest.raises(ApicalError, match=r"multipliers: values must be in \[1"):
        validate_ir(dataclasses.replace(ir, layers=(dataclasses.replace(layer, sites={"main": bad}),)))
    bad = dataclasses.replace(layer.sites["main"], offsets=np.zeros(layer.size + 1, dtype=np.int64))
    with pytest.raises(ApicalError, match=r"offsets: must be an integer array of shape"):
        validate_ir(dataclasses.replace(ir, layers=(dataclasses.replace(layer, sites={"main": bad}),)))
    bad = dataclasses.replace(layer.sites["main"], narrow=True, signed=False)
    with pytest.raises(ApicalError, match="narrow"):
        validate_ir(dataclasses.replace(ir, layers=(dataclasses.replace(layer, sites={"main": bad}),)))


@pytest.mark.parametrize(("bits", "relu"), [(2, False), (4, False), (5, True)])
def test_requantizer_narrow_matches_golden(bits: int, relu: bool) -> None:
    z = np.zeros(0, dtype=np.int64)
    site = Site(sources=("x",), in_size=0, weight_bits=4, indptr=np.zeros(1, dtype=np.int64), indices=z, data=z,
                bias=z, acc_bits=12, requant=Requant(2), bits=bits, signed=True,
                activation="relu" if relu else "identity", narrow=True)
    dut = Requantizer(in_bits=12, shift=2, relu=relu, bits=bits, signed_out=True, narrow=True)
    vals = [*range(-200, 200, 3), -2048, 2047]
    expected = requantize(np.array(vals), site)
    assert expected.min() == (0 if relu else -(2 ** (bits - 1)) + 1)  # the narrow bound is reached
    got = []

    async def bench(ctx):  # type: ignore[no-untyped-def]
        for v in vals:
            ctx.set(dut.i, v)
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected.tolist()


def test_finaliser_per_neuron_two_point() -> None:
    """Both banks read their own multiplier and offset from the requant memory, slot by slot."""
    rng = np.random.default_rng(5)
    base = random_ir(rng, kind="two_point", layers=2, hidden_size=(5, 5))
    lim = 1 << (finaliser_in_bits(compile_schedule(base, 1)) - 2)
    ir = _per_neuron(base, rng, acc_hint=min(lim, 4000).bit_length())
    layer = ir.layers[0]
    r_site, c_site = layer.sites["r"], layer.sites["c"]
    sched = compile_schedule(ir, 1)
    assert "requant" in sched.memories() and sched.rq_mult_bits == 17
    lp = sched.layers[0]
    dut = Finaliser(sched, 0)
    acc_r = rng.integers(-min(lim, 4000), min(lim, 4000), size=layer.size)
    acc_c = rng.integers(-min(lim, 4000), min(lim, 4000), size=layer.size)
    pos = sched.tensors[lp.out_tensor].positions
    got = {}

    async def bench(ctx):  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, 0)
        ctx.set(dut.valid, 1)
        outs = []
        for k in range(lp.steps + finaliser_latency(sched)):
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
    assert len(np.unique(r)) > 1, "requantised values degenerate"
    expected = modulate(layer.table, r, c, r_site, c_site)
    mask = (1 << sched.act_bits) - 1
    assert len(got) == layer.size
    for n in range(layer.size):
        assert got[n] == int(expected[n]) & mask, f"neuron {n}: expected {expected[n]}, got {got[n]}"
