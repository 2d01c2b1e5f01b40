"""Brevitas QAT models of apical: point MLP, two-point network, sparse-modular network.

`build_model(cfg, dims)` returns the `ApicalNet` the config names. Layer names
are the IR layer names: point ``fc1..fcN``, ``out``; two-point ``tp1..tpN``
(``tpK_lat`` for the lateral pass), ``out``; sparse-modular ``granule``,
``out`` (+ ``combine`` with ``combine: concat``). IR inputs are ``x`` (and
``ctx`` for a two-point net with context).
"""

from __future__ import annotations

from apical.sw.config import Config, ModelKind
from apical.sw.errors import ApicalError
from apical.sw.models.base import ApicalNet, LayerSpec, ModelDims, SiteSpec
from apical.sw.models.point import PointNet
from apical.sw.models.sparse_modular import SparseModularNet
from apical.sw.models.two_point import TwoPointNet

__all__ = [
    "ApicalNet",
    "LayerSpec",
    "ModelDims",
    "PointNet",
    "SiteSpec",
    "SparseModularNet",
    "TwoPointNet",
    "build_model",
    "dims_of",
]


def dims_of(cfg: Config) -> ModelDims:
    """The model sizes the config's data set implies (loads the data set)."""
    from apical.sw.data import load_dataset

    ds = load_dataset(cfg)
    return ModelDims(x_dim=ds.x_dim, ctx_dim=ds.ctx_dim, num_classes=ds.num_classes)


def build_model(cfg: Config, dims: ModelDims | None = None) -> ApicalNet:
    """The Brevitas model of ``cfg.model.kind``; ``dims`` default to those of the config's data."""
    import torch

    dims = dims or dims_of(cfg)
    classes = {ModelKind.POINT: PointNet, ModelKind.TWO_POINT: TwoPointNet,
               ModelKind.SPARSE_MODULAR: SparseModularNet}
    if cfg.model.kind not in classes:
        raise ApicalError(f"{cfg.origin}: model.kind: unsupported {cfg.model.kind!r}")
    # The initial weights are part of the model: seed them, without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = classes[cfg.model.kind](cfg, dims)
    names = [s.name for s in model.layer_specs()]
    for layer in cfg.quant.layers:
        if layer not in names:  # an override that names no layer would be silently ignored
            raise ApicalError(
                f"{cfg.origin}: quant.layers.{layer}: names no layer of this {cfg.model.kind.value} model "
                f"(layers: {', '.join(names)})"
            )
    return model
