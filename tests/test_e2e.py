"""End to end through the CLI: tiny configs of the three model kinds, every step.

These are the flow's acceptance checks at small scale: Brevitas == golden on
every layer (verify), RTL == golden on every value and counter (sim, Icarus),
RTL-counted energy == golden-counted energy, a report, and a resumed run that
skips every step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from apical.flows.cli import main

pytestmark = pytest.mark.slow


def _tiny(tmp_path: Path, kind: str, **model) -> Path:
    raw = {
        "name": f"tiny-{kind}",
        "seed": 1,
        "data": {"source": "digits", "noise": 0.2, "max_samples": 400},
        "model": {"kind": kind, "hidden": [12], "modules": 2, "granules": 16, "fan_in": 4, **model},
        "quant": {"input_bits": 4, "weight_bits": 4, "act_bits": 4, "output_bits": 8},
        "train": {"epochs": 2, "batch_size": 64, "patience": 2},
        "hardware": {"pes": 2, "sim_samples": 3, "simulator": "icarus"},
        "energy": {"table": "horowitz-45nm", "baseline": kind != "point"},
    }
    p = tmp_path / f"{kind}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _json(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


@pytest.mark.parametrize("kind", ["point", "two_point", "sparse_modular"])
def test_flow_end_to_end(tmp_path: Path, kind: str, capsys):
    cfg = _tiny(tmp_path, kind)
    run = tmp_path / "run"
    rc = main(["run", str(cfg), "--out", str(run), "--to", "energy"])
    err = capsys.readouterr().err
    assert rc == 0, err

    verify = _json(run, "verify.json")
    assert verify["bit_exact"] is True, verify
    sim = _json(run, "sim.json")
    assert sim["bit_exact"] is True and sim["mismatches"]["count"] == 0, sim
    assert sim["counters_match"] is True, sim
    assert len(sim["per_sample"]) == 3
    energy = _json(run, "energy.json")
    assert energy["rtl_matches_golden"] is True, energy
    if kind != "point":
        assert (run / "baseline" / "ir" / "model.yaml").exists()
        assert _json(run / "baseline", "verify.json")["bit_exact"] is True

    rc = main(["run", str(cfg), "--out", str(run), "--to", "energy"])
    err = capsys.readouterr().err
    assert rc == 0
    flow = _json(run, "flow.json")
    assert all(flow["steps"][s]["skipped"] for s in ("train", "export", "verify", "rtl", "sim", "energy"))

    rc = main(["report", str(run)])
    assert rc == 0
    html = (run / "report.html").read_text()
    assert "<img" in html and "http" not in html.split("<body", 1)[-1].split("src=")[-1][:8]
