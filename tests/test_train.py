"""train(cfg) end to end on tiny shards: DeepSpeed on the CPU, evaluation, checkpoints, exact
resume after SIGKILL and SIGTERM, MLflow tracking (and an unreachable server)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import write_toy_dataset

PROJECT = Path(__file__).resolve().parents[1]
EXTENSIONS = str(PROJECT / ".cache" / "torch_extensions")


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy_shards"), 120, per_shard=30, seed=11)


def overrides(shard_root, run_root, name, *extra):
    return [
        f"data.shard_root={shard_root}",
        "data.eval_splits=[test]",
        "data.probe_split=test",
        "data.num_workers=0",
        "eval.select_split=test",
        f"run.root={run_root}",
        f"run.name={name}",
        "optim.max_epochs=3",
        "optim.batch_size=2",  # 60 steps per epoch
        "track.log_every_steps=2",
        f"dist.extensions_dir={EXTENSIONS}",
        *extra,
    ]


def run_train(args, env_extra=None, wait=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    command = [sys.executable, "-m", "vdi.train", "--config", "tiny", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT
    )
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def wait_for_line(process, text: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"training ended before printing {text!r}")
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout} s")


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval.json").read_text())["best"]


@pytest.mark.integration
def test_train_evaluates_checkpoints_and_tracks(shard_root, tmp_path):
    code, output = run_train(overrides(shard_root, tmp_path, "plain"))
    assert code == 0, output[-3000:]
    run_dir = tmp_path / "plain"
    result = json.loads((run_dir / "eval.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert set(result["probe"]) == {"test", "test [Q^s]", "test [Q^d]"}
    assert (run_dir / "best" / "model.pt").exists() and (run_dir / "loss_curve.png").exists()
    assert "mlflow ui --backend-store-uri sqlite:///" in output
    # grounding diagnostics beside R@k: ceiling, prior and gains, per-query results for the report
    test = result["results"]["test"]
    assert {"ceiling R1@0.5", "prior R1@0.5", "gain R1@0.5", "xgain R1@0.5"} <= set(test)
    assert test["queries"] == len(result["per_query"]["test"]["top1_iou"]) and test["videos"] == 8
    assert "grounding (percent" in output and "warning: checkpoints are selected on 'test'" in output
    payload = torch.load(run_dir / "best" / "model.pt", weights_only=True)
    assert payload["format"] == "vdi-retriever" and payload["epoch"] == result["best_epoch"]
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model.num_clips"] == "4"
    # where it came from and what it read, for the UI's Source and Dataset columns
    tags = runs[0].data.tags
    assert "-m vdi.train" in tags["mlflow.source.name"] and tags["vdi.preset"] == "tiny"
    assert len(tags.get("mlflow.source.git.commit", "0" * 40)) == 40
    inputs = {(i.dataset.name, i.tags[0].value) for i in runs[0].inputs.dataset_inputs}
    assert inputs == {("toy/train", "train"), ("toy/test", "test")}
    assert "viewStateShareKey=vdi-review&workflowType=machine_learning" in output
    assert "test/R1_iou0.5" in runs[0].data.metrics and "loss/total" in runs[0].data.metrics
    assert "probe/test_Qd/R1_iou0.5" in runs[0].data.metrics
    logged = runs[0].data.metrics
    assert {"test/gain_R1_iou0.5", "test/ceiling_R1_iou0.5", "inject/vc_target_spread"} <= set(logged)
    assert "epoch/inject/grad_text_from_visual_context" in logged and "inject/sd_target_cross_video_cos" in logged
    history = client.get_metric_history(runs[0].info.run_id, "test/R1_iou0.5")
    assert len(history) == 3
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"config.yaml", "eval.json", "loss_curve.png", "dynamics_probe.png"} <= artifacts
    # artifacts live beside the sqlite store, not in ./mlruns of the folder the run started in
    assert runs[0].info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    assert list((tmp_path / "mlartifacts").rglob("eval.json"))
    # what each evaluation scored and skipped is recorded
    assert test["scored videos"] == 8 and test["skipped shards"] == 0
    assert result["skipped_shards"] == {"train": [], "test": []}
    assert "test/skipped_shards" in logged and "data/skipped_shards_train" in logged
    # python -m vdi.evaluate reproduces the training-time metrics of the best checkpoint
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "vdi.evaluate",
            "--checkpoint",
            str(run_dir / "best" / "model.pt"),
            "--split",
            "test",
            "--probe",
            "--json",
            str(tmp_path / "e.json"),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["test"] == pytest.approx(result["results"]["test"])
    # a mistyped second split or a missing --json folder is refused before any split is evaluated
    for extra in (["--split", "test", "tset"], ["--split", "test", "--json", str(tmp_path / "missing" / "e.json")]):
        refused = subprocess.run(
            [sys.executable, "-m", "vdi.evaluate", "--checkpoint", str(run_dir / "best" / "model.pt"), *extra],
            capture_output=True,
            text=True,
            cwd=PROJECT,
            timeout=300,
        )
        assert refused.returncode == 2 and refused.stderr.startswith("error: ") and not refused.stdout.strip()
    assert metrics["test [Q^d]"] == pytest.approx(result["probe"]["test [Q^d]"])


@pytest.mark.integration
def test_validation_hold_out_selects_the_checkpoint(shard_root, tmp_path):
    """data.val_fraction holds out seeded training videos as 'val'; selection runs on it."""
    args = overrides(shard_root, tmp_path, "held", "optim.max_epochs=1", "data.val_fraction=0.25")
    args += ["data.eval_splits=[val,test]", "eval.select_split=val", "track.enabled=false"]
    code, output = run_train(args)
    assert code == 0, output[-3000:]
    assert "data: train 90 videos; val 30 videos, test 8 videos" in output
    assert "not on a validation split" not in output
    result = json.loads((tmp_path / "held" / "eval.json").read_text())
    assert result["results"]["val"]["videos"] == 30 and "val/R1@0.5" in result["best"]


@pytest.mark.integration
def test_sigkill_at_three_seeded_points_then_resume_equals_uninterrupted(shard_root, tmp_path):
    """One run is SIGKILLed three times (vdi.checkpoint.fault_point): at a seeded step of epoch 2,
    at a seeded step after the resume, and half-way through writing a checkpoint; after each
    resume it goes on, and it ends with the uninterrupted run's metrics, bit for bit."""
    import random

    code, output = run_train(overrides(shard_root, tmp_path, "reference"))
    assert code == 0, output[-3000:]
    rng = random.Random(14)
    points = [f"step:{rng.randint(61, 119)}", f"step:{rng.randint(5, 55)}", "checkpoint:1"]
    args = overrides(shard_root, tmp_path, "killed", "track.enabled=false")
    checkpoints = tmp_path / "killed" / "checkpoints"
    for number, point in enumerate(points):
        code, output = run_train(args, env_extra={"VDI_FAULT_KILL": point})
        assert code == -signal.SIGKILL, f"{point}: {output[-2000:]}"
        if number:
            assert "resuming from" in output
    assert any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())  # killed while writing
    code, output = run_train(args)
    assert code == 0, output[-3000:]
    assert "resuming from" in output
    assert final_metrics(tmp_path / "killed") == final_metrics(tmp_path / "reference")


@pytest.mark.integration
def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(shard_root, tmp_path):
    code, _ = run_train(overrides(shard_root, tmp_path, "reference"))
    assert code == 0
    args = overrides(shard_root, tmp_path, "terminated", "track.enabled=false")
    process = run_train(args, wait=False)
    wait_for_line(process, "epoch 1:")
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    checkpoints = tmp_path / "terminated" / "checkpoints"
    assert process.returncode == 3, output[-2000:]
    assert "stopped by signal" in output
    meta = json.loads((checkpoints / (checkpoints / "latest").read_text() / "meta.json").read_text())
    assert meta["loader"]["epoch"] == 2 and meta["loader"]["batches_done"] > 0  # a mid-epoch checkpoint
    code, output = run_train(args)
    assert code == 0, output[-3000:]
    assert final_metrics(tmp_path / "terminated") == final_metrics(tmp_path / "reference")


@pytest.mark.integration
def test_unreachable_tracking_server_loses_nothing(shard_root, tmp_path):
    args = overrides(shard_root, tmp_path, "offline", "track.tracking_uri=http://127.0.0.1:9", "optim.max_epochs=1")
    code, output = run_train(args)
    assert code == 0, output[-3000:]
    assert "MLflow logging to http://127.0.0.1:9 failed" in output
    run_dir = tmp_path / "offline"
    buffered = [json.loads(line) for line in (run_dir / "mlflow_buffer.jsonl").read_text().splitlines()]
    assert any(item["kind"] == "metrics" and "test/R1_iou0.5" in item["values"] for item in buffered)
    # once a store is reachable, the buffered records are replayed into it
    store = f"sqlite:///{tmp_path / 'later.db'}"
    replayed = subprocess.run(
        [sys.executable, "-m", "vdi.tracking", "replay", str(run_dir), "--tracking-uri", store],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    assert run.info.status == "FINISHED" and "test/R1_iou0.5" in run.data.metrics


@pytest.mark.integration
def test_torchrun_two_processes_stay_in_step(shard_root, tmp_path):
    args = overrides(
        shard_root,
        tmp_path,
        "two",
        "optim.max_epochs=1",
        "optim.batch_size=4",
        "dist.verify_sync_steps=1",
        "dist.zero_stage=1",
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vdi.train",
        "--config",
        "tiny",
        *args,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "parameters identical and videos disjoint across 2 ranks after each of 30 checked steps" in output
    assert (tmp_path / "two" / "eval.json").exists()


def test_splits_left_out_of_epoch_evaluation_are_evaluated_once_with_the_best_weights(shard_root, tmp_path):
    """eval.epoch_splits=[val]: test is not evaluated after each epoch, yet the final results hold
    it, with the same figures as a run that evaluated it every epoch (same seed, same weights)."""
    from vdi.config import load_config
    from vdi.train import train

    def run(name, *extra):
        cfg = load_config(
            "tiny",
            overrides(
                shard_root,
                tmp_path,
                name,
                "optim.max_epochs=2",
                "optim.batch_size=8",
                "track.enabled=false",
                "data.val_fraction=0.2",
                "data.eval_splits=[val,test]",
                "eval.select_split=val",
                *extra,
            ),
        )
        return train(cfg)

    lean = run("lean", "eval.epoch_splits=[val]")
    full = run("full")
    assert all(not any(k.startswith("test/") for k in row) for row in lean["history"])
    assert any(k.startswith("test/") for k in full["history"][0])
    assert lean["best_epoch"] == full["best_epoch"]
    assert lean["best"] == full["best"]
    assert "gain R1@0.5" in lean["results"]["test"]
