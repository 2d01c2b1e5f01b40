"""Requantiser: ``rhe(acc * multiplier, shift)``, optional relu, saturation, full or narrow (sw/ir.py).

The parameters are compile-time constants of one IR site, so the shift is
wiring and a multiplier of 1 costs nothing; the golden counterpart is
`apical.sw.golden.requantize`.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from apical.sw.ir import int_range

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Combinational requantiser of a signed ``in_bits`` accumulator to a (bits, signed) value."""

    def __init__(self, *, in_bits: int, shift: int, multiplier: int = 1, relu: bool = False,
                 bits: int, signed_out: bool, narrow: bool = False):
        for name, v in (("in_bits", in_bits), ("shift", shift), ("multiplier", multiplier), ("bits", bits)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Requantizer: {name} must be an integer, got {v!r}")
        if in_bits < 2:
            raise ValueError(f"Requantizer: in_bits must be >= 2, got {in_bits}")
        if multiplier < 1:
            raise ValueError(f"Requantizer: multiplier must be >= 1, got {multiplier}")
        if bits < 1:
            raise ValueError(f"Requantizer: bits must be >= 1, got {bits}")
        self._in_bits, self._shift, self._mult = in_bits, shift, multiplier
        if narrow and (not signed_out or bits < 2):
            raise ValueError("Requantizer: narrow range needs a signed output of at least 2 bits")
        self._relu, self._bits, self._signed = bool(relu), bits, bool(signed_out)
        self._narrow = bool(narrow)
        out = signed(bits) if signed_out else unsigned(bits)
        super().__init__({"i": In(signed(in_bits)), "o": Out(out)})

    def elaborate(self, platform):
        m = Module()
        v = self.i * self._mult if self._mult != 1 else self.i
        s = self._shift
        if s > 0:
            # Widen so the remainder slice exists even when shift >= width.
            ve = Signal(signed(max(len(v), s + 1) + 1))
            m.d.comb += ve.eq(v)
            q = ve >> s
            rem = ve[:s]
            half = 1 << (s - 1)
            up = (rem > half) | ((rem == half) & q[0])
            r = q + up
        elif s < 0:
            r = v << -s
        else:
            r = v
        if self._relu:
            r = Mux(r > 0, r, 0)
        lo, hi = int_range(self._bits, self._signed)
        lo += int(self._narrow)  # narrow: the most negative code is never produced
        m.d.comb += self.o.eq(Mux(r < lo, Const(lo), Mux(r > hi, Const(hi), r)))
        return m
