"""Controller: the inference sequence IN -> RUN -> FINISH -> OUT of the PE array.

IN takes the input stream (``input``, one activation per beat, every IR input
in order) and writes each value into its lane of activation memory
(``write``); the first beat clears the counters and the last one starts the
scan of the first layer. RUN starts each layer's finalisation once the
scanner and the PEs are done with it (only the PEs' last accumulator writes in
flight) and with it the scan of the next layer, which trails the
finalisation word by word; a context-gated layer is scanned in two parts, its
gate site, then (with a gate pass of the finalisers, ``fin_gate``) its other
site. FINISH waits for the last finaliser write, OUT for the output stage's
class beat. ``running`` marks the cycles counted in ``cnt_cycles``: from the
last input beat accepted to the first output beat offered.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from apical.hw.layouts import act_write_signature
from apical.hw.schedule import Schedule

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Sequencing of ``schedule``'s layers; input beats ``in_width`` bits wide (domain ``sync``)."""

    def __init__(self, schedule: Schedule, in_width: int):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Controller: schedule must be a Schedule, got {type(schedule).__name__}")
        if isinstance(in_width, bool) or not isinstance(in_width, int) or in_width < 1:
            raise ValueError(f"Controller: in_width must be an integer >= 1, got {in_width!r}")
        s = self._s = schedule
        super().__init__({
            "input": In(stream.Signature(unsigned(in_width))),
            "write": Out(act_write_signature(s.act_words, s.pes, s.act_bits)),
            "clear_counters": Out(1),
            "scan_start": Out(1),  # scan the layer whose first segment is `scan_seg`
            "scan_seg": Out(range(len(s.segments))),
            "scan_busy": In(1),
            "pe_busy": In(1),  # a PE is busy other than with its last accumulator write
            "fin_start": Out(1),  # finalise layer `fin_layer` (a gate pass when `fin_gate`)
            "fin_gate": Out(1),
            "fin_layer": Out(range(len(s.layers))),
            "fin_active": In(1),
            "fin_busy": In(1),  # a finaliser write later than this cycle is still to come
            "out_start": Out(1),
            "out_valid": In(1),  # the output stage offers a beat
            "out_done": In(1),  # the class beat is taken this cycle
            "running": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s = self._s
        P, A = s.pes, s.act_bits
        n_in, n_layers = s.n_inputs, len(s.layers)

        # ------------------------------------------------------------- scan sequencing
        sc_layer = Signal(range(n_layers))
        first_seg = Signal(range(len(s.segments)))  # the next layer's first scan segment
        sc_other = Signal()  # the scan in flight is a gated layer's other site
        sc_gated = Signal()  # layer sc_layer is context-gated
        other_seg = Signal(range(len(s.segments)))  # its other site's first scan segment
        with m.Switch(sc_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += first_seg.eq(s.layers[min(li + 1, n_layers - 1)].segments[0])
                    if lp.gate is not None:
                        m.d.comb += [sc_gated.eq(1), other_seg.eq(lp.segments[lp.gate_segments])]

        # ------------------------------------------------------------- input addressing
        in_t = Signal(range(max(n_in, 2)))
        in_e = Signal(range(max(t.size for t in s.tensors[:n_in]) + 1))
        in_word = Signal(range(s.act_words))
        in_lane = Signal(range(max(P, 2)))
        t_size = Signal(len(in_e))
        with m.Switch(in_t):
            for ti in range(n_in):
                with m.Case(ti):
                    m.d.comb += t_size.eq(s.tensors[ti].size)
        next_base = Signal(range(s.act_words))
        with m.Switch(in_t):
            for ti in range(n_in):
                with m.Case(ti):
                    m.d.comb += next_base.eq(s.tensors[(ti + 1) % n_in].word_base)
        # One input lane as wide as an activation lane: the stream may be narrower than
        # the widest tensor (8-bit inputs, a 9..16-bit layer), so widen, never re-slice.
        in_lane_data = Signal(unsigned(A))
        m.d.comb += in_lane_data.eq(self.input.payload)

        # The array was idle in the previous cycle (scanner, PEs, finalisers), and nothing was
        # started then: registered, so the OR of every PE's busy flag ends here instead of
        # running on into the finalise and scan starts. Idle parts stay idle until started,
        # so a decision a cycle late is the same decision.
        idle = Signal()
        m.d.sync += idle.eq(~self.scan_busy & ~self.pe_busy & ~self.fin_active & ~self.fin_start & ~self.scan_start)

        with m.FSM(name="ctrl"):
            with m.State("IN"):
                m.d.comb += self.input.ready.eq(1)
                with m.If(self.input.valid):
                    m.d.comb += [
                        self.clear_counters.eq((in_t == 0) & (in_e == 0)),
                        self.write.addr.eq(in_word),
                        self.write.data.eq(in_lane_data.replicate(P)),
                        self.write.en.eq(1 << in_lane),
                    ]
                    with m.If(in_e + 1 == t_size):
                        m.d.sync += [in_e.eq(0), in_lane.eq(0), in_word.eq(next_base)]
                        with m.If(in_t == n_in - 1):
                            # The scanner's first fetch is in the next cycle, after this write.
                            m.d.sync += [in_t.eq(0), sc_layer.eq(0)]
                            m.d.comb += [self.scan_seg.eq(0), self.scan_start.eq(1)]
                            m.next = "RUN"
                        with m.Else():
                            m.d.sync += in_t.eq(in_t + 1)
                    with m.Else():
                        m.d.sync += in_e.eq(in_e + 1)
                        with m.If(in_lane == P - 1):
                            m.d.sync += [in_lane.eq(0), in_word.eq(in_word + 1)]
                        with m.Else():
                            m.d.sync += in_lane.eq(in_lane + 1)
            # A layer is done once the scanner has sent its last event and the PEs have
            # only their last accumulator writes in flight: finalise it and start the next.
            with m.State("RUN"), m.If(idle):
                m.d.comb += [self.fin_start.eq(1), self.fin_layer.eq(sc_layer)]
                with m.If(sc_gated & ~sc_other):
                    # Gate site accumulated: a gate pass sets the fixed bits while the other
                    # site's events are scanned into the PE queues, held there until it ends.
                    m.d.sync += sc_other.eq(1)
                    m.d.comb += [self.fin_gate.eq(1), self.scan_seg.eq(other_seg), self.scan_start.eq(1)]
                with m.Elif(sc_layer == n_layers - 1):
                    m.d.sync += sc_other.eq(0)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [sc_layer.eq(sc_layer + 1), sc_other.eq(0)]
                    m.d.comb += [self.scan_seg.eq(first_seg), self.scan_start.eq(1)]
            # The last finaliser write is this cycle at the latest: OUT reads it from the next.
            with m.State("FINISH"), m.If(~self.fin_busy & ~self.fin_start):
                m.d.comb += self.out_start.eq(1)
                m.next = "OUT"
            with m.State("OUT"), m.If(self.out_done):
                m.next = "IN"
        m.d.comb += self.running.eq(~self.input.ready & ~self.out_valid)
        return m
