"""Sparse-modular (cerebellum-like) network: M modules of granule units with fixed K-sparse input masks.

IR layers: ``granule`` (all modules' granules, M x G units, each connected to
exactly K = ``fan_in`` randomly chosen inputs; ReLU, unsigned ``act_bits``),
then with ``combine: sum`` one readout ``out`` (M*G -> classes: the sum of the
module readouts is one accumulation, so they share one weight scale), or with
``combine: concat`` a block-diagonal ``out`` (each module's own readout,
signed ``act_bits``) followed by ``combine`` (M*classes -> classes). Granules
of different modules share no weights; with ``local_loss`` each module's
readout is also trained on its own cross-entropy. The masks are seeded
buffers; `finalize_` nudges any masked-in weight that quantizes to zero to one
quantization step, so after quantization every granule has exactly K non-zero
weights.

Module k's mask and initial granule weights derive from (seed, k) only
(`module_seed`), so a module built alone (``module_ids=(k,)``, as decoupled
training does, `apical.sw.train_modular`) starts exactly as the same module of
the whole net. The granule layer is computed from the fixed index of its K
inputs (`SparseQuantLinear`: a gather, so forward and backward cost follows the
live synapses); the weight stays stored as the masked [units, inputs] matrix
Brevitas quantizes and exports, so the IR, QONNX export and checkpoints are
those of a dense layer with zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from brevitas.nn import QuantLinear
from brevitas.quant_tensor import IntQuantTensor, QuantTensor

from apical.sw.config import Combine, Config
from apical.sw.errors import ApicalError
from apical.sw.models.base import ApicalNet, LayerSpec, ModelDims, SiteSpec
from apical.sw.models.point import HIDDEN_MAX, LOGIT_MAX
from apical.sw.models.quant import QuantSpec, make_input, make_linear, make_relu, make_signed

__all__ = ["SparseModularNet", "SparseQuantLinear", "granule_mask", "module_seed"]


def granule_mask(units: int, inputs: int, fan_in: int, seed: int) -> torch.Tensor:
    """A fixed [units, inputs] 0/1 mask with exactly ``fan_in`` ones per row (seeded)."""
    g = torch.Generator().manual_seed(seed % (1 << 63))
    mask = torch.zeros(units, inputs)
    for u in range(units):
        mask[u, torch.randperm(inputs, generator=g)[:fan_in]] = 1.0
    return mask


def module_seed(seed: int, module: int) -> int:
    """The seed of module ``module``'s own draws (mask, initial weights, data order): (seed, module) only."""
    return int(np.random.SeedSequence([seed % (1 << 63), module, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


def _module_masks(modules: Sequence[int], granules: int, inputs: int, fan_in: int, seed: int) -> torch.Tensor:
    return torch.cat([granule_mask(granules, inputs, fan_in, module_seed(seed, k)) for k in modules])


def _module_weights(modules: Sequence[int], granules: int, inputs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial granule weights and biases, drawn per module from (seed, module) as `nn.Linear` would."""
    bound = 1.0 / inputs**0.5  # kaiming_uniform(a=sqrt(5)) and the bias rule of torch.nn.Linear
    ws, bs = [], []
    for k in modules:
        g = torch.Generator().manual_seed(module_seed(seed, k) ^ 0x1)
        ws.append((torch.rand(granules, inputs, generator=g) * 2 - 1) * bound)
        bs.append((torch.rand(granules, generator=g) * 2 - 1) * bound)
    return torch.cat(ws), torch.cat(bs)


class SparseQuantLinear(QuantLinear):
    """A QuantLinear whose units each read exactly K inputs, computed by gathering them.

    ``index`` [units, K] (ascending inputs per unit) is the fixed connectivity;
    the weight is kept as the masked dense matrix (zeros elsewhere), so
    quantization, export and the state dict are those of `QuantLinear`, while
    the forward multiplies only the K live weights of each unit. With power-of-two
    scales every product and partial sum is an exact float, so the result equals
    the dense product bit for bit. Traced for QONNX export, it is the dense
    product, which the exported graph (Quant + Gemm) states.
    """

    def __init__(self, in_features: int, out_features: int, *, mask: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, **kwargs)
        self.register_buffer("index", torch.zeros(out_features, 0, dtype=torch.long), persistent=False)
        self.set_mask(mask)

    def set_mask(self, mask: torch.Tensor) -> None:
        """Take the connectivity from a 0/1 ``mask`` [units, inputs] with equal ones per row."""
        per_row = mask.sum(dim=1)
        if mask.shape != self.weight.shape or not bool((per_row == per_row[0]).all()):
            raise ValueError(f"mask: needs shape {tuple(self.weight.shape)} with equal ones per row")
        self.index = mask.nonzero()[:, 1].reshape(mask.shape[0], int(per_row[0]))  # ascending per unit

    def inner_forward_impl(self, x: torch.Tensor, quant_weight: torch.Tensor,
                           quant_bias: torch.Tensor | None) -> torch.Tensor:
        if torch.jit.is_tracing():  # QONNX export: the graph keeps the plain Gemm of a QuantLinear
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        xv = x.value if isinstance(x, QuantTensor) else x
        wv = quant_weight.value if isinstance(quant_weight, QuantTensor) else quant_weight
        out = (xv[:, self.index] * wv.gather(1, self.index)).sum(dim=-1)
        if quant_bias is not None:
            out = out + (quant_bias.value if isinstance(quant_bias, QuantTensor) else quant_bias)
        return out


def _block_mask(modules: int, rows: int, cols: int) -> torch.Tensor:
    return torch.block_diag(*[torch.ones(rows, cols) for _ in range(modules)])


class SparseModularNet(ApicalNet):
    kind = "sparse_modular"
    input_names = ("x",)

    def __init__(self, cfg: Config, dims: ModelDims, module_ids: Sequence[int] | None = None) -> None:
        """The whole net, or with ``module_ids`` only those modules (decoupled training builds one)."""
        super().__init__()
        self.dims = dims
        spec = QuantSpec.from_config(cfg)
        q, m = cfg.quant, cfg.model
        if m.fan_in > dims.x_dim:
            raise ApicalError(
                f"{cfg.origin}: model.fan_in: {m.fan_in} exceeds the input size {dims.x_dim}"
            )
        ids = tuple(range(m.modules)) if module_ids is None else tuple(module_ids)
        if not ids or any(not 0 <= k < m.modules for k in ids):
            raise ApicalError(f"{cfg.origin}: module ids {list(ids)} outside 0..{m.modules - 1}")
        self.module_ids = ids
        self.modules_n, self.granules, self.fan_in = len(ids), m.granules, m.fan_in
        self.num_classes = dims.num_classes
        self.concat = m.combine is Combine.CONCAT
        self.local_loss = bool(m.local_loss)
        units = self.modules_n * m.granules
        self.in_quant = make_input(spec, q.input_bits)
        mask = _module_masks(ids, m.granules, dims.x_dim, m.fan_in, cfg.seed)
        self.granule = make_linear(spec, dims.x_dim, units, q.weight_bits_for("granule"),
                                   cls=SparseQuantLinear, mask=mask)
        w, b = _module_weights(ids, m.granules, dims.x_dim, cfg.seed)
        with torch.no_grad():
            self.granule.weight.copy_(w)
            self.granule.bias.copy_(b)
        self.granule_act = make_relu(spec, q.act_bits_for("granule"), HIDDEN_MAX)
        self.register_buffer("granule_mask", mask)
        # A loaded state brings its own mask: the gather follows it.
        self.register_load_state_dict_post_hook(lambda net, _keys: net.granule.set_mask(net.granule_mask))
        if self.concat:
            self.out = make_linear(spec, units, self.modules_n * dims.num_classes, q.weight_bits_for("out"))
            self.out_quant = make_signed(spec, q.act_bits_for("out"), HIDDEN_MAX)
            self.register_buffer("out_mask", _block_mask(self.modules_n, dims.num_classes, m.granules))
            self.combine = make_linear(spec, self.modules_n * dims.num_classes, dims.num_classes,
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

    def live_parameters(self) -> int:
        """Trainable parameters that can be non-zero: masked-out weights are not counted."""
        dead = int((self.granule_mask == 0).sum())
        if self.out_mask is not None:
            dead += int((self.out_mask == 0).sum())
        return super().live_parameters() - dead

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
