"""Typed configuration: nested dataclasses, YAML presets and dotlist overrides.

A config is built in three layers, later layers winning:

1. the dataclass defaults below (the schema: every key that exists, with its type); the paper's
   and MMN's hyperparameters have no default here (``MISSING``): they are written once, in
   ``vdi/configs/charades_sta.yaml`` (:data:`PAPER_PRESET`);
2. a preset YAML (``vdi/configs/<name>.yaml``) or a user YAML path (none: the paper preset); a
   preset may name ``base: <other preset>`` to start from another preset (every shipped one
   builds on the paper preset);
3. dotlist overrides such as ``model.num_clips=16 loss.lambda_vc=0.2``.

Unknown keys and badly typed values raise :class:`ConfigError` with the key's name and,
where one is close, a suggestion. A key exists once: the DeepSpeed JSON, the MLflow params
and the Ray search space are all derived from this object.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from vdi.errors import UserError
from vdi.metric_keys import R1_AT_05

PRESET_DIR = Path(__file__).parent / "configs"
# The paper's (Sec. 4.1.3) and MMN's hyperparameters are written once, in this preset; the
# schema's fields for them have no default (MISSING), every other preset builds on it (base:),
# and a config loaded without a preset, or rebuilt from a checkpoint, starts from it.
PAPER_PRESET = "charades_sta"


class ConfigError(UserError, ValueError):
    """A config that cannot be built; the message names the key and the fix."""


@dataclass
class ClipConfig:
    # open_clip model name: a built-in (ViT-B-32) or one registered from a JSON config folder.
    name: str = MISSING
    # A pretrained tag (e.g. "openai", downloaded once into the open_clip/HF cache), an absolute
    # path to a local checkpoint (.pt / .bin / .safetensors), or null for random weights.
    pretrained: str | None = MISSING
    # Extra folder of open_clip JSON model configs (e.g. the synthetic world's tiny CLIP).
    config_dir: str | None = None


@dataclass
class ModelConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    # Frames are resampled to num_pre_clips (MMN's average rule), then pooled to num_clips.
    num_pre_clips: int = MISSING
    num_clips: int = MISSING
    # MMN sparse 2D map: counts of diagonals at stride 1, 2, 4, ...
    pooling_counts: list[int] = MISSING
    kernel_size: int = MISSING
    num_conv_layers: int = MISSING
    hidden_size: int = MISSING
    joint_size: int = MISSING
    # A residual 1D convolution of this kernel over the clip sequence before the 2D map (0 = none,
    # the paper's VDI, which removed MMN's pooling-module layer to keep CLIP's feature space).
    # Max-pooling a moment's clips keeps no order: without it "moves left" and "moves right" of
    # one object pool to the same proposal feature (see README, "World v5").
    clip_conv_kernel: int = 0
    # Run the text transformer on the batch's longest token length instead of 77 (exact for
    # CLIP's causal text tower; see vdi/encoders.py).
    trim_text: bool = True
    # Pack Q^s and Q^d of one sentence into one row of the text forward (block-diagonal causal
    # mask, positions restarting per block): same features, fewer padded tokens.
    pack_text: bool = True


@dataclass
class InjectionConfig:
    # L^vc probe (eq. 1): static = Q^s (paper default), full = Q, learned = no query (a learned
    # probe vector, Table 3's "w/o Q"), none = L^vc off. ("off" / false are accepted for none.)
    visual_context: str = MISSING
    # L^sd sequence model (eq. 4): transformer (paper default), lstm, none = L^sd off.
    spatial_dynamic: str = MISSING
    decoder_layers: int = 1
    decoder_heads: int = 8
    sequence_layers: int = 1
    sequence_heads: int = 8
    dropout: float = 0.1
    # Frames the injection modules see: the whole video (paper) or only the annotated moment.
    frames: str = "video"
    # L^sd pairs (eq. 5, 11): other_videos = only sentences of different videos (the paper's
    # "different videos (V and V')"; with one m~ per video a same-video pair has eps^v = 1), or
    # all = every pair, same-video ones included (this toolkit's earlier behaviour).
    sd_pairs: str = "other_videos"
    # Loss forms: paper = eq. 2 (L^vc) and eq. 5 (L^sd); contrastive = this toolkit's InfoNCE
    # variant (each FC(x^qd) must pick its own video-side target among the batch's), which a
    # constant target cannot solve (the paper's forms collapse on the synthetic world: README).
    vc_form: str = "paper"
    sd_form: str = "paper"


@dataclass
class TextConfig:
    spacy_model: str = "en_core_web_sm"
    parse_batch_size: int = 256


@dataclass
class LossConfig:
    lambda_iou: float = 1.0
    # MMN's CONTRASTIVE_WEIGHT (lambda^cl in eq. 11).
    lambda_cl: float = MISSING
    lambda_vc: float = MISSING
    lambda_sd: float = MISSING
    # IoU target rescale for the BCE (MMN MIN_IOU / MAX_IOU).
    min_iou: float = MISSING
    max_iou: float = MISSING
    tau_video: float = MISSING
    tau_sentence: float = MISSING
    # Temperature of the contrastive injection variants (injection.vc_form / sd_form).
    tau_injection: float = 0.1
    margin: float = MISSING
    # Same-video proposals with GT IoU below this are sentence-anchored negatives.
    negative_video_iou: float = 0.5
    # Same-video sentences whose GT moments overlap at or above this are not negatives.
    sentence_removal_iou: float = 0.5
    # MMN's ONLY_IOU: after this many epochs the contrastive term is scaled by contrastive_decay.
    contrastive_full_epochs: int = MISSING
    contrastive_decay: float = 0.01


@dataclass
class OptimConfig:
    lr: float = MISSING
    # The text encoder learns at text_lr_ratio x lr (paper: always 1/10).
    text_lr_ratio: float = MISSING
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 1.0e-5
    milestones: list[int] = MISSING
    gamma: float = 0.1
    max_epochs: int = MISSING
    grad_clip: float = 5.0
    # MMN's FREEZE_BERT: the text encoder is frozen for the first epochs.
    freeze_text_epochs: int = MISSING
    # Keep CLIP's token embedding table as pre-trained (the transformer, final LN and projection
    # still train). The table is most of a small text tower (49,408 x width) and AdamW updates all
    # of it each step although a batch uses a few hundred rows: ~30% of a step on the synthetic world.
    freeze_token_embedding: bool = False
    # Videos per batch (each with all its sentences).
    batch_size: int = MISSING


@dataclass
class DataConfig:
    # Dataset name recorded in manifests (charades_sta, activitynet, synthetic, ...).
    dataset: str = "charades_sta"
    # Folder holding one sub-folder of shards per split (written by python -m data_prep).
    shard_root: str = "data/charades_sta/shards"
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["test"])
    probe_split: str | None = None
    num_workers: int = 2
    shuffle_buffer: int = 256
    # Skip (and count) corrupt shards instead of failing.
    skip_corrupt: bool = False
    # Check every shard's sha256 against its manifest when a run first opens it (once per process
    # and file; about 1 s per GB). Off only for shards on storage you trust and cannot afford to read.
    verify_shards: bool = True
    # Use global patch tokens for L^sd (needed when spatial_dynamic is on).
    load_patches: bool = True
    # For datasets without an official validation split (Charades-STA, the CG splits): hold out
    # this fraction of the training videos (seeded by val_seed, the same for every run seed) as
    # the split named val_split. 0 = off, the paper presets' published protocol (selection on test).
    val_fraction: float = 0.0
    val_seed: int = 0
    val_split: str = "val"


@dataclass
class EvalConfig:
    nms_threshold: float = MISSING
    contrastive_power: float = 0.5
    recall_ks: list[int] = MISSING
    iou_thresholds: list[float] = MISSING
    # Early stopping / best checkpoint: metric on split (metric names as in vdi.metrics).
    select_split: str = "test"
    select_metric: str = R1_AT_05
    patience: int = 0  # 0 disables early stopping
    batch_size: int = 48
    # The splits evaluated after every epoch (empty = every data.eval_splits); it must hold
    # select_split. The others are evaluated once, with the best epoch's weights, at the end:
    # the same figures (evaluation is deterministic) for a fraction of the cost, and no test
    # curve to look at while training.
    epoch_splits: list[str] = field(default_factory=list)


@dataclass
class DistConfig:
    zero_stage: int = 1
    # auto = one fp32 CPU process with ZeRO stage 1 or 2 steps with vdi.engine's in-process
    # optimizer, which does DeepSpeed ZeRO-1's arithmetic at world size 1 bit for bit without
    # its per-tensor Python loops (a third of a CPU training step) or its comm-op JIT build;
    # every other run, and deepspeed, uses DeepSpeed.
    engine: str = "auto"
    # auto = bf16 on GPU, fp32 on CPU.
    precision: str = "auto"
    # auto = nccl on GPU, gloo on CPU.
    backend: str = "auto"
    # Where DeepSpeed's JIT-built ops are cached.
    extensions_dir: str = ".cache/torch_extensions"
    # Every N steps check that all ranks hold identical parameters and saw disjoint videos
    # (a checksum all-gather; 0 = off).
    verify_sync_steps: int = 0


@dataclass
class TrackConfig:
    enabled: bool = True
    experiment: str = "vdi"
    # null = an absolute sqlite file under run.root (mlflow.db).
    tracking_uri: str | None = None
    log_every_steps: int = 10
    # Every N steps also measure the gradient norm each loss sends into the text tower (extra
    # backward passes; 0 = off). Injection-target spreads are logged every log_every_steps.
    diagnostics_every_steps: int = 50
    log_checkpoint: bool = False
    # Nest this run under a parent run (a sweep sets it for its trials).
    parent_run_id: str | None = None
    # The run's name in the MLflow UI (null = run.name); a sweep names its trials for their row
    # and seed ("L^vc + L^sd / seed 3").
    run_name: str | None = None
    # Extra MLflow run tags (a sweep tags each trial with its ablation row, for the UI's group-by).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunConfig:
    name: str = "run"
    # All runs live below root; a run directory is root/name.
    root: str = "runs"
    seed: int = 0
    deterministic: bool = True
    resume: bool = True
    # Start over in a run folder that holds another run: the old folder is renamed to
    # <name>.replaced-<time> (nothing is deleted). Without it such a folder is refused.
    restart: bool = False
    device: str = "auto"
    # The preset or YAML the config was loaded from (load_config fills it; MLflow tags runs with it).
    preset: str = ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    run: RunConfig = field(default_factory=RunConfig)


_CHOICES = {
    "injection.visual_context": ("static", "full", "learned", "none"),
    "injection.spatial_dynamic": ("transformer", "lstm", "none"),
    "injection.frames": ("video", "moment"),
    "injection.sd_pairs": ("other_videos", "all"),
    "injection.vc_form": ("paper", "contrastive"),
    "injection.sd_form": ("paper", "contrastive"),
    "dist.precision": ("auto", "fp32", "bf16", "fp16"),
    "dist.engine": ("auto", "deepspeed"),
    "dist.backend": ("auto", "gloo", "nccl"),
}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for key in node:
            dotted = f"{prefix}{key}"
            keys.append(dotted)
            if not OmegaConf.is_missing(node, key):  # a paper hyperparameter before its preset: a leaf
                keys.extend(_all_keys(node[key], dotted + "."))
    return keys


def _unknown_key_error(schema: DictConfig, key: str, source: str) -> ConfigError:
    known = _all_keys(schema)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    if not close:
        close = [k for k in known if k.rsplit(".", 1)[-1] == leaf][:1]
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def _read_yaml(path: Path, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """Return the chain of (source, mapping) for a YAML file, its bases first."""
    if str(path) in seen:
        raise ConfigError(f"config {path} has a 'base' cycle: {' -> '.join(seen)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}".splitlines()[0]) from error
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    chain: list[tuple[str, dict]] = []
    base = data.pop("base", None)
    if base is not None:
        chain.extend(_read_yaml(_resolve_source(str(base)), (*seen, str(path))))
    chain.append((str(path), data))
    return chain


def _resolve_source(preset_or_path: str) -> Path:
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = PRESET_DIR / f"{preset_or_path}.yaml"
    if not preset.exists():
        raise ConfigError(
            f"unknown preset '{preset_or_path}'; presets: {', '.join(list_presets())} (or pass a .yaml path)"
        )
    return preset


def _merge(schema: DictConfig, data: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, data)
    except ConfigKeyError as error:
        key = error.full_key or str(error.key)
        raise _unknown_key_error(schema, key, source) from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        message = str(error).splitlines()[0]
        raise ConfigError(f"bad value for config key '{key}' in {source}: {message}") from None


# YAML 1.1 reads a bare `off` as the boolean false; OmegaConf then stores the string "False".
_SWITCHED_OFF = {"off", "false", "disabled"}


# (dotted key, lowest, highest, lowest allowed itself): values outside fail at load, naming the key
_RANGES: list[tuple[str, float, float, bool]] = [
    ("model.num_pre_clips", 1, math.inf, True),
    ("model.num_clips", 1, math.inf, True),
    ("model.clip_conv_kernel", 0, math.inf, True),
    ("model.kernel_size", 1, math.inf, True),
    ("model.num_conv_layers", 1, math.inf, True),
    ("model.hidden_size", 1, math.inf, True),
    ("model.joint_size", 1, math.inf, True),
    ("optim.lr", 0, math.inf, False),
    ("optim.text_lr_ratio", 0, math.inf, True),
    ("optim.weight_decay", 0, math.inf, True),
    ("optim.gamma", 0, 1, False),
    ("optim.max_epochs", 1, math.inf, True),
    ("optim.grad_clip", 0, math.inf, False),
    ("optim.freeze_text_epochs", 0, math.inf, True),
    ("eval.nms_threshold", 0, 1, False),
    ("loss.tau_injection", 0, math.inf, False),
    ("eval.contrastive_power", 0, math.inf, False),
    ("eval.patience", 0, math.inf, True),
    ("data.shuffle_buffer", 1, math.inf, True),
    ("data.num_workers", 0, math.inf, True),
    ("track.log_every_steps", 1, math.inf, True),
    ("track.diagnostics_every_steps", 0, math.inf, True),
]


def _check_ranges(cfg: Config) -> None:
    for dotted, low, high, low_allowed in _RANGES:
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        too_low = value < low if low_allowed else value <= low
        if too_low or value > high or (isinstance(value, float) and math.isnan(value)):
            bound = f"{'>=' if low_allowed else '>'} {low:g}" + (f" and <= {high:g}" if high != math.inf else "")
            raise ConfigError(f"config key '{dotted}' is {value}; it must be {bound}")
    thresholds, ks = cfg.eval.iou_thresholds, cfg.eval.recall_ks
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise ConfigError(f"config key 'eval.iou_thresholds' is {list(thresholds)}; each value must lie in (0, 1]")
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"config key 'eval.recall_ks' is {list(ks)}; each value must be >= 1")


def _validate(cfg: Config) -> None:
    for name in ("visual_context", "spatial_dynamic"):
        if str(getattr(cfg.injection, name)).lower() in _SWITCHED_OFF:
            setattr(cfg.injection, name, "none")
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"config key '{dotted}' is '{value}'; choose one of {', '.join(choices)}")
    _check_ranges(cfg)
    model = cfg.model
    if model.clip_conv_kernel % 2 == 0 and model.clip_conv_kernel != 0:
        raise ConfigError(
            f"model.clip_conv_kernel ({model.clip_conv_kernel}) must be odd (the clip sequence keeps its "
            "length), or 0 for none"
        )
    if model.num_pre_clips % model.num_clips != 0:
        raise ConfigError(
            f"model.num_pre_clips ({model.num_pre_clips}) must be a multiple of model.num_clips "
            f"({model.num_clips}): frames are average-pooled by num_pre_clips / num_clips"
        )
    from vdi.metrics import sparse_mask  # local: metrics imports nothing from config

    try:
        sparse_mask(model.num_clips, model.pooling_counts)
    except ValueError as error:
        raise ConfigError(f"model.pooling_counts: {error}") from None
    if not 0 < cfg.loss.min_iou < cfg.loss.max_iou <= 1:
        raise ConfigError("loss.min_iou and loss.max_iou must satisfy 0 < min_iou < max_iou <= 1")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction is {cfg.data.val_fraction}; choose a fraction in [0, 1) (0 = off)")
    if cfg.data.val_fraction > 0 and cfg.data.val_split == cfg.data.train_split:
        raise ConfigError(f"data.val_split '{cfg.data.val_split}' must differ from data.train_split")
    if cfg.optim.batch_size < 1 or cfg.eval.batch_size < 1:
        raise ConfigError("optim.batch_size and eval.batch_size must be >= 1")
    if cfg.dist.zero_stage not in (0, 1, 2):
        # stage 3 partitions the weights themselves; checkpoints save the module's full state_dict
        raise ConfigError(f"dist.zero_stage is {cfg.dist.zero_stage}; choose 0, 1 or 2 (ZeRO-3 is not supported)")
    from vdi.metric_keys import recall_names

    # checked here, before any epoch runs, so no rank waits on a selection that cannot be made
    if cfg.eval.select_split not in cfg.data.eval_splits:
        raise ConfigError(
            f"eval.select_split '{cfg.eval.select_split}' is not one of data.eval_splits {list(cfg.data.eval_splits)}"
        )
    unknown = [split for split in cfg.eval.epoch_splits if split not in cfg.data.eval_splits]
    if unknown:
        raise ConfigError(
            f"eval.epoch_splits {unknown} are not among data.eval_splits {list(cfg.data.eval_splits)}; "
            "list eval splits (or [] for all)"
        )
    if cfg.eval.epoch_splits and cfg.eval.select_split not in cfg.eval.epoch_splits:
        raise ConfigError(
            f"eval.epoch_splits {list(cfg.eval.epoch_splits)} must include eval.select_split '{cfg.eval.select_split}'"
        )
    names = recall_names(cfg.eval.recall_ks, cfg.eval.iou_thresholds)
    if cfg.eval.select_metric not in names:
        raise ConfigError(f"eval.select_metric '{cfg.eval.select_metric}' is not one of {names}")


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def looks_like_path(pretrained: str) -> bool:
    """model.clip.pretrained names a local checkpoint file (not a tag such as 'openai')."""
    return os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)


def pin_paths(cfg: Config) -> Config:
    """A copy of ``cfg`` with every local path absolute, so the saved config (checkpoints, MLflow
    params, trials and jobs started in other folders or on other nodes) points at the same files."""
    pinned = copy.deepcopy(cfg)

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    pinned.data.shard_root = absolute(pinned.data.shard_root)
    pinned.run.root = absolute(pinned.run.root)
    pinned.dist.extensions_dir = absolute(pinned.dist.extensions_dir)
    clip = pinned.model.clip
    if clip.pretrained and looks_like_path(clip.pretrained):
        clip.pretrained = absolute(clip.pretrained)
    if clip.config_dir:
        clip.config_dir = absolute(clip.config_dir)
    return pinned


def load_config(preset_or_path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Build a :class:`Config` from a preset name or YAML path plus dotlist overrides."""
    merged = OmegaConf.structured(Config)
    for source, data in _read_yaml(_resolve_source(str(preset_or_path or PAPER_PRESET))):
        merged = _merge(merged, data, source)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value (e.g. model.num_clips=16)")
        merged = _merge(merged, OmegaConf.from_dotlist(list(overrides)), "overrides")
    cfg = _complete(merged, str(preset_or_path or PAPER_PRESET))
    _validate(cfg)
    if not cfg.run.preset:
        cfg.run.preset = str(preset_or_path or PAPER_PRESET)  # a saved config (best.yaml) keeps its own
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a config saved with :func:`to_dict` (e.g. from a checkpoint), validating keys."""
    merged = OmegaConf.structured(Config)
    for source, preset in _read_yaml(_resolve_source(PAPER_PRESET)):  # what a saved section leaves out
        merged = _merge(merged, preset, source)
    cfg = _complete(_merge(merged, data, "saved config"), "saved config")
    _validate(cfg)
    return cfg


def _complete(merged: DictConfig, source: str) -> Config:
    """The typed config; a key without a value (a paper hyperparameter the YAML chain never set)
    fails naming the key and the fix."""
    try:
        cfg = OmegaConf.to_object(merged)
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(
            f"config key '{key}' has no value in {source}: set it, or build the YAML on the paper's preset "
            f"(base: {PAPER_PRESET})"
        ) from None
    assert isinstance(cfg, Config)
    return cfg


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(cfg: Config) -> dict[str, Any]:
    """Flat ``{"model.num_clips": 16, ...}`` view (MLflow params, Ray search spaces)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(to_dict(cfg), "")
    return flat


def check_overrides(overrides: list[str]) -> None:
    """Raise ConfigError for override keys that do not exist (before anything is submitted)."""
    schema = OmegaConf.structured(Config)
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+")
        if key not in set(_all_keys(schema)):
            raise _unknown_key_error(schema, key, "overrides")


__all__ = [
    "ClipConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DistConfig",
    "EvalConfig",
    "InjectionConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TextConfig",
    "TrackConfig",
    "check_overrides",
    "config_from_dict",
    "flatten",
    "list_presets",
    "load_config",
    "to_dict",
    "to_yaml",
]
