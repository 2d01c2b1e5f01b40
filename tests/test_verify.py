"""The verify step on freshly trained tiny runs of all three model kinds.

Under po2 scales Brevitas and the golden model must agree on every value of
every layer of the whole test split; a deliberately corrupted IR must be
caught and located; float scales report their deviation consistently.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apical.sw.config import Config, parse_config
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.export import export_run
from apical.sw.ir import load_ir, replace_site, save_ir
from apical.sw.train import train
from apical.sw.verify import verify_run

# training three tiny nets takes ~15-30 s on 2 shared cores
pytestmark = pytest.mark.slow

KINDS: dict[str, dict[str, Any]] = {
    "point": {"hidden": [24, 16]},
    "two_point": {"hidden": [24], "lateral": True},
    "sparse_modular": {"modules": 3, "granules": 24, "fan_in": 4, "combine": "concat"},
}


def tiny(kind: str, scaling: str = "po2") -> Config:
    return parse_config(
        {
            "name": f"verify-{kind}-{scaling}",
            "data": {"max_samples": 500},
            "model": {"kind": kind, **KINDS[kind]},
            "quant": {"scaling": scaling, "layers": {"out": {"weight_bits": 6}}},
            "train": {"epochs": 4, "threads": 1},
        },
        "<test>",
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Config, Path, dict[str, Any]]]:
    out = {}
    for kind in KINDS:
        for scaling in ("po2", "float") if kind == "two_point" else ("po2",):
            cfg = tiny(kind, scaling)
            d = tmp_path_factory.mktemp(f"{kind}-{scaling}")
            tr = train(cfg, d, progress=False)
            export_run(cfg, d)
            out[(kind, scaling)] = (cfg, d, tr)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_po2_bit_exact_every_layer(runs: dict, kind: str) -> None:
    cfg, d, tr = runs[(kind, "po2")]
    v = verify_run(cfg, d)
    assert json.loads((d / "verify.json").read_text()) == json.loads(json.dumps(v))
    ir = load_ir(d / "ir")
    assert set(v["layers"]) == {la.name for la in ir.layers}
    for name, e in v["layers"].items():
        assert e["mismatches"] == 0, (name, e)
        assert e["max_abs_dev_lsb"] == 0, (name, e)
        assert e["values"] == v["samples"] * ir.layer(name).size
    # two-point sites (R and C before the table) are compared too
    tp_sites = {f"{la.name}.{k}" for la in ir.layers if la.kind == "two_point" for k in la.site_order}
    assert set(v["sites"]) == tp_sites
    assert (len(tp_sites) == 4) == (kind == "two_point")  # tp1 and its lateral pass
    for name, e in v["sites"].items():
        assert e["mismatches"] == 0, (name, e)
    assert v["bit_exact"] is True
    assert v["scaling"] == "po2" and v["model_kind"] == kind
    assert v["samples"] == tr["test_samples"] > 0
    assert v["argmax_agreement"] == 1.0
    assert v["golden_accuracy"] == v["brevitas_accuracy"]
    # Brevitas' integer argmax gives the accuracy training measured on the float logits
    assert v["brevitas_accuracy"] == pytest.approx(tr["test_acc"], abs=1e-9)


def test_corrupted_ir_is_caught_and_located(runs: dict, tmp_path: Path) -> None:
    cfg, d, _ = runs[("point", "po2")]
    work = tmp_path / "run"
    work.mkdir()
    for f in ("checkpoint.pt", "config.yaml"):
        (work / f).write_bytes((d / f).read_bytes())
    ir = load_ir(d / "ir")
    out = ir.layer("out")
    bias = out.sites["main"].bias.copy()
    shift = out.sites["main"].requant.shift
    bias[3] += 1 << (shift + 2) if shift >= 0 else 1  # +4 LSB (or 2**-shift) on neuron 3 before saturation
    layers = tuple(replace_site(la, "main", bias=bias) if la.name == "out" else la for la in ir.layers)
    # the accumulator needs room for the larger bias
    layers = tuple(
        replace_site(la, "main", acc_bits=min(48, la.sites["main"].acc_bits + 3)) if la.name == "out" else la
        for la in layers
    )
    save_ir(dataclasses.replace(ir, layers=layers), work / "ir")
    # Under po2 scales a difference is a failed check: verify.json is written first, then it raises.
    with pytest.raises(CheckFailed, match=r"sample \d+: out neuron 3: Brevitas -?\d+, golden -?\d+"):
        verify_run(cfg, work)
    v = json.loads((work / "verify.json").read_text())
    assert v["bit_exact"] is False
    assert v["layers"]["fc1"]["mismatches"] == 0 and v["layers"]["fc2"]["mismatches"] == 0
    e = v["layers"]["out"]
    assert e["mismatches"] > 0
    assert 1 <= e["max_abs_dev_lsb"] <= max(4, 2**-shift)
    assert e["first_mismatch"]["neuron"] == 3
    assert v["mismatches"] == e["mismatches"]


def test_float_scales_report_deviation(runs: dict) -> None:
    cfg, d, tr = runs[("two_point", "float")]
    v = verify_run(cfg, d)
    assert v["scaling"] == "float"
    devs = [e["max_abs_dev_lsb"] for e in v["layers"].values()]
    assert v["max_abs_dev_lsb"] == max(devs)
    assert v["bit_exact"] == (v["mismatches"] == 0) == (max(devs) == 0)
    assert 0.0 <= v["argmax_agreement"] <= 1.0
    assert v["brevitas_accuracy"] == pytest.approx(tr["test_acc"], abs=1e-9)
    agree = v["argmax_agreement"]
    assert abs(v["golden_accuracy"] - v["brevitas_accuracy"]) <= 1.0 - agree + 1e-9


def test_missing_ir_is_one_clear_error(runs: dict, tmp_path: Path) -> None:
    cfg, d, _ = runs[("point", "po2")]
    (tmp_path / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes())
    with pytest.raises(ApicalError, match=r"model\.yaml.*missing"):
        verify_run(cfg, tmp_path)
    assert not (tmp_path / "verify.json").exists()


def test_golden_matches_exported_test_vectors(runs: dict) -> None:
    """The export's test_vectors.npz (the sim's inputs) are the inputs verify compared on."""
    from apical.sw.golden import run_golden

    cfg, d, _ = runs[("two_point", "po2")]
    ir = load_ir(d / "ir")
    with np.load(d / "test_vectors.npz", allow_pickle=False) as tv:
        inputs = {t.name: tv[t.name] for t in ir.inputs}
        labels = tv["labels"]
    g = run_golden(ir, inputs)
    v = verify_run(cfg, d)
    assert float(np.mean(g.classes == labels)) == pytest.approx(v["golden_accuracy"], abs=1e-12)
