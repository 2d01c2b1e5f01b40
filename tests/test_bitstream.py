"""Bitstream flows: UART bridge vs golden model, ZCU104 Vivado tree, iCE40 bitstream, early fit check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from apical.flows.bitstream import (
    BOARDS,
    bitstream_run,
    board_fit,
    constraints_dir,
    parse_nextpnr_log,
    uart_protocol,
)
from apical.hw.boards import AxiStreamIP, UartBridge
from apical.hw.top import ApicalTop
from apical.hw.uart import uart_frame
from apical.sw.config import Config, HardwareConfig
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import IR, save_ir
from apical.sw.ir_random import random_inputs, random_ir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _yowasp_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # One shared cache of compiled yowasp tools (the first compile takes about a minute).
    monkeypatch.setenv("XDG_CACHE_HOME", str(ROOT / "build" / "cache"))


def tiny_ir(seed: int = 2) -> IR:
    """16 inputs, 8 hidden, 4 outputs, 4-bit: the open-board test network."""
    rng = np.random.default_rng(seed)
    return random_ir(rng, kind="dense", layers=2, input_size=(16, 16), hidden_size=(8, 8), bits=(4, 4), raw_output=0.0)


def request_bytes(ir: IR, inputs: dict[str, np.ndarray], i: int, element_bytes: int) -> list[int]:
    """The host side of the protocol: every element little-endian, two's complement."""
    out: list[int] = []
    mask = (1 << (8 * element_bytes)) - 1
    for t in ir.inputs:
        for v in inputs[t.name][i]:
            out += list((int(v) & mask).to_bytes(element_bytes, "little"))
    return out


def uart_roundtrip(
    ir: IR, pes: int, inputs: dict[str, np.ndarray], n: int, divisor: int = 4, *, truncated: int = 0
) -> list[int]:
    """Send ``n`` requests bit by bit into a bridge around the real array, decode the replies.

    ``truncated`` > 0: before each request, send only that many bytes of it and
    pause past the bridge's timeout (a host that lost bytes).
    """
    proto = uart_protocol(ir)
    timeout = 40 * divisor
    bridge = UartBridge(
        ApicalTop(ir, pes),
        elements=proto["elements"],
        element_bytes=proto["element_bytes"],
        divisor=divisor,
        timeout=timeout,
    )
    replies: list[int] = []

    async def send(ctx, data: list[int]) -> None:
        for b in data:
            for bit in uart_frame(b):
                ctx.set(bridge.rx, bit)
                await ctx.tick().repeat(divisor)

    async def host(ctx):
        for i in range(n):
            if truncated:
                await send(ctx, request_bytes(ir, inputs, (i + 1) % n, proto["element_bytes"])[:truncated])
                await ctx.tick().repeat(timeout + 10)
                assert ctx.get(bridge.tx) == 1 and ctx.get(bridge.busy) == 0, f"sample {i}: not resynchronised"
            for b in request_bytes(ir, inputs, i, proto["element_bytes"]):
                for bit in uart_frame(b):
                    ctx.set(bridge.rx, bit)
                    await ctx.tick().repeat(divisor)
            # Receive the reply frame: wait for its start bit, then sample mid-bit.
            for _ in range(200_000):
                if ctx.get(bridge.tx) == 0:
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"sample {i}: no reply from the bridge")
            await ctx.tick().repeat(divisor // 2)
            bits = []
            for _ in range(9):
                await ctx.tick().repeat(divisor)
                bits.append(ctx.get(bridge.tx))
            assert bits[8] == 1, f"sample {i}: reply stop bit is 0"
            replies.append(sum(b << k for k, b in enumerate(bits[:8])))
            await ctx.tick().repeat(divisor)

    sim = Simulator(bridge)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.run()
    return replies


@pytest.mark.parametrize("seed,pes", [(1, 2), (2, 1), (27, 4)])
def test_uart_bridge_class_matches_golden(seed: int, pes: int) -> None:
    """Random nets behind the UART (seed 1: two-point layer with the context input; 2: one input;
    27: two inputs), seeds whose classes vary: every reply equals the golden class."""
    rng = np.random.default_rng(seed)
    ir = random_ir(rng, kind="mixed", layers=2, input_size=(5, 8), hidden_size=(4, 6), bits=(2, 8), raw_output=0.0)
    n = 8
    inputs = random_inputs(rng, ir, n, zero_fraction=0.2)
    golden = run_golden(ir, inputs)
    replies = uart_roundtrip(ir, pes, inputs, n)
    expect = [int(c) for c in golden.classes]
    assert len(set(expect)) > 1, "test data should exercise more than one class"
    for i, (got, exp) in enumerate(zip(replies, expect, strict=True)):
        assert got == exp, f"sample {i}: class byte {got}, golden {exp}"


def test_uart_bridge_resynchronises_after_truncated_request() -> None:
    rng = np.random.default_rng(2)
    ir = random_ir(rng, kind="mixed", layers=2, input_size=(5, 8), hidden_size=(4, 6), bits=(2, 8), raw_output=0.0)
    n = 4
    inputs = random_inputs(rng, ir, n, zero_fraction=0.2)
    expect = [int(c) for c in run_golden(ir, inputs).classes]
    replies = uart_roundtrip(ir, 1, inputs, n, truncated=3)
    assert replies == expect


def test_uart_protocol_counts_bytes() -> None:
    ir = tiny_ir()
    p = uart_protocol(ir)
    assert p["elements"] == sum(t.size for t in ir.inputs)
    assert p["request_bytes"] == p["elements"] * p["element_bytes"]
    assert p["element_bytes"] == 1


def test_axi_ip_wrapper_keeps_ports() -> None:
    ir = tiny_ir()
    core = ApicalTop(ir, 2)
    ip = AxiStreamIP(core)
    names = set(ip.signature.members.keys())
    assert {"aclk", "aresetn"} <= names
    assert set(core.signature.members.keys()) <= names
    # Elaborated, the module's ports are exactly those names: no clk/rst leak out.
    text = rtlil.convert(ip, name="apical_axis")
    top = text[text.index("module \\apical_axis"):]
    top = top[: top.index("\nend\n")]
    ports = set(re.findall(r"wire width \d+ (?:input|output) \d+\s+\\(\w+)", top))
    assert ports == names


def test_too_large_fails_early_with_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    big = random_ir(rng, kind="dense", layers=2, input_size=(256, 256), hidden_size=(256, 256),
                    bits=(8, 8), density=1.0)
    save_ir(big, tmp_path / "ir")
    cfg = Config(hardware=HardwareConfig(pes=16, board="icebreaker"))
    with pytest.raises(ApicalError, match=r"memories need (\d+) bits > 122880 block RAM bits") as ei:
        bitstream_run(cfg, tmp_path, board="icebreaker")
    msg = str(ei.value)
    assert "P=16 multipliers > 8 DSP blocks" in msg
    need = int(re.search(r"memories need (\d+) bits", msg).group(1))
    assert need >= big.synapses * 8  # at least every 8-bit weight
    # Nothing was built: the check comes before synthesis.
    assert not (tmp_path / "bitstream").exists()
    assert not (tmp_path / "bitstream.json").exists()


def test_unknown_board(tmp_path: Path) -> None:
    save_ir(tiny_ir(), tmp_path / "ir")
    with pytest.raises(ApicalError, match="known: icebreaker, ulx3s, zcu104"):
        bitstream_run(Config(), tmp_path, board="de10")


def test_fit_reports_numbers() -> None:
    ir = tiny_ir()
    fit = board_fit(ir, 2, "ulx3s")
    assert fit["memory_bits_total"] == sum(fit["memory_bits"].values()) > 0
    assert fit["block_ram_bits"] == BOARDS["ulx3s"].bram_bits


def test_parse_nextpnr_log_takes_last_report() -> None:
    log = "\n".join([
        "Info: Device utilisation:",
        "Info: \t         ICESTORM_LC:   812/ 5280    15%",
        "Info: \t        ICESTORM_RAM:     4/   30    13%",
        "Info: Max frequency for clock 'clk': 30.10 MHz (PASS at 12.00 MHz)",
        "Info: Max frequency for clock 'clk': 27.55 MHz (PASS at 12.00 MHz)",
    ])
    p = parse_nextpnr_log(log)
    assert p["clocks"]["clk"] == {"fmax_mhz": 27.55, "target_mhz": 12.0, "pass": True}
    assert p["utilization"]["ICESTORM_LC"] == {"used": 812, "available": 5280}
    assert p["utilization"]["ICESTORM_RAM"] == {"used": 4, "available": 30}


def _pins(text: str, pattern: str) -> dict[str, str]:
    return dict(re.findall(pattern, text))


PIN_PATTERNS = {
    # board: (generated file, pattern in ours, pattern in the generated one)
    "icebreaker": ("apical_icebreaker.pcf", r"set_io (\S+) (\S+)", r"set_io (\S+) (\S+)"),
    "ulx3s": ("apical_ulx3s.lpf", r'LOCATE COMP "(\w+)" SITE "(\w+)"', r'LOCATE COMP "(\w+)" SITE "(\w+)"'),
    "zcu104": (
        "apical_zcu104.xdc",
        r"PACKAGE_PIN (\w+) IOSTANDARD \w+\} \[get_ports (\w+)\]",
        r'set_property LOC (\w+) \[get_ports "(\w+)"\]',
    ),
}


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_reference_constraints_match_platform(board: str) -> None:
    """Our shipped pin files place the board design's ports where the Amaranth platform does."""
    from apical.hw.boards import BoardTop

    ir = tiny_ir()
    spec = BOARDS[board]
    platform = spec.platform()
    proto = uart_protocol(ir)
    bridge = UartBridge(ApicalTop(ir, 1), elements=proto["elements"], element_bytes=1, divisor=16)
    plan = platform.prepare(BoardTop(bridge), name=f"apical_{board}")
    gen_name, ours_re, gen_re = PIN_PATTERNS[board]
    gen = _pins(plan.files[gen_name], gen_re)
    ours = _pins((constraints_dir() / spec.constraints).read_text(), ours_re)
    if board == "zcu104":
        # XDC lines read (pin, port); the generated ones too, in that order.
        ours, gen = {v: k for k, v in ours.items()}, {v: k for k, v in gen.items()}
    assert ours, f"no pins parsed from constraints/{spec.constraints}"
    assert ours == gen


@pytest.mark.slow
def test_zcu104_tree(tmp_path: Path) -> None:
    ir = tiny_ir()
    save_ir(ir, tmp_path / "ir")
    cfg = Config(hardware=HardwareConfig(pes=2, clock_mhz=250.0))
    s = bitstream_run(cfg, tmp_path, board="zcu104", vivado="")
    assert s["status"] == "tree_only"
    assert "vivado" in s["command"]
    tree = tmp_path / s["tree"]
    tcl = (tree / "apical_zcu104.tcl").read_text()
    assert "-part xczu7ev-ffvc1156-2-e" in tcl
    assert 'read_xdc "zcu104.xdc"' in tcl
    xdc = (tree / "apical_zcu104.xdc").read_text()
    assert re.search(r"create_clock .*-period 8\.0 ", xdc)
    # Our shipped XDC places the same ports on the same pins as the platform's.
    ours = _pins((tree / "zcu104.xdc").read_text(), r"PACKAGE_PIN (\w+) IOSTANDARD \w+\} \[get_ports (\w+)\]")
    gen = _pins(xdc, r"set_property LOC (\w+) \[get_ports \"(\w+)\"\]")
    assert ours and ours == {k: v for k, v in gen.items() if k in ours}
    # The IP: AXI4-Stream names, AXI clock/reset, packaging script for the part.
    ipv = (tmp_path / s["ip"]["verilog"]).read_text()
    for port in ("s_axis_tdata", "s_axis_tready", "m_axis_tdata", "m_axis_tlast", "aclk", "aresetn", "cnt_cycles"):
        assert re.search(rf"\b(input|output)\b[^;]*\b{port}\b", ipv), port
    pkg = (tmp_path / s["ip"]["package_tcl"]).read_text()
    assert "-part xczu7ev-ffvc1156-2-e" in pkg and "ipx::package_project" in pkg
    assert "xilinx.com:interface:axis_rtl:1.0" in pkg
    ooc = (tmp_path / s["ip"]["ooc_xdc"]).read_text()
    assert re.search(r"create_clock -name aclk -period 4\.000 \[get_ports aclk\]", ooc)
    on_disk = json.loads((tmp_path / "bitstream.json").read_text())
    assert on_disk == s


FAKE_VIVADO = """#!/bin/sh
# Stand-in for Vivado: logs its arguments and writes what the real one would.
echo "$PWD $*" >> "$(dirname "$0")/calls.log"
for a in "$@"; do last="$a"; done
case "$last" in
  package_ip.tcl) mkdir -p ip_repo && echo '<spirit:component/>' > ip_repo/component.xml ;;
  *.tcl) printf 'bitstream' > "${last%.tcl}.bit" ;;
esac
"""


@pytest.mark.slow
def test_zcu104_runs_vivado_where_installed(tmp_path: Path) -> None:
    ir = tiny_ir()
    run = tmp_path / "run"
    save_ir(ir, run / "ir")
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text(FAKE_VIVADO)
    fake.chmod(0o755)
    s = bitstream_run(Config(hardware=HardwareConfig(pes=1)), run, board="zcu104", vivado=str(fake))
    assert s["status"] == "built"
    assert (run / s["bitstream"]).read_bytes() == b"bitstream"
    assert s["bitstream_bytes"] == len(b"bitstream")
    assert (run / s["ip_repo"] / "component.xml").is_file()
    calls = (fake.parent / "calls.log").read_text().splitlines()
    assert len(calls) == 2
    assert calls[0].endswith("-mode batch -log apical_zcu104.log -source apical_zcu104.tcl")
    assert calls[1].endswith("-mode batch -source package_ip.tcl") and calls[1].split()[0].endswith("/ip")


@pytest.mark.slow
def test_icebreaker_bitstream(tmp_path: Path) -> None:
    ir = tiny_ir()
    save_ir(ir, tmp_path / "ir")
    cfg = Config(hardware=HardwareConfig(pes=2, board="icebreaker"))
    s = bitstream_run(cfg, tmp_path, board="icebreaker")
    assert s["status"] == "built"
    bit = tmp_path / s["bitstream"]
    assert bit.suffix == ".bin" and bit.stat().st_size == s["bitstream_bytes"]
    # An iCE40 UP5K image is about 100 kB; a truncated one would be far smaller.
    assert s["bitstream_bytes"] > 50_000
    assert s["fmax_mhz"] is not None and s["fmax_mhz"] > 0
    assert s["target_mhz"] == 12.0
    assert s["utilization"]["ICESTORM_LC"]["used"] > 0
    # The reference PCF matches the pins the platform generated.
    tree = tmp_path / s["tree"]
    gen = _pins((tree / "apical_icebreaker.pcf").read_text(), r"set_io (\S+) (\S+)")
    ours = _pins((constraints_dir() / "icebreaker.pcf").read_text(), r"set_io (\S+) (\S+)")
    assert ours == gen
    assert json.loads((tmp_path / "bitstream.json").read_text()) == s
