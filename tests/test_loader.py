"""The streaming loader: determinism, disjoint ranks, equal epoch lengths, worker independence,
exact resume, corrupt shards."""

import pytest
import torch
from helpers import write_toy_shards
from toy import planted_samples

from vdi.config import load_config
from vdi.data.format import ShardError
from vdi.data.loader import ShardStream, make_loader
from vdi.injection import build_vdi_model


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    samples = planted_samples(22, dim=64, num_frames=12, num_patches=16, seed=5)
    write_toy_shards(samples, root / "many", per_shard=4)  # 6 shards (last holds 2)
    write_toy_shards(samples, root / "one", per_shard=100)  # a single shard
    return root


def _stream(split_dir, **kwargs):
    options = dict(batch_size=3, num_pre_clips=8, clip_name="vdi-test-tiny", shuffle_buffer=5, seed=1)
    options.update(kwargs)
    return ShardStream(split_dir, **options)


def _ids(stream, epoch=1, start=0, workers=0):
    stream.set_epoch(epoch, start)
    return [batch.video_ids for batch in make_loader(stream, workers)]


@pytest.mark.parametrize("layout", ["many", "one"])
def test_ranks_are_disjoint_and_in_step(shard_dirs, layout):
    streams = [_stream(shard_dirs / layout, rank=r, world_size=2) for r in range(2)]
    batches = [_ids(s) for s in streams]
    assert len(batches[0]) == len(batches[1]) == 22 // (2 * 3)
    seen = [{v for batch in rank_batches for v in batch} for rank_batches in batches]
    assert not seen[0] & seen[1]
    assert all(len(batch) == 3 for rank_batches in batches for batch in rank_batches)


def test_epochs_are_seeded(shard_dirs):
    stream = _stream(shard_dirs / "many")
    first, again, second = _ids(stream, 1), _ids(stream, 1), _ids(stream, 2)
    assert first == again
    assert first != second
    assert len(first) == 22 // 3


def test_workers_do_not_change_the_batch_sequence(shard_dirs):
    stream = _stream(shard_dirs / "many")
    assert _ids(stream, 3, workers=0) == _ids(stream, 3, workers=2)


def test_resumed_epoch_neither_repeats_nor_loses(shard_dirs):
    stream = _stream(shard_dirs / "many")
    full = _ids(stream, 2)
    for start in (1, 4):
        for workers in (0, 2):
            assert _ids(stream, 2, start=start, workers=workers) == full[start:]


def test_eval_stream_covers_every_video_once(shard_dirs):
    streams = [_stream(shard_dirs / "many", rank=r, world_size=2, training=False, batch_size=4) for r in range(2)]
    ids = [v for s in streams for batch in _ids(s) for v in batch]
    assert sorted(ids) == sorted(f"video{i:03d}" for i in range(22))


def test_a_batch_goes_through_the_core_model(shard_dirs):
    cfg = load_config("tiny")
    model = build_vdi_model(cfg)
    stream = _stream(shard_dirs / "many", num_pre_clips=cfg.model.num_pre_clips)
    batch = next(iter(make_loader(stream, 0)))
    assert batch.video_features.shape == (3, 8, 64) and batch.patch_features.shape == (3, 8, 16, 64)
    terms = model(batch)
    terms.total.backward()
    assert torch.isfinite(terms.total)


def test_truncated_shard_is_named_or_skipped(shard_dirs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard_dirs / "many", copy)
    shard = copy / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:-3000])
    with pytest.raises(ShardError, match=r"shard-000002.tar has \d+ bytes"):
        _stream(copy)
    stream = _stream(copy, skip_corrupt=True)
    assert len(stream.skipped) == 1 and "shard-000002.tar" in stream.skipped[0]
    assert len(_ids(stream)) == 18 // 3  # the other 18 videos still stream


def test_garbled_shard_raises_naming_it(shard_dirs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard_dirs / "one", copy)
    shard = copy / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[512 * 3 : 512 * 40] = b"\x00" * (512 * 37)  # same size, broken headers and contents
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-000000.tar"):
        _ids(_stream(copy))
