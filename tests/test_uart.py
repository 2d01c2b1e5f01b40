"""UART RX/TX against the bit-level 8N1 model, in Amaranth's simulator."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from apical.hw.uart import UartRx, UartTx, baud_divisor, uart_frame


def decode_line(levels: list[int], divisor: int) -> list[int]:
    """Bit-level model of a receiver: find start bits, sample mid-bit, check stop bits."""
    out = []
    i = 0
    while i < len(levels):
        if levels[i] == 0:
            mid = i + divisor // 2
            samples = [levels[mid + k * divisor] for k in range(10) if mid + k * divisor < len(levels)]
            if len(samples) < 10:
                break
            assert samples[0] == 0, f"start bit at cycle {i} not low in its middle"
            assert samples[9] == 1, f"stop bit of frame at cycle {i} is 0"
            out.append(sum(b << k for k, b in enumerate(samples[1:9])))
            i = mid + 9 * divisor
        else:
            i += 1
    return out


def test_uart_frame_model() -> None:
    assert uart_frame(0xA5) == [0, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    with pytest.raises(ValueError):
        uart_frame(256)


def test_baud_divisor() -> None:
    assert baud_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too fast"):
        baud_divisor(1e6, 500000)
    with pytest.raises(ValueError, match="2 %"):
        baud_divisor(100.0, 19)  # 100/19 -> divisor 5 gives 20 baud, 5 % off


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_tx_matches_model(divisor: int) -> None:
    rng = np.random.default_rng(divisor)
    data = [int(b) for b in rng.integers(0, 256, size=6)] + [0x00, 0xFF]
    dut = UartTx(divisor=divisor)
    levels: list[int] = []

    async def feeder(ctx):
        for b in data:
            ctx.set(dut.data.payload, b)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
            ctx.set(dut.data.valid, 0)
            # Random gaps between bytes: the line must idle high meanwhile.
            for _ in range(int(rng.integers(0, 3 * divisor))):
                await ctx.tick()

    async def recorder(ctx):
        for _ in range((len(data) * 13 + 4) * divisor):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feeder, background=True)
    sim.add_testbench(recorder)
    sim.run()
    assert levels[0] == 1
    assert decode_line(levels, divisor) == data
    # Every frame is exactly the model's ten bits, each held `divisor` cycles.
    first = levels.index(0)
    expect = [lvl for bit in uart_frame(data[0]) for lvl in [bit] * divisor]
    assert levels[first : first + 10 * divisor] == expect


@pytest.mark.parametrize("divisor,skew", [(8, 0), (32, 1), (32, -1), (5, 0)])
def test_rx_matches_model(divisor: int, skew: int) -> None:
    """Drive the line from the model; ``skew`` makes the sender's bits a cycle longer/shorter (3 %)."""
    rng = np.random.default_rng(100 + divisor)
    data = [int(b) for b in rng.integers(0, 256, size=6)] + [0x00, 0xFF, 0x55]
    line: list[int] = [1] * 7
    for b in data:
        for bit in uart_frame(b):
            line += [bit] * (divisor + skew)
        line += [1] * int(rng.integers(0, 2 * divisor))
    line += [1] * (4 * divisor)
    dut = UartRx(divisor=divisor)
    got: list[int] = []
    flags = {"overrun": 0, "frame_error": 0}

    async def driver(ctx):
        for lvl in line:
            ctx.set(dut.rx, lvl)
            await ctx.tick()

    async def sink(ctx):
        ctx.set(dut.data.ready, 1)
        async for _, _, valid, payload, ovr, ferr in ctx.tick().sample(
            dut.data.valid, dut.data.payload, dut.overrun, dut.frame_error
        ):
            if valid:
                got.append(payload)
            flags["overrun"] |= ovr
            flags["frame_error"] |= ferr

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(driver)
    sim.run()
    assert got == data
    assert flags == {"overrun": 0, "frame_error": 0}


def test_rx_flags_bad_stop_bit() -> None:
    divisor = 8
    frame = uart_frame(0x3C)
    frame[-1] = 0  # broken stop bit
    line = [1] * 5 + [b for bit in frame for b in [bit] * divisor] + [0] * 3 * divisor + [1] * 3 * divisor
    line += [b for bit in uart_frame(0x81) for b in [bit] * divisor] + [1] * 3 * divisor
    dut = UartRx(divisor=divisor)
    got: list[int] = []
    errors = []

    async def driver(ctx):
        for lvl in line:
            ctx.set(dut.rx, lvl)
            await ctx.tick()

    async def sink(ctx):
        ctx.set(dut.data.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(
            dut.data.valid, dut.data.payload, dut.frame_error
        ):
            if valid:
                got.append(payload)
            if ferr:
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(driver)
    sim.run()
    assert got == [0x81]  # the broken frame is dropped, the next one still received
    assert errors == [1]


def test_loopback() -> None:
    """TX wired into RX returns every byte."""
    from amaranth.hdl import Module

    divisor = 6
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=divisor)
    m.submodules.rx = rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    data = list(range(0, 256, 37))
    got: list[int] = []

    async def feeder(ctx):
        for b in data:
            ctx.set(tx.data.payload, b)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        for _ in range(20 * divisor):
            await ctx.tick()

    async def sink(ctx):
        ctx.set(rx.data.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(rx.data.valid, rx.data.payload):
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(feeder)
    sim.run()
    assert got == data


def test_divisor_validated() -> None:
    with warnings.catch_warnings():
        # A component whose constructor raised is never elaborated; that is the point here.
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="divisor"):
            UartTx(divisor=2)
        with pytest.raises(TypeError, match="divisor"):
            UartRx(divisor=8.0)  # type: ignore[arg-type]
        gc.collect()
