"""Grounding diagnostics: query-blind ceiling, constant prior, derangements and gains, the paired
bootstrap, the validation hold-out, the Q^s / Q^d audit and the injection-target diagnostics."""

import pytest
import torch
from helpers import write_toy_shards
from toy import planted_samples

from vdi.data.loader import ShardStream, held_out_keys, make_loader
from vdi.losses import spatial_dynamic_diagnostics, visual_context_diagnostics
from vdi.metrics import (
    candidate_grid,
    constant_cell_prior,
    derangement_across,
    derangement_within,
    grounding_metrics,
    paired_bootstrap,
    query_blind_ceiling,
    sparse_mask,
)

GRID = candidate_grid(sparse_mask(4, [3]))  # every (i, j) with i <= j on 4 clips


def _ranked(moments: list[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    top = torch.tensor(moments, dtype=torch.float64)[:, None, :]
    return top, torch.ones(top.shape[:2], dtype=torch.bool)


def test_ceiling_disjoint_moments_is_one_query_per_video():
    # video 0: three moments with gaps between them; video 1: one moment. At IoU 0.5 no segment
    # hits two of them, so the ceiling is one query per video.
    video = torch.tensor([0, 0, 0, 1])
    durations = torch.tensor([12.0, 12.0, 12.0, 8.0], dtype=torch.float64)
    truth = torch.tensor([[0, 3], [4, 7], [9, 12], [2, 6]], dtype=torch.float64)
    assert query_blind_ceiling(video, durations, truth, GRID, 4, 0.5) == pytest.approx(100 * 2 / 4)
    # adjacent equal moments [0, 4] and [4, 8]: their union [0, 8] has IoU exactly 0.5 with each
    truth = torch.tensor([[0, 4], [4, 8], [8, 12], [2, 6]], dtype=torch.float64)
    assert query_blind_ceiling(video, durations, truth, GRID, 4, 0.5) == pytest.approx(100 * 3 / 4)


def test_ceiling_counts_overlapping_moments_hit_by_one_segment():
    # [0, 10] and [1, 10] overlap at IoU 0.9: one segment hits both at 0.7; [20, 30] stays apart.
    video = torch.tensor([0, 0, 0])
    durations = torch.full((3,), 40.0, dtype=torch.float64)
    truth = torch.tensor([[0, 10], [1, 10], [20, 30]], dtype=torch.float64)
    assert query_blind_ceiling(video, durations, truth, GRID, 4, 0.7) == pytest.approx(100 * 2 / 3)
    # adjacent [0, 10] and [10, 20]: their union has IoU 0.5 with each, so at 0.3 one segment hits both
    truth = torch.tensor([[0, 10], [10, 20], [30, 40]], dtype=torch.float64)
    assert query_blind_ceiling(video, durations, truth, GRID, 4, 0.3) == pytest.approx(100 * 2 / 3)
    assert query_blind_ceiling(video, durations, truth, GRID, 4, 0.7) == pytest.approx(100 * 1 / 3)


def test_constant_prior_finds_the_best_cell():
    durations = torch.full((3,), 8.0, dtype=torch.float64)
    # two queries on the first half, one on the last quarter: at 0.7 only cell (0, 1) = [0, 4) hits two
    truth = torch.tensor([[0, 4], [0, 4], [6, 8]], dtype=torch.float64)
    value, cell = constant_cell_prior(durations, truth, GRID, 4, 0.7)
    assert value == pytest.approx(100 * 2 / 3) and cell == (0, 1)


def test_derangement_within_moves_every_query_of_multi_query_videos():
    video = torch.tensor([3, 3, 3, 7, 9, 9, 3])
    partner, used = derangement_within(video)
    assert used.tolist() == [True, True, True, False, True, True, True]
    for query in range(len(video)):
        if used[query]:
            assert partner[query] != query and video[partner[query]] == video[query]
    # deterministic, and a permutation of each video's queries
    assert torch.equal(partner, derangement_within(video)[0])
    assert sorted(partner[video == 3].tolist()) == [0, 1, 2, 6]


def test_derangement_across_takes_another_video():
    video = torch.tensor([0, 0, 1, 2, 2, 2])
    partner, used = derangement_across(video)
    assert used.all() and (video[partner] != video).all()
    assert not derangement_across(torch.tensor([5, 5]))[1].any()


def test_gain_of_a_perfect_and_a_query_blind_predictor():
    video = torch.tensor([0, 0, 1, 1, 2])
    durations = torch.full((5,), 8.0, dtype=torch.float64)
    truth = torch.tensor([[0, 2], [4, 8], [0, 4], [4, 8], [2, 6]], dtype=torch.float64)
    perfect = _ranked([tuple(t) for t in truth.tolist()])
    results = grounding_metrics(*perfect, truth, video, durations, GRID, 4, [0.5])
    assert results["gain R1@0.5"] == pytest.approx(100.0)
    assert results["single-query videos"] == 1 and results["videos"] == 3 and results["queries"] == 5
    blind = _ranked([(0, 2), (0, 2), (0, 4), (0, 4), (2, 6)])  # the same moment for every query of a video
    results = grounding_metrics(*blind, truth, video, durations, GRID, 4, [0.5])
    assert results["gain R1@0.5"] == pytest.approx(0.0)
    # video 1's adjacent [0, 4] and [4, 8] are both hit by [0, 8] (IoU 0.5): 1 + 2 + 1 of 5
    assert results["ceiling R1@0.5"] == pytest.approx(100 * 4 / 5)


def test_paired_bootstrap_finds_a_planted_difference_and_not_a_null_one():
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(5, 400, generator=generator, dtype=torch.float64) * 20
    mean, low, high = paired_bootstrap(noise + 6.0)
    assert low > 0 and low < mean < high and low < 6.0 < high
    mean, low, high = paired_bootstrap(noise - noise.mean())
    assert low < 0 < high
    # seeds only ([seeds, 1]): the interval is the spread of the per-seed differences
    mean, low, high = paired_bootstrap(torch.tensor([[1.3], [-0.5], [8.1]]))
    assert mean == pytest.approx(8.9 / 3) and low < 0 < high
    with pytest.raises(ValueError):
        paired_bootstrap(torch.zeros(0, 3))


def test_held_out_keys_are_seeded_and_the_two_parts_partition_the_split(tmp_path):
    assert held_out_keys(50, 0.2, 0) == held_out_keys(50, 0.2, 0) != held_out_keys(50, 0.2, 1)
    assert len(held_out_keys(50, 0.2, 0)) == 10
    write_toy_shards(planted_samples(20, dim=64, num_frames=12, seed=2), tmp_path / "train", per_shard=6)
    options = dict(batch_size=4, num_pre_clips=8, clip_name="vdi-test-tiny", load_patches=False, hold_out=(0.25, 3))
    held = ShardStream(tmp_path / "train", training=False, hold_out_part="held", **options)
    rest = ShardStream(tmp_path / "train", training=False, hold_out_part="rest", **options)
    held_ids = {v for batch in make_loader(held, 0) for v in batch.video_ids}
    rest_ids = {v for batch in make_loader(rest, 0) for v in batch.video_ids}
    assert len(held_ids) == held.num_videos == 5 and len(rest_ids) == rest.num_videos == 15
    assert not held_ids & rest_ids
    training = ShardStream(tmp_path / "train", training=True, hold_out_part="rest", **options)
    seen = {v for batch in make_loader(training, 0) for v in batch.video_ids}
    assert seen <= rest_ids and seen


def test_injection_diagnostics_see_a_collapsed_target():
    generator = torch.Generator().manual_seed(0)
    valid = torch.ones(8, dtype=torch.bool)
    varied = torch.randn(8, 16, generator=generator)
    collapsed = varied.mean(dim=0, keepdim=True).expand(8, -1) + 1e-4 * torch.randn(8, 16, generator=generator)
    live = visual_context_diagnostics(varied + 0.1 * torch.randn(8, 16, generator=generator), varied, valid)
    dead = visual_context_diagnostics(collapsed, collapsed, valid)
    assert live["vc_target_spread"] > 0.5 and dead["vc_target_spread"] < 1e-3
    assert live["vc_unexplained"] < 0.1
    mean_predictor = visual_context_diagnostics(varied.mean(0, keepdim=True).expand(8, -1), varied, valid)
    assert mean_predictor["vc_unexplained"] == pytest.approx(7 / 8, rel=1e-4)  # var() is the unbiased estimate
    videos = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    same = spatial_dynamic_diagnostics(collapsed, varied, valid, videos)
    apart = spatial_dynamic_diagnostics(varied, varied, valid, videos)
    assert same["sd_target_cross_video_cos"] > 0.999 and same["sd_target_cross_video_cos_std"] < 1e-3
    assert apart["sd_target_cross_video_cos"] < 0.5


def test_audit_counts_the_split_rule_on_known_sentences():
    from data_prep.audit import audit_queries, contains_phrase
    from vdi.text import load_spacy

    nlp = load_spacy("en_core_web_sm")
    sentences = [
        "a person opens the door.",
        "the small red circle moves to the right",
        "a green triangle jumps",
        "the kitchen",
    ]
    phrases = [
        ("a person", "opens"),
        ("the small red circle", "moves to the right"),
        ("a green triangle", "jumps"),
        ("the kitchen", ""),
    ]
    report = audit_queries("toy", sentences, nlp, phrases)
    assert report.queries == 4
    assert report.empty_dynamic == 1  # "the kitchen" is one noun chunk
    # "moves to the right": the rule keeps "the right" as a noun chunk, so Q^d is "moves to"
    assert report.action_in_dynamic == 3 and report.intended == 3
    assert report.no_verb_dynamic == 1
    assert report.examples[0]["dynamic"] == "moves to"
    assert contains_phrase("moves to the right .", "moves to the right") and not contains_phrase(
        "moves to", "moves to the right"
    )


def test_ceiling_on_the_real_charades_sta_test_annotations(annotations_dir):
    from data_prep.annotations import read_charades_sta

    read = read_charades_sta(annotations_dir / "charades_sta" / "charades_sta_test.txt", verbose=False)
    keys = {record.video_id: index for index, record in enumerate(read.records)}
    video, durations, truth = [], [], []
    for record in read.records:
        for moment in record.moments:
            video.append(keys[record.video_id])
            # Charades-STA's text files carry no durations: the last annotated end stands in
            durations.append(record.duration or max(m.end for m in record.moments))
            truth.append((moment.start, moment.end))
    video = torch.tensor(video)
    durations = torch.tensor(durations, dtype=torch.float64)
    truth = torch.tensor(truth, dtype=torch.float64)
    grid = candidate_grid(sparse_mask(16, [15]))
    ceilings = [query_blind_ceiling(video, durations, truth, grid, 16, t) for t in (0.3, 0.5, 0.7)]
    floor = 100 * len(read.records) / len(truth)  # each video's own moment hits at least one query
    assert len(truth) == 3720 and floor <= ceilings[2] <= ceilings[1] <= ceilings[0] <= 100
    # Charades-STA moments of one video overlap often: the ceiling lies well above one query per video
    assert ceilings[1] > floor + 5
    prior, _ = constant_cell_prior(durations, truth, grid, 16, 0.5)
    assert 0 < prior < ceilings[1]


def test_gradient_probe_leaves_training_bitwise_unchanged():
    """The sampled text-tower gradient probe measures without touching the optimiser's step."""
    from vdi.batch import collate
    from vdi.config import load_config
    from vdi.encoders import Tokenizer
    from vdi.injection import build_vdi_model, text_gradient_norms

    cfg = load_config("tiny")
    batch = collate(planted_samples(4, seed=3), Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)

    def train(probe: bool) -> tuple[dict, list[dict]]:
        torch.manual_seed(0)
        model = build_vdi_model(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        norms = []
        for _ in range(3):
            terms = model(batch)
            if probe:
                norms.append(text_gradient_norms(model, terms))
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
        return model.state_dict(), norms

    plain, _ = train(False)
    probed, norms = train(True)
    assert all(torch.equal(plain[key], probed[key]) for key in plain)
    assert set(norms[0]) == {
        "grad_text_from_retrieval",
        "grad_text_from_visual_context",
        "grad_text_from_spatial_dynamic",
    }
    assert all(float(value) > 0 for value in norms[0].values())
