"""Training on several processes or machines with PyTorch's own engine, torch.distributed.

When `train.processes` x `train.nodes` is above 1, the train stage does not train itself: it
starts PyTorch's elastic agent (the engine behind `torchrun`), which runs one worker process per
rank, each the same `python -m meli.stages.train <model>` with RANK, WORLD_SIZE and LOCAL_RANK
set. The workers join one process group (gloo on CPU, NCCL on CUDA) and train one
DistributedDataParallel model; rank 0 alone writes the dvclive log, the checkpoints and the
bundle. On one machine the rendezvous is c10d on a free local port; across machines it is static
at `train.master_address:master_port`, so that the machine given `--node-rank 0` (the one
running `dvc repro`) holds rank 0. A worker that dies ends every other one at once (no restarts)
and the stage fails with one line naming its rank.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from meli.errors import MeliError, Stopped


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's share of `rows`: every world-th row from its rank on (disjoint, complete)."""
        return rows[self.rank::self.world]


ALONE = Group()


def current() -> Group:
    """The group this process belongs to: from torchrun's environment, or alone."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Group()
    return Group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                 int(os.environ.get("LOCAL_RANK", "0")))


def join(group: Group, device: torch.device) -> None:
    """Join the process group of a multi-process run (nothing to do alone)."""
    if group.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL talks through the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A peer that died is noticed by the agent within a second; the timeout only bounds a
        # collective that some rank never reaches.
        dist.init_process_group(backend, timeout=timedelta(minutes=10))


def wait_for_all(group: Group) -> None:
    """Return once every rank got here. Ranks that end training together also tear their
    connections down together: one that closes them while another still uses them makes gloo's
    threads abort the other process at exit."""
    if group.world > 1:
        dist.barrier()


def leave() -> None:
    if dist.is_initialized():
        gc.collect()  # the DistributedDataParallel reducer's hold on the group goes first
        dist.destroy_process_group()


def gather(value: Any, group: Group) -> list[Any]:
    """Every rank's `value` (anything picklable), in rank order, on every rank."""
    if group.world == 1:
        return [value]
    gathered: list[Any] = [None] * group.world
    dist.all_gather_object(gathered, value)
    return gathered


def lost_peer(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another rank went away."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return any(sign in text for sign in ("gloo", "NCCL", "Connection reset", "Connection closed",
                                          "Broken pipe"))


def launch(arguments: Sequence[str], *, processes: int, nodes: int, node_rank: int,
           master_address: str, master_port: int) -> None:
    """Run `python <arguments>` as processes x nodes ranks under PyTorch's elastic agent."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nodes == 1:
        backend, endpoint, configs = "c10d", "127.0.0.1:0", {}
    else:
        backend, endpoint = "static", f"{master_address}:{master_port}"
        configs = {"rank": node_rank}
    config = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=processes,
        run_id=f"meli-{uuid.uuid4().hex[:8]}" if nodes == 1 else "meli-train",
        rdzv_backend=backend, rdzv_endpoint=endpoint, rdzv_configs=configs,
        max_restarts=0, monitor_interval=0.5, start_method="spawn")
    # The agent reports a failure in a page of its own; the one line below says it all.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)(*arguments)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        if failure.exitcode < 0:
            how = f"was killed by {failure.signal_name()}"
        else:
            how = f"exited with status {failure.exitcode}"
        raise MeliError(f"rank {rank} of {processes * nodes} (pid {failure.pid}) {how}; "
                        f"every other rank was stopped and no bundle was written") from None
    except SignalException as error:
        # The agent stops the ranks with the same signal; rank 0 says where training stopped.
        raise Stopped(None, 128 + error.sigval) from None
