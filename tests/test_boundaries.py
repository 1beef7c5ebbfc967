"""Each heavy dependency behind one module; inference never loads training code; model files
never touch torch.distributed."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
OWNERS = {
    "deepspeed": {"vdi/engine.py"},
    "submitit": {"vdi/launch.py"},
    "mlflow": {"vdi/tracking.py"},
    "ray": set(),
    "gradio": {"vdi/app.py"},
}
SINGLE_DEVICE = ["vdi/model.py", "vdi/injection.py", "vdi/encoders.py", "vdi/losses.py"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("dependency", sorted(OWNERS))
def test_only_the_owner_module_imports_a_heavy_dependency(dependency):
    importers = {
        str(path.relative_to(PROJECT))
        for path in (PROJECT / "vdi").rglob("*.py")
        if any(name == dependency or name.startswith(dependency + ".") for name in imported_modules(path))
    }
    assert importers == OWNERS[dependency]


def test_model_files_never_touch_torch_distributed():
    for relative in SINGLE_DEVICE:
        tree = ast.parse((PROJECT / relative).read_text())
        attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "distributed" not in attributes, relative  # torch.distributed.*
        assert not any(name.startswith("torch.distributed") for name in imported_modules(PROJECT / relative))


def test_inference_imports_no_training_code():
    code = (
        "import sys, json, vdi.predict; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('vdi', 'deepspeed', 'mlflow', 'ray', 'submitit'))))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT).stdout
    )
    training = {"vdi.train", "vdi.engine", "vdi.injection", "vdi.losses", "vdi.tracking", "vdi.data", "vdi.launch"}
    assert "vdi.predict" in loaded
    assert not training & set(loaded), training & set(loaded)
    assert not any(m.split(".")[0] in ("deepspeed", "mlflow", "ray", "submitit") for m in loaded)
