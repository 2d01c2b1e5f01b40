"""Simulation benchmark: utilization, activity savings and simulator speed of the generated RTL.

At P = 8 (configurable), for the sparse-modular K=4 net and the two-point net at
their default sizes, prints:

* utilization = syn_ops / (P x cycles) and cycles over the lower bound
  sum over layers of ceil(syn_ops / P);
* the cycle ratio between the same inputs with half their non-zero activity
  zeroed and the originals, beside the ratio of synaptic operations (the
  work an event-driven array should track; later layers' activity changes
  less than the input's);
* simulated cycles per second, Verilator vs Icarus (and their build times).

Usage: ``python bench/bench_sim.py [RUN_DIR ...] [--pes 8] [--samples 16]``.
With run directories (``apical export`` done) their trained IRs and test
vectors are used; without, random IRs of the default shapes with realistic
input activity (about 40 % zeros, like the noisy digits). Every RTL result is
checked bit-exact against the golden model before a figure is printed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from apical.hw.generate import generate_rtl
from apical.sim.runner import SimResult, simulate
from apical.sw.golden import run_golden
from apical.sw.ir import IR, Layer, TensorSpec, int_range, load_ir, validate_ir
from apical.sw.ir_random import random_inputs, random_site


def sparse_modular_ir(rng: np.random.Generator) -> IR:
    """Default sparse-modular shape: 64 inputs -> 4 x 128 granules (K = 4) -> 10 logits (sum)."""
    x = TensorSpec("x", 64, 4, False)
    gc = random_site(
        rng, sources=[x], size=512, bits=4, signed=False, activation="relu", weight_bits=4,
        fan_in=4, requant="shift", empty_fanout=0.0,
    )
    g = Layer("gc", "dense", 512, {"main": gc}, out_bits=4, out_signed=False)
    ro = random_site(
        rng, sources=[g.output], size=10, bits=8, signed=True, activation="identity", weight_bits=4,
        density=1.0, requant="shift", empty_fanout=0.0,
    )
    ir = IR((x,), (g, Layer("out", "dense", 10, {"main": ro}, out_bits=8, out_signed=True)),
            meta={"model_kind": "bench-sparse_modular"})
    validate_ir(ir)
    return ir


def two_point_ir(rng: np.random.Generator) -> IR:
    """Default two-point shape: 64 driving + 64 context inputs -> 64 two-point cells -> 10 logits."""
    x, ctx = TensorSpec("x", 64, 4, False), TensorSpec("ctx", 64, 4, False)
    r = random_site(rng, sources=[x], size=64, bits=4, signed=True, activation="identity", weight_bits=4,
                    density=1.0, requant="shift", empty_fanout=0.0)
    c = random_site(rng, sources=[ctx], size=64, bits=4, signed=True, activation="identity", weight_bits=4,
                    density=1.0, requant="shift", empty_fanout=0.0)
    # A kay-like table: context scales a rectified R (exact values do not matter for timing).
    lo, hi = int_range(4, True)
    rr, cc = np.arange(lo, hi + 1)[:, None], np.arange(lo, hi + 1)[None, :]
    table = np.clip(np.maximum(rr, 0) * (2 + np.sign(rr * cc)) // 2, 0, 15).astype(np.int64)
    tp = Layer("tp1", "two_point", 64, {"r": r, "c": c}, out_bits=4, out_signed=False, table=table,
               modulation="kay")
    ro = random_site(rng, sources=[tp.output], size=10, bits=8, signed=True, activation="identity",
                     weight_bits=4, density=1.0, requant="shift", empty_fanout=0.0)
    ir = IR((x, ctx), (tp, Layer("out", "dense", 10, {"main": ro}, out_bits=8, out_signed=True)),
            meta={"model_kind": "bench-two_point"})
    validate_ir(ir)
    return ir


def halve_activity(rng: np.random.Generator, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero a random half of the non-zero activations of every input."""
    out = {}
    for k, v in inputs.items():
        v = v.copy()
        nz = np.flatnonzero(v)
        v.flat[rng.choice(nz, size=nz.size // 2, replace=False)] = 0
        out[k] = v
    return out


class NotBitExact(Exception):
    pass


def run(ir: IR, inputs: dict[str, np.ndarray], pes: int, sim: str, work: Path, tag: str) -> SimResult:
    rtl = work / tag / "rtl"
    if not (rtl / "apical_top.v").is_file():
        generate_rtl(ir, pes, rtl)
    golden = run_golden(ir, inputs)
    res = simulate(ir, inputs, rtl_dir=rtl, pes=pes, simulator=sim, build_dir=work / "sim_build",
                   golden=golden, backpressure=False, optimize=True)
    if res.failure is not None:
        raise NotBitExact(f"{tag} on {sim}: RTL differs from golden, no figures: {res.failure}")
    return res


def figures(ir: IR, inputs: dict[str, np.ndarray], pes: int, res: SimResult) -> dict[str, float]:
    golden = run_golden(ir, inputs)
    syn = sum(int(golden.counts[name]["syn_ops"].sum()) for name in golden.counts)
    bound = sum(int((-(-golden.counts[name]["syn_ops"] // pes)).sum()) for name in golden.counts)
    cycles = int(res.cycles.sum())
    return {"utilization": syn / (pes * cycles), "over_bound": cycles / bound, "cycles": cycles / len(res.cycles)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run directories with ir/ and test_vectors.npz")
    ap.add_argument("--pes", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None, help="build folder (default: a temp folder)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    work = args.work or Path(tempfile.mkdtemp(prefix="apical-bench-sim-"))

    nets: list[tuple[str, IR, dict[str, np.ndarray]]] = []
    if args.runs:
        for run_dir in args.runs:
            ir = load_ir(run_dir / "ir")
            with np.load(run_dir / "test_vectors.npz", allow_pickle=False) as z:
                inputs = {t.name: z[t.name][: args.samples].astype(np.int64) for t in ir.inputs}
            nets.append((f"{ir.meta.get('model_kind', 'ir')} ({run_dir.name})", ir, inputs))
    else:
        for name, make in (("sparse_modular_k4", sparse_modular_ir), ("two_point", two_point_ir)):
            ir = make(rng)
            nets.append((name, ir, random_inputs(rng, ir, args.samples, zero_fraction=0.4)))

    print(f"P = {args.pes}, {args.samples} samples per net, work folder {work}")
    print(f"{'net':<20} {'synapses':>8} {'cyc/inf':>8} {'util':>6} {'cyc/bound':>9} "
          f"{'half-act cycles':>15} {'(syn ops)':>9}")
    first = None
    for name, ir, inputs in nets:
        half = halve_activity(rng, inputs)
        try:
            res = run(ir, inputs, args.pes, "verilator", work, name)
            res_h = run(ir, half, args.pes, "verilator", work, name)
        except NotBitExact as e:
            print(f"{name:<20} {e}")
            continue
        f = figures(ir, inputs, args.pes, res)
        ratio = int(res_h.cycles.sum()) / int(res.cycles.sum())
        # The work ratio the cycle ratio should track: synaptic ops, golden-counted.
        ops = int(res_h.counters["syn_ops"].sum()) / int(res.counters["syn_ops"].sum())
        print(f"{name:<20} {ir.synapses:>8} {f['cycles']:>8.1f} {f['utilization']:>6.3f} "
              f"{f['over_bound']:>9.3f} {ratio:>15.3f} {ops:>9.3f}")
        first = first or (name, ir, inputs, res)

    if first is None:
        raise SystemExit("no net simulated bit-exact: no speed figures")
    name, ir, inputs, res_v = first
    res_i = run(ir, inputs, args.pes, "icarus", work, name)
    # The Verilator result came from a cached build: rebuild-free speed is what matters per run.
    print(f"\nsimulation speed on {name} (simulated cycles per wall second, inside the testbench):")
    for sim, r in (("verilator", res_v), ("icarus", res_i)):
        print(f"  {sim:<10} {r.sim_cycles / r.tb_wall_s:>10.0f} cycles/s  "
              f"({r.sim_cycles} cycles in {r.tb_wall_s:.2f} s; whole run {r.wall_s:.1f} s incl. build {r.build_s:.1f} s)")
    print(f"  verilator / icarus: {(res_v.sim_cycles / res_v.tb_wall_s) / (res_i.sim_cycles / res_i.tb_wall_s):.1f}x")


if __name__ == "__main__":
    main()
