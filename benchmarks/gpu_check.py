"""The GPU check: what one GPU machine says about vdi, as one table (under 8 minutes on one GPU).

Run:  bash benchmarks/gpu_check.sh            (installs what it needs, then this on cuda)
      bash benchmarks/gpu_check.sh --device cpu   (smoke mode: small sizes, proves the script runs)

Rows, all measured in this run with random weights (no download):
* a bf16 DeepSpeed training step (TrainingEngine.train_step: forward, backward, ZeRO-1 AdamW) at
  the Charades-STA preset (ViT-B-32 text tower, N=16, 8 conv layers; a batch of 48 videos x 3
  sentences, 32 pre-clips with 49 patch tokens) for VDI (L^vc + L^sd) and its baseline
  (injection off): median step time and the ratio VDI / baseline;
* feature extraction: ViT-B-32 visual tower with patch tokens, frames/s (encode only, batch 256,
  bf16) and the whole pipeline (decode in 4 workers + encode) over generated 320x240 clips;
* prediction latency per query with a cached 30 s video, batches of 1 and 32 sentences;
* peak GPU memory of each row.
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
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

SMOKE = {"videos": 2, "steps": 1, "frames": 16, "clips": 1, "seconds": 2.0, "repeats": 2}
FULL = {"videos": 48, "steps": 5, "frames": 256, "clips": 8, "seconds": 20.0, "repeats": 20}


class Table:
    def __init__(self, device: str):
        self.device, self.rows = device, []

    def measure(self, name: str, function):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        value, unit = function()
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device.startswith("cuda") else float("nan")
        self.rows.append((name, value, unit, peak))
        print(f"  {name}: {value:.2f} {unit}", flush=True)
        return value

    def print(self) -> None:
        print(f"\n{'measurement':<60}{'value':>10}  {'unit':<14}{'peak GPU GiB':>12}")
        for name, value, unit, peak in self.rows:
            print(f"{name:<60}{value:>10.2f}  {unit:<14}{peak:>12.2f}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_steps(device: str, sizes: dict, table: Table) -> None:
    from bench_core import charades_batch

    from vdi.config import load_config
    from vdi.engine import TrainingEngine, init_distributed
    from vdi.injection import build_vdi_model
    from vdi.text import QueryParser

    common = [
        "model.clip.pretrained=null",
        f"optim.batch_size={sizes['videos']}",
        "optim.freeze_text_epochs=0",  # the text tower learns: the step VDI makes dearer
        f"run.device={'cuda' if device.startswith('cuda') else 'cpu'}",
        f"dist.precision={'bf16' if device.startswith('cuda') else 'fp32'}",
    ]
    configs = {
        "baseline": load_config(
            "charades_sta", [*common, "injection.visual_context=none", "injection.spatial_dynamic=none"]
        ),
        "VDI": load_config("charades_sta", common),
    }
    batch = charades_batch(configs["VDI"], QueryParser(), videos=sizes["videos"])
    medians = {}
    for name, cfg in configs.items():
        ctx = init_distributed(cfg)
        torch.manual_seed(0)
        engine = TrainingEngine(build_vdi_model(cfg), cfg, ctx)
        engine.start_epoch(1)

        def step(engine=engine) -> tuple[float, str]:
            times = []
            for index in range(sizes["steps"] + 1):
                start = time.perf_counter()
                engine.train_step(batch, epoch=1)
                sync(device)
                if index:  # the first step warms allocators and kernels
                    times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000, "ms/step"

        medians[name] = table.measure(f"training step, Charades preset, {name} ({sizes['videos']} videos)", step)
        del engine
    table.rows.append(("  ratio VDI / baseline", medians["VDI"] / medians["baseline"], "x", float("nan")))


def extraction(device: str, sizes: dict, table: Table) -> None:
    from bench_features import make_clips

    from data_prep.features import extract_features
    from vdi.encoders import FrozenVisualEncoder, create_clip

    encoder = FrozenVisualEncoder(create_clip("ViT-B-32", None)).to(device)
    frames = torch.rand(sizes["frames"], 3, 224, 224, device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    def encode() -> tuple[float, str]:
        with torch.no_grad(), autocast:
            encoder(frames[:8])
            sync(device)
            start = time.perf_counter()
            encoder(frames)
            sync(device)
        return frames.shape[0] / (time.perf_counter() - start), "frames/s"

    table.measure(f"feature extraction, ViT-B-32 encode only (batch {sizes['frames']})", encode)
    with tempfile.TemporaryDirectory() as scratch:
        clips = make_clips(Path(scratch), sizes["clips"], sizes["seconds"])

        def pipeline() -> tuple[float, str]:
            summary = extract_features(
                clips, Path(scratch) / "features", "ViT-B-32", None, device=device, workers=4, progress=False
            )
            return summary.frames_per_second, "frames/s"

        table.measure(f"feature extraction, decode (4 workers) + encode, {sizes['clips']} clips", pipeline)


def prediction(device: str, sizes: dict, table: Table) -> None:
    from bench_predict import QUERIES, build_predictor

    with tempfile.TemporaryDirectory() as scratch:
        predictor = build_predictor(device, Path(scratch))
        video = predictor.encode_video(torch.randn(120, 512))  # 30 s at 4 fps, cached
        for batch in (1, 32):
            queries = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(batch)]

            def latency(queries=queries) -> tuple[float, str]:
                predictor.predict(video, queries)
                timings = []
                for _ in range(sizes["repeats"]):
                    start = time.perf_counter()
                    predictor.predict(video, queries, top_k=5)
                    sync(device)
                    timings.append((time.perf_counter() - start) / len(queries) * 1000)
                return statistics.median(timings), "ms/query"

            table.measure(f"prediction latency, batch of {batch} sentences", latency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (smoke mode, small sizes)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible; run with --device cpu for the smoke mode")
    sizes = FULL if args.device.startswith("cuda") else SMOKE
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    print(f"vdi GPU check on {name}, torch {torch.__version__}; sizes {sizes}", flush=True)
    started = time.perf_counter()
    table = Table(args.device)
    training_steps(args.device, sizes, table)
    extraction(args.device, sizes, table)
    prediction(args.device, sizes, table)
    table.print()
    print(
        f"\n(total {time.perf_counter() - started:.0f} s{'; smoke mode: sizes are not comparable' * (sizes is SMOKE)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
