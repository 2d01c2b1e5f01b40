"""Faults in the golden model: unit damage, lost sites, stuck-at activation bits, altered synapses.

A fault draw is made once from a seed (`draw_activation_faults` here for the
IR-level kinds; `apical.hw.faults` for upsets in the stored weight words, whose
effect depends on the hardware's word layout) and becomes a `FaultSet`: per
layer, what the hardware then computes. `run_faulty(ir, inputs, faults)` is
`apical.sw.golden.run_golden` with those faults applied at exactly the points
where the hardware applies them, so the RTL built with the same `FaultSet`
(`apical.hw.faults`) must agree on every value and every counter:

* ``weights``: the synapses as the (possibly corrupted) weight memories hold
  them: ``(source site, destination bank, PE group) -> [size, in_size]``
  integer matrices; the partial sum of each group wraps at ``acc_bits`` (two's
  complement, the PE accumulator width) before the groups are added, as the
  PE accumulators and the adder tree do;
* ``kill``: per site, units whose requantized site value is forced to 0 (a
  lost integration site: a two-point unit without R or without C);
* ``and_mask``/``or_mask``: per unit, applied to the ``out_bits``-wide stored
  output (unit damage: both 0; a stuck-at-1 bit: set in ``or_mask``; a
  stuck-at-0 bit: cleared in ``and_mask``).

Counters do not change with faults: events come from non-zero activations and
every stored synapse is walked whatever its word holds. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.golden import GoldenResult, check_inputs, modulate, requantize
from apical.sw.ir import IR, Layer

__all__ = [
    "ACTIVATION_KINDS",
    "FaultSet",
    "LayerFaults",
    "draw_activation_faults",
    "fault_rng",
    "merge",
    "run_faulty",
    "wrap",
]

# Fault kinds drawn on the IR alone (the weight-memory upset kind lives in apical.hw.faults).
ACTIVATION_KINDS = ("damage", "damage_r", "damage_c", "stuck")


@dataclass(frozen=True, eq=False)
class LayerFaults:
    """What one layer computes under a fault draw (see the module docstring)."""

    weights: dict[tuple[str, int, int], np.ndarray] | None = None
    acc_bits: int = 64
    kill: dict[str, np.ndarray] = field(default_factory=dict)
    and_mask: np.ndarray | None = None
    or_mask: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FaultSet:
    """A fault draw applied: `LayerFaults` by layer name, and what was drawn (for reports)."""

    layers: dict[str, LayerFaults]
    info: dict = field(default_factory=dict)


def fault_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of one draw: the same (seed, key) gives the same draw, whatever ran before."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in key)]))


def wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of an int64 array to ``bits`` bits (identity for bits >= 64)."""
    if bits >= 64:
        return v
    half = np.int64(1) << np.int64(bits - 1)
    return ((v + half) & ((half << np.int64(1)) - 1)) - half


def _pick(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Exactly ``round(rate * n)`` of ``n`` items, uniformly, as a bool mask."""
    k = round(float(rate) * n)
    mask = np.zeros(n, dtype=bool)
    if k:
        mask[rng.choice(n, size=min(k, n), replace=False)] = True
    return mask


def draw_activation_faults(
    ir: IR, kind: str, rate: float, rng: np.random.Generator, layers: Sequence[str] | None = None
) -> dict[str, LayerFaults]:
    """One draw of an IR-level fault kind over ``layers`` (default: every layer but the output).

    ``damage``: a fraction ``rate`` of units silenced (output 0); ``damage_r`` /
    ``damage_c``: a fraction of two-point units lose their R / C site (value 0
    fed to the modulation table); ``stuck``: each stored output bit of a unit
    is stuck (at 0 or 1, even odds) with probability ``rate``.
    """
    if kind not in ACTIVATION_KINDS:
        raise ApicalError(f"faults: kind must be one of {', '.join(ACTIVATION_KINDS)}, got {kind!r}")
    if not 0.0 <= float(rate) <= 1.0:
        raise ApicalError(f"faults: rate must be in [0, 1], got {rate}")
    names = [la.name for la in ir.layers]
    chosen = list(layers) if layers is not None else names[:-1] or names
    for n in chosen:
        if n not in names:
            raise ApicalError(f"faults: layer {n!r} not in the IR (layers: {names})")
    out: dict[str, LayerFaults] = {}
    for layer in ir.layers:
        if layer.name not in chosen:
            continue
        if kind == "damage":
            dead = _pick(rng, layer.size, rate)
            keep = np.where(dead, 0, (1 << layer.out_bits) - 1).astype(np.int64)
            out[layer.name] = LayerFaults(and_mask=keep, or_mask=np.zeros(layer.size, dtype=np.int64))
        elif kind in ("damage_r", "damage_c"):
            if layer.kind != "two_point":
                continue
            out[layer.name] = LayerFaults(kill={kind[-1]: _pick(rng, layer.size, rate)})
        else:
            bits = layer.out_bits
            hit = rng.random((layer.size, bits)) < float(rate)
            level = rng.random((layer.size, bits)) < 0.5
            w = np.int64(1) << np.arange(bits, dtype=np.int64)
            or_mask = ((hit & level) * w).sum(axis=1).astype(np.int64)
            clear = ((hit & ~level) * w).sum(axis=1).astype(np.int64)
            out[layer.name] = LayerFaults(and_mask=((1 << bits) - 1) & ~clear, or_mask=or_mask)
    return out


def _matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact ``x @ w.T`` for int64 arrays (float64 BLAS when every partial sum is below 2**53)."""
    if w.size == 0 or x.size == 0:
        return np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    bound = int(np.abs(w).sum(axis=1).max()) * int(np.abs(x).max())
    if bound < (1 << 53):
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return x @ w.T


def _accumulate(layer: Layer, lf: LayerFaults | None, xs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Accumulators per site (bias included) as the PEs and the adder tree compute them."""
    if lf is None or lf.weights is None:
        return {k: _matmul(xs[k], layer.sites[k].dense_weights(layer.size)) + layer.sites[k].bias[None, :]
                for k in layer.site_order}
    # Bank 1 of a dense layer is never finalised: a synapse redirected there is lost.
    bank_site = {0: "r", 1: "c"} if layer.kind == "two_point" else {0: "main"}
    groups = sorted({g for (_, _, g) in lf.weights})
    accs = {}
    for bank, key in bank_site.items():
        total = np.zeros((n, layer.size), dtype=np.int64)
        for g in groups:
            part = np.zeros((n, layer.size), dtype=np.int64)
            for src in layer.site_order:
                w = lf.weights.get((src, bank, g))
                if w is not None:
                    part += _matmul(xs[src], w)
            total += wrap(part, lf.acc_bits)
        accs[key] = total + layer.sites[key].bias.astype(np.int64)[None, :]
    return accs


def run_faulty(ir: IR, inputs: dict[str, np.ndarray], faults: FaultSet | None) -> GoldenResult:
    """`run_golden` under ``faults`` (None or an empty set: exactly `run_golden`'s result)."""
    tensors = check_inputs(ir, inputs)
    n = next(iter(tensors.values())).shape[0]
    layers_f = faults.layers if faults is not None else {}
    unknown = sorted(set(layers_f) - {la.name for la in ir.layers})
    if unknown:
        raise ApicalError(f"faults: layer {unknown[0]!r} not in the IR")
    outputs: dict[str, np.ndarray] = {}
    sites: dict[tuple[str, str], np.ndarray] = {}
    accs: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[str, dict[str, np.ndarray]] = {}
    for layer in ir.layers:
        lf = layers_f.get(layer.name)
        xs = {k: np.concatenate([tensors[s] for s in layer.sites[k].sources], axis=1) for k in layer.site_order}
        events = np.zeros(n, dtype=np.int64)
        syn_ops = np.zeros(n, dtype=np.int64)
        for k in layer.site_order:
            nz = xs[k] != 0
            events += nz.sum(axis=1, dtype=np.int64)
            syn_ops += nz.astype(np.int64) @ np.diff(layer.sites[k].indptr).astype(np.int64)
        acc = _accumulate(layer, lf, xs, n)
        for k in layer.site_order:
            val = requantize(acc[k], layer.sites[k])
            if lf is not None and k in lf.kill:
                val = np.where(lf.kill[k][None, :], 0, val)
            accs[(layer.name, k)] = acc[k]
            sites[(layer.name, k)] = val
        if layer.kind == "dense":
            out = sites[(layer.name, "main")]
        else:
            if layer.table is None:
                raise ApicalError(f"IR layer {layer.name}: table: missing modulation table")
            out = modulate(layer.table, sites[(layer.name, "r")], sites[(layer.name, "c")],
                           layer.sites["r"], layer.sites["c"])
        if lf is not None and lf.and_mask is not None:
            bits = layer.out_bits
            raw = (out & ((1 << bits) - 1)) & lf.and_mask[None, :] | lf.or_mask[None, :]
            if layer.out_signed:
                raw = np.where(raw >= (1 << (bits - 1)), raw - (1 << bits), raw)
            out = raw.astype(np.int64)
        outputs[layer.name] = out
        tensors[layer.name] = out
        full = lambda v: np.full(n, v, dtype=np.int64)  # noqa: E731
        counts[layer.name] = {
            "events": events,
            "syn_ops": syn_ops,
            "weight_reads": syn_ops.copy(),
            "acc_updates": syn_ops.copy(),
            "act_reads": full(sum(layer.sites[k].in_size for k in layer.site_order)),
            "act_writes": full(layer.size),
            "requants": full(layer.size * len(layer.site_order)),
            "table_lookups": full(layer.size if layer.kind == "two_point" else 0),
        }
        missing = set(COUNTERS) - set(counts[layer.name])
        if missing:
            raise ApicalError(f"faults: counters {sorted(missing)} have no faulty-golden definition")
    last = outputs[ir.layers[-1].name]
    classes = np.argmax(last, axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    return GoldenResult(outputs=outputs, sites=sites, accs=accs, counts=counts, classes=classes)


def merge(*parts: dict[str, LayerFaults]) -> dict[str, LayerFaults]:
    """Combine per-layer faults of several kinds into one (masks compose, kills unite)."""
    out: dict[str, LayerFaults] = {}
    for part in parts:
        for name, lf in part.items():
            old = out.get(name)
            if old is None:
                out[name] = lf
                continue
            kill = dict(old.kill)
            for k, v in lf.kill.items():
                kill[k] = kill[k] | v if k in kill else v
            am, om = old.and_mask, old.or_mask
            if lf.and_mask is not None:
                # (x & a1 | o1) & a2 | o2 == x & (a1 & a2) | (o1 & a2 | o2)
                am, om = (lf.and_mask.copy(), lf.or_mask.copy()) if am is None else (am & lf.and_mask,
                                                                                    om & lf.and_mask | lf.or_mask)
            weights = lf.weights if lf.weights is not None else old.weights
            out[name] = LayerFaults(weights=weights, acc_bits=min(old.acc_bits, lf.acc_bits), kill=kill,
                                    and_mask=am, or_mask=om)
    return out
