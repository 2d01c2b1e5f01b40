"""Benchmark: does context help? A two-point net on a heavily noised driving view, with and without context.

Run: ``.venv/bin/python bench/bench_context.py [--noise 0.6] [--seeds 1]``. Trains
the default two-point config twice per seed on the same data: once with the
context modality (``model.context: true``), once without (``false``), and
prints both test accuracies (model selection on validation only).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from apical.sw.config import config_to_dict, load_config, parse_config
from apical.sw.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--noise", type=float, default=0.6, help="std of the driving view's noise")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds (0..n-1)")
    ap.add_argument("--config", default=None, help="base config (default: the shipped default)")
    args = ap.parse_args()
    base = config_to_dict(load_config(args.config))
    base["model"]["kind"] = "two_point"
    base["data"]["noise"] = args.noise
    print(f"two-point net, driving-view noise {args.noise}, modulation {base['model']['modulation']}")
    print(f"{'seed':>4} {'with context':>13} {'no context':>11} {'ctx zeroed':>11} {'time':>7}")
    for seed in range(args.seeds):
        accs = {}
        t0 = time.perf_counter()
        for ctx in (True, False):
            d = {**base, "seed": seed, "model": {**base["model"], "context": ctx}}
            with tempfile.TemporaryDirectory(prefix="apical-ctx-") as run:
                accs[ctx] = train(parse_config(d), Path(run), progress=False)
        zeroed = accs[True].get("test_acc_no_context", float("nan"))
        print(f"{seed:>4} {accs[True]['test_acc']:>13.4f} {accs[False]['test_acc']:>11.4f} "
              f"{zeroed:>11.4f} {time.perf_counter() - t0:>6.1f}s")


if __name__ == "__main__":
    main()
