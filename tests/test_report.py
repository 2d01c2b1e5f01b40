"""Report: both files written, plots embedded (no external links), missing parts shown as
"not run", malformed summaries named in one ApicalError."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from apical.flows.energy import energy_run
from apical.flows.report import write_report
from apical.sw.config import load_config
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import save_ir
from apical.sw.ir_random import random_inputs, random_ir


def full_run(tmp_path: Path) -> tuple[Path, dict, list]:
    """A run directory with every summary the report reads (energy from the real energy step)."""
    rng = np.random.default_rng(5)
    run = tmp_path / "run"
    ir = random_ir(rng, kind="two_point", layers=2)
    inputs = random_inputs(rng, ir, 24)
    save_ir(ir, run / "ir")
    np.savez(run / "test_vectors.npz", **inputs, labels=np.zeros(24, dtype=np.int64))
    bir = random_ir(rng, kind="dense", layers=2)
    save_ir(bir, run / "baseline" / "ir")
    np.savez(run / "baseline" / "test_vectors.npz", **random_inputs(rng, bir, 24), labels=np.zeros(24, dtype=np.int64))
    tot = run_golden(ir, inputs).total_counts()
    idx = [0, 3, 7]
    cycles = [11, 13, 17]
    sim = {
        "sample_indices": idx,
        "per_sample": [{"counters": {c: int(tot[c][i]) for c in COUNTERS}, "cycles": cy}
                       for i, cy in zip(idx, cycles, strict=True)],
        "pes": 8,
        "mismatches": 0,
        "simulator": "icarus",
    }
    (run / "sim.json").write_text(json.dumps(sim))
    (run / "train.json").write_text(json.dumps({"test_acc": 0.9312, "test_acc_no_context": 0.7125, "epochs": 3}))
    (run / "baseline" / "train.json").write_text(json.dumps({"test_acc": 0.8875}))
    (run / "verify.json").write_text(json.dumps({"mismatches": 0, "argmax_agreement": 1.0}))
    (run / "export.json").write_text(json.dumps({"scaling": "po2", "synapses": ir.synapses,
                                                 "layers": [{"name": la.name} for la in ir.layers]}))
    (run / "synth.json").write_text(json.dumps({
        "part": "xczu7ev-ffvc1156-2-e", "fits": True,
        "resources": {"lut": 1234, "ff": 2345, "dsp48e2": 8}, "utilization_pct": {"lut": 0.54},
    }))
    (run / "flow.json").write_text(json.dumps({"steps": {"train": {"wall_s": 1.5}, "energy": {"wall_s": 0.2}}}))
    (run / "config.yaml").write_text("name: report_test\nhardware:\n  pes: 8\n  clock_mhz: 250\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(run / "curves.png")
    plt.close(fig)
    energy = energy_run(load_config(), run, table="horowitz-45nm")
    from apical.flows.faults import faults_run

    faults_run(load_config(), run, kinds=["damage"], rates=[0.0, 0.5], draws=1, rtl_draws=0)
    return run, energy, list(ir.layers)


def test_full_report(tmp_path: Path) -> None:
    run, energy, ir_layers = full_run(tmp_path)
    out = write_report(run)
    html_text = (run / "report.html").read_text()
    md = (run / "report.md").read_text()
    assert Path(out["html"]) == run / "report.html" and Path(out["md"]) == run / "report.md"
    assert all(out["sections"].values()), out["sections"]
    # Self-contained: every image is a data URI; no external links or file references.
    srcs = re.findall(r'src="([^"]*)"', html_text)
    assert len(srcs) == len(out["plots"]) >= 5
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'src="http' not in html_text and "href=" not in html_text and "file:" not in html_text
    assert "Learning curves" in out["plots"] and "Against the point-neuron baseline" in out["plots"]
    # Figures come from the summaries.
    for text in (html_text, md):
        assert "93.12 %" in text and "71.25 %" in text and "88.75 %" in text
        assert f"{energy['per_synapse_pJ']:.4g}" in text
        assert f"{250e6 / np.mean([11, 13, 17]):.4g}" in text  # inferences/s at the configured clock
        assert "report_test" in text
        assert ", ".join(la.name for la in ir_layers) in text
    assert "1,234" in md and "not run" not in md.split("## Energy")[1].split("##")[0]
    assert "| RTL energy == golden energy | yes |" in md


def test_empty_run_dir_shows_not_run(tmp_path: Path) -> None:
    out = write_report(tmp_path)
    assert not any(out["sections"].values())
    md = (tmp_path / "report.md").read_text()
    html_text = (tmp_path / "report.html").read_text()
    assert md.count("not run") == len(out["sections"])
    assert html_text.count('class="notrun">not run<') == len(out["sections"])
    assert "<img" not in html_text


def test_partial_run(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text(json.dumps({"test_acc": 0.5}))
    out = write_report(tmp_path)
    assert out["sections"]["Accuracy"] is True and out["sections"]["Energy"] is False
    md = (tmp_path / "report.md").read_text()
    assert "50.00 %" in md and "baseline: not run" in md


@pytest.mark.parametrize(("name", "text"), [("synth.json", "{broken"), ("energy.json", "[1, 2]"),
                                             ("baseline/train.json", "")])
def test_malformed_summary_names_file(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
    with pytest.raises(ApicalError, match=re.escape(str(tmp_path / name))):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(ApicalError, match="run directory not found"):
        write_report(tmp_path / "nope")


def test_rtl_energy_mismatch_is_reported(tmp_path: Path) -> None:
    energy = {"table": "t", "rtl_matches_golden": False,
              "rtl": {"available": True, "mismatched_counters": ["events", "syn_ops"]}}
    (tmp_path / "energy.json").write_text(json.dumps(energy))
    (tmp_path / "sim.json").write_text(json.dumps({"bit_exact": False, "mismatches": {"count": 3}}))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| RTL == golden | no |" in md and "| RTL vs golden mismatches | 3 |" in md
    assert "| RTL energy == golden energy | no |" in md
    assert "| RTL counters differing from golden | events, syn_ops |" in md
