"""Activity- and cost-aware training: silencing modulation, K-sparse context synapses, penalties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apical.sw.config import config_to_dict, load_config, parse_config
from apical.sw.data import load_dataset
from apical.sw.export import brevitas_trace, choose_gate, export_ir
from apical.sw.golden import run_golden
from apical.sw.ir import gating_values
from apical.sw.models import build_model
from apical.sw.models.modulation import transfer
from apical.sw.train import _expected_ops, train_model


def _cfg(model: dict | None = None, train: dict | None = None):
    d = config_to_dict(load_config())
    d["data"]["max_samples"] = 300
    d["model"].update({"hidden": [12], **(model or {})})
    d["train"].update({"epochs": 3, "batch_size": 32, "threads": 1, **(train or {})})
    return parse_config(d)


def test_silence_is_zero_when_context_disagrees_and_both_sites_gate() -> None:
    from apical.sw.config import Modulation

    r = torch.linspace(-2, 2, 17)[:, None]
    c = torch.linspace(-2, 2, 17)[None, :]
    f = transfer(Modulation.SILENCE, r, c, 0.5, 1.0)
    assert (f[r[:, 0] <= 0] == 0).all() and (f[:, c[0] <= -1] == 0).all()
    assert (f[(r[:, 0] > 0)][:, c[0] > -1] > 0).all()
    cfg = _cfg({"modulation": "silence"})
    ds = load_dataset(cfg)
    model, _, _ = train_model(cfg, ds, progress=False)
    ir = export_ir(model, cfg)
    tp = ir.layer("tp1")
    # the exported table keeps the silence: zero rows (R <= 0) and zero columns (C <= -1)
    assert gating_values(tp.table, "r").sum() >= tp.table.shape[0] // 2
    assert gating_values(tp.table, "c").sum() >= 1
    assert choose_gate(tp) in ("r", "c")


def test_k_sparse_context_keeps_k_synapses_per_unit() -> None:
    cfg = _cfg({"context_fan_in": 5})
    ds = load_dataset(cfg)
    model, _, _ = train_model(cfg, ds, progress=False)
    c = export_ir(model, cfg).layer("tp1").sites["c"]
    assert (c.fan_in(12) <= 5).all() and c.fan_in(12).sum() > 0
    r = export_ir(model, cfg).layer("tp1").sites["r"]
    assert r.fan_in(12).max() > 5  # the driving site stays dense
    # the mask is part of the model: a fresh build of the same config has the same one
    again = build_model(cfg)
    assert torch.equal(again.tps[0].c_mask, model.tps[0].c_mask)
    assert int(model.tps[0].c_mask.sum()) == 12 * 5


def test_expected_ops_tracks_activity_times_fan_out() -> None:
    cfg = _cfg()
    model = build_model(cfg)
    x = torch.rand(4, 64)
    ctx = torch.zeros(4, 64)
    with torch.no_grad():
        base = float(_expected_ops(model, model.trace(x, ctx)))
        busy = float(_expected_ops(model, model.trace(x, torch.ones(4, 64))))
        assert busy > base > 0  # more context activity, more expected ops
        model.tps[0].c_lin.weight.zero_()  # no context synapses: context activity costs nothing
        assert float(_expected_ops(model, model.trace(x, torch.ones(4, 64)))) == pytest.approx(base, rel=1e-5)


@pytest.mark.slow
def test_ops_penalty_lowers_counted_ops() -> None:
    ops = []
    for pen in (0.0, 20.0):
        cfg = _cfg(train={"epochs": 8, "ops_penalty": pen})
        ds = load_dataset(cfg)
        model, _, _ = train_model(cfg, ds, progress=False)
        ir = export_ir(model, cfg)
        ins, _ = brevitas_trace(model, ds.test)
        g = run_golden(ir, ins)
        ops.append(float(np.mean(sum(c["syn_ops"] for c in g.counts.values()))))
    assert ops[1] < 0.9 * ops[0], ops
