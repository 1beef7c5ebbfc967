"""Checkpoints: atomic, resumable, and loadable with ``torch.load(weights_only=True)``.

Layout of a run directory::

    checkpoints/e003-s000120/        one checkpoint (epoch 3, global step 120)
        model.pt                     full training model state (rank 0)
        optimizer_rank{r}.pt         each rank's optimizer state (ZeRO partitions differ)
        state_rank{r}.pt             each rank's RNG states
        meta.json                    epoch, step, loader position, world size, metrics so far
        COMPLETE                     written last: a checkpoint without it is ignored
    checkpoints/latest               name of the newest complete checkpoint (replaced atomically)
    best/model.pt                    inference weights of the best epoch + model config + metrics

A checkpoint is first written to ``checkpoints/.tmp-<name>`` by every rank, then (after a
barrier) renamed by rank 0: a killed run never leaves a half-written checkpoint that a restart
would pick up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vdi.distributed import barrier
from vdi.errors import InputError

if TYPE_CHECKING:  # annotations only: training code never needs the model here
    from vdi.config import Config
    from vdi.model import MomentRetriever

COMPLETE = "COMPLETE"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the whole training config under "config" (before vdi 0.2's split)


@dataclass
class LoaderState:
    """Where a training epoch stands: saved with every checkpoint."""

    epoch: int = 1
    batches_done: int = 0


@dataclass
class TrainState:
    epoch: int = 1  # the epoch in progress (or the next one when batches_done == 0)
    global_step: int = 0
    loader: LoaderState = field(default_factory=LoaderState)
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)  # per-epoch eval metrics
    world_size: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        data["loader"] = LoaderState(**data["loader"])
        return cls(**data)


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    numpy_state = np.random.get_state()
    state["numpy_keys"] = torch.from_numpy(numpy_state[1].astype(np.int64))
    state["numpy_position"] = int(numpy_state[2])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_position"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(state: TrainState) -> str:
    return f"e{state.epoch:03d}-s{state.global_step:07d}"


FAULT_ENV = "VDI_FAULT_KILL"
_fault_counts: dict[str, int] = {}


def fault_point(kind: str) -> None:
    """Fault injection for the kill tests: with ``VDI_FAULT_KILL=<kind>:<n>`` this process
    SIGKILLs itself at its n-th ``kind`` point ("step": after a training step; "checkpoint":
    half-way through writing a checkpoint). A no-op when the variable is unset."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _fault_counts[kind] = _fault_counts.get(kind, 0) + 1
    if spec == f"{kind}:{_fault_counts[kind]}":
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model_state: dict,
    optimizer_state: dict,
    rank: int,
    world_size: int,
    keep: int = 2,
) -> Path:
    """Every rank calls this; returns the final checkpoint directory."""
    root = run_dir / "checkpoints"
    name = checkpoint_name(state)
    staging = root / f".tmp-{name}"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(world_size)
    staging.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer_state, staging / f"optimizer_rank{rank}.pt")
    torch.save(rng_state(), staging / f"state_rank{rank}.pt")
    if rank == 0:
        torch.save(model_state, staging / "model.pt")
        fault_point("checkpoint")
        (staging / "meta.json").write_text(state.to_json())
    barrier(world_size)
    final = root / name
    if rank == 0:
        (staging / COMPLETE).write_text(f"version {CHECKPOINT_VERSION}\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.replace(final)
        pointer = root / "latest.tmp"
        pointer.write_text(name)
        pointer.replace(root / "latest")
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(world_size)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / COMPLETE).exists())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (the pointer first, else the newest complete folder)."""
    pointer = run_dir / "checkpoints" / "latest"
    if pointer.exists():
        candidate = run_dir / "checkpoints" / pointer.read_text().strip()
        if (candidate / COMPLETE).exists():
            return candidate
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, rank: int, world_size: int) -> tuple[TrainState, dict, list[dict], dict]:
    """(state, model state, every rank's optimizer state, this rank's RNG state).

    DeepSpeed's ZeRO optimizer loads the list of all ranks' partitions and takes its own."""
    state = TrainState.from_json((path / "meta.json").read_text())
    if state.world_size != world_size:
        raise RuntimeError(
            f"checkpoint {path} was written by {state.world_size} processes, this run has {world_size}; "
            "resume with the same number of processes (or start a new run.name)"
        )
    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optimizer_state = [
        torch.load(path / f"optimizer_rank{r}.pt", map_location="cpu", weights_only=True) for r in range(world_size)
    ]
    rng = torch.load(path / f"state_rank{rank}.pt", map_location="cpu", weights_only=True)
    return state, model_state, optimizer_state, rng


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's latest checkpoint by name (``model/<key>``, ``adamw/<group>/<key>``):
    the weights and rank 0's AdamW state, as either engine lays it out; for bit-for-bit comparisons
    (tests/test_engine.py, benchmarks/bench_engine.py)."""
    path = latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} holds no complete checkpoint")
    model = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optimizer = torch.load(path / "optimizer_rank0.pt", map_location="cpu", weights_only=True)
    adamw = optimizer.get("base_optimizer_state", optimizer)["state"]  # DeepSpeed ZeRO keeps it inside
    named = {f"model/{key}": value for key, value in model.items()}
    return named | {f"adamw/{group}/{key}": value for group, state in adamw.items() for key, value in state.items()}


# What an inference checkpoint keeps of the training config (format 2): the model, the two
# settings prediction scores with, and the data/eval sections as vdi.evaluate's defaults (read
# leniently: a renamed data.* or eval.* key must not break a saved model). track.*, run.*,
# optim.*, loss.* and the rest are training's business and stay in the run folder's config.yaml.
INFERENCE_EVAL_KEYS = ("nms_threshold", "contrastive_power")
EVALUATION_SECTIONS = ("data", "eval")


def save_inference_checkpoint(
    path: Path, retriever_state: dict, config: dict, metrics: dict, epoch: int, metadata: dict | None = None
) -> None:
    """What Predictor and `vdi.evaluate` load: retriever weights, the model config, the inference
    settings, metrics and data facts the Predictor needs (feature fps, the longest training
    video, the visual tower's weights identity). ``config`` is the run's resolved config (to_dict)."""
    from vdi import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    payload = {
        "format": "vdi-retriever",
        "format_version": CHECKPOINT_VERSION,
        "vdi_version": __version__,
        "model": config["model"],
        "inference": {key: config["eval"][key] for key in INFERENCE_EVAL_KEYS},
        "evaluation": {section: config[section] for section in EVALUATION_SECTIONS},
        "retriever": retriever_state,
        "metrics": metrics,
        "epoch": epoch,
        "metadata": metadata or {},
    }
    torch.save(payload, temporary)
    temporary.replace(path)


def load_inference_checkpoint(path: str | Path) -> dict:
    """Load a retriever checkpoint with weights_only=True; one-line errors for the usual problems."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of many kinds
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise InputError(
            f"{path} is not a readable vdi checkpoint ({type(error).__name__}: {first}); "
            "use a runs/<name>/best/model.pt written by vdi.train"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "vdi-retriever":
        raise InputError(f"{path} is not a vdi retriever checkpoint (use runs/<name>/best/model.pt)")
    if payload.get("format_version") not in READABLE_VERSIONS:
        raise InputError(
            f"{path} has checkpoint format {payload.get('format_version')} (vdi {payload.get('vdi_version')}); "
            f"this vdi reads formats {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if payload["format_version"] == 1:  # the whole training config: keep what format 2 keeps
        config = payload.pop("config")
        payload["model"] = config["model"]
        payload["inference"] = {key: config["eval"][key] for key in INFERENCE_EVAL_KEYS}
        payload["evaluation"] = {section: config.get(section, {}) for section in EVALUATION_SECTIONS}
    return payload


def inference_config(payload: dict, source: str) -> Config:
    """The Config a saved retriever runs with: its model section and inference settings exactly
    (they define the weights and the scores), the data and eval sections it was trained with as
    evaluation defaults (keys this vdi does not know are dropped with a warning), the rest defaults."""
    import dataclasses
    import warnings

    from vdi.config import DataConfig, EvalConfig, config_from_dict

    sections: dict = {"model": payload["model"]}
    for section in EVALUATION_SECTIONS:
        saved = dict(payload.get("evaluation", {}).get(section) or {})
        names = {field.name for field in dataclasses.fields({"data": DataConfig, "eval": EvalConfig}[section])}
        dropped = sorted(set(saved) - names)
        if dropped:
            warnings.warn(
                f"{source}: {section} keys {dropped} are unknown to this vdi and were ignored (renamed since?)",
                stacklevel=3,
            )
        sections[section] = {key: value for key, value in saved.items() if key in names}
    sections["eval"] |= payload["inference"]
    return config_from_dict(sections)


def usable_device(device: str) -> torch.device:
    """``device`` as a torch.device; a CUDA device on a machine without one (or an unknown name)
    raises :class:`InputError` naming the flag and the fix."""
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a device name: use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is visible on this machine; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return resolved


def load_retriever(path: str | Path, device: str = "cpu") -> tuple[MomentRetriever, Config, dict]:
    """(MomentRetriever with the checkpoint's weights on ``device``, its Config, the payload).
    The text tower is built from the config's architecture; its weights come from the checkpoint."""
    from vdi.encoders import TextEncoder, create_clip
    from vdi.model import MomentRetriever

    payload = load_inference_checkpoint(path)
    cfg = inference_config(payload, str(path))
    retriever = MomentRetriever(
        cfg.model, TextEncoder(create_clip(cfg.model.clip.name, None, cfg.model.clip.config_dir))
    )
    device = usable_device(device)
    try:
        loaded = retriever.load_state_dict(payload["retriever"], strict=False)
    except RuntimeError as error:  # e.g. "size mismatch for head.conv.weight": weights vs config
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error)[:160])
        raise InputError(
            f"{path}: its weights do not fit the model its own config describes ({first}); the checkpoint was "
            "edited or mixed from two runs: use an unmodified runs/<name>/best/model.pt"
        ) from None
    if loaded.missing_keys or loaded.unexpected_keys:
        raise InputError(
            f"{path} does not fit this vdi's model ({len(loaded.missing_keys)} missing, "
            f"{len(loaded.unexpected_keys)} unexpected weights; written by vdi {payload.get('vdi_version')})"
        )
    return retriever.to(device), cfg, payload


# Keys a run may change between its start and a resume: how it is tracked, logged and run, and
# how long it goes on; not what it computes.
RESUMABLE_CHANGES = (
    "track.",
    "run.preset",
    "run.resume",
    "run.restart",
    "run.device",
    "data.num_workers",
    "optim.max_epochs",
    "eval.patience",
    "dist.verify_sync_steps",
    "dist.extensions_dir",
)


def _saved_flat(path: Path) -> dict:
    import yaml

    from vdi.config import ConfigError, config_from_dict, flatten

    data = yaml.safe_load(path.read_text()) or {}
    try:  # onto today's schema, so keys added since compare as their defaults
        return flatten(config_from_dict(data))
    except ConfigError:
        flat: dict = {}

        def walk(node, prefix: str) -> None:
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                else:
                    flat[f"{prefix}{key}"] = value

        walk(data, "")
        return flat


def check_run_folder(run_dir: Path, cfg: Config) -> bool:
    """Before a run writes anything into ``run_dir``: refuse to resume (or overwrite) a run made
    with another config. Returns True when ``run.restart`` asks to move the old run aside first."""
    from vdi.config import ConfigError, flatten

    saved = run_dir / "config.yaml"
    has_work = latest_checkpoint(run_dir) is not None or (run_dir / "best" / "model.pt").exists()
    if not has_work:
        return False
    if cfg.run.restart:
        return True
    ways_out = (
        "choose a new run.name, or set run.restart=true to move the old run aside "
        f"(to {run_dir.name}.replaced-<time>) and start over"
    )
    if not cfg.run.resume:
        raise ConfigError(f"run folder {run_dir} holds a run and run.resume=false would overwrite it: {ways_out}")
    if not saved.exists():
        return False
    old, new = _saved_flat(saved), flatten(cfg)
    changed = [
        key
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if changed:
        shown = ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"run folder {run_dir} holds a run made with another config ({shown}{more}): {ways_out}")
    return False


def move_aside(run_dir: Path) -> Path:
    """Rename a run folder to ``<name>.replaced-<time>`` (nothing is deleted)."""
    import time

    target = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name}-{suffix}")
        suffix += 1
    run_dir.rename(target)
    return target


__all__ = [
    "RESUMABLE_CHANGES",
    "LoaderState",
    "TrainState",
    "check_run_folder",
    "checkpoint_tensors",
    "complete_checkpoints",
    "fault_point",
    "inference_config",
    "latest_checkpoint",
    "load_checkpoint",
    "load_inference_checkpoint",
    "load_retriever",
    "move_aside",
    "rng_state",
    "save_checkpoint",
    "save_inference_checkpoint",
    "set_rng_state",
    "usable_device",
]
