"""Memory contents as ``$readmemh`` files (`apical.hw.generate` ``memory_init``, `apical.hw.memfiles`).

The files hold every word of every initial block the inline Verilog has; a
design built with them is bit-exact against golden (values, classes, every
counter) on Icarus and Verilator, through the fast harness and cocotb, with
the same cycles as the inline design; yosys maps it to the same resources; a
missing file is one error line; regenerating inline removes the old files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from apical.flows.synth import synthesize
from apical.hw.generate import INLINE_INIT_MAX_BYTES, generate_rtl, split_memory_init, verilog_text
from apical.hw.memfiles import init_files
from apical.sim.fast import simulate_fast
from apical.sim.runner import simulate
from apical.sw.errors import ApicalError
from apical.sw.ir_random import random_inputs, random_ir

sys.path.insert(0, str(Path(__file__).parent))
from test_sim_fast import BUILD_ROOT, _assert_bit_exact

ROOT = Path(__file__).resolve().parents[1]
_WORD = re.compile(r"    (\S+)\[(\d+)\] = \d+'h([0-9a-fA-F]+);")


def _ir(seed: int = 5, **kw):
    return random_ir(np.random.default_rng(seed), kind=kw.pop("kind", "mixed"), layers=kw.pop("layers", 3), **kw)


def _inline_words(text: str) -> dict[tuple[str, str], dict[int, int]]:
    """(module, memory) -> {address: word} of every initial block of the inline Verilog."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    module = ""
    for ln in text.split("\n"):
        if ln.startswith("module "):
            module = ln[len("module "):].split("(")[0].strip().lstrip("\\")
        m = _WORD.fullmatch(ln)
        if m:
            out.setdefault((module, m[1]), {})[int(m[2])] = int(m[3], 16)
    return out


def _file_words(text: str, files: dict[str, str]) -> dict[tuple[str, str], dict[int, int]]:
    """The same map read back from the $readmemh files the split Verilog names, as a simulator would."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    module = ""
    for ln in text.split("\n"):
        if ln.startswith("module "):
            module = ln[len("module "):].split("(")[0].strip().lstrip("\\")
        m = re.fullmatch(r'  initial \$readmemh\("([^"]+)", (\S+)\);', ln)
        if m:
            words, addr = {}, 0
            for tok in files[m[1]].split():
                if tok.startswith("@"):
                    addr = int(tok[1:], 16)
                else:
                    words[addr] = int(tok, 16)
                    addr += 1
            out[(module, m[2])] = words
    return out


def test_files_hold_every_initial_word() -> None:
    ir = _ir()
    text = verilog_text(ir, 4)
    split, files = split_memory_init(text)
    assert "initial begin" not in split, "an initial block was left inline"
    inline = _inline_words(text)
    assert len(inline) == len(files) > 0
    assert _file_words(split, files) == inline
    # Everything else is unchanged, line for line.
    rest = [ln for ln in text.split("\n") if not _WORD.fullmatch(ln) and ln not in ("  initial begin", "  end")]
    kept = [ln for ln in split.split("\n") if "$readmemh" not in ln and ln != "  end"]
    assert [ln for ln in rest if ln != "  end"] == kept


def test_generate_modes_and_stale_files(tmp_path: Path) -> None:
    ir = _ir()
    d = tmp_path / "rtl"
    s = generate_rtl(ir, 4, d, memory_init="files")
    hexes = sorted(p.name for p in d.glob("*.hex"))
    assert s["memory_init"] == "files" and s["memory_init_files"] == len(hexes) > 0
    assert sorted(p.name for p in init_files(d / "apical_top.v")) == hexes
    # A small design stays inline under "auto"; the earlier files go.
    assert len(verilog_text(ir, 4)) < INLINE_INIT_MAX_BYTES
    s = generate_rtl(ir, 4, d)
    assert s["memory_init"] == "inline" and not list(d.glob("*.hex"))
    assert "$readmemh" not in (d / "apical_top.v").read_text()
    with pytest.raises(ApicalError, match="memory_init"):
        generate_rtl(ir, 4, d, memory_init="hex")


def test_missing_init_file_is_one_error_line(tmp_path: Path) -> None:
    ir = _ir()
    generate_rtl(ir, 2, tmp_path / "rtl", memory_init="files")
    victim = sorted((tmp_path / "rtl").glob("*weight_mem.hex"))[0]
    victim.unlink()
    inputs = random_inputs(np.random.default_rng(1), ir, 2)
    with pytest.raises(ApicalError, match=re.escape(victim.name)) as e:
        simulate_fast(ir, inputs, rtl_dir=tmp_path / "rtl", pes=2, simulator="icarus", build_dir=tmp_path / "b")
    assert "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_init_files_design_is_bit_exact_with_inline_cycles(tmp_path: Path, simulator: str) -> None:
    ir = _ir(seed=7, kind="two_point", layers=3, gate="r")
    pes = 4
    inputs = random_inputs(np.random.default_rng(8), ir, 12, zero_fraction=0.3)
    generate_rtl(ir, pes, tmp_path / "inline", memory_init="inline")
    generate_rtl(ir, pes, tmp_path / "files", memory_init="files")
    ref = simulate_fast(ir, inputs, rtl_dir=tmp_path / "inline", pes=pes, simulator=simulator,
                        build_dir=BUILD_ROOT, seed=3)
    res = simulate_fast(ir, inputs, rtl_dir=tmp_path / "files", pes=pes, simulator=simulator,
                        build_dir=BUILD_ROOT, seed=3)
    _assert_bit_exact(ir, inputs, res)
    np.testing.assert_array_equal(res.cycles, ref.cycles)
    if simulator == "icarus":  # the cocotb testbench too (its own run folder)
        coco = simulate(ir, inputs, rtl_dir=tmp_path / "files", pes=pes, simulator="icarus",
                        build_dir=tmp_path / "cocotb")
        assert coco.failure is None, coco.failure
        np.testing.assert_array_equal(coco.outputs, res.outputs)
        np.testing.assert_array_equal(coco.classes, res.classes)


@pytest.mark.slow
def test_yosys_maps_init_files_to_the_same_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(ROOT / "build" / "cache"))
    # Weight ROMs large enough for block RAM: yosys must read the files to map them the same way.
    ir = random_ir(np.random.default_rng(4), kind="dense", layers=2, input_size=(64, 64), hidden_size=(48, 48),
                   bits=(8, 8), density=1.0)
    got = {}
    for mode in ("inline", "files"):
        generate_rtl(ir, 2, tmp_path / mode, memory_init=mode)
        got[mode] = synthesize(tmp_path / mode / "apical_top.v", top="apical_top", part="xczu3eg",
                               build_dir=tmp_path / f"synth-{mode}")["resources"]
    # Same block RAM, DSP, LUT-RAM, carries and flip-flops; abc's LUT packing differs by a
    # few percent (the contents reach it as one $meminit per memory instead of one per word,
    # so the netlist abc starts from is ordered differently: 2 of 1,418 LUTs on one RTL, 57 of
    # 1,351 on another). Unread files would leave the ROMs empty: no block RAM at all.
    lut_i, lut_f = got["inline"].pop("lut"), got["files"].pop("lut")
    assert got["files"] == got["inline"]
    assert abs(lut_f - lut_i) <= 0.05 * lut_i, (lut_f, lut_i)
    assert got["files"]["ramb18e2"] + got["files"]["ramb36e2"] > 0
