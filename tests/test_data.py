"""Data sets: the multimodal digits task (splits, pairing, ranges, determinism) and user-data faults."""

from __future__ import annotations

import numpy as np
import pytest

from apical.sw.config import Config, ContextCode, DataConfig, DataSource, load_config
from apical.sw.data import context_transform, load_dataset, read_idx
from apical.sw.errors import ApicalError


def _cfg(**data) -> Config:
    return load_config().replace(data=DataConfig(**data))


@pytest.fixture(scope="module")
def digits():
    return load_dataset(_cfg(noise=0.3, context_noise=0.0))


def test_digits_splits_are_disjoint_stratified_and_in_range(digits) -> None:
    sizes = [len(s) for s in (digits.train, digits.val, digits.test)]
    assert sum(sizes) == 1797
    assert abs(sizes[2] / 1797 - 0.2) < 0.01 and abs(sizes[1] / 1797 - 0.15) < 0.01
    assert digits.num_classes == 10 and digits.x_dim == 64 and digits.ctx_dim == 64
    for s in (digits.train, digits.val, digits.test):
        assert s.x.dtype == np.float32 and s.ctx.dtype == np.float32 and s.y.dtype == np.int64
        assert s.x.min() >= 0.0 and s.x.max() <= 1.0
        assert s.ctx.min() >= 0.0 and s.ctx.max() <= 1.0
        # every class appears in every split, in proportion
        counts = np.bincount(s.y, minlength=10)
        assert counts.min() > 0.7 * counts.max()
    with pytest.raises(ValueError):
        digits.train.x[0, 0] = 0.5  # splits are read-only


def test_driving_view_is_the_digit_plus_noise(digits) -> None:
    from sklearn.datasets import load_digits

    clean = load_digits().data / 16.0
    quiet = load_dataset(_cfg(noise=0.0, context_noise=0.0))
    # noiseless driving views are exactly rows of the clean digits
    rows = {r.tobytes() for r in clean.astype(np.float32)}
    assert all(r.tobytes() in rows for r in quiet.test.x)
    # the noisy view deviates from the noiseless one by the configured std (before clipping)
    diff = digits.test.x - quiet.test.x
    assert 0.1 < diff.std() < 0.3


def _coded(v: np.ndarray, sign: np.ndarray, code: str) -> np.ndarray:
    """The documented context codes of one permuted row (noise-free)."""
    if code == "offset":
        return (0.5 + 0.5 * sign * v).astype(np.float32)
    return np.where(v > 0, np.clip((0.75 + 0.25 * sign) * v, 1 / 16, 1.0), 0.0).astype(np.float32)


@pytest.mark.parametrize("code", ["sparse", "offset"])
def test_context_is_another_sample_of_the_same_class(code: str) -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset(_cfg(noise=0.0, context_noise=0.0, context_code=ContextCode(code)))
    clean = (load_digits().data / 16.0).astype(np.float32)
    perm, sign = context_transform(64, 0)
    by_key = {}
    for i, r in enumerate(clean):
        by_key.setdefault(_coded(r[perm], sign, code).tobytes(), []).append(i)
    target = load_digits().target
    split_rows = {r.tobytes() for r in ds.test.x}
    same_sample = 0
    for x, z, y in zip(ds.test.x, ds.test.ctx, ds.test.y, strict=True):
        src = by_key[z.tobytes()]
        assert any(target[i] == y for i in src)
        # the partner comes from the same split
        assert any(clean[i].tobytes() in split_rows for i in src)
        same_sample += int(np.array_equal(z, _coded(x[perm], sign, code)))
    # partners are other samples (identical duplicates in the data set are the only exception)
    assert same_sample <= 2


def test_sparse_context_is_silent_where_it_carries_nothing() -> None:
    from apical.sw.data import empty_context

    sparse = load_dataset(_cfg(noise=0.1, context_noise=0.1))
    offset = load_dataset(_cfg(noise=0.1, context_noise=0.1, context_code=ContextCode.OFFSET))
    # noisy sparse context: zero exactly on blank source pixels; every content pixel is an event
    nz = (sparse.test.ctx > 0).mean()
    assert 0.3 < nz < 0.7
    assert (sparse.test.ctx[sparse.test.ctx > 0] >= 1 / 16).all()
    # the offset code fires almost everywhere (a blank pixel is 0.5 +- noise)
    assert (offset.test.ctx > 1 / 32).mean() > 0.9
    # and its empty context is the blank level, the sparse one is silence
    assert not empty_context(sparse_cfg := _cfg(), (3, 64)).any() and sparse_cfg.data.context_code.value == "sparse"
    assert (empty_context(_cfg(context_code=ContextCode.OFFSET), (3, 64)) == 0.5).all()


def test_digits_are_deterministic_and_seed_dependent() -> None:
    a = load_dataset(_cfg())
    b = load_dataset(_cfg())
    c = load_dataset(_cfg().replace(seed=1))
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.ctx, b.test.ctx)
    assert np.array_equal(a.val.y, b.val.y)
    assert not np.array_equal(a.train.x, c.train.x)


def test_digits_without_context_and_subsampled() -> None:
    ds = load_dataset(_cfg(context=False, max_samples=300))
    assert ds.train.ctx is None and ds.ctx_dim is None
    assert len(ds.train) + len(ds.val) + len(ds.test) == 300


def _npz_cfg(path, **kw) -> Config:
    return _cfg(source=DataSource.NPZ, path=str(path), **kw)


def test_npz_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(100, 4, 4), dtype=np.uint8)
    ctx = rng.random((100, 3)).astype(np.float32)
    y = np.arange(100) % 3
    p = tmp_path / "d.npz"
    np.savez(p, x=x, ctx=ctx, y=y)
    ds = load_dataset(_npz_cfg(p))
    assert ds.x_dim == 16 and ds.ctx_dim == 3 and ds.num_classes == 3
    assert len(ds.train) + len(ds.val) + len(ds.test) == 100
    allx = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    assert np.allclose(np.sort(allx.ravel()), np.sort(x.reshape(100, -1).ravel() / 255.0))


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x": np.zeros((10, 4)), "y": np.zeros(9, dtype=np.int64)}, "'x'"),
        ({"y": np.zeros(10, dtype=np.int64)}, "'x' missing"),
        ({"x": np.zeros((10, 4))}, "'y' missing"),
        ({"x": np.full((10, 4), np.nan), "y": np.arange(10) % 2}, "NaN"),
        ({"x": np.zeros((10, 4)), "y": (np.arange(10) % 2) - 1}, "label out of range"),
        ({"x": np.zeros((10, 4)), "y": np.zeros(10) + 0.5}, "integers"),
        ({"x": np.zeros(10), "y": np.arange(10) % 2}, "shape"),
        ({"x": np.full((10, 4), 2.0), "y": np.arange(10) % 2}, "[0, 1]"),
        ({"x": np.zeros((10, 4)), "ctx": np.zeros((8, 2)), "y": np.arange(10) % 2}, "'ctx'"),
        ({"x": np.zeros((10, 4)), "y": np.zeros((10, 2), dtype=np.int64)}, "1-D"),
    ],
)
def test_npz_faults_name_file_and_array(tmp_path, arrays, fragment) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ApicalError) as e:
        load_dataset(_npz_cfg(p))
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_npz_missing_and_corrupt_file(tmp_path) -> None:
    with pytest.raises(ApicalError, match="not found"):
        load_dataset(_npz_cfg(tmp_path / "nope.npz"))
    p = tmp_path / "junk.npz"
    p.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ApicalError, match=r"junk\.npz"):
        load_dataset(_npz_cfg(p))


def _write_idx(path, arr: np.ndarray, code: int = 0x08) -> None:
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    path.write_bytes(head + arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_idx_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(60, 5, 5), dtype=np.uint8)
    labels = (np.arange(60) % 4).astype(np.uint8)
    ip, lp = tmp_path / "img.idx", tmp_path / "lab.idx"
    _write_idx(ip, imgs)
    _write_idx(lp, labels)
    assert np.array_equal(read_idx(ip), imgs)
    ds = load_dataset(_cfg(source=DataSource.IDX, path=str(ip), labels_path=str(lp)))
    assert ds.x_dim == 25 and ds.num_classes == 4 and ds.ctx_dim is None
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60
    f32 = tmp_path / "f.idx"
    _write_idx(f32, rng.random((3, 2)).astype(np.float32), code=0x0D)
    assert read_idx(f32).shape == (3, 2) and read_idx(f32).dtype == np.float32


def test_idx_faults(tmp_path) -> None:
    ip, lp = tmp_path / "img.idx", tmp_path / "lab.idx"
    _write_idx(ip, np.zeros((10, 2, 2), dtype=np.uint8))
    _write_idx(lp, np.zeros(9, dtype=np.uint8))
    cfg = _cfg(source=DataSource.IDX, path=str(ip), labels_path=str(lp))
    with pytest.raises(ApicalError, match="9 labels"):
        load_dataset(cfg)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ApicalError, match="magic"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(ApicalError, match="type code"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x08\x02\x00\x00\x00\x03")
    with pytest.raises(ApicalError, match="truncated"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00\x00")
    with pytest.raises(ApicalError, match="data size"):
        read_idx(bad)
    with pytest.raises(ApicalError, match="not found"):
        read_idx(tmp_path / "missing.idx")
    with pytest.raises(ApicalError, match="labels_path"):
        load_dataset(_cfg(source=DataSource.IDX, path=str(ip)))
