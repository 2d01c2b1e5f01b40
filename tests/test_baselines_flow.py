"""`apical run` trains, exports, verifies and costs both like-for-like point baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apical.flows.cli import main


@pytest.mark.slow
def test_run_compares_against_both_baselines(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\n"
        "data: {source: digits, noise: 0.1, context_noise: 0.1, max_samples: 300}\n"
        "model: {kind: two_point, hidden: [8]}\n"
        "train: {epochs: 2, threads: 1}\n"
    )
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "--to", "verify"]) == 0
    assert main(["energy", str(run)]) == 0

    def js(*p: str) -> dict:
        return json.loads(run.joinpath(*p).read_text())

    for sub, inputs in (("baseline", ["x"]), ("baseline_both", ["x", "ctx"])):
        assert js(sub, "verify.json")["bit_exact"] is True
        assert [i["name"] for i in js(sub, "export.json")["inputs"]] == inputs
        assert js(sub, "train.json")["model_kind"] == "point"
    e = js("energy.json")
    assert e["headline_baseline"] == "both" and e["baseline"]["name"] == "both"
    assert set(e["baselines"]) == {"both", "driving"}
    ops = e["syn_ops_per_inference"]["mean"]
    for b in e["baselines"].values():
        assert b["ratios"]["syn_ops_per_inference"] == pytest.approx(ops / b["syn_ops_per_inference"]["mean"])
    assert e["ratios"] == e["baselines"]["both"]["ratios"]
    # the both-views baseline sees the context too: more input events than the driving-only one
    assert e["baselines"]["both"]["syn_ops_per_inference"]["mean"] > 0
