"""Integer export: the Brevitas eval forward equals the golden integer model on every value of every layer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from apical.sw.config import config_to_dict, load_config, parse_config
from apical.sw.data import load_dataset
from apical.sw.errors import ApicalError
from apical.sw.export import (
    MULTIPLIER_BITS,
    brevitas_trace,
    export_ir,
    export_run,
    export_summary,
    float_requant,
    po2_exponent,
)
from apical.sw.golden import run_golden
from apical.sw.ir import load_ir, save_ir, validate_ir
from apical.sw.train import train, train_model


def _cfg(kind: str, model: dict | None = None, quant: dict | None = None, epochs: int = 2):
    d = config_to_dict(load_config())
    d["data"]["max_samples"] = 300
    d["model"].update({"kind": kind, "hidden": [24], "granules": 32, "modules": 3})
    d["model"].update(model or {})
    d["quant"].update(quant or {})
    d["train"].update({"epochs": epochs, "batch_size": 32, "patience": 5})
    return parse_config(d)


VARIANTS = [
    ("point", {}, {}),
    ("point", {"hidden": [16, 12]}, {"weight_bits": 3, "act_bits": 5, "input_bits": 6, "output_bits": 6}),
    ("two_point", {"modulation": "kay"}, {}),
    ("two_point", {"modulation": "coop", "lateral": True}, {"r_bits": 3, "c_bits": 5}),
    ("two_point", {"modulation": "additive", "context": False}, {}),
    ("two_point", {"context": False, "lateral": True, "hidden": [12, 8]}, {"act_bits": 4}),
    ("sparse_modular", {"combine": "sum", "local_loss": True}, {}),
    ("sparse_modular", {"combine": "concat", "fan_in": 3}, {"weight_bits": 2, "act_bits": 3}),
]


@pytest.mark.parametrize(("kind", "model", "quant"), VARIANTS)
def test_brevitas_eval_forward_equals_golden_on_every_value(kind, model, quant) -> None:
    cfg = _cfg(kind, model, quant)
    ds = load_dataset(cfg)
    net, _, _ = train_model(cfg, ds, progress=False)
    ir = export_ir(net, cfg)
    validate_ir(ir)
    assert ir.meta["model_kind"] == kind and ir.meta["scaling"] == "po2"
    assert all(s.requant.multiplier == 1 for layer in ir.layers for s in layer.sites.values())
    # Brevitas sums in float32: exact only while every worst-case accumulator fits 24 bits
    summary = export_summary(ir)
    assert all(site["float32_exact"] for layer in summary["layers"] for site in layer["sites"].values())
    inputs, outputs = brevitas_trace(net, ds.test)
    assert set(inputs) == {t.name for t in ir.inputs}
    gold = run_golden(ir, inputs)
    assert [layer.name for layer in ir.layers] == list(outputs)
    for name, got in outputs.items():
        assert got.shape == gold.outputs[name].shape
        bad = np.argwhere(got != gold.outputs[name])
        assert bad.size == 0, f"layer {name}: first mismatch at sample/neuron {bad[:1].tolist()}"
    # two-point sites: the requantized R and C match too
    with torch.no_grad():
        t = net.trace(torch.from_numpy(np.array(ds.test.x)),
                      None if ds.test.ctx is None else torch.from_numpy(np.array(ds.test.ctx)))
    for layer in ir.layers:
        if layer.kind == "two_point":
            for key in ("r", "c"):
                q = t[f"{layer.name}.{key}"]
                ints = torch.round(q.value / q.scale).long().numpy()
                assert np.array_equal(ints, gold.sites[(layer.name, key)]), (layer.name, key)
    # the network's predictions are the golden classes
    assert np.array_equal(net(*_tensors(ds.test, net)).argmax(1).numpy(), gold.classes)
    # the IR survives its disk form unchanged
    assert _ir_arrays(load_ir(save_ir(ir, _tmpdir(cfg)))) == _ir_arrays(ir)


def _tmpdir(cfg):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="apical-ir-")) / cfg.model.kind.value


def _tensors(split, net):
    x = torch.from_numpy(np.array(split.x))
    ctx = torch.from_numpy(np.array(split.ctx)) if "ctx" in net.input_names else None
    return x, ctx


def _ir_arrays(ir) -> list:
    out = []
    for layer in ir.layers:
        for key in layer.site_order:
            s = layer.sites[key]
            out.append((layer.name, key, s.sources, s.indptr.tolist(), s.indices.tolist(), s.data.tolist(),
                        s.bias.tolist(), s.requant, s.bits, s.signed, s.acc_bits, s.activation))
        out.append(None if layer.table is None else layer.table.tolist())
    return out


def test_sparse_export_stores_exactly_k_synapses_per_granule() -> None:
    cfg = _cfg("sparse_modular", {"fan_in": 4})
    net, _, _ = train_model(cfg, load_dataset(cfg), progress=False)
    site = export_ir(net, cfg).layer("granule").sites["main"]
    assert np.array_equal(site.fan_in(96), np.full(96, 4))
    assert site.nnz == 96 * 4


def test_float_scaling_exports_multipliers_and_stays_close() -> None:
    cfg = _cfg("point", quant={"scaling": "float"}, epochs=3)
    ds = load_dataset(cfg)
    net, _, _ = train_model(cfg, ds, progress=False)
    ir = export_ir(net, cfg)
    sites = [s for layer in ir.layers for s in layer.sites.values()]
    assert all(1 <= s.requant.multiplier < (1 << MULTIPLIER_BITS) for s in sites)
    assert any(s.requant.multiplier > 1 for s in sites)
    inputs, outputs = brevitas_trace(net, ds.test)
    gold = run_golden(ir, inputs)
    # float scales: golden is a fixed-point approximation; deviations stay at the LSB level
    for name, got in outputs.items():
        assert np.abs(got - gold.outputs[name]).max() <= 1, name
    assert np.mean(net(*_tensors(ds.test, net)).argmax(1).numpy() == gold.classes) > 0.97


@pytest.mark.parametrize("ratio", [1.0, 0.75, 3.1e-3, 123.456, 2.0**-20, 1e4])
def test_float_requant_approximates_the_ratio(ratio) -> None:
    rq = float_requant(ratio, "t")
    assert 1 <= rq.multiplier < (1 << MULTIPLIER_BITS)
    assert rq.multiplier >= 1 << (MULTIPLIER_BITS - 2)  # uses the multiplier's precision
    approx = rq.multiplier * 2.0**-rq.shift
    assert abs(approx - ratio) <= ratio * 2.0 ** -(MULTIPLIER_BITS - 2)


def test_po2_exponent() -> None:
    assert po2_exponent(0.0625, "t") == -4 and po2_exponent(8.0, "t") == 3
    with pytest.raises(ApicalError, match="not a power of two"):
        po2_exponent(0.3, "layer fc1")
    with pytest.raises(ApicalError):
        float_requant(math.nan, "t")


def test_export_run_writes_ir_vectors_and_summary(tmp_path) -> None:
    cfg = _cfg("two_point", {"hidden": [12]}, epochs=1)
    train(cfg, tmp_path, progress=False)
    summary = export_run(cfg, tmp_path)
    ir = load_ir(tmp_path / "ir")
    assert json.loads((tmp_path / "export.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["synapses"] == ir.synapses and summary["scaling"] == "po2"
    assert [layer["name"] for layer in summary["layers"]] == ["tp1", "out"]
    with np.load(tmp_path / "test_vectors.npz", allow_pickle=False) as tv:
        assert set(tv.files) == {"x", "ctx", "labels"}
        n = tv["labels"].shape[0]
        assert tv["x"].shape == (n, 64) and tv["ctx"].shape == (n, 64)
        assert tv["x"].min() >= 0 and tv["x"].max() <= 15 and np.issubdtype(tv["x"].dtype, np.integer)
        gold = run_golden(ir, {"x": tv["x"], "ctx": tv["ctx"]})
        labels = tv["labels"]
    train_json = json.loads((tmp_path / "train.json").read_text())
    assert abs(np.mean(gold.classes == labels) - train_json["test_acc"]) < 1e-9
