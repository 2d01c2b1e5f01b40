"""Output stage: streams the last layer's values, then the class (argmax, first index on ties).

Started once the last layer is written to activation memory, it reads value
``n`` from the stored position of neuron ``n`` (a small position memory),
sign- or zero-extends it into one stream beat, and after the last value sends
one beat with the class index and ``last`` set. The argmax runs one beat behind
the stream (a registered compare), so the memory read and the compare are not
one path; the class beat folds in the final pending compare.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from apical.hw.schedule import Schedule

__all__ = ["OutputStage", "beat_layout"]


def beat_layout(width: int) -> data.StructLayout:
    """One output beat: ``data`` and ``last`` (set on the class beat)."""
    return data.StructLayout({"data": unsigned(width), "last": unsigned(1)})


class OutputStage(wiring.Component):
    """Values of ``schedule``'s last layer, then its class, as a stream of ``width``-bit beats."""

    def __init__(self, schedule: Schedule, width: int):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"OutputStage: schedule must be a Schedule, got {type(schedule).__name__}")
        last = schedule.layers[-1]
        need = max(last.out_bits, bits_for(max(last.size - 1, 1)))
        if isinstance(width, bool) or not isinstance(width, int) or width < need:
            raise ValueError(f"OutputStage: width must be an integer >= {need}, got {width!r}")
        self._s, self._width = schedule, width
        super().__init__({
            "start": In(1),
            "act_addr": Out(range(schedule.act_words)),
            "act_data": In(unsigned(schedule.lanes * schedule.act_bits)),
            "beats": Out(stream.Signature(beat_layout(width))),
            "done": Out(1),  # the class beat is taken this cycle
        })

    def elaborate(self, platform):
        m = Module()
        s = self._s
        P, A = s.lanes, s.act_bits
        last = s.layers[-1]
        last_t = s.tensors[last.out_tensor]
        lane_bits = bits_for(max(P - 1, 1))
        word_bits = bits_for(max(s.act_words - 1, 1))
        m.submodules.out_pos = out_pos = Memory(
            shape=unsigned(word_bits + lane_bits), depth=last.size,
            init=[((last_t.word_base + p // P) << lane_bits) | (p % P) for p in last_t.positions])

        n = Signal(range(last.size + 1))
        pos_rd = out_pos.read_port(domain="comb")
        m.d.comb += [pos_rd.addr.eq(n), self.act_addr.eq(pos_rd.data[lane_bits:])]
        raw = self.act_data.word_select(pos_rd.data[:lane_bits], A)[:last.out_bits]
        value = Signal(signed(A + 1))
        m.d.comb += value.eq(raw.as_signed() if last.out_signed else raw)

        # Argmax one beat behind: `pend` is the last value sent, not yet compared.
        best = Signal(signed(A + 1))
        best_idx = Signal(range(max(last.size, 2)))
        pend, pend_idx, pend_valid = Signal(signed(A + 1)), Signal(range(max(last.size, 2))), Signal()
        takes = Signal()
        m.d.comb += takes.eq(pend_valid & ((pend_idx == 0) | (pend > best)))
        with m.If(takes):
            m.d.sync += [best.eq(pend), best_idx.eq(pend_idx)]
        m.d.sync += pend_valid.eq(0)

        beat = self.beats.payload
        with m.FSM(name="out"):
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += n.eq(0)
                m.next = "VALUES"
            with m.State("VALUES"):
                m.d.comb += [self.beats.valid.eq(1), beat.data.eq(value)]
                with m.If(self.beats.ready):
                    m.d.sync += [pend.eq(value), pend_idx.eq(n), pend_valid.eq(1), n.eq(n + 1)]
                    with m.If(n == last.size - 1):
                        m.next = "CLASS"
            with m.State("CLASS"):
                m.d.comb += [self.beats.valid.eq(1), beat.data.eq(Mux(takes, pend_idx, best_idx)), beat.last.eq(1)]
                with m.If(self.beats.ready):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
