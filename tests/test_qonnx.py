"""QONNX import proof: an external Brevitas MLP, exported with ``export_qonnx``, imported
as an IR, gives golden outputs equal to QONNX's own execution on every value.

The MLP is written here (not with apical's models) with different widths per
layer: 8-bit input, 3- and 6-bit weights, 5-bit activations, 6-bit logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8Bias,
    Int8WeightPerTensorFixedPoint,
    Int32Bias,
    Uint8ActPerTensorFixedPoint,
)
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model
from torch import nn

from apical.sw.config import Config, ModelConfig, ModelKind
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import load_ir
from apical.sw.qonnx_io import TWO_POINT_REASON, export_qonnx_run, import_qonnx, import_run


class ExternalMLP(nn.Module):
    """8-bit input -> 3-bit weights -> 5-bit relu -> 6-bit weights [-> 4-bit weights -> 5-bit relu] -> 6-bit logits."""

    def __init__(self, bias: bool, deep: bool, act_in: type = Int8ActPerTensorFixedPoint, bias_quant: type = Int8Bias):
        super().__init__()
        self.inp = QuantIdentity(act_quant=act_in, bit_width=8, return_quant_tensor=True)
        widths = [(12, 9, 3), (9, 7, 4)] if deep else [(12, 9, 3)]
        layers: list[nn.Module] = []
        for i, o, wb in widths:
            layers.append(
                QuantLinear(i, o, bias=bias, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wb,
                            bias_quant=bias_quant if bias else None, return_quant_tensor=True)
            )
            layers.append(QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=5, return_quant_tensor=True))
        self.body = nn.Sequential(*layers)
        self.fc_out = QuantLinear(widths[-1][1], 5, bias=bias, weight_quant=Int8WeightPerTensorFixedPoint,
                                  weight_bit_width=6, bias_quant=bias_quant if bias else None,
                                  return_quant_tensor=True)
        self.out = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc_out(self.body(self.inp(x))))


def build_and_export(path: Path, *, bias: bool, deep: bool, dynamo: bool = True, **kw: type) -> ExternalMLP:
    torch.manual_seed(3)
    m = ExternalMLP(bias, deep, **kw)
    m.train()
    with torch.no_grad():  # let the runtime statistics settle on the input scale we feed
        for _ in range(4):
            m(torch.randn(128, 12) * 3)
    m.eval()
    export_qonnx(m, torch.randn(1, 12), str(path), dynamo=dynamo)
    return m


def qonnx_outputs(path: Path, x_float: np.ndarray) -> np.ndarray:
    model = cleanup_model(ModelWrapper(str(path)))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate(
        [execute_onnx(model, {iname: x_float[k : k + 1].astype(np.float32)})[oname] for k in range(len(x_float))]
    )


@pytest.mark.parametrize(
    ("bias", "deep", "dynamo"),
    [(True, False, True), (False, False, True), (True, True, True), (True, True, False)],
)
def test_import_matches_qonnx_execution(tmp_path: Path, bias: bool, deep: bool, dynamo: bool) -> None:
    path = tmp_path / "mlp.onnx"
    m = build_and_export(path, bias=bias, deep=deep, dynamo=dynamo)
    ir = import_qonnx(path)
    # the per-layer widths of the external model are carried over
    assert ir.inputs[0].bits == 8 and ir.inputs[0].signed
    wbits = [la.sites["main"].weight_bits for la in ir.layers]
    assert wbits == ([3, 4, 6] if deep else [3, 6])
    assert [la.out_bits for la in ir.layers] == ([5, 5, 6] if deep else [5, 6])
    assert [la.sites["main"].activation for la in ir.layers][-1] == "identity"
    assert any(np.any(la.sites["main"].bias != 0) for la in ir.layers) == bias

    rng = np.random.default_rng(0)
    t = ir.inputs[0]
    xi = rng.integers(t.range[0], t.range[1] + 1, size=(48, t.size))
    xi[rng.random(xi.shape) < 0.2] = 0
    x_float = xi * t.scale
    got = run_golden(ir, {"x": xi}).outputs["out"]
    ref = qonnx_outputs(path, x_float) / ir.layers[-1].out_scale
    assert np.array_equal(ref, np.round(ref)), "QONNX outputs are not on the output grid"
    assert np.array_equal(got, ref.astype(np.int64)), np.argwhere(got != ref)[:5]
    assert len(np.unique(got)) > 4, "outputs degenerate (all saturated or zero): test would prove little"
    # and Brevitas' own eval forward agrees too
    with torch.no_grad():
        brev = m(torch.from_numpy(x_float.astype(np.float32))).numpy() / ir.layers[-1].out_scale
    assert np.array_equal(got, np.round(brev).astype(np.int64))


def test_import_run_writes_ir_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    build_and_export(path, bias=True, deep=True, bias_quant=Int32Bias)
    summary = import_run(path, tmp_path / "run")
    ir = load_ir(tmp_path / "run" / "ir")
    assert (tmp_path / "run" / "import.json").is_file()
    assert [la["name"] for la in summary["layers"]] == [la.name for la in ir.layers] == ["fc1", "fc2", "out"]
    assert summary["synapses"] == ir.synapses == sum(la["synapses"] for la in summary["layers"])
    assert [la["shift"] for la in summary["layers"]] == [la.sites["main"].requant.shift for la in ir.layers]


def _edit(path: Path, fn) -> Path:  # type: ignore[no-untyped-def]
    model = onnx.load(str(path))
    fn(model)
    out = path.with_name("edited.onnx")
    onnx.save(model, str(out))
    return out


def test_unsupported_node_named(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    build_and_export(path, bias=True, deep=False)

    def relu_to_sigmoid(model: onnx.ModelProto) -> None:
        for n in model.graph.node:
            if n.op_type == "Relu":
                n.op_type = "Sigmoid"
                n.name = "my_sigmoid"

    with pytest.raises(ApicalError, match=r"Sigmoid node 'my_sigmoid'") as e:
        import_qonnx(_edit(path, relu_to_sigmoid))
    assert "\n" not in str(e.value)


def test_non_po2_scale_imported_as_multiplier(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    build_and_export(path, bias=False, deep=False, act_in=Int8ActPerTensorFloat)
    ir = import_qonnx(path)
    assert ir.meta["scaling"] == "float"
    assert ir.layers[0].sites["main"].requant.multiplier > 1  # the float input scale, as a fixed-point multiply


def test_missing_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(ApicalError, match="missing"):
        import_qonnx(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ApicalError, match=r"bad\.onnx"):
        import_qonnx(tmp_path / "bad.onnx")


def test_two_point_export_refused(tmp_path: Path) -> None:
    cfg = Config(model=ModelConfig(kind=ModelKind.TWO_POINT))
    with pytest.raises(ApicalError, match="2-D") as e:
        export_qonnx_run(cfg, tmp_path)
    assert TWO_POINT_REASON in str(e.value)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "model"),
    [("point", {"hidden": [16, 12]}), ("sparse_modular", {"modules": 2, "granules": 16, "fan_in": 4})],
)
def test_export_run_round_trips_through_import(tmp_path: Path, kind: str, model: dict) -> None:
    """A trained run exported to QONNX and imported back computes what its own IR computes."""
    from apical.sw.config import parse_config
    from apical.sw.export import export_run
    from apical.sw.train import train

    cfg = parse_config({"data": {"max_samples": 300}, "model": {"kind": kind, **model},
                        "train": {"epochs": 2, "threads": 1}}, "<test>")
    train(cfg, tmp_path, progress=False)
    export_run(cfg, tmp_path)
    path = export_qonnx_run(cfg, tmp_path)
    assert path == tmp_path / "model.onnx"
    imported = import_qonnx(path)
    ir = load_ir(tmp_path / "ir")
    assert imported.synapses == ir.synapses  # zero weights (sparse masks) are not stored either way
    with np.load(tmp_path / "test_vectors.npz", allow_pickle=False) as tv:
        x = tv["x"]
    a = run_golden(ir, {"x": x})
    b = run_golden(imported, {"x": x})
    assert np.array_equal(a.outputs[ir.layers[-1].name], b.outputs["out"])
    assert np.array_equal(a.classes, b.classes)
    # and QONNX's own execution agrees on a few samples
    ref = qonnx_outputs(path, x[:8] * ir.inputs[0].scale) / imported.layers[-1].out_scale
    assert np.array_equal(b.outputs["out"][:8], ref.astype(np.int64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.5, None])
def test_non_finite_or_odd_bit_width_is_a_reason_not_a_crash(tmp_path: Path, bad: float | None) -> None:
    path = tmp_path / "mlp.onnx"
    build_and_export(path, bias=True, deep=False)
    model = onnx.load(str(path))
    quant = next(n for n in model.graph.node if n.op_type == "Quant")
    init = next(i for i in model.graph.initializer if i.name == quant.input[3])
    value = np.zeros(0, dtype=np.float32) if bad is None else np.array(bad, dtype=np.float32)
    init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    onnx.save(model, str(path))
    # An empty bit width already fails qonnx's shape inference: one line naming the file.
    match = "mlp.onnx: QONNX normalisation failed" if bad is None else "bit width .* must be one integer in \\[2, 32\\]"
    with pytest.raises(ApicalError, match=match):
        import_qonnx(path)
