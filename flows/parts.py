"""Capacity of the FPGA parts apical estimates against (AMD UltraScale+).

`part_capacity(part)` takes a device name (``xczu7ev``) or a full part string
(``xczu7ev-ffvc1156-2-e``) and returns its `PartCapacity`; an unknown device
raises `ApicalError` listing the known ones. Figures are the device totals of
the UltraScale+ product tables (Zynq UltraScale+ MPSoC DS891, Virtex
UltraScale+ DS923): CLB LUTs, CLB flip-flops, LUTs usable as distributed RAM,
DSP48E2 slices, RAMB36E2 blocks (each splits into two RAMB18E2), URAM288
blocks and CARRY8 chains (one per CLB, i.e. one per 8 LUTs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from apical.sw.errors import ApicalError

__all__ = ["PARTS", "PartCapacity", "known_parts", "part_capacity"]


@dataclass(frozen=True)
class PartCapacity:
    device: str
    family: str
    lut: int
    ff: int
    lutram: int
    dsp48e2: int
    ramb36e2: int
    uram288: int
    carry8: int
    default_package: str  # the package/speed grade of the reference board or a common one

    @property
    def ramb18e2(self) -> int:
        """RAMB18E2 halves available: every RAMB36E2 splits into two."""
        return 2 * self.ramb36e2

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ramb18e2"] = self.ramb18e2
        return d


PARTS: dict[str, PartCapacity] = {
    p.device: p
    for p in (
        PartCapacity("xczu3eg", "zynquplus", 70_560, 141_120, 28_800, 360, 216, 0, 8_820, "sbva484-1-e"),
        PartCapacity("xczu7ev", "zynquplus", 230_400, 460_800, 101_760, 1_728, 312, 96, 28_800, "ffvc1156-2-e"),
        PartCapacity("xczu9eg", "zynquplus", 274_080, 548_160, 144_000, 2_520, 912, 0, 34_260, "ffvb1156-2-e"),
        PartCapacity("xcvu9p", "virtexuplus", 1_182_240, 2_364_480, 591_840, 6_840, 2_160, 960, 147_780, "flga2104-2L-e"),
    )
}


def known_parts() -> list[str]:
    return sorted(PARTS)


def part_capacity(part: str) -> PartCapacity:
    """Capacity of ``part`` (device name or full part string, case-insensitive)."""
    if not isinstance(part, str) or not part:
        raise ApicalError(f"part: must be a device name such as xczu7ev, got {part!r}")
    device = part.lower().split("-", 1)[0]
    if device not in PARTS:
        raise ApicalError(f"part {part!r}: unknown device {device!r} (known: {', '.join(known_parts())})")
    return PARTS[device]
