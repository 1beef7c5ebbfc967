"""Inference benchmark: query latency with cached video features, and video encoding speed.

Run on demand:  python benchmarks/bench_predict.py [--device cpu|cuda]

* Query latency at the Charades configuration (ViT-B-32 text tower, D=512, N=16, 8 conv layers,
  random weights): a 30 s video encoded once (features + proposal maps cached), then queries
  answered one at a time and in batches of 32; median over repeats, milliseconds per query
  (target <= 5 ms per query on this CPU), with the text tower in fp32 and in bf16, and how often
  bf16 changes the top-1 moment.
* Video encoding: a generated 30 s 320x240 clip decoded at 4 fps and encoded by the ViT-B-32
  visual tower, frames per second end to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORDS = ["quickly", "slowly", "again", "then", "twice", "once", "more", "later", "first", "finally"]
QUERIES = [
    "a person opens the door of the refrigerator",
    "person turns a light on",
    "the person puts the book on the shelf then walks to the window",
    "a man is sitting on a chair eating a sandwich",
]


def build_predictor(device: str, folder: Path, precision: str = "fp32"):
    from vdi.checkpoint import save_inference_checkpoint
    from vdi.config import load_config, to_dict
    from vdi.encoders import TextEncoder, create_clip
    from vdi.model import MomentRetriever
    from vdi.predict import Predictor

    path = folder / "model.pt"
    if not path.exists():
        torch.manual_seed(0)
        clip = create_clip("ViT-B-32", None)
        clip_path = folder / "vit_b_32_random.pt"
        torch.save(clip.state_dict(), clip_path)
        cfg = load_config("charades_sta", [f"model.clip.pretrained={clip_path}"])
        retriever = MomentRetriever(cfg.model, TextEncoder(clip))
        save_inference_checkpoint(
            path, retriever.state_dict(), to_dict(cfg), {}, 1, {"feature_fps": 4.0, "max_train_duration": 60.0}
        )
    return Predictor.from_checkpoint(path, device, precision=precision)


def main(argv: list[str] | None = None) -> int:
    from helpers import write_video

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        features = torch.randn(120, 512)  # 30 s at 4 fps
        print(f"device {args.device}, torch threads {torch.get_num_threads()}")
        top1 = {}
        for precision in ("fp32", "bf16"):
            predictor = build_predictor(args.device, folder, precision)
            start = time.perf_counter()
            video = predictor.encode_video(features)
            sync()
            if precision == "fp32":
                print(f"cached video (features -> proposal maps, once): {(time.perf_counter() - start) * 1000:.1f} ms")
            for batch in (1, 32):
                queries = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(batch)]
                predictor.predict(video, queries)  # warm-up
                timings = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    predictor.predict(video, queries, top_k=5)
                    sync()
                    timings.append((time.perf_counter() - start) / batch * 1000)
                print(
                    f"query latency, {precision} text tower, batch of {batch:2d}: "
                    f"{statistics.median(timings):.2f} ms per query (target <= 5 ms)"
                )
            many = [f"{query} {word}" for query in QUERIES for word in WORDS]  # 40 distinct queries
            top1[precision] = [(m[0].start, m[0].end) for m in predictor.predict(video, many, top_k=1)]
        same = sum(a == b for a, b in zip(top1["fp32"], top1["bf16"]))
        print(f"bf16 vs fp32: the same top-1 moment for {same} of {len(top1['fp32'])} queries (random weights)")
        clip_path = folder / "clip.mp4"
        write_video(clip_path, 30.0, rate=30, size=(320, 240))
        start = time.perf_counter()
        encoded = predictor.encode_video(clip_path)
        sync()
        elapsed = time.perf_counter() - start
        frames = encoded.features.shape[0]
        print(
            f"video encoding: 30 s clip -> {frames} frames at 4 fps in {elapsed:.2f} s = "
            f"{frames / elapsed:.1f} frames/s "
            "(decode + ViT-B-32 visual tower + proposal maps)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
