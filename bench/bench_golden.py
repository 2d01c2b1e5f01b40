"""Golden integer model throughput beside the Brevitas eval forward, on the same batch.

For the shipped default config (two-point) and its point-neuron and
sparse-modular variants, builds the model fresh (scales at their
initialisation: the arithmetic, not the accuracy, is what is timed), replicates
the test split to a batch of 4096 samples, and times

* Brevitas: ``model(x, ctx)`` under ``torch.no_grad`` (eval mode, float logits);
* golden: `run_golden` on the same samples' integer inputs (all layers, all
  counters).

Prints samples/s for both and their ratio (target: golden >= Brevitas), and
checks the two agree on every output value. Run:
``.venv/bin/python bench/bench_golden.py [--batch N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from apical.sw.config import ModelConfig, ModelKind, load_config
from apical.sw.data import Split, load_dataset
from apical.sw.export import brevitas_trace, export_ir
from apical.sw.golden import run_golden
from apical.sw.models import ModelDims, build_model


def _best(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _replicate(split: Split, n: int) -> Split:
    idx = np.resize(np.arange(len(split)), n)
    return Split(
        x=np.ascontiguousarray(split.x[idx]),
        ctx=None if split.ctx is None else np.ascontiguousarray(split.ctx[idx]),
        y=split.y[idx],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    base = load_config(None)
    torch.set_num_threads(base.train.threads)
    print(f"batch {args.batch}, best of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'model':16s} {'synapses':>9s} {'brevitas/s':>12s} {'golden/s':>12s} {'ratio':>7s}  exact")
    for kind in (ModelKind.TWO_POINT, ModelKind.POINT, ModelKind.SPARSE_MODULAR):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, kind=kind))
        if kind is ModelKind.POINT:
            cfg = dataclasses.replace(cfg, model=ModelConfig(kind=kind, hidden=base.model.hidden))
        ds = load_dataset(cfg)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, ModelDims(ds.x_dim, ds.ctx_dim, ds.num_classes))
        model.eval()
        ir = export_ir(model, cfg)
        split = _replicate(ds.test, args.batch)
        ints, outs = brevitas_trace(model, split)
        inputs = {t.name: ints[t.name] for t in ir.inputs}
        x = torch.from_numpy(np.array(split.x))  # writable copy for torch
        ctx = torch.from_numpy(np.array(split.ctx)) if "ctx" in model.input_names and split.ctx is not None else None

        def brevitas(model=model, x=x, ctx=ctx) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                model(x, ctx)

        def golden(ir=ir, inputs=inputs) -> None:  # type: ignore[no-untyped-def]
            run_golden(ir, inputs)

        t_b = _best(brevitas, args.repeats)
        t_g = _best(golden, args.repeats)
        g = run_golden(ir, inputs)
        exact = all(np.array_equal(g.outputs[la.name], outs[la.name]) for la in ir.layers)
        rb, rg = args.batch / t_b, args.batch / t_g
        print(f"{kind.value:16s} {ir.synapses:9d} {rb:12.0f} {rg:12.0f} {rg / rb:7.2f}  {exact}")


if __name__ == "__main__":
    main()
