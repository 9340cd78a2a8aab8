"""Ranks wait for rank 0's selection outside any collective: a real 2-process gloo group whose
collective timeout (2 s) is far shorter than rank 0's "merge" (5 s)."""

from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distributed_adcs.distributed.trainer import DDPBackend

from helpers import free_port

TIMEOUT_S, MERGE_S = 2.0, 5.0




def _rank(rank: int, port: int, use_store: bool, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    backend = DDPBackend(rank, 2, seed=0, wait_s=60, poll_s=0.5)
    try:
        for epoch in range(3):  # three selections, with training collectives between them
            if rank == 0:
                time.sleep(MERGE_S if epoch == 0 else 0.1)  # the long merge
                obj = {"epoch": epoch, "positions": torch.arange(5) + epoch}
            else:
                obj = None
            if use_store:
                got = backend.share_from_rank0(obj)
            else:  # what the trainer did before: a collective that times out
                box = [obj]
                dist.broadcast_object_list(box, src=0)
                got = box[0]
            assert got["epoch"] == epoch and torch.equal(got["positions"], torch.arange(5) + epoch)
            t = torch.ones(1)
            dist.all_reduce(t)
            assert t.item() == 2
        out[rank] = "ok"
    except Exception as err:  # noqa: BLE001 - reported to the test
        out[rank] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        dist.destroy_process_group()


def _run(use_store: bool) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(free_port(), use_store, out), nprocs=2, join=True)
        return dict(out)


def test_ranks_wait_for_a_merge_longer_than_the_collective_timeout():
    assert _run(use_store=True) == {0: "ok", 1: "ok"}


def test_a_collective_broadcast_times_out_there():
    """The failure sharing through the store avoids (so the test above is not passing by accident)."""
    try:
        out = _run(use_store=False)
    except Exception:  # noqa: BLE001 - a rank died of the timeout
        return
    assert out.get(1) != "ok", out


def test_a_rank_gives_up_after_selection_wait_s():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_give_up, args=(free_port(), out), nprocs=2, join=True)
        assert out[1].startswith("TimeoutError: rank 1 waited"), dict(out)


def _give_up(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    backend = DDPBackend(rank, 2, seed=0, wait_s=1.0, poll_s=0.25)
    try:
        if rank == 0:
            time.sleep(3)
            out[0] = "ok"
        else:
            backend.share_from_rank0(None)
            out[1] = "no timeout"
    except TimeoutError as err:
        out[rank] = f"TimeoutError: {err}"
    finally:
        dist.barrier()
        dist.destroy_process_group()


pytestmark = pytest.mark.timeout(120)
