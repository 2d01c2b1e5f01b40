"""Resource estimate of a design from its schedule: LUT, FF, DSP48E2, block RAM, without yosys.

`estimate_resources(ir, schedule)` predicts what ``synth_xilinx -family xcup``
(`apical.flows.synth`) reports for the generated RTL, in a fraction of a
millisecond, so a design search can price every trial. It reads only the
schedule (`apical.hw.schedule.Schedule`: its `memories()`, widths, P and
issue slots) and the IR's layer kinds:

* DSP48E2 and block RAM are counted per component, from rules derived from
  how yosys maps each memory (block RAM only for registered-read memories
  large enough that its cost model prefers a RAMB18E2/RAMB36E2 over LUT-RAM)
  and which multipliers it packs into DSPs;
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
from apical.sw.ir import IR

__all__ = ["calibration_errors", "calibration_table", "estimate_from_features", "estimate_resources",
           "schedule_features"]


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
        "memories": {name: {"width": m.width, "depths": list(m.depths)} for name, m in mems.items()},
    }


# --------------------------------------------------------------------------- the rules and the model
#
# How the generated RTL's memories reach yosys (`apical.hw.pe`, `finaliser`, `scanner`, `top`):
# the writable ones (activations, accumulators, event queues) are read combinationally, so
# they can only become LUT-RAM; the read-only ones (weights, index, bias, tables, event mask,
# output positions) are ROMs that synth_xilinx's memory_map turns into LUT logic (the
# calibration logs show every one "mapped" to logic, none to RAMB18E2/RAMB36E2). So the
# design uses no block RAM; `estimate_resources` still counts a memory as block RAM when
# the calibration table shows yosys did so for its shape, which it has not.
_ROMS = ("weight", "index", "bias", "table", "event_mask", "requant")
_RAMS = ("activation", "accumulator")


def _lut_features(f: dict[str, Any]) -> list[float]:
    """The regressors of the LUT/FF model (one row per design)."""
    P = f["pes"]
    mems = f["memories"]
    # A ROM of depth D and width W: W LUT6 per 64 words before yosys simplifies constant bits.
    rom_lut6 = sum(m["width"] * sum(math.ceil(d / 64) for d in m["depths"]) for k, m in mems.items() if k in _ROMS)
    # LUT-RAM: 64 words x 1 bit per LUT (a 32-word dual-port pair costs the same).
    ram_luts = sum(m["width"] * sum(math.ceil(d / 64) for d in m["depths"]) for k, m in mems.items() if k in _RAMS)
    return [1.0, float(P), float(P * f["acc_bits"]), float(rom_lut6), float(ram_luts),
            float(P * f["issue"] * f["event_bits"])]


def _dsp(f: dict[str, Any]) -> int:
    """DSP48E2: one multiplier per PE; the finaliser's requantisation multipliers (one per bank,
    in each of the P finalisers) only when some multiplier is not 1."""
    P = f["pes"]
    extra = 2 * P if f.get("mult_max", 1) != 1 or f.get("rq_mult_bits", 0) else 0
    return P + extra


def _bram(f: dict[str, Any]) -> float:
    """RAMB36E2 equivalents: none (see the rules above)."""
    return 0.0


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


def estimate_from_features(f: dict[str, Any], coef: dict[str, list[float]] | None = None) -> dict[str, Any]:
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
    out = []
    for i, r in enumerate(rows):
        rest = rows[:i] + rows[i + 1:]
        e = estimate_from_features(r["features"], _fit(rest) if len(rest) >= 6 else None)
        y = r["yosys"]
        y_lut = y["lut"] + y["lutram_luts"]
        y_bram = y["ramb36e2"] + y["ramb18e2"] / 2
        out.append({
            "name": r["name"], "lut": e["lut"], "yosys_lut": y_lut,
            "lut_err_pct": round(100 * (e["lut"] - y_lut) / y_lut, 2),
            "ff": e["ff"], "yosys_ff": y["ff"], "ff_err_pct": round(100 * (e["ff"] - y["ff"]) / y["ff"], 2),
            "dsp": e["dsp"], "yosys_dsp": y["dsp48e2"], "bram": e["bram"], "yosys_bram": y_bram,
        })
    return out
