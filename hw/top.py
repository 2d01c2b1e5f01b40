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

Flow of one inference, sequenced by the `Controller`: IN (inputs written to
activation memory; the last beat starts the scanner) -> RUN (per layer: the `Scanner` walks every source
segment of the layer and sends up to ``schedule.issue`` events a cycle into
per-slot queues of the PEs, which drain them independently; once the scanner
is empty and only the PEs' last accumulator writes are in flight,
the `FinalisePipeline` writes the outputs, P / G neurons a step for neuron-partitioned
layers on groups of G PEs, two a cycle for synapse-partitioned ones, while
the next layer's scan trails it word by word) -> FINISH -> OUT (the
`OutputStage`: values, class). A context-gated two_point layer is scanned in
two parts: its gate site, then a gate pass of the finalisers (no outputs
written) that sets each PE's fixed bits, then its other site, whose synapses
into fixed neurons the PEs skip (its events wait in the PE queues until the
gate pass ends); then its finalisation as usual. A synchronous ``rst`` at any
point returns to IN with empty queues and cleared accumulator valid bits.

`ApicalTop.elaborate` only instantiates and wires the named parts:
``controller`` (`Controller`), ``scanner`` (`Scanner`), ``pe<p>``
(`ProcessingElement`), ``finalise`` (`FinalisePipeline`), ``fin<p>``
(`Finaliser`, the pipeline's lanes; submodules of the top so their
hierarchical names stay short), ``counters`` (`CounterBank`), ``output``
(`OutputStage`) and ``act_mem``. Inside, the parts talk through
`lib.stream` and plain signatures; the AXI4-Stream names exist only as the
top's ports.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from apical.hw.controller import Controller
from apical.hw.counters import CounterBank
from apical.hw.finalise import FinalisePipeline
from apical.hw.finaliser import Finaliser
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
        s = self.schedule
        P, A = s.pes, s.act_bits
        flt = self._faults

        m.submodules.act_mem = act_mem = Memory(shape=unsigned(P * A), depth=s.act_words, init=[])
        act_wr = act_mem.write_port(granularity=A)
        scan_rd = act_mem.read_port(domain="comb")
        out_rd = act_mem.read_port(domain="comb")
        m.submodules.controller = ctrl = Controller(s, len(self.s_axis_tdata))
        m.submodules.scanner = scanner = Scanner(s, queue_depth=self._qdepth)
        m.submodules.finalise = fp = FinalisePipeline(s)
        m.submodules.output = output = OutputStage(s, len(self.m_axis_tdata))
        pes = []
        for p in range(P):
            pe = ProcessingElement(s, p, queue_depth=self._qdepth, fin_ports=fp.acc_ports, slots=scanner.issue,
                                   faults=flt.pes[p] if flt is not None else None)
            fin = Finaliser(s, p, faults=flt.finalisers[p] if flt is not None else None)
            m.submodules[f"pe{p}"] = pe
            m.submodules[f"fin{p}"] = fin
            pes.append(pe)
            for j in range(scanner.issue):
                wiring.connect(m, scanner.events[p][j], pe.event[j])
            lane = fp.fin[p]
            m.d.comb += [
                scanner.levels[p].eq(pe.level),
                pe.fin_addr.eq(fp.acc_addr), fp.acc0[p].eq(pe.fin_acc0), fp.acc1[p].eq(pe.fin_acc1),
                pe.clear.eq(fp.clear),
                fin.valid.eq(lane.valid), fin.layer.eq(lane.layer), fin.k.eq(lane.k),
                fin.acc0.eq(lane.acc0), fin.acc1.eq(lane.acc1), lane.data.eq(fin.out_data),
                lane.fixed.eq(fin.out_fixed),
            ]
            if fp.acc_ports == 2:
                m.d.comb += [pe.fin_addr_b.eq(fp.acc_addr_b), fp.acc0_b[p].eq(pe.fin_acc0_b),
                             fp.acc1_b[p].eq(pe.fin_acc1_b)]
            if s.gated:
                m.d.comb += [pe.fix_en.eq(fp.fix_en[p]), pe.fix_addr.eq(fp.fix_addr[p]),
                             pe.fix_bits.eq(fp.fix_bits[p]), pe.hold.eq(fp.hold)]

        # AXI4-Stream names at the edge only; tlast of the input is not needed (fixed length).
        m.d.comb += [
            ctrl.input.payload.eq(self.s_axis_tdata), ctrl.input.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(ctrl.input.ready),
            self.m_axis_tvalid.eq(output.beats.valid), self.m_axis_tdata.eq(output.beats.payload.data),
            self.m_axis_tlast.eq(output.beats.payload.last), output.beats.ready.eq(self.m_axis_tready),
        ]
        # Finalisation may start while the PEs' last accumulator writes (S3) are in flight:
        # its first read is the next cycle, after those writes.
        m.d.comb += [
            ctrl.scan_busy.eq(scanner.busy), ctrl.pe_busy.eq(Cat(pe.busy_front for pe in pes).any()),
            scanner.start.eq(ctrl.scan_start), scanner.seg.eq(ctrl.scan_seg),
            fp.start.eq(ctrl.fin_start), fp.gate.eq(ctrl.fin_gate), fp.layer.eq(ctrl.fin_layer),
            ctrl.fin_active.eq(fp.active), ctrl.fin_busy.eq(fp.busy),
            output.start.eq(ctrl.out_start), ctrl.out_valid.eq(output.beats.valid),
            ctrl.out_done.eq(output.done),
            # A scan trails the finalisation of its input (the scanner fetches nothing in the
            # start cycle: it starts then, or is idle).
            scanner.limit_active.eq(fp.active), scanner.limit_tensor.eq(fp.tensor), scanner.limit.eq(fp.words),
        ]

        # Activation memory: the scanner and the output stage read it; the input stream
        # writes it in IN, the finalisers otherwise.
        m.d.comb += [scan_rd.addr.eq(scanner.act_addr), scanner.act_data.eq(scan_rd.data),
                     out_rd.addr.eq(output.act_addr), output.act_data.eq(out_rd.data)]
        with m.If(ctrl.input.ready):
            m.d.comb += [act_wr.addr.eq(ctrl.write.addr), act_wr.data.eq(ctrl.write.data),
                         act_wr.en.eq(ctrl.write.en)]
        with m.Else():
            m.d.comb += [act_wr.addr.eq(fp.write.addr), act_wr.data.eq(fp.write.data), act_wr.en.eq(fp.write.en)]

        # ------------------------------------------------------------- counters
        inc_bits = {"cycles": 1, "events": len(scanner.event), "syn_ops": bits_for(P),
                    "weight_reads": bits_for(P), "acc_updates": bits_for(P), "act_reads": len(scanner.reads),
                    "act_writes": len(fp.act_writes), "requants": len(fp.requants),
                    "table_lookups": len(fp.table_lookups)}
        assert set(inc_bits) == {"cycles", *COUNTERS}
        m.submodules.counters = counters = CounterBank(inc_bits, bits=COUNTER_BITS)
        for c in inc_bits:
            m.d.comb += getattr(self, f"cnt_{c}").eq(getattr(counters, f"cnt_{c}"))
        m.d.comb += [
            counters.clear.eq(ctrl.clear_counters),
            counters.inc_cycles.eq(ctrl.running),
            counters.inc_events.eq(scanner.event),
            counters.inc_syn_ops.eq(sum(pe.issue for pe in pes)),
            counters.inc_weight_reads.eq(sum(pe.read for pe in pes)),
            counters.inc_acc_updates.eq(sum(pe.update for pe in pes)),
            counters.inc_act_reads.eq(scanner.reads),
            counters.inc_act_writes.eq(fp.act_writes),
            counters.inc_requants.eq(fp.requants),
            counters.inc_table_lookups.eq(fp.table_lookups),
        ]
        return m
