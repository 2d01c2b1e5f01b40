"""Hostile input: every generated case ends in success or one clear `ApicalError` line.

Generated cases per run (hypothesis ``max_examples``, see `N`): configs as
data and as raw YAML bytes, energy tables, IR manifests and weight archives,
``.npz`` and IDX data files, checkpoints, and a few through the CLI in
subprocesses (exit 0 or 1, one line, never 3). Each case has a 10 s deadline.
A hand-written corpus covers the cases of the issue that a generator would
rarely hit: alias and zip bombs (time- and memory-bounded), path escapes,
the run-directory lock, unwritable run directories.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apical.flows.energy import parse_energy_table
from apical.sw.config import Config, config_to_dict, load_config, parse_config
from apical.sw.data import read_idx
from apical.sw.errors import ApicalError
from apical.sw.ir import load_ir, save_ir
from apical.sw.ir_random import random_ir
from apical.sw.safeio import load_npz

# Generated cases per input kind (the total is what one `make test` runs).
N = {"config": 300, "config_yaml": 150, "energy_table": 120, "ir_manifest": 150, "ir_weights": 120,
     "npz": 100, "idx": 80, "checkpoint": 30}
def fuzz(kind: str) -> settings:
    """``N[kind]`` derandomized cases (the same ones every run), each with a 10 s deadline."""
    return settings(max_examples=N[kind], deadline=10_000, suppress_health_check=list(HealthCheck),
                    derandomize=True, database=None)


def one_line(e: ApicalError) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert len(msg) < 600, len(msg)  # values are truncated, never echoed whole
    return msg


def outcome(fn: Any, *args: Any) -> Any:
    """Run one case: a result, or the one-line error (anything else fails the test)."""
    try:
        return fn(*args)
    except ApicalError as e:
        return one_line(e)


# --------------------------------------------------------------------------- hostile values

hostile = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64 + 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324]),
    st.text(max_size=30),
    st.sampled_from(["", "a\nb", "x\x00y", "../../x", "/abs/x", "é" * 200, "🙂"]),
    st.lists(st.integers(-5, 5000), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def leaf_paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(d, dict):
        out = [prefix] if prefix else []
        for k, v in d.items():
            out += leaf_paths(v, (*prefix, k))
        return out
    if isinstance(d, list):
        return [prefix] + [p for i, v in enumerate(d) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


def set_path(d: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


BASE_CFG = config_to_dict(load_config(None))
CFG_PATHS = leaf_paths(BASE_CFG)


@fuzz("config")
@given(edits=st.lists(st.tuples(st.sampled_from(CFG_PATHS), hostile), min_size=1, max_size=3),
       extra=st.one_of(st.none(), st.tuples(st.text(max_size=8), hostile)))
def test_fuzz_config(edits, extra):
    raw = copy.deepcopy(BASE_CFG)
    for path, value in edits:
        with contextlib.suppress(TypeError, KeyError, IndexError):  # an earlier edit replaced the parent
            set_path(raw, path, value)
    if extra is not None:
        raw[extra[0]] = extra[1]
    got = outcome(parse_config, raw, "fuzz.yaml")
    if isinstance(got, Config):  # accepted: every float finite, every value in its declared range
        again = parse_config(config_to_dict(got), "again.yaml")
        assert again == got
    else:
        assert got.startswith("fuzz.yaml: ")


yaml_snippets = st.sampled_from([
    b"name: a\nname: b\n", b"model: {hidden: [1, 2]}\nmodel: {}\n", b"seed: !!python/object:os.system x\n",
    b"\xff\xfe\x00n", b"name: \x00\n", b"[" * 500, b"a: &a [*a]\n", b"<<: {seed: 1}\n", b"--- 1\n--- 2\n",
    b"seed: 1e400\n", b"train: {lr: .nan}\n", b"hardware: {clock_mhz: .inf}\n",
])


@fuzz("config_yaml")
@given(head=yaml_snippets, body=st.binary(max_size=200), mode=st.integers(0, 2))
def test_fuzz_config_yaml_bytes(tmp_path_factory, head, body, mode):
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    text = yaml.safe_dump(BASE_CFG).encode()
    p.write_bytes([head + body, text[: len(body)] + head, body][mode])
    got = outcome(load_config, p)
    assert isinstance(got, Config) or got.startswith(str(p))


# --------------------------------------------------------------------------- energy tables

BASE_TABLE = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "flows" / "data" / "energy" / "horowitz-45nm.yaml").read_text()
)
TABLE_PATHS = leaf_paths(BASE_TABLE)


@fuzz("energy_table")
@given(edits=st.lists(st.tuples(st.sampled_from(TABLE_PATHS), hostile), min_size=1, max_size=3))
def test_fuzz_energy_table(edits):
    raw = copy.deepcopy(BASE_TABLE)
    for path, value in edits:
        with contextlib.suppress(TypeError, KeyError, IndexError):
            set_path(raw, path, value)
    got = outcome(parse_energy_table, raw, "t.yaml")
    assert not isinstance(got, str) or got.startswith("t.yaml: ")


# --------------------------------------------------------------------------- IR


@pytest.fixture(scope="module")
def ir_src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ir") / "ir"
    save_ir(random_ir(np.random.default_rng(3), kind="mixed", layers=2), d)
    return d


def copy_ir(src: Path, dst: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    dst.mkdir(parents=True, exist_ok=True)
    m = yaml.safe_load((src / "model.yaml").read_text())
    with np.load(src / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return m, arrays


def write_ir(d: Path, m: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    (d / "model.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    np.savez(d / "weights.npz", **arrays)


@fuzz("ir_manifest")
@given(data=st.data())
def test_fuzz_ir_manifest(tmp_path_factory, ir_src, data):
    d = tmp_path_factory.mktemp("irm")
    m, arrays = copy_ir(ir_src, d)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(leaf_paths(m)))
        with contextlib.suppress(TypeError, KeyError, IndexError):
            set_path(m, path, data.draw(hostile))
    write_ir(d, m, arrays)
    outcome(load_ir, d)


hostile_arrays = st.one_of(
    st.sampled_from([np.array(3), np.zeros((2, 2)), np.array([2**64 - 1], dtype=np.uint64),
                     np.array([np.iinfo(np.int64).min]), np.array([1.5, np.nan]), np.array([], dtype=np.int32),
                     np.array([True, False]), np.full(7, 2**40, dtype=np.int64)]),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8).map(lambda v: np.array(v, dtype=np.int64)),
)


@fuzz("ir_weights")
@given(data=st.data())
def test_fuzz_ir_weights(tmp_path_factory, ir_src, data):
    d = tmp_path_factory.mktemp("irw")
    m, arrays = copy_ir(ir_src, d)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(arrays)))
        if data.draw(st.booleans()):
            arrays[key] = data.draw(hostile_arrays)
        else:
            del arrays[key]
    write_ir(d, m, arrays)
    outcome(load_ir, d)


# --------------------------------------------------------------------------- data files


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


@fuzz("npz")
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "ctx", "a b", "../e"]), hostile_arrays, max_size=3),
       cut=st.integers(0, 400), flip=st.integers(0, 4000))
def test_fuzz_npz(tmp_path_factory, arrays, cut, flip):
    raw = bytearray(npz_bytes(arrays))
    if cut and cut < len(raw):
        raw = raw[:-cut]
    if raw and flip % 3 == 0:
        raw[flip % len(raw)] ^= 0x5A
    p = tmp_path_factory.mktemp("npz") / "d.npz"
    p.write_bytes(bytes(raw))
    got = outcome(load_npz, p, "data file")
    assert isinstance(got, dict) or got.startswith(str(p))


@fuzz("idx")
@given(code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01]), dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=5),
       body=st.binary(max_size=64), magic=st.sampled_from([b"\0\0", b"\x01\0"]))
def test_fuzz_idx(tmp_path_factory, code, dims, body, magic):
    p = tmp_path_factory.mktemp("idx") / "d.idx"
    p.write_bytes(magic + bytes([code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body)
    got = outcome(read_idx, p)
    assert isinstance(got, np.ndarray) or got.startswith(str(p))


# --------------------------------------------------------------------------- checkpoints


@fuzz("checkpoint")
@given(dims=st.dictionaries(st.sampled_from(["x_dim", "ctx_dim", "num_classes"]),
                            st.one_of(st.integers(-3, 10**11), st.none(), st.floats()), max_size=3),
       junk=st.sampled_from([None, "state", {"w": 3}]))
def test_fuzz_checkpoint(tmp_path_factory, dims, junk):
    from apical.sw.checkpoint import FORMAT, VERSION, load_model
    from apical.sw.config import config_hash

    cfg = load_config(None)
    blob = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "config_hash": config_hash(cfg),
            "model_kind": cfg.model.kind.value, "dims": dims, "state_dict": junk if junk is not None else {}}
    d = tmp_path_factory.mktemp("ckpt")
    torch.save(blob, d / "checkpoint.pt")
    got = outcome(load_model, d)
    assert isinstance(got, str)  # nothing here is a valid checkpoint


# --------------------------------------------------------------------------- the CLI, in subprocesses

CLI_CASES = [
    ("name: ../../escape\n", "name: must be a plain name"),
    ("name: /abs/escape\n", "name: must be a plain name"),
    ("seed: 100000000000000000000000\n", "seed: must be in"),
    ("model: {modules: 1000000}\n", "model.modules: must be in"),
    ("train: {lr: .nan}\n", "train.lr: must be a finite number"),
    ("a: 1\na: 2\n", "duplicate key"),
]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apical.flows.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("text", "expect"), CLI_CASES)
def test_cli_bad_config_is_one_line_exit_1(tmp_path: Path, text: str, expect: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    r = cli(["run", "c.yaml", "--to", "train"], tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apical: error: c.yaml: ") and expect in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_cli_unwritable_run_directory_is_exit_1(tmp_path: Path) -> None:
    """A run directory that cannot be made (its parent is a file) is the user's fault: exit 1, the path."""
    (tmp_path / "file").write_text("")
    r = cli(["run", "--out", "file/run", "--to", "train"], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "file/run" in r.stderr


# --------------------------------------------------------------------------- the corpus of the issue


def test_alias_bomb_is_refused_in_bounded_time(tmp_path: Path) -> None:
    """A billion-laughs config: refused from its node count (in a subprocess with a 10 s limit)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nname: *a9\n")
    code = ("from apical.sw.config import load_config\nfrom apical.sw.errors import ApicalError\n"
            "try:\n    load_config('bomb.yaml')\nexcept ApicalError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "aliases expand to more than" in r.stdout, r.stderr


def test_zip_bomb_is_refused_within_memory(tmp_path: Path) -> None:
    """A small weights.npz declaring 8 GiB: refused from its header, under a 1 GiB address-space limit."""
    with zipfile.ZipFile(tmp_path / "weights.npz", "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("l1.main.data.npy", "w", force_zip64=True) as m:
        np.lib.format.write_array_header_1_0(m, {"descr": "<i8", "fortran_order": False, "shape": (1 << 30,)})
        for _ in range(64):
            m.write(bytes(1 << 20))
    assert (tmp_path / "weights.npz").stat().st_size < 10 << 20
    code = ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from apical.sw.safeio import load_npz\nfrom apical.sw.errors import ApicalError\n"
            "try:\n    load_npz('weights.npz', 'IR weights')\nexcept ApicalError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "declares 8589934592 bytes" in r.stdout, r.stderr


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".hidden", "x\ny", ""])
def test_name_cannot_escape_runs(name: str) -> None:
    with pytest.raises(ApicalError, match=r"name: must be a plain name|name: needs") as e:
        parse_config({"name": name}, "c.yaml")
    one_line(e.value)


def test_second_run_on_a_locked_directory_fails_at_once(tmp_path: Path) -> None:
    from apical.flows import flow

    with flow.run_lock(tmp_path), pytest.raises(ApicalError, match="another apical command is running") as e:
        flow.run_flow(Config(), tmp_path)
    one_line(e.value)
    assert not (tmp_path / "config.yaml").exists()  # the second run wrote nothing
    with flow.run_lock(tmp_path):  # released when the holder finished
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_run_directory_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from apical.flows.cli import main

    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        assert main(["run", "--out", str(run), "--to", "train"]) == 1
    finally:
        run.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert err.startswith("apical: error: ") and str(run) in err and "\n" not in err


def test_permission_error_is_exit_1_naming_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Where permissions cannot be taken away (root), the CLI's handling is checked directly."""
    from apical.flows import cli

    def deny(args: Any) -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "flow.json"))

    monkeypatch.setattr(cli, "cmd_steps", deny)
    assert cli.main(["steps"]) == 1
    assert capsys.readouterr().err.strip() == f"apical: error: {tmp_path / 'run' / 'flow.json'}: Permission denied"


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (lambda m, a: m.update(output="nowhere"), "output: names a layer that does not exist"),
        (lambda m, a: m["layers"][0]["sites"]["main"].update(nnz=m["layers"][0]["sites"]["main"]["nnz"] + 1),
         "the manifest declares"),
        (lambda m, a: m["inputs"][0].update(scale=float("nan")), "inputs[0].scale: must be a finite number"),
        (lambda m, a: m["inputs"][0].update(scale=0.0), "inputs[0].scale: must be in (0, "),
        (lambda m, a: m["layers"][0].update(out_scale=-1.0), "out_scale: must be in (0, "),
        (lambda m, a: a.update({"l1.main.data": a["l1.main.data"].astype(np.uint64) | np.uint64(1 << 63)}),
         "beyond the signed 64-bit range"),
        (lambda m, a: a.update({"l1.main.bias": np.full_like(a["l1.main.bias"], np.iinfo(np.int64).min)}),
         "needs more than the 48-bit accumulator"),
        (lambda m, a: a.update({"l1.main.indices": np.array(0)}), "has shape ()"),
    ],
)
def test_ir_semantic_faults(tmp_path: Path, edit: Any, expect: str) -> None:
    save_ir(random_ir(np.random.default_rng(1), kind="dense", layers=2), tmp_path / "src")
    m, arrays = copy_ir(tmp_path / "src", tmp_path / "ir")
    edit(m, arrays)
    write_ir(tmp_path / "ir", m, arrays)
    with pytest.raises(ApicalError) as e:
        load_ir(tmp_path / "ir")
    assert expect in one_line(e.value), str(e.value)


def test_single_npy_where_npz_expected(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(4))
    os.replace(tmp_path / "a.npy", tmp_path / "weights.npz")
    with pytest.raises(ApicalError, match=r"a single \.npy array, not an \.npz archive"):
        load_npz(tmp_path / "weights.npz", "IR weights")


def test_energy_table_that_is_not_a_table_is_not_echoed(tmp_path: Path) -> None:
    from apical.flows.energy import load_energy_table

    secret = "s3cr3t-token-value"
    for text in (f"{secret}\n", f"{secret}: [unclosed\n", f"- {secret}\n"):
        (tmp_path / "t.yaml").write_text(text)
        with pytest.raises(ApicalError) as e:
            load_energy_table(str(tmp_path / "t.yaml"))
        assert secret not in one_line(e.value)
    (tmp_path / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(ApicalError, match="not UTF-8"):
        load_energy_table(str(tmp_path / "b.bin"))


def test_non_finite_and_unbounded_fields_are_refused() -> None:
    for section, name, value in [("train", "lr", float("nan")), ("train", "weight_decay", float("inf")),
                                 ("data", "noise", float("nan")), ("hardware", "clock_mhz", float("inf")),
                                 ("model", "k2", float("nan")), ("train", "epochs", 10**9),
                                 ("train", "batch_size", 10**9), ("hardware", "sim_samples", 10**9),
                                 ("train", "threads", 10**6), ("hardware", "clock_mhz", 1e9)]:
        with pytest.raises(ApicalError, match=rf"^c\.yaml: {section}\.{name}: must be") as e:
            parse_config({section: {name: value}}, "c.yaml")
        one_line(e.value)
        sec = getattr(Config(), section)
        with pytest.raises(ValueError, match=rf"^{name}: must be"):  # replace() passes the same rules
            dataclasses.replace(sec, **{name: value})
