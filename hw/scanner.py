"""Event scanner: walks a layer's source tensors and sends the non-zero activations as events.

Started on a layer's first scan segment (a source tensor of a site), it walks
every segment of that layer in turn, one activation word (``lanes``
activations) a cycle at best, with no bubble between segments. Registered
stages keep the paths short: a *word* register holds the fetched word,
decoded, and the lanes not yet sent; each of the ``issue`` *slots* is a main
register holding one event (index-memory address, value, the event mask of
the PEs holding its synapses) and a skid register behind it. Slot ``i`` writes
into queue ``i`` of each PE in its mask, or, for anycast (replicated fan-out),
of the holder with the emptiest queues (as of the previous cycle); it fires when all of those queues can
take it, independently of the other slots (accumulation order does not
matter: exact integer sums). Every slot with an empty skid takes one of the
word's lowest remaining non-zero lanes each cycle, into its main register if
that is empty or fires, else into the skid, so refilling and fetching do not
wait on the PEs' queues; the next word is fetched in the cycle the last lane
leaves the word register.
``limit_*`` let the scan trail a finalisation still writing its input: word
``w`` of tensor ``limit_tensor`` is fetched only once ``w < limit``. A scan
stops after a layer's last segment, or after a gated layer's last gate-site
segment (`Schedule.scan_ends`); the other site is a scan of its own.
"""

from __future__ import annotations

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apical.hw.layouts import event_layout
from apical.hw.schedule import Schedule

__all__ = ["Scanner"]


def _any(values) -> Value:
    """OR of values of which at most one is non-zero (a one-hot multiplexer)."""
    return functools.reduce(operator.or_, values, Const(0))


def _argmin(m: Module, free: list, levels: list, name: str) -> tuple:
    """(found, index) of the free entry with the lowest level, first index on ties: a tree."""
    nodes = [(f, lv, Const(i, range(max(2, len(free))))) for i, (f, lv) in enumerate(zip(free, levels, strict=True))]
    depth = 0
    while len(nodes) > 1:
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            (fa, la, ia), (fb, lb, ib) = nodes[j], nodes[j + 1]
            f, lv, ix = Signal(name=f"{name}_f{depth}_{j}"), Signal(len(la), name=f"{name}_l{depth}_{j}"), \
                Signal(len(ia), name=f"{name}_i{depth}_{j}")
            take_b = fb & (~fa | (lb < la))
            m.d.comb += [f.eq(fa | fb), lv.eq(Mux(take_b, lb, la)), ix.eq(Mux(take_b, ib, ia))]
            nxt.append((f, lv, ix))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
        depth += 1
    return nodes[0][0], nodes[0][2]


def _count_sat(m: Module, bits: Value, top: int) -> Value:
    """min(popcount(bits), top): a tree of saturating adders (log depth, narrow)."""
    width = max(1, top.bit_length())
    nodes = [bits[i] for i in range(len(bits))]
    while len(nodes) > 1:
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            s = nodes[j] + nodes[j + 1]
            node = Signal(width, name=f"cnt_sat_{len(nodes)}_{j}")
            m.d.comb += node.eq(Mux(s > top, top, s))
            nxt.append(node)
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return nodes[0]


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
            "start": In(1),  # scan the layer whose first segment is `seg`
            "seg": In(range(len(s.segments))),
            "limit_active": In(1),
            "limit_tensor": In(range(len(s.tensors))),
            "limit": In(range(max_words + 1)),
            "act_addr": Out(range(s.act_words)),
            "act_data": In(unsigned(s.lanes * s.act_bits)),
            # events[p][i]: issue slot i of PE p (a queue per slot in each PE)
            "events": Out(stream.Signature(self.ev_layout)).array(s.pes, self._issue),
            "levels": In(range(self._issue * queue_depth + 1)).array(s.pes),  # PE queue fill, for anycast
            "busy": Out(1),  # words left to fetch or events not yet sent
            "event": Out(range(self._issue + 1)),  # events that left this cycle (counter increment)
            "reads": Out(range(max(t.size for t in s.tensors) + 1)),  # activations read (counter increment)
        })

    @property
    def issue(self) -> int:
        """Events per cycle at most: the issue slots, one queue each in every PE."""
        return self._issue

    def elaborate(self, platform):
        m = Module()
        s = self._s
        lanes, a_bits, k, P = s.lanes, s.act_bits, self._issue, s.pes
        m.submodules.mask_mem = mask_mem = Memory(shape=unsigned(P), depth=s.index_depth, init=list(s.mask))
        max_words = max(t.words for t in s.tensors)
        last_of_layer = s.scan_ends  # a gated layer's scan stops after its gate site too

        # ------------------------------------------------------------- fetch
        active = Signal()  # words of the layer left to fetch
        seg = Signal(range(len(s.segments)))
        w = Signal(range(max_words + 1))
        f_seg, f_w = seg, w  # the word to fetch this cycle
        word_base = Signal(range(s.act_words))
        n_words = Signal(len(w))
        index_base = Signal(range(s.index_depth))
        tensor = Signal(range(len(s.tensors)))
        size = Signal(len(self.reads))
        seg_last = Signal()
        anycast = Signal()
        fmts = sorted({(s.tensors[g.tensor].bits, s.tensors[g.tensor].signed) for g in s.segments})
        fmt = Signal(range(len(fmts)))
        with m.Switch(f_seg):
            for i, g in enumerate(s.segments):
                t = s.tensors[g.tensor]
                with m.Case(i):
                    m.d.comb += [word_base.eq(t.word_base), n_words.eq(t.words), index_base.eq(g.index_base),
                                 fmt.eq(fmts.index((t.bits, t.signed))), anycast.eq(g.anycast),
                                 tensor.eq(g.tensor), size.eq(t.size), seg_last.eq(i in last_of_layer)]
        m.d.comb += self.act_addr.eq(word_base + f_w)
        blocked = Signal()
        m.d.comb += blocked.eq(self.limit_active & (tensor == self.limit_tensor) & (f_w >= self.limit))
        can_fetch = Signal()
        m.d.comb += can_fetch.eq(active & ~blocked)

        # Decode each lane by the tensor's (bits, signed) format.
        values = [Signal(signed(s.value_bits), name=f"lane{i}") for i in range(lanes)]
        nz = Signal(lanes)
        with m.Switch(fmt):
            for fi, (bits, sgn) in enumerate(fmts):
                with m.Case(fi):
                    for i in range(lanes):
                        raw = self.act_data.word_select(i, a_bits)[:bits]
                        m.d.comb += [values[i].eq(raw.as_signed() if sgn else raw), nz[i].eq(raw != 0)]

        # ------------------------------------------------------------- word register
        cur_left = Signal(lanes)  # non-zero lanes not yet moved into a slot
        cur_vals = [Signal(signed(s.value_bits), name=f"cur{i}") for i in range(lanes)]
        cur_base = Signal(range(s.index_depth))  # index address of lane 0
        cur_any = Signal()
        # The lowest `k` remaining lanes, each with its index address, value and event mask.
        cands = []
        left = cur_left
        prefix = [Const(0, lanes)]  # prefix[n]: lanes of candidates 0..n-1
        for j in range(k):
            onehot = Signal(lanes, name=f"cand{j}_onehot")
            m.d.comb += onehot.eq(left & (~left + 1))
            lane = Signal(range(max(lanes, 2)), name=f"cand{j}_lane")
            m.d.comb += lane.eq(_any(Mux(onehot[i], i, 0) for i in range(1, lanes)))
            value = Signal(signed(s.value_bits), name=f"cand{j}_value")
            m.d.comb += value.eq(_any(Mux(onehot[i], cur_vals[i], 0) for i in range(lanes)))
            addr = Signal(self.ev_layout["addr"].shape.width, name=f"cand{j}_addr")
            m.d.comb += addr.eq(cur_base + lane)
            valid = Signal(name=f"cand{j}_valid")
            m.d.comb += valid.eq(left != 0)
            cands.append((valid, addr, value))
            nxt = Signal(lanes, name=f"prefix{j + 1}")
            m.d.comb += nxt.eq(prefix[-1] | onehot)
            prefix.append(nxt)
            left = left & ~onehot

        # ------------------------------------------------------------- slots
        # Each slot is a main register, which fires, and a skid register behind it. A slot
        # takes a candidate whenever its skid is empty (`accept`, registered state only), into
        # the main register when that is empty or fires this cycle, else into the skid. So the
        # choice of candidates and the next word's fetch do not wait for the PEs' queues:
        # firing (queue readiness, the anycast choice) and refilling are separate paths.
        s_valid = [Signal(name=f"slot{i}_valid") for i in range(k)]
        s_addr = [Signal(self.ev_layout["addr"].shape.width, name=f"slot{i}_addr") for i in range(k)]
        s_val = [Signal(signed(s.value_bits), name=f"slot{i}_value") for i in range(k)]
        s_any = [Signal(name=f"slot{i}_any") for i in range(k)]
        b_valid = [Signal(name=f"skid{i}_valid") for i in range(k)]
        b_addr = [Signal(self.ev_layout["addr"].shape.width, name=f"skid{i}_addr") for i in range(k)]
        b_val = [Signal(signed(s.value_bits), name=f"skid{i}_value") for i in range(k)]
        b_any = [Signal(name=f"skid{i}_any") for i in range(k)]
        # Each main register's event mask is a registered read of the mask memory, addressed
        # as the main register is loaded (from the skid or a candidate) and held meanwhile.
        mask_rds = [mask_mem.read_port() for _ in range(k)]
        s_mask = [rd.data for rd in mask_rds]
        fires, loads = [], []
        # Anycast compares the holders' queue fill as it was a cycle ago: a registered copy keeps
        # the queues' level counters out of the argmin -> fire -> queue write path. Schedules
        # without a replicated fan-out have no anycast logic at all.
        has_any = any(g.anycast for g in s.segments)
        if has_any:
            levels = [Signal(len(self.levels[p]), name=f"level{p}") for p in range(P)]
            m.d.sync += [lv.eq(self.levels[p]) for p, lv in enumerate(levels)]
        for i in range(k):
            ready = Signal(P, name=f"ready{i}")
            m.d.comb += ready.eq(Cat(self.events[p][i].ready for p in range(P)))
            emask = Signal(P, name=f"emask{i}")
            if has_any:
                free = Signal(P, name=f"free{i}")
                m.d.comb += free.eq(s_mask[i] & ready)
                found, idx = _argmin(m, list(free), levels, f"any{i}")
                m.d.comb += emask.eq(Mux(s_any[i], Mux(found, Const(1, P) << idx, 0), s_mask[i]))
            else:
                m.d.comb += emask.eq(s_mask[i])
            # An input without synapses needs no PE; else a free holder (anycast) or every
            # holder's slot-i queue ready (multicast).
            fire = Signal(name=f"fire{i}")
            multicast_ok = (s_mask[i] & ~ready) == 0
            m.d.comb += fire.eq(s_valid[i] & (Mux(s_any[i], (s_mask[i] == 0) | found, multicast_ok)
                                             if has_any else multicast_ok))
            for p in range(P):
                ev = self.events[p][i]
                m.d.comb += [ev.valid.eq(fire & emask[p]), ev.payload.addr.eq(s_addr[i]),
                             ev.payload.value.eq(s_val[i])]
            load = Signal(name=f"load{i}")  # the main register takes a new event (or none) this cycle
            m.d.comb += load.eq(~s_valid[i] | fire)
            fires.append(fire)
            loads.append(load)
        m.d.comb += self.event.eq(sum(fires))

        # Refill: the r-th accepting slot (skid empty) takes candidate r.
        accept = [~b_valid[i] for i in range(k)]
        for i in range(k):
            rank = Signal(range(k + 1), name=f"rank{i}")
            m.d.comb += rank.eq(sum(accept[:i]) if i else 0)
            c_valid = Signal(name=f"take{i}_valid")
            c_addr = Signal(len(s_addr[i]), name=f"take{i}_addr")
            c_val = Signal(signed(s.value_bits), name=f"take{i}_value")
            with m.If(accept[i]):
                for r in range(i + 1):  # the rank of slot i is at most i
                    valid, addr, value = cands[r]
                    with m.If(rank == r):
                        m.d.comb += [c_valid.eq(valid), c_addr.eq(addr), c_val.eq(value)]
            # Main register: from the skid if it holds an event, else the candidate.
            m.d.comb += [mask_rds[i].en.eq(loads[i]), mask_rds[i].addr.eq(Mux(b_valid[i], b_addr[i], c_addr))]
            with m.If(loads[i]):
                with m.If(b_valid[i]):
                    m.d.sync += [s_valid[i].eq(1), s_addr[i].eq(b_addr[i]), s_val[i].eq(b_val[i]),
                                 s_any[i].eq(b_any[i]), b_valid[i].eq(0)]
                with m.Else():
                    m.d.sync += [s_valid[i].eq(c_valid), s_addr[i].eq(c_addr), s_val[i].eq(c_val),
                                 s_any[i].eq(cur_any)]
            with m.Elif(accept[i]):
                m.d.sync += [b_valid[i].eq(c_valid), b_addr[i].eq(c_addr), b_val[i].eq(c_val), b_any[i].eq(cur_any)]
        n_used = Signal(range(k + 1))
        m.d.comb += n_used.eq(sum(accept))
        taken = Signal(lanes)
        with m.Switch(n_used):
            for n in range(k + 1):
                with m.Case(n):
                    m.d.comb += taken.eq(prefix[n])
        left_next = Signal(lanes)
        m.d.comb += left_next.eq(cur_left & ~taken)
        # The word empties this cycle when it has at most n_used lanes left: a saturating count
        # of its lanes, beside (not after) the candidate chain, decides the fetch.
        drained = Signal()
        m.d.comb += drained.eq(_count_sat(m, cur_left, k + 1) <= n_used)

        # ------------------------------------------------------------- fetch the next word
        m.d.comb += self.reads.eq(0)
        with m.If(can_fetch & drained):
            m.d.sync += [cur_left.eq(nz), cur_base.eq(index_base + f_w * lanes), cur_any.eq(anycast)]
            m.d.sync += [cv.eq(v) for cv, v in zip(cur_vals, values, strict=True)]
            with m.If(f_w == 0):
                m.d.comb += self.reads.eq(size)
            with m.If(f_w + 1 == n_words):
                m.d.sync += [seg.eq(f_seg + 1), w.eq(0), active.eq(~seg_last)]
            with m.Else():
                m.d.sync += [seg.eq(f_seg), w.eq(f_w + 1), active.eq(1)]
        with m.Else():
            m.d.sync += cur_left.eq(left_next)
        # Only registers take the start: the first word is fetched from the next cycle.
        with m.If(self.start):
            m.d.sync += [seg.eq(self.seg), w.eq(0), active.eq(1)]
        m.d.comb += self.busy.eq(active | (cur_left != 0) | Cat(s_valid).any() | Cat(b_valid).any())
        return m
