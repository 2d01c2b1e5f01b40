"""Benchmark: wall time of each step of `apical run` on a config (default: the shipped one).

Target: the whole default flow under 10 minutes on a 2-core machine. Runs every
step from nothing into a temporary run directory (``--keep DIR`` to keep it)
and prints one line per step plus the total. Prints figures only.

Run: ``.venv/bin/python bench/bench_flow.py [config.yaml] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from apical.flows.flow import run_flow
from apical.sw.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=None)
    ap.add_argument("--keep", type=Path, help="run directory to keep (must not exist)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="apical-flow-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        t0 = time.perf_counter()
        record = run_flow(cfg, run_dir, force=True)
        wall = time.perf_counter() - t0
    print(f"config   {cfg.origin} ({cfg.model.kind.value}, P={cfg.hardware.pes}, {cfg.hardware.simulator})")
    for name, entry in record["steps"].items():
        print(f"{name:10s} {entry['seconds']:8.1f} s")
    print(f"{'total':10s} {wall:8.1f} s  (target < 600 s)")


if __name__ == "__main__":
    main()
