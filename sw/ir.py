"""The integer model (IR): the one contract between the trained network and the hardware.

An IR is a directory holding ``model.yaml`` (the manifest) and ``weights.npz``
(integer arrays, read with ``allow_pickle=False``). This module defines the
in-memory form (frozen dataclasses over numpy arrays), reads and writes it
atomically, and validates every field on load: a bad IR raises `ApicalError`
naming the layer and field. Nothing here imports torch or amaranth.

Arithmetic every consumer (golden model, RTL) must implement exactly:

* A *site* integrates the concatenation of its ``sources`` (input or layer
  tensors, in order) through sparse integer weights stored in fan-out (CSC)
  order: for input index ``i`` its synapses are
  ``indices[indptr[i]:indptr[i+1]]`` (target neuron, ascending) with weights
  ``data[...]``. ``acc[j] = bias[j] + sum_i w[i->j] * x[i]``. Zero weights
  are not stored; zero activations generate no events.
* ``requant(acc) = rhe(acc * multiplier, shift)`` where ``rhe(v, s)`` for
  ``s > 0`` divides by ``2**s`` rounding half to even, and for ``s <= 0`` is
  ``v << -s``. Then ``relu`` (when ``activation == "relu"``), then saturation
  to the site's (bits, signed) range, or to the narrow range
  ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` when ``narrow`` (signed only).
* A site may carry per-neuron requantisation (float and per-channel scales,
  folded BatchNorm): ``multipliers`` and ``offsets`` (int64 ``[size]``), and
  then ``requant(acc[j]) = rhe(acc[j] * multipliers[j] + offsets[j], shift)``;
  the offset is added after the multiply, in units of ``2**-shift`` output
  steps, so fractional biases keep their precision. Without them a site
  behaves as ``multipliers[j] = requant.multiplier``, ``offsets[j] = 0``.
* A ``dense`` layer has one site, ``main``; its requantized value is the
  layer output.
* A ``two_point`` layer has sites ``r`` (receptive field) and ``c`` (context);
  the output is ``table[r - r_min, c - c_min]`` where ``r_min``/``c_min`` are
  the minima of the sites' ranges; the table already holds output-range
  integers.
* Context gating (optional, ``gate`` of a two_point layer, default none):
  ``gate: r`` evaluates site ``r`` first; a neuron whose ``r`` value selects a
  table row that is constant over every ``c`` has its output fixed, so its
  ``c`` synapses are neither accumulated nor counted and its ``c`` site is not
  requantized (``gate: c``: the same with the roles swapped). The gating values
  are derived from the table (`gating_values`), so the outputs are those of the
  ungated layer by construction; only the counted actions fall.
* The network output is the last layer's tensor; the class is its argmax
  (first index on ties).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from apical.sw.atomic import atomic_write
from apical.sw.errors import ApicalError
from apical.sw.safeio import load_npz, load_yaml
from apical.sw.schema import Rule, Schema, SchemaError, build, show, spec

__all__ = [
    "FORMAT",
    "VERSION",
    "IR",
    "Layer",
    "Requant",
    "Site",
    "TensorSpec",
    "GATES",
    "acc_bits_needed",
    "gating_values",
    "int_range",
    "load_ir",
    "load_inputs",
    "save_ir",
    "validate_ir",
]

FORMAT = "apical-ir"
VERSION = 1
MAX_BITS = 16  # activation/weight/table value widths the format allows
MAX_ACC_BITS = 48  # DSP48E2 accumulator width
MAX_OFFSET_BITS = 48  # per-neuron requant offsets (added to the product, DSP48E2 C port)
LAYER_KINDS = ("dense", "two_point")
ACTIVATIONS = ("relu", "identity")
GATES = ("r", "c")  # two_point: the site evaluated first when context gating is on


def gating_values(table: np.ndarray, gate: str) -> np.ndarray:
    """bool per value index of the ``gate`` site: True where the table fixes the output
    whatever the other site is (a constant row for ``r``, a constant column for ``c``)."""
    t = np.asarray(table)
    if gate == "r":
        return (t == t[:, :1]).all(axis=1)
    if gate == "c":
        return (t == t[:1, :]).all(axis=0)
    raise ApicalError(f"gating_values: gate must be one of {GATES}, got {gate!r}")


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive integer range of a (bits, signed) quantity."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass(frozen=True)
class TensorSpec:
    """An activation vector: a network input or a layer output."""

    name: str
    size: int
    bits: int
    signed: bool
    scale: float = 1.0  # real value = integer * scale (informational; po2 by default)

    @property
    def range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)


@dataclass(frozen=True)
class Requant:
    shift: int
    multiplier: int = 1  # 1 under power-of-two scales

    @property
    def is_shift_only(self) -> bool:
        return self.multiplier == 1


@dataclass(frozen=True, eq=False)
class Site:
    """One integration site: sparse synapses from ``sources`` onto the layer's neurons."""

    sources: tuple[str, ...]
    in_size: int
    weight_bits: int
    indptr: np.ndarray  # int64 [in_size + 1]
    indices: np.ndarray  # int32 [nnz] target neuron per synapse, fan-out order
    data: np.ndarray  # int32 [nnz] weight per synapse
    bias: np.ndarray  # int64 [size]
    acc_bits: int
    requant: Requant
    bits: int  # width of the requantized value
    signed: bool
    activation: str = "identity"
    narrow: bool = False  # signed saturation to [-(2**(bits-1) - 1), 2**(bits-1) - 1]
    multipliers: np.ndarray | None = None  # int64 [size]: per-neuron requant multiplier
    offsets: np.ndarray | None = None  # int64 [size]: per-neuron addend after the multiply

    @property
    def per_neuron(self) -> bool:
        return self.multipliers is not None or self.offsets is not None

    def neuron_multipliers(self, size: int) -> np.ndarray:
        """int64 ``[size]``: each neuron's multiplier (the site's one when not per-neuron)."""
        if self.multipliers is not None:
            return np.asarray(self.multipliers, dtype=np.int64)
        return np.full(size, self.requant.multiplier, dtype=np.int64)

    def neuron_offsets(self, size: int) -> np.ndarray:
        """int64 ``[size]``: each neuron's post-multiply offset (zeros when not per-neuron)."""
        if self.offsets is not None:
            return np.asarray(self.offsets, dtype=np.int64)
        return np.zeros(size, dtype=np.int64)

    @property
    def out_range(self) -> tuple[int, int]:
        """Saturation range of the requantized value (narrow or full)."""
        lo, hi = int_range(self.bits, self.signed)
        return (lo + 1, hi) if self.narrow and self.signed else (lo, hi)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)

    def dense_weights(self, size: int) -> np.ndarray:
        """The weight matrix [size, in_size] (zeros where no synapse)."""
        w = np.zeros((size, self.in_size), dtype=np.int64)
        cols = np.repeat(np.arange(self.in_size), np.diff(self.indptr))
        w[self.indices, cols] = self.data
        return w

    def fan_in(self, size: int) -> np.ndarray:
        return np.bincount(self.indices, minlength=size)


@dataclass(frozen=True, eq=False)
class Layer:
    name: str
    kind: str  # "dense" | "two_point"
    size: int
    sites: dict[str, Site]  # dense: {"main"}; two_point: {"r", "c"}
    out_bits: int
    out_signed: bool
    out_scale: float = 1.0
    table: np.ndarray | None = None  # two_point: int32 [2**r.bits, 2**c.bits]
    modulation: str | None = None  # two_point: the transfer function's name (informational)
    gate: str | None = None  # two_point: context gating, the site evaluated first ("r"/"c"), or None

    @property
    def gated_site(self) -> str | None:
        """The site whose synapses gating may skip (the other one), or None without gating."""
        return None if self.gate is None else ("c" if self.gate == "r" else "r")

    @property
    def out_range(self) -> tuple[int, int]:
        return int_range(self.out_bits, self.out_signed)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec(self.name, self.size, self.out_bits, self.out_signed, self.out_scale)

    @property
    def site_order(self) -> tuple[str, ...]:
        return ("main",) if self.kind == "dense" else ("r", "c")


@dataclass(frozen=True, eq=False)
class IR:
    inputs: tuple[TensorSpec, ...]
    layers: tuple[Layer, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # model kind, config hash, scaling, ...

    def tensor(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        for layer in self.layers:
            if layer.name == name:
                return layer.output
        raise KeyError(name)

    @property
    def output(self) -> TensorSpec:
        return self.layers[-1].output

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def synapses(self) -> int:
        return sum(s.nnz for layer in self.layers for s in layer.sites.values())

    @property
    def gated(self) -> bool:
        """True when any layer uses context gating."""
        return any(layer.gate is not None for layer in self.layers)

    def ungated(self) -> IR:
        """This IR without context gating: the same outputs, every synapse counted."""
        return dataclasses.replace(self, layers=tuple(dataclasses.replace(la, gate=None) for la in self.layers))


# --------------------------------------------------------------------------- validation


def acc_bits_needed(site: Site, size: int, sources: list[TensorSpec]) -> int:
    """Smallest signed accumulator width holding every partial sum for any input.

    Each partial sum of neuron j lies within ``|bias[j]| + sum |w| * max|x|``
    over its synapses, so that bound covers every order of accumulation.
    """
    per_input = np.concatenate(
        [np.full(t.size, max(abs(t.range[0]), abs(t.range[1])), dtype=np.int64) for t in sources]
    )
    cols = np.repeat(np.arange(site.in_size), np.diff(site.indptr))
    contrib = np.abs(site.data.astype(np.int64)) * per_input[cols]
    worst = np.abs(site.bias.astype(np.int64)).copy()
    np.add.at(worst, site.indices, contrib)
    m = int(worst.max()) if worst.size else 0
    return max(2, m.bit_length() + 1)


def _fail(layer: str, fld: str, msg: str) -> None:
    raise ApicalError(f"IR layer {layer}: {fld}: {msg}")


def _check_site(ir_tensors: dict[str, TensorSpec], layer: Layer, key: str, site: Site) -> None:
    where = f"sites.{key}"
    if not site.sources:
        _fail(layer.name, f"{where}.sources", "must name at least one tensor")
    for s in site.sources:
        if s not in ir_tensors:
            _fail(layer.name, f"{where}.sources", f"unknown or later tensor {s!r}")
    srcs = [ir_tensors[s] for s in site.sources]
    sizes = [t.size for t in srcs]
    if sum(sizes) != site.in_size:
        _fail(layer.name, f"{where}.in_size", f"{site.in_size} != total size of sources {sum(sizes)}")
    if not 1 <= site.weight_bits <= MAX_BITS:
        _fail(layer.name, f"{where}.weight_bits", f"must be in [1, {MAX_BITS}], got {site.weight_bits}")
    if not 1 <= site.bits <= MAX_BITS:
        _fail(layer.name, f"{where}.bits", f"must be in [1, {MAX_BITS}], got {site.bits}")
    if site.activation not in ACTIVATIONS:
        _fail(layer.name, f"{where}.activation", f"must be one of {ACTIVATIONS}, got {site.activation!r}")
    ip = site.indptr
    if ip.ndim != 1 or ip.shape[0] != site.in_size + 1:
        _fail(layer.name, f"{where}.indptr", f"shape {ip.shape} != ({site.in_size + 1},)")
    if site.indices.ndim != 1 or site.data.shape != site.indices.shape:
        _fail(layer.name, f"{where}.data", f"shape {site.data.shape} != indices shape {site.indices.shape}")
    nnz = site.indices.shape[0]
    if ip[0] != 0 or np.any(np.diff(ip) < 0) or ip[-1] != nnz:
        _fail(layer.name, f"{where}.indptr", "must start at 0, not decrease, and end at nnz")
    if site.indices.size and (site.indices.min() < 0 or site.indices.max() >= layer.size):
        _fail(layer.name, f"{where}.indices", f"target neuron out of range [0, {layer.size})")
    if nnz > 1:  # within each input's fan-out, targets strictly ascending (vectorised)
        same = np.ones(nnz - 1, dtype=bool)
        starts = ip[1:-1]
        same[starts[(starts > 0) & (starts < nnz)] - 1] = False
        bad = np.flatnonzero(same & (np.diff(site.indices) <= 0))
        if bad.size:
            i = int(np.searchsorted(ip, bad[0], side="right")) - 1
            _fail(layer.name, f"{where}.indices", f"fan-out of input {i} not strictly ascending")
    lo, hi = int_range(site.weight_bits, True)
    if site.data.size and (site.data.min() < lo or site.data.max() > hi):
        _fail(
            layer.name,
            f"{where}.data",
            f"weight {int(site.data.min())}..{int(site.data.max())} outside {site.weight_bits}-bit range [{lo}, {hi}]",
        )
    if site.data.size and np.any(site.data == 0):
        _fail(layer.name, f"{where}.data", "zero weights must not be stored")
    if site.bias.shape != (layer.size,):
        _fail(layer.name, f"{where}.bias", f"shape {site.bias.shape} != ({layer.size},)")
    blo, bhi = int_range(MAX_ACC_BITS, True)
    if site.bias.size and (int(site.bias.min()) < blo or int(site.bias.max()) > bhi):
        # checked before |bias| is taken: abs(int64 min) wraps to a negative number
        v = int(site.bias.min()) if int(site.bias.min()) < blo else int(site.bias.max())
        _fail(layer.name, f"{where}.acc_bits", f"a bias of {v} needs more than the {MAX_ACC_BITS}-bit accumulator")
    if not 2 <= site.acc_bits <= MAX_ACC_BITS:
        _fail(layer.name, f"{where}.acc_bits", f"must be in [2, {MAX_ACC_BITS}], got {site.acc_bits}")
    need = acc_bits_needed(site, layer.size, srcs)
    if need > site.acc_bits:
        _fail(layer.name, f"{where}.acc_bits", f"{site.acc_bits} bits cannot hold the worst case (needs {need})")
    rq = site.requant
    if rq.multiplier < 1 or rq.multiplier >= (1 << 24):
        _fail(layer.name, f"{where}.requant.multiplier", f"must be in [1, 2**24), got {rq.multiplier}")
    if not -32 <= rq.shift <= 63:
        _fail(layer.name, f"{where}.requant.shift", f"must be in [-32, 63], got {rq.shift}")
    if site.narrow and (not site.signed or site.bits < 2):
        _fail(layer.name, f"{where}.narrow", "narrow range needs a signed site of at least 2 bits")
    for fld, arr, lo_v, hi_v in (("multipliers", site.multipliers, 1, (1 << 24) - 1),
                                 ("offsets", site.offsets, -(1 << (MAX_OFFSET_BITS - 1)),
                                  (1 << (MAX_OFFSET_BITS - 1)) - 1)):
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray) or arr.shape != (layer.size,) or not np.issubdtype(arr.dtype, np.integer):
            _fail(layer.name, f"{where}.{fld}", f"must be an integer array of shape ({layer.size},)")
        if arr.size and (int(arr.min()) < lo_v or int(arr.max()) > hi_v):
            _fail(layer.name, f"{where}.{fld}", f"values must be in [{lo_v}, {hi_v}]")


def validate_ir(ir: IR) -> None:
    """Check every field; raise `ApicalError` naming the layer and field at fault."""
    if not ir.inputs:
        raise ApicalError("IR: inputs: at least one input tensor is required")
    if not ir.layers:
        raise ApicalError("IR: layers: at least one layer is required")
    tensors: dict[str, TensorSpec] = {}
    for t in ir.inputs:
        if t.name in tensors:
            raise ApicalError(f"IR input {t.name}: name: duplicate tensor name")
        if t.size < 1:
            raise ApicalError(f"IR input {t.name}: size: must be >= 1, got {t.size}")
        if not 1 <= t.bits <= MAX_BITS:
            raise ApicalError(f"IR input {t.name}: bits: must be in [1, {MAX_BITS}], got {t.bits}")
        if not (math.isfinite(t.scale) and t.scale > 0):
            raise ApicalError(f"IR input {t.name}: scale: must be a finite number > 0, got {t.scale}")
        tensors[t.name] = t
    for layer in ir.layers:
        if layer.name in tensors:
            _fail(layer.name, "name", "duplicate tensor name")
        if layer.kind not in LAYER_KINDS:
            _fail(layer.name, "kind", f"must be one of {LAYER_KINDS}, got {layer.kind!r}")
        if layer.size < 1:
            _fail(layer.name, "size", f"must be >= 1, got {layer.size}")
        if not 1 <= layer.out_bits <= MAX_BITS:
            _fail(layer.name, "out_bits", f"must be in [1, {MAX_BITS}], got {layer.out_bits}")
        if not (math.isfinite(layer.out_scale) and layer.out_scale > 0):
            _fail(layer.name, "out_scale", f"must be a finite number > 0, got {layer.out_scale}")
        if set(layer.sites) != set(layer.site_order):
            _fail(layer.name, "sites", f"{layer.kind} needs sites {list(layer.site_order)}, got {sorted(layer.sites)}")
        for key in layer.site_order:
            _check_site(tensors, layer, key, layer.sites[key])
        if layer.kind == "dense":
            main = layer.sites["main"]
            if (main.bits, main.signed) != (layer.out_bits, layer.out_signed):
                _fail(layer.name, "sites.main.bits", "must equal the layer's out_bits/out_signed")
            if layer.table is not None:
                _fail(layer.name, "table", "only two_point layers carry a table")
            if layer.gate is not None:
                _fail(layer.name, "gate", "only two_point layers are context-gated")
        else:
            if layer.gate is not None and layer.gate not in GATES:
                _fail(layer.name, "gate", f"must be one of {GATES} or absent, got {layer.gate!r}")
            r, c = layer.sites["r"], layer.sites["c"]
            shape = (1 << r.bits, 1 << c.bits)
            if layer.table is None:
                _fail(layer.name, "table", "missing modulation table")
            if layer.table.ndim != 2 or layer.table.shape != shape:
                _fail(layer.name, "table", f"shape {layer.table.shape} != {shape} (2**r.bits x 2**c.bits)")
            lo, hi = layer.out_range
            if layer.table.size and (layer.table.min() < lo or layer.table.max() > hi):
                _fail(layer.name, "table", f"entries outside output range [{lo}, {hi}]")
        tensors[layer.name] = layer.output


# --------------------------------------------------------------------------- disk form


def _site_to_yaml(site: Site) -> dict[str, Any]:
    return {
        "sources": list(site.sources),
        "in_size": site.in_size,
        "weight_bits": site.weight_bits,
        "nnz": site.nnz,
        "acc_bits": site.acc_bits,
        "requant": {"shift": site.requant.shift, "multiplier": site.requant.multiplier},
        "bits": site.bits,
        "signed": site.signed,
        "activation": site.activation,
        **({"narrow": True} if site.narrow else {}),
        **({"per_neuron": True} if site.per_neuron else {}),
    }


def save_ir(ir: IR, directory: str | Path) -> Path:
    """Write ``model.yaml`` and ``weights.npz`` atomically (each file replaced whole)."""
    validate_ir(ir)
    d = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for layer in ir.layers:
        entry: dict[str, Any] = {
            "name": layer.name,
            "kind": layer.kind,
            "size": layer.size,
            "out_bits": layer.out_bits,
            "out_signed": layer.out_signed,
            "out_scale": float(layer.out_scale),
            "sites": {k: _site_to_yaml(layer.sites[k]) for k in layer.site_order},
        }
        for k in layer.site_order:
            s = layer.sites[k]
            arrays[f"{layer.name}.{k}.indptr"] = s.indptr.astype(np.int64)
            arrays[f"{layer.name}.{k}.indices"] = s.indices.astype(np.int32)
            arrays[f"{layer.name}.{k}.data"] = s.data.astype(np.int32)
            arrays[f"{layer.name}.{k}.bias"] = s.bias.astype(np.int64)
            if s.per_neuron:
                arrays[f"{layer.name}.{k}.multipliers"] = s.neuron_multipliers(layer.size)
                arrays[f"{layer.name}.{k}.offsets"] = s.neuron_offsets(layer.size)
        if layer.table is not None:
            arrays[f"{layer.name}.table"] = layer.table.astype(np.int32)
            entry["table"] = {"key": f"{layer.name}.table", "shape": list(layer.table.shape)}
            entry["modulation"] = layer.modulation
        if layer.gate is not None:
            entry["gate"] = layer.gate
        layers.append(entry)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "meta": _yaml_safe(ir.meta),
        "inputs": [
            {"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed, "scale": float(t.scale)}
            for t in ir.inputs
        ],
        "layers": layers,
        "output": ir.layers[-1].name,
    }
    atomic_write(d / "weights.npz", lambda f: np.savez(f, **arrays))
    text = yaml.safe_dump(manifest, sort_keys=False).encode()
    atomic_write(d / "model.yaml", lambda f: f.write(text))
    return d


def _yaml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- manifest schema
#
# The file form of model.yaml, validated by the one schema mechanism
# (`apical.sw.schema`) as configs and energy tables are. Limits: MAX_SIZE
# neurons per tensor (the widest layer a config can ask for is 65536 granule
# units), MAX_NNZ synapses per site (256 MiB of int32 weights).

MAX_SIZE = 1 << 16
MAX_NNZ = 1 << 26
_BITS = {"ge": 1, "le": MAX_BITS}
_SCALE = {"gt": 0, "le": 1e30, "why": "real value = integer x scale: finite and positive"}


@dataclass(frozen=True)
class _InputEntry(Schema):
    name: str = spec(plain_name=True)
    size: int = spec(ge=1, le=MAX_SIZE)
    bits: int = spec(**_BITS)
    signed: bool = spec()
    scale: float = spec(**_SCALE)


@dataclass(frozen=True)
class _RequantEntry(Schema):
    shift: int = spec(ge=-32, le=63)
    multiplier: int = spec(ge=1, lt=1 << 24)


@dataclass(frozen=True)
class _SiteEntry(Schema):
    sources: tuple[str, ...] = spec(min_len=1, max_len=64)
    in_size: int = spec(ge=1, le=64 * MAX_SIZE)
    weight_bits: int = spec(**_BITS)
    nnz: int = spec(ge=0, le=MAX_NNZ)
    acc_bits: int = spec(ge=2, le=MAX_ACC_BITS)
    requant: _RequantEntry = spec()
    bits: int = spec(**_BITS)
    signed: bool = spec()
    activation: str = spec(choices=ACTIVATIONS)
    narrow: bool = spec(False)
    per_neuron: bool = spec(False, why="per-neuron multipliers/offsets arrays in weights.npz")


@dataclass(frozen=True)
class _TableEntry(Schema):
    key: str = spec(min_len=1, max_len=200)
    shape: tuple[int, ...] = spec(min_len=2, max_len=2, each=Rule(ge=2, le=1 << 12))


@dataclass(frozen=True)
class _LayerEntry(Schema):
    name: str = spec(plain_name=True)
    kind: str = spec(choices=LAYER_KINDS)
    size: int = spec(ge=1, le=MAX_SIZE)
    out_bits: int = spec(**_BITS)
    out_signed: bool = spec()
    out_scale: float = spec(**_SCALE)
    sites: dict[str, _SiteEntry] = spec(min_len=1, max_len=2, keys=Rule(choices=("main", "r", "c")))
    table: _TableEntry | None = None
    modulation: str | None = spec(None, max_len=64)
    gate: str | None = spec(None, choices=GATES)


@dataclass(frozen=True)
class _Manifest(Schema):
    format: str = spec(choices=(FORMAT,))
    version: int = spec(choices=(VERSION,), why="the IR format this apical reads")
    inputs: tuple[_InputEntry, ...] = spec(min_len=1, max_len=16)
    layers: tuple[_LayerEntry, ...] = spec(min_len=1, max_len=256)
    output: str = spec()
    meta: dict[str, Any] = spec(default_factory=dict, max_len=256)

    def check(self) -> None:
        last = self.layers[-1].name
        if self.output != last:
            names = {t.name for t in self.inputs} | {layer.name for layer in self.layers}
            what = "a layer that does not exist" if self.output not in names else "a tensor that is not the last layer"
            raise SchemaError("output", f"names {what} ({show(self.output, 40)}); the output is the last layer {last!r}")


def _manifest_error(e: SchemaError, raw: Any, mpath: Path) -> ApicalError:
    """A manifest fault named by layer (``IR layer tp1: sites.r.bits: ...``), else by field."""
    m = re.fullmatch(r"layers\[(\d+)\]\.?(.*)", e.path)
    if m and isinstance(raw, dict) and isinstance(raw.get("layers"), list):
        entry = raw["layers"][int(m.group(1))]
        name = entry.get("name") if isinstance(entry, dict) else None
        label = name if isinstance(name, str) and len(name) <= 64 and name.isprintable() else f"#{m.group(1)}"
        rest = f"{m.group(2)}: " if m.group(2) else ""
        return ApicalError(f"{mpath}: IR layer {label}: {rest}{e.msg}")
    return ApicalError(f"{mpath}: {e}")


# Integer arrays are read in their stored dtype and converted to int64 only
# after their values are checked in that dtype: a uint64 beyond int64 would
# wrap to a negative weight.
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _array(arrays: dict[str, np.ndarray], key: str, where: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise ApicalError(f"{where}: weights.npz has no array {key!r}")
    a = arrays[key]
    if not np.issubdtype(a.dtype, np.integer):
        raise ApicalError(f"{where}: array {key!r} must be integer, got {a.dtype}")
    if a.shape != shape:
        raise ApicalError(f"{where}: array {key!r} has shape {a.shape}, the manifest declares {shape}")
    if a.size and a.dtype == np.uint64 and int(a.max()) > _INT64[1]:
        raise ApicalError(f"{where}: array {key!r} holds {int(a.max())}, beyond the signed 64-bit range")
    return a.astype(np.int64)


def load_ir(directory: str | Path) -> IR:
    """Read and validate an IR directory; any fault raises `ApicalError` naming it.

    The manifest is validated by its schema first; each array is then checked
    against the shape the manifest declares (``nnz``, ``size``, ``in_size``,
    table shape) before it is used, and the whole IR by `validate_ir`.
    """
    d = Path(directory)
    mpath, wpath = d / "model.yaml", d / "weights.npz"
    for p in (mpath, wpath):
        if not p.is_file():
            raise ApicalError(f"{p}: IR file missing (run `apical export` first)")
    raw = load_yaml(mpath, "IR manifest")
    if not isinstance(raw, dict):
        raise ApicalError(f"{mpath}: must be a mapping, got {type(raw).__name__}")
    for key, want in (("format", FORMAT), ("version", VERSION)):  # before anything else: a foreign file
        if raw.get(key) != want:
            raise ApicalError(f"{mpath}: {key}: must be {want!r}, got {show(raw.get(key))}")
    try:
        m = build(_Manifest, raw)
    except SchemaError as e:
        raise _manifest_error(e, raw, mpath) from None
    arrays = load_npz(wpath, "IR weights archive")
    inputs = tuple(TensorSpec(t.name, t.size, t.bits, t.signed, t.scale) for t in m.inputs)
    layers = []
    for entry in m.layers:
        w = f"IR layer {entry.name}"
        sites = {}
        for key, s in entry.sites.items():
            sw = f"{w}: sites.{key}"
            pre = f"{entry.name}.{key}"
            sites[key] = Site(
                sources=s.sources,
                in_size=s.in_size,
                weight_bits=s.weight_bits,
                indptr=_array(arrays, f"{pre}.indptr", f"{sw}.indptr", (s.in_size + 1,)),
                indices=_array(arrays, f"{pre}.indices", f"{sw}.indices", (s.nnz,)),
                data=_array(arrays, f"{pre}.data", f"{sw}.data", (s.nnz,)),
                bias=_array(arrays, f"{pre}.bias", f"{sw}.bias", (entry.size,)),
                acc_bits=s.acc_bits,
                requant=Requant(shift=s.requant.shift, multiplier=s.requant.multiplier),
                bits=s.bits,
                signed=s.signed,
                activation=s.activation,
                narrow=s.narrow,
                multipliers=(_array(arrays, f"{pre}.multipliers", f"{sw}.multipliers", (entry.size,))
                             if s.per_neuron else None),
                offsets=(_array(arrays, f"{pre}.offsets", f"{sw}.offsets", (entry.size,))
                         if s.per_neuron else None),
            )
        table = None
        if entry.table is not None:
            table = _array(arrays, entry.table.key, f"{w}: table", entry.table.shape)
        layers.append(
            Layer(
                name=entry.name,
                kind=entry.kind,
                size=entry.size,
                sites=sites,
                out_bits=entry.out_bits,
                out_signed=entry.out_signed,
                out_scale=entry.out_scale,
                table=table,
                modulation=entry.modulation,
                gate=entry.gate,
            )
        )
    ir = IR(inputs=inputs, layers=tuple(layers), meta=m.meta)
    validate_ir(ir)
    return ir


def load_inputs(
    ir: IR, path: str | Path, *, what: str = "test vectors", hint: str = "run `apical export` first"
) -> dict[str, np.ndarray]:
    """Integer input vectors from an ``.npz``: one int64 ``[N, size]`` array per IR input name.

    Shared by every reader of ``test_vectors.npz`` (sim, energy) and of user
    inputs (``apical import --inputs``); ``what``/``hint`` word the errors.
    """
    p = Path(path)
    if not p.is_file():
        raise ApicalError(f"{p}: {what} missing" + (f" ({hint})" if hint else ""))
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/ValueError/OSError all mean a corrupt archive
        raise ApicalError(f"{p}: unreadable {what} ({type(e).__name__}: {e})") from None
    out = {}
    for t in ir.inputs:
        if t.name not in arrays:
            raise ApicalError(f"{p}: no array for IR input {t.name!r} (has {sorted(arrays)})")
        a = arrays[t.name]
        if a.ndim != 2 or a.shape[1] != t.size or not np.issubdtype(a.dtype, np.integer):
            raise ApicalError(f"{p}: {t.name}: must be an integer [N, {t.size}] array, got {a.dtype} {a.shape}")
        if a.shape[0] == 0:
            raise ApicalError(f"{p}: {t.name}: no samples")
        out[t.name] = a.astype(np.int64)
    return out


def replace_site(layer: Layer, key: str, **changes: Any) -> Layer:
    """A copy of ``layer`` with one site's fields changed (for tests and tools)."""
    sites = dict(layer.sites)
    sites[key] = dataclasses.replace(sites[key], **changes)
    return dataclasses.replace(layer, sites=sites)
