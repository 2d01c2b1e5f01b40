"""The one typed config: YAML (safe_load) -> frozen dataclasses, validated here only.

Every section is a frozen dataclass. `load_config(path)` is the only place text
becomes these objects; an unknown key, a wrong type or an out-of-range value
raises `ApicalError` with one line naming the file and the dotted field, e.g.
``configs/x.yaml: model.fan_in: must be >= 1, got 0``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from apical.sw.errors import ApicalError

__all__ = [
    "Combine",
    "Config",
    "DataConfig",
    "DataSource",
    "EnergyConfig",
    "HardwareConfig",
    "LayerBits",
    "ModelConfig",
    "ModelKind",
    "Modulation",
    "QuantConfig",
    "Scaling",
    "TrainConfig",
    "TrainMode",
    "ConfigReads",
    "config_hash",
    "config_to_dict",
    "config_value",
    "default_config_path",
    "load_config",
    "parse_config",
    "record_reads",
]


# --------------------------------------------------------------------------- read recording
#
# The flow keys each step's cache on the config fields the step actually read
# (derived, never declared). Every section notes its field reads into the
# active `ConfigReads`, if any, the way `decimal` scopes its context: a
# ContextVar, set only inside `record_reads`.

_ACTIVE: contextvars.ContextVar[ConfigReads | None] = contextvars.ContextVar("apical_config_reads", default=None)


class ConfigReads:
    """The dotted config fields read (leaves: values that are not sections) while recording."""

    def __init__(self, root: Config) -> None:
        self._paths: dict[int, str] = {id(root): ""}
        self._keep: list[Any] = [root]  # the ids above stay valid while recording
        self.fields: set[str] = set()

    def note(self, owner: Any, name: str, value: Any) -> None:
        prefix = self._paths.get(id(owner))
        if prefix is None:
            return  # a section made during the step (e.g. by dataclasses.replace), not read from the config
        path = f"{prefix}{name}"
        if isinstance(value, _Section):
            if id(value) not in self._paths:
                self._paths[id(value)] = f"{path}."
                self._keep.append(value)
        else:
            self.fields.add(path)


class _Section:
    """Base of the config sections: field reads are noted while `record_reads` is active."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name[0] != "_":
            log = _ACTIVE.get()
            if log is not None:
                fields = object.__getattribute__(self, "__dataclass_fields__")
                f = fields.get(name)
                if f is not None and f.compare:  # `origin` (compare=False) names a file, not a value
                    log.note(self, name, value)
        return value


@contextlib.contextmanager
def record_reads(cfg: Config) -> Iterator[ConfigReads]:
    """Record the fields of ``cfg`` read inside the block (``reads.fields``: dotted names)."""
    log = ConfigReads(cfg)
    token = _ACTIVE.set(log)
    try:
        yield log
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def _unrecorded() -> Iterator[None]:
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def config_value(cfg: Config, dotted: str) -> Any:
    """The plain value of one dotted field (as `config_to_dict` writes it); None when absent."""
    cur: Any = config_to_dict(cfg)
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


class ModelKind(str, Enum):
    POINT = "point"
    TWO_POINT = "two_point"
    SPARSE_MODULAR = "sparse_modular"


class Modulation(str, Enum):
    KAY = "kay"
    COOP = "coop"
    ADDITIVE = "additive"


class Combine(str, Enum):
    SUM = "sum"
    CONCAT = "concat"


class TrainMode(str, Enum):
    END_TO_END = "end_to_end"  # one optimiser over the whole net
    DECOUPLED = "decoupled"  # sparse-modular: each module on its own local loss, then a combine stage


class Scaling(str, Enum):
    PO2 = "po2"  # power-of-two scales: requantization is a shift (bit-exact vs Brevitas)
    FLOAT = "float"  # float scales: multiplier + shift (golden == RTL, deviation reported)


class DataSource(str, Enum):
    DIGITS = "digits"  # scikit-learn's bundled 8x8 digits, multimodal pairing
    NPZ = "npz"  # user arrays: one per modality + labels
    IDX = "idx"  # MNIST-format IDX files


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class DataConfig(_Section):
    source: DataSource = DataSource.DIGITS
    # npz: one file with arrays `x` [N, ...], optional `ctx` [N, ...], `y` [N].
    # idx: path to an images IDX file; `labels_path` to its labels IDX file.
    path: str | None = None
    labels_path: str | None = None
    noise: float = 0.3  # std of Gaussian noise on the driving view (pixels in [0, 1])
    context_noise: float = 0.1  # std of noise on the context view
    context: bool = True  # produce the second (context) modality
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    max_samples: int | None = None

    def __post_init__(self) -> None:
        _check(self.noise >= 0, f"noise: must be >= 0, got {self.noise}")
        _check(self.context_noise >= 0, f"context_noise: must be >= 0, got {self.context_noise}")
        _check(0 < self.val_fraction < 0.5, f"val_fraction: must be in (0, 0.5), got {self.val_fraction}")
        _check(0 < self.test_fraction < 0.5, f"test_fraction: must be in (0, 0.5), got {self.test_fraction}")
        _check(self.max_samples is None or self.max_samples >= 10,
               f"max_samples: must be >= 10, got {self.max_samples}")
        _check(self.source is DataSource.DIGITS or self.path is not None,
               f"path: required when source is {self.source.value}")


@dataclass(frozen=True)
class ModelConfig(_Section):
    kind: ModelKind = ModelKind.TWO_POINT
    hidden: tuple[int, ...] = (64,)  # hidden layer widths (point and two-point nets)
    modulation: Modulation = Modulation.KAY
    k1: float = 0.5  # kay: fraction of R that passes regardless of context
    k2: float = 1.0  # kay: gain of the R*C interaction
    context: bool = True  # two-point: feed the context modality to the apical site
    lateral: bool = False  # two-point: also feed the layer's previous activity as context
    modules: int = 4  # sparse-modular: number of modules M
    granules: int = 128  # sparse-modular: granule units per module
    fan_in: int = 4  # sparse-modular: K inputs per granule unit
    combine: Combine = Combine.SUM
    local_loss: bool = False  # sparse-modular: each module also trained on its own loss

    def __post_init__(self) -> None:
        _check(len(self.hidden) >= 1, "hidden: needs at least one layer width")
        for i, h in enumerate(self.hidden):
            _check(1 <= h <= 4096, f"hidden[{i}]: must be in [1, 4096], got {h}")
        _check(0.0 <= self.k1 <= 1.0, f"k1: must be in [0, 1], got {self.k1}")
        _check(self.modules >= 1, f"modules: must be >= 1, got {self.modules}")
        _check(1 <= self.granules <= 4096, f"granules: must be in [1, 4096], got {self.granules}")
        _check(self.fan_in >= 1, f"fan_in: must be >= 1, got {self.fan_in}")


@dataclass(frozen=True)
class LayerBits(_Section):
    weight_bits: int | None = None
    act_bits: int | None = None

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits"):
            v = getattr(self, name)
            _check(v is None or 2 <= v <= 8, f"{name}: must be in [2, 8], got {v}")


@dataclass(frozen=True)
class QuantConfig(_Section):
    input_bits: int = 4
    weight_bits: int = 4
    act_bits: int = 4
    r_bits: int = 4  # two-point: receptive-field integration site after quantization
    c_bits: int = 4  # two-point: context integration site after quantization
    output_bits: int = 8  # the logits layer
    scaling: Scaling = Scaling.PO2
    # Per-layer overrides by layer name (names are those of the IR: fc1, tp1, out, ...).
    layers: dict[str, LayerBits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_bits", "weight_bits", "act_bits", "output_bits"):
            v = getattr(self, name)
            _check(2 <= v <= 8, f"{name}: must be in [2, 8], got {v}")
        for name in ("r_bits", "c_bits"):
            v = getattr(self, name)
            _check(3 <= v <= 6, f"{name}: must be in [3, 6], got {v}")

    def weight_bits_for(self, layer: str) -> int:
        lb = self.layers.get(layer)
        return lb.weight_bits if lb and lb.weight_bits is not None else self.weight_bits

    def act_bits_for(self, layer: str, default: int | None = None) -> int:
        lb = self.layers.get(layer)
        if lb and lb.act_bits is not None:
            return lb.act_bits
        return self.act_bits if default is None else default


@dataclass(frozen=True)
class TrainConfig(_Section):
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.01
    weight_decay: float = 0.0
    patience: int = 12  # early stopping on validation accuracy
    threads: int = 2
    # Decoupled module training (sparse-modular models; other kinds train end to end).
    mode: TrainMode = TrainMode.END_TO_END
    workers: int = 1  # local worker processes the modules are spread over
    combine_epochs: int = 20  # the combine stage: readout trained on the frozen modules

    def __post_init__(self) -> None:
        _check(1 <= self.workers <= 256, f"workers: must be in [1, 256], got {self.workers}")
        _check(self.combine_epochs >= 1, f"combine_epochs: must be >= 1, got {self.combine_epochs}")
        _check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        _check(self.patience >= 1, f"patience: must be >= 1, got {self.patience}")
        _check(self.threads >= 1, f"threads: must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class HardwareConfig(_Section):
    pes: int = 8  # processing elements P
    clock_mhz: float = 200.0
    max_weight_depth: int = 65536  # synapses one PE may hold (memory limit)
    simulator: str = "icarus"  # icarus | verilator
    sim_samples: int = 16  # test samples simulated by `apical sim`
    part: str = "xczu7ev-ffvc1156-2-e"
    board: str = "zcu104"
    waves: bool = False  # `apical sim` also writes a waveform
    backpressure: bool = True  # `apical sim` drives random back-pressure on both streams

    def __post_init__(self) -> None:
        _check(1 <= self.pes <= 64, f"pes: must be in [1, 64], got {self.pes}")
        _check(self.clock_mhz > 0, f"clock_mhz: must be > 0, got {self.clock_mhz}")
        _check(self.max_weight_depth >= 16, f"max_weight_depth: must be >= 16, got {self.max_weight_depth}")
        _check(self.simulator in ("icarus", "verilator"),
               f"simulator: must be icarus or verilator, got {self.simulator!r}")
        _check(self.sim_samples >= 1, f"sim_samples: must be >= 1, got {self.sim_samples}")


@dataclass(frozen=True)
class EnergyConfig(_Section):
    table: str = "mcc-ultrascale"  # shipped table name or a YAML file path
    baseline: bool = True  # train the point-neuron baseline on the same task and compare

    def __post_init__(self) -> None:
        _check(bool(self.table), "table: must not be empty")


@dataclass(frozen=True)
class Config(_Section):
    name: str = "apical"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    # Where the config was read from (for error messages); not part of the hash.
    origin: str = field(default="<default>", compare=False)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if issubclass(tp, Enum):
            return "one of " + ", ".join(repr(m.value) for m in tp)
        return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], where)
        raise ValueError(f"{where}: unsupported union type")
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: must be a list, got {value!r}")
        return tuple(_convert(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: must be a mapping, got {value!r}")
        return {
            _convert(k, key_tp, f"{where}"): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where}: must be {_type_name(tp)}, got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: must be a string, got {value!r}")
        return value
    raise ValueError(f"{where}: unsupported type {tp}")


def _build(cls: Any, raw: Any, where: str) -> Any:
    prefix = f"{where}." if where else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where or 'config'}: must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "origin"}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ValueError(f"{prefix}{key}: unknown field (known: {known})")
    kwargs = {name: _convert(raw[name], hints[name], f"{prefix}{name}") for name in fields if name in raw}
    try:
        return cls(**kwargs)
    except ValueError as e:
        msg = str(e)
        raise ValueError(f"{prefix}{msg}" if where else msg) from None


def parse_config(raw: Any, source: str = "<config>") -> Config:
    """Build a validated `Config` from a parsed YAML mapping."""
    try:
        cfg = _build(Config, raw, "")
    except ValueError as e:
        raise ApicalError(f"{source}: {e}") from None
    return dataclasses.replace(cfg, origin=source)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a YAML config; `None` loads the shipped default."""
    p = Path(path) if path is not None else default_config_path()
    try:
        text = p.read_text()
    except OSError as e:
        raise ApicalError(f"{p}: cannot read config ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ApicalError(f"{p}:{where} malformed YAML ({getattr(e, 'problem', e)})") from None
    return parse_config(raw, str(p))


def default_config_path() -> Path:
    return Path(str(resources.files("apical.flows") / "data" / "default.yaml"))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "origin"
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-data form of a config (round-trips through `parse_config`).

    Not a recorded read: copying the config into an artefact as provenance
    (checkpoints, summaries) does not make a step depend on every field.
    """
    with _unrecorded():
        return _plain(cfg)


def config_hash(cfg: Config) -> str:
    """Content hash of a config's values (the source path is not part of it)."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
