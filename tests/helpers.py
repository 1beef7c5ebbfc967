"""Test helpers: a plain reference NMS loop, toy shards, small videos."""

from __future__ import annotations

import torch
from toy import planted_samples


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
    """Write VideoSamples (tests/toy.py) as shards + manifest with data_prep's writer, without videos."""
    from vdi.data.format import EncoderInfo, QueryRecord
    from vdi.data.writer import SplitWriter

    with SplitWriter(split_dir, fps=2.0, videos_per_shard=per_shard) as writer:
        for sample in samples:
            queries = [
                QueryRecord(q.query, q.static, q.dynamic, float(m[0]), float(m[1]))
                for q, m in zip(sample.queries, sample.moments)
            ]
            writer.write(sample.video_id, sample.duration, sample.features, sample.patches, queries)
    return writer.write_manifest(
        dataset=dataset,
        split=split,
        encoder=EncoderInfo("vdi-test-tiny", "random"),
        feature_dim=int(samples[0].features.shape[1]),
        num_patches=int(samples[0].patches.shape[1]) if samples[0].patches is not None else 0,
    )


def write_toy_dataset(root, train_videos: int, per_shard: int, seed: int):
    """A train split of planted videos in shards of ``per_shard`` and an 8-video test split."""
    write_toy_shards(planted_samples(train_videos, num_frames=16, seed=seed), root / "train", per_shard, split="train")
    write_toy_shards(planted_samples(8, num_frames=16, seed=seed + 1), root / "test", per_shard=8, split="test")
    return root


# a retriever small enough for a test's predictions (16 pre-clips, an 8-clip map), injection off
TINY_RETRIEVER = [
    "model.num_pre_clips=16",
    "model.num_clips=8",
    "model.pooling_counts=[7]",
    "injection.visual_context=none",
    "injection.spatial_dynamic=none",
]


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
