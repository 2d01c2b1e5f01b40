"""The training step: seeded, reproducible quantization-aware training of the configured model.

`train(cfg, run_dir)` trains with Adam (cosine learning-rate decay), stops early on validation accuracy
(``train.patience``) but only once the rate has decayed below ``train.stop_below_lr``
of its start, keeps the best-validation state (highest accuracy, lower validation
loss on ties; the test split is never looked at until the end), makes the weights export-ready (`finalize_`), and
writes atomically ``config.yaml``, ``checkpoint.pt``, ``train.json`` and
``curves.png``. The same config and seed give the same metrics: all draws are
seeded, deterministic algorithms are enforced and the thread count is fixed
(the process-wide torch settings are restored afterwards).
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
from apical.sw.config import Config, config_hash, config_to_dict
from apical.sw.data import Dataset, Split, empty_context, load_dataset
from apical.sw.export import brevitas_trace, export_ir
from apical.sw.models import ApicalNet, ModelDims, build_model

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


def _tensors(
    split: Split, context: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Torch views of a split; ``context`` replaces the split's context view (ablations)."""
    x = torch.from_numpy(np.array(split.x, dtype=np.float32))
    ctx = None if split.ctx is None else torch.from_numpy(np.array(split.ctx, dtype=np.float32))
    if context is not None and ctx is not None:
        ctx = torch.from_numpy(np.array(context, dtype=np.float32))
    return x, ctx, torch.from_numpy(np.array(split.y, dtype=np.int64))


@torch.no_grad()
def _evaluate(model: ApicalNet, split: Split, context: np.ndarray | None = None) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of the eval forward (argmax, first index on ties)."""
    model.eval()
    x, ctx, y = _tensors(split, context)
    correct, loss = 0, 0.0
    for lo in range(0, len(y), EVAL_BATCH):
        c = None if ctx is None else ctx[lo : lo + EVAL_BATCH]
        logits = model(x[lo : lo + EVAL_BATCH], c)
        yb = y[lo : lo + EVAL_BATCH]
        correct += int((logits.argmax(dim=1) == yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    return correct / max(1, len(y)), loss / max(1, len(y))


def accuracy(model: ApicalNet, split: Split, context: np.ndarray | None = None) -> float:
    """Top-1 accuracy of the eval forward (argmax, first index on ties, as the hardware does).

    ``context`` (same shape as ``split.ctx``) replaces the context view: the
    "context removed" ablation passes `apical.sw.data.empty_context`.
    """
    return _evaluate(model, split, context)[0]


def _expected_ops(model: ApicalNet, traced: dict[str, Any]) -> torch.Tensor:
    """Differentiable stand-in for synaptic ops per sample, divided by the weight count:
    every site's inputs times the L1 norm of each input's fan-out weights."""
    total, weights = 0.0, 0
    for ls in model.layer_specs():
        for site in ls.sites.values():
            if site.linear is None:
                continue
            x = torch.cat([traced[s].value for s in site.sources], dim=1)
            w = site.linear.weight
            if site.columns is not None:
                w = w[:, site.columns]
            if w.shape[1] == 0:
                continue
            total = total + (x.abs() * w.abs().sum(dim=0)).sum(dim=1).mean()
            weights += w.numel()
    return total / max(1, weights)


def _loss(cfg: Config, model: ApicalNet, x: torch.Tensor, ctx: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    traced = model.trace(x, ctx)
    loss = F.cross_entropy(traced[model.output_name].value, y)
    aux = model.aux_logits(traced)
    if aux:
        # Local losses: each module's readout learns the task on its own.
        loss = loss + sum(F.cross_entropy(a, y) for a in aux) / len(aux)
    tc = cfg.train
    if tc.activity_penalty > 0:
        hidden = [ls.name for ls in model.layer_specs()[:-1]]
        if hidden:
            act = torch.stack([traced[n].value.mean() for n in hidden]).mean()
            loss = loss + tc.activity_penalty * act
    if tc.ops_penalty > 0:
        loss = loss + tc.ops_penalty * _expected_ops(model, traced)
    return loss


def train_model(
    cfg: Config, ds: Dataset, progress: bool = True, train_curve: bool = True
) -> tuple[ApicalNet, dict[str, Any], dict[str, list[float]]]:
    """Train a fresh model on ``ds``; returns (best-validation model, run facts, learning curves).

    ``train_curve=False`` skips the per-epoch accuracy pass over the training split
    (a curve only; the model and every other figure are the same).
    """
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
    best: tuple[float, float] = (-1.0, 0.0)  # (val accuracy, -val loss): higher is better
    best_epoch, best_state = 0, None
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
                loss = _loss(cfg, model, x[idx], cb, y[idx])
                loss.backward()
                opt.step()
                model.constrain_()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            sched.step()
            epochs_run = epoch + 1
            val_acc, val_loss = _evaluate(model, ds.val)
            train_acc = accuracy(model, ds.train) if train_curve else float("nan")
            curves["train_loss"].append(total / seen)
            curves["train_acc"].append(train_acc)
            curves["val_acc"].append(val_acc)
            bar.update(task, advance=1, val=val_acc)
            if (val_acc, -val_loss) > best:
                best, best_epoch = (val_acc, -val_loss), epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch + 1 - best_epoch >= tc.patience and sched.get_last_lr()[0] <= tc.stop_below_lr * tc.lr:
                # Stop only once the rate has decayed: a plateau at a high rate is not convergence.
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
        # "Context removed": what an empty context really is under the data's coding.
        empty = empty_context(cfg, ds.test.ctx.shape)
        out["test_acc_no_context"] = accuracy(model, ds.test, context=empty)
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
    out["params"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
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
        model, facts, curves = train_model(cfg, ds, progress)
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
