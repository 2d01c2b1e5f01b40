"""Brevitas quantizer choices and the quantized building blocks every apical model uses.

Power-of-two scales (``quant.scaling: po2``, the default) use Brevitas'
fixed-point quantizers, so every requantization is a shift and the eval forward
is bit-exact against the integer model. ``float`` selects the same quantizers
with float scales. Activation scales are learned parameters initialised from a
fixed ``max_val`` (no runtime-statistics phase), so a model behaves the same
from its first step and its state dict holds everything its eval forward
needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)
from brevitas.quant.base import ParamMinMaxInitScaling
from brevitas.quant_tensor import IntQuantTensor

from apical.sw.config import Config, Scaling

__all__ = [
    "QuantSpec",
    "make_input",
    "make_linear",
    "make_relu",
    "make_signed",
    "make_unsigned",
    "quant_tensor",
]


class _UintPo2(ParamMinMaxInitScaling, Uint8ActPerTensorFixedPoint):
    """Unsigned activations, learned power-of-two scale initialised from max_val."""


class _IntPo2(ParamMinMaxInitScaling, Int8ActPerTensorFixedPoint):
    """Signed activations, learned power-of-two scale initialised from max_val."""


class _UintFloat(ParamMinMaxInitScaling, Uint8ActPerTensorFloat):
    """Unsigned activations, learned float scale initialised from max_val."""


class _IntFloat(ParamMinMaxInitScaling, Int8ActPerTensorFloat):
    """Signed activations, learned float scale initialised from max_val."""


@dataclass(frozen=True)
class QuantSpec:
    """Which quantizer family a model uses (derived once from the config)."""

    po2: bool

    @classmethod
    def from_config(cls, cfg: Config) -> QuantSpec:
        return cls(po2=cfg.quant.scaling is Scaling.PO2)

    @property
    def weight(self) -> type:
        return Int8WeightPerTensorFixedPoint if self.po2 else Int8WeightPerTensorFloat

    @property
    def uact(self) -> type:
        return _UintPo2 if self.po2 else _UintFloat

    @property
    def sact(self) -> type:
        return _IntPo2 if self.po2 else _IntFloat


def make_linear(spec: QuantSpec, in_features: int, out_features: int, bits: int,
                cls: type[QuantLinear] = QuantLinear, **extra: Any) -> QuantLinear:
    """A quantized linear layer: narrow signed weights of ``bits``, 32-bit bias at accumulator scale.

    Narrow range (±(2^(b-1)-1)) keeps every weight inside the IR's signed range
    and the weight quantizer symmetric. ``cls`` (a `QuantLinear` subclass) and
    ``extra`` arguments select a variant such as the sparse granule layer.
    """
    return cls(
        in_features,
        out_features,
        bias=True,
        weight_quant=spec.weight,
        weight_bit_width=bits,
        bias_quant=Int32Bias,
        return_quant_tensor=False,
        **extra,
    )


def make_relu(spec: QuantSpec, bits: int, max_val: float) -> QuantReLU:
    return QuantReLU(act_quant=spec.uact, bit_width=bits, max_val=max_val, return_quant_tensor=True)


def make_unsigned(spec: QuantSpec, bits: int, max_val: float) -> QuantIdentity:
    return QuantIdentity(act_quant=spec.uact, bit_width=bits, max_val=max_val, return_quant_tensor=True)


def make_signed(spec: QuantSpec, bits: int, max_val: float) -> QuantIdentity:
    return QuantIdentity(
        act_quant=spec.sact, bit_width=bits, min_val=-max_val, max_val=max_val, return_quant_tensor=True
    )


def quant_tensor(value: torch.Tensor, like: IntQuantTensor) -> IntQuantTensor:
    """A quant tensor holding ``value`` (already on ``like``'s grid) with ``like``'s metadata."""
    return IntQuantTensor(value, like.scale, like.zero_point, like.bit_width, like.signed, like.training)


def make_input(spec: QuantSpec, bits: int) -> QuantIdentity:
    """Input quantizer for features in [0, 1]: unsigned, scale starting at exactly 2^-bits."""
    return make_unsigned(spec, bits, 1.0 - 2.0**-bits)
