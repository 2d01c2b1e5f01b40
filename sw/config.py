"""The one typed config: YAML (safe_load) -> frozen dataclasses, validated in one place.

Every section is a frozen dataclass whose fields declare their type and range
(`apical.sw.schema.spec`: every number has finite bounds, the reason beside
the less obvious ones); `apical.sw.schema` checks them on every construction,
so files, `Config.replace` and command-line overrides pass the same rules.
`load_config(path)` is the only place text becomes these objects; an unknown
key, a wrong type or an out-of-range value raises `ApicalError` with one line
naming the file and the dotted field, e.g.
``configs/x.yaml: model.fan_in: must be >= 1, got 0``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

from apical.sw.errors import ApicalError
from apical.sw.safeio import load_yaml
from apical.sw.schema import Rule, Schema, SchemaError, build, spec

__all__ = [
    "BaselineMatch",
    "Combine",
    "Config",
    "ContextCode",
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
    "Views",
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


class _Section(Schema):
    """Base of the config sections: validated by `apical.sw.schema` on construction;
    field reads are noted while `record_reads` is active."""

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
    SILENCE = "silence"  # relu(R) * relu(1 + k2 * C): a disagreeing context (C <= -1/k2) silences the unit


class Views(str, Enum):
    """What a point-neuron net sees: the driving view alone, or both views concatenated."""

    DRIVING = "driving"
    BOTH = "both"  # early fusion: [x, ctx] feeds the first layer


class ContextCode(str, Enum):
    """How the digits task codes its context modality."""

    SPARSE = "sparse"  # zero where the source pixel is blank: context events scale with content
    OFFSET = "offset"  # 0.5 + 0.5 * sign * pixel: a blank pixel is 0.5 (every input fires)


class BaselineMatch(str, Enum):
    """How a point baseline is sized against the net it is compared with."""

    HIDDEN = "hidden"  # same hidden widths
    PARAMS = "params"  # hidden widths scaled so the trainable parameter counts match


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


# Limits that are not obvious from the field: what fits in memory and in the hardware.
MAX_WIDTH = 4096  # neurons in one layer (the RTL's activation memory and the trainer's matrices)
MAX_UNITS = 65536  # sparse-modular granule units in all modules together (modules x granules)


@dataclass(frozen=True)
class DataConfig(_Section):
    source: DataSource = DataSource.DIGITS
    # npz: one file with arrays `x` [N, ...], optional `ctx` [N, ...], `y` [N].
    # idx: path to an images IDX file; `labels_path` to its labels IDX file.
    path: str | None = spec(None, min_len=1, max_len=4096, why="a file path")
    labels_path: str | None = spec(None, min_len=1, max_len=4096, why="a file path")
    # std of Gaussian noise on the driving view (pixels in [0, 1]); beyond 10 the signal is gone
    noise: float = spec(0.3, ge=0, le=10)
    context_noise: float = spec(0.1, ge=0, le=10)  # std of noise on the context view
    context: bool = True  # produce the second (context) modality
    context_code: ContextCode = ContextCode.SPARSE  # digits: how the context view is coded
    val_fraction: float = spec(0.15, gt=0, lt=0.5, why="val and test together must leave a training split")
    test_fraction: float = spec(0.2, gt=0, lt=0.5, why="val and test together must leave a training split")
    max_samples: int | None = spec(None, ge=10, le=10_000_000, why="10 fill the splits; 1e7 bounds memory")

    def check(self) -> None:
        if self.source is not DataSource.DIGITS and self.path is None:
            raise SchemaError("path", f"required when source is {self.source.value}")


@dataclass(frozen=True)
class ModelConfig(_Section):
    kind: ModelKind = ModelKind.TWO_POINT
    # hidden layer widths (point and two-point nets)
    hidden: tuple[int, ...] = spec((64,), min_len=1, max_len=16, each=Rule(ge=1, le=MAX_WIDTH))
    modulation: Modulation = Modulation.KAY
    k1: float = spec(0.5, ge=0.0, le=1.0)  # kay: fraction of R that passes regardless of context
    k2: float = spec(1.0, ge=-64.0, le=64.0, why="exp(k2*R*C) overflows float32 beyond")  # kay: R*C gain
    context: bool = True  # two-point: feed the context modality to the apical site
    views: Views = Views.DRIVING  # point: the driving view alone or both views (early fusion)
    lateral: bool = False  # two-point: also feed the layer's previous activity as context
    # two-point: K context synapses per unit (fixed random mask); None: all
    context_fan_in: int | None = spec(None, ge=1, le=MAX_WIDTH)
    modules: int = spec(4, ge=1, le=256)  # sparse-modular: number of modules M
    granules: int = spec(128, ge=1, le=MAX_WIDTH)  # sparse-modular: granule units per module
    fan_in: int = spec(4, ge=1)  # sparse-modular: K inputs per granule unit (upper bound in check)
    combine: Combine = Combine.SUM
    local_loss: bool = False  # sparse-modular: each module also trained on its own loss

    def check(self) -> None:
        if self.fan_in > MAX_WIDTH:
            raise SchemaError("fan_in", f"must be <= {MAX_WIDTH} (the widest input), got {self.fan_in}")
        if self.views is not Views.DRIVING and self.kind is not ModelKind.POINT:
            raise SchemaError("views", f"{self.views.value!r} applies to point nets only (kind is {self.kind.value})")
        units = self.modules * self.granules
        if units > MAX_UNITS:
            raise SchemaError(
                "modules",
                f"modules x granules = {units} granule units > {MAX_UNITS} (one layer of the array; "
                f"the trainer's weight matrix would need {units * MAX_WIDTH * 4 / 2**30:.1f} GiB at full width)",
            )


@dataclass(frozen=True)
class LayerBits(_Section):
    weight_bits: int | None = spec(None, ge=2, le=8)
    act_bits: int | None = spec(None, ge=2, le=8)


@dataclass(frozen=True)
class QuantConfig(_Section):
    input_bits: int = spec(4, ge=2, le=8)
    weight_bits: int = spec(4, ge=2, le=8)
    act_bits: int = spec(4, ge=2, le=8)
    # two-point: the integration sites after quantization; the table has 2**(r+c) entries
    r_bits: int = spec(4, ge=3, le=6)
    c_bits: int = spec(4, ge=3, le=6)
    output_bits: int = spec(8, ge=2, le=8)  # the logits layer
    scaling: Scaling = Scaling.PO2
    # Per-layer overrides by layer name (names are those of the IR: fc1, tp1, out, ...);
    # a name that is not a layer of the model is refused when the model is built.
    layers: dict[str, LayerBits] = spec(default_factory=dict, max_len=64, keys=Rule(plain_name=True))

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
    epochs: int = spec(60, ge=1, le=10_000)
    batch_size: int = spec(64, ge=1, le=65_536)
    lr: float = spec(0.01, gt=0, le=10)
    weight_decay: float = spec(0.0, ge=0, le=1)
    patience: int = spec(12, ge=1, le=10_000)  # early stopping on validation accuracy ...
    # ... allowed only once the (cosine) learning rate has decayed below this fraction of
    # ``lr``: a seed never stops while the rate is still high.
    stop_below_lr: float = spec(0.1, ge=0.0, le=1.0)
    # Cost-aware training: penalties added to the loss, per sample. ``activity_penalty`` x the
    # mean hidden activation; ``ops_penalty`` x the expected synaptic ops, each input's value
    # times the L1 norm of its fan-out weights (a differentiable stand-in for events x fan-out),
    # summed over every site and divided by the model's synapse count.
    activity_penalty: float = spec(0.0, ge=0, le=1e3)
    ops_penalty: float = spec(0.0, ge=0, le=1e3)
    threads: int = spec(2, ge=1, le=256)
    # Decoupled module training (sparse-modular models; other kinds train end to end).
    mode: TrainMode = TrainMode.END_TO_END
    workers: int = spec(1, ge=1, le=256)  # local worker processes the modules are spread over
    combine_epochs: int = spec(20, ge=1, le=10_000)  # the combine stage: readout on the frozen modules


@dataclass(frozen=True)
class HardwareConfig(_Section):
    pes: int = spec(8, ge=1, le=64)  # processing elements P
    clock_mhz: float = spec(200.0, gt=0, le=1000, why="no FPGA fabric clock reaches 1 GHz")
    # synapses one PE may hold (memory limit); 2**24 words is past any board's block RAM
    max_weight_depth: int = spec(65536, ge=16, le=1 << 24)
    simulator: str = spec("icarus", choices=("icarus", "verilator"))
    # test samples simulated by `apical sim`, from the start of the split; 0: all of them
    sim_samples: int = spec(0, ge=0, le=100_000)
    # fast: HDL harness, no Python in the cycle loop | cocotb: the Python testbench (waveforms)
    sim_path: str = spec("fast", choices=("fast", "cocotb"))
    part: str = spec("xczu7ev-ffvc1156-2-e", min_len=1, max_len=64)
    board: str = spec("zcu104", min_len=1, max_len=64)
    waves: bool = False  # `apical sim` also writes a waveform
    backpressure: bool = True  # `apical sim` drives random back-pressure on both streams
    # `apical bitstream`: keep a build that misses the board clock (still recorded as failed timing)
    allow_timing_failure: bool = False
    # `apical synth`: also place and route for this device (nextpnr-ecp5, out of context) and
    # record Fmax and the worst path in synth.json; none: resources only
    timing: str = spec("none", choices=("none", "lfe5u-85f-6"))
    # Export two-point layers with context gating (`apical.sw.ir`): the golden model and the RTL
    # skip, and do not count, synapses the modulation table makes irrelevant; off by default.
    context_gating: bool = False
    # Memory contents in the Verilog: inline initial blocks, $readmemh files next to it, or
    # files once the initial values pass 1 MB (`apical.hw.generate`)
    memory_init: str = spec("auto", choices=("auto", "inline", "files"))

    def check(self) -> None:
        if self.waves and self.sim_path == "fast":
            raise SchemaError("waves", "the fast path writes no waveform; set sim_path: cocotb")


@dataclass(frozen=True)
class EnergyConfig(_Section):
    table: str = spec("mcc-ultrascale", min_len=1, max_len=4096)  # shipped table name or a YAML file path
    baseline: bool = True  # train the point-neuron baselines on the same task and compare
    baseline_match: BaselineMatch = BaselineMatch.HIDDEN  # how the baselines are sized


@dataclass(frozen=True)
class Config(_Section):
    # names the run directory (runs/<name>) when no --out is given: a plain name, never a path
    name: str = spec("apical", plain_name=True)
    seed: int = spec(0, ge=0, le=2**32 - 1, why="numpy and torch seeds are 32-bit")
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


def parse_config(raw: Any, source: str = "<config>") -> Config:
    """Build a validated `Config` from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise ApicalError(f"{source}: config: must be a mapping, got {type(raw).__name__}")
    try:
        cfg = build(Config, raw, skip=("origin",))
    except SchemaError as e:
        raise ApicalError(f"{source}: {e}") from None
    return dataclasses.replace(cfg, origin=source)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a YAML config; `None` loads the shipped default."""
    p = Path(path) if path is not None else default_config_path()
    raw = load_yaml(p, "config")  # bounded, UTF-8, no duplicate keys (apical.sw.safeio)
    return parse_config(raw, str(p))


def default_config_path() -> Path:
    """The shipped default config: package data of `apical.sw` (``configs/two_point.yaml`` links to it)."""
    return Path(str(resources.files("apical.sw") / "data" / "default.yaml"))


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
