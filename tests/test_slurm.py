"""python -m vdi.launch on SLURM: dry runs and clear errors here; real jobs on the local cluster
(slurm/local_cluster.sh) in CI: 2 emulated nodes train in step, then a requeued job resumes and
finishes with the same metrics as an uninterrupted one."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_toy_dataset

from vdi.launch import main as launch_main

PROJECT = Path(__file__).resolve().parents[1]
CLUSTER = PROJECT / "slurm" / "local_cluster.sh"


def test_dry_run_prints_a_32_task_job(capsys):
    code = launch_main(
        [
            "--config",
            "charades_sta",
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--partition",
            "gpu",
            "--time",
            "2-00:00:00",
            "--dry-run",
            "optim.batch_size=64",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "job: 32 tasks = 4 node(s) x 8 task(s) per node" in out
    assert "gpus_per_node: 8" in out and "slurm_partition: gpu" in out and "timeout_min: 2880" in out
    assert "per-task batch: 2 videos (global 64)" in out
    assert "num_clips: 16" in out  # the resolved config follows


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("30:30", 31), ("4:00:00", 240), ("2-12", 3600), ("1-12:30", 2190), ("1-00:00:01", 1441)],
)
def test_slurm_time_forms(text, minutes):
    from vdi.launch import slurm_minutes

    assert slurm_minutes(text) == minutes


def test_bad_time_limit_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch_main(["--config", "tiny", "--nodes", "2", "--time", "four hours", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--time 'four hours' is not a SLURM time" in capsys.readouterr().err


def test_config_typo_fails_before_submission(capsys):
    code = launch_main(["--config", "tiny", "--nodes", "2", "optim.learning_rate=0.1"])
    assert code == 2
    assert "unknown config key 'optim.learning_rate'" in capsys.readouterr().err


def test_no_sbatch_says_how_to_run_locally(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code = launch_main(["--config", "tiny", "--nodes", "2", "--tasks-per-node", "1", "optim.batch_size=4"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no sbatch on PATH" in err and "python -m vdi.launch --local" in err


# --------------------------------------------------------------------------- the real cluster


@pytest.fixture(scope="module")
def slurm_shards(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("slurm_shards"), 96, per_shard=24, seed=21)


def launch(env, *args, timeout=900):
    command = [sys.executable, "-m", "vdi.launch", "--config", "tiny", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=timeout)


def job_overrides(shard_root, run_root, name):
    return [
        f"data.shard_root={shard_root}",
        "data.eval_splits=[test]",
        "data.probe_split=null",
        "data.num_workers=0",
        "eval.select_split=test",
        f"run.root={run_root}",
        f"run.name={name}",
        "optim.max_epochs=3",
        "optim.batch_size=4",
        "dist.verify_sync_steps=1",
        f"dist.extensions_dir={PROJECT / '.cache/torch_extensions'}",
    ]


def job_state(env, job_id: str) -> str:
    shown = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True, env=env
    )
    return shown.stdout.strip()


@pytest.mark.integration
@pytest.mark.slurm
def test_two_nodes_train_in_step_and_requeue_resumes_exactly(cluster, slurm_shards, tmp_path):
    # an uninterrupted 2-node job
    reference = launch(
        cluster, *job_overrides(slurm_shards, tmp_path, "reference"), "--nodes", "2", "--tasks-per-node", "1", "--wait"
    )
    log = reference.stdout + reference.stderr
    assert reference.returncode == 0, log[-3000:]
    assert "parameters identical and videos disjoint across 2 ranks after each of 24 checked steps" in log
    expected = json.loads((tmp_path / "reference" / "eval.json").read_text())["best"]
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].data.params["world_size"] == "2"

    # the same job, requeued by SLURM while it runs epoch 2
    submitted = launch(
        cluster, *job_overrides(slurm_shards, tmp_path, "requeued"), "--nodes", "2", "--tasks-per-node", "1"
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = re.search(r"submitted job (\d+)", submitted.stdout).group(1)
    log_path = Path(re.search(r"rank-0 log: (\S+)", submitted.stdout).group(1))
    deadline = time.time() + 600
    while time.time() < deadline and not (log_path.exists() and "epoch 1:" in log_path.read_text()):
        time.sleep(0.5)
    time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=cluster)
    while time.time() < deadline and job_state(cluster, job_id) not in ("COMPLETED", "FAILED", "CANCELLED"):
        time.sleep(1)
    assert job_state(cluster, job_id) == "COMPLETED", log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert "stopped by signal" in text and "resuming from" in text  # checkpointed on TERM, then resumed
    got = json.loads((tmp_path / "requeued" / "eval.json").read_text())["best"]
    assert got == expected


@pytest.mark.integration
@pytest.mark.slurm
def test_invalid_partition_shows_slurms_message(cluster, slurm_shards, tmp_path):
    result = launch(cluster, *job_overrides(slurm_shards, tmp_path, "bad"), "--nodes", "1", "--partition", "nope")
    assert result.returncode == 2
    assert "sbatch refused the job" in result.stderr and "partition" in result.stderr.lower()
