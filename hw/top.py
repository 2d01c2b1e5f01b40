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
beat starts the scanner) -> RUN (per layer: the `Scanner` walks every source
segment of the layer and sends up to ``schedule.issue`` events a cycle into
per-slot queues of the PEs, which drain them independently; once the scanner
is empty and only the PEs' last accumulator writes are in flight,
finalisation writes the outputs, P / G neurons a step for neuron-partitioned
layers on groups of G PEs, two a cycle for synapse-partitioned ones, while
the next layer's scan trails it word by word) -> FINISH -> OUT (the
`OutputStage`: values, class). A context-gated two_point layer is scanned in
two parts: its gate site, then a gate pass of the finalisers (no outputs
written) that sets each PE's fixed bits, then its other site, whose synapses
into fixed neurons the PEs skip (its events wait in the PE queues until the
gate pass ends); then its finalisation as usual. Named parts: ``scanner``, ``pe<p>``,
``fin<p>``, ``counters`` (`CounterBank`), ``output`` (`OutputStage`). A
synchronous ``rst`` at any point returns to IN with empty queues and cleared
accumulator valid bits.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Const as C
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from apical.hw.counters import CounterBank
from apical.hw.finaliser import Finaliser, finaliser_in_bits, finaliser_latency
from apical.hw.output import OutputStage
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
    out_w = _round8(max(last.out_bits, bits_for(max(last.size - 1, 0))))
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
        if faults is not None and self.schedule.gated:
            raise ValueError("ApicalTop: fault injection is not supported with context-gated layers")
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
                                   slots=scanner.issue, faults=flt.pes[p] if flt is not None else None)
            fin = Finaliser(s, p, faults=flt.finalisers[p] if flt is not None else None)
            m.submodules[f"pe{p}"] = pe
            m.submodules[f"fin{p}"] = fin
            for j in range(scanner.issue):
                wiring.connect(m, scanner.events[p][j], pe.event[j])
            m.d.comb += scanner.levels[p].eq(pe.level)
            pes.append(pe)
            fins.append(fin)
        # Finalisation may start while the PEs' last accumulator writes (S3) are in flight:
        # its first read is the next cycle, after those writes.
        any_busy = Signal()
        m.d.comb += any_busy.eq(Cat(pe.busy_front for pe in pes).any())

        # ------------------------------------------------------------- counters
        inc_bits = {"cycles": 1, "events": len(scanner.event), "syn_ops": bits_for(P),
                    "weight_reads": bits_for(P), "acc_updates": bits_for(P), "act_reads": len(scanner.reads),
                    "act_writes": bits_for(P), "requants": bits_for(2 * P), "table_lookups": bits_for(P)}
        assert set(inc_bits) == {"cycles", *COUNTERS}
        m.submodules.counters = counters = CounterBank(inc_bits, bits=COUNTER_BITS)
        for c in inc_bits:
            m.d.comb += getattr(self, f"cnt_{c}").eq(getattr(counters, f"cnt_{c}"))
        inc = {c: getattr(counters, f"inc_{c}") for c in inc_bits}
        clear_counters = counters.clear
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
        fn_gate = Signal()  # the finalisation in flight is a gate pass (fixed bits, no outputs)
        gate_start = Signal()
        pipe_gate = [Signal(name=f"fp{i}_gate") for i in range(LATENCY)]
        pipe_k = [Signal(len(fn_k), name=f"fp{i}_k") for i in range(LATENCY)]
        fn_active = Signal()
        m.d.comb += fn_active.eq(fn_issuing | Cat(pipe_valid).any())

        steps = Signal(len(fn_k))
        synapse_mode = Signal()
        out_base = Signal(range(s.act_words))
        region = Signal()
        lanes_n = Signal(P)
        in_bits = finaliser_in_bits(s)
        # Neuron mode with groups of G PEs: the finaliser of lane p takes the sum of its group's
        # partial accumulators (G = 1: its own PE's).
        group_sums = {}
        for g in sorted({lp.group for lp in s.layers if lp.mode == "neuron"}):
            groups = P // g
            group_sums[g] = tuple(
                [sum(getattr(pes[(p % groups) * g + r], f"fin_acc{b}") for r in range(g)) for p in range(P)]
                for b in (0, 1))
        nsum0 = [Signal(signed(in_bits), name=f"nsum0_{p}") for p in range(P)]
        nsum1 = [Signal(signed(in_bits), name=f"nsum1_{p}") for p in range(P)]
        k_word = Signal(len(fn_k))  # neuron mode: output word of step fn_k
        word_end = Signal()  # neuron mode: step fn_k completes its word
        with m.Switch(fn_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [steps.eq(lp.steps), synapse_mode.eq(lp.mode == "synapse"),
                                 out_base.eq(s.tensors[lp.out_tensor].word_base), region.eq(lp.region)]
                    if lp.mode == "neuron":
                        # Lane p finalises group p % (P / G) on the steps k with k % G == p // (P / G).
                        g, groups = lp.group, P // lp.group
                        phase = fn_k[:exact_log2(g)] if g > 1 else C(0, 1)
                        for p in range(P):
                            m.d.comb += lanes_n[p].eq((phase == p // groups) & (fn_k < lp.slots[p % groups]))
                            m.d.comb += [nsum0[p].eq(group_sums[g][0][p]), nsum1[p].eq(group_sums[g][1][p])]
                        m.d.comb += [k_word.eq(fn_k >> exact_log2(g)),
                                     word_end.eq((phase == g - 1) | (fn_k + 1 >= steps))]
        acc_addr = Signal(range(s.acc_depth))
        m.d.comb += acc_addr.eq(region * s.acc_half + fn_k)
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
                fin.acc0.eq(Mux(synapse_mode, tree0_b if odd else tree0, nsum0[p])),
                fin.acc1.eq(Mux(synapse_mode, tree1_b if odd else tree1, nsum1[p])),
            ]
        lanes_s = Signal(P)
        m.d.comb += lanes_s.eq((1 << fn_kl) | Mux(second, 2 << fn_kl, 0))
        s_step = Signal(range(3))
        m.d.comb += s_step.eq(Mux(synapse_mode, fn_step, 1))
        m.d.sync += [
            pipe_valid[0].eq(fn_issuing),
            pipe_word[0].eq(out_base + Mux(synapse_mode, fn_kw, k_word)),
            pipe_rel[0].eq(Mux(synapse_mode, fn_kw, k_word) + 1),
            pipe_lanes[0].eq(Mux(synapse_mode, lanes_s, lanes_n)),
            pipe_last[0].eq(Mux(synapse_mode, (fn_kl + fn_step == P) | (fn_k + fn_step >= steps), word_end)),
            pipe_layer[0].eq(fn_layer),
            pipe_gate[0].eq(fn_gate),
            pipe_k[0].eq(fn_k),
        ]
        for i in range(1, LATENCY):
            m.d.sync += [pipe_valid[i].eq(pipe_valid[i - 1]), pipe_word[i].eq(pipe_word[i - 1]),
                         pipe_rel[i].eq(pipe_rel[i - 1]), pipe_lanes[i].eq(pipe_lanes[i - 1]),
                         pipe_last[i].eq(pipe_last[i - 1]), pipe_layer[i].eq(pipe_layer[i - 1]),
                         pipe_gate[i].eq(pipe_gate[i - 1]), pipe_k[i].eq(pipe_k[i - 1])]
        with m.If(fn_start):
            m.d.sync += [fn_issuing.eq(1), fn_k.eq(0), fn_kw.eq(0), fn_kl.eq(0), fn_words.eq(0),
                         fn_gate.eq(gate_start)]
        with m.Elif(fn_issuing):
            m.d.sync += fn_k.eq(fn_k + s_step)
            with m.If(fn_kl + fn_step == P):
                m.d.sync += [fn_kl.eq(0), fn_kw.eq(fn_kw + 1)]
            with m.Else():
                m.d.sync += fn_kl.eq(fn_kl + fn_step)
            with m.If(fn_k + s_step >= steps):
                m.d.sync += fn_issuing.eq(0)
                # Last accumulator read is this cycle: the region is free from the next one
                # (a gate pass keeps it: the layer's own finalisation follows).
                for pe in pes:
                    m.d.comb += pe.clear.eq(Mux(fn_gate, 0, Mux(region, 0b10, 0b01)))
        wv, ww, wl = pipe_valid[-1], pipe_word[-1], pipe_lanes[-1]
        with m.If(wv & pipe_last[-1]):
            m.d.sync += fn_words.eq(pipe_rel[-1])
        fin_data = Signal(unsigned(P * A))
        for p, fin in enumerate(fins):
            m.d.comb += fin_data.word_select(p, A).eq(fin.out_data)
        n_written = Signal(range(P + 1))
        m.d.comb += n_written.eq(Mux(wv, sum(wl[p] for p in range(P)), 0))
        fixed_lanes = Signal(P)
        m.d.comb += fixed_lanes.eq(Cat(fin.out_fixed for fin in fins) & wl)
        n_fixed = Signal(range(P + 1))
        m.d.comb += n_fixed.eq(Mux(wv, sum(fixed_lanes[p] for p in range(P)), 0))
        gate_pass = pipe_gate[-1]
        nsites = Signal(2)  # sites requantised by a layer's own finalisation (a gated layer: the other one)
        tp = Signal()
        with m.Switch(pipe_layer[-1]):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [nsites.eq(len(lp.sites) - (lp.gate is not None)), tp.eq(lp.kind == "two_point")]
        # A gate pass requantises the gate site of every neuron; the layer's finalisation then
        # counts the other site of the neurons it does not fix (the golden model's count).
        m.d.comb += [
            inc["act_writes"].eq(Mux(gate_pass, 0, n_written)),
            inc["requants"].eq(Mux(gate_pass, n_written, n_written * nsites - n_fixed)),
            inc["table_lookups"].eq(Mux(tp & ~gate_pass, n_written, 0)),
        ]
        if s.gated:
            self._fixed_writes(m, pes, fixed_lanes, wv & gate_pass, wl, pipe_layer[-1], pipe_k[-1], pipe_rel[-1])
            # The last fixed bits are written at the end of the gate pass's last cycle: events
            # leave the queues from the next (their targets are checked two cycles later).
            for pe in pes:
                m.d.comb += pe.hold.eq(fn_gate & fn_active)

        # ------------------------------------------------------------- scan process
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
        # A scan trails the finalisation of its input (the scanner fetches nothing in the
        # fn_start cycle: it starts then, or is idle).
        with m.Switch(fn_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += scanner.limit_tensor.eq(lp.out_tensor)
        m.d.comb += [
            scanner.limit_active.eq(fn_active),
            scanner.limit.eq(fn_words),
            inc["act_reads"].eq(scanner.reads),
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

        m.submodules.output = output = OutputStage(s, len(self.m_axis_tdata))
        m.d.comb += [
            out_rd.addr.eq(output.act_addr), output.act_data.eq(out_rd.data),
            self.m_axis_tvalid.eq(output.beats.valid), self.m_axis_tdata.eq(output.beats.payload.data),
            self.m_axis_tlast.eq(output.beats.payload.last), output.beats.ready.eq(self.m_axis_tready),
        ]

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
                            # The scanner's first fetch is in the next cycle, after this write.
                            m.d.sync += [in_t.eq(0), sc_layer.eq(0)]
                            m.d.comb += [scanner.seg.eq(0), scanner.start.eq(1)]
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
            with m.State("RUN"), m.If(~scanner.busy & ~any_busy & ~fn_active):
                m.d.comb += fn_start.eq(1)
                m.d.sync += fn_layer.eq(sc_layer)
                with m.If(sc_gated & ~sc_other):
                    # Gate site accumulated: a gate pass sets the fixed bits while the other
                    # site's events are scanned into the PE queues, held there until it ends.
                    m.d.sync += sc_other.eq(1)
                    m.d.comb += [gate_start.eq(1), scanner.seg.eq(other_seg), scanner.start.eq(1)]
                with m.Elif(sc_layer == n_layers - 1):
                    m.d.sync += sc_other.eq(0)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [sc_layer.eq(sc_layer + 1), sc_other.eq(0)]
                    m.d.comb += [scanner.seg.eq(first_seg), scanner.start.eq(1)]
            # The last finaliser write is this cycle at the latest: OUT reads it from the next.
            with m.State("FINISH"), m.If(~fn_issuing & ~Cat(pipe_valid[:-1]).any() & ~fn_start):
                m.d.comb += output.start.eq(1)
                m.next = "OUT"
            with m.State("OUT"), m.If(output.done):
                m.next = "IN"
            running = Signal()
            m.d.comb += running.eq(~self.s_axis_tready & ~self.m_axis_tvalid)

        # Finaliser writes own the activation write port outside IN.
        with m.If(~self.s_axis_tready):
            m.d.comb += [act_wr.addr.eq(ww), act_wr.data.eq(fin_data), act_wr.en.eq(Mux(wv & ~gate_pass, wl, 0))]
        m.d.comb += inc["cycles"].eq(running)
        return m

    def _fixed_writes(self, m: Module, pes: list, fixed_lanes: Signal, en: Signal, wl: Signal,
                      layer: Signal, k: Signal, rel: Signal) -> None:
        """Gate pass results to the PEs: each PE marks the accumulator entries whose neuron is fixed.

        Neuron mode (groups of G PEs): lane p finalises slot ``k`` of group ``p % (P / G)``, whose
        synapses lie on PEs ``g * G .. g * G + G - 1``. Synapse mode: every PE holds every neuron;
        lane p of output word ``rel - 1`` is neuron ``(rel - 1) * P + p``.
        """
        s = self.schedule
        P = s.pes
        for pe in pes:
            m.d.comb += pe.fix_en.eq(0)
        with m.If(en), m.Switch(layer):
            for li, lp in enumerate(s.layers):
                if lp.gate is None:
                    continue
                base = lp.region * s.acc_half
                with m.Case(li):
                    for q, pe in enumerate(pes):
                        if lp.mode == "synapse":
                            m.d.comb += [pe.fix_en.eq(1), pe.fix_addr.eq(base + (rel - 1) * P),
                                         pe.fix_bits.eq(fixed_lanes)]
                        else:
                            groups = P // lp.group
                            src = [p for p in range(P) if p % groups == q // lp.group]
                            m.d.comb += [pe.fix_en.eq(Cat(wl[p] for p in src).any()), pe.fix_addr.eq(base + k),
                                         pe.fix_bits.eq(Cat(fixed_lanes[p] for p in src).any())]
