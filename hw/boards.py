"""Board-level wrappers around the array: a UART bridge for open boards, an AXI4-Stream IP.

* `UartBridge` puts a byte protocol on the array's AXI4-Stream ports so a
  person with a serial terminal can run one inference: the host sends every
  input activation as ``element_bytes`` little-endian two's-complement bytes
  (all IR inputs in IR order), the bridge sends back one byte, the class
  index. The output values before the class beat are drained and dropped.
  The protocol is documented in ``docs/bitstream.md``.
* `AxiStreamIP` is the block for an UltraScale+ block design: the array's
  ports unchanged (``s_axis_*``, ``m_axis_*``, ``cnt_*``) plus ``aclk`` and
  the active-low ``aresetn`` AXI convention, so Vivado's IP packager infers
  the stream interfaces, the clock and the reset from the names alone.
* `BoardTop` binds a `UartBridge` to a platform's ``uart`` and ``led``
  resources; `ZCU104Platform` is the ZCU104 board (amaranth-boards has none).

The wrappers take any component with the array's port names (the contract of
``docs/contracts.md``), so they can be tested without the full array.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, Resource, ResourceError, Subsignal
from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Module,
    ResetInserter,
    ResetSignal,
    Signal,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.vendor import XilinxPlatform

from apical.hw.uart import UartRx, UartTx

__all__ = ["AxiStreamIP", "BoardTop", "UartBridge", "ZCU104Platform", "core_ports"]

AXIS_IN = ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast")
AXIS_OUT = ("m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast")


def core_ports(core: wiring.Component) -> dict[str, wiring.Member]:
    """The array's flat port members, checked against the AXI4-Stream names of the contract."""
    if not isinstance(core, wiring.Component):
        raise TypeError(f"core: must be a lib.wiring.Component, got {core!r}")
    members = dict(core.signature.members.items())
    missing = [n for n in (*AXIS_IN, *AXIS_OUT) if n not in members]
    if missing:
        raise ValueError(f"core: missing AXI4-Stream ports {missing} (see docs/contracts.md)")
    for name, member in members.items():
        if not member.is_port:
            raise ValueError(f"core: port {name!r} is an interface; the array's top level must be flat")
    return members


class UartBridge(wiring.Component):
    """UART byte protocol <-> the array's AXI4-Stream ports (one class byte per inference).

    ``busy`` is high from the first byte of an input until its class byte is
    queued; ``cls`` holds the last class index (for LEDs). A request left
    incomplete for ``timeout`` clock cycles (default: 2048 frame times, about
    0.18 s at 115200 baud) is abandoned: the array is reset and the bridge
    waits for a new request, so a host that lost a byte resynchronises by
    pausing.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    cls: Out(8)

    def __init__(
        self,
        core: wiring.Component,
        *,
        elements: int,
        element_bytes: int,
        divisor: int,
        timeout: int | None = None,
    ) -> None:
        core_ports(core)
        if timeout is None:
            timeout = 2048 * 10 * divisor
        if not isinstance(timeout, int) or timeout < 20 * divisor:
            raise ValueError(f"timeout: must be an integer of at least two frame times ({20 * divisor}), got {timeout!r}")
        if not isinstance(elements, int) or elements < 1:
            raise ValueError(f"elements: must be a positive integer, got {elements!r}")
        if not isinstance(element_bytes, int) or not 1 <= element_bytes <= 4:
            raise ValueError(f"element_bytes: must be in [1, 4], got {element_bytes!r}")
        self._core = core
        self._elements = elements
        self._element_bytes = element_bytes
        self._divisor = divisor
        self._timeout = timeout
        self._uart_rx = UartRx(divisor=divisor)
        self._uart_tx = UartTx(divisor=divisor)
        super().__init__()

    @property
    def elements(self) -> int:
        return self._elements

    @property
    def element_bytes(self) -> int:
        return self._element_bytes

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def timeout(self) -> int:
        return self._timeout

    def elaborate(self, platform: object) -> Module:
        m = Module()
        core = self._core
        abort = Signal()
        m.submodules.core = ResetInserter(abort)(core)
        m.submodules.uart_rx = urx = self._uart_rx
        m.submodules.uart_tx = utx = self._uart_tx
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        # Input side: assemble little-endian bytes into one activation per beat.
        nb = self._element_bytes
        word = Signal(8 * nb)
        byte_idx = Signal(range(nb))
        elem_idx = Signal(range(self._elements))
        have_word = Signal()
        last = elem_idx == self._elements - 1
        m.d.comb += [
            urx.data.ready.eq(~have_word),
            core.s_axis_tdata.eq(word),
            core.s_axis_tvalid.eq(have_word),
            core.s_axis_tlast.eq(last),
        ]
        with m.If(urx.data.valid & ~have_word):
            # Shift in from the top: after nb bytes the first one is the least significant.
            m.d.sync += word.eq((urx.data.payload << (8 * (nb - 1))) | (word >> 8))
            m.d.sync += self.busy.eq(1)
            with m.If(byte_idx == nb - 1):
                m.d.sync += [byte_idx.eq(0), have_word.eq(1)]
            with m.Else():
                m.d.sync += byte_idx.eq(byte_idx + 1)
        with m.If(have_word & core.s_axis_tready):
            m.d.sync += [have_word.eq(0), elem_idx.eq(elem_idx + 1)]
            with m.If(last):
                m.d.sync += elem_idx.eq(0)

        # Resynchronisation: a request idle mid-way for `timeout` cycles is dropped.
        partial = (byte_idx != 0) | (elem_idx != 0) | have_word
        idle = Signal(range(self._timeout + 1))
        with m.If(~partial | urx.data.valid):
            m.d.sync += idle.eq(0)
        with m.Elif(idle == self._timeout):
            m.d.comb += abort.eq(1)
            m.d.sync += [idle.eq(0), byte_idx.eq(0), elem_idx.eq(0), have_word.eq(0), self.busy.eq(0)]
        with m.Else():
            m.d.sync += idle.eq(idle + 1)

        # Output side: drain every value beat, keep the class beat (tlast) for the UART.
        pending = Signal()
        m.d.comb += [
            core.m_axis_tready.eq(~pending),
            utx.data.payload.eq(self.cls),
            utx.data.valid.eq(pending),
        ]
        with m.If(core.m_axis_tvalid & core.m_axis_tlast & ~pending):
            m.d.sync += [self.cls.eq(core.m_axis_tdata[:8]), pending.eq(1), self.busy.eq(0)]
        with m.If(pending & utx.data.ready):
            m.d.sync += pending.eq(0)
        return m


class AxiStreamIP(wiring.Component):
    """The array with AXI clock/reset names (``aclk``, active-low ``aresetn``) for Vivado IP.

    Every port of the core appears unchanged; the core's ``sync`` domain is
    clocked by ``aclk`` and reset while ``aresetn`` is low (AXI resets are
    synchronous to ``aclk``, so no synchroniser is needed).
    """

    def __init__(self, core: wiring.Component) -> None:
        members = core_ports(core)
        self._core = core
        super().__init__(wiring.Signature({"aclk": In(1), "aresetn": In(1, init=1), **members}))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]
        m.submodules.core = core = self._core
        for name, member in core.signature.members.items():
            outer, inner = getattr(self, name), getattr(core, name)
            if member.flow == wiring.In:
                m.d.comb += inner.eq(outer)
            else:
                m.d.comb += outer.eq(inner)
        return m


class BoardTop(Elaboratable):
    """A `UartBridge` on a board: ``uart`` resource 0, ``led`` 0 = busy, further LEDs = class bits."""

    def __init__(self, bridge: UartBridge) -> None:
        if not isinstance(bridge, UartBridge):
            raise TypeError(f"bridge: must be a UartBridge, got {bridge!r}")
        self._bridge = bridge

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.bridge = bridge = self._bridge
        uart = platform.request("uart", 0)
        m.d.comb += [bridge.rx.eq(uart.rx.i), uart.tx.o.eq(bridge.tx)]
        leds = []
        for i in range(9):
            try:
                leds.append(platform.request("led", i))
            except ResourceError:
                break
        if leds:
            m.d.comb += leds[0].o.eq(bridge.busy)
            for i, led in enumerate(leds[1:]):
                m.d.comb += led.o.eq(bridge.cls[i])
        return m


class ZCU104Platform(XilinxPlatform):
    """AMD ZCU104 (xczu7ev-ffvc1156-2-e): 125 MHz clock, 4 LEDs, a UART on PMOD0 (J55).

    The board's USB UARTs go to the processing system, so the UART for the
    bridge is a 3.3 V PMOD adapter (e.g. a PmodUSBUART) on J55: pin 1 = FPGA
    transmit, pin 2 = FPGA receive. Pins follow the board's user guide (UG1267).
    """

    device = "xczu7ev"
    package = "ffvc1156"
    speed = "2-e"
    default_clk = "clk125"
    resources = [  # noqa: RUF012 - the amaranth.build platform API is a class attribute
        Resource("clk125", 0, DiffPairs("F23", "E23", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVDS")),
        Resource("led", 0, Pins("D5", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
        Resource("led", 1, Pins("D6", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
        Resource("led", 2, Pins("A5", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
        Resource("led", 3, Pins("B5", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
        Resource(
            "uart", 0,
            Subsignal("tx", Pins("G8", dir="o")),
            Subsignal("rx", Pins("H8", dir="i")),
            Attrs(IOSTANDARD="LVCMOS33"),
        ),
    ]
    connectors = []  # noqa: RUF012
