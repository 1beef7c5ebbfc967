"""The synthetic dynamics world: determinism, OOD protocol, queries, pre-training corpus, build."""

import itertools
import json
import re

import numpy as np
import pytest
import torch

from data_prep.synthetic.world import (
    ACTION_PHRASES,
    COLOURS,
    SHAPES,
    render_frames,
    sample_video,
    static_caption,
    video_queries,
)

TRAIN_COLOURS = [c for c in COLOURS if c not in ("purple", "orange")]


def test_same_seed_same_world_pixels_and_annotations():
    first = [sample_video(3, i, TRAIN_COLOURS, prefix="train") for i in range(4)]
    again = [sample_video(3, i, TRAIN_COLOURS, prefix="train") for i in range(4)]
    other = [sample_video(4, i, TRAIN_COLOURS, prefix="train") for i in range(4)]
    assert [video_queries(s) for s in first] == [video_queries(s) for s in again]
    assert all(np.array_equal(render_frames(a), render_frames(b)) for a, b in zip(first[:2], again[:2]))
    assert [video_queries(s) for s in first] != [video_queries(s) for s in other]


def test_video_files_decode_to_exactly_the_rendered_frames(tmp_path):
    """Lossless H.264: decoding gives the rendered frames after yuv420p conversion, bit for bit, so
    the world's pixels never depend on the encoder's (load-dependent) decisions."""
    import av

    from data_prep.synthetic.world import write_video

    frames = render_frames(sample_video(0, 27, TRAIN_COLOURS, prefix="train"))
    write_video(tmp_path / "video.mp4", frames)
    with av.open(str(tmp_path / "video.mp4")) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    expected = np.stack(
        [
            av.VideoFrame.from_ndarray(frame, format="rgb24")
            .reformat(format="yuv420p")
            .reformat(format="rgb24")
            .to_ndarray()
            for frame in frames
        ]
    )
    assert decoded.shape == frames.shape and np.array_equal(decoded, expected)


def test_events_are_timed_and_distractors_stay():
    specs = [sample_video(0, i, TRAIN_COLOURS, prefix="train") for i in range(200)]
    for spec in specs:
        events = sorted(spec.events, key=lambda e: e.start)
        assert all(a.end <= b.start for a, b in itertools.pairwise(events))  # never overlapping
        assert all(0 < e.start < e.end <= spec.duration for e in events)
        assert 8 <= spec.duration <= 20
    assert sum(len(s.events) >= 2 for s in specs) / len(specs) > 0.9
    assert sum(len(s.objects) >= 2 for s in specs) / len(specs) > 0.8
    # a static description alone is often ambiguous: the same object acts more than once
    repeated = sum(len({e.obj for e in s.events}) < len(s.events) for s in specs)
    assert repeated / len(specs) > 0.3
    actions = {e.action for s in specs for e in s.events}
    assert actions == set(ACTION_PHRASES)
    assert {o.shape for s in specs for o in s.objects} == set(SHAPES)


def test_every_query_has_one_answer_and_needs_its_words():
    """World v6: each (object, action) happens once per video, so no query has two answers (v5:
    7.6% of training queries did); the actors have distinct colours; and the action words alone
    single out the moment for only about half of the queries (v5: 75%), in the IID and the OOD
    split alike (v5's OOD videos had 1.2 acting objects, so their novel colour was rarely needed)."""
    from data_prep.synthetic.world import query_identifiability

    for split, colours, acting in (("train", TRAIN_COLOURS, None), ("ood", list(COLOURS), ["purple", "orange"])):
        specs = [sample_video(0, i, colours, prefix=split, acting_colours=acting) for i in range(300)]
        for spec in specs:
            assert len({o.colour for o in spec.objects}) == len(spec.objects)
            pairs = [(e.obj, e.action) for e in spec.events]
            assert len(set(pairs)) == len(pairs)
        share = query_identifiability(specs)
        assert share["ambiguous"] == 0.0
        assert 35.0 <= share["action alone"] <= 65.0, share
        assert share["colour alone"] + share["both needed"] >= 35.0, share
        assert share["acting objects per video"] >= 1.9, share
    # the measure itself: two events of one object doing one action are ambiguous
    twice = sample_video(0, 0, TRAIN_COLOURS, prefix="train")
    twice.events = [twice.events[0], type(twice.events[0])(twice.events[0].obj, twice.events[0].action, 9.0, 10.0)]
    assert query_identifiability([twice])["ambiguous"] == 100.0


def test_every_action_changes_its_object_visibly():
    """No invisible moment (v4's "spin" ended where it started, "still" only stopped a 1 px/s drift,
    and moves at the frame's edge were clipped): each event changes its object by half a position
    cell, a 1.25 size ratio or half its opacity, at its end or, for a jump, at its peak."""
    from data_prep.synthetic.world import event_change

    specs = [sample_video(0, i, TRAIN_COLOURS, prefix="train") for i in range(150)]
    changes = [(e.action, event_change(s, e)) for s in specs for e in s.events]
    assert all(change.visible_at_peak for _, change in changes)
    assert all(change.visible_at_end for action, change in changes if action != "jump")
    moves = [change.shift for action, change in changes if action in ("left", "right", "up", "down")]
    assert min(moves) >= 23.9  # never clipped by the frame's edge


def test_ood_words_absent_from_training_queries_but_in_pretraining_captions():
    train = [q for i in range(300) for q in video_queries(sample_video(0, i, TRAIN_COLOURS, prefix="train"))]
    ood = [
        q
        for i in range(100)
        for q in video_queries(sample_video(0, i, list(COLOURS), prefix="ood", acting_colours=["purple", "orange"]))
    ]
    words = lambda text: set(re.findall(r"[a-z]+", text))  # noqa: E731
    train_words = set().union(*(words(q[2]) for q in train))
    assert not {"purple", "orange"} & train_words
    assert all({"purple", "orange"} & words(q[2]) for q in ood)  # every OOD query names a novel colour
    # and the novel colours are what tells the two actors of an OOD video apart
    specs = [sample_video(0, i, list(COLOURS), prefix="ood", acting_colours=["purple", "orange"]) for i in range(100)]
    assert all({s.objects[0].colour, s.objects[1].colour} == {"purple", "orange"} for s in specs)
    assert all(s.objects[e.obj].colour in ("purple", "orange") for s in specs for e in s.events)
    from data_prep.synthetic.pretrain import sample_group

    rng = np.random.default_rng(0)
    captions = [item[1] for _ in range(60) for item in sample_group(rng, 8)]
    caption_words = set().union(*(words(c) for c in captions))
    assert {"purple", "orange"} <= caption_words
    action_words = set().union(*(words(p) for phrases in ACTION_PHRASES.values() for p in phrases))
    # captions name where objects are ("on the left"): still-image facts, never a change
    shared = {"up", "to", "the", "and", "into", "of", "out", "view", "around", "left", "right"}
    assert not (action_words - shared) & caption_words


def test_queries_split_into_static_and_dynamic():
    from vdi.text import QueryParser

    queries = [q[2] for i in range(100) for q in video_queries(sample_video(1, i, TRAIN_COLOURS, prefix="train"))]
    parsed = QueryParser().parse(queries)
    both = sum(p.has_static and p.has_dynamic for p in parsed) / len(parsed)
    assert both >= 0.99  # the phrasings avoid words en_core_web_sm reads as nouns ("leaps", "shrinks")
    with_colour = [p for p in parsed if p.has_static and any(c in p.static for c in COLOURS)]
    assert len(with_colour) / len(parsed) >= 0.99  # the static query keeps the object words


def test_static_caption_has_no_action():
    from data_prep.synthetic.world import ObjectSpec

    rng = np.random.default_rng(0)
    objects = [ObjectSpec("star", "red", "small", 10, 10, (0, 0)), ObjectSpec("ring", "blue", "big", 60, 32, (0, 0))]
    caption = static_caption(objects, "forest", rng)
    assert caption.startswith("a small red star at the top left and a big blue")
    assert caption.endswith("on the right in the forest")


def test_pretrained_checkpoint_loads_as_a_local_clip(tmp_path):
    from data_prep.synthetic.pretrain import CLIP_NAME, pretrain
    from vdi.encoders import create_clip

    model, result = pretrain(steps=2, warmup_steps=2, batch_size=16, warmup_batch_size=8, progress=False)
    assert all(0 <= a <= 100 for a in (result.colour_accuracy, result.shape_accuracy, result.position_accuracy))
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = create_clip(CLIP_NAME, str(path))
    torch.testing.assert_close(loaded.visual.proj, model.visual.proj)


CLIP_FILE = "vdi-synthetic-vit.pt"


@pytest.mark.integration
def test_one_command_builds_a_small_world_and_caches_it(tmp_path, capsys, monkeypatch):
    from data_prep.__main__ import main
    from vdi.data.format import read_manifest

    args = [
        "synthetic",
        "--out",
        str(tmp_path / "world"),
        "--videos",
        "20",
        "--pretrain-steps",
        "3",
        "--pretrain-warmup-steps",
        "3",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "zero-shot on held-out frames" in out and "stage times" in out
    for split, expected in (("train", 14), ("test", 3), ("ood", 3)):
        manifest = read_manifest(tmp_path / "world" / "shards" / split)
        assert manifest.num_videos == expected and manifest.encoder.name == "vdi-synthetic-vit"
        assert manifest.encoder.weights.startswith("sha256:") and manifest.num_patches == 64
    lines = (tmp_path / "world" / "annotations" / "train.txt").read_text().splitlines()
    assert all(re.match(r"^train\d{5} \d+\.\d{2} \d+\.\d{2}##.+", line) for line in lines)
    world = json.loads((tmp_path / "world" / "world.json").read_text())
    assert world["ood_colours"] == ["purple", "orange"]
    assert main(args) == 0  # second run: every stage cached
    out = capsys.readouterr().out
    assert "videos: cached" in out and "features: cached" in out and "shards: cached" in out
    # the main job brings a world built by an older generator up to date, with the world's own settings
    import data_prep.synthetic.build as world_build
    from vdi.config import load_config
    from vdi.launch import ensure_synthetic_world

    world_dir = tmp_path / "world"
    overrides = [f"data.shard_root={world_dir / 'shards'}", f"model.clip.pretrained={world_dir / 'clip' / CLIP_FILE}"]
    cfg = load_config("synthetic", overrides)
    ensure_synthetic_world(cfg)
    assert "videos: cached" in capsys.readouterr().out  # current: nothing redone
    monkeypatch.setattr(world_build, "VIDEOS_VERSION", world_build.VIDEOS_VERSION + 1)
    ensure_synthetic_world(cfg)
    out = capsys.readouterr().out
    assert "videos: 23 rendered" in out and "features: cached" not in out and "shards: cached" not in out
    assert read_manifest(tmp_path / "world" / "shards" / "train").num_videos == 14


def test_a_second_build_copies_the_tiny_clip_from_the_cache_and_a_damaged_entry_is_rebuilt(tmp_path, capsys):
    """The per-user cache holds the same bytes a pre-training makes (it is seeded); a cache entry
    whose checkpoint lost its recorded checksum is ignored, pre-trained again and replaced."""
    from data_prep.synthetic.build import build

    def world(name):
        build(
            tmp_path / name,
            total_videos=8,
            pretrain_steps=2,
            pretrain_warmup_steps=2,
            workers=1,
            cache_dir=tmp_path / "cache",
        )
        return (tmp_path / name / "clip" / CLIP_FILE).read_bytes(), capsys.readouterr().out

    first, out = world("a")
    assert "copied from the cache" not in out
    (entry,) = (tmp_path / "cache" / "synthetic-clip").iterdir()
    assert (entry / CLIP_FILE).read_bytes() == first
    second, out = world("b")
    assert "tiny CLIP: copied from the cache" in out and second == first
    assert (
        json.loads((tmp_path / "b" / "world.json").read_text())["clip"]["zero_shot_colour"]
        == json.loads((tmp_path / "a" / "world.json").read_text())["clip"]["zero_shot_colour"]
    )
    damaged = bytearray(first)
    damaged[-1] ^= 0xFF
    (entry / CLIP_FILE).write_bytes(bytes(damaged))
    third, out = world("c")
    assert "ignoring the damaged entry" in out and "copied from the cache" not in out
    assert third == first and (entry / CLIP_FILE).read_bytes() == first  # pre-trained again, entry repaired


@pytest.mark.integration
def test_main_job_builds_a_missing_world_then_trains(tmp_path):
    """`python -m vdi.launch --local` on a (small) synthetic world that does not exist yet."""
    import subprocess
    import sys
    from pathlib import Path

    from data_prep.synthetic.build import build

    project = Path(__file__).resolve().parents[1]
    world = tmp_path / "world"
    # the launcher builds the default-sized world; build a small one first with the same code so
    # this test stays short, then check the launcher trains, evaluates and reports on it
    build(world, total_videos=24, pretrain_steps=3, pretrain_warmup_steps=3, workers=1, verbose=False)
    overrides = [
        f"data.shard_root={world / 'shards'}",
        f"model.clip.pretrained={world / 'clip' / 'vdi-synthetic-vit.pt'}",
        f"run.root={tmp_path / 'runs'}",
        "optim.max_epochs=2",
        "optim.batch_size=4",
        f"dist.extensions_dir={project / '.cache/torch_extensions'}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "vdi.launch", "--local", *overrides],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "best epoch" in output and "ood" in output and "mlflow ui --backend-store-uri" in output
    assert (tmp_path / "runs" / "synthetic" / "best" / "model.pt").exists()


def test_the_papers_split_rule_gives_the_intended_split_on_the_worlds_phrasings():
    """Object phrase entirely in Q^s and action phrase entirely in Q^d for >= 98% of the world's
    queries (the issue's target; measured 100% over these 1,000+ sentences), with the paper's
    spaCy rule unchanged: the world's phrasings were chosen for it."""
    from data_prep.audit import audit_queries
    from data_prep.synthetic.world import video_query_parts
    from vdi.text import load_spacy

    nlp = load_spacy("en_core_web_sm")
    for split, colours, acting in (("train", TRAIN_COLOURS, None), ("ood", list(COLOURS), ["purple", "orange"])):
        parts = [
            part
            for index in range(200)
            for part in video_query_parts(sample_video(3, index, colours, prefix=split, acting_colours=acting))
        ]
        report = audit_queries(split, [p[0] for p in parts], nlp, [(p[1], p[2]) for p in parts])
        assert report.share(report.intended) >= 98.0, report.lines()
        assert report.empty_static == 0 and report.empty_dynamic == 0
