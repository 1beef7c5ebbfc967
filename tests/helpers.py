"""Test helpers: a plain reference NMS loop."""

from __future__ import annotations

import torch

from vdi.toy import planted_samples  # noqa: F401  (re-exported for the tests)


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
