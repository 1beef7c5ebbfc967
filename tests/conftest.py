"""Shared test set-up: no network, tiny models, tiny data made on the fly."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Set before anything imports huggingface_hub / mlflow / ray: tests never download or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests neither read nor fill the user's tiny-CLIP cache (data_prep/synthetic/build.py): their own,
# removed at exit (subprocesses inherit it).
os.environ["VDI_CACHE_DIR"] = tempfile.mkdtemp(prefix="vdi-test-cache-")

from pathlib import Path

import pytest
import torch

atexit.register(shutil.rmtree, os.environ["VDI_CACHE_DIR"], ignore_errors=True)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The real benchmark annotation files (not in the repository): VDI_ANNOTATIONS or ../shared/...
ANNOTATIONS = Path(os.environ.get("VDI_ANNOTATIONS") or PROJECT_ROOT.parent / "shared" / "data" / "annotations")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def annotations_dir() -> Path:
    if not ANNOTATIONS.is_dir():
        message = f"real annotation files not present at {ANNOTATIONS} (set VDI_ANNOTATIONS)"
        if os.environ.get("VDI_REQUIRE_ANNOTATIONS"):  # CI: a missing folder is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return ANNOTATIONS


CLUSTER = PROJECT_ROOT / "slurm" / "local_cluster.sh"


@pytest.fixture(scope="session")
def cluster():
    """The local SLURM (slurm/local_cluster.sh): started once, stopped at the end; yields its env."""
    import subprocess

    started = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        message = f"local SLURM could not start: {started.stderr.strip()[-500:]}"
        if os.environ.get("VDI_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    exports = subprocess.run(["bash", str(CLUSTER), "env"], capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in exports.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value.replace("$PATH", env["PATH"])
    yield env
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)
