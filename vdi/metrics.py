"""Moment-retrieval metrics as pure functions: R@k at IoU thresholds, mIoU, greedy NMS.

Conventions (documented because published numbers differ on them):

* **Candidates** are the cells (i, j) of MMN's sparse 2D mask, in row-major order. Cell (i, j)
  is the moment ``(i * d / N, (j + 1) * d / N)`` of a video of duration ``d`` cut into ``N`` clips.
* **NMS** is greedy over descending scores (ties broken by candidate order): a candidate is
  suppressed when its IoU with a kept, better candidate is *strictly greater* than the threshold
  (``rank_segments``, the one ranking of evaluation and prediction). Evaluation computes IoUs
  between candidates exactly on the integer grid (``(i, j + 1)`` in clip units) in float64, so they
  do not depend on the duration. Many grid pairs have IoU exactly 0.5 (e.g. ``[0, 2)`` and
  ``[0, 4)``); computed exactly, such a pair is *not* suppressed at threshold 0.5. MMN computes
  the IoU in seconds in float32, where ``i * d / N`` rounding can turn 0.5 into 0.50000006 and
  suppress the pair; we do not. The Predictor's windows share no grid, so it ranks in seconds;
  the comparison's tolerance ``NMS_TOLERANCE`` absorbs that rounding (see there why it leaves the
  exact grid rule unchanged).
* **A hit** is ``IoU(prediction, ground truth) >= threshold`` (MMN's rule; 2D-TAN uses ``>``),
  computed in float64 seconds.
* A query that keeps fewer than ``k`` moments after NMS counts the ones it has (MMN's own
  evaluation crashes there).
* Recalls and mIoU are returned in percent. Names: ``R1@0.5``, ``R5@0.7``, ``mIoU``.

Grounding diagnostics (why R@k alone is not enough: a model that ignores the sentence can still
score well when a video has few moments):

* ``ceiling R1@t``: the best R1@t of *any* query-blind top-1 predictor, from the annotations
  alone. Per video, the most of its queries one segment can hit at IoU >= t, summed over videos,
  over the number of queries. The segments searched are the model's candidate cells and every
  segment between two annotated boundaries of the video; a model whose top-1 is a grid cell can
  do no better without reading the sentence.
* ``prior R1@t``: the best single constant cell (the same relative moment for every query,
  using neither video nor sentence).
* ``gain R1@t``: R1@t of the true sentences minus R1@t when each video's sentences are deranged
  among themselves (the prediction for one sentence is scored against the moment of another
  sentence of the same video); videos with one query are left out of both terms and counted.
  ``xgain R1@t`` is the same with sentences taken from another video of the evaluation batch.
  Both derangements are deterministic cyclic shifts, so the numbers are reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from vdi.metric_keys import MIOU, grounding_name, recall_name


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


def grid_bounds(grid: torch.Tensor) -> torch.Tensor:
    """Candidate cells [..., 2] as (start, end) segments in clip units, float64: (i, j + 1)."""
    grid = grid.to(torch.float64)
    return torch.stack([grid[..., 0], grid[..., 1] + 1], dim=-1)


def grid_pair_iou(grid: torch.Tensor) -> torch.Tensor:
    """Exact IoU between all candidates [C, C] in float64 (clip units, duration-free)."""
    bounds = grid_bounds(grid)
    return temporal_iou(bounds[:, None], bounds[None])


def grid_moments(grid: torch.Tensor, durations: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Seconds of candidate cells: grid [..., 2] with durations broadcast over its leading dims."""
    return grid_bounds(grid) * (durations.to(torch.float64) / num_clips)[..., None]


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
            (``suppression(segments, threshold)``).
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


# IoU > threshold + NMS_TOLERANCE suppresses, wherever the IoUs come from. On the grid this is the
# exact rule IoU > threshold: a grid IoU is a / b with integers a <= b <= N (clip units), one
# correctly rounded float64 division, so a threshold equal to one (0.5, 0.3 = 3 / 10) parses to the
# same double and such pairs are kept either way, and the two rules differ only for a grid IoU in
# (threshold, threshold + 1e-9]. A threshold with d decimals is 0 or >= 1 / (N 10^d) from every
# a / b, so none with up to 6 decimals (every config: 0.5) is that close for N < 1000. In seconds
# (the Predictor's windows) ``i * d / N`` rounding moves IoUs by ~1e-15, which the tolerance
# absorbs, so a pair of IoU exactly the threshold is kept there too.
NMS_TOLERANCE = 1e-9


def suppression(segments: torch.Tensor, threshold: float) -> torch.Tensor:
    """[C, C] bool for ``nms_top_k``: IoU(a, b) > threshold (+ ``NMS_TOLERANCE``) of segments [C, 2]."""
    return temporal_iou(segments[:, None], segments[None]) > threshold + NMS_TOLERANCE


class RankedMoments:
    """Top-k moments per query after NMS: moments [Q, k, 2] (seconds from ``rank_moments``),
    scores [Q, k], valid [Q, k]."""

    def __init__(self, moments: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor):
        self.moments, self.scores, self.valid = moments, scores, valid


def rank_segments(scores: torch.Tensor, segments: torch.Tensor, k: int, nms_threshold: float) -> RankedMoments:
    """The ranking of evaluation and prediction: greedy NMS top-k of candidates ``segments`` [C, 2]
    (any one unit: IoU is unit-free) under ``scores`` [Q, C]; moments in the segments' unit."""
    kept = nms_top_k(scores, suppression(segments, nms_threshold).to(scores.device), k)
    valid = kept >= 0
    safe = kept.clamp(min=0)
    kept_scores = scores.gather(1, safe).masked_fill(~valid, float("nan"))
    return RankedMoments(segments.to(scores.device)[safe], kept_scores, valid)


def rank_moments(
    scores: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    durations: torch.Tensor,
    k: int,
    nms_threshold: float,
) -> RankedMoments:
    """``rank_segments`` on the grid in clip units (exact, duration-free IoUs), moments in seconds
    of each query's video duration ``durations`` [Q]."""
    ranked = rank_segments(scores, grid_bounds(grid), k, nms_threshold)
    ranked.moments = ranked.moments * (durations.to(torch.float64) / num_clips)[:, None, None]
    return ranked


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
            results[recall_name(k, threshold)] = float((best >= threshold).double().mean() * 100)
    top1 = ious[:, 0].clamp(min=0)
    results[MIOU] = float(top1.mean() * 100)
    return results


def video_groups(video_index: torch.Tensor) -> list[torch.Tensor]:
    """Query indices of each video, in first-appearance order of the videos and query order within."""
    order: dict[int, list[int]] = {}
    for query, video in enumerate(video_index.tolist()):
        order.setdefault(int(video), []).append(query)
    return [torch.tensor(queries, dtype=torch.long) for queries in order.values()]


def derangement_within(video_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic derangement of the queries within each video.

    Returns ``(partner, used)``: ``partner[q]`` is another query of q's video (a cyclic shift by
    one of the video's queries, so no query keeps its own sentence), and ``used[q]`` is False for
    queries alone in their video (their partner is themselves and they are left out).
    """
    partner = torch.arange(video_index.shape[0])
    used = torch.zeros(video_index.shape[0], dtype=torch.bool)
    for queries in video_groups(video_index):
        if queries.numel() > 1:
            partner[queries] = queries.roll(-1)
            used[queries] = True
    return partner, used


def derangement_across(video_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, a query of the *next* video (cyclic over videos, same position modulo its
    count): ``(partner, used)``, ``used`` False when there is only one video."""
    groups = video_groups(video_index)
    partner = torch.arange(video_index.shape[0])
    used = torch.zeros(video_index.shape[0], dtype=torch.bool)
    if len(groups) < 2:
        return partner, used
    for number, queries in enumerate(groups):
        other = groups[(number + 1) % len(groups)]
        partner[queries] = other[torch.arange(queries.numel()) % other.numel()]
        used[queries] = True
    return partner, used


def top1_hits(moments: torch.Tensor, valid: torch.Tensor, ground_truth: torch.Tensor, threshold: float) -> torch.Tensor:
    """[Q] bool: the top-1 moment [Q, k, 2] hits ``ground_truth`` [Q, 2] at IoU >= threshold."""
    iou = temporal_iou(moments[:, 0], ground_truth).masked_fill(~valid[:, 0], -1.0)
    return iou >= threshold


def query_blind_ceiling(
    video_index: torch.Tensor,
    durations: torch.Tensor,
    ground_truth: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    threshold: float,
) -> float:
    """The best R1@threshold (percent) any query-blind top-1 predictor can reach (module docstring)."""
    if ground_truth.shape[0] == 0:
        raise ValueError("no queries to evaluate")
    hit_total = 0
    for queries in video_groups(video_index):
        duration = durations[queries[0]]
        truth = ground_truth[queries].to(torch.float64)
        cells = grid_moments(grid, duration.expand(grid.shape[0]), num_clips)
        bounds = torch.unique(truth.flatten())
        starts, ends = torch.meshgrid(bounds, bounds, indexing="ij")
        between = torch.stack([starts.flatten(), ends.flatten()], dim=-1)
        segments = torch.cat([cells, between[between[:, 1] > between[:, 0]]])
        hits = temporal_iou(segments[:, None, :], truth[None]) >= threshold  # [segments, queries]
        hit_total += int(hits.sum(dim=1).max())
    return 100.0 * hit_total / ground_truth.shape[0]


def constant_cell_prior(
    durations: torch.Tensor, ground_truth: torch.Tensor, grid: torch.Tensor, num_clips: int, threshold: float
) -> tuple[float, tuple[int, int]]:
    """R1@threshold (percent) of the best single candidate cell predicted for every query, and the cell."""
    if ground_truth.shape[0] == 0:
        raise ValueError("no queries to evaluate")
    moments = grid_moments(grid[:, None, :], durations[None, :].expand(grid.shape[0], -1), num_clips)
    hits = (temporal_iou(moments, ground_truth[None]) >= threshold).double().mean(dim=1)  # [C]
    best = int(hits.argmax())
    return float(hits[best] * 100), (int(grid[best, 0]), int(grid[best, 1]))


_BOUNDS_CACHE: dict[bytes, dict[float, tuple[float, float]]] = {}


def annotation_bounds(
    video_index: torch.Tensor,
    durations: torch.Tensor,
    ground_truth: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    iou_thresholds: tuple[float, ...],
) -> dict[float, tuple[float, float]]:
    """{threshold: (ceiling, prior)}; they depend on the annotations alone, so a split evaluated
    every epoch computes them once (cached by the content of the inputs)."""
    digest = hashlib.sha256()
    for tensor in (video_index, durations.double(), ground_truth.double(), grid):
        digest.update(tensor.contiguous().cpu().numpy().tobytes())
    digest.update(repr((num_clips, iou_thresholds)).encode())
    key = digest.digest()
    if key not in _BOUNDS_CACHE:
        if len(_BOUNDS_CACHE) > 32:
            _BOUNDS_CACHE.clear()
        _BOUNDS_CACHE[key] = {
            t: (
                query_blind_ceiling(video_index, durations, ground_truth, grid, num_clips, t),
                constant_cell_prior(durations, ground_truth, grid, num_clips, t)[0],
            )
            for t in iou_thresholds
        }
    return _BOUNDS_CACHE[key]


def grounding_metrics(
    moments: torch.Tensor,
    valid: torch.Tensor,
    ground_truth: torch.Tensor,
    video_index: torch.Tensor,
    durations: torch.Tensor,
    grid: torch.Tensor,
    num_clips: int,
    iou_thresholds: Sequence[float],
    cross_moments: torch.Tensor | None = None,
    cross_valid: torch.Tensor | None = None,
    cross_used: torch.Tensor | None = None,
) -> dict[str, float]:
    """Ceiling, constant prior and grounding gains (percent points) for each threshold.

    ``cross_*``: top-k moments of each query's video retrieved with another video's sentence
    (see ``derangement_across``) and which queries had one; omitted, no ``xgain`` is reported.
    Also returns the counts: ``queries``, ``videos``, ``single-query videos``.
    """
    partner, used = derangement_within(video_index)
    groups = video_groups(video_index)
    results: dict[str, float] = {}
    bounds = annotation_bounds(video_index, durations, ground_truth, grid, num_clips, tuple(iou_thresholds))
    for threshold in iou_thresholds:
        results[grounding_name("ceiling", threshold)], results[grounding_name("prior", threshold)] = bounds[threshold]
        true_hits = top1_hits(moments, valid, ground_truth, threshold)
        if used.any():
            rolled_hits = top1_hits(moments, valid, ground_truth[partner], threshold)
            gain = true_hits[used].double().mean() - rolled_hits[used].double().mean()
            results[grounding_name("gain", threshold)] = float(gain * 100)
        else:
            results[grounding_name("gain", threshold)] = float("nan")
        if cross_moments is not None and cross_used is not None and cross_used.any():
            cross_hits = top1_hits(cross_moments, cross_valid, ground_truth, threshold)
            gain = true_hits[cross_used].double().mean() - cross_hits[cross_used].double().mean()
            results[grounding_name("xgain", threshold)] = float(gain * 100)
    results["queries"] = float(ground_truth.shape[0])
    results["videos"] = float(len(groups))
    results["single-query videos"] = float(sum(g.numel() == 1 for g in groups))
    return results


def paired_bootstrap(
    differences: torch.Tensor, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean paired difference and its bootstrap confidence interval, resampling seeds and queries.

    ``differences`` is [seeds, queries]: per seed (the same seed and data order for both methods)
    and per query, method minus reference (e.g. top-1 hit at IoU 0.5, in percent). Each resample
    draws seeds with replacement and, shared by all drawn seeds (the queries are the same ones),
    queries with replacement; a [seeds, 1] tensor resamples seeds only. Returns (mean, low, high).
    """
    if differences.dim() != 2 or differences.numel() == 0:
        raise ValueError(f"differences must be a non-empty [seeds, queries] tensor, got {list(differences.shape)}")
    values = differences.to(torch.float64)
    num_seeds, num_queries = values.shape
    generator = torch.Generator().manual_seed(seed)

    def draw_counts(size: int) -> torch.Tensor:
        # how often each of ``size`` items is drawn in each resample (with replacement)
        draws = torch.randint(size, (resamples, size), generator=generator)
        ones = torch.ones(resamples, size, dtype=torch.float64)
        return torch.zeros(resamples, size, dtype=torch.float64).scatter_add_(1, draws, ones)

    seed_weights, query_weights = draw_counts(num_seeds), draw_counts(num_queries)
    statistics = ((seed_weights @ values) * query_weights).sum(dim=1) / (num_seeds * num_queries)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(statistics, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return float(values.mean()), float(low), float(high)


__all__ = [
    "NMS_TOLERANCE",
    "RankedMoments",
    "annotation_bounds",
    "candidate_grid",
    "constant_cell_prior",
    "derangement_across",
    "derangement_within",
    "grid_bounds",
    "grid_moments",
    "grid_pair_iou",
    "grounding_metrics",
    "metrics_from_ranked",
    "nms_top_k",
    "paired_bootstrap",
    "query_blind_ceiling",
    "rank_moments",
    "rank_segments",
    "retrieval_metrics",
    "sparse_mask",
    "suppression",
    "temporal_iou",
    "top1_hits",
    "video_groups",
]
