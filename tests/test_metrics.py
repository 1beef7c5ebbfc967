import pytest
import torch
from helpers import reference_nms

from vdi.metrics import (
    candidate_grid,
    grid_moments,
    grid_pair_iou,
    nms_top_k,
    rank_moments,
    retrieval_metrics,
    sparse_mask,
    temporal_iou,
)


def test_sparse_mask_matches_mmn_layouts():
    charades = sparse_mask(16, [15])
    assert int(charades.sum()) == 136  # the full upper triangle of 16x16
    assert torch.equal(charades, torch.ones(16, 16, dtype=torch.bool).triu())
    anet = sparse_mask(64, [15, 8, 8])
    assert int(anet.sum()) == 1104
    assert anet[0, 15] and anet[0, 17] and not anet[0, 16] and anet[0, 35] and not anet[0, 33]
    assert not anet[1, 18]  # stride-2 diagonals start at even clips only
    with pytest.raises(ValueError, match="offset 16 >= num_clips 16"):
        sparse_mask(16, [16])


def test_grid_moments_follow_mmn():
    grid = torch.tensor([[0, 0], [2, 5], [15, 15]])
    moments = grid_moments(grid, torch.tensor(32.0), 16)
    assert moments.tolist() == [[0.0, 2.0], [4.0, 12.0], [30.0, 32.0]]


def test_temporal_iou_hand_cases():
    a = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [2.0, 2.0]])
    b = torch.tensor([[5.0, 15.0], [0.0, 10.0], [10.0, 20.0], [2.0, 2.0]])
    assert temporal_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0, 0.0, 0.0])


def test_nms_hand_case_and_exact_half_iou_is_kept():
    # candidates [0,2) [0,4) [1,3) in clip units: IoU([0,2),[0,4)) = 0.5 exactly, IoU([0,4),[1,3)) = 0.5
    grid = torch.tensor([[0, 1], [0, 3], [1, 2]])
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    suppress = grid_pair_iou(grid) > 0.5
    assert nms_top_k(scores, suppress, 3).tolist() == [[0, 1, 2]]
    # at 0.4 [0,4) is suppressed by [0,2); [1,3) overlaps [0,2) with IoU 1/3 and survives
    assert nms_top_k(scores, grid_pair_iou(grid) > 0.4, 3).tolist() == [[0, 2, -1]]


def test_nms_matches_reference_loop_on_random_maps():
    generator = torch.Generator().manual_seed(3)
    for num_clips, counts in [(16, [15]), (64, [15, 8, 8])]:
        grid = candidate_grid(sparse_mask(num_clips, counts))
        bounds = torch.stack([grid[:, 0], grid[:, 1] + 1], dim=1).double()
        scores = torch.rand(40, len(grid), generator=generator)
        scores[0] = 0.0  # an all-zero map (MMN's evaluation crashes on such queries)
        scores[1, :5] = scores[1, 5]  # ties
        kept = nms_top_k(scores, grid_pair_iou(grid) > 0.5, 5)
        for query in range(len(scores)):
            expected = reference_nms(bounds, scores[query], 0.5)[:5]
            expected += [-1] * (5 - len(expected))
            assert kept[query].tolist() == expected


def test_fewer_than_k_moments_are_counted_not_crashed():
    grid = candidate_grid(sparse_mask(2, [1]))  # 3 candidates, row-major: [0,1) [0,2) [1,2)
    scores = torch.tensor([[0.1, 0.9, 0.2]])  # the whole video first: it suppresses both halves
    durations = torch.tensor([10.0])
    ranked = rank_moments(scores, grid, 2, durations, k=5, nms_threshold=0.3)
    assert ranked.valid.tolist() == [[True, False, False, False, False]]
    metrics = retrieval_metrics(scores, grid, 2, durations, torch.tensor([[0.0, 10.0]]), (1, 5), (0.5,), 0.3)
    assert metrics == {"R1@0.5": 100.0, "R5@0.5": 100.0, "mIoU": 100.0}


def test_recall_uses_greater_or_equal():
    grid = candidate_grid(sparse_mask(4, [3]))
    scores = torch.zeros(1, len(grid))
    scores[0, (grid == torch.tensor([0, 1])).all(dim=1)] = 1.0  # predict [0, 5) of a 10 s video
    metrics = retrieval_metrics(scores, grid, 4, torch.tensor([10.0]), torch.tensor([[0.0, 10.0]]), (1,), (0.5, 0.7))
    assert metrics["R1@0.5"] == 100.0  # IoU exactly 0.5 is a hit
    assert metrics["R1@0.7"] == 0.0
    assert metrics["mIoU"] == pytest.approx(50.0)


def test_metrics_match_plain_loop():
    generator = torch.Generator().manual_seed(1)
    grid = candidate_grid(sparse_mask(16, [15]))
    scores = torch.rand(50, len(grid), generator=generator)
    durations = torch.rand(50, generator=generator) * 30 + 10
    starts = torch.rand(50, generator=generator) * 0.5 * durations
    gt = torch.stack([starts, starts + torch.rand(50, generator=generator) * 0.5 * durations], dim=1)
    metrics = retrieval_metrics(scores, grid, 16, durations, gt, (1, 5), (0.3, 0.5, 0.7), 0.5)
    bounds = torch.stack([grid[:, 0], grid[:, 1] + 1], dim=1).double()
    hits = {key: 0 for key in metrics if key != "mIoU"}
    total_iou = 0.0
    for query in range(50):
        kept = reference_nms(bounds, scores[query], 0.5)[:5]
        seconds = [
            (
                float(bounds[i, 0]) * float(durations[query]) / 16,
                float(bounds[i, 1]) * float(durations[query]) / 16,
            )
            for i in kept
        ]
        ious = [float(temporal_iou(torch.tensor(s, dtype=torch.float64), gt[query].double())) for s in seconds]
        total_iou += ious[0]
        for k in (1, 5):
            for threshold in (0.3, 0.5, 0.7):
                hits[f"R{k}@{threshold:g}"] += any(iou >= threshold for iou in ious[:k])
    for key, count in hits.items():
        assert metrics[key] == pytest.approx(count / 50 * 100)
    assert metrics["mIoU"] == pytest.approx(total_iou / 50 * 100)


def test_nan_scores_raise():
    grid = candidate_grid(sparse_mask(4, [3]))
    scores = torch.full((1, len(grid)), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        nms_top_k(scores, grid_pair_iou(grid) > 0.5, 5)
