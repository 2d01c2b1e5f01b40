"""Hardware activity counters read back from simulation, and their comparison with the golden model.

The RTL top level exposes one 32-bit port ``cnt_<name>`` per counter of
`apical.sw.counts.COUNTERS` plus ``cnt_cycles``, each a total over all layers of
the last finished inference (docs/contracts.md). This module names those ports
and compares what the simulation read (`SimResult`-shaped arrays) with the
golden model, producing `Mismatch` records that name sample, layer, neuron (or
counter), expected and got. It is pure numpy: the cocotb testbench and the
runner both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apical.sw.counts import COUNTER_BITS, COUNTERS

__all__ = [
    "COUNTER_BITS",
    "HW_COUNTERS",
    "Mismatch",
    "compare_results",
    "port_name",
]

HW_COUNTERS: tuple[str, ...] = ("cycles", *COUNTERS)
"""Every counter port of the top level, in a fixed order (``cycles`` has no golden twin)."""

TOTAL_LAYER = "<all layers>"  # counters are totals over layers, so mismatches name this


def port_name(counter: str) -> str:
    """The top-level port carrying ``counter`` (``syn_ops`` -> ``cnt_syn_ops``)."""
    return f"cnt_{counter}"


@dataclass(frozen=True)
class Mismatch:
    """One value where the RTL differs from the golden model.

    ``kind`` is ``"output"`` (``index`` is the neuron of ``layer``), ``"class"``,
    ``"counter"`` (``index`` names the counter, ``layer`` is the total over all
    layers) or ``"beats"`` (the result frame had the wrong length).
    """

    sample: int
    kind: str
    layer: str
    index: int | str
    expected: int
    got: int

    def describe(self) -> str:
        if self.kind == "output":
            where = f"layer {self.layer} neuron {self.index}"
        elif self.kind == "class":
            where = f"class (argmax of layer {self.layer})"
        elif self.kind == "beats":
            where = f"result frame of layer {self.layer}: beats (values + class)"
        else:
            where = f"counter {self.index} ({self.layer})"
        return f"sample {self.sample}: {where}: expected {self.expected}, got {self.got}"

    def as_dict(self) -> dict[str, object]:
        return {
            "sample": self.sample,
            "kind": self.kind,
            "layer": self.layer,
            "index": self.index,
            "expected": self.expected,
            "got": self.got,
        }


def compare_results(
    *,
    layer: str,
    sample_ids: list[int] | np.ndarray,
    expected_outputs: np.ndarray,
    expected_classes: np.ndarray,
    expected_counts: dict[str, np.ndarray],
    outputs: np.ndarray,
    classes: np.ndarray,
    counters: dict[str, np.ndarray],
    limit: int | None = None,
) -> list[Mismatch]:
    """Every mismatch between RTL and golden, sample by sample, in stream order.

    Row ``k`` of each array belongs to sample ``sample_ids[k]``; outputs are
    compared value by value, then the class, then every golden counter (the
    golden per-layer counts already summed over layers). Stops after ``limit``
    mismatches when given.
    """
    found: list[Mismatch] = []
    n = len(sample_ids)
    for k in range(n):
        sid = int(sample_ids[k])
        exp, got = np.asarray(expected_outputs[k]), np.asarray(outputs[k])
        for j in np.flatnonzero(exp != got):
            found.append(Mismatch(sid, "output", layer, int(j), int(exp[j]), int(got[j])))
        if int(expected_classes[k]) != int(classes[k]):
            found.append(Mismatch(sid, "class", layer, "class", int(expected_classes[k]), int(classes[k])))
        for c in COUNTERS:
            e, g = int(expected_counts[c][k]), int(counters[c][k])
            if e != g:
                found.append(Mismatch(sid, "counter", TOTAL_LAYER, c, e, g))
        if limit is not None and len(found) >= limit:
            return found[:limit]
    return found
