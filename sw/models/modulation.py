"""The two-point neuron's modulatory transfer function f(R, C) and its lookup table.

`TwoPointModulation` owns f (by name: kay, coop, additive, silence) and the output
quantizer. In training it applies the float f to the quantized R and C
(straight-through gradients). In eval it builds the table of quantized f over
the whole (R_q, C_q) grid and gathers from it: the eval forward and the table
exported to the IR are therefore one computation, so a vectorised-vs-scalar
ulp difference in ``exp`` can never flip a rounding between them.
"""

from __future__ import annotations

import torch
from brevitas.quant_tensor import IntQuantTensor
from torch import nn

from apical.sw.config import Modulation
from apical.sw.ir import int_range
from apical.sw.models.quant import quant_tensor

__all__ = ["EXP_CLAMP", "TwoPointModulation", "transfer"]

EXP_CLAMP = 20.0  # kay: cap on k2*R*C so exp never overflows float32; the output saturates long before


def transfer(name: Modulation, r: torch.Tensor, c: torch.Tensor, k1: float, k2: float) -> torch.Tensor:
    """The float transfer function f(R, C) (output >= 0 for every supported f)."""
    if name is Modulation.KAY:
        gain = k1 + (1.0 - k1) * torch.exp(torch.clamp(k2 * r * c, max=EXP_CLAMP))
        return torch.relu(r * gain)
    if name is Modulation.COOP:
        return torch.clamp(r * r + 2.0 * r + c * (1.0 + torch.abs(r)), 0.0, 6.0)
    if name is Modulation.ADDITIVE:
        return torch.relu(r + c)
    if name is Modulation.SILENCE:
        # Zero for R <= 0 and for a context that disagrees (C <= -1/k2): both sites can gate.
        return torch.relu(r) * torch.relu(1.0 + k2 * c)
    raise ValueError(f"modulation: unsupported {name!r}")


def _ints(q: IntQuantTensor) -> torch.Tensor:
    return torch.round(q.value / q.scale).to(torch.int64)


class TwoPointModulation(nn.Module):
    """y = out_quant(f(R, C)); in eval, a gather from the table of that very expression."""

    def __init__(self, name: Modulation, k1: float, k2: float, out_quant: nn.Module) -> None:
        super().__init__()
        self.name = Modulation(name)
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.out_quant = out_quant

    def table(self, r_like: IntQuantTensor, c_like: IntQuantTensor) -> IntQuantTensor:
        """Quantized f over every (R_q, C_q) pair of the two sites' ranges: [2^bR, 2^bC]."""
        r_lo, r_hi = int_range(int(r_like.bit_width), bool(r_like.signed))
        c_lo, c_hi = int_range(int(c_like.bit_width), bool(c_like.signed))
        dev = r_like.value.device
        r = torch.arange(r_lo, r_hi + 1, device=dev, dtype=torch.float32) * r_like.scale
        c = torch.arange(c_lo, c_hi + 1, device=dev, dtype=torch.float32) * c_like.scale
        rr, cc = torch.meshgrid(r, c, indexing="ij")
        return self.out_quant(transfer(self.name, rr, cc, self.k1, self.k2))

    def table_ints(self, r_like: IntQuantTensor, c_like: IntQuantTensor) -> torch.Tensor:
        """The IR table: int64 [2^bR, 2^bC] of output integers."""
        return _ints(self.table(r_like, c_like))

    def forward(self, r: IntQuantTensor, c: IntQuantTensor) -> IntQuantTensor:
        if self.training:
            return self.out_quant(transfer(self.name, r.value, c.value, self.k1, self.k2))
        tab = self.table(r, c)
        r_lo = int_range(int(r.bit_width), bool(r.signed))[0]
        c_lo = int_range(int(c.bit_width), bool(c.signed))[0]
        n_c = tab.value.shape[1]
        idx = (_ints(r) - r_lo) * n_c + (_ints(c) - c_lo)
        return quant_tensor(tab.value.reshape(-1)[idx], tab)
