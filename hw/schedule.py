"""Schedule compiler: an IR folded onto ``P`` processing elements.

`compile_schedule` turns the IR into everything the hardware needs as
constants: where each tensor lives in activation memory, which PE owns which
synapses (per-PE weight, index and bias memory images), the scan segments the
event controller walks, and one `LayerProgram` per layer. It is pure numpy;
`apical.hw.top.ApicalTop` only reads the result.

Partitioning, chosen per layer by estimated cycles:

* ``neuron``: the layer's neurons are spread over the PEs (balanced by fan-in,
  at most ``ceil(size / P)`` per PE); every event is offered to every PE that
  holds synapses for it; finalisation handles ``P`` neurons per cycle. Output
  position of PE ``p``'s ``k``-th neuron is ``k * P + p`` (the next layer's
  fan-out tables are built in this stored order).
* ``synapse``: the site inputs are spread over the PEs (balanced by fan-out);
  each PE holds partial accumulators for every neuron, reduced by an adder
  tree one neuron per cycle at finalisation. Good for small layers (logits).
  Within a weight budget each input's fan-out is held by 2, 4, ... PEs and
  its events go to the least-loaded of them (``Segment.anycast``).

Accumulator addresses alternate between two regions (layer parity) so a
layer's finalisation can overlap the next layer's accumulation.

Context gating (a two_point layer's ``gate``): the gate site's segments come
first in scan order and the scan stops after them (`Schedule.scan_ends`); a
gate pass of the finalisers then derives each neuron's "fixed" bit from
``LayerProgram.fix_lut`` (bit ``v`` set when the gate site's value index ``v``
fixes the table's output), while the other site's segments are scanned into the
PE queues, which hold them until the pass has written every fixed bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from amaranth.utils import bits_for

from apical.hw.layouts import bias_layout, event_layout, index_layout, requant_layout, weight_layout
from apical.sw.errors import ApicalError
from apical.sw.ir import IR, Layer, gating_values

__all__ = [
    "LayerProgram",
    "MemorySpec",
    "PEImage",
    "Schedule",
    "Segment",
    "SiteProgram",
    "TensorPlace",
    "compile_schedule",
    "issue_slots",
]

MODES = ("neuron", "synapse")


@dataclass(frozen=True)
class TensorPlace:
    """Where a tensor lives in activation memory (``lanes`` activations per word)."""

    name: str
    size: int
    bits: int
    signed: bool
    word_base: int
    words: int
    positions: tuple[int, ...]  # stored position of element e (word = pos // lanes)


@dataclass(frozen=True)
class Segment:
    """One source tensor of one site, scanned for events."""

    layer: int
    site: str
    tensor: int  # index into Schedule.tensors
    in_offset: int  # offset of this source in the site's concatenated input
    index_base: int  # index/mask memory address of stored position 0
    anycast: bool = False  # each event goes to one of its PEs (replicated fan-out), not to all


@dataclass(frozen=True)
class SiteProgram:
    name: str
    bank: int  # accumulator bank: 0 for main/r, 1 for c
    shift: int
    multiplier: int
    relu: bool
    bits: int
    signed: bool
    acc_bits: int
    narrow: bool = False
    per_neuron: bool = False  # multiplier/offset per neuron from the requant memory


@dataclass(frozen=True)
class LayerProgram:
    name: str
    kind: str
    mode: str  # "neuron" | "synapse"
    size: int
    steps: int  # finalisation steps: slots per PE (neuron) or neurons (synapse)
    region: int  # accumulator region (layer parity)
    bias_base: int
    out_tensor: int
    out_bits: int
    out_signed: bool
    sites: tuple[SiteProgram, ...]
    segments: tuple[int, ...]  # indices into Schedule.segments, in scan order
    slots: tuple[int, ...]  # neuron mode: neurons held by each PE
    table_base: int  # two_point: base address in the table memory
    syn_per_pe: tuple[int, ...]
    est_cycles: int
    est_cycles_other: int  # the estimate of the mode not chosen (for reports)
    replicas: int = 1  # synapse mode: PEs holding each input's fan-out
    group: int = 1  # neuron mode: PEs sharing each neuron (slots: neurons per group)
    gate: str | None = None  # two_point context gating: the site scanned and finalised first
    gate_segments: int = 0  # gated: how many of `segments` (the first) belong to the gate site
    fix_lut: int = 0  # gated: bit v set when the gate site's value index v fixes the output

    @property
    def gate_bank(self) -> int:
        """Accumulator bank of the gate site (gated layers)."""
        return 1 if self.gate == "c" else 0


@dataclass(frozen=True)
class MemorySpec:
    """One kind of on-chip memory: an instance per entry of ``depths``, ``width``-bit words.

    Widths come from the named layouts (`apical.hw.layouts`) the RTL builds its
    memories with; depths from the schedule: what the RTL instantiates.
    """

    width: int
    depths: tuple[int, ...]

    @property
    def depth(self) -> int:
        """Words of the largest instance (the one a size rule should assume)."""
        return max(self.depths)

    @property
    def bits(self) -> int:
        """Bits over all instances."""
        return self.width * sum(self.depths)

    @property
    def instance_bytes(self) -> float:
        """Bytes of the largest instance."""
        return self.depth * self.width / 8


@dataclass(frozen=True, eq=False)
class PEImage:
    """Initial contents of one PE's memories."""

    weights: tuple[tuple[int, int, int], ...]  # (acc address, bank, weight) in walk order
    index: tuple[tuple[int, int], ...]  # (start, count) per index address
    bias: tuple[tuple[int, int], ...]  # (bank 0 bias, bank 1 bias) per bias address
    # (m0, o0, m1, o1) per bias address, only when some site has per-neuron requantisation
    requant: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True, eq=False)
class Schedule:
    pes: int
    lanes: int
    act_bits: int  # width of one activation lane
    value_bits: int  # signed width of an event value
    weight_bits: int
    acc_bits: int
    tensors: tuple[TensorPlace, ...]
    n_inputs: int
    segments: tuple[Segment, ...]
    layers: tuple[LayerProgram, ...]
    images: tuple[PEImage, ...]
    mask: tuple[int, ...]  # per index address: bit p set when PE p has synapses
    table: tuple[int, ...]  # two-point tables, raw act_bits two's complement, concatenated
    acc_half: int  # accumulator slots per region
    weight_depth: int
    index_depth: int
    bias_depth: int
    max_fanout: int
    issue: int = 2  # scanner issue slots: events per cycle at most (a queue per slot in each PE)
    rq_mult_bits: int = 0  # per-neuron requant memory widths (0: no such memory)
    rq_offset_bits: int = 0

    @property
    def act_words(self) -> int:
        return sum(t.words for t in self.tensors)

    @property
    def gated(self) -> bool:
        """True when some layer is context-gated (the PEs then check a fixed bit per synapse)."""
        return any(lp.gate is not None for lp in self.layers)

    @property
    def scan_ends(self) -> frozenset[int]:
        """Segments after which a scan stops: each layer's last, and a gated layer's last gate-site one."""
        ends = {lp.segments[-1] for lp in self.layers}
        ends |= {lp.segments[lp.gate_segments - 1] for lp in self.layers if lp.gate is not None}
        return frozenset(ends)

    @property
    def acc_depth(self) -> int:
        return 2 * self.acc_half

    @property
    def synapses_per_pe(self) -> tuple[int, ...]:
        return tuple(len(im.weights) for im in self.images)

    def memories(self) -> dict[str, MemorySpec]:
        """Every memory of the array as the RTL builds it (`apical.hw.pe`, `finaliser`, `scanner`, `top`).

        The one source for memory bits and word widths: the energy model, the
        footprint and rtl.json read these. The weight memory of PE ``p`` holds
        exactly its synapses (replicated fan-outs included), one entry at least.
        """
        P = self.pes
        mems = {
            "activation": MemorySpec(self.lanes * self.act_bits, (self.act_words,)),
            "weight": MemorySpec(weight_layout(self.acc_depth, self.weight_bits).size,
                                 tuple(max(1, n) for n in self.synapses_per_pe)),
            "index": MemorySpec(index_layout(self.weight_depth, self.max_fanout).size, (self.index_depth,) * P),
            "bias": MemorySpec(bias_layout(self.acc_bits).size, (max(1, self.bias_depth),) * P),
            "accumulator": MemorySpec(self.acc_bits, (self.acc_depth,) * (2 * P)),
            "event_mask": MemorySpec(P, (self.index_depth,)),
        }
        if self.rq_mult_bits:
            mems["requant"] = MemorySpec(requant_layout(self.rq_mult_bits, self.rq_offset_bits).size,
                                         (max(1, self.bias_depth),) * P)
        if self.table:
            mems["table"] = MemorySpec(self.act_bits, (len(self.table),) * P)
        if self.gated:
            # Context gating: each synapse's accumulator address, read before (and instead of)
            # the weight word, so a skipped synapse costs no weight read.
            mems["target"] = MemorySpec(bits_for(self.acc_depth - 1), mems["weight"].depths)
        return mems

    @property
    def event_bits(self) -> int:
        """Width of one event (index-memory address + value) on the scanner-to-PE streams."""
        return event_layout(self.index_depth, self.value_bits).size

    def cycle_lower_bound(self, syn_ops: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-sample cycle lower bound: the sum over layers of ``ceil(syn_ops_layer / P)``.

        ``syn_ops[layer]`` is an int ``[N]`` array (the golden model's counts);
        each PE does at most one synaptic operation per cycle.
        """
        per_layer = [np.asarray(syn_ops[lp.name], dtype=np.int64) for lp in self.layers]
        return sum((-(-s // self.pes) for s in per_layer), np.zeros_like(per_layer[0]))

    def stats(self) -> dict:
        """Numbers for reports (rtl.json)."""
        return {
            "pes": self.pes,
            "lanes": self.lanes,
            "act_bits": self.act_bits,
            "value_bits": self.value_bits,
            "weight_bits": self.weight_bits,
            "acc_bits": self.acc_bits,
            "issue": self.issue,
            "synapses_per_pe": list(self.synapses_per_pe),
            "memories": {
                name: {"width": m.width, "depth": m.depth, "instances": len(m.depths), "bits": m.bits}
                for name, m in self.memories().items()
            },
            "layers": [
                {
                    "name": lp.name,
                    "kind": lp.kind,
                    "mode": lp.mode,
                    "size": lp.size,
                    "finalise_steps": lp.steps,
                    "synapses_per_pe": list(lp.syn_per_pe),
                    "replicas": lp.replicas,
                    "group": lp.group,
                    "gate": lp.gate,
                    "max_synapses_per_pe": max(lp.syn_per_pe),
                    "est_cycles_full_activity": lp.est_cycles,
                    "est_cycles_other_mode": lp.est_cycles_other,
                }
                for lp in self.layers
            ],
        }


def _lpt(loads: np.ndarray, bins: int, capacity: int) -> np.ndarray:
    """Longest-processing-time assignment of items to ``bins`` (at most ``capacity`` each).

    Deterministic: ties broken by item index and bin index, so the same IR
    always gives the same schedule (and byte-identical Verilog).
    """
    order = sorted(range(len(loads)), key=lambda i: (-int(loads[i]), i))
    total = [0] * bins
    count = [0] * bins
    owner = np.zeros(len(loads), dtype=np.int64)
    for i in order:
        best = min((b for b in range(bins) if count[b] < capacity), key=lambda b: (total[b], count[b], b))
        owner[i] = best
        total[best] += int(loads[i])
        count[best] += 1
    return owner


@dataclass(frozen=True, eq=False)
class _Plan:
    """A layer's partitioning: the chosen mode and what each mode would place where."""

    mode: str
    group: int  # neuron mode: PEs sharing each neuron's synapses (partial sums added at finalisation)
    owner: np.ndarray  # neuron mode: group of each neuron
    cap: int  # neuron mode: neurons per group at most (finalisation steps)
    input_owner: dict[str, np.ndarray]  # synapse mode: PE of each site input
    est: dict[str, int]  # estimated cycles at full activity per mode


def _plan_layer(layer: Layer, pes: int, *, max_group: int = 8, min_group: int = 1) -> _Plan:
    """Choose the partitioning of one layer by estimated cycles at full activity.

    Neuron mode with groups of ``G`` PEs: the neurons are spread over ``P / G``
    groups (balanced by fan-in), each input's synapses into a group dealt
    round-robin over the group's PEs (partial sums, added at finalisation). ``G = 1`` is one neuron per PE; a larger ``G`` balances a
    layer with few neurons per PE (at P = 64, 64 neurons of unequal fan-in) at the
    cost of ``G`` finalisation steps per output word.
    """
    fan_in = sum(layer.sites[k].fan_in(layer.size) for k in layer.site_order)
    best = None
    g = 1
    while g <= min(pes, max_group):
        if pes % g == 0 and (g >= min_group or g == min(pes, max_group)):
            groups = pes // g
            cap = math.ceil(layer.size / groups)
            owner = _lpt(fan_in, groups, cap)
            load = np.bincount(owner, weights=fan_in, minlength=groups).astype(np.int64)
            cycles = math.ceil(int(load.max()) / g) + cap
            if best is None or cycles < best[0]:
                best = (cycles, g, owner, cap)
        g *= 2
    assert best is not None
    neuron_cycles, group, owner, cap = best
    in_owner = {}
    s_load = np.zeros(pes, dtype=np.int64)
    for k in layer.site_order:
        fo = np.diff(layer.sites[k].indptr)
        in_owner[k] = _lpt(fo, pes, max(1, len(fo)))
        s_load += np.bincount(in_owner[k], weights=fo, minlength=pes).astype(np.int64)
    synapse_cycles = int(s_load.max()) + layer.size
    mode = "synapse" if synapse_cycles < neuron_cycles and pes > 1 else "neuron"
    return _Plan(mode, group, owner, cap, in_owner, {"neuron": neuron_cycles, "synapse": synapse_cycles})


def issue_slots(ir: IR, pes: int, *, max_issue: int = 8, slack: float = 1.05) -> int:
    """Events per cycle the scanner needs: the fewest (2..``max_issue``, at most ``pes``) whose
    estimated cycles at full activity, the sum over layers of max(synapses / P, events /
    issue), stay within ``slack`` of the synapse bound.

    A PE takes one synapse a cycle, so P PEs need about P / fan-out events a cycle to stay
    busy: few for wide layers, more for narrow ones (the logits).
    """
    work = []
    for layer in ir.layers:
        events = sum(layer.sites[k].in_size for k in layer.site_order)
        syn = sum(layer.sites[k].nnz for k in layer.site_order)
        work.append((events, syn / pes))
    bound = sum(max(1.0, b) for _, b in work)
    top = max(1, min(max_issue, pes))
    for k in range(min(2, top), top + 1):
        if sum(max(1.0, b, e / k) for e, b in work) <= slack * bound:
            return k
    return top


def _scan_order(layer: Layer) -> tuple[str, ...]:
    """Sites in scan order: a gated layer's gate site first."""
    if layer.gate is None:
        return layer.site_order
    return (layer.gate, layer.gated_site)


def _fix_lut(layer: Layer) -> int:
    """Gated layers: the gate site's fixing values as a bit mask over value indices (else 0)."""
    if layer.gate is None or layer.table is None:
        return 0
    return sum(1 << v for v, fixes in enumerate(gating_values(layer.table, layer.gate)) if fixes)


def compile_schedule(ir: IR, pes: int, *, replicate_budget: int = 8192, max_group: int = 8,
                     min_group: int = 1) -> Schedule:
    """Fold ``ir`` onto ``pes`` processing elements; see the module docstring.

    ``replicate_budget``: extra weight entries (over all PEs) a synapse-partitioned
    layer may spend on holding each input's fan-out on 2, 4, ... PEs, so events
    can go to the least-loaded one (activity-dependent load balance).
    ``max_group``: the most PEs a neuron-partitioned layer may share each neuron over
    (1: one PE per neuron).
    """
    if isinstance(pes, bool) or not isinstance(pes, int):
        raise ApicalError(f"schedule: pes must be an integer, got {pes!r}")
    if pes < 1:
        raise ApicalError(f"schedule: pes must be >= 1, got {pes}")
    lanes = pes
    specs = list(ir.inputs) + [layer.output for layer in ir.layers]
    act_bits = max(t.bits for t in specs)
    value_bits = act_bits + 1
    weight_bits = max(s.weight_bits for layer in ir.layers for s in layer.sites.values())
    acc_bits = max(s.acc_bits for layer in ir.layers for s in layer.sites.values())
    tensor_id = {t.name: i for i, t in enumerate(specs)}

    if isinstance(max_group, bool) or not isinstance(max_group, int) or max_group < 1:
        raise ApicalError(f"schedule: max_group must be an integer >= 1, got {max_group!r}")
    plans = [_plan_layer(layer, pes, max_group=max_group, min_group=min_group) for layer in ir.layers]

    # Stored positions: inputs and synapse-mode layers in element order,
    # neuron-mode layers in (slot, PE) order so finalisation writes whole words.
    positions: list[list[int]] = [list(range(t.size)) for t in ir.inputs]
    slots_of: list[tuple[np.ndarray, np.ndarray, tuple[int, ...], int]] = []
    for layer, plan in zip(ir.layers, plans, strict=True):
        if plan.mode == "neuron":
            owner, g_size = plan.owner, plan.group
            groups = pes // g_size
            slot = np.zeros(layer.size, dtype=np.int64)
            counts = [0] * groups
            for n in range(layer.size):
                slot[n] = counts[owner[n]]
                counts[owner[n]] += 1
            # Slot k of group g is lane (k % G) * (P / G) + g of word k // G: G steps fill a word.
            positions.append([int((slot[n] // g_size) * lanes + (slot[n] % g_size) * groups + owner[n])
                              for n in range(layer.size)])
            slots_of.append((owner, slot, tuple(counts), plan.cap))
        else:
            positions.append(list(range(layer.size)))
            slots_of.append((np.zeros(0), np.arange(layer.size), (), layer.size))
    tensors = []
    base = 0
    for t, pos in zip(specs, positions, strict=True):
        words = max(1, math.ceil((max(pos) + 1) / lanes))
        tensors.append(TensorPlace(t.name, t.size, t.bits, t.signed, base, words, tuple(pos)))
        base += words

    acc_half = max(steps for (_, _, _, steps) in slots_of)
    weights: list[list[tuple[int, int, int]]] = [[] for _ in range(pes)]
    index: list[list[tuple[int, int]]] = [[] for _ in range(pes)]
    bias: list[list[tuple[int, int]]] = [[] for _ in range(pes)]
    per_neuron = any(layer.sites[k].per_neuron for layer in ir.layers for k in layer.site_order)
    rq: list[list[tuple[int, int, int, int]]] = [[] for _ in range(pes)]
    mask: list[int] = []
    segments: list[Segment] = []
    programs: list[LayerProgram] = []
    table: list[int] = []
    max_fanout = 1
    for li, (layer, plan) in enumerate(zip(ir.layers, plans, strict=True)):
        mode, g_size = plan.mode, plan.group
        owner, slot, counts, steps = slots_of[li]
        region = li % 2
        replicas = 1
        if mode == "synapse":
            nnz = sum(layer.sites[k].nnz for k in layer.site_order)
            while replicas * 2 <= pes and pes % (replicas * 2) == 0 and nnz * (replicas * 2 - 1) <= replicate_budget:
                replicas *= 2
        syn_before = [len(w) for w in weights]
        seg_ids = []
        site_progs = tuple(
            SiteProgram(key, 1 if key == "c" else 0, site.requant.shift, site.requant.multiplier,
                        site.activation == "relu", site.bits, site.signed, site.acc_bits,
                        narrow=site.narrow, per_neuron=per_neuron)
            for key, site in ((k, layer.sites[k]) for k in layer.site_order))
        gate_segments = 0
        for key in _scan_order(layer):
            site = layer.sites[key]
            bank = 1 if key == "c" else 0
            offset = 0
            for src in site.sources:
                tid = tensor_id[src]
                tp = tensors[tid]
                seg_ids.append(len(segments))
                segments.append(Segment(li, key, tid, offset, len(mask), replicas > 1))
                elem_at = {p: e for e, p in enumerate(tp.positions)}
                for pos in range(tp.words * lanes):
                    starts = [len(w) for w in weights]
                    e = elem_at.get(pos)
                    if e is not None:
                        i = offset + e
                        lo, hi = int(site.indptr[i]), int(site.indptr[i + 1])
                        if mode == "neuron":
                            # An input's synapses into a group are dealt round-robin over the
                            # group's PEs: every event loads them evenly, whatever the activity.
                            dealt = {}
                            for j in range(lo, hi):
                                tgt = int(site.indices[j])
                                grp = int(owner[tgt])
                                c = dealt.get(grp, i)
                                dealt[grp] = c + 1
                                weights[grp * g_size + c % g_size].append(
                                    (region * acc_half + int(slot[tgt]), bank, int(site.data[j])))
                        else:
                            # The whole fan-out on each of the input's `replicas` PEs; the
                            # scanner sends each event to the least-loaded of them.
                            p0 = int(plan.input_owner[key][i])
                            for r in range(replicas):
                                if replicas == 2:
                                    # A second choice that differs per input links all PEs into
                                    # one balancing pool (fixed pairs would balance pairwise only).
                                    p = (p0 + r * (1 + i % (pes - 1))) % pes
                                else:
                                    p = (p0 + r * (pes // replicas)) % pes
                                for j in range(lo, hi):
                                    weights[p].append(
                                        (region * acc_half + int(site.indices[j]), bank, int(site.data[j])))
                    m = 0
                    for p in range(pes):
                        n = len(weights[p]) - starts[p]
                        index[p].append((starts[p], n))
                        max_fanout = max(max_fanout, n)
                        if n:
                            m |= 1 << p
                    mask.append(m)
                offset += tp.size
            if key == layer.gate:
                gate_segments = len(seg_ids)
        bias_base = len(bias[0])
        at_slot = {(int(owner[n]), int(slot[n])): n for n in range(layer.size)} if mode == "neuron" else {}
        mults = {k: layer.sites[k].neuron_multipliers(layer.size) for k in layer.site_order}
        offs = {k: layer.sites[k].neuron_offsets(layer.size) for k in layer.site_order}
        for k in range(steps):
            for p in range(pes):
                # Neuron mode: lane p finalises group p % (P / G) on the steps k with k % G == p // (P / G).
                if mode == "neuron":
                    n = at_slot.get((p % (pes // g_size), k)) if k % g_size == p // (pes // g_size) else None
                else:
                    n = k
                vals = [0, 0]
                mo = [1, 0, 1, 0]
                if n is not None:
                    for key in layer.site_order:
                        b = 1 if key == "c" else 0
                        site = layer.sites[key]
                        vals[b] = int(site.bias[n])
                        mo[2 * b], mo[2 * b + 1] = int(mults[key][n]), int(offs[key][n])
                bias[p].append((vals[0], vals[1]))
                if per_neuron:
                    rq[p].append((mo[0], mo[1], mo[2], mo[3]))
        table_base = len(table)
        if layer.kind == "two_point":
            assert layer.table is not None
            mask_a = (1 << act_bits) - 1
            table.extend(int(v) & mask_a for v in layer.table.reshape(-1))
        syn = tuple(len(w) - b for w, b in zip(weights, syn_before, strict=True))
        other = "synapse" if mode == "neuron" else "neuron"
        programs.append(
            LayerProgram(
                name=layer.name, kind=layer.kind, mode=mode, size=layer.size, steps=steps,
                region=region, bias_base=bias_base, out_tensor=len(ir.inputs) + li,
                out_bits=layer.out_bits, out_signed=layer.out_signed, sites=site_progs,
                segments=tuple(seg_ids), slots=counts, table_base=table_base, syn_per_pe=syn,
                est_cycles=plan.est[mode], est_cycles_other=plan.est[other], replicas=replicas,
                group=g_size if mode == "neuron" else 1, gate=layer.gate, gate_segments=gate_segments,
                fix_lut=_fix_lut(layer),
            )
        )
    images = tuple(PEImage(tuple(w), tuple(ix), tuple(b), tuple(r))
                   for w, ix, b, r in zip(weights, index, bias, rq, strict=True))
    rq_all = [e for r in rq for e in r]
    rq_mult_bits = max((max(e[0], e[2]).bit_length() for e in rq_all), default=0)
    rq_offset_bits = max((max(abs(e[1]), abs(e[3])).bit_length() + 1 for e in rq_all), default=0)
    return Schedule(
        pes=pes, lanes=lanes, act_bits=act_bits, value_bits=value_bits, weight_bits=weight_bits,
        acc_bits=acc_bits, tensors=tuple(tensors), n_inputs=len(ir.inputs), segments=tuple(segments),
        layers=tuple(programs), images=images, mask=tuple(mask), table=tuple(table), acc_half=acc_half,
        weight_depth=max(1, max(len(w) for w in weights)), index_depth=len(mask),
        bias_depth=len(bias[0]), max_fanout=max_fanout, issue=issue_slots(ir, pes),
        rq_mult_bits=rq_mult_bits, rq_offset_bits=max(2, rq_offset_bits) if rq_mult_bits else 0,
    )
