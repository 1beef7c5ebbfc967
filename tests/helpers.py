"""Test helpers: a plain reference NMS loop."""

from __future__ import annotations

import torch

from vdi.toy import planted_samples


def reference_nms(moments: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Plain greedy NMS loop (MMN's evaluation.nms, with exact IoU): kept indices in rank order."""
    order = sorted(range(len(scores)), key=lambda index: -float(scores[index]))  # stable: ties by index
    kept: list[int] = []
    for index in order:
        start, end = moments[index].tolist()
        suppressed = False
        for other in kept:
            other_start, other_end = moments[other].tolist()
            inter = max(0.0, min(end, other_end) - max(start, other_start))
            union = max(end, other_end) - min(start, other_start)
            if inter / union > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(index)
    return kept


def write_toy_shards(samples, split_dir, per_shard: int, dataset: str = "toy", split: str = "train"):
    """Write VideoSamples (vdi.toy) as shards + manifest, the way data_prep does, without videos."""
    from pathlib import Path

    import webdataset as wds

    from vdi.data.format import EncoderInfo, ShardInfo, ShardManifest, encode_sample, sha256_file, write_manifest

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    infos = []
    for shard_index, first in enumerate(range(0, len(samples), per_shard)):
        path = split_dir / f"shard-{shard_index:06d}.tar"
        chunk = samples[first : first + per_shard]
        with wds.TarWriter(str(path)) as writer:
            for offset, sample in enumerate(chunk):
                queries = [
                    {
                        "sentence": q.query,
                        "static": q.static,
                        "dynamic": q.dynamic,
                        "start": float(m[0]),
                        "end": float(m[1]),
                    }
                    for q, m in zip(sample.queries, sample.moments)
                ]
                writer.write(
                    encode_sample(
                        first + offset, sample.video_id, sample.duration, 2.0, sample.features, sample.patches, queries
                    )
                )
        infos.append(
            ShardInfo(path.name, sha256_file(path), path.stat().st_size, len(chunk), sum(len(s.queries) for s in chunk))
        )
    manifest = ShardManifest(
        dataset=dataset,
        split=split,
        num_videos=len(samples),
        num_queries=sum(len(s.queries) for s in samples),
        encoder=EncoderInfo("vdi-test-tiny", "random"),
        fps=2.0,
        feature_dim=int(samples[0].features.shape[1]),
        num_patches=int(samples[0].patches.shape[1]) if samples[0].patches is not None else 0,
        shards=infos,
    )
    write_manifest(split_dir, manifest)
    return manifest


def write_toy_dataset(root, train_videos: int, per_shard: int, seed: int):
    """A train split of planted videos in shards of ``per_shard`` and an 8-video test split."""
    write_toy_shards(planted_samples(train_videos, num_frames=16, seed=seed), root / "train", per_shard, split="train")
    write_toy_shards(planted_samples(8, num_frames=16, seed=seed + 1), root / "test", per_shard=8, split="test")
    return root


def write_video(path, seconds: float, rate: int = 8, size: tuple[int, int] = (48, 40), seed: int = 0) -> None:
    """A small H.264 video with random coloured frames (PyAV)."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for _ in range(int(seconds * rate)):
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
