"""python -m data_prep end to end on tiny generated videos: features, shards, manifest, verify."""

import json

import numpy as np
import pytest
from helpers import write_video

from data_prep.__main__ import main
from vdi.data.format import ShardError, check_compatible, decode_sample, read_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    videos = root / "videos"
    videos.mkdir()
    for index, seconds in enumerate([4.0, 6.0, 3.0]):
        write_video(videos / f"vid{index}.mp4", seconds, seed=index)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 50)
    annotations = root / "annotations"
    annotations.mkdir()
    (annotations / "train.jsonl").write_text(
        "\n".join(
            json.dumps(line)
            for line in [
                {
                    "video": "vid0",
                    "moments": [
                        {"start": 0.5, "end": 2.0, "sentence": "a person opens the door"},
                        {"start": 2.5, "end": 9.0, "sentence": "the man walks away"},
                    ],
                },
                {
                    "video": "vid1",
                    "duration": 6.0,
                    "moments": [{"start": 1, "end": 3, "sentence": "a woman sits down"}],
                },
                {"video": "broken", "moments": [{"start": 1, "end": 2, "sentence": "a cat jumps"}]},
                {"video": "absent", "moments": [{"start": 1, "end": 2, "sentence": "a dog runs"}]},
            ]
        )
    )
    (annotations / "test.jsonl").write_text(
        json.dumps({"video": "vid2", "moments": [{"start": 0, "end": 1.5, "sentence": "the child jumps up"}]})
    )
    common = ["--dataset", "mine", "--annotations", str(annotations), "--clip", "vdi-test-tiny", "--pretrained", "none"]
    features, out = root / "features", root / "shards"
    code = main(
        [
            "build",
            *common,
            "--videos",
            str(videos),
            "--features",
            str(features),
            "--out",
            str(out),
            "--fps",
            "2",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    return root, common, features, out


def test_build_writes_verified_shards_with_parsed_queries(dataset, capsys):
    _, _, features, out = dataset
    manifest = read_manifest(out / "train")
    assert manifest.num_videos == 2 and manifest.num_queries == 3
    assert manifest.encoder.name == "vdi-test-tiny" and manifest.encoder.weights == "random"
    assert manifest.fps == 2.0 and manifest.feature_dim == 64 and manifest.num_patches == 16
    assert any("end > duration clipped 1" in line for line in manifest.hygiene)  # vid0's 9.0 s end
    failures = [json.loads(line) for line in (features / "failures.jsonl").read_text().splitlines()]
    assert {f["video_id"] for f in failures} == {"broken", "absent"}
    assert main(["verify", str(out / "train")]) == 0

    import webdataset as wds

    raw = list(wds.tarfile_samples([{"url": str(out / "train" / manifest.shards[0].name)}]))
    samples = [decode_sample(r) for r in raw]
    first = next(s for s in samples if s.video_id == "vid0")
    assert first.features.dtype == np.float16 and first.features.shape == (8, 64)  # 4 s at 2 fps
    assert first.patches.shape == (8, 16, 64)
    assert first.duration == pytest.approx(4.0)
    assert first.queries[0].static == "a person, the door" and first.queries[0].dynamic == "opens"
    assert first.moments.tolist() == [[0.5, 2.0], [2.5, 4.0]]


def test_rerun_is_resumable_and_skips_finished_videos(dataset, capsys):
    root, common, features, _ = dataset
    code = main(
        [
            "features",
            *common,
            "--videos",
            str(root / "videos"),
            "--features",
            str(features),
            "--fps",
            "2",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "3 already done, 0 extracted, 2 failed" in out


def test_features_folder_refuses_other_settings(dataset, capsys):
    root, common, features, _ = dataset
    code = main(["features", *common, "--videos", str(root / "videos"), "--features", str(features), "--fps", "4"])
    assert code == 2
    assert "use another folder" in capsys.readouterr().err


def test_verify_detects_a_modified_shard(dataset, tmp_path):
    import shutil

    _, _, _, out = dataset
    copy = tmp_path / "train"
    shutil.copytree(out / "train", copy)
    shard = next(copy.glob("shard-*.tar"))
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1


def test_manifest_mismatch_is_refused(dataset):
    _, _, _, out = dataset
    manifest = read_manifest(out / "train")
    check_compatible(manifest, "vdi-test-tiny", "random", 64, True, "train")
    with pytest.raises(ShardError, match=r"encoder vdi-test-tiny != model.clip.name ViT-B-32"):
        check_compatible(manifest, "ViT-B-32", "random", 64, True, "train")
    with pytest.raises(ShardError, match=r"feature size 64 != text tower size 512"):
        check_compatible(manifest, "vdi-test-tiny", "random", 512, True, "train")
    with pytest.raises(ShardError, match=r"no split 'nowhere' in .* \(its splits: test, train\)"):
        read_manifest(out / "nowhere")


def test_precision_flag_selects_the_visual_tower_precision(dataset, tmp_path):
    import torch

    from data_prep.features import load_features

    root, common, _, _ = dataset
    arguments = ["features", *common, "--videos", str(root / "videos"), "--fps", "2", "--workers", "0"]
    extracted = {}
    for precision in ("bf16", "fp32", "auto"):
        torch.manual_seed(0)  # --pretrained none: the same random tower each time
        assert main([*arguments, "--features", str(tmp_path / precision), "--precision", precision]) == 0
        extracted[precision] = load_features(tmp_path / precision, "vid0")["features"].astype(np.float32)
    assert np.array_equal(extracted["auto"], extracted["fp32"])  # auto on the CPU = fp32
    assert not np.array_equal(extracted["bf16"], extracted["fp32"])  # bf16 autocast really ran
    assert np.allclose(extracted["bf16"], extracted["fp32"], atol=0.1 * np.abs(extracted["fp32"]).max())
