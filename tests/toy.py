"""Generated CLIP-like features with a planted signal: a tiny dataset for smoke tests and demos.

Each action has a random direction in feature space; a video's frames inside an annotated moment
carry the direction of the moment's action, so a model that learns to match the query wording to
that direction can locate the moment. Queries are an object noun chunk plus an action phrase, so
they parse into non-empty Q^s and Q^d without spaCy.
"""

from __future__ import annotations

import numpy as np

from vdi.batch import VideoSample
from vdi.text import ParsedQuery

ACTIONS = ["opens the door", "walks away", "jumps up", "sits down"]
OBJECTS = ["a person", "the man", "a woman", "the child"]


def planted_samples(
    num_videos: int,
    dim: int = 64,
    num_frames: int = 24,
    num_patches: int = 16,
    seed: int = 0,
    signal: float = 3.0,
) -> list[VideoSample]:
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((len(ACTIONS), dim))
    samples = []
    for video in range(num_videos):
        duration = float(rng.uniform(8, 16))
        features = rng.standard_normal((num_frames, dim)) * 0.5
        queries, moments = [], []
        for _ in range(2):
            action = int(rng.integers(len(ACTIONS)))
            subject = OBJECTS[int(rng.integers(len(OBJECTS)))]
            start_frame = int(rng.integers(0, num_frames - 6))
            end_frame = start_frame + int(rng.integers(3, 7))
            features[start_frame:end_frame] += signal * directions[action]
            moments.append([start_frame / num_frames * duration, end_frame / num_frames * duration])
            text = f"{subject} {ACTIONS[action]}"
            queries.append(ParsedQuery(text, subject, ACTIONS[action]))
        patches = rng.standard_normal((num_frames, num_patches, dim)).astype(np.float16)
        samples.append(
            VideoSample(
                video_id=f"video{video:03d}",
                duration=duration,
                features=features.astype(np.float16),
                queries=queries,
                moments=np.asarray(moments),
                patches=patches,
            )
        )
    return samples


__all__ = ["ACTIONS", "OBJECTS", "planted_samples"]
