"""Random valid IRs and inputs, for the tests of every part (golden, RTL, simulation, energy).

`random_ir(rng, kind=...)` builds a small IR that passes `validate_ir` and
exercises the corners the hardware must handle: dense and sparse fan-in-K
sites, two-point layers with random tables, mixed bit widths 2..16 per
tensor, signed and unsigned tensors, outputs without requantisation,
multi-source sites, inputs with empty fan-out, shift-only and multiplier
requantization, negative shifts. `random_inputs(rng, ir, n)` draws
in-range integer inputs with a controllable fraction of zeros (activity
sparsity). `ir_strategy()` wraps both for hypothesis property tests.
Everything is deterministic in the generator's state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from apical.sw.errors import ApicalError
from apical.sw.ir import (
    GATES,
    IR,
    MAX_BITS,
    Layer,
    Requant,
    Site,
    TensorSpec,
    acc_bits_needed,
    int_range,
    validate_ir,
)

__all__ = ["KINDS", "ir_strategy", "random_inputs", "random_ir", "random_site"]

KINDS = ("dense", "sparse", "two_point", "mixed")


def _bits(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def _nonzero_weights(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    lo, hi = int_range(bits, True)
    vals = np.concatenate([np.arange(lo, 0), np.arange(1, hi + 1)])
    return rng.choice(vals, size=n).astype(np.int64)


def random_site(
    rng: np.random.Generator,
    *,
    sources: list[TensorSpec],
    size: int,
    bits: int,
    signed: bool,
    activation: str,
    weight_bits: int,
    fan_in: int | None = None,
    density: float = 0.6,
    requant: str = "mixed",
    empty_fanout: float = 0.15,
    raw: bool = False,
) -> Site:
    """A valid site onto ``size`` neurons from the concatenation of ``sources``.

    ``fan_in=K`` gives every target exactly ``min(K, in_size)`` synapses (the
    sparse-modular pattern); otherwise each synapse exists with probability
    ``density``. A fraction ``empty_fanout`` of inputs get no synapses at all.
    ``requant`` is ``"shift"``, ``"mult"`` or ``"mixed"``. The shift is chosen
    from the accumulator's typical magnitude so that outputs use their range.
    ``raw``: no requantisation where the worst-case accumulator fits in
    `MAX_BITS` (the output is the signed accumulator; ``bits``/``signed`` then
    describe it, not the arguments).
    """
    in_size = sum(t.size for t in sources)
    mask = np.zeros((size, in_size), dtype=bool)
    live = rng.random(in_size) >= empty_fanout
    if not live.any():
        live[rng.integers(in_size)] = True
    live_idx = np.flatnonzero(live)
    for j in range(size):
        if fan_in is not None:
            k = min(fan_in, live_idx.size)
            mask[j, rng.choice(live_idx, size=k, replace=False)] = True
        else:
            mask[j, live_idx] = rng.random(live_idx.size) < density
    rows, cols = np.nonzero(mask.T)  # rows: input i, cols: target j -> CSC (fan-out) order
    indptr = np.zeros(in_size + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    indptr = np.cumsum(indptr)
    indices = cols.astype(np.int64)
    data = _nonzero_weights(rng, indices.size, weight_bits)

    # Typical |acc|: sqrt(fan-in) * weight magnitude * input magnitude.
    xmag = max(max(abs(v) for v in t.range) for t in sources)
    wmag = 1 << (weight_bits - 1)
    mean_fan_in = max(1.0, indices.size / size)
    typical = max(1.0, np.sqrt(mean_fan_in) * wmag * xmag)
    bias_mag = int(typical)
    bias = rng.integers(-bias_mag, bias_mag + 1, size=size).astype(np.int64)

    mode = requant if requant != "mixed" else ("shift" if rng.random() < 0.5 else "mult")
    target = max(1, int_range(bits, signed)[1])
    shift = int(np.floor(np.log2(typical / target))) + int(rng.integers(-1, 2))
    multiplier = 1
    if mode == "mult":
        mbits = int(rng.integers(2, 9))
        multiplier = int(rng.integers(1 << (mbits - 1), 1 << mbits))
        shift += mbits - 1
    elif mode != "shift":
        raise ApicalError(f"random_site: requant must be shift, mult or mixed, got {requant!r}")
    shift = max(-4, min(shift, 40))
    site = Site(
        sources=tuple(t.name for t in sources),
        in_size=in_size,
        weight_bits=weight_bits,
        indptr=indptr,
        indices=indices,
        data=data,
        bias=bias,
        acc_bits=2,
        requant=Requant(shift=shift, multiplier=multiplier),
        bits=bits,
        signed=signed,
        activation=activation,
    )
    need = acc_bits_needed(site, size, sources)
    if raw and need <= MAX_BITS:
        # No requantisation: the output is the accumulator itself (an imported layer
        # without an output quantizer), signed and exactly as wide as the worst case.
        return Site(**{**site.__dict__, "acc_bits": need, "requant": Requant(shift=0, multiplier=1),
                       "bits": need, "signed": True, "activation": "identity"})
    return Site(**{**site.__dict__, "acc_bits": need + int(rng.integers(0, 3))})


def random_ir(
    rng: np.random.Generator,
    *,
    kind: str = "mixed",
    layers: int = 2,
    input_size: tuple[int, int] = (2, 10),
    hidden_size: tuple[int, int] = (2, 8),
    bits: tuple[int, int] = (2, 16),
    site_bits: tuple[int, int] = (2, 5),
    fan_in: int | None = None,
    density: float = 0.6,
    requant: str = "mixed",
    empty_fanout: float = 0.15,
    raw_output: float = 0.25,
    gate: str | None = None,
) -> IR:
    """A small random IR that passes `validate_ir`.

    ``kind``: ``"dense"`` (point layers, random density), ``"sparse"`` (every
    hidden neuron has exactly ``fan_in`` synapses, default 3), ``"two_point"``
    (two-point hidden layers, context input, random tables) or ``"mixed"``
    (each layer's kind, sources and connectivity drawn at random). Sizes and
    bit widths are drawn from the inclusive ranges given; two-point site widths
    from ``site_bits`` (keeps tables at most 2**10 entries). The last layer is
    a dense signed identity layer (logits), as in the trained networks; with
    probability ``raw_output`` it has no requantisation at all (its output is
    the accumulator, up to `MAX_BITS` wide), as imported models without an
    output quantizer have. ``gate`` (``"r"``/``"c"``): every two-point layer is
    context-gated on that site, its table made constant along the other site
    for about half of the gate site's values (so gating really skips).
    """
    if kind not in KINDS:
        raise ApicalError(f"random_ir: kind must be one of {KINDS}, got {kind!r}")
    if layers < 1:
        raise ApicalError(f"random_ir: layers must be >= 1, got {layers}")
    lo_b, hi_b = bits

    def size(r: tuple[int, int]) -> int:
        return int(rng.integers(r[0], r[1] + 1))

    inputs = [TensorSpec("x", size(input_size), _bits(rng, lo_b, hi_b), bool(rng.random() < 0.5))]
    use_ctx = kind in ("two_point", "mixed") and (kind == "two_point" or rng.random() < 0.6)
    if use_ctx:
        inputs.append(TensorSpec("ctx", size(input_size), _bits(rng, lo_b, hi_b), bool(rng.random() < 0.5)))
    tensors: list[TensorSpec] = list(inputs)
    out_layers: list[Layer] = []
    prev = inputs[0]
    for li in range(layers):
        last = li == layers - 1
        name = "out" if last else f"l{li + 1}"
        if last:
            lkind = "dense"
        elif kind == "mixed":
            lkind = "two_point" if use_ctx and rng.random() < 0.5 else "dense"
        else:
            lkind = "two_point" if kind == "two_point" else "dense"
        n = size(hidden_size)
        sparse = (kind == "sparse" and not last) or (kind == "mixed" and rng.random() < 0.3)
        k = (fan_in if fan_in is not None else 3) if sparse else None

        def site(srcs: list[TensorSpec], b: int, s: bool, act: str, raw: bool = False) -> Site:
            return random_site(
                rng,
                sources=srcs,
                size=n,  # noqa: B023 - used immediately within this iteration
                bits=b,
                signed=s,
                activation=act,
                weight_bits=_bits(rng, lo_b, hi_b),
                fan_in=k,  # noqa: B023
                density=density,
                requant=requant,
                empty_fanout=empty_fanout,
                raw=raw,
            )

        # Multi-source sites: sometimes also read an earlier tensor (a skip or the context).
        srcs = [prev]
        if kind == "mixed" and len(tensors) > 1 and rng.random() < 0.4:
            extra = tensors[int(rng.integers(len(tensors)))]
            if extra.name != prev.name:
                srcs.append(extra)
        if lkind == "dense":
            if last:
                b, s, act = _bits(rng, max(lo_b, 4), hi_b), True, "identity"
            else:
                b = _bits(rng, lo_b, hi_b)
                act = "relu" if rng.random() < 0.7 else "identity"
                s = act == "identity" or rng.random() < 0.3
            main = site(srcs, b, s, act, raw=last and raw_output > 0 and rng.random() < raw_output)
            layer = Layer(name, "dense", n, {"main": main}, out_bits=main.bits, out_signed=main.signed)
        else:
            ctx = next(t for t in inputs if t.name == "ctx")
            c_srcs = [ctx] if rng.random() < 0.7 else [ctx, prev]
            rb, cb = _bits(rng, *site_bits), _bits(rng, *site_bits)
            r = site(srcs, rb, bool(rng.random() < 0.5), "relu" if rng.random() < 0.3 else "identity")
            c = site(c_srcs, cb, bool(rng.random() < 0.6), "identity")
            ob = _bits(rng, lo_b, hi_b)
            os_ = bool(rng.random() < 0.3)
            olo, ohi = int_range(ob, os_)
            table = rng.integers(olo, ohi + 1, size=(1 << rb, 1 << cb)).astype(np.int64)
            layer = Layer(
                name, "two_point", n, {"r": r, "c": c}, out_bits=ob, out_signed=os_, table=table, modulation="random"
            )
        out_layers.append(layer)
        prev = layer.output
        tensors.append(prev)
    if gate is not None:
        out_layers = [_gated(rng, layer, gate) if layer.kind == "two_point" else layer for layer in out_layers]
    ir = IR(inputs=tuple(inputs), layers=tuple(out_layers), meta={"model_kind": f"random-{kind}", "scaling": "po2"})
    validate_ir(ir)
    return ir


def _gated(rng: np.random.Generator, layer: Layer, gate: str) -> Layer:
    """``layer`` gated on ``gate``, its table fixing the output on about half of that site's values."""
    if gate not in GATES:
        raise ApicalError(f"random_ir: gate must be one of {GATES} or None, got {gate!r}")
    assert layer.table is not None
    t = layer.table.copy()
    if gate == "r":
        rows = rng.random(t.shape[0]) < 0.5
        t[rows, :] = t[rows, :1]
    else:
        cols = rng.random(t.shape[1]) < 0.5
        t[:, cols] = t[:1, cols]
    return dataclasses.replace(layer, table=t, gate=gate)


def random_inputs(
    rng: np.random.Generator, ir: IR, n: int, *, zero_fraction: float = 0.3
) -> dict[str, np.ndarray]:
    """``n`` samples of in-range integers per IR input; about ``zero_fraction`` of them zero."""
    if not 0.0 <= zero_fraction <= 1.0:
        raise ApicalError(f"random_inputs: zero_fraction must be in [0, 1], got {zero_fraction}")
    out = {}
    for t in ir.inputs:
        lo, hi = t.range
        v = rng.integers(lo, hi + 1, size=(n, t.size)).astype(np.int64)
        v[rng.random((n, t.size)) < zero_fraction] = 0
        out[t.name] = v
    return out


def ir_strategy(**kwargs: Any) -> Any:
    """A hypothesis strategy of random IRs (``kind`` drawn from KINDS unless given).

    Draws a seed and forwards ``kwargs`` to `random_ir`, so shrinking moves to
    smaller seeds; hypothesis is imported here only (tests need it, the flow does not).
    """
    from hypothesis import strategies as st

    kinds = [kwargs.pop("kind")] if "kind" in kwargs else list(KINDS)
    return st.builds(
        lambda seed, k: random_ir(np.random.default_rng(seed), kind=k, **kwargs),
        st.integers(0, 2**32 - 1),
        st.sampled_from(kinds),
    )
