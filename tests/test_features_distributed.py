"""Feature extraction over many devices: deterministic slices, several local processes, and a
SLURM array on the CI's local cluster (two emulated nodes) that extracts what one process does,
survives a killed task and finishes it on re-submission without redoing finished videos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_video

from data_prep.__main__ import main
from data_prep.features import task_of, task_slice

PROJECT = Path(__file__).resolve().parents[1]
SIZES = [(64, 36), (36, 64), (48, 36), (94, 40)]  # 16:9, portrait, 4:3, 2.35:1
RATES = [25, 30, 24]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """20 short videos of mixed sizes and rates, their annotations, and a tiny CLIP checkpoint
    (every process must load the same weights)."""
    from vdi.encoders import create_clip

    root = tmp_path_factory.mktemp("many")
    (root / "videos").mkdir()
    (root / "annotations").mkdir()
    records = []
    for index in range(20):
        name = f"clip{index:02d}"
        seconds = 1.0 + 0.25 * (index % 5)
        write_video(root / "videos" / f"{name}.mp4", seconds, rate=RATES[index % 3], size=SIZES[index % 4], seed=index)
        records.append({"video": name, "moments": [{"start": 0.2, "end": 0.8, "sentence": "a person opens a door"}]})
    (root / "annotations" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    torch.manual_seed(0)
    torch.save(create_clip("vdi-test-tiny", None).state_dict(), root / "clip.pt")
    return root


def arguments(world: Path, out: Path, *extra: str) -> list[str]:
    return [
        "features",
        "--dataset",
        "mine",
        "--annotations",
        str(world / "annotations"),
        "--videos",
        str(world / "videos"),
        "--features",
        str(out),
        "--clip",
        "vdi-test-tiny",
        "--pretrained",
        str(world / "clip.pt"),
        "--fps",
        "2",
        "--workers",
        "0",
        *extra,
    ]


def stored(out: Path) -> dict[str, dict[str, np.ndarray]]:
    result = {}
    for path in sorted((out / "videos").glob("*.npz")):
        with np.load(path) as data:
            result[path.stem] = {name: data[name] for name in data.files}
    return result


def assert_same_features(one: Path, other: Path) -> None:
    expected, got = stored(one), stored(other)
    assert sorted(got) == sorted(expected) and len(expected) == 20
    for name, arrays in expected.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(got[name][key], value, err_msg=f"{name} {key}")


def test_slices_cover_every_video_once_and_do_not_move_when_the_list_changes():
    videos = [(f"video{index}", None) for index in range(400)]
    slices = [task_slice(videos, task, 4) for task in range(4)]
    assert sorted(item for part in slices for item in part) == sorted(videos)
    assert all(70 <= len(part) <= 130 for part in slices)  # a hash spreads them
    # another order, or more videos, leaves every earlier video with its task
    grown = list(reversed(videos)) + [(f"new{index}", None) for index in range(50)]
    for task, part in enumerate(slices):
        assert set(part) <= set(task_slice(grown, task, 4))
    assert task_of("video7", 4) == task_of("video7", 4)


def test_slurm_dry_run_prints_a_32_task_array_and_submits_nothing(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: a dry run must not need one
    out = tmp_path / "features"
    code = main(arguments(world, out, "--slurm", "--nodes", "4", "--gpus-per-node", "8", "--dry-run"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "array of 32 task(s) (4 node(s) x 8), one cuda each" in printed
    assert "videos per task: min 0, max" in printed and "(20 in all)" in printed
    assert "gpus_per_node: 1" in printed and "dry run: nothing submitted" in printed
    assert not (out / "videos").exists() or not list((out / "videos").iterdir())


@pytest.mark.integration
def test_two_local_processes_extract_what_one_process_does(world, tmp_path, capsys):
    assert main(arguments(world, tmp_path / "one")) == 0
    capsys.readouterr()
    assert main(arguments(world, tmp_path / "two", "--devices", "2")) == 0
    printed = capsys.readouterr().out
    assert "features: 2 task(s), 20 extracted, 0 already done, 0 failed" in printed
    assert_same_features(tmp_path / "one", tmp_path / "two")
    report = json.loads((tmp_path / "two" / "extraction.json").read_text())
    assert report["missing_tasks"] == [] and set(report["frames_per_s_per_task"]) == {"0", "1"}
    assert sum(t["requested"] for t in report["tasks"]) == 20


def run_data_prep(env, argv, timeout=600):
    command = [sys.executable, "-m", "data_prep", *argv]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=timeout)


def wait_until_ended(env, job_id: str, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        shown = subprocess.run(
            ["sacct", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True, env=env
        )
        queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, env=env).stdout.strip()
        state = shown.stdout.strip() or state
        if not queued:
            return state
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still queued after {timeout:.0f} s")


@pytest.mark.integration
@pytest.mark.slurm
def test_a_slurm_array_extracts_what_one_process_does_and_survives_a_killed_task(cluster, world, tmp_path, capsys):
    slurm = ["--slurm", "--nodes", "2", "--tasks-per-node", "1", "--cpus-per-task", "1", "--time", "20"]
    assert main(arguments(world, tmp_path / "one")) == 0
    capsys.readouterr()
    # an uninterrupted 2-task array, waited for
    done = run_data_prep(cluster, arguments(world, tmp_path / "array", *slurm, "--wait"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "features: 2 task(s), 20 extracted, 0 already done, 0 failed" in done.stdout
    assert_same_features(tmp_path / "one", tmp_path / "array")
    report = json.loads((tmp_path / "array" / "extraction.json").read_text())
    assert report["missing_tasks"] == [] and len(report["tasks"]) == 2 and report["frames_per_s_total"] > 0

    # the same array with task 1 killed at once: task 0's videos are kept, task 1 is missing
    out = tmp_path / "killed"
    submitted = run_data_prep(cluster, arguments(world, out, *slurm))
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    array_id = re.search(r"submitted array (\d+)", submitted.stdout).group(1)
    merge_id = re.search(r"merge job (\d+)", submitted.stdout).group(1)
    subprocess.run(["scancel", f"{array_id}_1"], check=True, env=cluster)
    wait_until_ended(cluster, merge_id)
    first = json.loads((out / "extraction.json").read_text())
    assert first["missing_tasks"] == [1], first
    kept = {path.name: path.stat().st_mtime_ns for path in (out / "videos").glob("*.npz")}
    task0 = task_slice([(f"clip{i:02d}", None) for i in range(20)], 0, 2)
    assert len(kept) == len(task0)
    # re-submitted: task 1 extracts its slice, task 0 finds everything done
    again = run_data_prep(cluster, arguments(world, out, *slurm, "--wait"))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    final = json.loads((out / "extraction.json").read_text())
    assert (
        final["missing_tasks"] == [] and final["already_done"] == len(task0) and final["extracted"] == 20 - len(task0)
    )
    assert {name: (out / "videos" / name).stat().st_mtime_ns for name in kept} == kept  # not redone
    assert_same_features(tmp_path / "one", out)


def test_patch_tokens_at_the_pre_clip_rate_are_recorded_and_a_mismatch_is_refused(world, tmp_path, capsys):
    from data_prep.features import read_spec
    from vdi.batch import resample_frames
    from vdi.data.format import ShardError, check_compatible, read_manifest

    assert main(arguments(world, tmp_path / "frames", "--fps", "8")) == 0  # 8-16 frames per video
    build = ["build" if part == "features" else part for part in arguments(world, tmp_path / "clips", "--fps", "8")]
    assert main([*build, "--patch-clips", "4", "--out", str(tmp_path / "shards")]) == 0
    capsys.readouterr()
    assert read_spec(tmp_path / "clips").patch_clips == 4 and read_spec(tmp_path / "frames").patch_clips == 0
    per_frame, per_clip = stored(tmp_path / "frames"), stored(tmp_path / "clips")
    for name, arrays in per_clip.items():
        frames = per_frame[name]["patches"]
        assert arrays["patches"].shape == (4, *frames.shape[1:]) and frames.shape[0] > 4
        expected = resample_frames(torch.from_numpy(frames.astype(np.float32)), 4).numpy()
        np.testing.assert_allclose(arrays["patches"].astype(np.float32), expected, atol=2e-3, rtol=2e-3)
        np.testing.assert_array_equal(arrays["features"], per_frame[name]["features"])  # global features untouched
    manifest = read_manifest(tmp_path / "shards" / "train")
    assert manifest.patch_clips == 4
    weights, dim = manifest.encoder.weights, manifest.feature_dim
    check_compatible(manifest, "vdi-test-tiny", weights, dim, True, "here", num_pre_clips=4)
    with pytest.raises(ShardError, match=r"stored at 4 pre-clips per video, but model.num_pre_clips is 16"):
        check_compatible(manifest, "vdi-test-tiny", weights, dim, True, "here", num_pre_clips=16)
    check_compatible(manifest, "vdi-test-tiny", weights, dim, False, "here", num_pre_clips=16)  # no L^sd: fine
