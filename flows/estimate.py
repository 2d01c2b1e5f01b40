"""Resource estimate of a design from its schedule: LUT, FF, DSP48E2, block RAM, without yosys.

`estimate_resources(ir, schedule)` predicts what ``synth_xilinx -family xcup``
(`apical.flows.synth`) reports for the generated RTL, in tens of
milliseconds (yosys takes minutes), so a design search can price every trial.
It reads only the schedule (`apical.hw.schedule.Schedule`: its `memories()`,
ROM contents, widths, P, issue slots and neuron groups) and the IR's layer
kinds:

* DSP48E2 and block RAM are counted per component, from rules derived from
  how yosys maps each memory (block RAM only for registered-read ROMs large
  enough that its cost model prefers a RAMB18E2/RAMB36E2 over LUT logic) and
  which multipliers it packs into DSPs;
* LUT and FF are summed over the components yosys keeps as modules (each PE
  with its event queues, each finaliser, the rest), each component a linear
  model in a few facts of its own, the ROMs left to logic priced by their
  contents (`rom_nodes`); the coefficients are fitted (least squares) to the
  per-module counts of yosys runs of small designs.

The calibration table (``data/estimate_calibration.json``) is written by
``bench/calibrate_estimate.py``; `calibration_errors()` reports the model's
error on it. A design verified by yosys (`apical explore --verify-top`) is
compared with its estimate, so the error on new designs is measured too.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from apical.hw.schedule import Schedule
from apical.sw.errors import ApicalError
from apical.sw.ir import IR

__all__ = [
    "calibration_errors",
    "calibration_table",
    "estimate_from_features",
    "estimate_resources",
    "rom_in_bram",
    "schedule_features",
]


def schedule_features(ir: IR, sched: Schedule) -> dict[str, Any]:
    """The schedule facts the estimate reads (and the calibration table records), as plain data."""
    mems = sched.memories()
    return {
        "pes": sched.pes,
        "lanes": sched.lanes,
        "issue": sched.issue,
        "act_bits": sched.act_bits,
        "value_bits": sched.value_bits,
        "weight_bits": sched.weight_bits,
        "acc_bits": sched.acc_bits,
        "event_bits": sched.event_bits,
        "rq_mult_bits": sched.rq_mult_bits,
        "rq_offset_bits": sched.rq_offset_bits,
        # the largest requantisation multiplier: 1 (power-of-two scales) leaves the finaliser's multiply out
        "mult_max": max((sp.multiplier for lp in sched.layers for sp in lp.sites), default=1),
        "layers": len(sched.layers),
        "layer_kinds": [la.kind for la in ir.layers],
        "segments": len(sched.segments),
        "tensors": len(sched.tensors),
        "act_words": sched.act_words,
        "synapses": int(sum(sched.synapses_per_pe)),
        "memories": {
            name: {"width": m.width, "depths": list(m.depths)} for name, m in mems.items()
        },
        # bits that vary between the words of each registered-read ROM instance: yosys drops
        # the constant columns of a ROM before choosing between block RAM and logic
        "rom_live_bits": _rom_live_bits(sched),
        "components": _component_features(sched),
    }


def _pack(words: list[tuple[int, ...]], widths: tuple[int, ...]) -> list[int]:
    """ROM words as the RTL stores them: the fields of a layout, first field at bit 0."""
    out = []
    for v in words:
        word, shift = 0, 0
        for x, w in zip(v, widths, strict=True):
            word |= (x & ((1 << w) - 1)) << shift
            shift += w
        out.append(word)
    return out


def rom_nodes(words: list[int], width: int) -> int:
    """Content-aware LUT6 proxy of a ROM left to logic: the distinct non-constant sub-functions
    of its bit columns over aligned blocks of 64 words and over every larger power-of-two block.

    yosys' memory_map turns the ROM into a tree of multiplexers over the address bits with
    constant leaves; ABC's structural hashing merges identical subtrees (within and across
    bit columns) and folds constant ones, and a block of 64 words is a function of six
    address bits, one LUT6. So what is left is a LUT6 per distinct non-constant 64-word block
    and a multiplexer per distinct node above: constant columns, zero weight runs and repeated
    blocks cost nothing, unlike ``width x ceil(depth / 64)``."""
    depth = len(words)
    if depth <= 1 or width == 0:
        return 0
    abits = (depth - 1).bit_length()
    cols = []
    for b in range(width):
        col = 0
        for i, w in enumerate(words):
            col |= ((w >> b) & 1) << i
        cols.append(col)
    base = min(6, abits)
    nodes = 0
    for k in range(base, abits + 1):
        size, half = 1 << k, 1 << (k - 1)
        seen: set[tuple[int, int]] = set()
        for col in cols:
            for start in range(0, depth, size):
                n = min(size, depth - start)
                valid = (1 << n) - 1
                block = (col >> start) & valid
                if not block or block == valid:
                    continue  # constant: no logic
                if k > base and (n <= half or block & ((1 << half) - 1) == block >> half):
                    continue  # both halves alike (or no upper half): the node is its child
                seen.add((block, n))
        nodes += len(seen)
    return nodes


def _live_bits(words: list[tuple[int, ...]], widths: tuple[int, ...]) -> int:
    """Bit columns not constant over ``words`` (tuples of field values, two's complement per field)."""
    if len(words) <= 1:
        return 0
    live = 0
    for i, w in enumerate(widths):
        mask = (1 << w) - 1
        vals = [v[i] & mask for v in words]
        all_or = all_and = vals[0]
        for v in vals[1:]:
            all_or |= v
            all_and &= v
        live += bin(all_or ^ all_and).count("1")
    return live


def _rom_live_bits(sched: Schedule) -> dict[str, list[int]]:
    from apical.hw.layouts import index_layout, weight_layout

    wl = weight_layout(sched.acc_depth, sched.weight_bits)
    il = index_layout(sched.weight_depth, sched.max_fanout)
    w_widths = tuple(f.width for _, f in wl)
    i_widths = tuple(f.width for _, f in il)
    out = {
        "weight": [_live_bits(list(im.weights) or [(0, 0, 0)], w_widths) for im in sched.images],
        "index": [_live_bits(list(im.index), i_widths) for im in sched.images],
        "event_mask": [_live_bits([(m,) for m in sched.mask], (sched.pes,))],
    }
    if sched.table:
        out["table"] = [_live_bits([(t,) for t in sched.table], (sched.act_bits,))] * sched.pes
    return out


def _logic_rom_nodes(words: list[int], width: int) -> int:
    """`rom_nodes` of a registered-read ROM that yosys leaves to logic; 0 when it takes block RAM."""
    live = _live_bits([(w,) for w in words], (width,)) if len(words) > 1 else 0
    return 0 if rom_in_bram(live, len(words)) is not None else rom_nodes(words, width)


def _component_features(sched: Schedule) -> dict[str, Any]:
    """Per-instance facts of the components yosys keeps as modules (hierarchy is kept): each
    PE with its event queues, each finaliser with its requantisers, and the rest (top glue,
    scanner, output stage, counter bank) as one."""
    from apical.hw.finalise import reduction_register_bits
    from apical.hw.layouts import bias_layout, index_layout, weight_layout

    w_widths = tuple(f.width for _, f in weight_layout(sched.acc_depth, sched.weight_bits))
    i_widths = tuple(f.width for _, f in index_layout(sched.weight_depth, sched.max_fanout))
    b_widths = tuple(f.width for _, f in bias_layout(sched.acc_bits))
    table = _logic_rom_nodes(list(sched.table), sched.act_bits) if sched.table else 0
    sites = sum(len(lp.sites) for lp in sched.layers)
    pe, fin = [], []
    for im in sched.images:
        weights = _pack(list(im.weights) or [(0, 0, 0)], w_widths)
        rom = _logic_rom_nodes(weights, sum(w_widths)) + _logic_rom_nodes(
            _pack(list(im.index), i_widths), sum(i_widths)
        )
        pe.append({"acc_depth": sched.acc_depth, "rom": rom})
        bias = _pack(list(im.bias) or [(0, 0)], b_widths)
        fin.append({"table": table, "bias": rom_nodes(bias, sum(b_widths)), "sites": sites})
    groups = {lp.group for lp in sched.layers if lp.mode == "neuron"} or {1}
    rest = {
        "pes": sched.pes,
        "mask": _logic_rom_nodes(list(sched.mask), sched.pes),
        # neuron layers shared by groups of G PEs: the top sums each group's partial
        # accumulators (P x max G: the widest adder trees' inputs)
        "group_inputs": sched.pes * max(groups),
        # the registers of the pipelined reduction over the PEs (`apical.hw.finalise`)
        "reduce_regs": reduction_register_bits(sched),
    }
    return {"pe": pe, "fin": fin, "rest": rest}


# --------------------------------------------------------------------------- the rules and the model
#
# How the generated RTL's memories reach yosys (`apical.hw.pe`, `finaliser`, `scanner`, `top`):
# the writable ones (activations, accumulators, event queues) are read combinationally, so
# they can only become LUT-RAM. The read-only ones with a registered read (weights, index,
# event mask, tables) are ROMs that yosys' memory_libmap either puts in block RAM or leaves
# to memory_map (LUT logic), whichever its cost model calls cheaper: a ROM in logic costs
# ``bits / 64`` (one LUT6 per 64 bits), a block-RAM mapping ``blocks x cost`` with the
# costs and shapes of yosys' UltraScale+ library (techlibs/xilinx/brams_xc4v.txt: RAMB18E2
# 129, RAMB36E2 257; 1/2/4/9/18 bits wide in true dual-port mode, up to 36/72 in simple
# dual-port mode). Standalone random ROMs probed with this yosys (synth_xilinx on one
# registered-read ROM: 600, 855, 917, 918, 925, 933 x 9 bits stay logic; 940, 970, 1000,
# 1024, 1025, 1242 x 9, 485 x 18, 300 x 30 and 256 x 33 take one RAMB18E2) put the
# boundary between 8397 and 8448 bits: block RAM wins once ``bits / 64 >= cost + 3``
# (the 3 is that measured margin, taken as one per mapping). 1042, 1100 and 1276 x 11
# also take one RAMB18E2 (a slice of the word through each port of the block), and
# 1042 x 17, 1600 x 12, 1900 x 10 one RAMB36E2.
_ROMS = ("weight", "index", "event_mask", "table")  # registered reads: block RAM candidates
_LOGIC_COST_ROM = 1 / 64
_BRAM_MARGIN = 3  # measured (see above)
# (kind, cost, address bits, port widths, true-dual-port widths) of each block-RAM mode
# yosys may choose for a ROM
_BRAM_MODES = (
    ("ramb18e2", 129, 14, (1, 2, 4, 9, 18, 36), (1, 2, 4, 9, 18)),  # HALF: SDP up to 36
    ("ramb36e2", 257, 15, (1, 2, 4, 9, 18, 36, 72), (1, 2, 4, 9, 18, 36)),  # FULL: SDP up to 72
)


def _data_bits(w: int) -> int:
    """Data bits of a ``w``-bit port: 9, 18, 36, 72 are bytes of 8 data + 1 parity bits."""
    return w if w < 9 else w // 9 * 8


def _bram_choice(width: int, depth: int) -> tuple[str, int, float] | None:
    """(block kind, blocks, cost) of the cheapest block-RAM mapping of a ``depth x width`` ROM.

    Besides one port of each width (blocks side by side and stacked), a ROM may take both
    ports of one true-dual-port block, each reading a slice of the word at the same address
    (a 1042 x 11 ROM: 9 bits through one port, 2 through the other, in one RAMB18E2), when
    both slices fit the block's data bits side by side (parity bits only to the 9-multiple
    port)."""
    best = None
    for kind, cost, abits, widths, tdp in _BRAM_MODES:
        cap = 1 << abits  # data bits of the array
        for w in widths:
            words = cap // _data_bits(w)
            n = math.ceil(width / w) * math.ceil(depth / words)
            if best is None or n * cost < best[2]:
                best = (kind, n, n * cost)
        for wa in tdp:
            for wb in tdp:
                if wb > wa or wa + wb < width or depth > cap // _data_bits(wa):
                    continue
                if depth * (_data_bits(wa) + _data_bits(wb)) <= cap and (
                    best is None or cost < best[2]
                ):
                    best = (kind, 1, cost)
    return best


def rom_in_bram(width: int, depth: int) -> tuple[str, int] | None:
    """The block RAM yosys gives a registered-read ROM of this shape, or None (LUT logic)."""
    choice = _bram_choice(width, depth)
    if choice is None or choice[2] + _BRAM_MARGIN > width * depth * _LOGIC_COST_ROM:
        return None
    return choice[0], choice[1]


# The LUT/FF model, per component: yosys keeps the hierarchy, so the calibration runs record
# each module's counts, and each component is fitted (least squares) on its own instances
# from its own regressors; a design's estimate is the sum over its instances.
_REGRESSORS: dict[str, tuple[str, ...]] = {
    # a PE: the valid bits and their decoders grow with the accumulator depth; the weight and
    # index ROMs left to logic cost what their contents need (`rom_nodes`)
    "pe": ("acc_depth", "rom"),
    # a finaliser: its modulation table (when in logic), its bias ROM, one requantiser per site
    "fin": ("table", "bias", "sites"),
    # the top's glue (group adder trees and their registers, activation memory), scanner
    # (event-mask ROM), output, counters
    "rest": ("pes", "mask", "group_inputs", "reduce_regs"),
}


def _instances(f: dict[str, Any], kind: str) -> list[list[float]]:
    """Regressor rows (a constant first) of the instances of component ``kind`` in a design."""
    comp = f["components"][kind]
    insts = comp if isinstance(comp, list) else [comp]
    return [[1.0, *(float(i[k]) for k in _REGRESSORS[kind])] for i in insts]


def _module_kind(name: str) -> tuple[str, int]:
    """(component, instance) of a yosys module: ``apical_top.pe3.queue0`` is PE 3's."""
    parts = name.split(".")
    if len(parts) > 1:
        for kind, prefix in (("pe", "pe"), ("fin", "fin")):
            tail = parts[1][len(prefix) :]
            if parts[1].startswith(prefix) and tail.isdigit():
                return kind, int(tail)
    return "rest", 0


def _module_targets(modules: dict[str, dict[str, int]], key: str) -> dict[str, dict[int, float]]:
    """Per component and instance, the yosys count ``key`` ("lut": logic + LUT-RAM, or "ff")."""
    out: dict[str, dict[int, float]] = {"pe": {}, "fin": {}, "rest": {}}
    for name, c in modules.items():
        kind, i = _module_kind(name)
        v = c["lut"] + c["lutram_luts"] if key == "lut" else c[key]
        out[kind][i] = out[kind].get(i, 0.0) + v
    return out


def _dsp(f: dict[str, Any]) -> int:
    """DSP48E2: one multiplier per PE; the finaliser's requantisation multipliers (one per bank,
    in each of the P finalisers) only when some multiplier is not 1."""
    P = f["pes"]
    extra = 2 * P if f.get("mult_max", 1) != 1 or f.get("rq_mult_bits", 0) else 0
    return P + extra


def _bram(f: dict[str, Any]) -> float:
    """RAMB36E2 equivalents (a RAMB18E2 is a half) of the registered-read ROMs yosys puts in block RAM."""
    bram = 0.0
    live = f.get("rom_live_bits", {})
    for name in _ROMS:
        m = f["memories"].get(name)
        if m is None:
            continue
        for d, w in zip(m["depths"], live.get(name, [m["width"]] * len(m["depths"])), strict=True):
            choice = rom_in_bram(w, d) if w else None
            if choice is not None:
                bram += choice[1] / 2 if choice[0] == "ramb18e2" else choice[1]
    return bram


_FIT: dict[str, Any] = {}


def calibration_table() -> list[dict[str, Any]]:
    """The rows of the shipped calibration table (``bench/calibrate_estimate.py``)."""
    text = (resources.files("apical.flows") / "data" / "estimate_calibration.json").read_text()
    return list(json.loads(text)["designs"])


Coefficients = dict[str, dict[str, list[float]]]  # {"lut" | "ff": {component: coefficients}}


def _fit(rows: list[dict[str, Any]]) -> Coefficients:
    """Per component and count, relative least squares over every instance of the rows that
    recorded per-module counts (each instance's error counts alike, small or large)."""
    import numpy as np

    rows = [r for r in rows if r.get("modules")]
    coef: Coefficients = {}
    for key in ("lut", "ff"):
        coef[key] = {}
        for kind in _REGRESSORS:
            X, y = [], []
            for r in rows:
                target = _module_targets(r["modules"], key)[kind]
                for i, x in enumerate(_instances(r["features"], kind)):
                    X.append(x)
                    y.append(target.get(i, 0.0))
            A, b = np.array(X), np.array(y)
            w = 1.0 / np.maximum(b, 1.0)
            c, *_ = np.linalg.lstsq(A * w[:, None], b * w, rcond=None)
            coef[key][kind] = [float(v) for v in c]
    return coef


def _coefficients() -> Coefficients:
    if "coef" not in _FIT:
        _FIT["coef"] = _fit(calibration_table())
    return _FIT["coef"]


def estimate_from_features(f: dict[str, Any], coef: Coefficients | None = None) -> dict[str, Any]:
    coef = coef or _coefficients()
    out: dict[str, Any] = {}
    for key in ("lut", "ff"):
        total = 0.0
        for kind in _REGRESSORS:
            c = coef[key][kind]
            total += sum(sum(a * b for a, b in zip(c, x, strict=True)) for x in _instances(f, kind))
        out[key] = max(0, round(total))
    return {**out, "dsp": _dsp(f), "bram": _bram(f)}


def estimate_resources(ir: IR, sched: Schedule) -> dict[str, Any]:
    """LUT (logic + LUT-RAM), FF, DSP48E2 and block RAM (RAMB36E2 equivalents) of the generated RTL."""
    return estimate_from_features(schedule_features(ir, sched))


def calibration_errors(rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Leave-one-out error of the model on its calibration table (each design predicted by a
    fit without it)."""
    rows = calibration_table() if rows is None else rows
    fitted = [r for r in rows if r.get("modules")]
    n_coef = max(len(v) + 1 for v in _REGRESSORS.values())
    if len(fitted) <= n_coef:
        raise ApicalError(
            f"estimate: {len(fitted)} calibration designs with per-module counts cannot test "
            f"a model of {n_coef} coefficients per component"
        )
    out = []
    for r in rows:
        e = estimate_from_features(r["features"], _fit([o for o in rows if o is not r]))
        y = r["yosys"]
        y_lut = y["lut"] + y["lutram_luts"]
        y_bram = y["ramb36e2"] + y["ramb18e2"] / 2
        out.append(
            {
                "name": r["name"],
                "lut": e["lut"],
                "yosys_lut": y_lut,
                "lut_err_pct": round(100 * (e["lut"] - y_lut) / y_lut, 2),
                "ff": e["ff"],
                "yosys_ff": y["ff"],
                "ff_err_pct": round(100 * (e["ff"] - y["ff"]) / y["ff"], 2),
                "dsp": e["dsp"],
                "yosys_dsp": y["dsp48e2"],
                "bram": e["bram"],
                "yosys_bram": y_bram,
            }
        )
    return out
