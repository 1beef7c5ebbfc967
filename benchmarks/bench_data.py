"""Data benchmarks: loader throughput vs training consumption, and feature extraction speed.

Run on demand:  python benchmarks/bench_data.py [--videos 5336] [--skip-patches] [--device cpu]

* Charades-sized shards from generated features (5,336 videos x 32 frames x 512-d float16, 2-3
  queries each; with and without 49 patch tokens per frame), ~1 GB shards, read by the real
  loader (vdi.data.loader.ShardStream: decode + resample + tokenize + collate) with 0 and 2 workers,
  batch 48 videos, one epoch. Reported in videos/s and queries/s.
* In the same run, the rate at which one training process consumes videos at the Charades
  configuration (VDI model, ViT-B-32 text tower, 8 videos x 3 queries per step) and the ratio
  loader / consumption (target >= 10x).
* Feature extraction: ViT-B-32 visual tower (random weights) with patch tokens, frames/s, on the
  chosen device; plus PyAV decoding at 4 fps of a generated 320x240 30 fps clip.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def write_charades_like(root: Path, videos: int, patches: bool) -> Path:
    from vdi.data.format import EncoderInfo, QueryRecord
    from vdi.data.writer import SplitWriter

    split = root / ("with_patches" if patches else "no_patches")
    rng = np.random.default_rng(0)
    sentence = (
        "a person opens the door of the refrigerator.",
        "a person, the door, the refrigerator",
        "opens of .",
    )
    patch_block = rng.standard_normal((32, 49, 512)).astype(np.float16) if patches else None
    with SplitWriter(split, fps=1.0, shard_bytes=1 << 30) as writer:
        for index in range(videos):
            queries = [QueryRecord(*sentence, start=1.0 + q, end=6.0 + q) for q in range(2 + index % 2)]
            features = rng.standard_normal((32, 512)).astype(np.float16)
            writer.write(f"V{index:05d}", 30.0, features, patch_block, queries)
    writer.write_manifest(
        dataset="bench",
        split="train",
        encoder=EncoderInfo("ViT-B-32", "random"),
        feature_dim=512,
        num_patches=49 if patches else 0,
    )
    return split


def loader_rate(split: Path, patches: bool, workers: int) -> tuple[float, float]:
    from vdi.data.loader import ShardStream, make_loader

    stream = ShardStream(split, batch_size=48, num_pre_clips=32, clip_name="ViT-B-32", load_patches=patches, seed=0)
    stream.set_epoch(1)
    videos = queries = 0
    start = time.perf_counter()
    for batch in make_loader(stream, workers):
        videos += batch.num_videos
        queries += batch.num_sentences
    elapsed = time.perf_counter() - start
    return videos / elapsed, queries / elapsed


def training_consumption() -> float:
    from bench_core import charades_batch

    from vdi.config import load_config
    from vdi.encoders import create_clip
    from vdi.injection import build_vdi_model
    from vdi.text import QueryParser

    cfg = load_config("charades_sta", ["model.clip.pretrained=null"])
    batch = charades_batch(cfg, QueryParser())
    model = build_vdi_model(cfg, create_clip("ViT-B-32", None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        terms = model(batch)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    step = min(times[1:])
    return batch.num_videos / step


def extraction_rate(device: str) -> None:
    from helpers import write_video

    from vdi.encoders import FrozenVisualEncoder, create_clip
    from vdi.video import decode_video

    encoder = FrozenVisualEncoder(create_clip("ViT-B-32", None)).to(device)
    frames = torch.randint(0, 255, (64, 240, 320, 3), dtype=torch.uint8)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    with torch.no_grad(), autocast:
        encoder(encoder.preprocess(frames[:8].to(device)))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2):
            encoder(encoder.preprocess(frames.to(device)))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    rate = 128 / (time.perf_counter() - start)
    print(f"feature extraction: ViT-B-32 visual tower + patch tokens on {device}: {rate:,.0f} frames/s (224x224)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        write_video(path, 20.0, rate=30, size=(320, 240))
        start = time.perf_counter()
        decoded = decode_video(path, 4.0, short_side=224)
        elapsed = time.perf_counter() - start
    print(
        f"decoding: 20 s 320x240 30 fps H.264 clip at 4 fps -> {len(decoded.frames)} frames in {elapsed:.2f} s "
        f"({len(decoded.frames) / elapsed:,.0f} sampled frames/s, {20 / elapsed:,.0f}x real time) per process"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=5336)
    parser.add_argument("--skip-patches", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", default=None, help="where to write the shards (default: a temp dir)")
    args = parser.parse_args(argv)
    extraction_rate(args.device)
    consumption = None if args.skip_train else training_consumption()
    if consumption:
        print(f"training consumption (Charades config, VDI, 1 process, CPU): {consumption:.2f} videos/s")
    root = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        for patches in [False] if args.skip_patches else [False, True]:
            start = time.perf_counter()
            split = write_charades_like(root, args.videos, patches)
            size = sum(f.stat().st_size for f in split.glob("*.tar"))
            label = "with 49 patch tokens" if patches else "no patch tokens"
            print(
                f"shards {label}: {args.videos} videos, {size / 2**30:.2f} GiB in "
                f"{len(list(split.glob('*.tar')))} shard(s), written in {time.perf_counter() - start:.1f} s"
            )
            for workers in (0, 2):
                videos_per_s, queries_per_s = loader_rate(split, patches, workers)
                ratio = f", {videos_per_s / consumption:.0f}x training consumption" if consumption else ""
                print(
                    f"  loader, {workers} workers: {videos_per_s:,.0f} videos/s, {queries_per_s:,.0f} queries/s{ratio}"
                )
            shutil.rmtree(split)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
