"""Sparse-modular (cerebellum-like) network: M modules of granule units with fixed K-sparse input masks.

IR layers: ``granule`` (all modules' granules, M x G units, each connected to
exactly K = ``fan_in`` randomly chosen inputs; ReLU, unsigned ``act_bits``),
then with ``combine: sum`` one readout ``out`` (M*G -> classes: the sum of the
module readouts is one accumulation, so they share one weight scale), or with
``combine: concat`` a block-diagonal ``out`` (each module's own readout,
signed ``act_bits``) followed by ``combine`` (M*classes -> classes). Granules
of different modules share no weights; with ``local_loss`` each module's
readout is also trained on its own cross-entropy, so the modules learn
independently. The masks are seeded buffers; `finalize_` nudges any masked-in
weight that quantizes to zero to one quantization step, so after quantization
every granule has exactly K non-zero weights.
"""

from __future__ import annotations

import torch
from brevitas.quant_tensor import IntQuantTensor

from apical.sw.config import Combine, Config
from apical.sw.errors import ApicalError
from apical.sw.models.base import ApicalNet, LayerSpec, ModelDims, SiteSpec
from apical.sw.models.point import HIDDEN_MAX, LOGIT_MAX
from apical.sw.models.quant import QuantSpec, make_input, make_linear, make_relu, make_signed

__all__ = ["SparseModularNet", "granule_mask"]


def granule_mask(units: int, inputs: int, fan_in: int, seed: int) -> torch.Tensor:
    """A fixed [units, inputs] 0/1 mask with exactly ``fan_in`` ones per row (seeded)."""
    g = torch.Generator().manual_seed(seed % (1 << 63))
    mask = torch.zeros(units, inputs)
    for u in range(units):
        mask[u, torch.randperm(inputs, generator=g)[:fan_in]] = 1.0
    return mask


def _block_mask(modules: int, rows: int, cols: int) -> torch.Tensor:
    return torch.block_diag(*[torch.ones(rows, cols) for _ in range(modules)])


class SparseModularNet(ApicalNet):
    kind = "sparse_modular"
    input_names = ("x",)

    def __init__(self, cfg: Config, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        spec = QuantSpec.from_config(cfg)
        q, m = cfg.quant, cfg.model
        if m.fan_in > dims.x_dim:
            raise ApicalError(
                f"{cfg.origin}: model.fan_in: {m.fan_in} exceeds the input size {dims.x_dim}"
            )
        self.modules_n, self.granules, self.fan_in = m.modules, m.granules, m.fan_in
        self.num_classes = dims.num_classes
        self.concat = m.combine is Combine.CONCAT
        self.local_loss = bool(m.local_loss)
        units = m.modules * m.granules
        self.in_quant = make_input(spec, q.input_bits)
        self.granule = make_linear(spec, dims.x_dim, units, q.weight_bits_for("granule"))
        self.granule_act = make_relu(spec, q.act_bits_for("granule"), HIDDEN_MAX)
        self.register_buffer("granule_mask", granule_mask(units, dims.x_dim, m.fan_in, cfg.seed))
        if self.concat:
            self.out = make_linear(spec, units, m.modules * dims.num_classes, q.weight_bits_for("out"))
            self.out_quant = make_signed(spec, q.act_bits_for("out"), HIDDEN_MAX)
            self.register_buffer("out_mask", _block_mask(m.modules, dims.num_classes, m.granules))
            self.combine = make_linear(spec, m.modules * dims.num_classes, dims.num_classes,
                                       q.weight_bits_for("combine"))
            self.combine_quant = make_signed(spec, q.act_bits_for("combine", q.output_bits), LOGIT_MAX)
        else:
            self.out = make_linear(spec, units, dims.num_classes, q.weight_bits_for("out"))
            self.out_quant = make_signed(spec, q.act_bits_for("out", q.output_bits), LOGIT_MAX)
            self.out_mask = None
        self.constrain_()

    def trace(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> dict[str, IntQuantTensor]:
        t: dict[str, IntQuantTensor] = {"x": self.in_quant(x)}
        t["granule"] = self.granule_act(self.granule(t["x"]))
        t["out"] = self.out_quant(self.out(t["granule"]))
        if self.concat:
            t["combine"] = self.combine_quant(self.combine(t["out"]))
        return t

    def aux_logits(self, traced: dict[str, IntQuantTensor]) -> list[torch.Tensor]:
        """Each module's own readout logits (the local losses), when ``local_loss`` is set."""
        if not self.local_loss:
            return []
        g, c = self.granules, self.num_classes
        if self.concat:
            out = traced["out"].value
            return [out[:, k * c : (k + 1) * c] for k in range(self.modules_n)]
        h = traced["granule"].value
        w = self.out.quant_weight().value
        b = self.out.bias / self.modules_n
        return [h[:, k * g : (k + 1) * g] @ w[:, k * g : (k + 1) * g].t() + b for k in range(self.modules_n)]

    def constrain_(self) -> None:
        with torch.no_grad():
            self.granule.weight.mul_(self.granule_mask)
            if self.out_mask is not None:
                self.out.weight.mul_(self.out_mask)

    def finalize_(self) -> None:
        """Mask, then move masked-in weights that quantize to 0 to one step (sign kept).

        The weight scale comes from max|w|, which a weight of one step never
        exceeds, so the nudge leaves the scale and every other weight as they were.
        """
        self.constrain_()
        with torch.no_grad():
            qw = self.granule.quant_weight()
            ints = torch.round(qw.value / qw.scale)
            dead = (ints == 0) & (self.granule_mask > 0)
            if dead.any():
                w = self.granule.weight
                sign = torch.where(w >= 0, 1.0, -1.0)
                w.copy_(torch.where(dead, sign * qw.scale, w))

    def layer_specs(self) -> list[LayerSpec]:
        specs = [
            LayerSpec("granule", "dense", {"main": SiteSpec(("x",), self.granule, "relu")}),
            LayerSpec("out", "dense", {"main": SiteSpec(("granule",), self.out, "identity")}),
        ]
        if self.concat:
            specs.append(LayerSpec("combine", "dense", {"main": SiteSpec(("out",), self.combine, "identity")}))
        return specs
