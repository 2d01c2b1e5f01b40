"""The training step: seeded, reproducible quantization-aware training of the configured model.

`train(cfg, run_dir)` trains with Adam (cosine learning-rate decay), stops early on validation accuracy
(``train.patience``), keeps the best-validation state (the test split is never
looked at until the end), makes the weights export-ready (`finalize_`), and
writes atomically ``config.yaml``, ``checkpoint.pt``, ``train.json`` and
``curves.png``. The same config and seed give the same metrics: all draws are
seeded, deterministic algorithms are enforced and the thread count is fixed
(the process-wide torch settings are restored afterwards). With
``train.mode: decoupled`` a sparse-modular net trains module by module instead,
spread over ``train.workers`` processes (`apical.sw.train_modular`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F

from apical.sw.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from apical.sw.checkpoint import CHECKPOINT, save_checkpoint
from apical.sw.config import Config, TrainMode, config_hash, config_to_dict
from apical.sw.data import Dataset, Split, load_dataset
from apical.sw.export import brevitas_trace, export_ir
from apical.sw.models import ApicalNet, ModelDims, build_model
from apical.sw.train_modular import train_decoupled, uses_decoupled

__all__ = ["accuracy", "train", "train_model"]

EVAL_BATCH = 1024


@contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count for the duration of training."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _tensors(split: Split, zero_context: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    x = torch.from_numpy(np.array(split.x, dtype=np.float32))
    ctx = None if split.ctx is None else torch.from_numpy(np.array(split.ctx, dtype=np.float32))
    if zero_context and ctx is not None:
        ctx = torch.zeros_like(ctx)
    return x, ctx, torch.from_numpy(np.array(split.y, dtype=np.int64))


@torch.no_grad()
def accuracy(model: ApicalNet, split: Split, zero_context: bool = False) -> float:
    """Top-1 accuracy of the eval forward (argmax, first index on ties, as the hardware does)."""
    model.eval()
    x, ctx, y = _tensors(split, zero_context)
    correct = 0
    for lo in range(0, len(y), EVAL_BATCH):
        c = None if ctx is None else ctx[lo : lo + EVAL_BATCH]
        logits = model(x[lo : lo + EVAL_BATCH], c)
        correct += int((logits.argmax(dim=1) == y[lo : lo + EVAL_BATCH]).sum())
    return correct / max(1, len(y))


def _loss(model: ApicalNet, x: torch.Tensor, ctx: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    traced = model.trace(x, ctx)
    loss = F.cross_entropy(traced[model.output_name].value, y)
    aux = model.aux_logits(traced)
    if aux:
        # Local losses: each module's readout learns the task on its own.
        loss = loss + sum(F.cross_entropy(a, y) for a in aux) / len(aux)
    return loss


def train_model(
    cfg: Config, ds: Dataset, progress: bool = True
) -> tuple[ApicalNet, dict[str, Any], dict[str, list[float]]]:
    """Train a fresh model on ``ds``; returns (best-validation model, run facts, learning curves)."""
    tc = cfg.train
    dims = ModelDims(x_dim=ds.x_dim, ctx_dim=ds.ctx_dim, num_classes=ds.num_classes)
    model = build_model(cfg, dims)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # Cosine decay: quantization-aware training settles best with a small final step size.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.epochs)
    gen = torch.Generator().manual_seed(cfg.seed % (1 << 63))
    x, ctx, y = _tensors(ds.train)
    n = len(y)
    curves: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "val_acc": []}
    best_acc, best_epoch, best_state = -1.0, 0, None
    epochs_run = 0

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("train {task.fields[kind]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("val {task.fields[val]:.3f}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("train", total=tc.epochs, kind=model.kind, val=0.0)
        for epoch in range(tc.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for lo in range(0, n, tc.batch_size):
                idx = perm[lo : lo + tc.batch_size]
                cb = None if ctx is None else ctx[idx]
                opt.zero_grad(set_to_none=True)
                loss = _loss(model, x[idx], cb, y[idx])
                loss.backward()
                opt.step()
                model.constrain_()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            sched.step()
            epochs_run = epoch + 1
            val_acc = accuracy(model, ds.val)
            train_acc = accuracy(model, ds.train)
            curves["train_loss"].append(total / seen)
            curves["train_acc"].append(train_acc)
            curves["val_acc"].append(val_acc)
            bar.update(task, advance=1, val=val_acc)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch + 1 - best_epoch >= tc.patience:
                break
    assert best_state is not None  # at least one epoch ran (train.epochs >= 1)
    model.load_state_dict(best_state)
    model.finalize_()
    model.eval()
    facts = {"epochs_run": epochs_run, "best_epoch": best_epoch}
    return model, facts, curves


def _metrics(cfg: Config, model: ApicalNet, ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {
        "val_acc": accuracy(model, ds.val),
        "test_acc": accuracy(model, ds.test),
    }
    if model.kind == "two_point" and "ctx" in model.input_names:
        out["test_acc_no_context"] = accuracy(model, ds.test, zero_context=True)
    _, layer_out = brevitas_trace(model, ds.test)
    out["activation_sparsity"] = {k: float(np.mean(v == 0)) for k, v in layer_out.items()}
    ir = export_ir(model, cfg)
    conn = {}
    dense_total = 0
    for layer in ir.layers:
        dense = sum(layer.size * s.in_size for s in layer.sites.values())
        nnz = sum(s.nnz for s in layer.sites.values())
        dense_total += dense
        conn[layer.name] = 1.0 - nnz / dense if dense else 1.0
    out["connection_sparsity"] = conn
    out["connection_sparsity_total"] = 1.0 - ir.synapses / dense_total if dense_total else 1.0
    out["synapses"] = ir.synapses
    out["params"] = model.live_parameters()
    return out


def _curves_png(curves: dict[str, list[float]], title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = np.arange(1, len(curves["train_loss"]) + 1)
    ax1.plot(epochs, curves["train_loss"])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax2.plot(epochs, curves["train_acc"], label="train")
    ax2.plot(epochs, curves["val_acc"], label="val")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """The train step: writes config.yaml, checkpoint.pt, train.json, curves.png; returns train.json."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    with _torch_settings(cfg.train.threads):
        ds = load_dataset(cfg)
        if uses_decoupled(cfg):  # sparse-modular modules on local losses, spread over workers
            model, facts, curves = train_decoupled(cfg, ds, progress)
        else:
            model, facts, curves = train_model(cfg, ds, progress)
            facts = {"mode": TrainMode.END_TO_END.value, "workers": 1, **facts}
        metrics = _metrics(cfg, model, ds)
    summary: dict[str, Any] = {
        "name": cfg.name,
        "model_kind": model.kind,
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        **metrics,
        **facts,
        "train_samples": len(ds.train),
        "val_samples": len(ds.val),
        "test_samples": len(ds.test),
        "curves": curves,
        "wall_time_s": time.perf_counter() - t0,
    }
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    save_checkpoint(run_dir / CHECKPOINT, cfg, model)
    atomic_write_bytes(run_dir / "curves.png", _curves_png(curves, f"{cfg.name} ({model.kind})"))
    atomic_write_json(run_dir / "train.json", summary)
    return summary
