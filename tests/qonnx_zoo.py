"""Models users really have, written here from their public sources, exported with Brevitas ``export_qonnx``.

* FINN's ``brevitas_examples.bnn_pynq`` TFC (784-64-64-64-10, BatchNorm1d,
  narrow-range/bipolar QuantIdentity, TensorNorm, input ``2x - 1``) at each
  bit width the module ships a config for (1w1a, 1w2a, 2w2a);
* external MLPs with Brevitas' default float quantizers, per-channel weights,
  BatchNorm1d, and the default (float) bias.

`measure` compares the golden model of the imported IR with QONNX's own
executor on float inputs (quantised by the model's input quantizer).
"""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model
from torch import nn

from apical.sw.golden import run_golden
from apical.sw.ir import IR
from apical.sw.qonnx_io import quantize_input


class Int8WeightPerChannelFixedPoint(Int8WeightPerTensorFixedPoint):
    """Per-channel power-of-two weight scales (the name the issue uses; brevitas 0.13 ships no such class)."""

    scaling_per_output_channel = True


TFC_CONFIGS = ("tfc_1w1a", "tfc_1w2a", "tfc_2w2a")


def tfc(name: str) -> nn.Module:
    """FINN's TFC from the config brevitas_examples ships (randomly initialised)."""
    import brevitas_examples.bnn_pynq as bnn
    from brevitas_examples.bnn_pynq.models.FC import fc

    cfg = configparser.ConfigParser()
    cfg.read(Path(bnn.__file__).parent / "cfg" / f"{name}.ini")
    return fc(cfg)


class FloatMLP(nn.Module):
    """Brevitas defaults everywhere: Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat."""

    def __init__(self, bias: bool = False, bn: bool = False, per_channel: bool = False) -> None:
        super().__init__()
        self.inp = QuantIdentity(return_quant_tensor=True)
        if per_channel:  # fixed-point per-channel then float per-channel, fixed-point activations
            self.fc1 = QuantLinear(12, 16, bias=bias, weight_quant=Int8WeightPerChannelFixedPoint, weight_bit_width=4)
            self.fc2 = QuantLinear(16, 6, bias=bias, weight_quant=Int8WeightPerChannelFloat)
            self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.act = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=5)
        else:
            self.fc1 = QuantLinear(12, 16, bias=bias)
            self.fc2 = QuantLinear(16, 6, bias=bias)
            self.act = QuantReLU()
        self.bn = nn.BatchNorm1d(16) if bn else nn.Identity()
        self.out = QuantIdentity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc2(self.act(self.bn(self.fc1(self.inp(x))))))


MLPS = {
    "float": dict(),
    "per_channel": dict(per_channel=True),
    "batchnorm": dict(bn=True),
    "float_bias": dict(bias=True),
}


def calibrate_and_export(model: nn.Module, example: torch.Tensor, draw, path: Path) -> nn.Module:
    """A few calibration batches in training mode (BatchNorm statistics, activation scales), then export."""
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(draw(64))
        if hasattr(model, "bn") and isinstance(model.bn, nn.BatchNorm1d):  # non-trivial BN parameters
            model.bn.weight.uniform_(-1.5, 1.5)
            model.bn.bias.uniform_(-0.5, 0.5)
    model.eval()
    export_qonnx(model, example, str(path), dynamo=False)
    return model


def build_tfc(name: str, path: Path, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return calibrate_and_export(tfc(name), torch.rand(1, 1, 28, 28), lambda n: torch.rand(n, 1, 28, 28), path)


def build_mlp(kind: str, path: Path, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return calibrate_and_export(FloatMLP(**MLPS[kind]), torch.randn(1, 12), lambda n: torch.randn(n, 12) * 2, path)


def draw_inputs(kind: str, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind.startswith("tfc"):
        return rng.random((n, 1, 28, 28)).astype(np.float32)
    return (rng.standard_normal((n, 12)) * 2).astype(np.float32)


def qonnx_execute(path: Path, x: np.ndarray) -> np.ndarray:
    model = cleanup_model(ModelWrapper(str(path)))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {iname: x[k : k + 1]})[oname] for k in range(len(x))])


def measure(path: Path, ir: IR, x: np.ndarray, model: nn.Module | None = None) -> dict:
    """Golden (on the input quantizer's codes) against QONNX's executor (on the floats), and
    against Brevitas' own eval forward when ``model`` is given."""
    codes = quantize_input(ir, x.reshape(len(x), -1))
    gold = run_golden(ir, {"x": codes})
    out = gold.outputs["out"]
    ref = qonnx_execute(path, x).reshape(out.shape).astype(np.float64)
    scale, offset = ir.layers[-1].out_scale, float(ir.meta.get("output_offset", 0.0))
    ref_codes = (ref - offset) / scale
    lsb = np.abs(out - ref_codes)
    return {
        "samples": len(x),
        "values": int(out.size),
        "mismatches": int(np.sum(out != np.round(ref_codes))),
        "max_lsb": float(lsb.max()),
        "argmax_agree": int(np.sum(gold.classes == np.argmax(ref, axis=1))),
        "distinct_outputs": len(np.unique(out)),
        "requant": list(ir.meta["requant"]),
        "codes": codes,
    } | ({} if model is None else _against_brevitas(model, x, out, gold.classes, scale, offset))


def _against_brevitas(model: nn.Module, x: np.ndarray, out: np.ndarray, classes: np.ndarray, scale: float,
                      offset: float) -> dict:
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy().reshape(out.shape).astype(np.float64)
    codes = (ref - offset) / scale
    return {
        "brevitas_mismatches": int(np.sum(out != np.round(codes))),
        "brevitas_max_lsb": float(np.abs(out - codes).max()),
        "brevitas_argmax_agree": int(np.sum(classes == np.argmax(ref, axis=1))),
    }
