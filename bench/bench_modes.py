"""Benchmark: test accuracy of decoupled vs end-to-end training of a sparse-modular config, over seeds.

Run: ``.venv/bin/python bench/bench_modes.py [config.yaml] [--seeds 5] [--modes decoupled end_to_end]``. Trains
the config (default: ``configs/sparse_modular.yaml``) once per seed in each
mode (one thread, one worker: the result does not depend on the worker count)
and prints each run's validation and test accuracy, then the mean and minimum
test accuracy over seeds per mode. Model selection uses the validation split
only. Prints figures only.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from apical.sw.config import TrainMode, load_config
from apical.sw.train import train

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "sparse_modular.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(DEFAULT))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--modes", nargs="+", choices=[m.value for m in TrainMode],
                    default=[TrainMode.DECOUPLED.value, TrainMode.END_TO_END.value])
    args = ap.parse_args()
    base = load_config(args.config)
    rows: dict[str, list[float]] = {}
    print(f"config {base.origin}: {base.model.modules} modules x {base.model.granules} granules, "
          f"K={base.model.fan_in}, {base.train.epochs} epochs (+{base.train.combine_epochs} combine)")
    print(f"{'mode':12s} {'seed':>4s} {'val':>7s} {'test':>7s} {'wall s':>7s}")
    for mode in map(TrainMode, args.modes):
        for seed in range(args.seeds):
            tc = dataclasses.replace(base.train, mode=mode, workers=1, threads=1)
            cfg = dataclasses.replace(base, seed=seed, train=tc,
                                      energy=dataclasses.replace(base.energy, baseline=False))
            with tempfile.TemporaryDirectory(prefix="apical-modes-") as d:
                t0 = time.perf_counter()
                s = train(cfg, Path(d), progress=False)
                wall = time.perf_counter() - t0
            rows.setdefault(mode.value, []).append(s["test_acc"])
            print(f"{mode.value:12s} {seed:4d} {s['val_acc']:7.4f} {s['test_acc']:7.4f} {wall:7.1f}", flush=True)
    print(f"{'mode':12s} {'mean test':>9s} {'min test':>9s}")
    for mode, accs in rows.items():
        print(f"{mode:12s} {sum(accs) / len(accs):9.4f} {min(accs):9.4f}")
    if len(rows) == 2:
        dec, e2e = (sum(v) / len(v) for v in rows.values())
        print(f"decoupled - end_to_end: {100 * (dec - e2e):+.2f} points")


if __name__ == "__main__":
    main()
