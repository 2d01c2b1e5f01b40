"""Benchmark: wall time of training the shipped default config (target < 60 s on 2 cores).

Run: ``.venv/bin/python bench/bench_train.py [config.yaml]``. Prints figures only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from apical.sw.config import load_config
from apical.sw.train import train


def main() -> None:
    cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    with tempfile.TemporaryDirectory(prefix="apical-bench-") as d:
        t0 = time.perf_counter()
        s = train(cfg, Path(d), progress=False)
        wall = time.perf_counter() - t0
    print(f"config            {cfg.origin} ({cfg.model.kind.value}, hidden {list(cfg.model.hidden)})")
    print(f"train wall time   {wall:.1f} s  (train step incl. data, metrics, artefacts)")
    print(f"epochs run        {s['epochs_run']} (best {s['best_epoch']}), {wall / s['epochs_run']:.2f} s/epoch")
    print(f"test accuracy     {s['test_acc']:.4f}   val {s['val_acc']:.4f}")
    if "test_acc_no_context" in s:
        print(f"test, no context  {s['test_acc_no_context']:.4f}")
    print(f"synapses          {s['synapses']}   params {s['params']}")


if __name__ == "__main__":
    main()
