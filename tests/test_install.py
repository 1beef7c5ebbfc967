"""The inference install: `pip install .` without extras gives a working vdi.predict, with no
training stack (DeepSpeed, MLflow, WebDataset, matplotlib, Ray, submitit) installed or imported."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import write_video

PROJECT = Path(__file__).resolve().parents[1]
TRAINING_STACK = ("deepspeed", "mlflow", "webdataset", "matplotlib", "ray", "submitit")
SENTENCES = ["a person opens the door", "the man walks away"]

PREDICT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from vdi.predict import Predictor
    installed = [m for m in sys.argv[3].split(",") if importlib.util.find_spec(m) is not None]
    predictor = Predictor.from_checkpoint(sys.argv[1])
    video = predictor.encode_video(sys.argv[2])
    results = predictor.predict(video, json.loads(sys.argv[4]), top_k=3)
    imported = [m for m in sys.argv[3].split(",") if m in sys.modules]
    moments = [[[m.start, m.end, m.score] for m in r] for r in results]
    print(json.dumps({"installed": installed, "imported": imported, "moments": moments}))
    """
)


def _checkpoint(folder: Path) -> Path:
    from vdi.checkpoint import save_inference_checkpoint
    from vdi.config import load_config, to_dict
    from vdi.data.format import weights_identity
    from vdi.encoders import create_clip
    from vdi.injection import build_vdi_model

    torch.manual_seed(0)
    clip = create_clip("vdi-test-tiny", None)
    clip_path = folder / "clip.pt"
    torch.save(clip.state_dict(), clip_path)
    cfg = load_config("tiny", [f"model.clip.pretrained={clip_path}", "injection.spatial_dynamic=none"])
    model = build_vdi_model(cfg, clip)
    metadata = {"feature_fps": 2.0, "max_train_duration": 8.0, "clip_weights": weights_identity(str(clip_path))}
    path = folder / "model.pt"
    save_inference_checkpoint(path, model.retriever.state_dict(), to_dict(cfg), {}, 1, metadata)
    return path


ROOT_ONLY = {".git", ".venv", "data", "runs", ".cache", "build", "mlruns", "outputs"}  # names vdi/ may reuse (vdi/data)
EVERYWHERE = shutil.ignore_patterns("*.egg-info", "__pycache__")


def _outside_the_sources(folder: str, names: list[str]) -> set[str]:
    ignored = set(EVERYWHERE(folder, names))
    if Path(folder) == PROJECT:
        ignored |= ROOT_ONLY & set(names)
    return ignored


@pytest.mark.integration
def test_pip_install_without_extras_predicts_without_the_training_stack(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    write_video(tmp_path / "v.mp4", 6.0, rate=8, size=(40, 32))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # a copy of the sources (no .venv, data or runs), so the build leaves nothing in the checkout
    source = tmp_path / "src"
    shutil.copytree(PROJECT, source, ignore=_outside_the_sources)
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)], capture_output=True, text=True, timeout=1200
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    (site_packages,) = venv.glob("lib/python*/site-packages")
    shipped = {p.relative_to(site_packages).as_posix() for p in (site_packages / "vdi").rglob("*.py")}
    sources = {p.relative_to(PROJECT).as_posix() for p in (PROJECT / "vdi").rglob("*.py")}
    assert shipped == sources, f"not installed: {sorted(sources - shipped)}"
    stack = ",".join(TRAINING_STACK)
    run = subprocess.run(
        [python, "-c", PREDICT, str(checkpoint), str(tmp_path / "v.mp4"), stack, json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the installed package is what runs
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["installed"] == [] and result["imported"] == []

    from vdi.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    expected = predictor.predict(predictor.encode_video(tmp_path / "v.mp4"), SENTENCES, top_k=3)
    assert result["moments"] == [[[m.start, m.end, m.score] for m in r] for r in expected]
