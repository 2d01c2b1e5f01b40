"""Benchmark: wall time per epoch of decoupled sparse-modular training against workers, with end to end for reference.

Run: ``.venv/bin/python bench/bench_workers.py [config.yaml] [--modules 8] [--granules 128]
[--epochs 10] [--workers 1 2]``. Trains the config (default:
``configs/sparse_modular.yaml``) with the given module count, early stopping
off (every module runs every epoch), decoupled with each worker count (one
thread per worker) and end to end on one thread, and prints, side by side:
the train step's wall time, the module stage (all modules, in parallel over
the workers) per epoch, the combine stage, and the speedup over one worker.
Also says whether the assembled weights are identical across worker counts.
On a shared machine a session's processes share one CPU share (Linux
autogroup), so more workers need not mean more CPU; the bench therefore also
prints the module stage's critical path in CPU time (the largest per-worker
sum of module CPU seconds), what the wall time would be with one free core
per worker, and the load average. Prints figures only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from apical.sw.config import TrainMode, load_config
from apical.sw.train import train

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "sparse_modular.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(DEFAULT))
    ap.add_argument("--modules", type=int, default=8)
    ap.add_argument("--granules", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--combine-epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    base = load_config(args.config)
    model = dataclasses.replace(base.model, modules=args.modules,
                                granules=args.granules or base.model.granules)
    tc = dataclasses.replace(base.train, epochs=args.epochs, patience=args.epochs,
                             combine_epochs=args.combine_epochs, threads=1)
    base = dataclasses.replace(base, model=model, train=tc,
                               energy=dataclasses.replace(base.energy, baseline=False))
    print(f"net: {model.modules} modules x {model.granules} granules, K={model.fan_in}; "
          f"{args.epochs} epochs (+{args.combine_epochs} combine), one thread per process, "
          f"{torch.get_num_threads()} threads available to this process")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'run':22s} {'train s':>8s} {'modules s':>9s} {'s/epoch':>8s} {'combine s':>9s} "
          f"{'speedup':>8s} {'cpu path s/epoch':>16s} {'cpu speedup':>11s} {'test':>7s}")
    ref = cref = None
    states = {}
    for w in args.workers:
        cfg = dataclasses.replace(base, train=dataclasses.replace(tc, mode=TrainMode.DECOUPLED, workers=w))
        with tempfile.TemporaryDirectory(prefix="apical-workers-") as d:
            t0 = time.perf_counter()
            s = train(cfg, Path(d), progress=False)
            wall = time.perf_counter() - t0
            states[w] = torch.load(Path(d) / "checkpoint.pt", weights_only=True)["state_dict"]
        per_epoch = s["module_stage_s"] / args.epochs
        cpu = {}
        for m in s["modules"]:
            cpu[m["worker"]] = cpu.get(m["worker"], 0.0) + m["cpu_time_s"]
        cpu_epoch = max(cpu.values()) / args.epochs
        ref, cref = ref or per_epoch, cref or cpu_epoch
        print(f"{f'decoupled, {w} worker(s)':22s} {wall:8.1f} {s['module_stage_s']:9.1f} {per_epoch:8.2f} "
              f"{s['combine']['wall_time_s']:9.1f} {ref / per_epoch:7.2f}x {cpu_epoch:16.2f} "
              f"{cref / cpu_epoch:10.2f}x {s['test_acc']:7.4f}", flush=True)
    cfg = dataclasses.replace(base, train=dataclasses.replace(tc, mode=TrainMode.END_TO_END))
    with tempfile.TemporaryDirectory(prefix="apical-workers-") as d:
        t0 = time.perf_counter()
        s = train(cfg, Path(d), progress=False)
        wall = time.perf_counter() - t0
    print(f"{'end to end, 1 thread':22s} {wall:8.1f} {'':9s} {wall / s['epochs_run']:8.2f} {'':9s} "
          f"{'':8s} {s['test_acc']:7.4f}")
    first = states[args.workers[0]]
    same = all(all(torch.equal(first[k], st[k]) for k in first) for st in states.values())
    print(f"checkpoint state identical across workers {args.workers}: {same}")
    rss = [resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(f"peak resident memory: {rss[0]:.0f} MiB (this process), {rss[1]:.0f} MiB (largest worker)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
