"""Finalise pipeline: steps one layer's neurons through the P finalisers into activation memory.

Started by the controller once a layer's synapses are accumulated, it reads
the PEs' accumulators one step a cycle (``acc_addr``; the second port at
``acc_addr_b`` too for dual finalisation), reduces them (the sum of a group's
partial accumulators in neuron mode, with groups of G PEs; an adder tree over
all PEs in synapse mode), registers the sums into the finalisers (``fin``,
the `Finaliser` lanes, which stay submodules of the top), and carries each
step's word, lanes and layer down a delay line as deep as the finalisers, so
their outputs meet it at the activation ``write``. Neuron-partitioned layers
finalise P / G neurons a step; synapse-partitioned ones one, or two (``dual``:
neurons k and k + 1 into adjacent lanes) when P is even. ``words`` counts the
output words fully written (the next layer's scan trails it), ``clear`` frees
the accumulator region after its last read, and the counter increments
(``act_writes``, ``requants``, ``table_lookups``) follow each write. A gate
pass (``gate`` at ``start``, context-gated layers) writes no outputs: the gate
site's fixed bits go to the PEs (``fix_*``) and ``hold`` keeps the other
site's events in the PE queues until it ends.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Const as C
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2, exact_log2

from apical.hw.finaliser import finaliser_in_bits, finaliser_latency
from apical.hw.layouts import act_write_signature
from apical.hw.schedule import Schedule

__all__ = ["FinalisePipeline", "finaliser_lane_signature", "reduce_stages", "reduction_register_bits"]

LEVELS_PER_STAGE = 2  # adder-tree levels between registers in the reduction over the PEs


def reduce_stages(pes: int) -> int:
    """Registers the accumulator reduction over ``pes`` PEs adds before the finalisers' input
    register: the PEs' registered reads, then one after every `LEVELS_PER_STAGE` tree levels
    below the last ones (those and the layer's selection share the finalisers' input stage)."""
    levels = ceil_log2(pes)
    return 1 + max(0, -(-levels // LEVELS_PER_STAGE) - 1)


def _reduction_plan(pes: int, keep: set[int]) -> dict[int, dict[int, int]]:
    """The reduction's registers: for each tree level a register follows, the number of block
    sums it holds per level (that level's, and the kept ones of lower levels carried along)."""
    n_regs = reduce_stages(pes) - 1
    plan: dict[int, dict[int, int]] = {}
    sizes = {0: pes} if 0 in keep else {}
    n = pes
    for level in range(1, ceil_log2(pes) + 1):
        n = -(-n // 2)
        if level in keep:
            sizes[level] = n
        if level % LEVELS_PER_STAGE == 0 and len(plan) < n_regs:
            plan[level] = {**sizes, level: n}
    return plan


def _reduction(m: Module, values: list, width: int, keep: set[int], name: str) -> dict[int, list]:
    """Sums of ``values`` (the PEs' registered reads) over aligned blocks of 2**level PEs, for
    each level in ``keep`` (the last block may be short), from an adder tree registered as
    `_reduction_plan` says (after every `LEVELS_PER_STAGE` levels, `reduce_stages`); kept sums
    of lower levels are carried down the same registers. Returns them as they stand at the
    finalisers' input stage."""
    plan = _reduction_plan(len(values), keep)
    nodes = list(values)
    out = {0: nodes} if 0 in keep else {}
    for level in range(1, ceil_log2(len(values)) + 1):
        nodes = [nodes[j] + nodes[j + 1] if j + 1 < len(nodes) else nodes[j] for j in range(0, len(nodes), 2)]
        if level in keep:
            out[level] = nodes
        if level in plan:
            for lv, sums in {**out, level: nodes}.items():
                assert len(sums) == plan[level][lv]
                regs = [Signal(signed(width), name=f"{name}_r{level}_l{lv}_{j}") for j in range(len(sums))]
                m.d.sync += [r.eq(v) for r, v in zip(regs, sums, strict=True)]
                if lv in out:
                    out[lv] = regs
                if lv == level:
                    nodes = regs
    return out


def _reduction_keep(schedule: Schedule) -> set[int]:
    """Tree levels whose block sums the finalisers take: each neuron group's, all PEs' (synapse mode)."""
    keep = {exact_log2(lp.group) for lp in schedule.layers if lp.mode == "neuron"}
    if any(lp.mode == "synapse" for lp in schedule.layers):
        keep.add(ceil_log2(schedule.pes))
    return keep


def _dual(schedule: Schedule) -> bool:
    """Synapse-partitioned layers finalise two neurons a cycle (two adder trees over the PEs'
    second accumulator read ports) when a word holds an even number of lanes."""
    return schedule.pes % 2 == 0 and any(lp.mode == "synapse" for lp in schedule.layers)


def reduction_register_bits(schedule: Schedule) -> int:
    """Flip-flops of the reduction's registers between the PEs' reads and the finalisers'
    input registers (both banks, and both trees of dual finalisation)."""
    P = schedule.pes
    regs = 2 * sum(sum(v.values()) for v in _reduction_plan(P, _reduction_keep(schedule)).values())
    if _dual(schedule):
        regs += 2 * sum(sum(v.values()) for v in _reduction_plan(P, {ceil_log2(P)}).values())
    return regs * finaliser_in_bits(schedule)


def finaliser_lane_signature(schedule: Schedule) -> wiring.Signature:
    """The pipeline's side of one `Finaliser`: its registered inputs out, its output value and fixed bit in."""
    in_bits = finaliser_in_bits(schedule)
    return wiring.Signature({
        "valid": Out(1),
        "layer": Out(range(len(schedule.layers))),
        "k": Out(range(max(lp.steps for lp in schedule.layers))),
        "acc0": Out(signed(in_bits)),
        "acc1": Out(signed(in_bits)),
        "data": In(unsigned(schedule.act_bits)),
        "fixed": In(1),
    })


class FinalisePipeline(wiring.Component):
    """Finalisation of ``schedule``'s layers on its ``pes`` lanes (domain ``sync``)."""

    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"FinalisePipeline: schedule must be a Schedule, got {type(schedule).__name__}")
        s = self._s = schedule
        P = s.pes
        self._dual = _dual(s)
        acc = signed(s.acc_bits)
        ports = {
            "start": In(1),  # finalise layer `layer` (a gate pass when `gate`) from the next cycle
            "gate": In(1),
            "layer": In(range(len(s.layers))),
            "active": Out(1),  # a step is being issued or is in the pipeline
            "busy": Out(1),  # a write later than this cycle is still to come
            "tensor": Out(range(len(s.tensors))),  # the output tensor of the layer in flight
            "words": Out(range(s.act_words + 1)),  # its words fully written
            "acc_addr": Out(range(s.acc_depth)),
            "acc0": In(acc).array(P),
            "acc1": In(acc).array(P),
            "clear": Out(2),  # accumulator region 0 / 1 read for the last time this cycle
            "fin": Out(finaliser_lane_signature(s)).array(P),
            "write": Out(act_write_signature(s.act_words, P, s.act_bits)),
            "act_writes": Out(bits_for(P)),
            "requants": Out(bits_for(2 * P)),
            "table_lookups": Out(bits_for(P)),
        }
        if self._dual:
            ports.update({"acc_addr_b": Out(range(s.acc_depth)), "acc0_b": In(acc).array(P),
                          "acc1_b": In(acc).array(P)})
        if s.gated:
            ports.update({"fix_en": Out(1).array(P), "fix_addr": Out(range(s.acc_depth)).array(P),
                          "fix_bits": Out(P).array(P), "hold": Out(1)})
        super().__init__(ports)

    @property
    def acc_ports(self) -> int:
        """Accumulator read ports each PE needs: 2 for dual finalisation."""
        return 2 if self._dual else 1

    def elaborate(self, platform):
        m = Module()
        s = self._s
        P = s.pes
        dual = self._dual
        n_layers = len(s.layers)
        fn_issuing = Signal()
        fn_layer = Signal(range(n_layers))
        fn_k = Signal(range(max(lp.steps for lp in s.layers) + 1))
        fn_kw = Signal(range(s.act_words + 1))
        fn_kl = Signal(range(max(P, 2)))
        fn_words = Signal(range(s.act_words + 1))  # words of the output tensor fully written
        fn_start = self.start
        # Accumulator reads registered in the PEs, then the reduction's registers (`reduce_stages`),
        # then the finalisers' input register and their own stages.
        extra = reduce_stages(P)
        LATENCY = extra + finaliser_latency(s) + 1
        pipe_valid = [Signal(name=f"fp{i}_valid") for i in range(LATENCY)]
        pipe_word = [Signal(range(s.act_words), name=f"fp{i}_word") for i in range(LATENCY)]
        pipe_rel = [Signal(range(s.act_words + 1), name=f"fp{i}_rel") for i in range(LATENCY)]
        pipe_lanes = [Signal(P, name=f"fp{i}_lanes") for i in range(LATENCY)]
        pipe_last = [Signal(name=f"fp{i}_last") for i in range(LATENCY)]
        pipe_layer = [Signal(range(n_layers), name=f"fp{i}_layer") for i in range(LATENCY)]
        fn_gate = Signal()  # the finalisation in flight is a gate pass (fixed bits, no outputs)
        pipe_gate = [Signal(name=f"fp{i}_gate") for i in range(LATENCY)]
        pipe_k = [Signal(len(fn_k), name=f"fp{i}_k") for i in range(LATENCY)]
        fn_active = self.active
        m.d.comb += [fn_active.eq(fn_issuing | Cat(pipe_valid).any()),
                     self.busy.eq(fn_issuing | Cat(pipe_valid[:-1]).any()),
                     self.words.eq(fn_words)]

        steps = Signal(len(fn_k))
        synapse_mode = Signal()
        out_base = Signal(range(s.act_words))
        region = Signal()
        in_bits = finaliser_in_bits(s)
        k_word = Signal(len(fn_k))  # neuron mode: output word of step fn_k
        word_end = Signal()  # neuron mode: step fn_k completes its word
        lanes_n = Signal(P)
        with m.Switch(fn_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [steps.eq(lp.steps), synapse_mode.eq(lp.mode == "synapse"),
                                 out_base.eq(s.tensors[lp.out_tensor].word_base), region.eq(lp.region),
                                 self.tensor.eq(lp.out_tensor)]
                    if lp.mode == "neuron":
                        # Lane p finalises group p % (P / G) on the steps k with k % G == p // (P / G).
                        g, groups = lp.group, P // lp.group
                        phase = fn_k[:exact_log2(g)] if g > 1 else C(0, 1)
                        for p in range(P):
                            m.d.comb += lanes_n[p].eq((phase == p // groups) & (fn_k < lp.slots[p % groups]))
                        m.d.comb += [k_word.eq(fn_k >> exact_log2(g)),
                                     word_end.eq((phase == g - 1) | (fn_k + 1 >= steps))]
        m.d.comb += self.acc_addr.eq(region * s.acc_half + fn_k)
        fn_step = 2 if dual else 1
        second = Signal()
        if dual:
            m.d.comb += [self.acc_addr_b.eq(region * s.acc_half + fn_k + 1), second.eq(fn_k + 1 < steps)]

        # The reads come back registered a cycle later and are reduced over the PEs: in neuron
        # mode the sum of a group's G partial accumulators (G = 1: its own PE's), the block of
        # 2**log2(G) PEs; in synapse mode over all PEs. `extra` cycles after the read, the
        # finalisers' input registers take them, with the step's layer and k from the delay line.
        top = ceil_log2(P)
        keep = _reduction_keep(s)
        red0 = _reduction(m, list(self.acc0), in_bits, keep, "red0")
        red1 = _reduction(m, list(self.acc1), in_bits, keep, "red1")
        if dual:
            red0_b = _reduction(m, list(self.acc0_b), in_bits, {top}, "red0b")
            red1_b = _reduction(m, list(self.acc1_b), in_bits, {top}, "red1b")
        f_valid, f_layer, f_k = pipe_valid[extra - 1], pipe_layer[extra - 1], pipe_k[extra - 1]
        f_syn = Signal()
        nsum0 = [Signal(signed(in_bits), name=f"nsum0_{p}") for p in range(P)]
        nsum1 = [Signal(signed(in_bits), name=f"nsum1_{p}") for p in range(P)]
        with m.Switch(f_layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += f_syn.eq(lp.mode == "synapse")
                    if lp.mode == "neuron":
                        lv, groups = exact_log2(lp.group), P // lp.group
                        for p in range(P):
                            m.d.comb += [nsum0[p].eq(red0[lv][p % groups]), nsum1[p].eq(red1[lv][p % groups])]
        for p, fin in enumerate(self.fin):
            odd = dual and p % 2 == 1
            tree0, tree1 = (red0_b[top][0], red1_b[top][0]) if odd else \
                ((red0[top][0], red1[top][0]) if top in red0 else (0, 0))
            m.d.sync += [
                fin.valid.eq(f_valid), fin.layer.eq(f_layer),
                fin.k.eq(f_k + Mux(f_syn, 1, 0) if odd else f_k),
                fin.acc0.eq(Mux(f_syn, tree0, nsum0[p])),
                fin.acc1.eq(Mux(f_syn, tree1, nsum1[p])),
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
            m.d.sync += [fn_issuing.eq(1), fn_layer.eq(self.layer), fn_k.eq(0), fn_kw.eq(0), fn_kl.eq(0),
                         fn_words.eq(0), fn_gate.eq(self.gate)]
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
                m.d.comb += self.clear.eq(Mux(fn_gate, 0, Mux(region, 0b10, 0b01)))

        # ------------------------------------------------------------- the finalisers' outputs
        wv, ww, wl = pipe_valid[-1], pipe_word[-1], pipe_lanes[-1]
        with m.If(wv & pipe_last[-1]):
            m.d.sync += fn_words.eq(pipe_rel[-1])
        fin_data = Signal(unsigned(P * s.act_bits))
        for p, fin in enumerate(self.fin):
            m.d.comb += fin_data.word_select(p, s.act_bits).eq(fin.data)
        gate_pass = pipe_gate[-1]
        m.d.comb += [self.write.addr.eq(ww), self.write.data.eq(fin_data),
                     self.write.en.eq(Mux(wv & ~gate_pass, wl, 0))]
        n_written = Signal(range(P + 1))
        m.d.comb += n_written.eq(Mux(wv, sum(wl[p] for p in range(P)), 0))
        fixed_lanes = Signal(P)
        m.d.comb += fixed_lanes.eq(Cat(fin.fixed for fin in self.fin) & wl)
        n_fixed = Signal(range(P + 1))
        m.d.comb += n_fixed.eq(Mux(wv, sum(fixed_lanes[p] for p in range(P)), 0))
        nsites = Signal(2)  # sites requantised by a layer's own finalisation (a gated layer: the other one)
        tp = Signal()
        with m.Switch(pipe_layer[-1]):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += [nsites.eq(len(lp.sites) - (lp.gate is not None)), tp.eq(lp.kind == "two_point")]
        # A gate pass requantises the gate site of every neuron; the layer's finalisation then
        # counts the other site of the neurons it does not fix (the golden model's count).
        m.d.comb += [
            self.act_writes.eq(Mux(gate_pass, 0, n_written)),
            self.requants.eq(Mux(gate_pass, n_written, n_written * nsites - n_fixed)),
            self.table_lookups.eq(Mux(tp & ~gate_pass, n_written, 0)),
        ]
        if s.gated:
            self._fixed_writes(m, fixed_lanes, wv & gate_pass, wl, pipe_layer[-1], pipe_k[-1], pipe_rel[-1])
            # The last fixed bits are written at the end of the gate pass's last cycle: events
            # leave the queues from the next (their targets are checked two cycles later).
            m.d.comb += self.hold.eq(fn_gate & fn_active)
        return m

    def _fixed_writes(self, m: Module, fixed_lanes: Signal, en: Signal, wl: Signal,
                      layer: Signal, k: Signal, rel: Signal) -> None:
        """Gate pass results to the PEs: each PE marks the accumulator entries whose neuron is fixed.

        Neuron mode (groups of G PEs): lane p finalises slot ``k`` of group ``p % (P / G)``, whose
        synapses lie on PEs ``g * G .. g * G + G - 1``. Synapse mode: every PE holds every neuron;
        lane p of output word ``rel - 1`` is neuron ``(rel - 1) * P + p``.
        """
        s = self._s
        P = s.pes
        with m.If(en), m.Switch(layer):
            for li, lp in enumerate(s.layers):
                if lp.gate is None:
                    continue
                base = lp.region * s.acc_half
                with m.Case(li):
                    for q in range(P):
                        fix_en, fix_addr, fix_bits = self.fix_en[q], self.fix_addr[q], self.fix_bits[q]
                        if lp.mode == "synapse":
                            m.d.comb += [fix_en.eq(1), fix_addr.eq(base + (rel - 1) * P), fix_bits.eq(fixed_lanes)]
                        else:
                            groups = P // lp.group
                            src = [p for p in range(P) if p % groups == q // lp.group]
                            m.d.comb += [fix_en.eq(Cat(wl[p] for p in src).any()), fix_addr.eq(base + k),
                                         fix_bits.eq(Cat(fixed_lanes[p] for p in src).any())]
