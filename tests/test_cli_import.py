"""`apical import` through the CLI: a QONNX MLP becomes a run directory the hardware
steps take (rtl, sim, energy, report), with test vectors given or generated."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from apical.flows.cli import main
from apical.sw.golden import run_golden
from apical.sw.ir import load_ir

sys.path.insert(0, str(Path(__file__).parent))
from test_qonnx import build_and_export


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    build_and_export(path, bias=True, deep=False)
    return path


@pytest.mark.slow
def test_import_then_hardware_steps(tmp_path: Path, onnx_model: Path, capsys):
    run = tmp_path / "run"
    assert main(["import", str(onnx_model), "--out", str(run)]) == 0
    ir = load_ir(run / "ir")
    with np.load(run / "test_vectors.npz", allow_pickle=False) as f:
        vectors = {t.name: f[t.name] for t in ir.inputs}
        labels = f["labels"]
    np.testing.assert_array_equal(labels, run_golden(ir, vectors).classes)
    assert main(["rtl", str(run), "--pes", "2"]) == 0
    assert main(["sim", str(run), "--samples", "3"]) == 0
    sim = json.loads((run / "sim.json").read_text())
    assert sim["bit_exact"] is True and sim["counters_match"] is True
    assert main(["energy", str(run)]) == 0
    assert json.loads((run / "energy.json").read_text())["rtl_matches_golden"] is True
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists()


def test_import_with_user_inputs(tmp_path: Path, onnx_model: Path):
    run = tmp_path / "run"
    ir_probe = tmp_path / "probe"
    assert main(["import", str(onnx_model), "--out", str(ir_probe)]) == 0
    ir = load_ir(ir_probe / "ir")
    rng = np.random.default_rng(5)
    arrays = {t.name: rng.integers(t.range[0], t.range[1] + 1, size=(7, t.size)) for t in ir.inputs}
    np.savez(tmp_path / "in.npz", **arrays)
    assert main(["import", str(onnx_model), "--out", str(run), "--inputs", str(tmp_path / "in.npz")]) == 0
    with np.load(run / "test_vectors.npz", allow_pickle=False) as f:
        for t in ir.inputs:
            np.testing.assert_array_equal(f[t.name], arrays[t.name])


def test_import_bad_inputs_and_existing_dir(tmp_path: Path, onnx_model: Path, capsys):
    run = tmp_path / "run"
    np.savez(tmp_path / "bad.npz", wrong=np.zeros((2, 3), dtype=np.int64))
    rc = main(["import", str(onnx_model), "--out", str(run), "--inputs", str(tmp_path / "bad.npz")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("apical: error: ") and "bad.npz" in err and "\n" not in err
    assert not (run / "ir").exists()  # nothing written on a failed import
    assert main(["import", str(onnx_model), "--out", str(run)]) == 0
    rc = main(["import", str(onnx_model), "--out", str(run)])
    assert rc == 1
    assert "exists" in capsys.readouterr().err
    assert main(["import", str(onnx_model), "--out", str(run), "--force"]) == 1  # the old flag, named
    assert "--overwrite" in capsys.readouterr().err
    assert main(["import", str(onnx_model), "--out", str(run), "--overwrite"]) == 0


def test_import_npy_float_and_integer_inputs(tmp_path: Path, onnx_model: Path):
    """A .npy works (it used to raise TypeError); floats go through the model's input quantizer."""
    from apical.sw.qonnx_io import quantize_input

    probe = tmp_path / "probe"
    assert main(["import", str(onnx_model), "--out", str(probe)]) == 0
    ir = load_ir(probe / "ir")
    t = ir.inputs[0]
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((5, t.size)) * 3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["import", str(onnx_model), "--out", str(tmp_path / "f"), "--inputs", str(tmp_path / "x.npy")]) == 0
    with np.load(tmp_path / "f" / "test_vectors.npz", allow_pickle=False) as f:
        codes = f["x"]
    np.testing.assert_array_equal(codes, quantize_input(ir, x))
    np.testing.assert_array_equal(codes, np.clip(np.round(x / t.scale), *t.range))  # po2 input Quant, by hand
    assert len(np.unique(codes)) > 5
    ints = rng.integers(t.range[0], t.range[1] + 1, size=(4, t.size))
    np.save(tmp_path / "i.npy", ints)
    assert main(["import", str(onnx_model), "--out", str(tmp_path / "i"), "--inputs", str(tmp_path / "i.npy")]) == 0
    with np.load(tmp_path / "i" / "test_vectors.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["x"], ints)
    summary = json.loads((tmp_path / "i" / "import.json").read_text())
    assert summary["input_quantizer"]["bits"] == t.bits


def test_import_refused_model_lists_problems_and_exits_1(tmp_path: Path, onnx_model: Path, capsys):
    import onnx

    model = onnx.load(str(onnx_model))
    for n, (op, name) in zip([n for n in model.graph.node if n.op_type == "Relu"], [("Sigmoid", "s1")], strict=False):
        n.op_type, n.name = op, name
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    assert main(["import", str(bad), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("apical: error: ") and "Sigmoid node 's1'" in err
    assert not (tmp_path / "run" / "ir").exists()
