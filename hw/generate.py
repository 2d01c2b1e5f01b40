"""Verilog generation: check fit, elaborate `ApicalTop`, write ``apical_top.v`` atomically.

Deterministic: the same IR and parameters give byte-identical Verilog (the
schedule breaks every tie by index, and Amaranth's back end is stable).

Memory contents (weights, index, masks, tables) are Verilog ``initial``
blocks, one assignment per word: a 784-256-256-10 net at P = 64 is 15 MB of
Verilog, three quarters of it initial values, which Verilator compiles into
C++ line by line. ``memory_init="files"`` moves each memory's contents into
a ``$readmemh`` file next to the Verilog (``apical_top.<module>.<memory>.hex``)
that Icarus, Verilator and yosys read; ``"auto"`` (the default) does so when
the initial values exceed `INLINE_INIT_MAX_BYTES`. Whoever copies the Verilog
elsewhere (a simulator's run folder, a synthesis sandbox) copies its files
with `stage_init_files`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from amaranth.back import verilog

from apical.hw.fit import check_datapath, check_weight_depth
from apical.hw.schedule import Schedule, compile_schedule
from apical.hw.top import COUNTER_BITS, ApicalTop, stream_widths
from apical.sw.atomic import atomic_write_text
from apical.sw.errors import ApicalError
from apical.sw.ir import IR

__all__ = [
    "INLINE_INIT_MAX_BYTES",
    "MEMORY_INIT",
    "TOP_NAME",
    "generate_rtl",
    "rtl_summary",
    "split_memory_init",
    "verilog_text",
]

TOP_NAME = "apical_top"
MEMORY_INIT = ("auto", "inline", "files")
INLINE_INIT_MAX_BYTES = 1_000_000  # "auto": initial values past this go to $readmemh files

# One word of a memory's initial block as yosys' Verilog back end writes it (plain or escaped name).
_INIT_WORD = re.compile(r"    (?P<mem>\\\S+ |[A-Za-z_][\w$]*)\[(?P<addr>\d+)\] = \d+'h(?P<hex>[0-9a-fA-F]+);")


def verilog_text(ir: IR, pes: int, *, queue_depth: int = 16, schedule: Schedule | None = None) -> str:
    """The Verilog of `ApicalTop` (module ``apical_top``) as a string."""
    top = ApicalTop(ir, pes, queue_depth=queue_depth, schedule=schedule)
    return verilog.convert(top, name=TOP_NAME, emit_src=False)


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip().lstrip("\\"))


def split_memory_init(text: str) -> tuple[str, dict[str, str]]:
    """Move every memory's ``initial`` block into a ``$readmemh`` file.

    Returns the Verilog, each block replaced by ``initial $readmemh("<file>", <memory>);``,
    and the files (name: contents, one hex word a line, ``@address`` where a block skips
    words). A block that is not one memory's word assignments is left as it is.
    """
    lines = text.split("\n")
    out: list[str] = []
    files: dict[str, str] = {}
    module = ""
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("module "):
            module = ln[len("module "):].split("(")[0]
        if ln != "  initial begin":
            out.append(ln)
            i += 1
            continue
        j, mem, words, ok = i + 1, None, [], True
        while j < len(lines) and lines[j] != "  end":
            m = _INIT_WORD.fullmatch(lines[j])
            if m is None or (mem is not None and m["mem"] != mem):
                ok = False
                break
            mem = m["mem"]
            words.append((int(m["addr"]), m["hex"]))
            j += 1
        if not ok or mem is None or j == len(lines):
            out.append(ln)
            i += 1
            continue
        name = f"{_file_part(module)}.{_file_part(mem)}.hex"
        n = 1
        while name in files:
            n += 1
            name = f"{_file_part(module)}.{_file_part(mem)}.{n}.hex"
        body, nxt = [], None
        for addr, word in words:
            if addr != nxt:
                body.append(f"@{addr:x}")
            body.append(word)
            nxt = addr + 1
        files[name] = "\n".join(body) + "\n"
        out.append(f'  initial $readmemh("{name}", {mem});')
        i = j + 1
    return "\n".join(out), files


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
                 queue_depth: int = 16, memory_init: str = "auto") -> dict[str, Any]:
    """Check fit, write ``out_dir/apical_top.v`` (and its memory init files, see the module
    docstring), return the summary for rtl.json."""
    if memory_init not in MEMORY_INIT:
        raise ApicalError(f"hardware.memory_init: must be one of {', '.join(MEMORY_INIT)}, got {memory_init!r}")
    check_datapath(ir, pes)
    sched = compile_schedule(ir, pes)
    check_weight_depth(sched, max_weight_depth)
    text = verilog_text(ir, pes, queue_depth=queue_depth, schedule=sched)
    files: dict[str, str] = {}
    if memory_init != "inline":
        split, files = split_memory_init(text)
        # "auto": the bytes the split takes out of the Verilog are the inline initial values
        if memory_init == "files" or len(text) - len(split) > INLINE_INIT_MAX_BYTES:
            text = split
        else:
            files = {}
    out_dir = Path(out_dir)
    for name, content in files.items():  # before the Verilog that reads them
        atomic_write_text(out_dir / name, content)  # every module is apical_top or apical_top.<part>
    path = atomic_write_text(out_dir / f"{TOP_NAME}.v", text)
    for stale in out_dir.glob(f"{TOP_NAME}.*.hex"):  # an earlier generation's, no longer read
        if stale.name not in files:
            stale.unlink()
    summary = rtl_summary(ir, pes, queue_depth=queue_depth, schedule=sched)
    summary["verilog"] = path.name
    summary["max_weight_depth"] = max_weight_depth
    summary["memory_init"] = "files" if files else "inline"
    summary["memory_init_files"] = len(files)
    return summary
