"""vdi.distributed: world info from the environment, and collectives that are no-ops for one
process (and agree across two gloo processes)."""

import pytest
import torch

from vdi.distributed import (
    WorldInfo,
    any_rank,
    average_,
    barrier,
    broadcast_object,
    export_world,
    gather_objects,
    world_info,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, WorldInfo(rank=0, local_rank=0, world_size=1)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, WorldInfo(3, 1, 4)),
        ({"RANK": "2", "WORLD_SIZE": "4"}, WorldInfo(2, 0, 4)),  # LOCAL_RANK defaults to 0
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, WorldInfo(5, 1, 8)),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, WorldInfo(0, 0, 1)),
        # torchrun inside a SLURM step: torchrun's RANK wins over the step's task id
        (
            {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
            WorldInfo(6, 2, 8),
        ),
    ],
)
def test_world_info_from_the_environment(env, expected):
    assert world_info(env) == expected
    assert world_info(env).is_main == (expected.rank == 0)


def test_world_info_reads_os_environ_by_default(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert world_info() == WorldInfo(0, 0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert world_info() == WorldInfo(1, 0, 2)


def test_export_world_single_process_gets_a_free_local_port():
    env: dict[str, str] = {}
    assert export_world(env) == WorldInfo(0, 0, 1)
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1" and env["LOCAL_RANK"] == "0"
    assert env["MASTER_ADDR"] == "127.0.0.1" and 1024 <= int(env["MASTER_PORT"]) <= 65535


def test_export_world_maps_slurm_tasks_and_keeps_what_is_set():
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "MASTER_ADDR": "n1", "MASTER_PORT": "20007"}
    assert export_world(env) == WorldInfo(1, 0, 2)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("1", "2", "0")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("n1", "20007")
    torchrun = {"RANK": "0", "WORLD_SIZE": "2"}
    export_world(torchrun)
    assert torchrun == {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }


def test_collectives_are_no_ops_for_one_process(monkeypatch):
    def called(*args, **kwargs):
        raise AssertionError("a collective ran for one process")

    for name in ("all_reduce", "broadcast_object_list", "all_gather_object", "barrier"):
        monkeypatch.setattr(torch.distributed, name, called)
    # an earlier in-process train() may have left a process group; without one, nothing to wait for
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert any_rank(True, 1) is True and any_rank(False, 1) is False
    value = {"epoch": 3}
    assert broadcast_object(value, 1) is value
    assert gather_objects(value, 1) == [value] and gather_objects(value, 1)[0] is value
    barrier(1)
    barrier(2)
    tensor = torch.tensor([1.0, 3.0])
    assert average_(tensor, 1) is tensor and tensor.tolist() == [1.0, 3.0]


def _worker(rank: int, port: int, results: dict) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        tensor = torch.tensor([float(rank), 2.0 * rank])
        results[rank] = {
            "any": any_rank(rank == 1, 2),
            "none": any_rank(False, 2),
            "broadcast": broadcast_object(f"from {rank}", 2),
            "gathered": gather_objects(rank * 10, 2),
            "average": average_(tensor, 2).tolist(),
        }
        barrier(2)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.integration
def test_collectives_agree_across_two_gloo_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
    for rank in (0, 1):
        assert results[rank] == {
            "any": True,
            "none": False,
            "broadcast": "from 0",
            "gathered": [0, 10],
            "average": [0.5, 1.0],
        }
