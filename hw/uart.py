"""A small 8N1 UART (receiver and transmitter) for the open-board wrappers.

`UartTx` serialises bytes from a `lib.stream` onto a ``tx`` line; `UartRx`
samples an ``rx`` line and offers each received byte on a `lib.stream`. Both
take ``divisor``, the number of clock cycles per bit (clock frequency / baud
rate), computed with `baud_divisor`. Frames are 8N1: one start bit (0), eight
data bits least significant first, one stop bit (1); the line idles high.
`uart_frame` is the bit-level software model both are tested against.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "baud_divisor", "uart_frame"]


def baud_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit; the rounding error must stay within 2 % for reliable frames."""
    if not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud: must be a positive integer, got {baud!r}")
    if clk_hz <= 0:
        raise ValueError(f"clk_hz: must be positive, got {clk_hz!r}")
    div = round(clk_hz / baud)
    if div < 4:
        raise ValueError(f"baud: {baud} is too fast for a {clk_hz / 1e6:g} MHz clock (needs >= 4 cycles per bit)")
    if abs(clk_hz / div - baud) / baud > 0.02:
        raise ValueError(f"baud: {baud} cannot be made within 2 % from {clk_hz / 1e6:g} MHz (got {clk_hz / div:.0f})")
    return div


def uart_frame(byte: int) -> list[int]:
    """The ten line levels of one 8N1 frame: start bit, data bits LSB first, stop bit."""
    if not 0 <= byte <= 255:
        raise ValueError(f"byte: must be in [0, 255], got {byte!r}")
    return [0, *((byte >> i) & 1 for i in range(8)), 1]


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor: must be an integer, got {divisor!r}")
    if divisor < 4:
        raise ValueError(f"divisor: must be >= 4 clock cycles per bit, got {divisor}")


class UartTx(wiring.Component):
    """Transmitter: takes a byte from ``data`` when idle and shifts out its frame on ``tx``."""

    data: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, divisor: int) -> None:
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform: object) -> Module:
        m = Module()
        # The frame as a shift register: stop bit, data, start bit (LSB goes out first).
        shreg = Signal(10, init=0x3FF)
        bits_left = Signal(range(11))
        timer = Signal(range(self._divisor))

        m.d.comb += [
            self.tx.eq(shreg[0]),
            self.busy.eq(bits_left != 0),
            self.data.ready.eq(bits_left == 0),
        ]
        with m.If(bits_left == 0):  # noqa: SIM117 - Amaranth control flow reads better nested
            with m.If(self.data.valid):
                m.d.sync += [
                    shreg.eq((1 << 9) | (self.data.payload << 1)),
                    bits_left.eq(10),
                    timer.eq(self._divisor - 1),
                ]
        with m.Elif(timer == 0):
            m.d.sync += [
                shreg.eq((1 << 9) | (shreg >> 1)),
                bits_left.eq(bits_left - 1),
                timer.eq(self._divisor - 1),
            ]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UartRx(wiring.Component):
    """Receiver: samples each bit in its middle; a byte with a good stop bit goes to ``data``.

    ``data.valid`` stays up until ``data.ready``; a byte arriving before the
    previous one was taken replaces it and raises ``overrun`` for one cycle.
    A frame whose stop bit is 0 is dropped and raises ``frame_error``.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    overrun: Out(1)
    frame_error: Out(1)

    def __init__(self, *, divisor: int) -> None:
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform: object) -> Module:
        m = Module()
        # The line is asynchronous to the clock: two flops before any decision.
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self._divisor))
        bit = Signal(range(9))
        shreg = Signal(8)
        payload = Signal(8)
        valid = Signal()

        m.d.comb += [self.data.payload.eq(payload), self.data.valid.eq(valid)]
        m.d.sync += [self.overrun.eq(0), self.frame_error.eq(0)]
        with m.If(self.data.ready):
            m.d.sync += valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):  # noqa: SIM117
                with m.If(~rx):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    # Middle of the start bit: still low, or it was a glitch.
                    with m.If(~rx):
                        m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq((rx << 7) | (shreg >> 1)), timer.eq(self._divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += bit.eq(bit + 1)
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [payload.eq(shreg), valid.eq(1)]
                        m.d.sync += self.overrun.eq(valid & ~self.data.ready)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):  # noqa: SIM117
                # Wait for the line to return high before hunting for the next start bit.
                with m.If(rx):
                    m.next = "IDLE"
        return m

