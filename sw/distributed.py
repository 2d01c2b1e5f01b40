"""Independent work items (sparse-modular modules) spread over processes with torch.distributed (gloo, CPU).

`spread(n, work, workers)` returns ``[work(k, rank) for k in range(n)]`` on rank
0, computing item k on rank ``k % world``; every rank sends its results to rank
0 with one ``gather_object``. Where the processes come from:

- a process group already exists (launched by ``torchrun``, see
  `init_from_env`): its ranks, on one machine or many (env:// rendezvous);
- ``workers == 1``: this process alone, no process group;
- otherwise this process is rank 0 and forks ``workers - 1`` local children
  (ranks 1..), which join a gloo group over 127.0.0.1. Fork, not spawn: a
  spawned child would first re-import torch and Brevitas, seconds per worker.

A work item that raises on any rank reaches rank 0 as one `ApicalError`
naming the rank; a worker that dies breaks the gloo connection, which rank 0
reports the same way. Results must not depend on the rank (the caller's
contract: `apical.sw.train_modular` seeds each module by its index alone).
"""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from apical.sw.errors import ApicalError

__all__ = ["group_size", "init_from_env", "launched_by_torchrun", "rank", "spread"]

T = TypeVar("T")

BACKEND = "gloo"
# Rank 0 enters the gather when its own items are done and then waits for the slowest worker.
TIMEOUT = timedelta(hours=24)
JOIN_TIMEOUT_S = 60.0


def launched_by_torchrun(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` is that of a torchrun (torch.distributed.run) worker."""
    return "TORCHELASTIC_RUN_ID" in environ or ("RANK" in environ and "WORLD_SIZE" in environ
                                                and "MASTER_ADDR" in environ)


def init_from_env() -> None:
    """Join the process group torchrun describes (env:// rendezvous: RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    if not dist.is_initialized():
        dist.init_process_group(BACKEND, init_method="env://", timeout=TIMEOUT)


def rank() -> int:
    """This process's rank in the current group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def group_size() -> int:
    """Processes in the current group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _on_group(n: int, work: Callable[[int, int], T]) -> list[T] | None:
    """Run this rank's share of the items and gather everything on rank 0 (None elsewhere)."""
    me, world = dist.get_rank(), dist.get_world_size()
    try:
        payload: tuple[str, Any] = ("ok", [(k, work(k, me)) for k in range(me, n, world)])
    except Exception as e:  # sent to rank 0, which raises it; the other ranks must still gather
        payload = ("error", f"{type(e).__name__}: {e}" if not isinstance(e, ApicalError) else str(e))
    gathered: list[Any] | None = [None] * world if me == 0 else None
    try:
        dist.gather_object(payload, gathered, dst=0)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ApicalError(f"distributed: rank {me}: gather failed, a worker died ({first})") from None
    if gathered is None:
        return None
    out: dict[int, T] = {}
    for r, (status, body) in enumerate(gathered):
        if status != "ok":
            raise ApicalError(f"distributed: rank {r}: {body}")
        out.update(body)
    return [out[k] for k in range(n)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _join(me: int, world: int, port: int) -> None:
    dist.init_process_group(BACKEND, init_method=f"tcp://127.0.0.1:{port}", rank=me, world_size=world,
                            timeout=TIMEOUT)


def _child(me: int, world: int, port: int, n: int, work: Callable[[int, int], Any]) -> None:
    torch.set_num_threads(1)
    _join(me, world, port)
    try:
        _on_group(n, work)
    finally:
        dist.destroy_process_group()


def spread(n: int, work: Callable[[int, int], T], workers: int) -> tuple[list[T] | None, int]:
    """``([work(k, rank) for k in range(n)] on rank 0, else None; processes used)``."""
    if dist.is_available() and dist.is_initialized():
        return _on_group(n, work), dist.get_world_size()
    world = max(1, min(workers, n))
    if world == 1:
        return [work(k, 0) for k in range(n)], 1
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ApicalError("train.workers > 1 needs fork (Linux, macOS); run under torchrun instead")
    mp = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [mp.Process(target=_child, args=(r, world, port, n, work), name=f"apical-worker-{r}")
             for r in range(1, world)]
    for p in procs:
        p.start()
    try:
        _join(0, world, port)
        try:
            results = _on_group(n, work)
        finally:
            dist.destroy_process_group()
    finally:
        for p in procs:
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                p.terminate()
                p.join()
    return results, world
