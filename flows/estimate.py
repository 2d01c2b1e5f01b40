"""Resource estimate of a design from its schedule: LUT, FF, DSP48E2, block RAM, without yosys.

`estimate_resources(ir, schedule)` predicts what ``synth_xilinx -family xcup``
(`apical.flows.synth`) reports for the generated RTL, in a fraction of a
millisecond, so a design search can price every trial. It reads only the
schedule (`apical.hw.schedule.Schedule`: its `memories()`, widths, P and
issue slots) and the IR's layer kinds:

* DSP48E2 and block RAM are counted per component, from rules derived from
  how yosys maps each memory (block RAM only for registered-read ROMs large
  enough that its cost model prefers a RAMB18E2/RAMB36E2 over LUT logic) and
  which multipliers it packs into DSPs;
* LUT and FF are a linear model in a handful of schedule features whose
  coefficients are fitted (least squares) to yosys runs of small designs.

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
    }


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
# (the 3 is that measured margin, taken as one per mapping).
_ROMS = ("weight", "index", "event_mask", "table")  # registered reads: block RAM candidates
_COMB_ROMS = ("bias", "requant")  # combinational reads: always logic
_LOGIC_COST_ROM = 1 / 64
_BRAM_MARGIN = 3  # measured (see above)
# (cost, address bits, port widths) of each block-RAM mode yosys may choose for a ROM
_BRAM_MODES = (
    ("ramb18e2", 129, 14, (1, 2, 4, 9, 18, 36)),  # HALF: TDP up to 18, SDP up to 36
    ("ramb36e2", 257, 15, (1, 2, 4, 9, 18, 36, 72)),  # FULL: TDP up to 36, SDP up to 72
)


def _bram_choice(width: int, depth: int) -> tuple[str, int, float] | None:
    """(block kind, blocks, cost) of the cheapest block-RAM mapping of a ``depth x width`` ROM."""
    best = None
    for kind, cost, abits, widths in _BRAM_MODES:
        for w in widths:
            # 9, 18, 36, 72: bytes of 8 data + 1 parity bits; the array holds 2**abits data bits
            data_bits = w if w < 9 else w // 9 * 8
            words = (1 << abits) // data_bits
            n = math.ceil(width / w) * math.ceil(depth / words)
            c = n * cost
            if best is None or c < best[2]:
                best = (kind, n, c)
    return best


def rom_in_bram(width: int, depth: int) -> tuple[str, int] | None:
    """The block RAM yosys gives a registered-read ROM of this shape, or None (LUT logic)."""
    choice = _bram_choice(width, depth)
    if choice is None or choice[2] + _BRAM_MARGIN > width * depth * _LOGIC_COST_ROM:
        return None
    return choice[0], choice[1]


def _split(f: dict[str, Any]) -> tuple[float, float]:
    """(RAMB36E2 equivalents, LUT6 of the ROMs left to logic) of a design's memories."""
    bram, rom_lut6 = 0.0, 0.0
    live = f.get("rom_live_bits", {})
    for name, m in f["memories"].items():
        if name not in _ROMS and name not in _COMB_ROMS:
            continue
        widths = live.get(name, [m["width"]] * len(m["depths"]))
        for d, w in zip(m["depths"], widths, strict=True):
            choice = rom_in_bram(w, d) if name in _ROMS and w else None
            if choice is None:
                rom_lut6 += w * math.ceil(d / 64)
            else:
                bram += choice[1] / 2 if choice[0] == "ramb18e2" else choice[1]
    return bram, rom_lut6


def _lut_features(f: dict[str, Any]) -> list[float]:
    """The regressors of the LUT/FF model (one row per design): a constant, P, the LUT6 of the
    ROMs left to logic (``live width x ceil(depth / 64)`` each) and the event-queue bits
    (P x issue slots x event width). Of the subsets tried on the calibration table, this one
    had the smallest leave-one-out error; accumulator width and LUT-RAM words added nothing
    the eight designs could pin down."""
    _, rom_lut6 = _split(f)
    P = f["pes"]
    return [1.0, float(P), float(rom_lut6), float(P * f["issue"] * f["event_bits"])]


def _dsp(f: dict[str, Any]) -> int:
    """DSP48E2: one multiplier per PE; the finaliser's requantisation multipliers (one per bank,
    in each of the P finalisers) only when some multiplier is not 1."""
    P = f["pes"]
    extra = 2 * P if f.get("mult_max", 1) != 1 or f.get("rq_mult_bits", 0) else 0
    return P + extra


def _bram(f: dict[str, Any]) -> float:
    """RAMB36E2 equivalents (a RAMB18E2 is a half)."""
    return _split(f)[0]


_FIT: dict[str, Any] = {}


def calibration_table() -> list[dict[str, Any]]:
    """The rows of the shipped calibration table (``bench/calibrate_estimate.py``)."""
    text = (resources.files("apical.flows") / "data" / "estimate_calibration.json").read_text()
    return list(json.loads(text)["designs"])


def _fit(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    import numpy as np

    X = np.array([_lut_features(r["features"]) for r in rows])
    coef = {}
    for key, target in (("lut", lambda y: y["lut"] + y["lutram_luts"]), ("ff", lambda y: y["ff"])):
        y = np.array([float(target(r["yosys"])) for r in rows])
        # relative least squares: every design's error counts alike, small or large
        w = 1.0 / np.maximum(y, 1.0)
        c, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
        coef[key] = [float(v) for v in c]
    return coef


def _coefficients() -> dict[str, list[float]]:
    if "coef" not in _FIT:
        _FIT["coef"] = _fit(calibration_table())
    return _FIT["coef"]


def estimate_from_features(
    f: dict[str, Any], coef: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    coef = coef or _coefficients()
    x = _lut_features(f)
    lut = sum(a * b for a, b in zip(coef["lut"], x, strict=True))
    ff = sum(a * b for a, b in zip(coef["ff"], x, strict=True))
    return {"lut": max(0, round(lut)), "ff": max(0, round(ff)), "dsp": _dsp(f), "bram": _bram(f)}


def estimate_resources(ir: IR, sched: Schedule) -> dict[str, Any]:
    """LUT (logic + LUT-RAM), FF, DSP48E2 and block RAM (RAMB36E2 equivalents) of the generated RTL."""
    return estimate_from_features(schedule_features(ir, sched))


def calibration_errors() -> list[dict[str, Any]]:
    """Leave-one-out error of the model on its calibration table (each design predicted by a fit without it)."""
    rows = calibration_table()
    n_features = len(_lut_features(rows[0]["features"]))
    if len(rows) <= n_features + 1:
        raise ApicalError(
            f"estimate: {len(rows)} calibration designs cannot test a {n_features}-feature model"
        )
    out = []
    for i, r in enumerate(rows):
        e = estimate_from_features(r["features"], _fit(rows[:i] + rows[i + 1 :]))
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
