"""Reliability of data preparation and of the data a run reads: real-looking videos of mixed
sizes, aspect ratios and frame rates; damaged feature files; truncated videos; annotation
durations that disagree with the video; shard content and counts checked against the manifest."""

import json
import shutil

import numpy as np
import pytest
from helpers import write_toy_shards, write_video
from toy import planted_samples

from data_prep.__main__ import main
from vdi.data.format import ShardError, read_manifest, write_manifest
from vdi.data.loader import ShardStream, make_loader

CLIP = ["--clip", "vdi-test-tiny", "--pretrained", "none"]
COMMON = [*CLIP, "--fps", "2", "--workers", "0"]


def write_vfr_video(path, seconds: float, size=(40, 30), seed: int = 0) -> None:
    """A variable-frame-rate H.264 video: frame gaps alternate between 1/30 s and 1/6 s."""
    import av

    rng = np.random.default_rng(seed)
    container = av.open(str(path), "w", format="matroska")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 1000)
    time_ms, index = 0, 0
    while time_ms < seconds * 1000:
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "rgb24")
        frame.pts, frame.time_base = time_ms, stream.time_base
        for packet in stream.encode(frame):
            container.mux(packet)
        time_ms += 33 if index % 2 else 167
        index += 1
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _jsonl(path, records) -> None:
    path.write_text("\n".join(json.dumps(r) for r in records))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Videos of 16:9, 2.35:1, 4:3 and portrait frames at 25, 29.97, 30 and a variable rate."""
    from fractions import Fraction

    root = tmp_path_factory.mktemp("mixed")
    videos = root / "videos"
    videos.mkdir()
    shapes = {
        "wide": ((64, 36), 25, 3.0),
        "scope": ((94, 40), Fraction(30000, 1001), 2.5),
        "tv": ((48, 36), 30, 3.5),
        "portrait": ((36, 64), 25, 2.0),
    }
    for name, (size, rate, seconds) in shapes.items():
        write_video(videos / f"{name}.mp4", seconds, rate=rate, size=size, seed=len(name))
    write_vfr_video(videos / "vfr.mkv", 3.0)
    annotations = root / "annotations"
    annotations.mkdir()
    records = [
        {"video": name, "moments": [{"start": 0.5, "end": 1.5, "sentence": f"a person opens the {name} door"}]}
        for name in [*shapes, "vfr"]
    ]
    _jsonl(annotations / "train.jsonl", records)
    return root


def test_build_extracts_videos_of_mixed_sizes_rates_and_aspect_ratios_with_the_default_batch(mixed, capsys):
    from data_prep.features import load_features

    code = main(
        [
            "build",
            "--dataset",
            "mine",
            "--annotations",
            str(mixed / "annotations"),
            *COMMON,
            "--videos",
            str(mixed / "videos"),
            "--features",
            str(mixed / "features"),
            "--out",
            str(mixed / "shards"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "5 extracted, 0 failed" in capsys.readouterr().out
    for name, seconds in [("wide", 3.0), ("scope", 2.5), ("tv", 3.5), ("portrait", 2.0), ("vfr", 3.0)]:
        stored = load_features(mixed / "features", name)
        assert stored["duration"] == pytest.approx(seconds, abs=0.2)
        assert stored["features"].shape == (int(np.ceil(stored["duration"] * 2 - 1e-9)), 64)
        assert np.isfinite(stored["features"].astype(np.float32)).all()
    assert read_manifest(mixed / "shards" / "train").num_videos == 5


def test_per_video_preprocessing_gives_the_features_of_one_video_alone(mixed, tmp_path):
    """Batching frames of several videos must not change any video's features (beyond the float
    noise of a different matmul batch size)."""
    import torch

    from data_prep.features import extract_features, load_features
    from vdi.video import find_video

    names = ["wide", "portrait", "scope"]
    videos = [(n, find_video(mixed / "videos", n)) for n in names]
    torch.manual_seed(0)
    extract_features(videos, tmp_path / "together", "vdi-test-tiny", None, fps=2, workers=0, progress=False)
    for name, path in videos:
        torch.manual_seed(0)  # the same random tower
        extract_features([(name, path)], tmp_path / name, "vdi-test-tiny", None, fps=2, workers=0, progress=False)
        alone = load_features(tmp_path / name, name)["features"]
        together = load_features(tmp_path / "together", name)["features"]
        np.testing.assert_allclose(together.astype(np.float32), alone.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_damaged_feature_file_is_extracted_again_on_resume_and_skipped_by_shards(mixed, tmp_path, capsys):
    features = tmp_path / "features"
    shutil.copytree(mixed / "features", features)
    damaged = features / "videos" / "tv.npz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    arguments = ["--dataset", "mine", "--annotations", str(mixed / "annotations")]
    # shards over the damaged file: named, skipped and counted; the other videos are written
    assert main(["shards", *arguments, "--features", str(features), "--out", str(tmp_path / "shards")]) == 0
    out = capsys.readouterr().out
    assert "1 damaged feature files skipped" in out and "tv.npz is damaged" in out
    manifest = read_manifest(tmp_path / "shards" / "train")
    assert manifest.num_videos == 4 and any("damaged feature files skipped" in line for line in manifest.hygiene)
    # a resumed extraction does not count it as done: it extracts it again
    extract = ["features", *arguments, *COMMON, "--videos", str(mixed / "videos")]
    code = main([*extract, "--features", str(features)])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 already done, 1 extracted" in out and "1 damaged feature files extracted again" in out


def test_truncated_video_is_reported_and_its_annotated_duration_checked(tmp_path, capsys):
    import av

    videos, annotations = tmp_path / "videos", tmp_path / "annotations"
    videos.mkdir()
    annotations.mkdir()
    rng = np.random.default_rng(0)
    container = av.open(str(videos / "cut.mp4"), "w", options={"movflags": "faststart"})  # index first
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
    for _ in range(80):  # 10 s
        image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = (videos / "cut.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])  # the first 60%
    write_video(videos / "tiny.mp4", 0.125)  # one frame; its annotation claims 5 s
    _jsonl(
        annotations / "train.jsonl",
        [
            {"video": "cut", "duration": 10.0, "moments": [{"start": 1, "end": 2, "sentence": "a man sits down"}]},
            {"video": "tiny", "duration": 5.0, "moments": [{"start": 0, "end": 0.1, "sentence": "a dog runs"}]},
        ],
    )
    arguments = ["build", "--dataset", "mine", "--annotations", str(annotations), *COMMON, "--videos", str(videos)]
    assert main([*arguments, "--features", str(tmp_path / "f"), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "1 shorter than their container declares" in out
    warnings = [json.loads(line) for line in (tmp_path / "f" / "warnings.jsonl").read_text().splitlines()]
    assert [w["video_id"] for w in warnings] == ["cut"] and "of the 10.00 s its container declares" in warnings[0][
        "warning"
    ]
    assert "2 annotated durations differ from the decoded video's" in out
    assert "tiny: annotated 5.00 s, decoded 0.12 s" in out
    manifest = read_manifest(tmp_path / "s" / "train")
    assert any("the decoded duration was used" in line for line in manifest.hygiene)
    assert manifest.max_duration < 7.0  # the cut video's decoded ~6 s, not the annotated 10 s


def test_failure_and_warning_logs_hold_one_line_per_video_across_reruns(tmp_path, capsys):
    videos, annotations = tmp_path / "videos", tmp_path / "annotations"
    videos.mkdir()
    annotations.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video" * 40)
    write_video(videos / "good.mp4", 2.0)
    _jsonl(
        annotations / "train.jsonl",
        [{"video": v, "moments": [{"start": 0, "end": 1, "sentence": "a cat jumps"}]} for v in ("broken", "good")],
    )
    arguments = ["features", "--dataset", "mine", "--annotations", str(annotations), *COMMON]
    for _ in range(3):
        assert main([*arguments, "--videos", str(videos), "--features", str(tmp_path / "f")]) == 0
    lines = (tmp_path / "f" / "failures.jsonl").read_text().splitlines()
    assert [json.loads(line)["video_id"] for line in lines] == ["broken"]


# -- shards a run reads --------------------------------------------------------------------


@pytest.fixture()
def split(tmp_path):
    write_toy_shards(planted_samples(12, dim=64, num_frames=12, num_patches=16, seed=2), tmp_path / "s", per_shard=4)
    return tmp_path / "s"


def _stream(split_dir, **kwargs):
    options = dict(batch_size=4, num_pre_clips=8, clip_name="vdi-test-tiny", training=False, load_patches=False)
    return ShardStream(split_dir, **(options | kwargs))


def test_flipped_bytes_inside_a_shard_are_caught_by_content_or_skipped_and_counted(split):
    shard = split / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000:2010] = bytes(b ^ 0xFF for b in data[2000:2010])  # same size, a sample's bytes changed
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-000001.tar has content whose sha256 differs"):
        _stream(split)
    with pytest.warns(UserWarning, match="skipping shard"):
        stream = _stream(split, skip_corrupt=True)
    assert len(stream.skipped) == 1 and stream.num_videos == 8
    for _ in range(2):  # re-reading the split does not count the shard again
        list(make_loader(stream, 0))
    assert len(stream.skipped) == 1
    assert _stream(split, verify_content=False).num_videos == 12  # the check can be switched off


def test_manifest_totals_that_disagree_with_its_shards_are_refused_by_runs_and_verify(split, capsys):
    manifest = read_manifest(split)
    manifest.num_videos = 150
    write_manifest(split, manifest)
    with pytest.raises(ShardError, match=r"says 150 videos / \d+ queries, but its shards list 12"):
        _stream(split)
    assert main(["verify", str(split)]) == 1
    assert "says 150 videos" in capsys.readouterr().out


def test_verify_counts_the_videos_and_queries_inside_each_shard(split, capsys):
    manifest = read_manifest(split)
    manifest.shards[0].num_videos += 1
    manifest.num_videos += 1  # totals consistent, one shard's count wrong
    write_manifest(split, manifest)
    assert main(["verify", str(split)]) == 1
    assert "shard-000000.tar: holds 4 videos" in capsys.readouterr().out


def test_an_evaluation_that_scores_fewer_videos_than_listed_is_refused(split):
    import torch

    from vdi.config import load_config
    from vdi.evaluate import check_coverage, rank_batches
    from vdi.injection import build_vdi_model

    cfg = load_config("tiny")
    retriever = build_vdi_model(cfg).retriever
    stream = _stream(split, num_pre_clips=cfg.model.num_pre_clips)
    batches = list(make_loader(stream, 0))
    full = rank_batches(retriever, batches, cfg)["query"]
    counts = check_coverage(full, stream, "test")
    assert counts == {"scored videos": 12.0, "skipped shards": 0.0}
    part = rank_batches(retriever, batches[:1], cfg)["query"]  # as if samples went missing
    with pytest.raises(ShardError, match=r"split test: scored 4 videos / \d+ queries, but the usable shards"):
        check_coverage(part, stream, "test")
    assert torch.equal(full["truth"][: part["truth"].shape[0]], part["truth"])


# -- run folders ------------------------------------------------------------------------------


def test_reusing_a_run_name_with_another_architecture_is_refused_before_anything_is_written(tmp_path):
    from vdi.checkpoint import check_run_folder
    from vdi.config import ConfigError, load_config, pin_paths, to_yaml
    from vdi.train import train

    first = pin_paths(load_config("tiny", [f"run.root={tmp_path}", "run.name=mine"]))
    run_dir = tmp_path / "mine"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(first))
    (run_dir / "best" / "model.pt").write_bytes(b"weights of the earlier run")
    assert check_run_folder(run_dir, first) is False  # the same config resumes
    longer = pin_paths(load_config("tiny", [f"run.root={tmp_path}", "run.name=mine", "optim.max_epochs=40"]))
    assert check_run_folder(run_dir, longer) is False  # training longer is a resume, not another run
    changed = load_config("tiny", [f"run.root={tmp_path}", "run.name=mine", "model.hidden_size=48"])
    before = (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"holds a run made with another config \(model.hidden_size 32 -> 48\)"):
        train(changed)
    assert (run_dir / "config.yaml").read_text() == before  # nothing was overwritten
    with pytest.raises(ConfigError, match=r"run.resume=false would overwrite it"):
        check_run_folder(
            run_dir, pin_paths(load_config("tiny", [f"run.root={tmp_path}", "run.name=mine", "run.resume=false"]))
        )
    restart = pin_paths(load_config("tiny", [f"run.root={tmp_path}", "run.name=mine", "run.restart=true"]))
    assert check_run_folder(run_dir, restart) is True
    from vdi.checkpoint import move_aside

    moved = move_aside(run_dir)
    assert not run_dir.exists() and (moved / "best" / "model.pt").read_bytes() == b"weights of the earlier run"
    assert moved.name.startswith("mine.replaced-")


def test_tracking_prints_a_servers_address_and_keeps_sqlite_artifacts_beside_the_store(tmp_path):
    from vdi.tracking import artifact_location, ui_command

    assert ui_command("http://mlflow.example:5000") == (
        "open http://mlflow.example:5000 in a browser (the tracking server's UI)"
    )
    assert (
        ui_command(f"sqlite:///{tmp_path}/mlflow.db") == f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db"
    )
    assert artifact_location(f"sqlite:///{tmp_path}/mlflow.db") == (tmp_path / "mlartifacts").as_uri()
    assert artifact_location("http://mlflow.example:5000") is None
