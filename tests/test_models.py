"""Brevitas models: quantized ranges, sparse masks (exactly K per granule), two-point modulation tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apical.sw.config import (
    LayerBits,
    Modulation,
    Scaling,
    config_to_dict,
    load_config,
    parse_config,
)
from apical.sw.errors import ApicalError
from apical.sw.ir import int_range
from apical.sw.models import ModelDims, build_model
from apical.sw.models.modulation import transfer

DIMS = ModelDims(x_dim=20, ctx_dim=12, num_classes=5)


def _cfg(kind: str, model: dict | None = None, quant: dict | None = None):
    d = config_to_dict(load_config())
    d["model"]["kind"] = kind
    d["model"]["hidden"] = [16]
    d["model"]["granules"] = 24
    d["model"]["modules"] = 3
    d["model"].update(model or {})
    d["quant"].update(quant or {})
    return parse_config(d)


def _batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, DIMS.x_dim, generator=g), torch.rand(n, DIMS.ctx_dim, generator=g)


def _steps(model, n: int = 4) -> None:
    """A few optimizer steps so weights and scales move away from their initial values."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for i in range(n):
        x, c = _batch(seed=i)
        loss = torch.nn.functional.cross_entropy(model(x, c), torch.arange(32) % DIMS.num_classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.constrain_()
    model.finalize_()
    model.eval()


def _linears(model):
    from brevitas.nn import QuantLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


@pytest.mark.parametrize(
    ("kind", "layer_bits"),
    [
        ("point", {"fc1": LayerBits(weight_bits=2, act_bits=3), "out": LayerBits(weight_bits=8)}),
        ("two_point", {"tp1": LayerBits(weight_bits=3, act_bits=5)}),
        ("sparse_modular", {"granule": LayerBits(weight_bits=5, act_bits=2), "out": LayerBits(weight_bits=6)}),
    ],
)
def test_quantized_values_lie_in_declared_ranges(kind, layer_bits) -> None:
    cfg = _cfg(kind)
    cfg = cfg.replace(quant=cfg.quant.__class__(**{**cfg.quant.__dict__, "layers": layer_bits}))
    model = build_model(cfg, DIMS)
    _steps(model)
    for spec in model.layer_specs():
        for key, site in spec.sites.items():
            if site.linear is None:
                continue
            bits = cfg.quant.weight_bits_for(spec.name)
            qw = site.linear.quant_weight()
            ints = torch.round(qw.value / qw.scale)
            assert int(qw.bit_width) == bits, (spec.name, key)
            lo, hi = int_range(bits, True)
            assert ints.min() >= lo + 1 and ints.max() <= hi, (spec.name, key)  # narrow range
            assert torch.equal(ints * qw.scale, qw.value)
    t = model.trace(*_batch())
    for name, q in t.items():
        ints = torch.round(q.value / q.scale)
        assert torch.equal(ints * q.scale, q.value), name  # on the grid
        lo, hi = int_range(int(q.bit_width), bool(q.signed))
        assert ints.min() >= lo and ints.max() <= hi, name
    for name, lb in layer_bits.items():
        if lb.act_bits is not None:
            assert int(t[name].bit_width) == lb.act_bits
    # default scaling is po2: every scale is an exact power of two
    for q in t.values():
        assert math.frexp(float(q.scale.detach()))[0] == 0.5


def test_float_scaling_selects_float_quantizers() -> None:
    model = build_model(_cfg("point", quant={"scaling": Scaling.FLOAT.value}), DIMS)
    _steps(model)
    scales = [float(lin.quant_weight().scale.detach()) for lin in _linears(model).values()]
    assert any(math.frexp(s)[0] != 0.5 for s in scales)


@pytest.mark.parametrize("combine", ["sum", "concat"])
@pytest.mark.parametrize("fan_in", [1, 4])
def test_every_granule_has_exactly_k_nonzero_quantized_weights(combine, fan_in) -> None:
    cfg = _cfg("sparse_modular", {"fan_in": fan_in, "combine": combine, "local_loss": True})
    model = build_model(cfg, DIMS)
    _steps(model)
    # Force the corner case: masked-in weights far below one quantization step.
    with torch.no_grad():
        w = model.granule.weight
        w[0:5] = w[0:5] * 1e-4
        w[6, :] = 0.0
        w[7, :] *= -1e-6
        w[1, 0] = w.abs().max()  # keep the scale where training left it
    model.finalize_()
    qw = model.granule.quant_weight()
    ints = torch.round(qw.value / qw.scale)
    nz = (ints != 0).sum(dim=1)
    assert torch.equal(nz, torch.full_like(nz, fan_in))
    mask = model.granule_mask
    assert torch.equal((ints != 0).float(), mask)
    assert torch.equal(mask.sum(dim=1), torch.full((mask.shape[0],), float(fan_in)))
    if combine == "concat":
        qo = model.out.quant_weight()
        outside = (torch.round(qo.value / qo.scale) != 0) & (model.out_mask == 0)
        assert not outside.any()  # modules do not share readouts


def test_granule_masks_differ_between_modules_and_are_seeded() -> None:
    a = build_model(_cfg("sparse_modular"), DIMS).granule_mask
    b = build_model(_cfg("sparse_modular"), DIMS).granule_mask
    c = build_model(_cfg("sparse_modular").replace(seed=5), DIMS).granule_mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(r.tolist()) for r in a}) > a.shape[0] // 2


def test_local_loss_gives_one_logit_block_per_module() -> None:
    model = build_model(_cfg("sparse_modular", {"local_loss": True}), DIMS)
    t = model.trace(*_batch())
    aux = model.aux_logits(t)
    assert len(aux) == 3 and all(a.shape == (32, DIMS.num_classes) for a in aux)
    # A module's local loss reaches its own granules; elsewhere only the one weight that sets
    # the layer's shared (max-statistics) scale can see a gradient.
    aux[1].sum().backward()
    g = model.granule.weight.grad
    outside = torch.cat([g[:24], g[48:]])
    assert int((outside != 0).sum()) <= 1 and int((g[24:48] != 0).sum()) > 24


@pytest.mark.parametrize("modulation", [m.value for m in Modulation])
def test_two_point_eval_forward_gathers_from_its_own_table(modulation) -> None:
    cfg = _cfg("two_point", {"modulation": modulation, "k2": 0.7})
    model = build_model(cfg, DIMS)
    _steps(model)
    x, c = _batch(64, seed=9)
    t = model.trace(x, c)
    r, cq, y = t["tp1.r"], t["tp1.c"], t["tp1"]
    layer = model.tps[0]
    table = layer.mod.table_ints(r, cq)
    assert table.shape == (1 << cfg.quant.r_bits, 1 << cfg.quant.c_bits)
    ri = torch.round(r.value / r.scale).long() - int_range(cfg.quant.r_bits, True)[0]
    ci = torch.round(cq.value / cq.scale).long() - int_range(cfg.quant.c_bits, True)[0]
    assert torch.equal(torch.round(y.value / y.scale).long(), table[ri, ci])
    # The table is the quantized f: compare with a float64 evaluation away from rounding ties.
    lo_r = int_range(cfg.quant.r_bits, True)[0]
    lo_c = int_range(cfg.quant.c_bits, True)[0]
    rr = (torch.arange(table.shape[0], dtype=torch.float64) + lo_r) * float(r.scale.detach())
    cc = (torch.arange(table.shape[1], dtype=torch.float64) + lo_c) * float(cq.scale.detach())
    f = transfer(Modulation(modulation), rr[:, None], cc[None, :], cfg.model.k1, 0.7) / float(y.scale.detach())
    hi = int_range(int(y.bit_width), False)[1]
    ref = torch.clamp(torch.round(f), 0, hi).long()
    clear = (f - torch.floor(f) - 0.5).abs() > 1e-4
    assert torch.equal(table[clear], ref[clear])


def test_kay_context_amplifies_agreement_and_damps_disagreement() -> None:
    r = torch.tensor([1.0, 1.0, 1.0])
    c = torch.tensor([0.0, 1.0, -1.0])
    f = transfer(Modulation.KAY, r, c, 0.5, 1.0)
    assert f[1] > f[0] > f[2] > 0
    assert torch.equal(transfer(Modulation.KAY, -r, c, 0.5, 1.0), torch.zeros(3))
    co = transfer(Modulation.COOP, torch.linspace(-3, 3, 50), torch.linspace(3, -3, 50), 0.5, 1.0)
    assert co.min() >= 0 and co.max() <= 6
    assert torch.equal(transfer(Modulation.ADDITIVE, r, c, 0.5, 1.0), torch.relu(r + c))


def test_two_point_variants_build_and_name_their_layers() -> None:
    lat = build_model(_cfg("two_point", {"lateral": True, "hidden": [16, 8]}), DIMS)
    assert [s.name for s in lat.layer_specs()] == ["tp1", "tp1_lat", "tp2", "tp2_lat", "out"]
    assert lat.layer_specs()[1].sites["c"].sources == ("ctx", "tp1")
    noctx = build_model(_cfg("two_point", {"context": False}), DIMS)
    assert noctx.input_names == ("x",)
    x, c = _batch()
    # without context the output ignores whatever is passed as ctx
    assert torch.equal(noctx(x, c), noctx(x, torch.zeros_like(c)))
    with pytest.raises(ApicalError, match="context modality"):
        build_model(_cfg("two_point"), ModelDims(20, None, 5))
    with pytest.raises(ApicalError, match="lateral"):
        build_model(_cfg("two_point", {"lateral": True}, {"act_bits": 3}), DIMS)
    with pytest.raises(ApicalError, match="fan_in"):
        build_model(_cfg("sparse_modular", {"fan_in": 40}), DIMS)


def test_build_model_default_dims_come_from_the_data() -> None:
    model = build_model(load_config())
    assert model.dims == ModelDims(64, 64, 10)
    assert np.array_equal(model.input_names, ("x", "ctx"))


def test_quant_override_naming_no_layer_is_refused() -> None:
    """A per-layer override whose name is not a layer of the model would be silently ignored."""
    cfg = _cfg("point")
    quant = cfg.quant.__class__(**{**cfg.quant.__dict__, "layers": {"fc9": LayerBits(weight_bits=8)}})
    with pytest.raises(ApicalError, match=r"quant\.layers\.fc9: names no layer of this point model \(layers: fc1"):
        build_model(cfg.replace(quant=quant), DIMS)
    ok = cfg.quant.__class__(**{**cfg.quant.__dict__, "layers": {"fc1": LayerBits(weight_bits=8)}})
    build_model(cfg.replace(quant=ok), DIMS)
