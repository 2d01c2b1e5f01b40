"""Which clock a time-based figure uses: the one a timed build achieved, or the one assumed.

Latency, throughput and static energy all scale with the clock. The config's
``hardware.clock_mhz`` is an assumption until a place-and-route says what the
design reaches; `clock_basis` reads ``bitstream.json`` (nextpnr's Fmax on an
open board) and says which clock the figures use and why, so no report can
present an assumed 200 MHz as if it were measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClockBasis", "clock_basis"]


@dataclass(frozen=True)
class ClockBasis:
    """The clock time-based figures use (``used_mhz``) and where it comes from.

    ``source`` is ``"measured"`` (``used_mhz`` is the Fmax a timed build of
    this run achieved, ``measured_by`` names the tool and board) or
    ``"assumed"`` (the config's ``hardware.clock_mhz``; no timed build exists).
    """

    used_mhz: float
    source: str
    assumed_mhz: float
    measured_mhz: float | None = None
    measured_by: str | None = None
    target_mhz: float | None = None
    timing_met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        if self.source == "measured":
            return f"measured Fmax {self.used_mhz:g} MHz ({self.measured_by})"
        return f"assumed {self.used_mhz:g} MHz (hardware.clock_mhz; no timed build)"


def _timed_build(bitstream_json: Path, pes: int) -> dict[str, Any] | None:
    """The bitstream summary when it holds an Fmax for this run's P, else None."""
    if not bitstream_json.is_file():
        return None
    try:
        bit = json.loads(bitstream_json.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(bit, dict) or bit.get("pes") != pes:
        return None
    fmax = bit.get("fmax_mhz")
    if isinstance(fmax, bool) or not isinstance(fmax, int | float) or not math.isfinite(fmax) or fmax <= 0:
        return None
    return bit


def clock_basis(assumed_mhz: float, run_dir: Path, pes: int) -> ClockBasis:
    """The clock for ``run_dir``'s time-based figures: a timed build's Fmax, else the assumed clock."""
    bit = _timed_build(Path(run_dir) / "bitstream.json", pes)
    if bit is None:
        return ClockBasis(used_mhz=float(assumed_mhz), source="assumed", assumed_mhz=float(assumed_mhz))
    tool = {"ulx3s": "nextpnr-ecp5", "icebreaker": "nextpnr-ice40"}.get(str(bit.get("board")), "vivado")
    fmax = float(bit["fmax_mhz"])
    target = bit.get("target_mhz")
    return ClockBasis(
        used_mhz=fmax, source="measured", assumed_mhz=float(assumed_mhz), measured_mhz=fmax,
        measured_by=f"{tool}, {bit.get('board')} {bit.get('part')}",
        target_mhz=float(target) if isinstance(target, int | float) else None,
        timing_met=bit.get("timing_met") if isinstance(bit.get("timing_met"), bool) else None,
    )
