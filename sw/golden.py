"""The golden integer model: exactly the arithmetic of the hardware, in numpy, with exact counts.

`run_golden(ir, inputs)` evaluates an IR on a batch of integer input vectors and
returns every layer's output, every requantized site value, the raw
accumulators, the class per sample and, per layer and per sample, every action
counter of `apical.sw.counts.COUNTERS`. The arithmetic is the one the
``apical.sw.ir`` docstring fixes (accumulate, ``rhe(acc * multiplier, shift)``,
relu, saturation, two-point table lookup); the small building blocks
(`rhe_shift`, `requantize`, `saturate`, `modulate`) are public so each hardware
block can be tested against them. Pure numpy: no torch, no amaranth.

Context gating (a two_point layer's ``gate``, see `apical.sw.ir`): the gating
site is evaluated first; for each neuron whose value there fixes the output,
the other site's synapses are not counted (syn_ops, weight_reads, acc_updates)
and its requantization is not counted. Every value computed is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.ir import IR, Layer, Site, gating_values, int_range

__all__ = [
    "GoldenResult",
    "accumulate",
    "check_inputs",
    "modulate",
    "requantize",
    "rhe_shift",
    "run_golden",
    "saturate",
]

# float64 holds every integer below 2**53 exactly, so a BLAS matmul whose every
# partial sum stays below that bound is an exact integer matmul (and ~50x faster
# than numpy's int64 matmul, which has no BLAS path).
_FLOAT_EXACT_BITS = 53
_FLOAT32_EXACT_BITS = 24  # the same for float32 (twice the BLAS throughput)
# int64 products and shifts are exact while magnitudes stay below 2**62.
_INT64_SAFE_BITS = 62


@dataclass(frozen=True, eq=False)
class GoldenResult:
    """What `run_golden` computes for a batch of ``N`` samples.

    ``outputs[layer]``: int64 ``[N, size]`` layer outputs;
    ``sites[(layer, site)]``: int64 ``[N, size]`` requantized site values;
    ``accs[(layer, site)]``: int64 ``[N, size]`` accumulators before requantization;
    ``counts[layer][counter]``: int64 ``[N]`` for every counter of ``COUNTERS``;
    ``classes``: int64 ``[N]`` argmax of the last layer (first index on ties).
    """

    outputs: dict[str, np.ndarray]
    sites: dict[tuple[str, str], np.ndarray]
    accs: dict[tuple[str, str], np.ndarray]
    counts: dict[str, dict[str, np.ndarray]]
    classes: np.ndarray

    def total_counts(self) -> dict[str, np.ndarray]:
        """Per-sample counters summed over layers (what the hardware counters report)."""
        return {c: sum(self.counts[name][c] for name in self.counts) for c in COUNTERS}


# --------------------------------------------------------------------------- building blocks


def _max_abs_bits(v: np.ndarray) -> int:
    if v.size == 0:
        return 0
    if v.dtype == object:
        return max(abs(int(x)) for x in v.flat).bit_length()
    return int(max(abs(int(v.min())), abs(int(v.max())))).bit_length()


def rhe_shift(v: np.ndarray | int, shift: int) -> np.ndarray:
    """``v / 2**shift`` rounded half to even for ``shift > 0``; ``v << -shift`` otherwise.

    Works on any integer array (or scalar); exact for all magnitudes (falls back
    to Python integers when int64 would overflow). Returns an int64 array when
    the result fits, else an object array of Python ints.
    """
    a = np.asarray(v)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == object):
        raise ApicalError(f"rhe_shift: integer input required, got {a.dtype}")
    shift = int(shift)
    big = a.dtype == object or _max_abs_bits(a) + max(0, -shift) >= _INT64_SAFE_BITS or shift >= _INT64_SAFE_BITS
    if big:
        return _rhe_python(a, shift)
    a = a.astype(np.int64, copy=False)
    if shift <= 0:
        return a << np.int64(-shift)
    # v = q * 2**s + r: adding half - 1 + (q & 1) carries into q exactly when
    # r > half, or r == half and q is odd (round half to even), in three passes.
    s = np.int64(shift)
    out = a >> s
    out &= 1
    out += a
    out += (np.int64(1) << np.int64(shift - 1)) - 1
    out >>= s
    return out


def _rhe_python(a: np.ndarray, shift: int) -> np.ndarray:
    def one(x: int) -> int:
        x = int(x)
        if shift <= 0:
            return x << -shift
        q, rem = x >> shift, x & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        return q + (1 if rem > half or (rem == half and q & 1) else 0)

    flat = [one(x) for x in a.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    out = out.reshape(a.shape)
    if all(-(1 << 63) <= x < (1 << 63) for x in flat):
        return out.astype(np.int64)
    return out


def saturate(v: np.ndarray | int, bits: int, signed: bool) -> np.ndarray:
    """Clamp to the inclusive range of a (bits, signed) integer; returns int64."""
    lo, hi = int_range(bits, signed)
    a = np.asarray(v)
    if a.dtype == object:
        return np.array([min(max(int(x), lo), hi) for x in a.reshape(-1)], dtype=np.int64).reshape(a.shape)
    return np.clip(a.astype(np.int64), lo, hi)


def requantize(acc: np.ndarray | int, site: Site) -> np.ndarray:
    """A site's accumulator -> its requantized value: rhe(acc * multiplier [+ offset], shift), relu, saturate.

    Per-neuron multipliers and offsets (``site.per_neuron``) apply along the
    last axis of ``acc`` (one entry per neuron).
    """
    a = np.asarray(acc)
    if site.per_neuron:
        size = a.shape[-1] if a.ndim else 1
        mult = site.neuron_multipliers(size)
        off = site.neuron_offsets(size)
        mbits = int(mult.max()).bit_length() if mult.size else 1
        if a.dtype == object or _max_abs_bits(a) + mbits + 1 >= _INT64_SAFE_BITS or _max_abs_bits(off) + 1 >= _INT64_SAFE_BITS:
            a = a.astype(object) * mult.astype(object) + off.astype(object)
        else:
            a = a.astype(np.int64) * mult + off
    else:
        m1 = int(site.requant.multiplier)
        if a.dtype != object and _max_abs_bits(a) + m1.bit_length() >= _INT64_SAFE_BITS:
            a = a.astype(object)
        if m1 != 1:
            a = a * m1 if a.dtype == object else a.astype(np.int64) * np.int64(m1)
    v = rhe_shift(a, site.requant.shift)
    lo, hi = site.out_range
    if site.activation == "relu":
        lo = max(lo, 0)  # relu then saturation == saturation to [max(lo, 0), hi]
    if v.dtype == object:
        return np.array([min(max(int(x), lo), hi) for x in v.reshape(-1)], dtype=np.int64).reshape(v.shape)
    return np.clip(v, lo, hi, out=v)


def modulate(table: np.ndarray, r: np.ndarray, c: np.ndarray, r_site: Site, c_site: Site) -> np.ndarray:
    """Two-point output: ``table[r - r_min, c - c_min]`` with the sites' range minima."""
    r = np.asarray(r, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    ri = r - r_site.range[0]
    ci = c - c_site.range[0]
    if ri.size and (ri.min() < 0 or ri.max() >= table.shape[0]):
        raise ApicalError("modulate: r value outside the r site's range")
    if ci.size and (ci.min() < 0 or ci.max() >= table.shape[1]):
        raise ApicalError("modulate: c value outside the c site's range")
    return np.asarray(table, dtype=np.int64)[ri, ci]


def accumulate(site: Site, size: int, x: np.ndarray) -> np.ndarray:
    """``acc[n, j] = bias[j] + sum_i w[i->j] * x[n, i]`` exactly, int64 ``[N, size]``.

    Uses a float32 (float64) BLAS matmul when every partial sum is provably
    below 2**24 (2**53, true for any validated IR, whose acc_bits <= 48);
    int64 otherwise.
    """
    w = site.dense_weights(size)  # [size, in_size] int64
    x = np.asarray(x, dtype=np.int64)
    xmax = _max_abs_bits(x)
    wsum = int(np.abs(w).sum(axis=1).max()) if w.size else 0
    bound = wsum.bit_length() + xmax
    if bound < _FLOAT32_EXACT_BITS:
        prod = (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64)
    elif bound < _FLOAT_EXACT_BITS:
        prod = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    else:
        prod = x @ w.T
    return prod + site.bias.astype(np.int64)[None, :]


# --------------------------------------------------------------------------- the model


def check_inputs(ir: IR, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate names, shapes, dtypes and ranges; return int64 copies keyed by input name."""
    if not isinstance(inputs, dict):
        raise ApicalError("golden inputs: must be a dict of input name -> integer array")
    names = [t.name for t in ir.inputs]
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise ApicalError(f"golden input {extra[0]}: not an input of the IR (inputs: {names})")
    out: dict[str, np.ndarray] = {}
    n = None
    for t in ir.inputs:
        if t.name not in inputs:
            raise ApicalError(f"golden input {t.name}: missing")
        a = np.asarray(inputs[t.name])
        if not np.issubdtype(a.dtype, np.integer):
            raise ApicalError(f"golden input {t.name}: must be an integer array, got {a.dtype}")
        if a.ndim != 2 or a.shape[1] != t.size:
            raise ApicalError(f"golden input {t.name}: shape {a.shape} != (N, {t.size})")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ApicalError(f"golden input {t.name}: {a.shape[0]} samples, other inputs have {n}")
        lo, hi = t.range
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise ApicalError(
                f"golden input {t.name}: values {int(a.min())}..{int(a.max())} outside "
                f"{t.bits}-bit {'signed' if t.signed else 'unsigned'} range [{lo}, {hi}]"
            )
        out[t.name] = a.astype(np.int64)
    return out


def _run_site(
    layer: Layer, key: str, tensors: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One site: (acc, requantized value, events per sample, syn_ops per sample)."""
    site = layer.sites[key]
    x = np.concatenate([tensors[s] for s in site.sources], axis=1)
    nz = x != 0
    fan_out = np.diff(site.indptr).astype(np.int64)
    events = nz.sum(axis=1, dtype=np.int64)
    syn_ops = nz.astype(np.int64) @ fan_out
    acc = accumulate(site, layer.size, x)
    return acc, requantize(acc, site), events, syn_ops


def _gated(
    layer: Layer, sites: dict[tuple[str, str], np.ndarray], tensors: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: synaptic ops of the gated site that gating skips, and neurons whose output it fixes."""
    gate, other = layer.gate, layer.gated_site
    assert gate is not None and other is not None and layer.table is not None
    fixing = gating_values(layer.table, gate)
    v = sites[(layer.name, gate)] - layer.sites[gate].range[0]
    fixed = fixing[v]  # [N, size] neurons whose output the gating site alone decides
    site = layer.sites[other]
    x = np.concatenate([tensors[s] for s in site.sources], axis=1)
    # synapses per (input, target): the fan-out walk of every event, restricted to fixed targets
    mask = (site.dense_weights(layer.size) != 0).astype(np.float64)  # [size, in]
    per_neuron = (x != 0).astype(np.float64) @ mask.T  # [N, size] exact (counts < 2**53)
    skipped = (per_neuron * fixed).sum(axis=1).astype(np.int64)
    return skipped, fixed.sum(axis=1, dtype=np.int64)


def run_golden(ir: IR, inputs: dict[str, np.ndarray]) -> GoldenResult:
    """Evaluate ``ir`` on ``inputs`` (name -> int ``[N, size]``); see `GoldenResult`."""
    tensors = check_inputs(ir, inputs)
    n = next(iter(tensors.values())).shape[0]
    outputs: dict[str, np.ndarray] = {}
    sites: dict[tuple[str, str], np.ndarray] = {}
    accs: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[str, dict[str, np.ndarray]] = {}
    for layer in ir.layers:
        events = np.zeros(n, dtype=np.int64)
        syn_ops = np.zeros(n, dtype=np.int64)
        act_reads = 0
        for key in layer.site_order:
            acc, val, ev, so = _run_site(layer, key, tensors)
            accs[(layer.name, key)] = acc
            sites[(layer.name, key)] = val
            events += ev
            syn_ops += so
            act_reads += layer.sites[key].in_size
        requants = np.full(n, layer.size * len(layer.site_order), dtype=np.int64)
        if layer.kind == "dense":
            out = sites[(layer.name, "main")]
        else:
            if layer.table is None:
                raise ApicalError(f"IR layer {layer.name}: table: missing modulation table")
            out = modulate(
                layer.table, sites[(layer.name, "r")], sites[(layer.name, "c")], layer.sites["r"], layer.sites["c"]
            )
            if layer.gate is not None:
                skipped, fixed = _gated(layer, sites, tensors)
                syn_ops -= skipped
                requants -= fixed
        outputs[layer.name] = out
        tensors[layer.name] = out
        full = lambda v: np.full(n, v, dtype=np.int64)  # noqa: E731
        counts[layer.name] = {
            "events": events,
            "syn_ops": syn_ops,
            "weight_reads": syn_ops.copy(),
            "acc_updates": syn_ops.copy(),
            "act_reads": full(act_reads),
            "act_writes": full(layer.size),
            "requants": requants,
            "table_lookups": full(layer.size if layer.kind == "two_point" else 0),
        }
        missing = set(COUNTERS) - set(counts[layer.name])
        if missing:  # a counter added to counts.py without a golden definition
            raise ApicalError(f"golden: counters {sorted(missing)} have no golden definition")
    last = outputs[ir.layers[-1].name]
    classes = np.argmax(last, axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    return GoldenResult(outputs=outputs, sites=sites, accs=accs, counts=counts, classes=classes)
