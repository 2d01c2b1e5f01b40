"""The simulation plumbing (runner, testbench, result read-back, comparison) on a stand-in top.

The stand-in `EchoTop` obeys the ``apical_top`` port contract and computes an
identity layer exactly (output = input, class = argmax, the golden counters),
so the whole runner -> cocotb -> results path can be checked for bit-exactness
without the real hardware, and a deliberately wrong variant checks that the
testbench catches and names a mismatch. The real RTL is tested in
``test_sim_rtl.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth import Array, Const, Module, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apical.sim.counters import HW_COUNTERS, port_name
from apical.sim.runner import simulate, summarize
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, Requant, Site, TensorSpec, acc_bits_needed

BITS = 8


def identity_ir(n: int) -> IR:
    """One dense layer with unit diagonal weights: output = input (8-bit signed)."""
    x = TensorSpec("x", n, BITS, True)
    site = Site(
        sources=("x",),
        in_size=n,
        weight_bits=2,
        indptr=np.arange(n + 1, dtype=np.int64),
        indices=np.arange(n, dtype=np.int64),
        data=np.ones(n, dtype=np.int64),
        bias=np.zeros(n, dtype=np.int64),
        acc_bits=2,
        requant=Requant(shift=0),
        bits=BITS,
        signed=True,
    )
    site = Site(**{**site.__dict__, "acc_bits": acc_bits_needed(site, n, [x])})
    return IR(inputs=(x,), layers=(Layer("out", "dense", n, {"main": site}, BITS, True),))


class EchoTop(wiring.Component):
    """Stand-in for ``apical_top`` on `identity_ir`: buffers the inputs, echoes them, then the argmax.

    ``bug`` adds one to neuron 1's output, to prove the testbench notices.
    """

    def __init__(self, n: int, *, bug: bool = False) -> None:
        self.n = n
        self.bug = bug
        ports = {
            "s_axis_tdata": In(BITS),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(BITS),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
        }
        for c in HW_COUNTERS:
            ports[port_name(c)] = Out(32)
        super().__init__(ports)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        n = self.n
        buf = Array(Signal(signed(BITS), name=f"buf{i}") for i in range(n))
        idx = Signal(range(n + 1))
        best = Signal(signed(BITS))
        best_i = Signal(range(n))
        events = Signal(32)
        wait = Signal(4)
        x = self.s_axis_tdata.as_signed()
        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.s_axis_tready.eq(1)
                with m.If(self.s_axis_tvalid):
                    m.d.sync += [buf[idx].eq(x), idx.eq(idx + 1)]
                    with m.If(idx == 0):
                        m.d.sync += [best.eq(x), best_i.eq(0), events.eq(x != 0)]
                    with m.Else():
                        m.d.sync += events.eq(events + (x != 0))
                        with m.If(x > best):
                            m.d.sync += [best.eq(x), best_i.eq(idx)]
                    with m.If(self.s_axis_tlast):
                        m.d.sync += [idx.eq(0), wait.eq(3)]
                        m.next = "WORK"
            with m.State("WORK"):
                # A few "compute" cycles so cnt_cycles is not trivially zero.
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 1):
                    m.d.sync += [
                        self.cnt_cycles.eq(3),
                        self.cnt_events.eq(events),
                        self.cnt_syn_ops.eq(events),
                        self.cnt_weight_reads.eq(events),
                        self.cnt_acc_updates.eq(events),
                        self.cnt_act_reads.eq(n),
                        self.cnt_act_writes.eq(n),
                        self.cnt_requants.eq(n),
                        self.cnt_table_lookups.eq(0),
                    ]
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.m_axis_tvalid.eq(1)
                with m.If(idx == n):
                    m.d.comb += [self.m_axis_tdata.eq(best_i), self.m_axis_tlast.eq(1)]
                with m.Else():
                    val = buf[idx] + Const(1 if self.bug else 0, unsigned(1)) * (idx == 1)
                    m.d.comb += self.m_axis_tdata.eq(val)
                with m.If(self.m_axis_tready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n):
                        m.d.sync += idx.eq(0)
                        m.next = "IN"
        return m


def write_echo(rtl_dir: Path, n: int, *, bug: bool = False) -> Path:
    rtl_dir.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(EchoTop(n, bug=bug), name="apical_top", emit_src=False)
    (rtl_dir / "apical_top.v").write_text(text)
    return rtl_dir


@pytest.fixture
def echo_case(tmp_path: Path) -> tuple[IR, dict[str, np.ndarray]]:
    n = 6
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(5, n))
    x[rng.random(x.shape) < 0.3] = 0
    return identity_ir(n), {"x": x}


def test_echo_bit_exact_with_backpressure_and_reset(tmp_path: Path, echo_case) -> None:
    ir, inputs = echo_case
    rtl = write_echo(tmp_path / "rtl", ir.output.size)
    golden = run_golden(ir, inputs)
    res = simulate(
        ir, inputs, rtl_dir=rtl, pes=1, build_dir=tmp_path / "b", backpressure=True, reset_test=True, golden=golden
    )
    assert res.failure is None, res.failure
    np.testing.assert_array_equal(res.outputs, golden.outputs["out"])
    np.testing.assert_array_equal(res.classes, golden.classes)
    totals = golden.total_counts()
    for c, v in totals.items():
        np.testing.assert_array_equal(res.counters[c], v, err_msg=c)
    assert res.reset is not None and res.reset["failure"] is None
    assert len(res.reset["samples"]) == 2
    summary = summarize(ir, golden, res)
    assert summary["bit_exact"] and summary["counters_match"]
    assert summary["mismatches"]["count"] == 0
    assert summary["sample_indices"] == list(range(5))


def test_echo_bug_is_caught_and_named(tmp_path: Path, echo_case) -> None:
    ir, inputs = echo_case
    rtl = write_echo(tmp_path / "rtl", ir.output.size, bug=True)
    res = simulate(ir, inputs, rtl_dir=rtl, pes=1, build_dir=tmp_path / "b", backpressure=False)
    assert res.failure is not None
    exp = int(run_golden(ir, inputs).outputs["out"][0, 1])
    assert res.failure.startswith(f"sample 0: layer out neuron 1: expected {exp}, got ")
    # Stopped at the first mismatching sample.
    assert len(res.sample_ids) == 1
