"""One training / evaluation batch: videos with all their sentences (MMN's batch unit).

:func:`collate` turns per-video samples (features as stored in shards, parsed queries) into a
:class:`Batch` of tensors: frames resampled to the preset's pre-clip count by MMN's average rule,
global features L2-normalised per frame (as MMN does before resampling), the three query
variants tokenized for the text tower.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from vdi.encoders import Tokenizer
from vdi.text import ParsedQuery


@dataclass
class VideoSample:
    """A video with its annotated sentences, as read from a shard (or built in memory)."""

    video_id: str
    duration: float
    features: np.ndarray | torch.Tensor  # [F, D] per-frame global CLIP features
    queries: list[ParsedQuery]
    moments: np.ndarray | torch.Tensor  # [K, 2] seconds
    patches: np.ndarray | torch.Tensor | None = None  # [F, P, D] projected patch tokens


@dataclass
class Batch:
    video_ids: list[str]
    durations: torch.Tensor  # [B] float64 seconds
    video_features: torch.Tensor  # [B, T, D]
    patch_features: torch.Tensor | None  # [B, T, P, D] float16
    sentence_video: torch.Tensor  # [S] long
    moments: torch.Tensor  # [S, 2] float64 seconds
    query_tokens: torch.Tensor  # [S, context]
    static_tokens: torch.Tensor  # [S, context]
    dynamic_tokens: torch.Tensor  # [S, context]
    has_static: torch.Tensor  # [S] bool
    has_dynamic: torch.Tensor  # [S] bool
    queries: list[str] = field(default_factory=list)
    truncated: int = 0  # queries cut at the text context length

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_sentences(self) -> int:
        return int(self.sentence_video.shape[0])

    @property
    def sentence_durations(self) -> torch.Tensor:
        return self.durations[self.sentence_video]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        moved = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if dtype is not None and item.name in ("video_features", "patch_features"):
                    value = value.to(dtype)
            moved[item.name] = value
        return Batch(**moved)


def resample_frames(frames: torch.Tensor, num_pre_clips: int) -> torch.Tensor:
    """MMN's average resampling of [F, ...] frames to [num_pre_clips, ...].

    Boundaries ``round(i * F / P)``; a pre-clip averages frames [s, e) and repeats frame s when
    s == e (videos with fewer frames than pre-clips).
    """
    count = frames.shape[0]
    if count == 0:
        raise ValueError("cannot resample a video with zero frames")
    frames = frames.float()
    bounds = torch.round(torch.arange(num_pre_clips + 1, dtype=torch.float64) / num_pre_clips * count).long()
    bounds = bounds.clamp(max=count - 1)
    starts, ends = bounds[:-1], bounds[1:]
    cumulative = torch.cat([frames.new_zeros(1, *frames.shape[1:]), frames.cumsum(dim=0)])
    lengths = (ends - starts).clamp(min=1).to(frames.dtype).view(-1, *([1] * (frames.dim() - 1)))
    averaged = (cumulative[ends] - cumulative[starts]) / lengths
    return torch.where((ends > starts).view(-1, *([1] * (frames.dim() - 1))), averaged, frames[starts])


def prepare_video_features(features, num_pre_clips: int) -> torch.Tensor:
    """Per-frame global features [F, D] -> normalised, resampled [num_pre_clips, D] float32."""
    tensor = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    return resample_frames(F.normalize(tensor.float(), dim=-1), num_pre_clips)


def prepare_patch_features(patches, num_pre_clips: int) -> torch.Tensor:
    """Patch tokens [F, P, D] -> resampled [num_pre_clips, P, D], kept in float16: they are the
    bulk of a batch (48 x 32 x 49 x 512 at the Charades config), and the model casts them."""
    tensor = torch.as_tensor(np.asarray(patches) if not isinstance(patches, torch.Tensor) else patches)
    return resample_frames(tensor.float(), num_pre_clips).half()


def collate(samples: list[VideoSample], tokenizer: Tokenizer, num_pre_clips: int, load_patches: bool = True) -> Batch:
    if not samples:
        raise ValueError("cannot build a batch from zero videos")
    video_features = torch.stack([prepare_video_features(s.features, num_pre_clips) for s in samples])
    patch_features = None
    if load_patches:
        missing = [s.video_id for s in samples if s.patches is None]
        if missing:
            raise ValueError(
                f"video {missing[0]} has no patch tokens but L^sd needs them; re-extract features with "
                "patch tokens or set injection.spatial_dynamic=none"
            )
        patch_features = torch.stack([prepare_patch_features(s.patches, num_pre_clips) for s in samples])
    queries: list[ParsedQuery] = []
    sentence_video, moments = [], []
    for index, sample in enumerate(samples):
        sample_moments = torch.as_tensor(np.asarray(sample.moments), dtype=torch.float64).reshape(-1, 2)
        if len(sample.queries) != len(sample_moments):
            raise ValueError(
                f"video {sample.video_id}: {len(sample.queries)} queries but {len(sample_moments)} moments"
            )
        queries.extend(sample.queries)
        moments.append(sample_moments)
        sentence_video.extend([index] * len(sample.queries))
    query_batch = tokenizer([q.query for q in queries])
    return Batch(
        video_ids=[s.video_id for s in samples],
        durations=torch.tensor([float(s.duration) for s in samples], dtype=torch.float64),
        video_features=video_features,
        patch_features=patch_features,
        sentence_video=torch.tensor(sentence_video, dtype=torch.long),
        moments=torch.cat(moments),
        query_tokens=query_batch.tokens,
        static_tokens=tokenizer([q.static for q in queries]).tokens,
        dynamic_tokens=tokenizer([q.dynamic for q in queries]).tokens,
        has_static=torch.tensor([q.has_static for q in queries], dtype=torch.bool),
        has_dynamic=torch.tensor([q.has_dynamic for q in queries], dtype=torch.bool),
        queries=[q.query for q in queries],
        truncated=query_batch.truncated,
    )


__all__ = [
    "Batch",
    "VideoSample",
    "collate",
    "prepare_patch_features",
    "prepare_video_features",
    "resample_frames",
]
