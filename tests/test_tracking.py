"""What a reviewer sees in MLflow: experiments tagged for the training view with a saved view of
the key metrics, runs named and tagged with their source and their shards as dataset inputs, all
through the buffer (so a replay after an outage sends the same)."""

import json
import subprocess
import warnings
from pathlib import Path

import pytest

from vdi.data.format import EncoderInfo, ShardInfo, ShardManifest
from vdi.tracking import (
    REVIEW_VIEW,
    TRAINING_KIND,
    Tracker,
    dataset_input,
    replay,
    review_url,
    source_tags,
    write_tracking_meta,
)

PROJECT = Path(__file__).resolve().parents[1]


def manifest(shards: list[str]) -> ShardManifest:
    return ShardManifest(
        dataset="synthetic",
        split="train",
        num_videos=10,
        num_queries=25,
        encoder=EncoderInfo("vdi-tiny", "sha256:abc"),
        fps=4.0,
        feature_dim=64,
        num_patches=16,
        shards=[ShardInfo(name, sha, 100, 5, 12) for name, sha in zip(("a.tar", "b.tar"), shards)],
    )


def test_dataset_inputs_name_the_split_and_change_with_any_shard(tmp_path):
    train = dataset_input(manifest(["11", "22"]), tmp_path, "train", 8, 20)
    held_out = dataset_input(manifest(["11", "22"]), tmp_path, "val", 2, 5)
    rebuilt = dataset_input(manifest(["11", "23"]), tmp_path, "train", 8, 20)
    assert train["name"] == "synthetic/train" and train["context"] == "train"
    assert len({train["digest"], held_out["digest"], rebuilt["digest"]}) == 3
    profile = json.loads(train["profile"])
    assert profile["videos"] == 8 and profile["queries"] == 20 and profile["encoder"] == "vdi-tiny"
    assert profile["shard_sha256"] == ["11", "22"] and json.loads(train["source"])["uri"] == str(tmp_path.resolve())


def test_source_tags_name_the_command_and_the_commit():
    tags = source_tags(["/usr/bin/python3", "-m", "vdi.launch", "--local", "run.name=a b", "data.root=/x/y"])
    assert tags["mlflow.source.name"] == "python -m vdi.launch"  # the UI shows what follows the last "/"
    assert tags["vdi.command"] == "/usr/bin/python3 -m vdi.launch --local 'run.name=a b' data.root=/x/y"
    assert source_tags(["python", "/p/sweeps/lambda_sweep.py", "--ablation"])["mlflow.source.name"] == (
        "/p/sweeps/lambda_sweep.py"
    )
    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: the commit and whether the code differs from it
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["vdi.git.dirty"] in ("true", "false")


@pytest.mark.filterwarnings("ignore:MLflow logging to http")
def test_runs_and_experiments_carry_what_the_ui_review_needs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vdi.cli import PROCESS_ENV

    for name, value in PROCESS_ENV.items():  # what every vdi entry point sets: no retries against a dead server
        monkeypatch.setenv(name, value)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    datasets = [dataset_input(manifest(["11", "22"]), tmp_path, "train", 8, 20)]
    tags = {"ablation_row": "Baseline", "vdi.preset": "tiny"}
    # the first record goes to a dead server: the run exists only in its buffer, then is replayed
    run_dir = tmp_path / "run"
    tracker = Tracker(
        run_dir,
        "http://127.0.0.1:9",
        "ablation",
        "Baseline / seed 1",
        params={"a": 1},
        tags=tags,
        datasets=datasets,
        review_splits=["val", "ood"],
    )
    tracker.log_metrics({"best/val/R1@0.5": 40.0}, step=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one warning about the dead server
        assert not tracker.finish()
    write_tracking_meta(run_dir, uri, "ablation", "Baseline / seed 1", None, ["val", "ood"], grouped=True)
    assert replay(run_dir)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ablation")
    run = client.search_runs([experiment.experiment_id])[0]
    assert run.data.tags["mlflow.runName"] == "Baseline / seed 1" and run.data.tags["ablation_row"] == "Baseline"
    assert run.data.metrics["best/val/R1_iou0.5"] == 40.0
    (found,) = run.inputs.dataset_inputs
    assert found.dataset.name == "synthetic/train" and found.dataset.digest == datasets[0]["digest"]
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "train")]

    assert experiment.tags["mlflow.experimentKind"] == TRAINING_KIND
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{REVIEW_VIEW}"])
    assert "metrics.`best/ood/gain_R1_iou0.5`" in view["selectedColumns"]
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "ablation_row"}]
    # a later run with another split adds its columns and keeps the earlier ones (and the grouping)
    other = Tracker(tmp_path / "other", uri, "ablation", "x", review_splits=["test"])
    other.finish()
    # an experiment of plain runs is not grouped (MLflow would fold them into "Additional runs")
    plain = Tracker(tmp_path / "plain", uri, "plain", "a run", review_splits=["val"])
    plain.finish()
    plain_view = json.loads(client.get_experiment_by_name("plain").tags[f"mlflow.sharedViewState.{REVIEW_VIEW}"])
    assert "groupBy" not in plain_view and "metrics.`best/val/R1_iou0.5`" in plain_view["selectedColumns"]
    experiment = client.get_experiment_by_name("ablation")
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{REVIEW_VIEW}"])
    columns = view["selectedColumns"]
    assert view["groupBy"]["groupByKeys"][0]["groupByData"] == "ablation_row"
    assert {"metrics.`best/val/R1_iou0.5`", "metrics.`best/test/mIoU`", "attributes.`Source`"} <= set(columns)
    assert other.review_url() == review_url(uri, experiment.experiment_id)
    assert other.review_url().endswith(
        f"/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey={REVIEW_VIEW}&workflowType=machine_learning"
    )
