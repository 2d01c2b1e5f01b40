"""Scaling benchmark of the PE array: utilization and cycles above the bound at P = 8 .. 64.

For each P, runs samples through the RTL (Amaranth's simulator by default, or the
generated Verilog on Icarus/Verilator through `apical.sim.runner.simulate`),
checks every output, class and counter against the golden model, and prints
per inference: cycles, the lower bound sum over layers of ceil(syn_ops / P),
cycles above that bound, and utilization = syn_ops / (P x cycles).

Nets: a trained run directory (``apical run --to export``; its IR and test
vectors), and/or ``--mnist``: a 784-256-256-10 4-bit dense net with random
weights and inputs about 80 % zero (MNIST-like activity).

    .venv/bin/python bench/bench_scale.py runs/demo --pes 8 16 32 64 --samples 8
    .venv/bin/python bench/bench_scale.py --mnist --pes 64 --samples 8 --sim verilator
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, TensorSpec, load_inputs, load_ir, validate_ir
from apical.sw.ir_random import random_inputs, random_site


def mnist_net(rng: np.random.Generator) -> IR:
    """784-256-256-10, 4-bit activations and weights, dense, random weights."""
    x = TensorSpec("x", 784, 4, False)
    layers: list[Layer] = []
    src = x
    for i, size in enumerate((256, 256)):
        site = random_site(rng, sources=[src], size=size, bits=4, signed=False, activation="relu",
                           weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
        lay = Layer(f"h{i}", "dense", size, {"main": site}, out_bits=4, out_signed=False)
        layers.append(lay)
        src = lay.output
    out = random_site(rng, sources=[src], size=10, bits=8, signed=True, activation="identity",
                      weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    layers.append(Layer("out", "dense", 10, {"main": out}, out_bits=8, out_signed=True))
    ir = IR((x,), tuple(layers), meta={"model_kind": "bench-mnist"})
    validate_ir(ir)
    return ir


def mnist_inputs(rng: np.random.Generator, ir: IR, n: int) -> dict[str, np.ndarray]:
    t = ir.inputs[0]
    v = rng.integers(1, t.range[1] + 1, size=(n, t.size))
    v[rng.random((n, t.size)) < 0.8] = 0
    return {t.name: v}


def run_rtl(ir: IR, pes: int, inputs: dict[str, np.ndarray], sim: str, build: Path) -> np.ndarray:
    """Cycles per sample, after checking values, classes and counters against golden."""
    g = run_golden(ir, inputs)
    if sim == "amaranth":
        from test_hw_top import check

        counters = check(ir, pes, inputs, in_stall=0.0, out_stall=0.0)
        return np.array([c["cycles"] for c in counters])
    from apical.hw.generate import generate_rtl
    from apical.sim.runner import simulate

    rtl = Path(tempfile.mkdtemp(prefix=f"rtl-P{pes}-", dir=build))
    generate_rtl(ir, pes, rtl)
    res = simulate(ir, inputs, rtl_dir=rtl, pes=pes, simulator=sim, build_dir=build, golden=g,
                   backpressure=False)
    if res.failure is not None:
        raise SystemExit(f"P={pes}: {res.failure}")
    return np.asarray(res.cycles)


def bench(name: str, ir: IR, inputs: dict[str, np.ndarray], pes_list: list[int], sim: str, build: Path) -> None:
    g = run_golden(ir, inputs)
    syn = [np.asarray(g.counts[lay.name]["syn_ops"]) for lay in ir.layers]
    total = sum(syn)
    n = len(total)
    print(f"\n{name}: {ir.synapses} synapses, {n} samples, mean syn_ops {total.mean():.0f}, "
          f"mean events {g.total_counts()['events'].mean():.0f} ({sim})")
    print(f"{'P':>4} {'cycles':>9} {'bound':>9} {'above':>7} {'utilization':>11} {'wall s':>7}")
    for pes in pes_list:
        t0 = time.perf_counter()
        cycles = run_rtl(ir, pes, inputs, sim, build)
        bound = sum(-(-s // pes) for s in syn)
        util = total.sum() / (pes * cycles.sum())
        print(f"{pes:>4} {cycles.mean():>9.1f} {bound.mean():>9.1f} {(cycles - bound).mean():>7.1f} "
              f"{util:>11.3f} {time.perf_counter() - t0:>7.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run directories with ir/ and test_vectors.npz")
    ap.add_argument("--mnist", action="store_true", help="also the 784-256-256-10 4-bit random net")
    ap.add_argument("--random-two-point", action="store_true",
                    help="also the default two-point shape with random weights and inputs")
    ap.add_argument("--pes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--sim", choices=["amaranth", "icarus", "verilator"], default="amaranth")
    ap.add_argument("--build", type=Path, default=Path("build/bench_scale"))
    args = ap.parse_args()
    args.build.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        ir = load_ir(run / "ir")
        inputs = load_inputs(ir, run / "test_vectors.npz")
        inputs = {k: v[: args.samples] for k, v in inputs.items()}
        bench(str(run), ir, inputs, args.pes, args.sim, args.build)
    if args.random_two_point:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_sim import two_point_ir

        rng = np.random.default_rng(0)
        ir = two_point_ir(rng)
        bench("two-point 64+64-64-10 (random)", ir, random_inputs(rng, ir, args.samples, zero_fraction=0.4),
              args.pes, args.sim, args.build)
    if args.mnist:
        rng = np.random.default_rng(0)
        ir = mnist_net(rng)
        bench("784-256-256-10 (random, 4 bit)", ir, mnist_inputs(rng, ir, args.samples), args.pes, args.sim,
              args.build)


if __name__ == "__main__":
    main()
