"""Counter bank: the ``cnt_*`` activity counters of the array (docs/contracts.md).

Each counter adds a per-cycle increment. The increments are registered first,
so the wide population counts over the PEs and the 32-bit additions sit in
different cycles (the totals lag the activity by one cycle, well before the
class beat from which they are read). ``clear`` restarts every total at the
registered increment of that cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apical.sw.counts import COUNTER_BITS

__all__ = ["CounterBank"]


class CounterBank(wiring.Component):
    """Counters ``names``; increment ``inc_<name>`` (``inc_bits[name]`` wide), total ``cnt_<name>``."""

    def __init__(self, inc_bits: dict[str, int], *, bits: int = COUNTER_BITS):
        if not isinstance(inc_bits, dict) or not inc_bits:
            raise TypeError(f"CounterBank: inc_bits must be a non-empty dict of name -> width, got {inc_bits!r}")
        for name, w in inc_bits.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"CounterBank: counter name must be an identifier, got {name!r}")
            if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= bits:
                raise ValueError(f"CounterBank: inc_bits[{name!r}] must be an integer in [1, {bits}], got {w!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ValueError(f"CounterBank: bits must be an integer >= 1, got {bits!r}")
        self._inc_bits = dict(inc_bits)
        ports = {"clear": In(1)}
        for name, w in inc_bits.items():
            ports[f"inc_{name}"] = In(w)
            ports[f"cnt_{name}"] = Out(bits)
        super().__init__(ports)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._inc_bits)

    def elaborate(self, platform):
        m = Module()
        clear = Signal()
        m.d.sync += clear.eq(self.clear)
        for name, w in self._inc_bits.items():
            inc = Signal(w, name=f"{name}_inc")
            total = getattr(self, f"cnt_{name}")
            m.d.sync += inc.eq(getattr(self, f"inc_{name}"))
            with m.If(clear):
                m.d.sync += total.eq(inc)
            with m.Else():
                m.d.sync += total.eq(total + inc)
        return m
