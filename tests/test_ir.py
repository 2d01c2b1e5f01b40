"""IR format: save/load round trip, and every kind of broken IR gives one clear ApicalError.

Broken IRs are made both on disk (edited ``model.yaml`` / ``weights.npz``) and
in memory (`validate_ir`); each error message must be one line naming the
layer and the field at fault.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from apical.sw.errors import ApicalError
from apical.sw.ir import (
    IR,
    Layer,
    Requant,
    acc_bits_needed,
    load_ir,
    replace_site,
    save_ir,
    validate_ir,
)
from apical.sw.ir_random import ir_strategy, random_inputs, random_ir


def assert_ir_equal(a: IR, b: IR) -> None:
    assert a.inputs == b.inputs
    assert a.meta == b.meta
    assert [la.name for la in a.layers] == [lb.name for lb in b.layers]
    for la, lb in zip(a.layers, b.layers, strict=True):
        for f in ("kind", "size", "out_bits", "out_signed", "out_scale", "modulation"):
            assert getattr(la, f) == getattr(lb, f), (la.name, f)
        assert (la.table is None) == (lb.table is None)
        if la.table is not None:
            assert np.array_equal(la.table, lb.table)
        assert set(la.sites) == set(lb.sites)
        for k in la.sites:
            sa, sb = la.sites[k], lb.sites[k]
            for f in ("sources", "in_size", "weight_bits", "acc_bits", "requant", "bits", "signed", "activation"):
                assert getattr(sa, f) == getattr(sb, f), (la.name, k, f)
            for f in ("indptr", "indices", "data", "bias"):
                assert np.array_equal(getattr(sa, f), getattr(sb, f)), (la.name, k, f)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ir=ir_strategy(layers=3))
def test_round_trip_random_irs(ir: IR, tmp_path: Path) -> None:
    d = tmp_path / f"ir{abs(hash(ir.layers[0].sites[ir.layers[0].site_order[0]].data.tobytes()))}"
    save_ir(ir, d)
    assert_ir_equal(ir, load_ir(d))
    # saving the loaded IR again gives the same files byte for byte
    save_ir(load_ir(d), d / "again")
    assert (d / "model.yaml").read_bytes() == (d / "again" / "model.yaml").read_bytes()


# --------------------------------------------------------------------------- on-disk faults


@pytest.fixture
def ir_dir(tmp_path: Path) -> Path:
    """A saved two-point IR: layers l1 (two_point), l2 (two_point), out (dense)."""
    ir = random_ir(np.random.default_rng(11), kind="two_point", layers=3)
    return save_ir(ir, tmp_path / "ir")


def edit_yaml(d: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    m = yaml.safe_load((d / "model.yaml").read_text())
    fn(m)
    (d / "model.yaml").write_text(yaml.safe_dump(m, sort_keys=False))


def edit_npz(d: Path, fn: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(d / "weights.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    fn(arrays)
    np.savez(d / "weights.npz", **arrays)


def expect(d: Path, *parts: str) -> str:
    with pytest.raises(ApicalError) as e:
        load_ir(d)
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def layer_entry(m: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in m["layers"] if e["name"] == name)


def test_wrong_format_and_version(ir_dir: Path) -> None:
    edit_yaml(ir_dir, lambda m: m.update(format="onnx"))
    expect(ir_dir, "model.yaml", "format", "onnx")
    edit_yaml(ir_dir, lambda m: m.update(format="apical-ir", version=99))
    expect(ir_dir, "model.yaml", "version", "99")


def test_malformed_yaml(ir_dir: Path) -> None:
    (ir_dir / "model.yaml").write_text("format: apical-ir\nlayers: [\n  - {name: l1\n")
    expect(ir_dir, "model.yaml", "malformed YAML")
    (ir_dir / "model.yaml").write_text("- just\n- a list\n")
    expect(ir_dir, "model.yaml", "mapping")


def test_missing_files(ir_dir: Path) -> None:
    (ir_dir / "weights.npz").unlink()
    expect(ir_dir, "weights.npz", "missing")


def test_missing_manifest_field(ir_dir: Path) -> None:
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l2")["sites"]["c"].pop("acc_bits"))
    expect(ir_dir, "IR layer l2", "sites.c", "acc_bits", "missing")
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l2")["sites"]["c"].update(acc_bits="wide"))
    expect(ir_dir, "IR layer l2", "acc_bits", "must be an integer")


def test_missing_array(ir_dir: Path) -> None:
    edit_npz(ir_dir, lambda a: a.pop("l2.r.data"))
    expect(ir_dir, "IR layer l2", "sites.r", "l2.r.data")


def test_float_array(ir_dir: Path) -> None:
    edit_npz(ir_dir, lambda a: a.update({"out.main.bias": a["out.main.bias"].astype(np.float32)}))
    expect(ir_dir, "IR layer out", "sites.main", "out.main.bias", "integer")


def test_out_of_range_weight(ir_dir: Path) -> None:
    m = yaml.safe_load((ir_dir / "model.yaml").read_text())
    wb = layer_entry(m, "l1")["sites"]["r"]["weight_bits"]

    def bump(a: dict[str, np.ndarray]) -> None:
        d = a["l1.r.data"].copy()
        d[0] = 1 << (wb - 1)  # one above the largest signed weight
        a["l1.r.data"] = d

    edit_npz(ir_dir, bump)
    expect(ir_dir, "IR layer l1", "sites.r.data", "outside", f"{wb}-bit")


def test_stored_zero_weight(ir_dir: Path) -> None:
    def zero(a: dict[str, np.ndarray]) -> None:
        d = a["l2.c.data"].copy()
        d[-1] = 0
        a["l2.c.data"] = d

    edit_npz(ir_dir, zero)
    expect(ir_dir, "IR layer l2", "sites.c.data", "zero weights")


def test_unsorted_fan_out(ir_dir: Path) -> None:
    def unsort(a: dict[str, np.ndarray]) -> None:
        ip, idx = a["l1.r.indptr"], a["l1.r.indices"].copy()
        i = int(np.flatnonzero(np.diff(ip) >= 2)[0])
        s = int(ip[i])
        idx[s], idx[s + 1] = idx[s + 1], idx[s]
        a["l1.r.indices"] = idx

    edit_npz(ir_dir, unsort)
    expect(ir_dir, "IR layer l1", "sites.r.indices", "ascending")


def test_bad_indptr(ir_dir: Path) -> None:
    edit_npz(ir_dir, lambda a: a.update({"out.main.indptr": a["out.main.indptr"][:-1]}))
    expect(ir_dir, "IR layer out", "sites.main.indptr", "shape")


def test_decreasing_indptr(ir_dir: Path) -> None:
    def dec(a: dict[str, np.ndarray]) -> None:
        ip = a["out.main.indptr"].copy()
        ip[1] = ip[2] + 1
        a["out.main.indptr"] = ip

    edit_npz(ir_dir, dec)
    expect(ir_dir, "IR layer out", "sites.main.indptr", "not decrease")


def test_target_out_of_range(ir_dir: Path) -> None:
    m = yaml.safe_load((ir_dir / "model.yaml").read_text())
    size = layer_entry(m, "out")["size"]

    def oob(a: dict[str, np.ndarray]) -> None:
        idx = a["out.main.indices"].copy()
        idx[-1] = size
        a["out.main.indices"] = idx

    edit_npz(ir_dir, oob)
    expect(ir_dir, "IR layer out", "sites.main.indices", "out of range")


def test_bias_shape(ir_dir: Path) -> None:
    edit_npz(ir_dir, lambda a: a.update({"l1.c.bias": a["l1.c.bias"][:-1]}))
    expect(ir_dir, "IR layer l1", "sites.c.bias", "shape")


def test_acc_bits_too_small(ir_dir: Path) -> None:
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l2")["sites"]["r"].update(acc_bits=3))
    expect(ir_dir, "IR layer l2", "sites.r.acc_bits", "worst case")


def test_table_wrong_shape(ir_dir: Path) -> None:
    edit_npz(ir_dir, lambda a: a.update({"l1.table": a["l1.table"][:-1]}))
    expect(ir_dir, "IR layer l1", "table", "shape")


def test_table_out_of_range(ir_dir: Path) -> None:
    m = yaml.safe_load((ir_dir / "model.yaml").read_text())
    ob = layer_entry(m, "l2")["out_bits"]

    def big(a: dict[str, np.ndarray]) -> None:
        t = a["l2.table"].copy()
        t[0, 0] = 1 << ob
        a["l2.table"] = t

    edit_npz(ir_dir, big)
    expect(ir_dir, "IR layer l2", "table", "outside output range")


def test_table_missing(ir_dir: Path) -> None:
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l1").pop("table"))
    expect(ir_dir, "IR layer l1", "table", "missing")


def test_unknown_source(ir_dir: Path) -> None:
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l2")["sites"]["r"].update(sources=["nope"]))
    expect(ir_dir, "IR layer l2", "sites.r.sources", "nope")
    # a later layer is unknown too (no cycles)
    edit_yaml(ir_dir, lambda m: layer_entry(m, "l2")["sites"]["r"].update(sources=["out"]))
    expect(ir_dir, "IR layer l2", "sites.r.sources", "out")


def test_truncated_weights(ir_dir: Path) -> None:
    raw = (ir_dir / "weights.npz").read_bytes()
    (ir_dir / "weights.npz").write_bytes(raw[: len(raw) // 2])
    expect(ir_dir, "weights.npz", "unreadable")


def test_corrupt_weights_member(ir_dir: Path) -> None:
    # keep the zip directory intact but flip bytes inside one member's data:
    # the archive opens, and the fault shows only when that array is read
    buf = io.BytesIO((ir_dir / "weights.npz").read_bytes())
    with zipfile.ZipFile(buf) as z:
        info = z.getinfo("l2.r.data.npy")
    raw = bytearray(buf.getvalue())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    end = start + info.compress_size
    for p in range(end - 4, end):
        raw[p] ^= 0xFF
    (ir_dir / "weights.npz").write_bytes(bytes(raw))
    expect(ir_dir, "l2.r.data", "unreadable")


def test_garbage_weights(ir_dir: Path) -> None:
    (ir_dir / "weights.npz").write_bytes(b"not a zip file at all")
    expect(ir_dir, "weights.npz", "unreadable")


# --------------------------------------------------------------------------- in-memory faults


def base_ir() -> IR:
    return random_ir(np.random.default_rng(4), kind="dense", layers=2)


def with_layer(ir: IR, i: int, layer: Layer) -> IR:
    layers = list(ir.layers)
    layers[i] = layer
    return dataclasses.replace(ir, layers=tuple(layers))


def expect_invalid(ir: IR, *parts: str) -> None:
    with pytest.raises(ApicalError) as e:
        validate_ir(ir)
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


def test_validate_in_memory_faults() -> None:
    ir = base_ir()
    validate_ir(ir)
    l0 = ir.layers[0]
    s = l0.sites["main"]
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", requant=Requant(shift=99))), "IR layer l1", "requant.shift")
    expect_invalid(
        with_layer(ir, 0, replace_site(l0, "main", requant=Requant(shift=3, multiplier=0))), "l1", "requant.multiplier"
    )
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", activation="tanh")), "l1", "sites.main.activation")
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", in_size=s.in_size + 1)), "l1", "sites.main.in_size")
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", bits=s.bits % 8 + 1)), "l1", "sites.main.bits")
    expect_invalid(with_layer(ir, 0, dataclasses.replace(l0, kind="conv")), "l1", "kind")
    expect_invalid(with_layer(ir, 0, dataclasses.replace(l0, sites={"r": s})), "l1", "sites")
    expect_invalid(with_layer(ir, 0, dataclasses.replace(l0, table=np.zeros((2, 2), dtype=np.int64))), "l1", "table")
    expect_invalid(with_layer(ir, 1, dataclasses.replace(ir.layers[1], name="l1")), "l1", "duplicate")
    need = acc_bits_needed(s, l0.size, [ir.inputs[0]])
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", acc_bits=need - 1)), "l1", "acc_bits", str(need))
    validate_ir(with_layer(ir, 0, replace_site(l0, "main", acc_bits=need)))
    big = s.bias.copy()
    big[0] = 1 << 50  # the bias alone overflows a 48-bit accumulator
    expect_invalid(with_layer(ir, 0, replace_site(l0, "main", bias=big, acc_bits=48)), "l1", "acc_bits")
    bad_in = dataclasses.replace(ir.inputs[0], bits=0)
    expect_invalid(dataclasses.replace(ir, inputs=(bad_in,)), "IR input x", "bits")
    expect_invalid(dataclasses.replace(ir, layers=()), "layers")


def test_acc_bits_needed_is_tight() -> None:
    """The derived width holds the true worst case and one bit less does not."""
    rng = np.random.default_rng(9)
    for _ in range(20):
        ir = random_ir(rng, kind="mixed", layers=2)
        tensors = {t.name: t for t in ir.inputs}
        for layer in ir.layers:
            for s in layer.sites.values():
                srcs = [tensors[n] for n in s.sources]
                need = acc_bits_needed(s, layer.size, srcs)
                xmax = np.concatenate([np.full(t.size, max(map(abs, t.range))) for t in srcs])
                w = np.abs(s.dense_weights(layer.size))
                worst = int((np.abs(s.bias) + w @ xmax).max())
                assert worst <= (1 << (need - 1)) - 1 or worst == 0
                assert need == 2 or worst > (1 << (need - 2)) - 1
            tensors[layer.name] = layer.output


# --------------------------------------------------------------------------- the random IR generator


def test_random_ir_sparse_has_exact_fan_in() -> None:
    rng = np.random.default_rng(2)
    for k in (1, 3, 5):
        ir = random_ir(rng, kind="sparse", layers=3, fan_in=k, input_size=(6, 10), hidden_size=(6, 10))
        for layer in ir.layers[:-1]:
            s = layer.sites["main"]
            assert (s.fan_in(layer.size) == min(k, int(np.count_nonzero(np.diff(s.indptr))))).all()


def test_random_ir_covers_the_corners() -> None:
    """Across seeds, mixed IRs exercise every feature the hardware must handle."""
    rng = np.random.default_rng(0)
    seen: dict[str, bool] = dict.fromkeys(
        ["two_point", "multi_source", "multiplier", "shift_only", "negative_shift", "empty_fanout",
         "signed_input", "unsigned_input", "bits2", "bits8", "relu", "identity"], False)
    for _ in range(60):
        ir = random_ir(rng, kind="mixed", layers=3)
        for t in ir.inputs:
            seen["signed_input" if t.signed else "unsigned_input"] = True
        for layer in ir.layers:
            seen["two_point"] |= layer.kind == "two_point"
            for s in layer.sites.values():
                seen["multi_source"] |= len(s.sources) > 1
                seen["multiplier" if s.requant.multiplier != 1 else "shift_only"] = True
                seen["negative_shift"] |= s.requant.shift < 0
                seen["empty_fanout"] |= bool(np.any(np.diff(s.indptr) == 0))
                seen["bits2"] |= s.weight_bits == 2 or s.bits == 2
                seen["bits8"] |= s.weight_bits == 8 or s.bits == 8
                seen[s.activation] = True
    assert all(seen.values()), [k for k, v in seen.items() if not v]


def test_random_inputs_range_and_zero_fraction() -> None:
    rng = np.random.default_rng(1)
    ir = random_ir(rng, kind="two_point", layers=2)
    for zf in (0.0, 0.5, 0.9, 1.0):
        inp = random_inputs(rng, ir, 400, zero_fraction=zf)
        for t in ir.inputs:
            a = inp[t.name]
            assert a.shape == (400, t.size) and a.dtype == np.int64
            assert a.min() >= t.range[0] and a.max() <= t.range[1]
            frac = float(np.mean(a == 0))
            assert frac >= zf - 0.05  # drawn zeros add to the forced ones
            assert zf == 1.0 or frac <= zf + (1 - zf) / 2 + 0.05
    with pytest.raises(ApicalError, match="zero_fraction"):
        random_inputs(rng, ir, 1, zero_fraction=1.5)
    with pytest.raises(ApicalError, match="kind"):
        random_ir(rng, kind="conv")
