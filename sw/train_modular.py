"""Decoupled training of sparse-modular nets: each module on its own local loss, then a combine stage.

Module k is built alone (`SparseModularNet` with ``module_ids=(k,)``): its
granules and its own readout (``out``: the module's logits) learn from the
module's cross-entropy only, with Adam, cosine decay and early stopping on the
module's validation accuracy. Its mask, initial weights and data order derive
from (seed, k) only, and every module trains on one thread, so a module's
result does not depend on where it ran: `apical.sw.distributed.spread` runs the
modules in 1..N processes (or under torchrun) and the assembled net is the same
bit for bit.

Quantizers shared by all modules in the assembled net (the input quantizer,
the granule activation, and with ``combine: concat`` the module-output
quantizer) keep their initial scale while modules train, so modules agree on
them without talking. The granule weight scale is per tensor: the assembled
layer takes the largest module scale (`assemble` records each module's).

The combine stage then trains only the final readout (``combine: sum``: ``out``
and its quantizer, started from the mean of the module readouts; ``concat``:
the ``combine`` layer) on the frozen outputs of the assembled modules, computed
once, and keeps its best-validation state. The test split is never used for a
choice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from apical.sw.config import Config, ModelKind, TrainMode
from apical.sw.data import Dataset, Split
from apical.sw.errors import ApicalError
from apical.sw.models import ModelDims, SparseModularNet, build_model
from apical.sw.models.quant import quant_tensor
from apical.sw.models.sparse_modular import module_seed

__all__ = [
    "ModuleResult", "assemble", "combine_stage", "run_worker", "train_decoupled", "train_module", "uses_decoupled",
]

EVAL_BATCH = 1024
# Fixed, so a module's floating-point sums are the same in every process. The
# combine stage uses it too: its products are tiny, and a second thread costs
# more in synchronisation than it saves (10x slower on a loaded machine).
MODULE_THREADS = 1


def uses_decoupled(cfg: Config) -> bool:
    """Whether ``cfg`` trains decoupled (sparse-modular models only; other kinds train end to end)."""
    return cfg.train.mode is TrainMode.DECOUPLED and cfg.model.kind is ModelKind.SPARSE_MODULAR


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class ModuleResult:
    """What one module's training hands back: its trained state and its facts (plain data)."""

    index: int
    state: dict[str, torch.Tensor]
    facts: dict[str, Any]


def _xy(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.array(split.x, dtype=np.float32)), torch.from_numpy(np.array(split.y, dtype=np.int64))


def _dims(ds: Dataset) -> ModelDims:
    return ModelDims(x_dim=ds.x_dim, ctx_dim=ds.ctx_dim, num_classes=ds.num_classes)


def _module_net(cfg: Config, dims: ModelDims, k: int) -> SparseModularNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(module_seed(cfg.seed, k))  # the readout's initial draw: (seed, k) only
        return SparseModularNet(cfg, dims, module_ids=(k,))


def _module_params(net: SparseModularNet) -> list[torch.nn.Parameter]:
    """What a module learns: its granules and readout (and, with ``sum``, its local logit scale)."""
    params = [net.granule.weight, net.granule.bias, net.out.weight, net.out.bias]
    if not net.concat:  # the summed readout is retrained in the combine stage: its quantizer is local
        params += list(net.out_quant.parameters())
    return params


@torch.no_grad()
def _local_acc(net: SparseModularNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for lo in range(0, len(y), EVAL_BATCH):
        logits = net.trace(x[lo : lo + EVAL_BATCH])["out"].value
        correct += int((logits.argmax(dim=1) == y[lo : lo + EVAL_BATCH]).sum())
    return correct / max(1, len(y))


def train_module(cfg: Config, ds: Dataset, k: int, rank: int = 0) -> ModuleResult:
    """Train module ``k`` on its local loss alone; returns its best-validation state."""
    t0, c0 = time.perf_counter(), time.thread_time()
    tc = cfg.train
    with _threads(MODULE_THREADS):
        net = _module_net(cfg, _dims(ds), k)
        opt = torch.optim.Adam(_module_params(net), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.epochs)
        gen = torch.Generator().manual_seed(module_seed(cfg.seed, k) ^ 0x2)
        x, y = _xy(ds.train)
        xv, yv = _xy(ds.val)
        best_acc, best_epoch, best_state, epochs_run = -1.0, 0, None, 0
        val_curve: list[float] = []
        for epoch in range(tc.epochs):
            net.train()
            perm = torch.randperm(len(y), generator=gen)
            for lo in range(0, len(y), tc.batch_size):
                idx = perm[lo : lo + tc.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net.trace(x[idx])["out"].value, y[idx])
                loss.backward()
                opt.step()
                net.constrain_()
            sched.step()
            epochs_run = epoch + 1
            acc = _local_acc(net, xv, yv)
            val_curve.append(acc)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch + 1
                best_state = {n: v.detach().clone() for n, v in net.state_dict().items()}
            elif epoch + 1 - best_epoch >= tc.patience and sched.get_last_lr()[0] <= tc.stop_below_lr * tc.lr:
                break  # early stopping, as end to end: only once the rate has decayed
        assert best_state is not None  # train.epochs >= 1
        net.load_state_dict(best_state)
        xt, yt = _xy(ds.test)
        scale = float(net.granule.quant_weight().scale.detach())
        facts = {
            "index": k,
            "worker": rank,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "local_val_acc": best_acc,
            "local_test_acc": _local_acc(net, xt, yt),  # reported, never used for a choice
            "granule_weight_scale": scale,
            "val_acc_curve": val_curve,
            "wall_time_s": time.perf_counter() - t0,
            "cpu_time_s": time.thread_time() - c0,  # one thread: the module's own compute
        }
    return ModuleResult(index=k, state=best_state, facts=facts)


def assemble(cfg: Config, dims: ModelDims, results: list[ModuleResult]) -> SparseModularNet:
    """The whole net from its trained modules (frozen parts in place, the readout started from theirs)."""
    m = cfg.model.modules
    by_index = {r.index: r for r in results}
    if sorted(by_index) != list(range(m)):
        raise ApicalError(f"decoupled training: modules {sorted(by_index)} trained, expected 0..{m - 1}")
    net = build_model(cfg, dims)
    assert isinstance(net, SparseModularNet)
    g, c = cfg.model.granules, dims.num_classes
    with torch.no_grad():
        for k in range(m):
            st = by_index[k].state
            rows = slice(k * g, (k + 1) * g)
            net.granule.weight[rows] = st["granule.weight"]
            net.granule.bias[rows] = st["granule.bias"]
            if net.concat:  # the module's own readout block is part of the frozen module
                net.out.weight[k * c : (k + 1) * c, rows] = st["out.weight"]
                net.out.bias[k * c : (k + 1) * c] = st["out.bias"]
        if not net.concat:  # the sum of module readouts, averaged: the combine stage starts from the ensemble
            net.out.weight.copy_(torch.cat([by_index[k].state["out.weight"] for k in range(m)], dim=1) / m)
            net.out.bias.copy_(torch.stack([by_index[k].state["out.bias"] for k in range(m)]).mean(dim=0))
    net.finalize_()  # the granule weights are final from here: the combine stage sees exactly these
    return net


def _head(net: SparseModularNet) -> tuple[str, list[torch.nn.Module]]:
    """The frozen feature layer the combine stage reads, and the layers it trains."""
    if net.concat:
        return "out", [net.combine, net.combine_quant]
    return "granule", [net.out, net.out_quant]


def _head_logits(net: SparseModularNet, feat: Any) -> torch.Tensor:
    if net.concat:
        return net.combine_quant(net.combine(feat)).value
    return net.out_quant(net.out(feat)).value


@torch.no_grad()
def _features(net: SparseModularNet, split: Split, layer: str) -> tuple[torch.Tensor, Any]:
    net.eval()
    x, _ = _xy(split)
    parts, like = [], None
    for lo in range(0, len(x), EVAL_BATCH):
        t = net.trace(x[lo : lo + EVAL_BATCH])[layer]
        parts.append(t.value)
        like = t
    return torch.cat(parts), like


@torch.no_grad()
def _head_acc(net: SparseModularNet, feats: torch.Tensor, like: Any, y: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for lo in range(0, len(y), EVAL_BATCH):
        logits = _head_logits(net, quant_tensor(feats[lo : lo + EVAL_BATCH], like))
        correct += int((logits.argmax(dim=1) == y[lo : lo + EVAL_BATCH]).sum())
    return correct / max(1, len(y))


def combine_stage(cfg: Config, net: SparseModularNet, ds: Dataset) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Train the readout on the frozen module outputs; keeps its best-validation state in ``net``."""
    with _threads(MODULE_THREADS):
        return _combine_stage(cfg, net, ds)


def _combine_stage(cfg: Config, net: SparseModularNet, ds: Dataset) -> tuple[dict[str, Any], dict[str, list[float]]]:
    t0 = time.perf_counter()
    tc = cfg.train
    layer, head = _head(net)
    feats, like = _features(net, ds.train, layer)
    vfeats, vlike = _features(net, ds.val, layer)
    _, y = _xy(ds.train)
    _, yv = _xy(ds.val)
    params = [p for mod in head for p in mod.parameters()]
    opt = torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.combine_epochs)
    gen = torch.Generator().manual_seed(module_seed(cfg.seed, cfg.model.modules) ^ 0xC0)
    start_acc = _head_acc(net, vfeats, vlike, yv)
    best_acc, best_epoch = start_acc, 0
    best_state = [{n: v.detach().clone() for n, v in mod.state_dict().items()} for mod in head]
    curves: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "val_acc": []}
    for epoch in range(tc.combine_epochs):
        for mod in head:
            mod.train()
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for lo in range(0, len(y), tc.batch_size):
            idx = perm[lo : lo + tc.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(_head_logits(net, quant_tensor(feats[idx], like)), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        acc = _head_acc(net, vfeats, vlike, yv)
        curves["train_loss"].append(total / len(y))
        curves["train_acc"].append(_head_acc(net, feats, like, y))
        curves["val_acc"].append(acc)
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch + 1
            best_state = [{n: v.detach().clone() for n, v in mod.state_dict().items()} for mod in head]
    for mod, st in zip(head, best_state, strict=True):
        mod.load_state_dict(st)
    net.finalize_()
    net.eval()
    facts = {
        "trains": [n for n, mod in net.named_children() if any(mod is h for h in head)],
        "on": layer,
        "epochs": tc.combine_epochs,
        "best_epoch": best_epoch,  # 0: the starting readout was never beaten on validation
        "start_val_acc": start_acc,
        "val_acc": best_acc,
        "wall_time_s": time.perf_counter() - t0,
    }
    return facts, curves


def module_results(cfg: Config, ds: Dataset) -> tuple[list[ModuleResult] | None, int]:
    """Train every module, spread over the workers; (results on rank 0 / in-process, else None; workers)."""
    from apical.sw.distributed import spread

    return spread(cfg.model.modules, lambda k, rank: train_module(cfg, ds, k, rank), cfg.train.workers)


def train_decoupled(
    cfg: Config, ds: Dataset, progress: bool = True
) -> tuple[SparseModularNet, dict[str, Any], dict[str, list[float]]]:
    """Decoupled training: (assembled best-validation model, run facts, combine-stage curves).

    ``progress`` is accepted for parity with `apical.sw.train.train_model`; no
    bar is drawn, as the modules train in several processes.
    """
    if cfg.train.activity_penalty > 0 or cfg.train.ops_penalty > 0:
        raise ApicalError(f"{cfg.origin}: train.mode: decoupled does not apply the cost penalties yet "
                          "(train.activity_penalty, train.ops_penalty); use end_to_end or set them to 0")
    t0 = time.perf_counter()
    results, workers = module_results(cfg, ds)
    if results is None:
        raise ApicalError("decoupled training: this process is not rank 0 (its ranks run train_modular.run_worker)")
    t_modules = time.perf_counter() - t0
    net = assemble(cfg, _dims(ds), results)
    scale = float(net.granule.quant_weight().scale.detach())
    combine, curves = combine_stage(cfg, net, ds)
    modules = sorted((r.facts for r in results), key=lambda f: f["index"])
    facts = {
        "mode": TrainMode.DECOUPLED.value,
        "workers": workers,
        "epochs_run": max(f["epochs_run"] for f in modules),
        "best_epoch": combine["best_epoch"],
        "module_stage_s": t_modules,
        "modules": modules,
        "granule_weight_scale": scale,
        "combine": combine,
    }
    return net, facts, curves


def run_worker(cfg: Config) -> None:
    """A non-zero rank of a torchrun launch: train this rank's modules and send them to rank 0."""
    from apical.sw.data import load_dataset

    if not uses_decoupled(cfg):
        return  # end-to-end training runs on rank 0 alone
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        module_results(cfg, load_dataset(cfg))
    finally:
        torch.use_deterministic_algorithms(old)
