"""Timing is part of the answer: a build that misses its board clock fails the bitstream step
(naming achieved and required frequency and the worst path) unless explicitly allowed, and
every time-based figure says whether it is at a measured Fmax or an assumed clock.

The slow test is the timing regression check: a small net placed and routed on
the ECP5-85F (nextpnr-ecp5) must keep its Fmax above a floor, so a change that
lengthens the critical path is seen in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import apical.flows.bitstream as bitstream
from apical.flows.bitstream import bitstream_run, critical_path
from apical.flows.cli import main
from apical.flows.clocking import clock_basis
from apical.flows.flow import write_run_config
from apical.sw.config import Config, HardwareConfig
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import random_inputs, random_ir

ROOT = Path(__file__).resolve().parents[1]

# The small net's Fmax on LFE5U-85F speed 6 (nextpnr-ecp5) must stay above this.
# Measured: see the closing figures in the test's failure message; the floor
# leaves room for placer noise, not for a new combinational path.
ECP5_FLOOR_MHZ = 60.0

LOG = """Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source top.u.fn_k_TRELLIS_FF_Q.Q
Info:    routing  0.97  1.49 Net top.u.fn_k (12,15) -> (13,15)
Info:                          Sink top.u.sum_LUT4_Z.B
Info:      logic  0.24  1.73 Source top.u.sum_LUT4_Z.Z
Info:    routing  1.10  2.83 Net top.u.sum (13,15) -> (14,16)
Info:                          Sink top.u.acc_TRELLIS_FF_Q.DI
Info:      setup  0.20  3.03 Sink top.u.acc_TRELLIS_FF_Q.DI
Info: 0.96 ns logic, 2.07 ns routing
Info: Max frequency for clock '$glbnet$clk': 18.78 MHz (FAIL at 25.00 MHz)
"""


def tiny_ir(seed: int = 2) -> IR:
    return random_ir(np.random.default_rng(seed), kind="dense", layers=2, input_size=(16, 16),
                     hidden_size=(8, 8), bits=(4, 4), raw_output=0.0)


def test_critical_path_from_log_and_report() -> None:
    p = critical_path(None, LOG, "$glbnet$clk")
    assert p is not None
    assert p["start"] == "top.u.fn_k_TRELLIS_FF_Q.Q" and p["end"] == "top.u.acc_TRELLIS_FF_Q.DI"
    report = {"critical_paths": [{"from": "$glbnet$clk", "to": "$glbnet$clk", "path": [
        {"type": "clk-to-q", "from": {"cell": "a_FF", "port": "CLK"}, "to": {"cell": "a_FF", "port": "Q"}, "delay": 0.5},
        {"type": "routing", "from": {"cell": "a_FF", "port": "Q"}, "to": {"cell": "b_FF", "port": "DI"}, "delay": 1.25},
    ]}]}
    q = critical_path(report, "", "$glbnet$clk")
    assert q == {"clock": "$glbnet$clk", "start": "a_FF.CLK", "end": "b_FF.DI", "delay_ns": 1.75,
                 "summary": "a_FF.CLK -> b_FF.DI (1.75 ns)"}
    assert critical_path(None, "Info: nothing here\n", "clk") is None


def _fake_build(fmax: float, target: float = 25.0):
    def build(cfg: Config, ir: IR, spec: Any, tree: Path) -> dict[str, Any]:
        bit = tree / "apical_ulx3s.bit"
        bit.write_bytes(b"\0" * 64)
        log = tree / "apical_ulx3s.tim"
        log.write_text(LOG.replace("18.78", f"{fmax:.2f}").replace("FAIL", "PASS" if fmax >= target else "FAIL"))
        clocks = bitstream.parse_nextpnr_log(log.read_text())["clocks"]
        return {"status": "built", "bitstream": bit, "bitstream_bytes": 64, "fmax_mhz": fmax,
                "target_mhz": target, "timing_met": fmax >= target,
                "critical_path": critical_path(None, log.read_text(), "$glbnet$clk"),
                "timing_log": log, "clocks": clocks, "utilization": {}, "build_wall_s": 0.0,
                "top": "apical_ulx3s"}
    return build


def _run(tmp_path: Path, **hw: Any) -> Path:
    run = tmp_path / "run"
    ir = tiny_ir()
    save_ir(ir, run / "ir")
    inputs = random_inputs(np.random.default_rng(0), ir, 4)
    np.savez(run / "test_vectors.npz", labels=np.zeros(4, dtype=np.int64), **inputs)
    write_run_config(Config(hardware=HardwareConfig(pes=2, board="ulx3s", **hw)), run)
    return run


def test_missed_timing_fails_the_step_and_names_the_path(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bitstream, "_build_lattice", _fake_build(18.78))
    run = _run(tmp_path)
    capsys.readouterr()
    assert main(["bitstream", str(run), "--board", "ulx3s"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("apical: ")]
    assert len(err) == 1, err
    assert "achieved 18.78 MHz, required 25.00 MHz" in err[0]
    assert "worst path top.u.fn_k_TRELLIS_FF_Q.Q -> top.u.acc_TRELLIS_FF_Q.DI" in err[0]
    bit = json.loads((run / "bitstream.json").read_text())
    assert bit["status"] == "timing_failed" and bit["timing_met"] is False and bit["bitstream"] is None
    assert not list((run / "bitstream" / "ulx3s").glob("*.bit"))  # nothing loadable left behind
    assert json.loads((run / "flow.json").read_text())["steps"]["bitstream"]["status"] == "failed"
    # Explicitly allowed: the bitstream is kept, the failure still recorded.
    assert main(["bitstream", str(run), "--board", "ulx3s", "--allow-timing-failure"]) == 0
    bit = json.loads((run / "bitstream.json").read_text())
    assert bit["status"] == "built" and bit["timing_met"] is False and bit["timing_failure_allowed"] is True
    assert (run / bit["bitstream"]).is_file()


def test_met_timing_passes_and_energy_uses_the_measured_clock(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bitstream, "_build_lattice", _fake_build(80.0))
    run = _run(tmp_path)
    assert clock_basis(200.0, run, 2).source == "assumed"
    assert main(["energy", str(run)]) == 0
    e0 = json.loads((run / "energy.json").read_text())
    assert e0["clock"]["source"] == "assumed" and e0["clock_mhz"] == 200.0
    assert main(["bitstream", str(run), "--board", "ulx3s"]) == 0
    basis = clock_basis(200.0, run, 2)
    assert basis.source == "measured" and basis.used_mhz == 80.0 and basis.timing_met is True
    assert clock_basis(200.0, run, 4).source == "assumed"  # a build for another P does not count
    # `apical run` re-runs energy because the timed build it reads appeared.
    assert main(["energy", str(run)]) == 0
    e1 = json.loads((run / "energy.json").read_text())
    assert e1["clock"] == basis.as_dict() and e1["clock_mhz"] == 80.0
    # Static energy is power x time: 2.5x the time at 80 MHz than at 200 MHz.
    assert e1["static_pJ"] == pytest.approx(e0["static_pJ"] * 200.0 / 80.0)
    assert e1["latency_us"] == pytest.approx(e0["latency_us"] * 2.5)
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "assumed 200 MHz" in html and "measured Fmax 80 MHz" in html
    assert "static energy computed at" in html


@pytest.mark.slow
def test_ecp5_timing_regression(tmp_path: Path, monkeypatch) -> None:
    """A small net, really placed and routed on the LFE5U-85F: Fmax above the floor, path named."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(ROOT / "build" / "cache"))
    save_ir(tiny_ir(), tmp_path / "ir")
    cfg = Config(hardware=HardwareConfig(pes=2, board="ulx3s"))
    s = bitstream_run(cfg, tmp_path, board="ulx3s")
    assert s["status"] == "built" and s["timing_met"] is True
    assert s["critical_path"] and s["critical_path"]["start"] and s["critical_path"]["end"]
    assert s["fmax_mhz"] >= ECP5_FLOOR_MHZ, (
        f"Fmax {s['fmax_mhz']:.1f} MHz < floor {ECP5_FLOOR_MHZ} MHz; worst path {s['critical_path']['summary']}")
