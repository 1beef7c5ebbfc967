"""Feature extraction at dataset scale: what it stores and how fast it runs.

Run on demand:  python benchmarks/bench_features.py [--device cpu|cuda] [--clips 4] [--seconds 10]

1. **Storage** (no compute): bytes per video and the projected size of the full Charades-STA
   and ActivityNet-Captions features at the presets' settings (fps 4, ViT-B-32: 512-d features,
   49 patch tokens, float16), from the durations in the real annotation files
   (``VDI_ANNOTATIONS`` or ../shared/data/annotations; Charades-STA's text files carry no
   durations, so its videos are counted from Charades-CG, a re-split of the same videos), for
   patch tokens of every frame (``--patch-clips 0``) beside patch tokens at the model's pre-clip
   count (``--patch-clips 32`` for Charades, 256 for ActivityNet).
2. **Throughput** on this machine, measured in one run: decode-only (PyAV at 4 fps of generated
   320x240 30 fps H.264 clips) per process, encode-only (ViT-B-32 visual tower, random weights,
   patch tokens on) per process, and the whole pipeline (``extract_features``) with 1 and 2
   decoding workers; then a projection of ActivityNet's wall time on 8 and 32 GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

FPS = 4.0
DIM, PATCHES, BYTES = 512, 49, 2  # ViT-B-32 at 224 px: 7 x 7 patch tokens; float16
PRE_CLIPS = {"charades_sta": 32, "activitynet": 256}  # model.num_pre_clips of the presets


def annotations_root() -> Path:
    for candidate in (os.environ.get("VDI_ANNOTATIONS"), "../shared/data/annotations", "/work/shared/data/annotations"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit("error: no annotation folder (set VDI_ANNOTATIONS to the folder of the real annotations)")


def durations(dataset: str, root: Path) -> dict[str, float]:
    from data_prep.annotations import DATASET_SPLITS, read_annotation_file

    source = {"charades_sta": "charades_cg", "activitynet": "activitynet_captions"}[dataset]
    found: dict[str, float] = {}
    for file in DATASET_SPLITS[source].values():
        for record in read_annotation_file(root / source / file, verbose=False).records:
            if record.duration:
                found[record.video_id] = float(record.duration)
    return found


def storage(root: Path) -> dict[str, float]:
    print("1. storage of the features (float16; fps 4; ViT-B-32: 512-d, 49 patch tokens)")
    header = f"{'dataset':<14}{'videos':>7}{'hours':>8}{'frames':>12}{'features':>10}"
    print(f"{header}{'patches/frame':>15}{'patches/pre-clip':>18}{'ratio':>7}{'MB/video now -> new':>22}")
    frames_of = {}
    for dataset, clips in PRE_CLIPS.items():
        lengths = np.array(list(durations(dataset, root).values()))
        frames = np.ceil(lengths * FPS)
        features = frames.sum() * DIM * BYTES
        per_frame = frames.sum() * PATCHES * DIM * BYTES
        per_clip = len(frames) * clips * PATCHES * DIM * BYTES
        now = (features + per_frame) / len(frames) / 1e6
        new = (features + per_clip) / len(frames) / 1e6
        print(
            f"{dataset:<14}{len(frames):>7}{lengths.sum() / 3600:>8.0f}{frames.sum():>12,.0f}{features / 1e9:>9.1f}G"
            f"{per_frame / 1e9:>14.1f}G{per_clip / 1e9:>17.1f}G{per_frame / per_clip:>7.1f}{now:>11.2f} -> {new:.2f}"
        )
        frames_of[dataset] = float(frames.sum())
    print("   (patches/pre-clip: python -m data_prep features --patch-clips N, N = the preset's model.num_pre_clips)")
    return frames_of


def make_clips(folder: Path, count: int, seconds: float) -> list[tuple[str, Path]]:
    import av

    rng = np.random.default_rng(0)
    clips = []
    for index in range(count):
        path = folder / f"clip{index}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for _ in range(int(seconds * 30)):
                # random frames, as bench_data.py decodes: the codec's worst case, an upper bound on decode cost
                image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        clips.append((f"clip{index}", path))
    return clips


def throughput(device: str, clip_count: int, seconds: float) -> tuple[float, float]:
    from data_prep.features import extract_features
    from vdi.encoders import FrozenVisualEncoder, create_clip
    from vdi.video import decode_video

    print(f"\n2. throughput on {device} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as scratch:
        clips = make_clips(Path(scratch), clip_count, seconds)
        start = time.perf_counter()
        decoded = [decode_video(path, FPS, 224).frames.shape[0] for _, path in clips]
        decode_rate = sum(decoded) / (time.perf_counter() - start)
        print(f"   decode only, 1 process:  {decode_rate:7.1f} frames/s ({sum(decoded)} frames at 4 fps)")
        encoder = FrozenVisualEncoder(create_clip("ViT-B-32", None)).to(device)
        frames = torch.rand(64, 3, 224, 224, device=device)
        autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda"))
        with torch.no_grad(), autocast:
            encoder(frames[:8])  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            encoder(frames)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        encode_rate = frames.shape[0] / (time.perf_counter() - start)
        print(f"   encode only, 1 process:  {encode_rate:7.1f} frames/s (ViT-B-32 + patch tokens, batch 64)")
        rates = {}
        for workers in (1, 2):
            summary = extract_features(
                clips, Path(scratch) / f"features{workers}", "ViT-B-32", None, fps=FPS, device=device,
                workers=workers, progress=False, batch_frames=64,
            )  # fmt: skip
            rates[workers] = summary.frames_per_second
            print(f"   whole pipeline, {workers} decoding worker(s): {rates[workers]:7.1f} frames/s")
    return max(rates.values()), decode_rate


def projection(frames: float, rate: float, decode_rate: float, device: str, workers: int = 8) -> None:
    print(f"\n3. ActivityNet-Captions ({frames:,.0f} frames at 4 fps), wall time of the extraction")
    bound = decode_rate * workers
    print(f"   {'tasks':>5}  {'at ' + f'{rate:.0f}' + ' frames/s per task (measured here)':>42}  {'decode-bound':>14}")
    for tasks in (1, 8, 32):
        print(f"   {tasks:>5}  {frames / rate / tasks / 3600:>40.1f} h  {frames / bound / tasks / 3600:>12.2f} h")
    print(
        f"   measured here: the whole pipeline on {device}. decode-bound: a task whose device encodes faster than "
        f"{workers} decoding workers at the measured {decode_rate:.0f} frames/s each feed it ({bound:.0f} frames/s; "
        "a GPU's own rate comes from --device cuda). Both assume tasks scale linearly (own device and CPUs, storage "
        "keeps up) and these generated 320x240 clips decode like the dataset's videos (larger frames decode slower)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=4, help="generated clips for the throughput part")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each generated clip")
    parser.add_argument("--storage-only", action="store_true")
    args = parser.parse_args(argv)
    frames = storage(annotations_root())
    if not args.storage_only:
        rate, decode_rate = throughput(args.device, args.clips, args.seconds)
        projection(frames["activitynet"], rate, decode_rate, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
