"""Predictor and python -m vdi.predict: ranked moments from a video and sentences, long-video
windows, clean errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RETRIEVER, write_video

from vdi.checkpoint import save_inference_checkpoint
from vdi.config import load_config, to_dict
from vdi.encoders import create_clip
from vdi.predict import Predictor
from vdi.text import QueryError

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny retriever trained on planted features (tests/toy.py), saved like training saves it."""
    from toy import planted_samples

    from vdi.batch import collate
    from vdi.encoders import Tokenizer
    from vdi.injection import build_vdi_model

    folder = tmp_path_factory.mktemp("ckpt")
    clip_path = folder / "clip.pt"
    torch.manual_seed(0)
    clip = create_clip("vdi-test-tiny", None)
    torch.save(clip.state_dict(), clip_path)
    cfg = load_config("tiny", [f"model.clip.pretrained={clip_path}", *TINY_RETRIEVER])
    model = build_vdi_model(cfg, clip)
    batch = collate(
        planted_samples(8, num_frames=16, seed=PLANT_SEED), Tokenizer("vdi-test-tiny"), 16, load_patches=False
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(150):
        terms = model(batch)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
    path = folder / "model.pt"
    from vdi.data.format import weights_identity

    metadata = {"feature_fps": 2.0, "max_train_duration": 8.0, "clip_weights": weights_identity(str(clip_path))}
    save_inference_checkpoint(path, model.retriever.state_dict(), to_dict(cfg), {}, 1, metadata)
    return path


PLANT_SEED = 4


def test_predict_ranks_moments_after_nms(checkpoint, tmp_path):
    write_video(tmp_path / "v.mp4", 6.0, rate=8, size=(40, 32))
    predictor = Predictor.from_checkpoint(checkpoint)
    video = predictor.encode_video(tmp_path / "v.mp4")
    assert video.features.shape == (12, 64) and video.duration == pytest.approx(6.0)
    assert video.windows == [(0.0, pytest.approx(6.0))]
    results = predictor.predict(video, ["a person opens the door", "the man walks away"], top_k=3)
    assert len(results) == 2 and all(1 <= len(r) <= 3 for r in results)
    for moments in results:
        scores = [m.score for m in moments]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= m.start < m.end <= 6.0 + 1e-6 for m in moments)
    # a batch of queries equals the queries one by one (the text side is batched, the video encoded once)
    single = predictor.predict(video, ["the man walks away"], top_k=3)[0]
    assert [(m.start, m.end) for m in single] == [(m.start, m.end) for m in results[1]]
    assert single[0].score == pytest.approx(results[1][0].score, abs=1e-5)
    with pytest.raises(QueryError, match="query 1 is empty"):
        predictor.predict(video, ["fine", "   "])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_long_video_windows_find_a_planted_moment(checkpoint, precision):
    """A 40 s video (5x the 8 s training span) with one planted "opens the door" moment at 26-30 s:
    the windows are cut as documented and the top moment lands on it, in absolute seconds (also
    with the text tower in bf16)."""
    predictor = Predictor.from_checkpoint(checkpoint, precision=precision)
    assert next(predictor.retriever.text_encoder.parameters()).dtype == getattr(
        torch, {"fp32": "float32"}.get(precision, "bfloat16")
    )
    assert predictor.window_bounds(40.0)[:3] == [(0.0, 8.0), (4.0, 12.0), (8.0, 16.0)]
    assert predictor.window_bounds(40.0)[-1] == (32.0, 40.0)
    assert predictor.window_bounds(8.2) == [(0.0, 8.2)]  # within 5% of the span: one window
    directions = np.random.default_rng(PLANT_SEED).standard_normal((4, 64))  # toy.py's action directions
    features = np.random.default_rng(1).standard_normal((80, 64)) * 0.5  # 40 s at 2 fps
    features[52:60] += 3.0 * directions[0]  # ACTIONS[0] = "opens the door", 26 s .. 30 s
    video = predictor.encode_video(torch.tensor(features, dtype=torch.float32))
    assert len(video.windows) == 9
    top = predictor.predict(video, ["a person opens the door"], top_k=1)[0][0]
    iou = max(0.0, min(top.end, 30.0) - max(top.start, 26.0)) / (max(top.end, 30.0) - min(top.start, 26.0))
    assert iou >= 0.5, top


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "vdi.predict", *args], capture_output=True, text=True, cwd=PROJECT, timeout=300
    )


def test_cli_table_json_and_errors(checkpoint, tmp_path):
    write_video(tmp_path / "v.mp4", 5.0, rate=8, size=(40, 32))
    result = run_cli("--checkpoint", str(checkpoint), str(tmp_path / "v.mp4"), "a man jumps", "--json", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.splitlines()[0])
    assert line["query"] == "a man jumps" and len(line["moments"]) <= 2 and line["truncated"] is False
    long = " ".join(["a man jumps over the red box"] * 300)  # 2,100 words: far past 77 tokens
    cut = run_cli("--checkpoint", str(checkpoint), str(tmp_path / "v.mp4"), long, "a man jumps", "--json")
    assert cut.returncode == 0, cut.stderr
    assert [json.loads(x)["truncated"] for x in cut.stdout.splitlines()] == [True, False]
    assert "sentence 1 is longer than the text tower's context and was truncated" in cut.stderr
    queries = tmp_path / "q.txt"
    queries.write_text("a man jumps\nthe woman sits\n")
    table = run_cli("--checkpoint", str(checkpoint), str(tmp_path / "v.mp4"), "--queries", str(queries))
    assert table.returncode == 0 and "the woman sits" in table.stdout and "rank" in table.stdout
    (tmp_path / "broken.mp4").write_bytes(b"nope" * 100)
    (tmp_path / "old.pt").write_bytes(b"not a checkpoint")
    cases = [
        ((str(checkpoint), str(tmp_path / "missing.mp4"), "a man jumps"), "video"),
        ((str(checkpoint), str(tmp_path / "broken.mp4"), "a man jumps"), "cannot open"),
        ((str(checkpoint), str(tmp_path / "v.mp4"), "  "), "sentence 1 is empty"),
        (
            (str(tmp_path / "old.pt"), str(tmp_path / "v.mp4"), "a man jumps"),
            "not a readable vdi checkpoint (UnpicklingError",
        ),
        ((str(tmp_path / "none.pt"), str(tmp_path / "v.mp4"), "a man jumps"), "checkpoint"),
    ]
    other_clip = tmp_path / "other_clip.pt"
    torch.manual_seed(1)
    torch.save(create_clip("vdi-test-tiny", None).state_dict(), other_clip)
    video = str(tmp_path / "v.mp4")
    cases += [
        ((str(checkpoint), video, "a man jumps", "--clip-pretrained", str(tmp_path / "no.pt")), "--clip-pretrained"),
        ((str(checkpoint), video, "a man jumps", "--clip-pretrained", str(other_clip)), "not the ones this model"),
        ((str(checkpoint), video, "a man jumps", "--top-k", "0"), "--top-k"),
    ]
    for (ckpt, *arguments), message in cases:
        failed = run_cli("--checkpoint", ckpt, *arguments)
        assert failed.returncode == 2, failed.stderr
        assert failed.stderr.startswith("error: ") and message in failed.stderr
        assert "Traceback" not in failed.stderr


def test_single_window_ranking_equals_evaluation(checkpoint):
    """One window: the Predictor's NMS ranking is the evaluation's (vdi.metrics.rank_moments), also
    for candidate pairs whose IoU is exactly the NMS threshold."""
    from vdi.metrics import rank_moments

    predictor = Predictor.from_checkpoint(checkpoint)
    queries = ["a person opens the door", "the man walks away", "a woman sits down", "the child jumps up"]
    for seed, duration in enumerate([5.9, 6.1, 7.3, 4.7, 5.3]):  # durations whose seconds IoUs round
        features = torch.tensor(np.random.default_rng(seed).standard_normal((13, 64)), dtype=torch.float32)
        video = predictor.encode_video(features, duration)  # within the 8 s span: one window
        results = predictor.predict(video, queries, top_k=5)
        with torch.no_grad():
            sentences = predictor.retriever.embed_queries(predictor.tokenizer(queries).tokens)
            zeros = torch.zeros(4, dtype=torch.long)
            fused = predictor.retriever.score(video.maps[0], sentences, zeros, predictor.cfg.eval.contrastive_power)
        ranked = rank_moments(
            fused, predictor.grid, predictor.cfg.model.num_clips, torch.full((4,), video.duration), 5, 0.5
        )
        for row, moments in enumerate(results):
            expected = ranked.moments[row][ranked.valid[row]].tolist()
            flat = [bound for pair in expected for bound in pair]
            assert [bound for m in moments for bound in (m.start, m.end)] == pytest.approx(flat, abs=1e-3)


def _predictions(path, video_path, clip_pretrained=None):
    predictor = Predictor.from_checkpoint(path, clip_pretrained=clip_pretrained)
    video = predictor.encode_video(video_path)
    results = predictor.predict(video, ["a person opens the door", "the man walks away"], top_k=3)
    return [[(m.start, m.end, m.score) for m in moments] for moments in results]


def test_a_format_1_checkpoint_still_loads_and_predicts_the_same(checkpoint, tmp_path):
    """tests/fixtures/checkpoint_format1.json is a checkpoint written by vdi before the inference /
    training split (format 1: the whole training config), less its weights; with this fixture's
    weights it must predict exactly what the same weights in today's format predict."""
    write_video(tmp_path / "v.mp4", 6.0, rate=8, size=(40, 32))
    today = torch.load(checkpoint, weights_only=True)
    assert today["format_version"] == 2 and "config" not in today and set(today["evaluation"]) == {"data", "eval"}
    legacy = json.loads((PROJECT / "tests" / "fixtures" / "checkpoint_format1.json").read_text())
    assert legacy["format_version"] == 1 and {"track", "optim", "run"} <= set(legacy["config"])
    legacy |= {"retriever": today["retriever"], "metadata": today["metadata"]}
    legacy_path = tmp_path / "format1.pt"
    torch.save(legacy, legacy_path)
    clip = today["model"]["clip"]["pretrained"]
    assert _predictions(legacy_path, tmp_path / "v.mp4", clip) == _predictions(checkpoint, tmp_path / "v.mp4")


def test_renamed_data_and_eval_keys_do_not_break_a_saved_model(checkpoint, tmp_path):
    payload = torch.load(checkpoint, weights_only=True)
    payload["evaluation"]["data"]["shard_folder"] = "renamed since"
    payload["evaluation"]["eval"]["old_setting"] = 1
    path = tmp_path / "renamed.pt"
    torch.save(payload, path)
    with pytest.warns(UserWarning) as caught:
        predictor = Predictor.from_checkpoint(path)
    messages = " ".join(str(w.message) for w in caught)
    assert "data keys ['shard_folder'] are unknown" in messages and "eval keys ['old_setting']" in messages
    assert predictor.cfg.eval.nms_threshold == payload["inference"]["nms_threshold"]


@pytest.mark.parametrize("nms_threshold", [0.5, 0.3, 0.7])
def test_evaluation_and_prediction_rank_every_sentence_alike(checkpoint, nms_threshold):
    """The same video and sentences, ranked by evaluation (vdi.evaluate.rank_batches: the grid in
    clip units) and by the Predictor (one window, in seconds), give the same moments in the same
    order: both score with MomentRetriever.score and rank with vdi.metrics.rank_segments."""
    from dataclasses import replace

    from toy import planted_samples

    from vdi.batch import collate
    from vdi.evaluate import rank_batches

    predictor = Predictor.from_checkpoint(checkpoint)
    predictor.cfg.eval.nms_threshold = nms_threshold
    samples = planted_samples(6, num_frames=16, seed=PLANT_SEED + 1)
    queries = [query for sample in samples for query in sample.queries]
    k = max(predictor.cfg.eval.recall_ks)
    compared = 0
    for sample, duration in zip(samples, [7.6, 8.0, 8.3, 7.9, 8.2, 7.75]):  # one window, all 16 frames
        video_sample = replace(sample, duration=duration, queries=queries, moments=np.zeros((len(queries), 2)))
        batch = collate([video_sample], predictor.tokenizer, predictor.cfg.model.num_pre_clips, load_patches=False)
        ranked = rank_batches(predictor.retriever, [batch], predictor.cfg)["query"]
        video = predictor.encode_video(torch.as_tensor(sample.features), duration)
        assert len(video.windows) == 1
        predicted = predictor.predict(video, [query.query for query in queries], top_k=k)
        for row, moments in enumerate(predicted):
            expected = [(round(s, 3), round(e, 3)) for s, e in ranked["moments"][row][ranked["valid"][row]].tolist()]
            assert [(m.start, m.end) for m in moments] == expected, (sample.video_id, queries[row].query)
            compared += 1
    assert compared == 6 * len(queries)
