"""Verilog generation: check fit, elaborate `ApicalTop`, write ``apical_top.v`` atomically.

Deterministic: the same IR and parameters give byte-identical Verilog (the
schedule breaks every tie by index, and Amaranth's back end is stable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amaranth.back import verilog

from apical.hw.fit import check_datapath, check_weight_depth
from apical.hw.schedule import Schedule, compile_schedule
from apical.hw.top import COUNTER_BITS, ApicalTop, stream_widths
from apical.sw.atomic import atomic_write_text
from apical.sw.ir import IR

__all__ = ["TOP_NAME", "generate_rtl", "rtl_summary", "verilog_text"]

TOP_NAME = "apical_top"


def verilog_text(ir: IR, pes: int, *, queue_depth: int = 16, schedule: Schedule | None = None) -> str:
    """The Verilog of `ApicalTop` (module ``apical_top``) as a string."""
    top = ApicalTop(ir, pes, queue_depth=queue_depth, schedule=schedule)
    return verilog.convert(top, name=TOP_NAME, emit_src=False)


def rtl_summary(ir: IR, pes: int, *, queue_depth: int = 16, schedule: Schedule | None = None) -> dict[str, Any]:
    """The rtl.json summary: widths, memories per PE, per-layer schedule numbers."""
    sched = schedule if schedule is not None else compile_schedule(ir, pes)
    in_w, out_w = stream_widths(ir)
    summary = {"top": TOP_NAME, "queue_depth": queue_depth, "s_axis_tdata_bits": in_w,
               "m_axis_tdata_bits": out_w, "counter_bits": COUNTER_BITS,
               "synapses": ir.synapses}
    summary.update(sched.stats())
    return summary


def generate_rtl(ir: IR, pes: int, out_dir: Path, *, max_weight_depth: int = 65536,
                 queue_depth: int = 16) -> dict[str, Any]:
    """Check fit, write ``out_dir/apical_top.v``, return the summary for rtl.json."""
    check_datapath(ir, pes)
    sched = compile_schedule(ir, pes)
    check_weight_depth(sched, max_weight_depth)
    text = verilog_text(ir, pes, queue_depth=queue_depth, schedule=sched)
    path = atomic_write_text(Path(out_dir) / f"{TOP_NAME}.v", text)
    summary = rtl_summary(ir, pes, queue_depth=queue_depth, schedule=sched)
    summary["verilog"] = path.name
    summary["max_weight_depth"] = max_weight_depth
    return summary
