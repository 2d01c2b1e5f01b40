"""Synthesis estimate: part table, resource parsing, fit check, and yosys on the real array."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from apical.flows.parts import PARTS, known_parts, part_capacity
from apical.flows.synth import fit_check, resource_counts, synth_run
from apical.hw.schedule import compile_schedule
from apical.hw.top import ApicalTop
from apical.sw.config import Config, HardwareConfig, load_config
from apical.sw.errors import ApicalError
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import random_ir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _yowasp_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(ROOT / "build" / "cache"))


def test_part_table() -> None:
    assert {"xczu3eg", "xczu7ev", "xczu9eg", "xcvu9p"} <= set(known_parts())
    cap = part_capacity("XCZU7EV-ffvc1156-2-e")
    assert cap.device == "xczu7ev"
    assert cap.ramb18e2 == 2 * cap.ramb36e2
    for p in PARTS.values():
        # One CARRY8 per CLB of eight LUTs; twice as many flip-flops as LUTs.
        assert p.carry8 == p.lut // 8
        assert p.ff == 2 * p.lut
        assert p.lutram < p.lut


def test_unknown_part_lists_known() -> None:
    with pytest.raises(ApicalError, match="known: xcvu9p, xczu3eg, xczu7ev, xczu9eg"):
        part_capacity("xc7a35t-csg324-1")


def test_unknown_part_fails_before_synthesis(tmp_path: Path) -> None:
    with pytest.raises(ApicalError, match="xc7k325t"):
        synth_run(Config(), tmp_path, part="xc7k325t")
    assert not (tmp_path / "synth.json").exists()


def test_resource_counts_and_fit() -> None:
    cells = {"LUT1": 3, "LUT6": 5, "LUT6_2": 1, "FDRE": 7, "FDCE": 2, "DSP48E2": 4, "RAMB36E2": 2,
             "RAMB18E2": 3, "CARRY4": 5, "CARRY8": 1, "RAM64M": 2, "SRLC32E": 1, "BUFG": 1}
    r = resource_counts(cells)
    assert r["lut"] == 9 and r["ff"] == 9 and r["dsp48e2"] == 4
    assert (r["ramb36e2"], r["ramb18e2"]) == (2, 3)
    assert r["carry8"] == 1 + math.ceil(5 / 2)
    assert r["lutram_cells"] == 3 and r["lutram_luts"] == 2 * 4 + 1
    cap, util, over = fit_check(r, "xczu3eg")
    assert over == []
    assert util["dsp48e2"] == pytest.approx(100 * 4 / cap["dsp48e2"], abs=1e-3)
    assert util["bram36"] == pytest.approx(100 * 3.5 / cap["ramb36e2"], abs=1e-3)
    # One DSP more than the part has is reported with the numbers.
    big = dict(r, dsp48e2=cap["dsp48e2"] + 1)
    _, util, over = fit_check(big, "xczu3eg")
    assert over == [f"dsp48e2 {cap['dsp48e2'] + 1} > {cap['dsp48e2']}"]
    assert util["dsp48e2"] > 100


def _run_dir(tmp_path: Path, ir: IR, pes: int, *, write_rtl: bool = True) -> Path:
    """A run directory with the IR and (unless the step is to generate it) the array's Verilog."""
    save_ir(ir, tmp_path / "ir")
    if not write_rtl:
        return tmp_path
    (tmp_path / "rtl").mkdir()
    text = verilog.convert(ApicalTop(ir, pes), name="apical_top", emit_src=False)
    (tmp_path / "rtl" / "apical_top.v").write_text(text)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("pes", [2, 4])
def test_multipliers_land_in_dsps(tmp_path: Path, pes: int) -> None:
    rng = np.random.default_rng(4)
    ir = random_ir(rng, kind="dense", layers=2, input_size=(8, 8), hidden_size=(6, 6), bits=(4, 8))
    # P=2: synth_run generates rtl/apical_top.v itself; P=4: it reads the one given.
    run = _run_dir(tmp_path, ir, pes, write_rtl=pes != 2)
    s = synth_run(Config(hardware=HardwareConfig(pes=pes)), run, part="xczu3eg")
    assert (run / "rtl" / "apical_top.v").is_file()
    res = s["resources"]
    assert res["dsp48e2"] >= pes, f"P={pes} multipliers but {res['dsp48e2']} DSP48E2"
    assert s["fits"] is True and s["over_capacity"] == []
    assert s["capacity"]["device"] == "xczu3eg"
    assert s["utilization_pct"]["dsp48e2"] == pytest.approx(100 * res["dsp48e2"] / 360, abs=1e-3)
    assert res["lut"] > 0 and res["ff"] > 0
    assert json.loads((run / "synth.json").read_text()) == s


@pytest.mark.slow
def test_large_weight_memory_lands_in_block_ram(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ir = random_ir(rng, kind="dense", layers=2, input_size=(64, 64), hidden_size=(64, 64), bits=(8, 8), density=1.0)
    pes = 2
    mem = compile_schedule(ir, pes).stats()["memories"]["weight"]
    assert mem["depth"] * mem["width"] > 18 * 1024, "test IR must need more than one RAMB18 per PE"
    run = _run_dir(tmp_path, ir, pes)
    s = synth_run(Config(hardware=HardwareConfig(pes=pes)), run)
    res = s["resources"]
    bram36 = res["ramb36e2"] + res["ramb18e2"] / 2
    # Each PE's weight memory alone needs at least one RAMB36E2's worth of bits.
    assert bram36 >= pes * math.ceil(mem["depth"] * mem["width"] / 36_864)
    # ... and it is not spread over distributed RAM instead.
    assert res["lutram_luts"] * 64 < pes * mem["depth"] * mem["width"]
    assert s["part"] == "xczu7ev-ffvc1156-2-e"


@pytest.mark.slow
def test_synth_records_ecp5_timing(tmp_path: Path) -> None:
    """``hardware.timing``: the same Verilog placed and routed by nextpnr-ecp5; Fmax and the worst path."""
    ir = random_ir(np.random.default_rng(3), kind="dense", layers=1, input_size=(3, 3), hidden_size=(2, 2),
                   bits=(2, 4))
    run = _run_dir(tmp_path, ir, 1)
    cfg = Config(hardware=HardwareConfig(pes=1, timing="lfe5u-85f-6", clock_mhz=50.0))
    s = synth_run(cfg, run, part="xczu3eg")
    t = s["timing"]
    assert t["device"] == "LFE5U-85F-6 CABGA381" and t["target_mhz"] == 50.0
    assert 10.0 < t["fmax_mhz"] < 1000.0 and t["target_met"] == (t["fmax_mhz"] >= 50.0)
    cp = t["critical_path"]
    # the worst path sets Fmax (nextpnr rounds both figures; clock skew may add a little)
    assert cp["start"] and cp["end"] and 0 < cp["delay_ns"] <= 1.05 * 1000.0 / t["fmax_mhz"]
    assert t["utilization"] and all(v["used"] > 0 for v in t["utilization"].values())
    assert json.loads((run / "synth.json").read_text())["timing"] == t


def test_unknown_timing_device_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("hardware:\n  timing: xc7a35t\n")
    with pytest.raises(ApicalError, match=r"hardware\.timing: must be one of 'none', 'lfe5u-85f-6'"):
        load_config(p)
