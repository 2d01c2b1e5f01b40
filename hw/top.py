"""ApicalTop: the folded, event-driven PE array behind two AXI4-Stream ports.

Stream format (docs/contracts.md, "Hardware top level"):

* ``s_axis``: one activation per beat in the low bits of ``s_axis_tdata``
  (two's complement or unsigned as the IR input declares; higher bits are
  ignored), every IR input in IR order, concatenated. The input length is
  fixed by the IR, so the element count, not ``tlast``, ends an inference
  (``tlast`` is expected on the last element but not required).
* ``m_axis``: the last layer's values, one per beat, sign- or zero-extended
  to the tdata width, in neuron order; then one beat with the class index
  (argmax, first index on ties) and ``tlast``.
* ``cnt_*``: the `apical.sw.counts` counters summed over layers, plus
  ``cnt_cycles`` (cycles from the last input beat accepted to the first
  output beat offered). Cleared on the first input beat of an inference,
  stable from then on until the next one.

Flow of one inference: IN (inputs written to activation memory; the last
beat starts the first scan) -> RUN (per layer: scan each source segment of
each site, up to two events a cycle, PEs accumulate; once only the PEs' last
accumulator writes are in flight, finalisation writes the outputs, two
neurons a cycle for synapse-partitioned layers, while the next layer's scan
trails it word by word) -> OUT (values, class). A synchronous
``rst`` at any point returns to IN with empty queues and cleared
accumulator valid bits.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from apical.hw.finaliser import Finaliser, finaliser_in_bits, finaliser_latency
from apical.hw.pe import ProcessingElement
from apical.hw.scanner import Scanner
from apical.hw.schedule import Schedule, compile_schedule
from apical.sw.counts import COUNTER_BITS, COUNTERS
from apical.sw.ir import IR

__all__ = ["COUNTER_BITS", "ApicalTop", "stream_widths"]


def _round8(n: int) -> int:
    return max(8, (n + 7) // 8 * 8)


def stream_widths(ir: IR) -> tuple[int, int]:
    """(s_axis_tdata, m_axis_tdata) widths in bits: whole bytes."""
    in_w = _round8(max(t.bits for t in ir.inputs))
    last = ir.layers[-1]
    out_w = _round8(max(last.out_bits, max(1, (last.size - 1).bit_length())))
    return in_w, out_w


class ApicalTop(wiring.Component):
    """The accelerator for one IR on ``pes`` processing elements (domain ``sync``)."""

    def __init__(self, ir: IR, pes: int, *, queue_depth: int = 16, schedule: Schedule | None = None,
                 faults: Any = None):
        if not isinstance(ir, IR):
            raise TypeError(f"ApicalTop: ir must be an IR, got {type(ir).__name__}")
        if isinstance(pes, bool) or not isinstance(pes, int):
            raise TypeError(f"ApicalTop: pes must be an integer, got {pes!r}")
        if pes < 1:
            raise ValueError(f"ApicalTop: pes must be >= 1, got {pes}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"ApicalTop: queue_depth must be an integer >= 2, got {queue_depth!r}")
        if schedule is not None and (not isinstance(schedule, Schedule) or schedule.pes != pes):
            raise ValueError(f"ApicalTop: schedule must be a Schedule compiled for pes={pes}")
        self._ir, self._pes, self._qdepth = ir, pes, queue_depth
        self._faults = faults  # apical.hw.faults.HardwareFaults: a fault-injection build (None: none)
        self.schedule = schedule if schedule is not None else compile_schedule(ir, pes)
        in_w, out_w = stream_widths(ir)
        ports = {
            "s_axis_tdata": In(in_w),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(out_w),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "cnt_cycles": Out(COUNTER_BITS),
        }
        for c in COUNTERS:
            ports[f"cnt_{c}"] = Out(COUNTER_BITS)
        super().__init__(ports)

    @property
    def pes(self) -> int:
        return self._pes

    def elaborate(self, platform):
        m = Module()
        s, ir = self.schedule, self._ir
        P, A = s.pes, s.act_bits
        n_in = s.n_inputs

        m.submodules.act_mem = act_mem = Memory(shape=unsigned(P * A), depth=s.act_words, init=[])
        act_wr = act_mem.write_port(granularity=A)
        m.submodules.scanner = scanner = Scanner(s, queue_depth=self._qdepth)
        scan_rd = act_mem.read_port(domain="comb")
        out_rd = act_mem.read_port(domain="comb")
        m.d.comb += scan_rd.addr.eq(scanner.act_addr)
        m.d.comb += scanner.act_data.eq(scan_rd.data)
        # Synapse-partitioned layers finalise two neurons a cycle (two adder trees over
        # the PEs' second accumulator read ports) when a word holds an even number of lanes.
        dual = P % 2 == 0 and any(lp.mode == "synapse" for lp in s.layers)
        pes, fins = [], []
        for p in range(P):
            flt = self._faults
            pe = ProcessingElement(s, p, queue_depth=self._qdepth, fin_ports=2 if dual else 1,
                                   faults=flt.pes[p] if flt is not None else None)
            fin = Finaliser(s, p, faults=flt.finalisers[p] if flt is not None else None)
            m.submodules[f"pe{p}"] = pe
            m.submodules[f"fin{p}"] = fin
            wiring.connect(m, scanner.events[p], pe.event)
            m.d.comb += scanner.levels[p].eq(pe.level)
            pes.append(pe)
            fins.append(fin)
        # Finalisation may start while the PEs' last accumulator writes (S3) are in flight:
        # its first read is the next cycle, after those writes.
        any_busy = Signal()
        m.d.comb += any_busy.eq(sum(pe.busy_front for pe in pes) != 0)

        # ------------------------------------------------------------- counters
        cnt = {c: Signal(COUNTER_BITS, name=f"c_{c}") for c in ("cycles", *COUNTERS)}
        for c, sig in cnt.items():
            m.d.comb += getattr(self, f"cnt_{c}").eq(sig)
        clear_counters = Signal()
        inc = {c: Signal(COUNTER_BITS, name=f"inc_{c}") for c in cnt}
        for c in cnt:
            # The first beat may also be the last, which already counts the first scan's reads.
            with m.If(clear_counters):
                m.d.sync += cnt[c].eq(inc[c])
            with m.Else():
                m.d.sync += cnt[c].eq(cnt[c] + inc[c])
        m.d.comb += [
            inc["events"].eq(scanner.event),
            inc["syn_ops"].eq(sum(pe.issue for pe in pes)),
            inc["weight_reads"].eq(sum(pe.read for pe in pes)),
            inc["acc_updates"].eq(sum(pe.update for pe in pes)),
        ]

        # ------------------------------------------------------------- finalisation process
        n_layers = len(s.layers)
        fn_issuing = Signal()
        fn_layer = Signal(range(n_layers))
        fn_k = Signal(range(max(lp.steps for lp in s.layers) + 1))
        fn_kw = Signal(range(s.act_words + 1))
        fn_kl = Signal(range(max(P, 2)))
        fn_words = Signal(range(s.act_words + 1))  # words of the output tensor fully written
        fn_start = Signal()
        LATENCY = finaliser_latency(s) + 1  # input register + finaliser stages
        pipe_valid = [Signal(name=f"fp{i}_valid") for i in range(LATENCY)]
        pipe_word = [Signal(range(s.act_words), name=f"fp{i}_word") for i in range(LATENCY)]
        pipe_rel = [Signal(range(s.act_words + 1), name=f"fp{i}_rel") for i in range(LATENCY)]
        pipe_lanes = [Signal(P, name=f"fp{i}_lanes") for i in range(LATENCY)]
        pipe_last = [Signal(name=f"fp{i}_last") for i in range(LATENCY)]
        pipe_layer = [Signal(range(n_layers), name=f"fp{i}_layer") for i in range(LATENCY)]
        fn_active = Signal()
        m.d.comb += fn_active.eq(fn_issuing | sum(pipe_valid) != 0)

        steps = Signal(len(fn_k))
        synapse_mode = Signal()
        out_base = Signal(range(s.act_words))
        region = Signal()
        out_tensor = Signal(range(len(s.tensors)))
        lanes_n = Signal(P)
        with m.Switch(fn_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [steps.eq(lp.steps), synapse_mode.eq(lp.mode == "synapse"),
                                 out_base.eq(s.tensors[lp.out_tensor].word_base), region.eq(lp.region),
                                 out_tensor.eq(lp.out_tensor)]
                    if lp.mode == "neuron":
                        for p in range(P):
                            m.d.comb += lanes_n[p].eq(fn_k < lp.slots[p])
        acc_addr = Signal(range(s.acc_depth))
        m.d.comb += acc_addr.eq(region * s.acc_half + fn_k)
        in_bits = finaliser_in_bits(s)
        tree0, tree1 = Signal(signed(in_bits)), Signal(signed(in_bits))
        m.d.comb += [tree0.eq(sum(pe.fin_acc0 for pe in pes)), tree1.eq(sum(pe.fin_acc1 for pe in pes))]
        # Synapse mode: neuron fn_k goes to lane fn_kl, neuron fn_k + 1 (second tree,
        # when dual) to lane fn_kl + 1 of the same word (fn_kl is even then).
        fn_step = 2 if dual else 1
        second = Signal()
        tree0_b, tree1_b = Signal(signed(in_bits)), Signal(signed(in_bits))
        if dual:
            acc_addr_b = Signal(range(s.acc_depth))
            m.d.comb += [acc_addr_b.eq(region * s.acc_half + fn_k + 1), second.eq(fn_k + 1 < steps),
                         tree0_b.eq(sum(pe.fin_acc0_b for pe in pes)),
                         tree1_b.eq(sum(pe.fin_acc1_b for pe in pes))]
            for pe in pes:
                m.d.comb += pe.fin_addr_b.eq(acc_addr_b)
        # Accumulators are read (and reduced) in the issue cycle and registered into the
        # finalisers: one more pipeline stage, so the adder tree is not in the requant path.
        for p, (pe, fin) in enumerate(zip(pes, fins, strict=True)):
            odd = dual and p % 2 == 1
            m.d.comb += pe.fin_addr.eq(acc_addr)
            m.d.sync += [
                fin.valid.eq(fn_issuing), fin.layer.eq(fn_layer),
                fin.k.eq(fn_k + Mux(synapse_mode, 1, 0) if odd else fn_k),
                fin.acc0.eq(Mux(synapse_mode, tree0_b if odd else tree0, pe.fin_acc0)),
                fin.acc1.eq(Mux(synapse_mode, tree1_b if odd else tree1, pe.fin_acc1)),
            ]
        lanes_s = Signal(P)
        m.d.comb += lanes_s.eq((1 << fn_kl) | Mux(second, 2 << fn_kl, 0))
        s_step = Signal(range(3))
        m.d.comb += s_step.eq(Mux(synapse_mode, fn_step, 1))
        m.d.sync += [
            pipe_valid[0].eq(fn_issuing),
            pipe_word[0].eq(out_base + Mux(synapse_mode, fn_kw, fn_k)),
            pipe_rel[0].eq(Mux(synapse_mode, fn_kw, fn_k) + 1),
            pipe_lanes[0].eq(Mux(synapse_mode, lanes_s, lanes_n)),
            pipe_last[0].eq(~synapse_mode | (fn_kl + fn_step == P) | (fn_k + fn_step >= steps)),
            pipe_layer[0].eq(fn_layer),
        ]
        for i in range(1, LATENCY):
            m.d.sync += [pipe_valid[i].eq(pipe_valid[i - 1]), pipe_word[i].eq(pipe_word[i - 1]),
                         pipe_rel[i].eq(pipe_rel[i - 1]), pipe_lanes[i].eq(pipe_lanes[i - 1]),
                         pipe_last[i].eq(pipe_last[i - 1]), pipe_layer[i].eq(pipe_layer[i - 1])]
        with m.If(fn_start):
            m.d.sync += [fn_issuing.eq(1), fn_k.eq(0), fn_kw.eq(0), fn_kl.eq(0), fn_words.eq(0)]
        with m.Elif(fn_issuing):
            m.d.sync += fn_k.eq(fn_k + s_step)
            with m.If(fn_kl + fn_step == P):
                m.d.sync += [fn_kl.eq(0), fn_kw.eq(fn_kw + 1)]
            with m.Else():
                m.d.sync += fn_kl.eq(fn_kl + fn_step)
            with m.If(fn_k + s_step >= steps):
                m.d.sync += fn_issuing.eq(0)
                # Last accumulator read is this cycle: the region is free from the next one.
                for pe in pes:
                    m.d.comb += pe.clear.eq(Mux(region, 0b10, 0b01))
        wv, ww, wl = pipe_valid[-1], pipe_word[-1], pipe_lanes[-1]
        with m.If(wv & pipe_last[-1]):
            m.d.sync += fn_words.eq(pipe_rel[-1])
        fin_data = Signal(unsigned(P * A))
        for p, fin in enumerate(fins):
            m.d.comb += fin_data.word_select(p, A).eq(fin.out_data)
        n_written = Signal(range(P + 1))
        m.d.comb += n_written.eq(Mux(wv, sum(wl[p] for p in range(P)), 0))
        nsites = Signal(2)
        tp = Signal()
        with m.Switch(pipe_layer[-1]):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [nsites.eq(len(lp.sites)), tp.eq(lp.kind == "two_point")]
        m.d.comb += [
            inc["act_writes"].eq(n_written),
            inc["requants"].eq(n_written * nsites),
            inc["table_lookups"].eq(Mux(tp, n_written, 0)),
        ]

        # ------------------------------------------------------------- scan process
        n_segs = len(s.segments)
        first_scan = Signal()  # the last input beat starts the first segment's scan
        sc_seg = Signal(range(n_segs))
        sc_layer = Signal(range(n_layers))
        seg_last = Signal()
        seg_tensor = Signal(range(len(s.tensors)))
        seg_size = Signal(range(max(t.size for t in s.tensors) + 1))
        with m.Switch(sc_seg):
            for gi, g in enumerate(s.segments):
                with m.Case(gi):
                    lp = s.layers[g.layer]
                    m.d.comb += [seg_last.eq(gi == lp.segments[-1]), seg_tensor.eq(g.tensor),
                                 seg_size.eq(s.tensors[g.tensor].size)]
        m.d.comb += [
            scanner.seg.eq(Mux(first_scan, 0, sc_seg)),
            scanner.limited.eq(fn_active & (seg_tensor == out_tensor)),
            scanner.limit.eq(fn_words),
        ]

        # ------------------------------------------------------------- input and output streams
        in_t = Signal(range(max(n_in, 2)))
        in_e = Signal(range(max(t.size for t in ir.inputs) + 1))
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

        last = s.layers[-1]
        last_t = s.tensors[last.out_tensor]
        out_n = Signal(range(last.size + 1))
        m.submodules.out_pos = out_pos = Memory(
            shape=unsigned(len(Signal(range(s.act_words))) + len(Signal(range(max(P, 2))))),
            depth=last.size, init=[])
        lane_bits = len(Signal(range(max(P, 2))))
        out_pos.init = [((last_t.word_base + p // P) << lane_bits) | (p % P) for p in last_t.positions]
        pos_rd = out_pos.read_port(domain="comb")
        m.d.comb += [pos_rd.addr.eq(out_n), out_rd.addr.eq(pos_rd.data[lane_bits:])]
        raw = out_rd.data.word_select(pos_rd.data[:lane_bits], A)[:last.out_bits]
        out_val = Signal(signed(A + 1))
        m.d.comb += out_val.eq(raw.as_signed() if last.out_signed else raw)
        best = Signal(signed(A + 1))
        best_idx = Signal(range(max(last.size, 2)))

        # One input lane as wide as an activation lane: the stream may be narrower than
        # the widest tensor (8-bit inputs, a 9..16-bit layer), so widen, never re-slice.
        in_lane_data = Signal(unsigned(A))
        m.d.comb += in_lane_data.eq(self.s_axis_tdata)

        with m.FSM(name="ctrl"):
            with m.State("IN"):
                m.d.comb += self.s_axis_tready.eq(1)
                with m.If(self.s_axis_tvalid):
                    m.d.comb += [
                        clear_counters.eq((in_t == 0) & (in_e == 0)),
                        act_wr.addr.eq(in_word),
                        act_wr.data.eq(in_lane_data.replicate(P)),
                        act_wr.en.eq(1 << in_lane),
                    ]
                    with m.If(in_e + 1 == t_size):
                        m.d.sync += [in_e.eq(0), in_lane.eq(0), in_word.eq(next_base)]
                        with m.If(in_t == n_in - 1):
                            m.d.sync += [in_t.eq(0), sc_seg.eq(0), sc_layer.eq(0)]
                            m.d.comb += [first_scan.eq(1), scanner.start.eq(1),
                                         inc["act_reads"].eq(s.tensors[s.segments[0].tensor].size)]
                            m.next = "SCAN"
                        with m.Else():
                            m.d.sync += in_t.eq(in_t + 1)
                    with m.Else():
                        m.d.sync += in_e.eq(in_e + 1)
                        with m.If(in_lane == P - 1):
                            m.d.sync += [in_lane.eq(0), in_word.eq(in_word + 1)]
                        with m.Else():
                            m.d.sync += in_lane.eq(in_lane + 1)
            with m.State("SCAN_START"):
                m.d.comb += [scanner.start.eq(1), inc["act_reads"].eq(seg_size)]
                m.next = "SCAN"
            with m.State("SCAN"), m.If(scanner.done):
                with m.If(seg_last):
                    m.next = "DRAIN"
                with m.Else():
                    m.d.sync += sc_seg.eq(sc_seg + 1)
                    m.next = "SCAN_START"
            with m.State("DRAIN"), m.If(~any_busy & ~fn_active):
                m.d.comb += fn_start.eq(1)
                m.d.sync += fn_layer.eq(sc_layer)
                with m.If(sc_layer == n_layers - 1):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [sc_layer.eq(sc_layer + 1), sc_seg.eq(sc_seg + 1)]
                    m.next = "SCAN_START"
            # The last finaliser write is this cycle at the latest: OUT reads it from the next.
            with m.State("FINISH"), m.If(~fn_issuing & (sum(pipe_valid[:-1]) == 0) & ~fn_start):
                m.d.sync += out_n.eq(0)
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.m_axis_tvalid.eq(1), self.m_axis_tdata.eq(out_val)]
                with m.If(self.m_axis_tready):
                    with m.If((out_n == 0) | (out_val > best)):
                        m.d.sync += [best.eq(out_val), best_idx.eq(out_n)]
                    m.d.sync += out_n.eq(out_n + 1)
                    with m.If(out_n == last.size - 1):
                        m.next = "CLASS"
            with m.State("CLASS"):
                m.d.comb += [self.m_axis_tvalid.eq(1), self.m_axis_tdata.eq(best_idx), self.m_axis_tlast.eq(1)]
                with m.If(self.m_axis_tready):
                    m.next = "IN"
            running = Signal()
            m.d.comb += running.eq(~self.s_axis_tready & ~self.m_axis_tvalid)

        # Finaliser writes own the activation write port outside IN.
        with m.If(~self.s_axis_tready):
            m.d.comb += [act_wr.addr.eq(ww), act_wr.data.eq(fin_data), act_wr.en.eq(Mux(wv, wl, 0))]
        m.d.comb += inc["cycles"].eq(running)
        return m
