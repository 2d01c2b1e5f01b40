"""`apical compare`: variants over seeds, golden-counted figures, validation-only headline, resume, plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apical.flows.cli import main
from apical.flows.compare import ACC_TOLERANCE, _pareto, compare, load_variant, variants_of
from apical.sw.config import config_to_dict, load_config, parse_config
from apical.sw.errors import ApicalError


def _cfg():
    d = config_to_dict(load_config())
    d["data"]["max_samples"] = 300
    d["model"]["hidden"] = [8]
    d["train"].update({"epochs": 2, "batch_size": 32, "threads": 1})
    return parse_config(d)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    var = out / "lean.yaml"
    var.write_text("model:\n  hidden: [4]\n")
    cfg = _cfg()
    return cfg, out, compare(cfg, 2, out, [load_variant(cfg, var)])


def test_compare_covers_the_variants_and_baselines(result) -> None:
    cfg, out, res = result
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(res))
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = [v["name"] for v in res["variants"]]
    assert names == [cfg.name, f"{cfg.name}+gating", "lean", "lean+gating", "point-driving", "point-both"]
    kinds = {v["name"]: v["kind"] for v in res["variants"]}
    assert kinds["lean"] == "two_point" and kinds["point-both"] == "point"
    for v in res["variants"]:
        assert v["seeds"] == [0, 1]
        accs = [r["test_acc"] for r in v["runs"]]
        assert v["test_acc_mean"] == pytest.approx(np.mean(accs)) and v["test_acc_min"] == min(accs)
        lo, hi = v["test_acc_ci95"]
        assert lo <= v["test_acc_mean"] <= hi
        assert v["syn_ops_mean"] == pytest.approx(np.mean([r["syn_ops"] for r in v["runs"]]))
        for r in v["runs"]:
            assert r["syn_ops"] == pytest.approx(sum(r["syn_ops_per_layer"].values()))
            assert r["energy_uJ"] > 0
    # the lean variant really is the smaller net
    lean = next(v for v in res["variants"] if v["name"] == "lean")
    assert lean["hidden"] == [4] and lean["synapses_mean"] < res["variants"][0]["synapses_mean"]


def test_gating_variant_is_the_same_models_with_fewer_counted_ops(result) -> None:
    cfg, _, res = result
    by = {v["name"]: v for v in res["variants"]}
    for name in (cfg.name, "lean"):
        plain, gated = by[name], by[f"{name}+gating"]
        assert gated["gated_from"] == name
        assert [r["test_acc"] for r in gated["runs"]] == [r["test_acc"] for r in plain["runs"]]
        assert [r["val_acc"] for r in gated["runs"]] == [r["val_acc"] for r in plain["runs"]]
        assert all(g["syn_ops"] <= p["syn_ops"] for g, p in zip(gated["runs"], plain["runs"], strict=True))
        assert all(g["gates"] == {"tp1": "r"} for g in gated["runs"])  # kay: R <= 0 fixes the output


def test_headline_is_chosen_on_validation(result) -> None:
    _, _, res = result
    h = res["headline"]
    by = {v["name"]: v for v in res["variants"]}
    points = [v for v in res["variants"] if v["kind"] == "point"]
    base = max(points, key=lambda v: v["val_acc_mean"])
    assert h["baseline"] == base["name"]
    two = by[h["two_point"]]
    equal = [v for v in res["variants"] if v["kind"] == "two_point"
             and v["val_acc_mean"] >= base["val_acc_mean"] - ACC_TOLERANCE]
    if equal:
        assert two["val_syn_ops_mean"] == min(v["val_syn_ops_mean"] for v in equal)
    assert h["syn_ops_ratio"] == pytest.approx(two["syn_ops_mean"] / base["syn_ops_mean"])
    assert h["acc_delta"] == pytest.approx(two["test_acc_mean"] - base["test_acc_mean"])


def test_compare_resumes_from_kept_runs(result) -> None:
    cfg, out, res = result
    again = compare(cfg, 2, out, [load_variant(cfg, out / "lean.yaml")])
    # every (variant, seed) came from runs/: same wall times, same figures
    assert again["variants"] == res["variants"]


def test_pareto_front_keeps_only_undominated_points() -> None:
    pts = [(1.0, 0.9), (2.0, 0.95), (1.5, 0.85), (3.0, 0.94), (0.5, 0.7)]
    assert _pareto(pts) == [(0.5, 0.7), (1.0, 0.9), (2.0, 0.95)]


def test_bad_variants_and_seeds_are_one_clear_error(tmp_path: Path, capsys) -> None:
    cfg = _cfg()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden: [0]\n")
    with pytest.raises(ApicalError, match=r"bad.yaml: model.hidden\[0\]"):
        load_variant(cfg, bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text(f"name: {cfg.name}\n")
    with pytest.raises(ApicalError, match="two variants"):
        variants_of(cfg, [load_variant(cfg, dup)])
    with pytest.raises(ApicalError, match="seeds"):
        compare(cfg, 0, tmp_path / "x")
    rc = main(["compare", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "missing.yaml" in capsys.readouterr().err


def _s(name: str, kind: str, val: float, val_ops: float, test: float, ops: float) -> dict:
    return {"name": name, "kind": kind, "val_acc_mean": val, "val_syn_ops_mean": val_ops,
            "test_acc_mean": test, "syn_ops_mean": ops, "energy_uJ_mean": ops * 1e-4}


def test_headline_rule_on_synthetic_summaries() -> None:
    from apical.flows.compare import _headline

    pts = [_s("pd", "point", 0.96, 2000, 0.95, 2000), _s("pb", "point", 0.985, 3400, 0.99, 3400)]
    # the cheapest two-point net within the tolerance on validation wins, whatever its test figures
    twos = [_s("big", "two_point", 0.99, 3000, 0.99, 3000), _s("lean", "two_point", 0.981, 1500, 0.97, 1600),
            _s("tiny", "two_point", 0.97, 500, 0.99, 500)]
    h = _headline([*pts, *twos])
    assert (h["baseline"], h["two_point"]) == ("pb", "lean")
    assert h["syn_ops_ratio"] == pytest.approx(1600 / 3400) and h["acc_delta"] == pytest.approx(0.97 - 0.99)
    assert h["equal_accuracy_on_validation"] is True
    # none within the tolerance: the most accurate on validation, flagged
    h = _headline([*pts, twos[2]])
    assert h["two_point"] == "tiny" and h["equal_accuracy_on_validation"] is False
    assert _headline(pts) is None
