"""Point-neuron MLP baseline: y = relu(W x + b) per hidden layer, then quantized logits.

IR layers: ``fc1`` .. ``fcN`` (hidden, unsigned ``act_bits``), ``out`` (signed
``output_bits``). Input ``x`` is quantized unsigned to ``input_bits``. With
``model.views: both`` (early fusion) the net also sees the context view: IR
inputs ``x`` and ``ctx`` share one input quantizer (one scale), and ``fc1``
accumulates both, as one site over the concatenation ``[x, ctx]``.
"""

from __future__ import annotations

import torch
from brevitas.quant_tensor import IntQuantTensor
from torch import nn

from apical.sw.config import Config, Views
from apical.sw.errors import ApicalError
from apical.sw.models.base import ApicalNet, LayerSpec, ModelDims, SiteSpec
from apical.sw.models.quant import (
    QuantSpec,
    make_input,
    make_linear,
    make_relu,
    make_signed,
    quant_tensor,
)

__all__ = ["HIDDEN_MAX", "LOGIT_MAX", "PointNet"]

HIDDEN_MAX = 2.0  # initial range of hidden activations (the scale is learned from there)
LOGIT_MAX = 8.0  # initial range of the logits


class PointNet(ApicalNet):
    kind = "point"
    input_names = ("x",)

    def __init__(self, cfg: Config, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        spec = QuantSpec.from_config(cfg)
        q = cfg.quant
        self.in_quant = make_input(spec, q.input_bits)
        self.fused = cfg.model.views is Views.BOTH
        if self.fused and dims.ctx_dim is None:
            raise ApicalError(
                f"{cfg.origin}: model.views: 'both' needs a context modality in the data (data.context)"
            )
        self.input_names = ("x", "ctx") if self.fused else ("x",)
        self.names = [f"fc{i + 1}" for i in range(len(cfg.model.hidden))]
        self.fcs = nn.ModuleList()
        self.acts = nn.ModuleList()
        width = dims.x_dim + ((dims.ctx_dim or 0) if self.fused else 0)
        for name, h in zip(self.names, cfg.model.hidden, strict=True):
            self.fcs.append(make_linear(spec, width, h, q.weight_bits_for(name)))
            self.acts.append(make_relu(spec, q.act_bits_for(name), HIDDEN_MAX))
            width = h
        self.out = make_linear(spec, width, dims.num_classes, q.weight_bits_for("out"))
        self.out_quant = make_signed(spec, q.act_bits_for("out", q.output_bits), LOGIT_MAX)

    def trace(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> dict[str, IntQuantTensor]:
        t: dict[str, IntQuantTensor] = {"x": self.in_quant(x)}
        h = t["x"]
        if self.fused:
            if ctx is None:
                raise ApicalError("point model (views: both): the context input 'ctx' is required")
            t["ctx"] = self.in_quant(ctx)
            h = quant_tensor(torch.cat([t["x"].value, t["ctx"].value], dim=1), t["x"])
        for name, fc, act in zip(self.names, self.fcs, self.acts, strict=True):
            h = t[name] = act(fc(h))
        t["out"] = self.out_quant(self.out(h))
        return t

    def layer_specs(self) -> list[LayerSpec]:
        specs = []
        prev: tuple[str, ...] = self.input_names
        for name, fc in zip(self.names, self.fcs, strict=True):
            specs.append(LayerSpec(name, "dense", {"main": SiteSpec(prev, fc, "relu")}))
            prev = (name,)
        specs.append(LayerSpec("out", "dense", {"main": SiteSpec(prev, self.out, "identity")}))
        return specs
