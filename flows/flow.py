"""Runs the ordered steps of `apical.flows.steps.STEPS` into one run directory.

A step is skipped when the content hash of its inputs equals the hash
recorded in ``flow.json`` when it last ran, and its summary is still there;
``force`` redoes it. The inputs are the run-directory files the step lists
and the config fields it actually read last time: each step runs under
`apical.sw.config.record_reads`, and the fields it touched are stored with
its hash (``config_reads``), so a step's key is derived from the code, not
from a hand-kept list. A field no step read changes no key; reads depend only
on values read, so unchanged values mean the same reads. ``start``/``stop`` run a slice of the flow (``apical run --from rtl
--to sim``). ``flow.json`` records per step its input hash, wall time and
status; it is rewritten atomically after every step, so an interrupted run
resumes where it stopped and leaves no half-written artefact.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from apical.sw.atomic import atomic_write_json, atomic_write_text
from apical.sw.config import Config, config_hash, config_to_dict, config_value, record_reads
from apical.sw.errors import ApicalError, CheckFailed

from .steps import STEPS, Step, step_by_name

__all__ = ["FLOW_FILE", "LOCK_FILE", "Reporter", "files_hash", "input_hash", "run_flow", "run_lock", "write_run_config"]

FLOW_FILE = "flow.json"
FLOW_VERSION = 2  # 2: config keys recorded per step (config_reads)

# reporter(event, step, info): event is "start", "skip" or "done".
Reporter = Callable[[str, Step, dict[str, Any]], None]


def _hash_path(p: Path) -> str:
    if p.is_file():
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if p.is_dir():
        h = hashlib.sha256()
        for sub in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
            h.update(str(sub.relative_to(p)).encode())
            h.update(_hash_path(sub).encode())
        return h.hexdigest()
    return "missing"


def files_hash(step: Step, run_dir: Path) -> str:
    """Content hash of the run-directory files (or folders) the step reads."""
    blob = {r: _hash_path(run_dir / r) for r in step.reads}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def input_hash(step: Step, cfg: Config, files: str, config_reads: list[str]) -> str:
    """The step's cache key: its files' hash and the values of the config fields it reads."""
    blob = {
        "step": step.name,
        "flow_version": FLOW_VERSION,
        "config": {k: config_value(cfg, k) for k in config_reads},
        "files": files,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _load_flow(run_dir: Path) -> dict[str, Any]:
    p = run_dir / FLOW_FILE
    if not p.exists():
        return {"version": FLOW_VERSION, "steps": {}}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        # A damaged record only costs re-running steps; never trust it.
        return {"version": FLOW_VERSION, "steps": {}}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        return {"version": FLOW_VERSION, "steps": {}}
    return data


def write_run_config(cfg: Config, run_dir: Path) -> None:
    """Record the config a run directory is made from (``config.yaml``)."""
    import yaml

    text = f"# apical run config (hash {config_hash(cfg)})\n" + yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False
    )
    atomic_write_text(run_dir / "config.yaml", text)


def run_flow(
    cfg: Config,
    run_dir: Path,
    *,
    start: str | None = None,
    stop: str | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Run steps ``start``..``stop`` (inclusive) in order; return the flow record."""
    names = [s.name for s in STEPS]
    i0 = names.index(step_by_name(start).name) if start else 0
    i1 = names.index(step_by_name(stop).name) if stop else len(STEPS) - 1
    if i0 > i1:
        raise ApicalError(f"--from {start} comes after --to {stop}")
    with run_lock(run_dir):
        return _run_locked(cfg, run_dir, STEPS[i0 : i1 + 1], force, reporter)


LOCK_FILE = ".apical.lock"  # a dot name: never part of a step's input hash


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock: a second run on it fails at once with one line.

    An advisory ``flock`` on ``run_dir/.apical.lock``: the kernel drops it when
    the holder exits, however it exits, so a killed run never leaves it stuck.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ApicalError(f"{e.filename or run_dir}: cannot use as a run directory ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApicalError(f"{run_dir}: another apical command is running on this run directory") from None
        yield
    finally:
        os.close(fd)


def _run_locked(
    cfg: Config, run_dir: Path, steps: tuple[Step, ...], force: bool, reporter: Reporter | None
) -> dict[str, Any]:
    # The recorded config changes only once a step made with it has succeeded,
    # so a failing command-line override does not stick to the run directory.
    if not (run_dir / "config.yaml").exists():
        write_run_config(cfg, run_dir)
    record = _load_flow(run_dir)
    record["config_hash"] = config_hash(cfg)
    for step in steps:
        files = files_hash(step, run_dir)
        prev = record["steps"].get(step.name, {})
        reads = prev.get("config_reads")
        fresh = (
            isinstance(reads, list)
            and prev.get("input_hash") == input_hash(step, cfg, files, reads)
            and prev.get("status") == "done"
            and (run_dir / step.writes[0]).exists()
        )
        if not force and fresh:
            prev = dict(prev, skipped=True)
            record["steps"][step.name] = prev
            if reporter:
                reporter("skip", step, prev)
            continue
        if reporter:
            reporter("start", step, {})
        t0 = time.perf_counter()
        try:
            with record_reads(cfg) as log:
                summary = step.fn(cfg, run_dir)
        except CheckFailed:
            # The step wrote its summary but its check failed: never skip it on a re-run.
            record["steps"][step.name] = {
                "status": "failed", "seconds": round(time.perf_counter() - t0, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "skipped": False,
            }
            atomic_write_json(run_dir / FLOW_FILE, record)
            raise
        seconds = time.perf_counter() - t0
        reads = sorted(log.fields)
        if not (run_dir / step.writes[0]).exists():
            atomic_write_json(run_dir / step.writes[0], summary)
        entry = {
            "input_hash": input_hash(step, cfg, files, reads),
            "config_reads": reads,
            "status": "done",
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "skipped": False,
        }
        record["steps"][step.name] = entry
        write_run_config(cfg, run_dir)
        record["timings"] = {k: v.get("seconds") for k, v in record["steps"].items()}
        atomic_write_json(run_dir / FLOW_FILE, record)
        if reporter:
            reporter("done", step, dict(entry, summary=summary))
    record["timings"] = {k: v.get("seconds") for k, v in record["steps"].items()}
    atomic_write_json(run_dir / FLOW_FILE, record)
    return record
