"""What every apical model exposes so training and export treat all kinds alike.

An `ApicalNet` computes named tensors: its IR inputs (``x``, ``ctx``) and one
output per IR layer, each a Brevitas `IntQuantTensor` (integer * scale).
`trace` returns them all (plus every two-point site value, keyed
``"<layer>.r"`` / ``"<layer>.c"``); `forward` returns the float logits. The
model also describes its IR layers (`layer_specs`): which quantized linear
feeds which site from which sources, so export never needs to know the model
kind. Layer names are the IR layer names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from brevitas.nn import QuantLinear
from brevitas.quant_tensor import IntQuantTensor
from torch import nn

__all__ = ["ApicalNet", "LayerSpec", "ModelDims", "SiteSpec"]


@dataclass(frozen=True)
class ModelDims:
    """The data-dependent sizes a model is built for."""

    x_dim: int
    ctx_dim: int | None
    num_classes: int


@dataclass(frozen=True, eq=False)
class SiteSpec:
    """One IR site: ``linear`` (or None: no synapses, zero bias) over the concatenated ``sources``.

    ``columns`` selects the input columns of ``linear`` this site uses (the
    first pass of a lateral two-point layer sees only the context part);
    ``scale_from`` names the traced tensor whose scale the forward fed into
    ``linear`` (it fixes the accumulator scale of the bias), by default the
    first source.
    """

    sources: tuple[str, ...]
    linear: QuantLinear | None
    activation: str  # "relu" | "identity"
    columns: slice | None = None
    scale_from: str | None = None

    @property
    def scale_source(self) -> str:
        return self.scale_from or self.sources[0]


@dataclass(frozen=True, eq=False)
class LayerSpec:
    name: str
    kind: str  # "dense" | "two_point"
    sites: dict[str, SiteSpec] = field(default_factory=dict)
    modulation: nn.Module | None = None  # two_point: a `TwoPointModulation`


class ApicalNet(nn.Module):
    """Base class: subclasses set ``kind`` and ``input_names`` and implement `trace`/`layer_specs`."""

    kind: str = ""
    input_names: tuple[str, ...] = ("x",)
    dims: ModelDims

    def trace(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> dict[str, IntQuantTensor]:
        raise NotImplementedError

    def layer_specs(self) -> list[LayerSpec]:
        raise NotImplementedError

    @property
    def output_name(self) -> str:
        return self.layer_specs()[-1].name

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        return self.trace(x, ctx)[self.output_name].value

    def aux_logits(self, traced: dict[str, IntQuantTensor]) -> list[torch.Tensor]:
        """Extra logits trained with their own loss (sparse-modular local losses); none by default."""
        return []

    def live_parameters(self) -> int:
        """Trainable parameters that can be non-zero (models with fixed masks leave theirs out)."""
        return int(sum(p.numel() for p in self.parameters() if p.requires_grad))

    def constrain_(self) -> None:
        """Re-impose structural constraints (connection masks) after an optimizer step."""

    def finalize_(self) -> None:
        """Make the trained weights export-ready (e.g. no masked-in weight quantizing to zero)."""
        self.constrain_()
