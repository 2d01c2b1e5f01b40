"""Faults in the hardware: upsets in the stored weight words, and the fault hooks of the generated design.

The weight memory of PE ``p`` holds one word per synapse in the layout of
`apical.hw.layouts.weight_layout` (accumulator address, bank, weight; plus an
even-parity bit on top with the parity mitigation). `WeightWords` decodes every
word of a schedule back to the synapse it serves (layer, site, input). An
upset (`draw_seu`: independent bit flips at a per-bit rate) changes the word,
and `seu_effects` says exactly what the hardware then computes, as the
`apical.sw.faults.LayerFaults` the golden model applies:

* a flip in the weight field changes the weight;
* a flip in the bank field sends the synapse to the other accumulator bank of
  its slot (R <-> C of a two-point unit; for a dense layer bank 1 is never
  finalised, so the synapse is lost);
* a flip in the address field redirects it to another accumulator of the same
  PE: another unit of the layer, or a slot no unit uses (lost). An address
  outside the layer's accumulator region would write into the region of the
  layer being finalised or the next one, with an effect that depends on timing;
  the fault-injection build therefore has a region guard (the PE drops an update
  whose address leaves the region of the layer its weight address belongs to),
  and such a synapse is lost;
* with parity, a word with an odd number of flipped bits is detected and its
  synapse skipped (product forced to 0); an even number goes undetected.

Replicated fan-outs (`compile_schedule`'s ``replicate_budget``) send each event
to one of several PEs chosen by load at run time, so which copy of a flipped
word is read depends on timing: fault campaigns use the schedule compiled
without replication (`fault_schedule`).

`HardwareFaults` carries a draw into `apical.hw.top.ApicalTop` (weight memory
contents, parity check, region guard, per-unit output masks and lost sites for
the finalisers); `fault_verilog` generates that design. With ``faults=None``
none of this logic exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apical.hw.layouts import weight_layout
from apical.hw.schedule import Schedule, compile_schedule
from apical.sw.errors import ApicalError
from apical.sw.faults import LayerFaults
from apical.sw.ir import IR

__all__ = [
    "FinaliserFaults",
    "HardwareFaults",
    "PEFaults",
    "WeightWords",
    "draw_seu",
    "fault_schedule",
    "fault_verilog",
    "hardware_faults",
    "parity_faults",
    "seu_effects",
]


def fault_schedule(ir: IR, pes: int) -> Schedule:
    """The schedule fault campaigns use: no replicated fan-outs (see the module docstring), and one
    PE per neuron (``max_group=1``): a neuron's accumulator then lives in one PE at its slot, so a
    redirected address names exactly one other unit and the finaliser lane of neuron ``n`` is the
    lane of its stored position."""
    return compile_schedule(ir, pes, replicate_budget=0, max_group=1)


@dataclass(frozen=True, eq=False)
class WeightWords:
    """Every stored weight word of a schedule and the synapse it serves, per PE (arrays of equal length)."""

    schedule: Schedule
    parity: bool
    acc_w: int  # address field width
    width: int  # word width (parity bit included)
    words: tuple[np.ndarray, ...]  # int64 raw words as stored (parity bit included)
    layer: tuple[np.ndarray, ...]  # layer index of each word
    site: tuple[np.ndarray, ...]  # index into the layer's site_order
    src: tuple[np.ndarray, ...]  # input index within the site's concatenated input

    @classmethod
    def of(cls, ir: IR, schedule: Schedule, *, parity: bool = False) -> WeightWords:
        s = schedule
        if any(lp.replicas > 1 for lp in s.layers):
            raise ApicalError("faults: replicated fan-outs read a run-time choice of copy; use fault_schedule()")
        lay = weight_layout(s.acc_depth, s.weight_bits)
        acc_w = lay.size - 1 - s.weight_bits
        width = lay.size + (1 if parity else 0)
        P = s.pes
        meta = [np.full((3, len(im.weights)), -1, dtype=np.int64) for im in s.images]
        for g in s.segments:
            tp = s.tensors[g.tensor]
            site_i = ir.layers[g.layer].site_order.index(g.site)
            elem_at = {p: e for e, p in enumerate(tp.positions)}
            for pos in range(tp.words * s.lanes):
                e = elem_at.get(pos)
                if e is None:
                    continue
                for p in range(P):
                    start, count = s.images[p].index[g.index_base + pos]
                    meta[p][:, start:start + count] = np.array([[g.layer], [site_i], [g.in_offset + e]])
        words = []
        wmask = (1 << s.weight_bits) - 1
        for p, im in enumerate(s.images):
            if (meta[p] < 0).any():
                raise ApicalError(f"faults: PE {p}: a weight word no index entry reaches")
            w = np.array([a | (b << acc_w) | ((v & wmask) << (acc_w + 1)) for a, b, v in im.weights], dtype=np.int64)
            if parity and w.size:
                w |= _popcount(w) % 2 << (width - 1)
            words.append(w)
        return cls(s, parity, acc_w, width, tuple(words), tuple(m[0] for m in meta),
                   tuple(m[1] for m in meta), tuple(m[2] for m in meta))

    @property
    def bits(self) -> int:
        return self.width * sum(len(w) for w in self.words)


def _popcount(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.uint64)
    c = np.zeros(a.shape, dtype=np.int64)
    while a.any():
        c += (a & np.uint64(1)).astype(np.int64)
        a >>= np.uint64(1)
    return c


def draw_seu(ww: WeightWords, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per PE, the XOR mask of each stored word: every bit flips independently with probability ``rate``."""
    if not 0.0 <= float(rate) <= 1.0:
        raise ApicalError(f"faults: SEU rate must be in [0, 1], got {rate}")
    out = []
    for w in ww.words:
        n_bits = len(w) * ww.width
        k = int(rng.binomial(n_bits, float(rate))) if n_bits else 0
        flips = np.zeros(len(w), dtype=np.int64)
        if k:
            at = rng.choice(n_bits, size=k, replace=False)
            np.bitwise_or.at(flips, at // ww.width, np.int64(1) << (at % ww.width).astype(np.int64))
        out.append(flips)
    return tuple(out)


def seu_effects(ir: IR, ww: WeightWords, flips: tuple[np.ndarray, ...]) -> tuple[dict[str, LayerFaults], dict]:
    """What the hardware computes with ``flips`` applied: `LayerFaults` of the touched layers, and tallies."""
    s = ww.schedule
    P, h = s.pes, s.acc_half
    wb = s.weight_bits
    tally = {"bits_flipped": 0, "words_hit": 0, "detected": 0, "weight_changed": 0, "redirected": 0, "lost": 0}
    touched = sorted({int(li) for p in range(P) for li in ww.layer[p][flips[p] != 0]})
    out: dict[str, LayerFaults] = {}
    for p in range(P):
        tally["bits_flipped"] += int(_popcount(flips[p]).sum())
        tally["words_hit"] += int((flips[p] != 0).sum())
    for li in touched:
        layer, lp = ir.layers[li], s.layers[li]
        out_pos = {pos: n for n, pos in enumerate(s.tensors[lp.out_tensor].positions)}
        mats: dict[tuple[str, int, int], np.ndarray] = {}
        for p in range(P):
            sel = ww.layer[p] == li
            if not sel.any():
                continue
            f = flips[p][sel]
            word = ww.words[p][sel] ^ f
            site_i, src = ww.site[p][sel], ww.src[p][sel]
            acc = word & ((1 << ww.acc_w) - 1)
            bank = (word >> ww.acc_w) & 1
            w = (word >> (ww.acc_w + 1)) & ((1 << wb) - 1)
            w = np.where(w >= (1 << (wb - 1)), w - (1 << wb), w)
            ok = np.ones(len(word), dtype=bool)
            if ww.parity:
                detected = (_popcount(word) % 2) == 1
                tally["detected"] += int(detected.sum())
                ok &= ~detected
            k = acc - lp.region * h
            ok &= (k >= 0) & (k < h)  # the region guard
            if lp.mode == "neuron":
                tgt = np.array([out_pos.get(int(kk) * P + p, -1) for kk in k], dtype=np.int64)
            else:
                tgt = np.where(k < layer.size, k, -1)
            ok &= tgt >= 0
            if layer.kind == "dense":
                ok &= bank == 0
            hit = f != 0
            orig = ww.words[p][sel]
            same_place = (acc == (orig & ((1 << ww.acc_w) - 1))) & (bank == ((orig >> ww.acc_w) & 1))
            tally["lost"] += int((hit & ~ok).sum())
            tally["redirected"] += int((hit & ok & ~same_place).sum())
            tally["weight_changed"] += int((hit & ok & same_place).sum())
            g = p if lp.mode == "synapse" else 0
            for si, key in enumerate(layer.site_order):
                for b in (0, 1):
                    m = ok & (site_i == si) & (bank == b)
                    if not m.any():
                        continue
                    mat = mats.setdefault((key, b, g), np.zeros((layer.size, layer.sites[key].in_size), np.int64))
                    np.add.at(mat, (tgt[m], src[m]), w[m])
        out[layer.name] = LayerFaults(weights=mats, acc_bits=s.acc_bits)
    return out, tally


# --------------------------------------------------------------------------- the design's fault hooks


@dataclass(frozen=True)
class PEFaults:
    """One PE's fault build: its weight memory words (raw, ``width`` bits), parity check, region guard."""

    words: tuple[int, ...]
    width: int
    parity: bool
    guard: bool = True


@dataclass(frozen=True)
class FinaliserFaults:
    """One finaliser lane's faults: ``(layer index, k) -> (kill r, kill c, and mask, or mask)``."""

    entries: dict[tuple[int, int], tuple[bool, bool, int, int]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class HardwareFaults:
    pes: tuple[PEFaults, ...]
    finalisers: tuple[FinaliserFaults, ...]


def hardware_faults(ir: IR, ww: WeightWords, flips: tuple[np.ndarray, ...] | None,
                    layer_faults: dict[str, LayerFaults]) -> HardwareFaults:
    """The design hooks of a draw: flipped weight words and the finalisers' masks of ``layer_faults``."""
    s = ww.schedule
    P = s.pes
    pes = []
    for p in range(P):
        w = ww.words[p] ^ flips[p] if flips is not None else ww.words[p]
        pes.append(PEFaults(tuple(int(v) for v in w), ww.width, ww.parity))
    entries: list[dict[tuple[int, int], tuple[bool, bool, int, int]]] = [{} for _ in range(P)]
    for li, (layer, lp) in enumerate(zip(ir.layers, s.layers, strict=True)):
        lf = layer_faults.get(layer.name)
        if lf is None:
            continue
        full = (1 << layer.out_bits) - 1
        kr = lf.kill.get("r", np.zeros(layer.size, bool))
        kc = lf.kill.get("c", np.zeros(layer.size, bool))
        am = lf.and_mask if lf.and_mask is not None else np.full(layer.size, full, np.int64)
        om = lf.or_mask if lf.or_mask is not None else np.zeros(layer.size, np.int64)
        for n in range(layer.size):
            e = (bool(kr[n]), bool(kc[n]), int(am[n]) & full, int(om[n]) & full)
            if e == (False, False, full, 0):
                continue
            if lp.mode == "neuron":
                pos = s.tensors[lp.out_tensor].positions[n]
                entries[pos % P][(li, pos // P)] = e
            else:
                for p in range(P):
                    entries[p][(li, n)] = e
    return HardwareFaults(tuple(pes), tuple(FinaliserFaults(e) for e in entries))


def parity_faults(ww: WeightWords) -> HardwareFaults:
    """The parity mitigation alone (no upsets, no guard, no masks): the design whose cost is reported."""
    return HardwareFaults(tuple(PEFaults(tuple(int(v) for v in w), ww.width, True, guard=False) for w in ww.words),
                          tuple(FinaliserFaults() for _ in ww.words))


def fault_verilog(ir: IR, schedule: Schedule, faults: HardwareFaults, *, queue_depth: int = 16) -> str:
    """The Verilog (module ``apical_top``) of the design with ``faults`` built in."""
    from amaranth.back import verilog

    from apical.hw.generate import TOP_NAME
    from apical.hw.top import ApicalTop

    top = ApicalTop(ir, schedule.pes, queue_depth=queue_depth, schedule=schedule, faults=faults)
    return verilog.convert(top, name=TOP_NAME, emit_src=False)
