"""Videos -> per-frame CLIP features with the frozen visual tower (CPU or one GPU, same code).

Output folder::

    features.json            encoder name + weights identity, fps, feature and patch shapes
    videos/<video id>.npz    features [F, D] float16, patches [F, P, D] float16 (optional), duration
    failures.jsonl           one line per video that could not be used, with the reason

Decoding runs in worker processes; the visual tower runs in the main process on batches of
frames that span videos (``batch_frames``), so short videos do not leave the device idle.
A re-run skips videos whose ``.npz`` exists (each is written atomically) and retries failures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vdi.errors import UserError
from vdi.video import VideoDecodeError, decode_video

FEATURES_MANIFEST = "features.json"


class FeatureError(UserError, RuntimeError):
    """A features folder that cannot be used for this request."""


@dataclass
class FeatureSpec:
    encoder: str
    weights: str
    fps: float
    feature_dim: int
    num_patches: int  # 0 = no patch tokens stored
    image_size: int


@dataclass
class ExtractionSummary:
    requested: int = 0
    already_done: int = 0
    extracted: int = 0
    failed: Counter = field(default_factory=Counter)
    frames: int = 0
    seconds: float = 0.0
    feature_bytes: int = 0
    patch_bytes: int = 0

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        failed = ", ".join(f"{reason} {count}" for reason, count in sorted(self.failed.items())) or "none"
        return (
            f"features: {self.requested} videos requested, {self.already_done} already done, {self.extracted} "
            f"extracted, {sum(self.failed.values())} failed ({failed}); {self.frames} frames in {self.seconds:.1f} s "
            f"({rate:.0f} frames/s); stored {self.feature_bytes / 2**20:.1f} MiB features + "
            f"{self.patch_bytes / 2**20:.1f} MiB patch tokens"
        )


def video_file_name(video_id: str) -> str:
    return video_id.replace("/", "_") + ".npz"


def load_features(folder: str | Path, video_id: str, load_patches: bool = True) -> dict | None:
    """The stored arrays of one video, or None when it has none."""
    path = Path(folder) / "videos" / video_file_name(video_id)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        result = {"features": data["features"], "duration": float(data["duration"]), "fps": float(data["fps"])}
        if load_patches and "patches" in data:
            result["patches"] = data["patches"]
    return result


def read_spec(folder: str | Path) -> FeatureSpec:
    path = Path(folder) / FEATURES_MANIFEST
    if not path.exists():
        raise FeatureError(f"no {FEATURES_MANIFEST} in {folder}; extract features first (python -m data_prep features)")
    return FeatureSpec(**json.loads(path.read_text()))


class _DecodeDataset(Dataset):
    def __init__(self, items: list[tuple[str, Path | None]], fps: float, short_side: int):
        self.items, self.fps, self.short_side = items, fps, short_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        video_id, path = self.items[index]
        if path is None:
            return video_id, None, 0.0, "missing video file"
        try:
            decoded = decode_video(path, self.fps, self.short_side)
        except VideoDecodeError as error:
            return video_id, None, 0.0, str(error)
        return video_id, torch.from_numpy(decoded.frames), decoded.duration, None


def _reason(message: str) -> str:
    for key in ("missing", "not found", "no video stream", "zero-length", "no decodable", "cannot open", "undecodable"):
        if key in message:
            return key
    return "other"


def extract_features(
    videos: list[tuple[str, Path | None]],
    out_dir: str | Path,
    clip_name: str,
    pretrained: str | None,
    clip_config_dir: str | None = None,
    fps: float = 4.0,
    patches: bool = True,
    device: str = "cpu",
    batch_frames: int = 256,
    workers: int = 2,
    progress: bool = True,
    precision: str = "auto",
) -> ExtractionSummary:
    """Extract features of (video id, path or None) pairs into ``out_dir`` (resumable).

    ``precision``: auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 (also on the CPU,
    ~3x faster there; features are stored as float16 either way)."""
    from tqdm import tqdm

    from vdi.encoders import FrozenVisualEncoder, create_clip, patch_count
    from vdi.shards import weights_identity

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    clip = create_clip(clip_name, pretrained, clip_config_dir)
    encoder = FrozenVisualEncoder(clip).to(device)
    spec = FeatureSpec(
        encoder=clip_name,
        weights=weights_identity(pretrained),
        fps=float(fps),
        feature_dim=encoder.output_dim,
        num_patches=patch_count(clip) if patches else 0,
        image_size=encoder.image_size,
    )
    manifest = out / FEATURES_MANIFEST
    if manifest.exists():
        existing = read_spec(out)
        if existing != spec:
            raise FeatureError(
                f"{out} holds features made with {asdict(existing)}; this run asks for {asdict(spec)}: "
                "use another folder"
            )
    else:
        manifest.write_text(json.dumps(asdict(spec), indent=2))
    summary = ExtractionSummary(requested=len(videos))
    todo = []
    for video_id, path in videos:
        if (out / "videos" / video_file_name(video_id)).exists():
            summary.already_done += 1
        else:
            todo.append((video_id, path))
    failures = out / "failures.jsonl"
    if precision not in ("auto", "fp32", "bf16"):
        raise FeatureError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=use_bf16)
    loader = DataLoader(
        _DecodeDataset(todo, fps, encoder.image_size),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    pending: list[tuple[str, torch.Tensor, float]] = []  # videos whose frames wait for the encoder
    pending_frames = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="features")

    def flush() -> None:
        nonlocal pending, pending_frames
        if not pending:
            return
        frames = torch.cat([f for _, f, _ in pending])
        pooled_parts, patch_parts = [], []
        with torch.no_grad(), autocast:
            for chunk in frames.split(batch_frames):
                images = encoder.preprocess(chunk.to(device))
                pooled, tokens = encoder(images)
                pooled_parts.append(pooled.float().cpu())
                if patches:
                    patch_parts.append(tokens.float().cpu())
        pooled_all = torch.cat(pooled_parts)
        patches_all = torch.cat(patch_parts) if patches else None
        offset = 0
        for video_id, video_frames, duration in pending:
            count = video_frames.shape[0]
            arrays = {
                "features": pooled_all[offset : offset + count].numpy().astype(np.float16),
                "duration": np.float64(duration),
                "fps": np.float64(fps),
            }
            if patches_all is not None:
                arrays["patches"] = patches_all[offset : offset + count].numpy().astype(np.float16)
            offset += count
            target = out / "videos" / video_file_name(video_id)
            temporary = target.with_name(target.name + ".tmp.npz")
            np.savez(temporary, **arrays)
            temporary.replace(target)
            summary.extracted += 1
            summary.frames += count
            summary.feature_bytes += arrays["features"].nbytes
            summary.patch_bytes += arrays["patches"].nbytes if "patches" in arrays else 0
            bar.update(1)
        pending, pending_frames = [], 0

    with open(failures, "a") as failure_log:
        for video_id, frames, duration, error in loader:
            if error is not None:
                summary.failed[_reason(error)] += 1
                failure_log.write(json.dumps({"video_id": video_id, "reason": error}) + "\n")
                bar.update(1)
                continue
            pending.append((video_id, frames, duration))
            pending_frames += frames.shape[0]
            if pending_frames >= batch_frames:
                flush()
                elapsed = time.perf_counter() - start
                bar.set_postfix(frames_per_s=f"{summary.frames / max(elapsed, 1e-9):.0f}")
        flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    if progress:
        print(summary.line())
    return summary


__all__ = [
    "FEATURES_MANIFEST",
    "ExtractionSummary",
    "FeatureError",
    "FeatureSpec",
    "extract_features",
    "load_features",
    "read_spec",
]
