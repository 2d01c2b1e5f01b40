"""The ``$readmemh`` files of a generated Verilog top (`apical.hw.generate`, ``memory_init``).

Their names are relative, so whoever runs a tool on the Verilog somewhere else
(a simulator's run folder, the yowasp synthesis sandbox) copies them beside it
with `stage_init_files`. No Amaranth here: the simulation and synthesis flows
import it without the generator.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from apical.sw.errors import ApicalError

__all__ = ["init_files", "stage_init_files"]

_READMEM = re.compile(r'\$readmemh\("(?P<name>[^"/\\]+)"')


def init_files(verilog: Path) -> list[Path]:
    """The ``$readmemh`` files ``verilog`` reads (next to it); one error line if one is missing."""
    verilog = Path(verilog)
    names = sorted({m["name"] for m in _READMEM.finditer(verilog.read_text())})
    paths = [verilog.parent / n for n in names]
    for p in paths:
        if not p.is_file():
            raise ApicalError(f"{verilog}: memory init file {p.name} missing (regenerate with `apical rtl`)")
    return paths


def stage_init_files(verilog: Path, dest: Path) -> list[Path]:
    """Copy the ``$readmemh`` files of ``verilog`` into ``dest`` (a simulator's working folder, a
    synthesis sandbox), where its relative names resolve; returns the copies."""
    dest = Path(dest)
    out = []
    for p in init_files(verilog):
        target = dest / p.name
        if target.resolve() != p.resolve():
            shutil.copyfile(p, target)
        out.append(target)
    return out
