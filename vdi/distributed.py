"""Where this process sits in a job, and the few collectives vdi uses.

World info comes from the environment, as torchtitan's ``distributed/utils.py`` and open_clip's
``world_info_from_env`` read it: torchrun / DeepSpeed / slurm/train.sbatch set ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; a SLURM step of several tasks without them gives
``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``; nothing set is one process.

A SLURM job's rendezvous (MASTER_ADDR, MASTER_PORT) is computed in one place,
:func:`slurm_rendezvous`, for vdi.launch's tasks, slurm/train.sbatch and the sweeps' Ray
cluster; the shell scripts ask for it with

    python -m vdi.distributed slurm-rendezvous      # prints "ADDR PORT"

Every collective is called by all ranks, and is a no-op for a world of one process (no
``torch.distributed`` needed). This module imports torch only inside the collectives, so that
a shell script's question costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vdi.cli import run_cli
from vdi.errors import InputError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info(env: Mapping[str, str] | None = None) -> WorldInfo:
    """This process's rank, local rank and world size (default: from ``os.environ``)."""
    env = os.environ if env is None else env
    if "RANK" in env:
        return WorldInfo(int(env["RANK"]), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"]))
    # a SLURM step of one task (e.g. a Ray trial's node) is one process, whatever SLURM_PROCID says
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return WorldInfo(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]))
    return WorldInfo(0, 0, 1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export_world(env: MutableMapping[str, str] | None = None) -> WorldInfo:
    """Write what torch.distributed's ``env://`` rendezvous reads (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) into ``env`` (default ``os.environ``) from :func:`world_info`;
    values already set are kept. A single process gets a free local port."""
    env = os.environ if env is None else env
    world = world_info(env)
    if "RANK" not in env:
        env.update(RANK=str(world.rank), WORLD_SIZE=str(world.world_size), LOCAL_RANK=str(world.local_rank))
        if world.world_size == 1:
            env.setdefault("MASTER_ADDR", "127.0.0.1")
            env.setdefault("MASTER_PORT", str(_free_port()))
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    return world


# --------------------------------------------------------------------------- SLURM


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list, the one ``scontrol show hostnames`` lists first:
    ``"gpu[07-09,12],cpu1"`` -> ``"gpu07"``."""
    item = re.split(r",(?![^\[]*\])", nodelist.strip(), maxsplit=1)[0]  # commas outside brackets
    return re.sub(r"\[([^\]]*)\]", lambda group: group.group(1).split(",")[0].split("-")[0], item)


def node_address(node: str) -> str:
    """A node's SLURM ``NodeAddr`` (where SLURM itself reaches it; it may not resolve as a
    name, e.g. emulated nodes), else its name."""
    import subprocess

    try:
        shown = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return node
    for field in shown.stdout.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1] or node
    return node


def slurm_rendezvous(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``MASTER_ADDR`` / ``MASTER_PORT`` of the SLURM job in ``env`` (default ``os.environ``),
    the same in every task and in the batch script: the job's first node at its ``NodeAddr``,
    and a port derived from the job id (20000-39999, so jobs that share a node rarely collide)."""
    env = os.environ if env is None else env
    missing = [name for name in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST") if not env.get(name)]
    if missing:
        raise InputError(f"not inside a SLURM job ({' and '.join(missing)} unset): run this in a job's script or task")
    node = first_node(env["SLURM_JOB_NODELIST"])
    return {"MASTER_ADDR": node_address(node), "MASTER_PORT": str(20000 + int(env["SLURM_JOB_ID"]) % 20000)}


# --------------------------------------------------------------------------- collectives


def any_rank(flag: bool, world_size: int) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if world_size == 1:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(value: Any, world_size: int) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world_size == 1:
        return value
    import torch

    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: Any, world_size: int) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if world_size == 1:
        return [value]
    import torch

    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for without an initialised process group)."""
    import torch

    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def average_(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Replace ``tensor`` in place by its mean over ranks; returns it."""
    if world_size == 1:
        return tensor
    import torch

    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.div_(world_size)


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.distributed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("slurm-rendezvous", help="print this SLURM job's MASTER_ADDR and MASTER_PORT as 'ADDR PORT'")
    parser.parse_args(argv)
    rendezvous = slurm_rendezvous()
    print(rendezvous["MASTER_ADDR"], rendezvous["MASTER_PORT"])
    return 0


__all__ = [
    "WorldInfo",
    "any_rank",
    "average_",
    "barrier",
    "broadcast_object",
    "export_world",
    "first_node",
    "gather_objects",
    "node_address",
    "slurm_rendezvous",
    "world_info",
]


if __name__ == "__main__":
    sys.exit(main())
