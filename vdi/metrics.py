"""Moment-retrieval metrics as pure functions: R@k at IoU thresholds, mIoU, greedy NMS.

Conventions (documented because published numbers differ on them):

* **Candidates** are the cells (i, j) of MMN's sparse 2D mask, in row-major order. Cell (i, j)
  is the moment ``(i * d / N, (j + 1) * d / N)`` of a video of duration ``d`` cut into ``N`` clips.
* **NMS** is greedy over descending scores (ties broken by candidate order): a candidate is
  suppressed when its IoU with a kept, better candidate is *strictly greater* than the threshold.
  IoUs between candidates are computed exactly on the integer grid (``(i, j + 1)`` in clip units)
  in float64, so they do not depend on the duration. Many grid pairs have IoU exactly 0.5 (e.g.
  ``[0, 2)`` and ``[0, 4)``); computed exactly, such a pair is *not* suppressed at threshold 0.5.
  MMN computes the IoU in seconds in float32, where ``i * d / N`` rounding can turn 0.5 into
  0.50000006 and suppress the pair; we do not.
* **A hit** is ``IoU(prediction, ground truth) >= threshold`` (MMN's rule; 2D-TAN uses ``>``),
  computed in float64 seconds.
* A query that keeps fewer than ``k`` moments after NMS counts the ones it has (MMN's own
  evaluation crashes there).
* Recalls and mIoU are returned in percent. Names: ``R1@0.5``, ``R5@0.7``, ``mIoU``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sparse_mask(num_clips: int, pooling_counts: Sequence[int]) -> torch.Tensor:
    """MMN's sparse mask of valid (start clip, end clip) cells: a bool tensor [N, N]."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    mask = torch.zeros(num_clips, num_clips, dtype=torch.bool)
    index = torch.arange(num_clips)
    mask[index, index] = True
    stride, offset = 1, 0
    for count in pooling_counts:
        for _ in range(count):
            offset += stride
            if offset >= num_clips:
                raise ValueError(
                    f"pooling counts {list(pooling_counts)} reach offset {offset} >= num_clips {num_clips}"
                )
            starts = torch.arange(0, num_clips - offset, stride)
            mask[starts, starts + offset] = True
        stride *= 2
    return mask


def candidate_grid(mask: torch.Tensor) -> torch.Tensor:
    """Candidate cells of a sparse mask as a long tensor [C, 2] of (start clip, end clip)."""
    return mask.nonzero()


def grid_pair_iou(grid: torch.Tensor) -> torch.Tensor:
    """Exact IoU between all candidates [C, C] in float64 (clip units, duration-free)."""
    start = grid[:, 0].to(torch.float64)
    end = grid[:, 1].to(torch.float64) + 1
    inter = (torch.minimum(end[:, None], end[None]) - torch.maximum(start[:, None], start[None])).clamp(min=0)
    union = torch.maximum(end[:, None], end[None]) - torch.minimum(start[:, None], start[None])
    return inter / union


def grid_moments(grid: torch.Tensor, durations: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Seconds of candidate cells: grid [..., 2] with durations broadcast over its leading dims."""
    grid = grid.to(torch.float64)
    bounds = torch.stack([grid[..., 0], grid[..., 1] + 1], dim=-1)
    return bounds * (durations.to(torch.float64) / num_clips)[..., None]


def temporal_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """IoU of (start, end) segments [..., 2], broadcasting, in float64; empty unions give 0."""
    first = first.to(torch.float64)
    second = second.to(torch.float64)
    inter = (torch.minimum(first[..., 1], second[..., 1]) - torch.maximum(first[..., 0], second[..., 0])).clamp(min=0)
    union = torch.maximum(first[..., 1], second[..., 1]) - torch.minimum(first[..., 0], second[..., 0])
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def nms_top_k(scores: torch.Tensor, suppresses: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy NMS keeping at most ``k`` candidates per query, vectorised over queries.

    Args:
        scores: [Q, C] candidate scores.
        suppresses: [C, C] bool, ``suppresses[a, b]`` = keeping ``a`` removes ``b``
            (``grid_pair_iou(grid) > threshold``).
        k: how many moments to keep.

    Returns:
        [Q, k] long candidate indices in rank order, -1 where fewer than k survive.
    """
    if scores.dim() != 2 or suppresses.shape != (scores.shape[1], scores.shape[1]):
        raise ValueError(f"scores [Q, C] and suppresses [C, C] expected, got {list(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN: the model produced invalid outputs")
    num_queries, num_candidates = scores.shape
    rows = torch.arange(num_queries, device=scores.device)
    alive = torch.ones(num_queries, num_candidates, dtype=torch.bool, device=scores.device)
    kept = torch.full((num_queries, k), -1, dtype=torch.long, device=scores.device)
    lowest = torch.finfo(scores.dtype).min
    for rank in range(min(k, num_candidates)):
        # argmax returns the first maximum: ties resolve in candidate order, like a stable sort.
        best = scores.masked_fill(~alive, lowest).argmax(dim=1)
        found = alive[rows, best]
        if not found.any():
            break
        kept[:, rank] = torch.where(found, best, torch.full_like(best, -1))
        alive &= ~suppresses[best]
        alive[rows, best] = False
    return kept


def metric_names(recall_ks: Sequence[int], iou_thresholds: Sequence[float]) -> list[str]:
    return [f"R{k}@{t:g}" for k in recall_ks for t in iou_thresholds] + ["mIoU"]


def retrieval_metrics(
    scores: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    durations: torch.Tensor,
    ground_truth: torch.Tensor,
    recall_ks: Sequence[int] = (1, 5),
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    nms_threshold: float = 0.5,
) -> dict[str, float]:
    """R@k IoU>=m (percent) and mIoU (percent, IoU of the top-1 moment) over all queries.

    Args:
        scores: [Q, C] scores of the candidates ``grid`` [C, 2].
        num_clips: N of the 2D map.
        durations: [Q] video duration of each query, seconds.
        ground_truth: [Q, 2] (start, end) seconds.
    """
    if scores.shape[0] == 0:
        raise ValueError("no queries to evaluate")
    ranked = rank_moments(scores, grid, num_clips, durations, max(recall_ks), nms_threshold)
    return metrics_from_ranked(ranked.moments, ranked.valid, ground_truth, recall_ks, iou_thresholds)


class RankedMoments:
    """Top-k moments per query after NMS: moments [Q, k, 2] s, scores [Q, k], valid [Q, k]."""

    def __init__(self, moments: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor):
        self.moments, self.scores, self.valid = moments, scores, valid


def rank_moments(
    scores: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    durations: torch.Tensor,
    k: int,
    nms_threshold: float,
) -> RankedMoments:
    suppresses = grid_pair_iou(grid).to(scores.device) > nms_threshold
    kept = nms_top_k(scores, suppresses, k)
    valid = kept >= 0
    safe = kept.clamp(min=0)
    moments = grid_moments(grid[safe], durations[:, None].expand_as(safe), num_clips)
    kept_scores = scores.gather(1, safe).masked_fill(~valid, float("nan"))
    return RankedMoments(moments, kept_scores, valid)


def metrics_from_ranked(
    moments: torch.Tensor,
    valid: torch.Tensor,
    ground_truth: torch.Tensor,
    recall_ks: Sequence[int],
    iou_thresholds: Sequence[float],
) -> dict[str, float]:
    ious = temporal_iou(moments, ground_truth[:, None, :]).masked_fill(~valid, -1.0)
    results: dict[str, float] = {}
    for k in recall_ks:
        best = ious[:, :k].max(dim=1).values
        for threshold in iou_thresholds:
            results[f"R{k}@{threshold:g}"] = float((best >= threshold).double().mean() * 100)
    top1 = ious[:, 0].clamp(min=0)
    results["mIoU"] = float(top1.mean() * 100)
    return results


__all__ = [
    "RankedMoments",
    "candidate_grid",
    "grid_moments",
    "grid_pair_iou",
    "metric_names",
    "metrics_from_ranked",
    "nms_top_k",
    "rank_moments",
    "retrieval_metrics",
    "sparse_mask",
    "temporal_iou",
]
