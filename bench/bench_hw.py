"""Benchmark of the PE array in the Amaranth simulator: cycles and utilization.

Builds the default-size networks as random IRs (two-point: 64 inputs + 64
context -> 64 two-point neurons -> 10; sparse-modular: 64 inputs -> 4 x 128
granules with K=4 -> 10), runs a few samples through `ApicalTop` for each P,
and prints cycles, syn_ops, utilization = syn_ops / (P x cycles), and the
cycle ratio when half of the input activity is zeroed. Figures only, no asserts.

    .venv/bin/python bench/bench_hw.py [--pes 1 2 4 8] [--samples 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_hw_top import simulate

from apical.hw.schedule import compile_schedule
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, Site, TensorSpec, int_range
from apical.sw.ir_random import random_site


def two_point_net(rng: np.random.Generator, *, n_in: int = 64, n_hidden: int = 64, n_out: int = 10) -> IR:
    x = TensorSpec("x", n_in, 4, False)
    ctx = TensorSpec("ctx", n_in, 4, False)
    r = random_site(rng, sources=[x], size=n_hidden, bits=4, signed=True, activation="identity",
                    weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    c = random_site(rng, sources=[ctx], size=n_hidden, bits=4, signed=True, activation="identity",
                    weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    lo, hi = int_range(4, False)
    table = rng.integers(lo, hi + 1, size=(16, 16))
    hidden = Layer("tp", "two_point", n_hidden, {"r": r, "c": c}, out_bits=4, out_signed=False,
                   table=table, modulation="random")
    out = random_site(rng, sources=[hidden.output], size=n_out, bits=8, signed=True, activation="identity",
                      weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    return IR((x, ctx), (hidden, Layer("out", "dense", n_out, {"main": out}, 8, True)))


def sparse_modular_net(rng: np.random.Generator, *, n_in: int = 64, modules: int = 4, granules: int = 128,
                       k: int = 4, n_out: int = 10) -> IR:
    x = TensorSpec("x", n_in, 4, False)
    g = random_site(rng, sources=[x], size=modules * granules, bits=4, signed=False, activation="relu",
                    weight_bits=4, fan_in=k, requant="shift", empty_fanout=0.0)
    # Granules fire on their inputs (threshold 0), as trained cerebellar expansions do.
    g = Site(**{**g.__dict__, "bias": np.zeros_like(g.bias)})
    gl = Layer("granule", "dense", modules * granules, {"main": g}, 4, False)
    out = random_site(rng, sources=[gl.output], size=n_out, bits=8, signed=True, activation="identity",
                      weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    return IR((x,), (gl, Layer("out", "dense", n_out, {"main": out}, 8, True)))


def inputs_for(rng: np.random.Generator, ir: IR, n: int, zero_fraction: float) -> dict[str, np.ndarray]:
    out = {}
    for t in ir.inputs:
        lo, hi = t.range
        v = rng.integers(max(lo, 1), hi + 1, size=(n, t.size))
        v[rng.random((n, t.size)) < zero_fraction] = 0
        out[t.name] = v
    return out


def run(ir: IR, pes: int, inputs: dict[str, np.ndarray]) -> tuple[int, int]:
    res = simulate(ir, pes, inputs, in_stall=0.0, out_stall=0.0)
    g = run_golden(ir, inputs)
    tot = g.total_counts()
    for n, (vals, _cls, cnt, _) in enumerate(res):
        assert vals == g.outputs[ir.layers[-1].name][n].tolist(), "RTL differs from golden"
        assert cnt["syn_ops"] == int(tot["syn_ops"][n])
    return sum(r[2]["cycles"] for r in res), sum(r[2]["syn_ops"] for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--zero", type=float, default=0.3, help="fraction of zero inputs")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    nets = {"two_point": two_point_net(rng), "sparse_modular_k4": sparse_modular_net(rng)}
    print(f"{'net':20s} {'P':>2s} {'modes':>16s} {'cycles':>8s} {'syn_ops':>8s} {'util':>6s} {'half-cyc':>8s} {'half-syn':>8s} {'sim s':>6s}")
    for name, ir in nets.items():
        full = inputs_for(np.random.default_rng(1), ir, args.samples, args.zero)
        half = {k: v.copy() for k, v in full.items()}
        hr = np.random.default_rng(2)
        for v in half.values():
            nz = np.argwhere(v != 0)
            drop = nz[hr.random(len(nz)) < 0.5]
            v[drop[:, 0], drop[:, 1]] = 0
        for p in args.pes:
            t0 = time.time()
            modes = "/".join(lp.mode[0] for lp in compile_schedule(ir, p).layers)
            cyc, syn = run(ir, p, full)
            cyc_h, syn_h = run(ir, p, half)
            print(f"{name:20s} {p:2d} {modes:>16s} {cyc / args.samples:8.1f} {syn / args.samples:8.1f} "
                  f"{syn / (p * cyc):6.3f} {cyc_h / cyc:8.3f} {syn_h / syn:8.3f} {time.time() - t0:6.1f}")


if __name__ == "__main__":
    main()
