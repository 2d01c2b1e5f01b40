"""Two-point (context-modulated) network: layer-5 pyramidal-cell-like neurons, then a point readout.

Per two-point layer ``tpK``: R = QuantLinear_r(x) and C = QuantLinear_c(z),
each quantized signed (``r_bits`` / ``c_bits``), then y = f(R, C) quantized
unsigned (``act_bits``) through `TwoPointModulation`. The context z is the
context modality ``ctx`` (when ``model.context``). With ``model.lateral`` the
layer runs twice with shared weights: the first pass (IR layer ``tpK``) sees
``[ctx, 0]``, the second (IR layer ``tpK_lat``) sees ``[ctx, tpK]``, its
own first-pass activity; the context weights of both passes are one tensor, so
they share one scale, and the ``ctx`` input and the layers' outputs share one
quantizer (the IR concatenates them in one accumulation). Without context the
``c`` site exists with no synapses (C = 0). The readout is the dense layer
``out`` (signed ``output_bits``). With ``model.context_fan_in: K`` each unit's
context site keeps K randomly chosen context synapses (a fixed, seeded mask,
like the granule masks of the sparse-modular net).
"""

from __future__ import annotations

import torch
from brevitas.quant_tensor import IntQuantTensor
from torch import nn

from apical.sw.config import Config
from apical.sw.errors import ApicalError
from apical.sw.models.base import ApicalNet, LayerSpec, ModelDims, SiteSpec
from apical.sw.models.modulation import TwoPointModulation
from apical.sw.models.point import HIDDEN_MAX, LOGIT_MAX
from apical.sw.models.quant import (
    QuantSpec,
    make_input,
    make_linear,
    make_signed,
    make_unsigned,
    quant_tensor,
)

__all__ = ["SITE_MAX", "TwoPointLayer", "TwoPointNet"]

SITE_MAX = 2.0  # initial range of the R and C sites
LATERAL_SCALE = "lateral_scale"  # traced key: scale of the lateral context when there is no ctx input


class TwoPointLayer(nn.Module):
    """The weights and quantizers of one two-point layer (shared by its lateral pass)."""

    def __init__(self, spec: QuantSpec, cfg: Config, name: str, in_dim: int, c_dim: int, size: int,
                 out_quant: nn.Module) -> None:
        super().__init__()
        q, m = cfg.quant, cfg.model
        self.size = size
        self.r_lin = make_linear(spec, in_dim, size, q.weight_bits_for(name))
        self.c_lin = make_linear(spec, c_dim, size, q.weight_bits_for(name)) if c_dim else None
        self.r_quant = make_signed(spec, q.r_bits, SITE_MAX)
        self.c_quant = make_signed(spec, q.c_bits, SITE_MAX)
        self.mod = TwoPointModulation(m.modulation, m.k1, m.k2, out_quant)
        mask = None
        if self.c_lin is not None and m.context_fan_in is not None:
            from apical.sw.models.sparse_modular import granule_mask

            k = min(m.context_fan_in, c_dim)
            mask = granule_mask(size, c_dim, k, cfg.seed * 1009 + int(name[2:] or 0))
        self.register_buffer("c_mask", mask)  # None: dense context (not in the state dict)
        self.constrain_()

    def constrain_(self) -> None:
        if self.c_mask is not None and self.c_lin is not None:
            with torch.no_grad():
                self.c_lin.weight.mul_(self.c_mask)

    def context(self, z: IntQuantTensor | None, n: int) -> IntQuantTensor:
        if z is None or self.c_lin is None:
            return self.c_quant(torch.zeros(n, self.size))
        return self.c_quant(self.c_lin(z))


class TwoPointNet(ApicalNet):
    kind = "two_point"

    def __init__(self, cfg: Config, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        spec = QuantSpec.from_config(cfg)
        q, m = cfg.quant, cfg.model
        self.use_ctx = bool(m.context)
        self.lateral = bool(m.lateral)
        if self.use_ctx and dims.ctx_dim is None:
            raise ApicalError(
                f"{cfg.origin}: model.context: the data set has no context modality "
                "(set data.context, or give the npz file a 'ctx' array)"
            )
        self.ctx_dim = dims.ctx_dim if self.use_ctx else 0
        self.input_names = ("x", "ctx") if self.use_ctx else ("x",)
        self.names = [f"tp{i + 1}" for i in range(len(m.hidden))]
        self.in_quant = make_input(spec, q.input_bits)
        self.ctx_quant = make_input(spec, q.input_bits) if (self.use_ctx or self.lateral) else None
        self.tps = nn.ModuleList()
        width = dims.x_dim
        for name, h in zip(self.names, m.hidden, strict=True):
            if self.lateral:
                if q.act_bits_for(name) != q.input_bits:
                    raise ApicalError(
                        f"{cfg.origin}: quant: model.lateral needs act bits of {name} "
                        f"({q.act_bits_for(name)}) == input_bits ({q.input_bits}): "
                        "the context input and the layer output share one quantizer"
                    )
                out_quant = self.ctx_quant
            else:
                out_quant = make_unsigned(spec, q.act_bits_for(name), HIDDEN_MAX)
            c_dim = self.ctx_dim + (h if self.lateral else 0)
            self.tps.append(TwoPointLayer(spec, cfg, name, width, c_dim, h, out_quant))
            width = h
        self.out = make_linear(spec, width, dims.num_classes, q.weight_bits_for("out"))
        self.out_quant = make_signed(spec, q.act_bits_for("out", q.output_bits), LOGIT_MAX)

    def trace(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> dict[str, IntQuantTensor]:
        n = x.shape[0]
        t: dict[str, IntQuantTensor] = {"x": self.in_quant(x)}
        if self.use_ctx:
            if ctx is None:
                raise ApicalError("two-point model: the context input 'ctx' is required")
            t["ctx"] = self.ctx_quant(ctx)
        elif self.lateral:
            t[LATERAL_SCALE] = self.ctx_quant(torch.zeros(n, 1))
        like = t["ctx"] if self.use_ctx else t.get(LATERAL_SCALE)
        h = t["x"]
        for name, layer in zip(self.names, self.tps, strict=True):
            r = layer.r_quant(layer.r_lin(h))
            parts = [t["ctx"].value] if self.use_ctx else []
            if self.lateral:
                parts.append(torch.zeros(n, layer.size))
            z = quant_tensor(torch.cat(parts, dim=1), like) if parts else None
            c = layer.context(z, n)
            y = layer.mod(r, c)
            t[f"{name}.r"], t[f"{name}.c"], t[name] = r, c, y
            if self.lateral:
                parts[-1] = y.value
                c2 = layer.context(quant_tensor(torch.cat(parts, dim=1), y), n)
                y = layer.mod(r, c2)
                lat = f"{name}_lat"
                t[f"{lat}.r"], t[f"{lat}.c"], t[lat] = r, c2, y
            h = y
        t["out"] = self.out_quant(self.out(h))
        return t

    def constrain_(self) -> None:
        for layer in self.tps:
            layer.constrain_()

    def layer_specs(self) -> list[LayerSpec]:
        specs = []
        prev = "x"
        ctx_src = ("ctx",) if self.use_ctx else ()
        for name, layer in zip(self.names, self.tps, strict=True):
            r_site = SiteSpec((prev,), layer.r_lin, "identity")
            if self.use_ctx:
                c_site = SiteSpec(ctx_src, layer.c_lin, "identity", columns=slice(0, self.ctx_dim))
            elif self.lateral:
                # No synapses in the first pass, but the bias of the shared context weights applies.
                c_site = SiteSpec((prev,), layer.c_lin, "identity", columns=slice(0, 0),
                                  scale_from=LATERAL_SCALE)
            else:
                c_site = SiteSpec((prev,), None, "identity")
            specs.append(LayerSpec(name, "two_point", {"r": r_site, "c": c_site}, layer.mod))
            prev = name
            if self.lateral:
                c2 = SiteSpec((*ctx_src, name), layer.c_lin, "identity", scale_from=name)
                specs.append(LayerSpec(f"{name}_lat", "two_point", {"r": r_site, "c": c2}, layer.mod))
                prev = f"{name}_lat"
        specs.append(LayerSpec("out", "dense", {"main": SiteSpec((prev,), self.out, "identity")}))
        return specs
