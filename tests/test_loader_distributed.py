"""Two processes (gloo) stream disjoint shards into the core model."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import write_toy_shards
from toy import planted_samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, split_dir: str, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from vdi.config import load_config
        from vdi.data.loader import ShardStream, make_loader
        from vdi.distributed import world_info
        from vdi.injection import build_vdi_model

        torch.manual_seed(0)
        cfg = load_config("tiny")
        model = build_vdi_model(cfg)
        env_rank, env_world = world_info().rank, world_info().world_size
        stream = ShardStream(
            split_dir,
            batch_size=2,
            num_pre_clips=cfg.model.num_pre_clips,
            clip_name="vdi-test-tiny",
            rank=env_rank,
            world_size=env_world,
            seed=3,
        )
        stream.set_epoch(1)
        ids, losses = [], []
        for batch in make_loader(stream, 1):
            ids.extend(batch.video_ids)
            losses.append(float(model(batch).total.detach()))
        gathered = [None] * world
        dist.all_gather_object(gathered, ids)
        if rank == 0:
            results["ids"] = gathered
        results[f"losses{rank}"] = losses
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_gloo_processes_stream_disjoint_shards(tmp_path):
    write_toy_shards(planted_samples(12, num_frames=12, seed=2), tmp_path / "train", per_shard=3)
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "train"), results), nprocs=2, join=True)
    first, second = results["ids"]
    assert len(first) == len(second) == 6
    assert not set(first) & set(second)
    assert all(torch.isfinite(torch.tensor(results[f"losses{r}"])).all() for r in range(2))
