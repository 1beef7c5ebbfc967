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


# --------------------------------------------------------------------------- the rendezvous

FAKE_SCONTROL = """#!/bin/bash
# scontrol's two answers the rendezvous reads (node n<k> lives at 10.0.0.<k>)
if [ "$1 $2" = "show hostnames" ]; then echo n7; echo n8; exit 0; fi
if [ "$1 $2" = "show node" ] && [ -z "${NO_ADDR:-}" ]; then
    echo "NodeName=$3 Arch=x86_64 CoresPerSocket=1"
    echo "   NodeAddr=10.0.0.${3#n} NodeHostName=host Version=23"
fi
"""


@pytest.fixture
def fake_slurm(tmp_path):
    """PATH with a stand-in scontrol and srun (srun prints the rendezvous it was given)."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "srun").write_text('#!/bin/bash\necho "srun MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="54321")
    env["SLURM_JOB_NODELIST"] = "n[7-8]"
    return env


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("n1", "n1"),
        ("n[1-2]", "n1"),
        ("gpu[07-09,12],cpu1", "gpu07"),
        ("a1,b[2-3]", "a1"),
        ("r[3-4]-n[01-02]", "r3-n01"),
    ],
)
def test_first_node_of_a_slurm_node_list(nodelist, first):
    from vdi.distributed import first_node

    assert first_node(nodelist) == first


def test_slurm_rendezvous_is_the_first_nodes_address_and_a_port_from_the_job_id(fake_slurm, monkeypatch):
    from vdi.distributed import slurm_rendezvous

    monkeypatch.setenv("PATH", fake_slurm["PATH"])
    job = {"SLURM_JOB_ID": "54321", "SLURM_JOB_NODELIST": "n[7-8]"}
    assert slurm_rendezvous(job) == {"MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "34321"}
    monkeypatch.setenv("NO_ADDR", "1")  # a node without a NodeAddr: its name
    assert slurm_rendezvous(job)["MASTER_ADDR"] == "n7"
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol at all: the name too
    assert slurm_rendezvous(job)["MASTER_ADDR"] == "n7"


def test_slurm_rendezvous_outside_a_job_is_a_one_line_error():
    from vdi.distributed import main

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT)}
    shown = subprocess.run(
        [sys.executable, "-m", "vdi.distributed", "slurm-rendezvous"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 2
    assert shown.stderr == (
        "error: not inside a SLURM job (SLURM_JOB_ID and SLURM_JOB_NODELIST unset): "
        "run this in a job's script or task\n"
    )
    assert hasattr(main, "__wrapped__")


def test_train_sbatch_exports_the_rendezvous_to_its_tasks(fake_slurm):
    env = dict(fake_slurm, SLURM_SUBMIT_DIR=str(PROJECT), PYTHON=sys.executable)
    ran = subprocess.run(["bash", str(PROJECT / "slurm" / "train.sbatch")], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["srun MASTER_ADDR=10.0.0.7 MASTER_PORT=34321"]
    ran = subprocess.run(
        ["bash", str(PROJECT / "slurm" / "train.sbatch")], capture_output=True, text=True, env=dict(env, NO_ADDR="1")
    )
    assert ran.stdout.splitlines() == ["srun MASTER_ADDR=n7 MASTER_PORT=34321"]


def test_sweep_sbatch_starts_ray_at_the_same_rendezvous(fake_slurm):
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import SBATCH_TEMPLATE

    lines = SBATCH_TEMPLATE.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("nodes=("))
    last = next(i for i, line in enumerate(lines) if line.startswith("read -r head_ip port"))
    fragment = "\n".join(lines[first : last + 1]).format(python=sys.executable)
    shown = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{fragment}\necho $head $head_ip $port"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT,
        env=fake_slurm,
    )
    assert shown.stdout.split() == ["n7", "10.0.0.7", "34321"]


def test_importing_the_launcher_imports_no_data_prep():
    """data_prep (the synthetic world's generator) is imported only where the world is built."""
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, vdi.launch; print(sorted(m for m in sys.modules if 'data_prep' in m))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"


@pytest.mark.parametrize(("task", "returns"), [("0", True), ("1", False)])
def test_a_submitit_task_takes_its_place_and_rendezvous_from_slurm(fake_slurm, monkeypatch, task, returns):
    import os

    import vdi.train
    from vdi.config import load_config, to_dict
    from vdi.launch import SlurmTrain

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "unset")  # restored after the test, whatever the task writes
        monkeypatch.delenv(name)
    monkeypatch.setenv("RANK", "5")  # inherited from the submitting shell: not this task's rank
    for name in ("PATH", "SLURM_JOB_ID", "SLURM_JOB_NODELIST"):
        monkeypatch.setenv(name, fake_slurm[name])
    monkeypatch.setenv("SLURM_PROCID", task)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_LOCALID", task)
    seen = {}

    def train(cfg):
        seen.update({name: os.environ[name] for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")})
        seen["port"] = os.environ["MASTER_PORT"]
        return {"status": "finished", "history": [1], "best": {"test/R1@0.5": 1.0}}

    monkeypatch.setattr(vdi.train, "train", train)
    result = SlurmTrain(to_dict(load_config("tiny")))()
    assert seen == {"RANK": task, "WORLD_SIZE": "2", "LOCAL_RANK": task, "MASTER_ADDR": "10.0.0.7", "port": "34321"}
    assert result == ({"status": "finished", "best": {"test/R1@0.5": 1.0}} if returns else None)
