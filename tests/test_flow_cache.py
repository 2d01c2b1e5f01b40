"""Step cache keys are derived from the config fields each step reads.

The flow records, while a step runs, the config fields it touches
(`apical.sw.config.record_reads`); its cache key is their values plus the
files it reads. The property: change any config field of a finished run and
exactly the steps that read it re-run (and those downstream whose input files
changed). The first test checks it for every field on stand-in steps whose
reads are known by construction (directly, through a helper, through
``dataclasses.replace``, through equality, through a method); the second on
the real steps, for the hardware fields, from a finished tiny run.
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

import apical.flows.flow as flow
from apical.flows.steps import STEPS, Step
from apical.sw.config import (
    Config,
    DataSource,
    LayerBits,
    ModelKind,
    config_to_dict,
    config_value,
    load_config,
    record_reads,
)

# --------------------------------------------------------------------------- every field


def leaf_fields(obj: Any = None, prefix: str = "") -> list[str]:
    """Every dotted leaf field of the config (derived from the dataclasses, so new fields are covered)."""
    obj = Config() if obj is None else obj
    out: list[str] = []
    for f in dataclasses.fields(obj):
        if not f.compare:
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += leaf_fields(v, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


_SPECIAL: dict[str, Any] = {
    "hardware.simulator": "verilator",
    "hardware.timing": "lfe5u-85f-6",
    "hardware.memory_init": "files",
    "hardware.pes": 4,
    "data.val_fraction": 0.2,
    "data.test_fraction": 0.25,
    "data.max_samples": 100,
    "data.source": DataSource.DIGITS,  # replaced below: digits is the default
    "quant.layers": {"out": LayerBits(weight_bits=3)},
    "quant.r_bits": 5,
    "quant.c_bits": 5,
    "model.k1": 0.25,
    "hardware.sim_path": "cocotb",
}


def changed(cfg: Config, dotted: str) -> Config:
    """``cfg`` with one leaf field set to another valid value."""
    section, _, name = dotted.rpartition(".")
    owner = getattr(cfg, section) if section else cfg
    old = getattr(owner, name)
    if dotted == "data.source":
        new: Any = DataSource.NPZ
        owner = dataclasses.replace(owner, path="x.npz")
    elif dotted == "model.views":  # both views apply to point nets only (same readers: the model)
        new = next(m for m in type(old) if m is not old)
        owner = dataclasses.replace(owner, kind=ModelKind.POINT)
    elif dotted == "hardware.waves":  # waveforms need the cocotb path (same readers: the hardware)
        new = not old
        owner = dataclasses.replace(owner, sim_path="cocotb")
    elif dotted in _SPECIAL:
        new = _SPECIAL[dotted]
    elif isinstance(old, Enum):
        new = next(m for m in type(old) if m is not old)
    elif isinstance(old, bool):
        new = not old
    elif isinstance(old, int):
        new = old + 1
    elif isinstance(old, float):
        new = old * 0.5 + 0.01
    elif isinstance(old, str):
        new = old + "-x"
    elif isinstance(old, tuple):
        new = (*old, 8)
    elif old is None:
        new = "other.npz"
    else:
        raise AssertionError(f"{dotted}: no way to change a {type(old).__name__}")
    try:
        owner = dataclasses.replace(owner, **{name: new})
    except ValueError:  # at the top of its range: go the other way
        owner = dataclasses.replace(owner, **{name: old - 1})
    out = dataclasses.replace(cfg, **{section: owner}) if section else owner
    assert config_value(out, dotted) != config_value(cfg, dotted), dotted
    return out


# Stand-in steps, each reading config fields in a different way; READS is the
# oracle (what each one reads, by construction).
READS: dict[str, set[str]] = {
    "direct": {"seed", "data.noise"},
    "replace": {f"hardware.{f.name}" for f in dataclasses.fields(Config().hardware)} - {"hardware.pes"},
    "equality": {f"model.{f.name}" for f in dataclasses.fields(Config().model)},
    "method": {"quant.layers", "quant.weight_bits"},
    "provenance": {"energy.table"},
    "files_only": set(),
}


def _write(run_dir: Path, name: str, value: Any) -> None:
    (run_dir / name).write_text(json.dumps(value, default=str, sort_keys=True))


def _stand_in_steps(ran: list[str]) -> tuple[Step, ...]:
    def direct(cfg: Config, run_dir: Path) -> dict:
        ran.append("direct")
        _write(run_dir, "direct.txt", [cfg.seed, _noise(cfg)])
        return {}

    def replace(cfg: Config, run_dir: Path) -> dict:
        ran.append("replace")
        upstream = (run_dir / "direct.txt").read_text()
        _write(run_dir, "replace.txt", [upstream, repr(dataclasses.replace(cfg.hardware, pes=1))])
        return {}

    def equality(cfg: Config, run_dir: Path) -> dict:
        ran.append("equality")
        return {"default_model": cfg.model == Config().model}

    def method(cfg: Config, run_dir: Path) -> dict:
        ran.append("method")
        return {"out_bits": cfg.quant.weight_bits_for("out")}

    def provenance(cfg: Config, run_dir: Path) -> dict:
        ran.append("provenance")
        # Copying the whole config into an artefact is provenance, not a read.
        return {"config": config_to_dict(cfg), "table": cfg.energy.table}

    def files_only(cfg: Config, run_dir: Path) -> dict:
        ran.append("files_only")
        return {"replace": (run_dir / "replace.txt").read_text()}

    return (
        Step("direct", direct, (), ("direct.json", "direct.txt"), ""),
        Step("replace", replace, ("direct.txt",), ("replace.json", "replace.txt"), ""),
        Step("equality", equality, (), ("equality.json",), ""),
        Step("method", method, (), ("method.json",), ""),
        Step("provenance", provenance, (), ("provenance.json",), ""),
        Step("files_only", files_only, ("replace.txt",), ("files_only.json",), ""),
    )


def _noise(cfg: Config) -> float:
    return cfg.data.noise  # read through a helper: still recorded


def _expected(field: str) -> list[str]:
    out = {s for s, r in READS.items() if field in r}
    if "direct" in out:
        out.add("replace")  # reads direct.txt
    if "replace" in out:
        out.add("files_only")  # reads replace.txt
    return [s for s in READS if s in out]


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ran: list[str] = []
    steps = _stand_in_steps(ran)
    monkeypatch.setattr(flow, "STEPS", steps)
    monkeypatch.setattr(flow, "step_by_name", lambda n: next(s for s in steps if s.name == n))
    return ran


def test_every_field_is_covered() -> None:
    fields = leaf_fields()
    assert "hardware.clock_mhz" in fields and "seed" in fields and "quant.layers" in fields
    assert "origin" not in fields


@pytest.mark.parametrize("field", leaf_fields())
def test_changing_a_field_reruns_exactly_its_readers(stand_ins: list[str], tmp_path: Path, field: str) -> None:
    cfg = Config()
    rec = flow.run_flow(cfg, tmp_path)
    assert {s: set(v["config_reads"]) for s, v in rec["steps"].items()} == READS
    stand_ins.clear()
    flow.run_flow(changed(cfg, field), tmp_path)
    assert stand_ins == _expected(field)
    stand_ins.clear()
    flow.run_flow(changed(cfg, field), tmp_path)
    assert stand_ins == []  # and then it is up to date


def test_record_reads_sees_nested_and_replaced_sections() -> None:
    cfg = Config()
    with record_reads(cfg) as log:
        base = dataclasses.replace(cfg, name="b")
        _ = base.hardware.clock_mhz  # the same section object: still the config's field
        _ = config_to_dict(cfg)  # provenance: not recorded
        _ = cfg.origin  # names a file, not a value
    assert log.fields == {"seed", "hardware.clock_mhz"}
    _ = cfg.hardware.pes  # outside the block: nothing recorded
    assert "hardware.pes" not in log.fields


# --------------------------------------------------------------------------- the real steps

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "digits", "max_samples": 200},
    "model": {"kind": "two_point", "hidden": [8]},
    "train": {"epochs": 1, "threads": 1},
    "hardware": {"pes": 2, "sim_samples": 2, "board": "zcu104"},  # zcu104: a Vivado tree, no tools run
    "energy": {"baseline": False},
}

# Hardware fields checked on the real flow, and the steps that must re-run
# (readers, then those whose input files changed). Synthesis (minutes of yosys)
# and the report are left out of the slice; everything else is the real flow.
REAL_EXPECTED = {
    "hardware.clock_mhz": ["energy", "bitstream"],
    "hardware.sim_samples": ["sim", "energy"],
    "hardware.backpressure": ["sim", "energy"],
    "hardware.max_weight_depth": ["rtl", "bitstream"],
    "hardware.pes": ["rtl", "sim", "energy", "bitstream"],
}


@pytest.mark.slow
def test_real_flow_reruns_exactly_the_readers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    cfg = load_config(tmp_path / "tiny.yaml")
    steps = tuple(s for s in STEPS if s.name not in ("synth", "report"))
    monkeypatch.setattr(flow, "STEPS", steps)
    run = tmp_path / "run"
    rec = flow.run_flow(cfg, run)
    reads = {s: set(v["config_reads"]) for s, v in rec["steps"].items()}
    # What the old hand-kept lists missed is now derived.
    assert {"hardware.clock_mhz", "hardware.max_weight_depth"} <= reads["bitstream"]
    assert "seed" in reads["sim"]
    # Export reads one hardware field: whether two-point layers are exported context-gated.
    early = reads["train"] | reads["export"] | reads["verify"]
    assert {k for k in early if k.startswith("hardware.")} <= {"hardware.context_gating"}
    for field, expected in REAL_EXPECTED.items():
        alt = changed(cfg, field)
        if field == "hardware.max_weight_depth":
            alt = dataclasses.replace(alt, hardware=dataclasses.replace(alt.hardware, max_weight_depth=4096))
        events: list[str] = []
        flow.run_flow(alt, run, reporter=lambda ev, step, info, ev_list=events: ev_list.append(f"{ev}:{step.name}"))
        assert [e.split(":")[1] for e in events if e.startswith("start:")] == expected, field
        # Back to the finished run: the changed steps run again, nothing stays stale.
        flow.run_flow(cfg, run)
    alt = dataclasses.replace(cfg, hardware=dataclasses.replace(cfg.hardware, clock_mhz=123.0))
    flow.run_flow(alt, run)
    xdc = "\n".join(p.read_text() for p in run.rglob("*.xdc"))
    assert "-period 8.130" in xdc, "the XDC follows the new clock (period 1000/123 ns)"
    energy = json.loads((run / "energy.json").read_text())
    assert "123" in json.dumps(energy)
