"""Sweep: random IRs (tensors 2..16 bits, raw logits, every kind) through the generated RTL.

Run: ``.venv/bin/python bench/sweep_random_irs.py [N_ICARUS] [N_VERILATOR]``.
Each IR is generated at a random P, simulated with back-pressure and compared
with the golden model on every output value, class and counter. Prints how
many were bit-exact, how many `apical rtl` refused (with the reason) and how
many disagreed (there must be none: the script exits 1 if any did).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from apical.hw.generate import generate_rtl
from apical.sim.runner import simulate
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir_random import KINDS, random_inputs, random_ir


def sweep(simulator: str, n: int, first_seed: int) -> Counter:
    tally: Counter = Counter()
    widths: set[int] = set()
    with tempfile.TemporaryDirectory(prefix=f"apical-sweep-{simulator}-") as d:
        for k in range(n):
            seed = first_seed + k
            rng = np.random.default_rng(seed)
            ir = random_ir(rng, kind=KINDS[k % len(KINDS)], layers=2 + k % 2, raw_output=0.3)
            pes = int(rng.choice([1, 2, 3, 4, 8, 16]))
            widths |= {t.bits for t in (*ir.inputs, *(la.output for la in ir.layers))}
            rtl = Path(d) / f"rtl{k}"
            try:
                generate_rtl(ir, pes, rtl)
            except ApicalError as e:
                tally["refused"] += 1
                print(f"  seed {seed}: refused: {e}")
                continue
            inputs = random_inputs(rng, ir, 3, zero_fraction=0.3)
            golden = run_golden(ir, inputs)
            res = simulate(ir, inputs, rtl_dir=rtl, pes=pes, simulator=simulator, build_dir=Path(d) / "b",
                           golden=golden, seed=seed, stop_on_mismatch=True)
            last = ir.layers[-1].name
            ok = res.failure is None and np.array_equal(res.outputs, golden.outputs[last]) and all(
                np.array_equal(res.counters[c], v) for c, v in golden.total_counts().items())
            tally["bit_exact" if ok else "mismatch"] += 1
            if not ok:
                print(f"  seed {seed} P={pes}: MISMATCH {res.failure}")
    print(f"{simulator:<10} tried {n:>4}  bit-exact {tally['bit_exact']:>4}  refused {tally['refused']:>3}  "
          f"mismatch {tally['mismatch']:>3}  widths seen {min(widths)}..{max(widths)}")
    return tally


def main() -> int:
    n_icarus = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    n_verilator = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    bad = sweep("icarus", n_icarus, 1000)["mismatch"]
    if n_verilator:
        bad += sweep("verilator", n_verilator, 2000)["mismatch"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
