"""Event scanner: reads ``lanes`` activations per cycle and emits the non-zero ones as events.

Started on one scan segment (a source tensor of a site), it walks the
tensor's activation words; a word with no non-zero activation costs one
cycle, a word with ``n`` non-zeros about ``n / issue`` cycles: up to
``issue`` (default 2) events leave per cycle, the lowest lanes first, as long
as they go to disjoint PEs (one queue write per PE per cycle). Each event
goes only to the PEs whose bit is set in the event-mask memory (those holding
synapses for that input), or with anycast to the emptiest free one of them,
and waits until all of them can take it. ``limited``/``limit`` let the scan trail a
finalisation that is still writing the tensor: word ``w`` is read only once
``w < limit``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apical.hw.layouts import event_layout
from apical.hw.schedule import Schedule

__all__ = ["Scanner"]


class Scanner(wiring.Component):
    def __init__(self, schedule: Schedule, *, queue_depth: int = 16, issue: int | None = None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Scanner: schedule must be a Schedule, got {type(schedule).__name__}")
        if issue is None:
            issue = schedule.issue
        if isinstance(issue, bool) or not isinstance(issue, int) or issue < 1:
            raise ValueError(f"Scanner: issue must be an integer >= 1, got {issue!r}")
        self._issue = min(issue, schedule.lanes)
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"Scanner: queue_depth must be an integer >= 2, got {queue_depth!r}")
        s = self._s = schedule
        self.ev_layout = event_layout(s.index_depth, s.value_bits)
        max_words = max(t.words for t in s.tensors)
        super().__init__({
            "start": In(1),
            "seg": In(range(len(s.segments))),
            "limited": In(1),
            "limit": In(range(max_words + 1)),
            "act_addr": Out(range(s.act_words)),
            "act_data": In(unsigned(s.lanes * s.act_bits)),
            # events[p][i]: issue slot i of PE p (a queue per slot in each PE)
            "events": Out(stream.Signature(self.ev_layout)).array(s.pes, self._issue),
            "levels": In(range(self._issue * queue_depth + 1)).array(s.pes),  # PE queue fill, for anycast
            "done": Out(1),  # one-cycle pulse after the segment's last word
            "event": Out(range(self._issue + 1)),  # events that left this cycle (counter increment)
        })

    @property
    def issue(self) -> int:
        """Events per cycle at most: the issue slots, one queue each in every PE."""
        return self._issue

    def elaborate(self, platform):
        m = Module()
        s = self._s
        lanes, a_bits = s.lanes, s.act_bits
        m.submodules.mask_mem = mask_mem = Memory(shape=unsigned(s.pes), depth=s.index_depth, init=list(s.mask))

        active = Signal()
        seg = Signal(range(len(s.segments)))
        w = Signal(range(max(t.words for t in s.tensors) + 1))
        done_lanes = Signal(lanes)

        word_base = Signal(range(s.act_words))
        n_words = Signal(len(w))
        index_base = Signal(range(s.index_depth))
        fmts = sorted({(s.tensors[g.tensor].bits, s.tensors[g.tensor].signed) for g in s.segments})
        fmt = Signal(range(len(fmts)))
        anycast = Signal()
        with m.Switch(seg):
            for i, g in enumerate(s.segments):
                t = s.tensors[g.tensor]
                with m.Case(i):
                    m.d.comb += [word_base.eq(t.word_base), n_words.eq(t.words), index_base.eq(g.index_base),
                                 fmt.eq(fmts.index((t.bits, t.signed))), anycast.eq(g.anycast)]
        m.d.comb += self.act_addr.eq(word_base + w)

        # Decode each lane by the tensor's (bits, signed) format.
        values = [Signal(signed(s.value_bits), name=f"lane{i}") for i in range(lanes)]
        nz = Signal(lanes)
        with m.Switch(fmt):
            for fi, (bits, sgn) in enumerate(fmts):
                with m.Case(fi):
                    for i in range(lanes):
                        raw = self.act_data.word_select(i, a_bits)[:bits]
                        m.d.comb += [values[i].eq(raw.as_signed() if sgn else raw), nz[i].eq(raw != 0)]

        # Up to `issue` events per cycle: the lowest non-zero lanes not yet sent, in lane
        # order; event i fires only with events 0..i-1 and goes to issue slot i, a queue of
        # its own in every PE, so multicast events never compete for a PE's queue write
        # (accumulation order does not matter: exact integer sums).
        avail = active & (~self.limited | (w < self.limit))
        rem = Signal(lanes)
        m.d.comb += rem.eq(nz & ~done_lanes)
        left = rem
        taken = Const(0, s.pes)
        fires, onehots = [], []
        for i in range(self._issue):
            onehot = Signal(lanes, name=f"onehot{i}")
            lane = Signal(range(max(lanes, 2)), name=f"lane_{i}")
            m.d.comb += onehot.eq(left & (~left + 1))
            for j in reversed(range(lanes)):
                with m.If(left[j]):
                    m.d.comb += lane.eq(j)
            pos = Signal(range(max(t.words for t in s.tensors) * lanes + lanes), name=f"pos{i}")
            m.d.comb += pos.eq(w * lanes + lane)
            mask_rd = mask_mem.read_port(domain="comb")
            m.d.comb += mask_rd.addr.eq(index_base + pos)
            ready = Signal(s.pes, name=f"ready{i}")
            m.d.comb += ready.eq(Cat(self.events[p][i].ready for p in range(s.pes)))
            free = Signal(s.pes, name=f"free{i}")
            m.d.comb += free.eq(mask_rd.data & ~taken & ready)
            # Anycast: of the free PEs holding the input, pick the one with the emptiest queues
            # (a PE another event of this cycle took is not free: spread the work).
            chain = []
            for p in range(s.pes):
                lvl_p, pick_p, found_p = (Signal(len(self.levels[0]), name=f"best_l{i}_{p}"),
                                          Signal(range(s.pes), name=f"best_p{i}_{p}"),
                                          Signal(name=f"found{i}_{p}"))
                if not chain:
                    m.d.comb += [lvl_p.eq(self.levels[p]), pick_p.eq(p), found_p.eq(free[p])]
                else:
                    prev = chain[-1]
                    better = free[p] & (~prev[2] | (self.levels[p] < prev[0]))
                    m.d.comb += [lvl_p.eq(Mux(better, self.levels[p], prev[0])),
                                 pick_p.eq(Mux(better, p, prev[1])), found_p.eq(prev[2] | free[p])]
                chain.append((lvl_p, pick_p, found_p))
            pick = Signal(s.pes, name=f"pick{i}")
            m.d.comb += pick.eq(Mux(chain[-1][2], 1 << chain[-1][1], 0))
            emask = Signal(s.pes, name=f"emask{i}")
            m.d.comb += emask.eq(Mux(anycast, pick, mask_rd.data))
            # Placeable: an input without synapses needs no PE; otherwise a free holder
            # (anycast) or every holder's slot-i queue ready (multicast).
            placeable = Signal(name=f"placeable{i}")
            m.d.comb += placeable.eq(Mux(anycast, (mask_rd.data == 0) | chain[-1][2],
                                         (mask_rd.data & ~ready) == 0))
            fire = Signal(name=f"fire{i}")
            m.d.comb += fire.eq(avail & (left != 0) & placeable & (fires[-1] if fires else 1))
            fires.append(fire)
            onehots.append(onehot)
            value = Array(values)[lane]
            for p in range(s.pes):
                ev = self.events[p][i]
                m.d.comb += [ev.valid.eq(fire & emask[p]), ev.payload.addr.eq(index_base + pos),
                             ev.payload.value.eq(value)]
            taken = taken | Mux(fire, emask, 0)
            left = left & ~onehot

        sent = Signal(lanes)
        m.d.comb += sent.eq(sum(Mux(f, o, 0) for f, o in zip(fires, onehots, strict=True)))
        advance = avail & ((rem == 0) | (fires[0] & (rem == sent)))
        m.d.comb += self.event.eq(sum(fires))
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [active.eq(1), seg.eq(self.seg), w.eq(0), done_lanes.eq(0)]
        with m.Elif(advance):
            m.d.sync += [w.eq(w + 1), done_lanes.eq(0)]
            with m.If(w + 1 == n_words):
                m.d.sync += [active.eq(0), self.done.eq(1)]
        with m.Elif(fires[0]):
            m.d.sync += done_lanes.eq(done_lanes | sent)
        return m
