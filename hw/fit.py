"""Fit check: does an IR fit the datapath `ApicalTop` implements, before any Verilog is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.utils import ceil_log2

from apical.sw.errors import ApicalError
from apical.sw.ir import IR

if TYPE_CHECKING:
    from apical.hw.schedule import Schedule

__all__ = [
    "DSP_A_BITS",
    "DSP_B_BITS",
    "MAX_ACC_BITS",
    "MAX_TABLE_BITS",
    "check_datapath",
    "check_fit",
    "check_weight_depth",
]

DSP_A_BITS = 27  # DSP48E2 pre-adder/multiplier A port (activation value, signed)
DSP_B_BITS = 18  # DSP48E2 B port (weight, signed)
MAX_ACC_BITS = 48  # DSP48E2 accumulator width; partial sums and adder tree stay within it
MAX_TABLE_BITS = 14  # modulation-table address bits per PE copy (16 Ki entries)


def check_fit(ir: IR, pes: int, *, max_weight_depth: int = 65536) -> None:
    """Raise `ApicalError` naming the layer and field when ``ir`` does not fit on ``pes`` PEs."""
    from apical.hw.schedule import compile_schedule

    check_datapath(ir, pes)
    check_weight_depth(compile_schedule(ir, pes), max_weight_depth)


def check_datapath(ir: IR, pes: int) -> None:
    """Widths against the multiplier, accumulator and table the datapath implements."""
    if isinstance(pes, bool) or not isinstance(pes, int) or pes < 1:
        raise ApicalError(f"hardware: pes: must be an integer >= 1, got {pes!r}")
    tree_bits = max(1, ceil_log2(pes))
    value_bits = max(t.bits for t in ir.inputs) + 1
    for layer in ir.layers:
        value_bits = max(value_bits, layer.out_bits + 1)
    if value_bits > DSP_A_BITS:
        raise ApicalError(f"hardware: activation bits: {value_bits - 1} + sign exceed the {DSP_A_BITS}-bit multiplier port")
    for layer in ir.layers:
        for key in layer.site_order:
            site = layer.sites[key]
            where = f"IR layer {layer.name}: sites.{key}"
            if site.weight_bits > DSP_B_BITS:
                raise ApicalError(f"{where}.weight_bits: {site.weight_bits} exceed the {DSP_B_BITS}-bit multiplier port")
            if site.acc_bits > MAX_ACC_BITS:
                raise ApicalError(f"{where}.acc_bits: {site.acc_bits} exceed the {MAX_ACC_BITS}-bit accumulator")
            if site.acc_bits + tree_bits > MAX_ACC_BITS + 8:
                raise ApicalError(f"{where}.acc_bits: {site.acc_bits} too wide for the reduction over {pes} PEs")
        if layer.kind == "two_point":
            r, c = layer.sites["r"], layer.sites["c"]
            if r.bits + c.bits > MAX_TABLE_BITS:
                raise ApicalError(
                    f"IR layer {layer.name}: sites.r.bits + sites.c.bits: {r.bits + c.bits} exceed the "
                    f"{MAX_TABLE_BITS}-bit modulation-table address")


def check_weight_depth(sched: Schedule, max_weight_depth: int) -> None:
    """Per-PE weight memory: the schedule balances, so check its real per-PE counts."""
    if isinstance(max_weight_depth, bool) or not isinstance(max_weight_depth, int) or max_weight_depth < 1:
        raise ApicalError(f"hardware: max_weight_depth: must be an integer >= 1, got {max_weight_depth!r}")
    pes = sched.pes
    used = [0] * pes
    for lp in sched.layers:
        used = [u + n for u, n in zip(used, lp.syn_per_pe, strict=True)]
        worst = max(used)
        if worst > max_weight_depth:
            p = used.index(worst)
            raise ApicalError(
                f"IR layer {lp.name}: synapses: PE {p} needs {worst} weight entries up to this layer, "
                f"beyond max_weight_depth {max_weight_depth}")
