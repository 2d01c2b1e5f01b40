"""The typed config: defaults, round trip, and one-line errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from apical.sw.config import (
    Config,
    ModelKind,
    Modulation,
    config_hash,
    config_to_dict,
    load_config,
    parse_config,
)
from apical.sw.errors import ApicalError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_loads_and_is_two_point():
    cfg = load_config(None)
    assert cfg.model.kind is ModelKind.TWO_POINT
    assert cfg.energy.baseline is True
    assert cfg.quant.scaling.value == "po2"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_configs_load(path: Path):
    cfg = load_config(path)
    assert cfg.origin == str(path)


def test_examples_cover_the_three_model_kinds():
    kinds = {load_config(p).model.kind for p in (REPO / "configs").glob("*.yaml")}
    assert kinds == set(ModelKind)


def test_round_trip_through_plain_dict():
    cfg = load_config(None)
    again = parse_config(config_to_dict(cfg))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_hash_changes_with_any_value():
    cfg = load_config(None)
    raw = config_to_dict(cfg)
    raw["model"]["k2"] = 2.0
    assert config_hash(parse_config(raw)) != config_hash(cfg)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"fan_in": 0}}, "cfg.yaml: model.fan_in: must be >= 1, got 0"),
        ({"model": {"fanin": 4}}, "cfg.yaml: model.fanin: unknown field"),
        ({"bogus": 1}, "cfg.yaml: bogus: unknown field"),
        ({"model": {"kind": "spiking"}}, "cfg.yaml: model.kind: must be one of"),
        ({"model": {"modulation": "mul"}}, "cfg.yaml: model.modulation: must be one of"),
        ({"train": {"epochs": "ten"}}, "cfg.yaml: train.epochs: must be an integer, got 'ten'"),
        ({"train": {"epochs": True}}, "cfg.yaml: train.epochs: must be an integer"),
        ({"quant": {"weight_bits": 9}}, "cfg.yaml: quant.weight_bits: must be in [2, 8], got 9"),
        ({"quant": {"r_bits": 2}}, "cfg.yaml: quant.r_bits: must be in [3, 6], got 2"),
        ({"quant": {"layers": {"fc1": {"act_bits": 1}}}}, "cfg.yaml: quant.layers.fc1.act_bits: must be in [2, 8]"),
        ({"quant": {"layers": {"fc1": {"bits": 4}}}}, "cfg.yaml: quant.layers.fc1.bits: unknown field"),
        ({"model": {"hidden": [64, 0]}}, "cfg.yaml: model.hidden[1]: must be in [1, 4096], got 0"),
        ({"model": {"hidden": 64}}, "cfg.yaml: model.hidden: must be a list"),
        ({"hardware": {"simulator": "vcs"}}, "cfg.yaml: hardware.simulator: must be one of 'icarus', 'verilator'"),
        ({"hardware": {"pes": 0}}, "cfg.yaml: hardware.pes: must be in [1, 64], got 0"),
        ({"data": {"source": "npz"}}, "cfg.yaml: data.path: required when source is npz"),
        ({"data": 3}, "cfg.yaml: data: must be a mapping"),
        ([1, 2], "cfg.yaml: config: must be a mapping"),
    ],
)
def test_bad_values_name_file_and_field(raw, message):
    with pytest.raises(ApicalError) as e:
        parse_config(raw, "cfg.yaml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_yaml_names_file_and_line(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  kind: [point\n")
    with pytest.raises(ApicalError, match=r"bad\.yaml: line \d+: malformed YAML"):
        load_config(p)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ApicalError, match=r"nope\.yaml: config not found"):
        load_config(tmp_path / "nope.yaml")


def test_per_layer_bit_overrides(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"quant": {"weight_bits": 4, "layers": {"out": {"weight_bits": 8}}}}))
    cfg = load_config(p)
    assert cfg.quant.weight_bits_for("out") == 8
    assert cfg.quant.weight_bits_for("fc1") == 4
    assert cfg.quant.act_bits_for("fc1") == cfg.quant.act_bits


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(list(ModelKind)),
    modulation=st.sampled_from(list(Modulation)),
    hidden=st.lists(st.integers(1, 512), min_size=1, max_size=3),
    bits=st.integers(2, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_valid_configs_round_trip(kind, modulation, hidden, bits, seed):
    raw = {
        "seed": seed,
        "model": {"kind": kind.value, "modulation": modulation.value, "hidden": hidden},
        "quant": {"weight_bits": bits, "act_bits": bits},
    }
    cfg = parse_config(raw, "x.yaml")
    assert cfg.model.hidden == tuple(hidden)
    assert parse_config(config_to_dict(cfg)) == cfg
