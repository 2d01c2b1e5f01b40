"""Processing element: event queue, fan-out walker, one multiply-accumulate per cycle.

Events (index-memory address, activation value) arrive on ``slots`` streams,
one per scanner issue slot, each into a queue of its own, so the scanner can
hand a PE several events a cycle and PEs are decoupled and balance over the
whole layer. The PE takes the queues' heads round robin; for each event it
reads the input's fan-out range from its index memory (a registered read in
a next-event stage) and walks
its weight memory, one synapse per cycle, back to back across events. The
multiplier has registered inputs and output (maps to one DSP48E2). Two
accumulator banks (main/r and c) are read-modify-written in one stage, so
consecutive updates of one neuron need no forwarding. A valid bit per
accumulator entry makes the first update of a layer overwrite instead of add;
clearing a whole region (layer parity) is one cycle, so no clear pass is
needed, also after reset. The finaliser reads accumulators through ``fin_*``,
registered: the entry as it stands in the cycle of the address, a cycle later.

Context gating (a schedule with gated layers): a "fixed" bit per accumulator
entry, set through ``fix_*`` by the gate pass of the finalisers and cleared
with the region, and a target memory holding each synapse's accumulator
address. The walker looks up the targets of the next `LOOKAHEAD` synapses of
its event and issues the first whose neuron is not fixed, skipping the fixed
ones before it: no weight read, no multiply, no accumulator update, not
counted, and up to `LOOKAHEAD` skipped synapses a cycle (a cycle is spent
only where `LOOKAHEAD` fixed ones in a row leave nothing to issue). ``hold``
keeps events in the queues while the gate pass is still writing fixed bits.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from apical.hw.layouts import event_layout, index_layout, weight_layout
from apical.hw.schedule import Schedule

__all__ = ["ProcessingElement"]

LOOKAHEAD = 4  # gated schedules: synapses the walker looks at (and may skip) per cycle


class ProcessingElement(wiring.Component):
    """PE ``index`` of ``schedule``; memory contents come from ``schedule.images[index]``."""

    def __init__(self, schedule: Schedule, index: int, *, queue_depth: int = 16, fin_ports: int = 1,
                 slots: int = 1, faults: Any = None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"ProcessingElement: schedule must be a Schedule, got {type(schedule).__name__}")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < schedule.pes:
            raise ValueError(f"ProcessingElement: index must be in [0, {schedule.pes}), got {index!r}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"ProcessingElement: queue_depth must be an integer >= 2, got {queue_depth!r}")
        if fin_ports not in (1, 2):
            raise ValueError(f"ProcessingElement: fin_ports must be 1 or 2, got {fin_ports!r}")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"ProcessingElement: slots must be an integer >= 1, got {slots!r}")
        self._s, self._index, self._qdepth, self._fin_ports = schedule, index, queue_depth, fin_ports
        self._slots = slots
        self._faults = faults  # apical.hw.faults.PEFaults of a fault-injection build, else None
        s = schedule
        # A second finalisation read port lets synapse-partitioned layers reduce two
        # neurons a cycle (two adder trees in the top).
        second = {"fin_addr_b": In(range(s.acc_depth)), "fin_acc0_b": Out(signed(s.acc_bits)),
                  "fin_acc1_b": Out(signed(s.acc_bits))} if fin_ports == 2 else {}
        # Context gating: fix_bits[i] marks accumulator entry fix_addr + i as fixed (its synapses skipped);
        # `hold` keeps events in the queues while the fixed bits they will be checked against are written.
        gating = {"fix_en": In(1), "fix_addr": In(range(s.acc_depth)),
                  "fix_bits": In(s.pes), "hold": In(1)} if s.gated else {}
        self.ev_layout = event_layout(s.index_depth, s.value_bits)
        self.w_layout = weight_layout(s.acc_depth, s.weight_bits)
        self.ix_layout = index_layout(s.weight_depth, s.max_fanout)
        super().__init__({
            # One queue per scanner issue slot: up to `slots` events a cycle reach this PE.
            "event": In(stream.Signature(self.ev_layout)).array(slots),
            "busy": Out(1),
            "busy_front": Out(1),  # busy other than the last accumulator write (S3)
            "level": Out(range(slots * queue_depth + 1)),  # events waiting in the queues
            "issue": Out(1),  # a weight read was issued this cycle
            "read": Out(1),  # weight data arrived this cycle
            "update": Out(1),  # an accumulator was written this cycle
            "fin_addr": In(range(s.acc_depth)),
            "fin_acc0": Out(signed(s.acc_bits)),
            "fin_acc1": Out(signed(s.acc_bits)),
            "clear": In(2),  # clear the valid bits of accumulator region 0 / 1
            **second,
            **gating,
        })

    def elaborate(self, platform):
        m = Module()
        s, img = self._s, self._s.images[self._index]
        queues = []
        for j in range(self._slots):
            q = fifo.SyncFIFO(width=self.ev_layout.size, depth=self._qdepth)
            m.submodules[f"queue{j}"] = q
            # `ready` is a register: room for one event next cycle whatever this cycle brings
            # (the queue is at most depth - 2 full now), so the scanner's fire decisions start
            # at registers instead of at the queue's level counter.
            room = Signal(name=f"room{j}")
            m.d.sync += room.eq(q.level <= self._qdepth - 2)
            m.d.comb += [q.w_en.eq(self.event[j].valid & room), q.w_data.eq(self.event[j].payload),
                         self.event[j].ready.eq(room)]
            queues.append(q)
        m.submodules.index_mem = index_mem = Memory(
            shape=self.ix_layout, depth=s.index_depth,
            init=[{"start": a, "count": n} for a, n in img.index])
        flt = self._faults
        if flt is None:
            w_init = [{"acc": a, "bank": b, "weight": w} for a, b, w in img.weights] or [{"acc": 0, "bank": 0, "weight": 0}]
            m.submodules.weight_mem = weight_mem = Memory(shape=self.w_layout, depth=len(w_init), init=w_init)
        else:
            w_raw = list(flt.words) or [0]
            m.submodules.weight_mem = weight_mem = Memory(shape=unsigned(flt.width), depth=len(w_raw), init=w_raw)
        m.submodules.acc0 = acc0 = Memory(shape=signed(s.acc_bits), depth=s.acc_depth, init=[])
        m.submodules.acc1 = acc1 = Memory(shape=signed(s.acc_bits), depth=s.acc_depth, init=[])

        # The next event comes from the first non-empty queue at or after `rr` (round robin:
        # no queue waits behind busy neighbours, so no scanner slot stalls for long).
        k = self._slots
        rr = Signal(range(max(k, 2)))
        pick = Signal(range(max(k, 2)))
        any_ready = Signal()
        m.d.comb += any_ready.eq(Cat(q.r_rdy for q in queues).any())
        with m.Switch(rr):
            for r in range(k):
                with m.Case(r):
                    for j in reversed([(r + o) % k for o in range(k)]):
                        with m.If(queues[j].r_rdy):
                            m.d.comb += pick.eq(j)
        head = self.ev_layout(Array(q.r_data for q in queues)[pick])

        # Next-event stage: an event leaves its queue into `nxt` while its fan-out range is
        # read from the index memory (a registered read), so the walker below loads ready
        # values: the queue, the index memory and the walker are three short paths.
        ix_rd = index_mem.read_port()
        ix = ix_rd.data
        nxt_valid, nxt_val = Signal(), Signal(signed(s.value_bits))
        ptr = Signal(len(ix.start))
        end = Signal(len(ix.start))
        val = Signal(signed(s.value_bits))
        active = Signal()
        depth = s.acc_depth
        half_mask = (1 << s.acc_half) - 1
        region_mask = [half_mask, half_mask << s.acc_half]
        clear_mask = Signal(depth)
        m.d.comb += clear_mask.eq(Mux(self.clear[0], region_mask[0], 0) | Mux(self.clear[1], region_mask[1], 0))
        if s.gated:
            go, w_ptr, step = self._skip_fixed(m, ptr, end, active, clear_mask)
            last = (ptr + step) >= end
        else:
            go, w_ptr, step = active, ptr, 1
            last = (ptr + 1) == end
        take = ~active | last  # the walker takes the next event this cycle
        pop = Signal()
        hold = self.hold if s.gated else Const(0)
        m.d.comb += [pop.eq(any_ready & (~nxt_valid | take) & ~hold), ix_rd.addr.eq(head.addr), ix_rd.en.eq(pop)]
        with m.If(pop):
            for j, q in enumerate(queues):
                m.d.comb += q.r_en.eq(pick == j)
            m.d.sync += [rr.eq(Mux(pick == k - 1, 0, pick + 1)), nxt_valid.eq(1), nxt_val.eq(head.value)]
        with m.Elif(take):
            m.d.sync += nxt_valid.eq(0)

        # Walker: the next event's range is loaded while the last synapse of the current one issues.
        with m.If(take & nxt_valid):
            m.d.sync += [ptr.eq(ix.start), end.eq(ix.start + ix.count), val.eq(nxt_val),
                         active.eq(ix.count != 0)]
        with m.Elif(take):
            m.d.sync += active.eq(0)
        with m.Else():
            m.d.sync += ptr.eq(ptr + step)

        # MAC pipeline: S1 weight data, S2 registered multiplier inputs, S3 registered product.
        w_rd = weight_mem.read_port()
        m.d.comb += w_rd.addr.eq(w_ptr)
        if s.gated:
            m.d.comb += w_rd.en.eq(go)  # a skipped synapse's weight is not read
        s1_valid, s1_val = Signal(), Signal(signed(s.value_bits))
        m.d.sync += [s1_valid.eq(go), s1_val.eq(val)]
        word = w_rd.data if flt is None else self.w_layout(w_rd.data[:self.w_layout.size])
        weight = word.weight
        if flt is not None and flt.parity:
            # Detect-and-skip: a word failing its even parity contributes nothing.
            weight = Mux(w_rd.data.xor(), 0, word.weight)
        s2_valid, s2_acc, s2_bank = Signal(), Signal(len(word.acc)), Signal()
        s2_a, s2_b = Signal(signed(s.weight_bits)), Signal(signed(s.value_bits))
        m.d.sync += [s2_valid.eq(s1_valid), s2_acc.eq(word.acc), s2_bank.eq(word.bank),
                     s2_a.eq(weight), s2_b.eq(s1_val)]
        s3_valid, s3_acc, s3_bank = Signal(), Signal(len(s2_acc)), Signal()
        s3_p = Signal(signed(s.weight_bits + s.value_bits))
        m.d.sync += [s3_valid.eq(s2_valid), s3_acc.eq(s2_acc), s3_bank.eq(s2_bank), s3_p.eq(s2_a * s2_b)]
        in_region = self._region_guard(m, ptr, s3_acc) if flt is not None and flt.guard else None

        # S3: read-modify-write of the addressed accumulator bank (comb read, write at the edge).
        fin_b = (self.fin_acc0_b, self.fin_acc1_b) if self._fin_ports == 2 else (None, None)
        for bank, mem, fin_out in ((0, acc0, self.fin_acc0), (1, acc1, self.fin_acc1)):
            valid = Signal(depth, name=f"valid{bank}")
            rd = mem.read_port(domain="comb")
            fin_rd = mem.read_port(domain="comb")
            wr = mem.write_port()
            hit = s3_valid & (s3_bank == bank)
            if in_region is not None:
                hit = hit & in_region
            old = Mux(valid.bit_select(s3_acc, 1), rd.data, 0)
            m.d.comb += [rd.addr.eq(s3_acc), wr.addr.eq(s3_acc), wr.data.eq(old + s3_p), wr.en.eq(hit)]
            setv = Signal(depth, name=f"set{bank}")
            m.d.comb += setv.eq(Mux(hit, Const(1, unsigned(depth)) << s3_acc, 0))
            m.d.sync += valid.eq((valid | setv) & ~clear_mask)
            # Finalisation reads are registered: the value as it stands in the cycle of the address.
            m.d.comb += fin_rd.addr.eq(self.fin_addr)
            m.d.sync += fin_out.eq(Mux(valid.bit_select(self.fin_addr, 1), fin_rd.data, 0))
            if fin_b[bank] is not None:
                fin_rd_b = mem.read_port(domain="comb")
                m.d.comb += fin_rd_b.addr.eq(self.fin_addr_b)
                m.d.sync += fin_b[bank].eq(Mux(valid.bit_select(self.fin_addr_b, 1), fin_rd_b.data, 0))

        m.d.comb += [
            self.busy.eq(any_ready | nxt_valid | active | s1_valid | s2_valid | s3_valid),
            self.busy_front.eq(any_ready | nxt_valid | active | s1_valid | s2_valid),
            self.level.eq(sum(q.level for q in queues)),
            self.issue.eq(go),
            self.read.eq(s1_valid),
            self.update.eq(s3_valid),
        ]
        return m

    def _skip_fixed(self, m: Module, ptr: Signal, end: Signal, active: Signal, clear_mask: Signal) -> tuple:
        """Context gating in the walker: the targets of the next `LOOKAHEAD` synapses of the event
        (target memory, asynchronous reads) against the fixed bits; the first live one issues
        and the walk moves past it, skipping fixed ones, `LOOKAHEAD` at most a cycle.

        Returns (go: a synapse issues this cycle, its weight address, how far ``ptr`` moves).
        """
        s, img = self._s, self._s.images[self._index]
        targets = [a for a, _, _ in img.weights] or [0]
        m.submodules.target_mem = target_mem = Memory(
            shape=unsigned(bits_for(s.acc_depth - 1)), depth=len(targets), init=targets)
        fixed = Signal(s.acc_depth)
        setf = Signal(s.acc_depth)
        m.d.comb += setf.eq(Mux(self.fix_en, self.fix_bits << self.fix_addr, 0))
        m.d.sync += fixed.eq((fixed | setf) & ~clear_mask)
        live = Signal(LOOKAHEAD)  # synapse ptr + j is in the event and its target is not fixed
        for j in range(LOOKAHEAD):
            t_rd = target_mem.read_port(domain="comb")
            m.d.comb += [t_rd.addr.eq(ptr + j),
                         live[j].eq(active & (ptr + j < end) & ~fixed.bit_select(t_rd.data, 1))]
        first = Signal(range(LOOKAHEAD))
        for j in reversed(range(LOOKAHEAD)):
            with m.If(live[j]):
                m.d.comb += first.eq(j)
        go = Signal()
        w_ptr = Signal(len(ptr))
        step = Signal(range(LOOKAHEAD + 1))
        m.d.comb += [go.eq(live.any()), w_ptr.eq(ptr + first), step.eq(Mux(go, first + 1, LOOKAHEAD))]
        return go, w_ptr, step

    def _region_guard(self, m: Module, ptr: Signal, s3_acc: Signal) -> Signal:
        """Fault builds: 1 when ``s3_acc`` lies in the accumulator region of the layer whose weights
        ``ptr`` walked (two cycles earlier), so a corrupted address never reaches another layer."""
        s = self._s
        starts, total = [], 0
        for lp in s.layers:
            starts.append(total)
            total += lp.syn_per_pe[self._index]
        region = Signal()
        # Layers alternate regions: the region is the parity of the layer index of `ptr`.
        m.d.comb += region.eq(sum((ptr >= b for b in starts[1:]), Const(0, unsigned(8)))[0])
        r1, r2, r3 = Signal(), Signal(), Signal()
        m.d.sync += [r1.eq(region), r2.eq(r1), r3.eq(r2)]
        h = s.acc_half
        ok = Signal()
        m.d.comb += ok.eq(Mux(r3, (s3_acc >= h) & (s3_acc < 2 * h), s3_acc < h))
        return ok
