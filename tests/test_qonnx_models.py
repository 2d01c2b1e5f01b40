"""Models users really have (FINN's TFC at each bit width, MLPs with Brevitas' default float
quantizers, per-channel weights, BatchNorm1d, float bias) import, and the golden model of the
imported IR matches QONNX's own executor on 64 random float inputs: every output value (within
float32 noise of the executor) and every argmax. A model with several unsupported ops is refused
once, naming all of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).parent))
import qonnx_zoo as zoo

from apical.sw.errors import ApicalError
from apical.sw.qonnx_io import MULT_BITS, import_qonnx, import_run

EXPECTED_REQUANT = {
    "tfc_1w1a": ["threshold", "threshold", "threshold", "shift"],  # bipolar: exact thresholds
    "tfc_1w2a": ["per-neuron"] * 3 + ["shift"],  # narrow 2-bit after BatchNorm
    "tfc_2w2a": ["per-neuron"] * 3 + ["shift"],
    "float": ["multiplier", "multiplier"],  # per-tensor float scales
    "per_channel": ["per-neuron", "per-neuron"],
    "batchnorm": ["per-neuron", "multiplier"],
    "float_bias": ["per-neuron", "per-neuron"],
}


@pytest.mark.parametrize("name", [*zoo.TFC_CONFIGS, *zoo.MLPS])
def test_golden_matches_qonnx_executor(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.onnx"
    model = (zoo.build_tfc if name.startswith("tfc") else zoo.build_mlp)(name, path)
    ir = import_qonnx(path)
    fig = zoo.measure(path, ir, zoo.draw_inputs(name, 64), model)
    print(name, json.dumps({k: v for k, v in fig.items() if k != "codes"}))
    assert fig["requant"] == EXPECTED_REQUANT[name]
    assert fig["mismatches"] == 0, fig
    assert fig["max_lsb"] < 1e-3, fig  # what is left is the executor's float32 rounding
    assert fig["argmax_agree"] == 64
    # and Brevitas' own eval forward on the same floats (float scales: measured, here no value off)
    assert fig["brevitas_mismatches"] == 0 and fig["brevitas_argmax_agree"] == 64, fig
    assert fig["distinct_outputs"] > 8, "outputs degenerate: the comparison would prove little"
    if name.startswith("tfc"):
        assert ir.inputs[0].size == 784 and [la.size for la in ir.layers] == [64, 64, 64, 10]
        assert ir.meta["input_quant"]["bipolar"] == ("1a" in name)  # 1-bit input: BipolarQuant of 2x - 1
        assert ir.meta["input_quant"]["ops"] == [["mul", 2.0], ["add", -1.0]]
        if "2a" in name:
            assert all(la.sites["main"].narrow for la in ir.layers[:3])
        else:
            assert all(la.out_bits == 1 and not la.out_signed for la in ir.layers[:3])
        assert all(la.sites["main"].weight_bits == 2 for la in ir.layers)  # +-1 (and 0 for 2w narrow) codes


def test_dynamo_export_imports(tmp_path: Path) -> None:
    """The dynamo exporter writes Gemm-free MatMul graphs with other node names: same result."""
    import torch
    from brevitas.export import export_qonnx

    torch.manual_seed(0)
    model = zoo.FloatMLP(**zoo.MLPS["batchnorm"])
    zoo.calibrate_and_export(model, torch.randn(1, 12), lambda n: torch.randn(n, 12) * 2, tmp_path / "ts.onnx")
    export_qonnx(model, torch.randn(1, 12), str(tmp_path / "dyn.onnx"), dynamo=True)
    ir = import_qonnx(tmp_path / "dyn.onnx")
    fig = zoo.measure(tmp_path / "dyn.onnx", ir, zoo.draw_inputs("batchnorm", 32))
    assert fig["mismatches"] == 0 and fig["argmax_agree"] == 32
    assert fig["requant"] == EXPECTED_REQUANT["batchnorm"]


def test_float_multiplier_width_fits_dsp(tmp_path: Path) -> None:
    path = tmp_path / "float.onnx"
    zoo.build_mlp("float", path)
    ir = import_qonnx(path)
    for la in ir.layers:
        m = la.sites["main"].requant.multiplier
        assert 1 << (MULT_BITS - 1) <= m < 1 << MULT_BITS  # normalised: full precision, one DSP48E2 B port


def test_import_summary_notes_float_bias(tmp_path: Path) -> None:
    path = tmp_path / "fb.onnx"
    zoo.build_mlp("float_bias", path)
    summary = import_run(path, tmp_path / "run")
    assert summary["scaling"] == "float" and summary["exact"] is False
    assert any("Int32Bias" in n for n in summary["notes"])
    bn = import_run(zoo_path(tmp_path, "batchnorm"), tmp_path / "bn")
    assert bn["notes"] == []  # BatchNorm's Add is not a float bias
    assert [la["requant"] for la in summary["layers"]] == EXPECTED_REQUANT["float_bias"]


def zoo_path(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.onnx"
    (zoo.build_tfc if name.startswith("tfc") else zoo.build_mlp)(name, path)
    return path


def test_every_unsupported_node_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    zoo.build_mlp("float", path)
    model = onnx.load(str(path))
    g = model.graph
    relu = next(n for n in g.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Sigmoid", "my_sigmoid"
    # a Tanh after the input quantizer and a Softmax on the output
    first_q = next(n for n in g.node if n.op_type == "Quant" and n.input[0] == g.input[0].name)
    for n in g.node:
        for i, t in enumerate(n.input):
            if t == first_q.output[0]:
                n.input[i] = "tanh_out"
    g.node.append(helper.make_node("Tanh", [first_q.output[0]], ["tanh_out"], name="my_tanh"))
    old_out = g.output[0].name
    g.node.append(helper.make_node("Softmax", [old_out], ["probs"], name="my_softmax", axis=-1))
    g.output[0].name = "probs"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ApicalError) as e:
        import_qonnx(bad)
    msg = str(e.value)
    lines = msg.splitlines()
    assert "3 problems" in lines[0]
    assert len(lines) == 4  # a header, then one line per problem
    for op, name in (("Sigmoid", "my_sigmoid"), ("Tanh", "my_tanh"), ("Softmax", "my_softmax")):
        assert sum(f"{op} node '{name}'" in ln for ln in lines[1:]) == 1, msg


@pytest.mark.slow
@pytest.mark.parametrize(("name", "samples"), [("per_channel", 4), ("batchnorm", 4), ("tfc_1w1a", 2), ("tfc_2w2a", 2)])
def test_imported_rtl_bit_exact(tmp_path: Path, name: str, samples: int) -> None:
    """Float inputs -> input quantizer -> RTL on Icarus equals golden (per-neuron memory, thresholds, narrow)."""
    from apical.flows.cli import main

    path = tmp_path / f"{name}.onnx"
    (zoo.build_tfc if name.startswith("tfc") else zoo.build_mlp)(name, path)
    x = zoo.draw_inputs(name, samples)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    assert main(["import", str(path), "--out", str(run), "--inputs", str(tmp_path / "x.npy")]) == 0
    assert main(["sim", str(run), "--samples", str(samples), "--pes", "4"]) == 0  # exits 1 on any disagreement
    sim = json.loads((run / "sim.json").read_text())
    assert sim["bit_exact"] is True and sim["counters_match"] is True and sim["samples"] == samples


def test_finn_cnv_refused_with_every_conv_and_pool(tmp_path: Path) -> None:
    """FINN's CNV (convolutions) is refused once, each Conv and MaxPool on its own line."""
    import configparser

    import brevitas_examples.bnn_pynq as bnn
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models.CNV import cnv

    cfg = configparser.ConfigParser()
    cfg.read(Path(bnn.__file__).parent / "cfg" / "cnv_1w1a.ini")
    torch.manual_seed(0)
    export_qonnx(cnv(cfg).eval(), torch.rand(1, 3, 32, 32), str(tmp_path / "cnv.onnx"), dynamo=False)
    with pytest.raises(ApicalError) as e:
        import_qonnx(tmp_path / "cnv.onnx")
    lines = str(e.value).splitlines()
    assert "8 problems" in lines[0] and len(lines) == 9
    assert sum("Conv node" in ln for ln in lines) == 6 and sum("MaxPool node" in ln for ln in lines) == 2
