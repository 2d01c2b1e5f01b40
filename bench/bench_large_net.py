"""A large net through the RTL flow: memory contents inline against ``$readmemh`` files, side by side.

The 784-256-256-10 4-bit dense net of `bench_scale.py --mnist` (268,800
synapses) at P PEs: for each ``memory_init`` mode, generate the Verilog
(`apical.hw.generate.generate_rtl`), build the fast harness (Verilator or
Icarus; a fresh build folder, so nothing is reused), simulate the samples,
check every value, class and counter against golden, and print per mode:
generation seconds, Verilog MB, init files, build wall and CPU seconds,
simulation seconds and mean cycles per inference. ``--synth`` also runs yosys
``synth_xilinx`` (slow at P = 64) and prints its time and resources.

    .venv/bin/python bench/bench_large_net.py --pes 64 --samples 8 --sim verilator
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import mnist_inputs, mnist_net

from apical.hw.generate import generate_rtl
from apical.hw.memfiles import init_files
from apical.sim.fast import build_fast, simulate_fast
from apical.sw.golden import run_golden


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pes", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--sim", choices=["icarus", "verilator"], default="verilator")
    ap.add_argument("--modes", nargs="+", default=["inline", "files"], choices=["inline", "files"])
    ap.add_argument("--synth", action="store_true", help="also yosys synth_xilinx each design (slow)")
    ap.add_argument("--build", type=Path, default=Path("build/bench_large_net"))
    args = ap.parse_args()
    args.build.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ir = mnist_net(rng)
    inputs = mnist_inputs(rng, ir, args.samples)
    golden = run_golden(ir, inputs)
    last = ir.layers[-1].name
    print(f"784-256-256-10 4-bit, {ir.synapses} synapses, P={args.pes}, {args.samples} samples, {args.sim}")
    print(f"{'mode':>7} {'gen s':>7} {'verilog MB':>11} {'files':>6} {'build s':>8} {'build cpu s':>11} "
          f"{'sim s':>7} {'cycles':>8} {'bit-exact':>9}", flush=True)
    for mode in args.modes:
        work = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=args.build))
        rtl = work / "rtl"
        t0 = time.perf_counter()
        generate_rtl(ir, args.pes, rtl, memory_init=mode)
        gen_s = time.perf_counter() - t0
        top = rtl / "apical_top.v"
        mb = top.stat().st_size / 1e6
        n_files = len(init_files(top))
        cpu0, t0 = _child_cpu(), time.perf_counter()
        build_fast(rtl, args.sim, work / "build")
        build_s, build_cpu = time.perf_counter() - t0, _child_cpu() - cpu0
        t0 = time.perf_counter()
        res = simulate_fast(ir, inputs, rtl_dir=rtl, pes=args.pes, simulator=args.sim, build_dir=work / "build")
        sim_s = time.perf_counter() - t0
        exact = (res.failure is None and np.array_equal(res.outputs, golden.outputs[last])
                 and np.array_equal(res.classes, golden.classes)
                 and all(np.array_equal(res.counters[c], v) for c, v in golden.total_counts().items()))
        print(f"{mode:>7} {gen_s:>7.1f} {mb:>11.2f} {n_files:>6} {build_s:>8.1f} {build_cpu:>11.1f} "
              f"{sim_s:>7.1f} {res.cycles.mean():>8.1f} {exact!s:>9}", flush=True)
        if not exact:
            raise SystemExit(f"{mode}: the RTL disagrees with golden: {res.failure}")
        if args.synth:
            from apical.flows.synth import synthesize

            t0 = time.perf_counter()
            s = synthesize(top, top="apical_top", part="xcvu9p", build_dir=work / "synth")
            r = s["resources"]
            print(f"{mode:>7} yosys synth_xilinx {time.perf_counter() - t0:.0f} s: LUT {r['lut']}, FF {r['ff']}, "
                  f"DSP {r['dsp48e2']}, RAMB36 {r['ramb36e2']}, RAMB18 {r['ramb18e2']}", flush=True)


if __name__ == "__main__":
    main()
