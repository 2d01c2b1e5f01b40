"""Simulation speed, side by side: the cocotb path and the fast path, on Verilator and Icarus.

On one net (a run directory, by default ``runs/demo``: ``apical run --out
runs/demo --to export`` makes it; without one, a random IR of the default
sparse-modular shape), prints for each simulator and path: samples simulated,
simulated cycles, simulation wall time, simulated cycles per second, wall time
per inference, and the fast path's speed-up. The fast path runs the whole test
split, the cocotb path its first ``--cocotb-samples`` (its speed is a rate;
the whole split through cocotb would take minutes). Both paths use random
back-pressure on both streams. Every result is compared with the golden model
first: a figure is printed only for a bit-exact run.

Wall figures: the cocotb path's is timed inside its testbench (simulator
start-up excluded), the fast path's is the whole simulator process (start-up
included), so the comparison leans against the fast path. On a loaded machine
the fast path's CPU-time rate (the simulator process's own CPU seconds) is
printed too. Builds are cached by content under ``--work`` and never timed.

Usage: ``python bench/bench_sim_paths.py [RUN_DIR] [--cocotb-samples 16] [--simulators verilator icarus]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from apical.hw.generate import generate_rtl
from apical.sim.fast import simulate_fast
from apical.sim.runner import SimResult, simulate, summarize
from apical.sw.golden import run_golden
from apical.sw.ir import IR, load_inputs, load_ir
from apical.sw.ir_random import random_inputs

ROOT = Path(__file__).resolve().parents[1]


def _net(run_dir: Path | None, pes: int, work: Path) -> tuple[str, IR, dict[str, np.ndarray], Path]:
    if run_dir is not None and (run_dir / "ir").is_dir():
        ir = load_ir(run_dir / "ir")
        inputs = load_inputs(ir, run_dir / "test_vectors.npz")
        rtl = run_dir / "rtl"
        if not (rtl / "apical_top.v").is_file():
            rtl = work / "rtl"
            generate_rtl(ir, pes, rtl)
        return f"{ir.meta.get('model_kind', 'ir')} ({run_dir})", ir, inputs, rtl
    from bench_sim import sparse_modular_ir  # the default shape, random weights

    rng = np.random.default_rng(0)
    ir = sparse_modular_ir(rng)
    rtl = work / "rtl-random"
    if not (rtl / "apical_top.v").is_file():
        generate_rtl(ir, pes, rtl)
    return "sparse_modular_k4 (random weights)", ir, random_inputs(rng, ir, 359, zero_fraction=0.4), rtl


def _checked(ir: IR, inputs: dict[str, np.ndarray], res: SimResult, what: str) -> bool:
    s = summarize(ir, run_golden(ir, inputs), res)
    if s["bit_exact"] and s["counters_match"] and not res.failure:
        return True
    first = s["mismatches"]["first"][:1] or [res.failure]
    print(f"  {what}: NOT bit-exact, no figure: {first[0]}")
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("--pes", type=int, default=8, help="P when the RTL has to be generated")
    ap.add_argument("--cocotb-samples", type=int, default=16)
    ap.add_argument("--simulators", nargs="+", default=["verilator", "icarus"], choices=["verilator", "icarus"])
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench_sim_paths")
    args = ap.parse_args()
    name, ir, inputs, rtl = _net(args.run_dir, args.pes, args.work)
    pes = args.pes
    n = next(iter(inputs.values())).shape[0]
    k = min(args.cocotb_samples, n)
    head = {key: v[:k] for key, v in inputs.items()}
    print(f"net: {name}, {ir.synapses} synapses, P={pes}; fast path {n} samples, cocotb path {k}")

    rows = []
    for sim in args.simulators:
        # Build time is not in tb_wall_s (builds are cached by content anyway).
        res_c = simulate(ir, head, rtl_dir=rtl, pes=pes, simulator=sim, build_dir=args.work, optimize=True,
                         backpressure=True, stop_on_mismatch=False)
        res_f = simulate_fast(ir, inputs, rtl_dir=rtl, pes=pes, simulator=sim, build_dir=args.work)
        cpu_f = res_f.raw["cpu_s"]
        for path, res, cpu in (("cocotb", res_c, None), ("fast", res_f, cpu_f)):
            if _checked(ir, inputs if path == "fast" else head, res, f"{sim} {path}"):
                rows.append((sim, path, res, cpu))

    print(f"\n{'simulator':<10} {'path':<7} {'samples':>7} {'cycles':>9} {'sim s':>8} {'cycles/s':>11} "
          f"{'ms/inference':>12} {'cycles/CPU-s':>13} {'bit-exact':>9}")
    rate: dict[tuple[str, str], float] = {}
    for sim, path, res, cpu in rows:
        r = res.sim_cycles / res.tb_wall_s
        rate[sim, path] = r
        cpu_rate = f"{res.sim_cycles / cpu:>13,.0f}" if cpu else f"{'':>13}"
        print(f"{sim:<10} {path:<7} {len(res.sample_ids):>7} {res.sim_cycles:>9} {res.tb_wall_s:>8.2f} "
              f"{r:>11,.0f} {1000 * res.tb_wall_s / len(res.sample_ids):>12.3f} {cpu_rate} {'yes':>9}")
    for sim in args.simulators:
        if (sim, "fast") in rate and (sim, "cocotb") in rate:
            print(f"{sim}: fast path {rate[sim, 'fast'] / rate[sim, 'cocotb']:.1f}x the cocotb path")


if __name__ == "__main__":
    main()
