"""The training engine: the only module that imports deepspeed.

DeepSpeed runs on the CPU (gloo, fp32) and on GPUs (nccl, bf16) with the ZeRO stage of the
config; the DeepSpeed JSON is generated from the config, never written by hand. The optimizer
is a client ``torch.optim.AdamW`` with two parameter groups (the text encoder at
``text_lr_ratio`` x the head's learning rate, as the paper) so DeepSpeed builds no fused ops.
MMN's schedule is applied per epoch: multi-step decay at the milestones, the text encoder
frozen (no gradient, learning rate 0) for the first ``freeze_text_epochs`` epochs, gradient
clipping at ``grad_clip``.

Checkpoint payloads (``optimizer_state`` / ``load_optimizer_state``) contain tensors and plain
Python values only, so they load with ``torch.load(weights_only=True)``: the two DeepSpeed
objects in a ZeRO optimizer's state (the loss scaler and the parameter-slice map) are stored as
values and rebuilt from the live engine on load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vdi.batch import Batch
from vdi.config import Config
from vdi.distributed import average_, export_world
from vdi.errors import InputError
from vdi.injection import text_gradient_norms
from vdi.losses import LossTerms


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: Config) -> DistContext:
    """Rank / world from the environment (torchrun, SLURM, a Ray trial or nothing = one process);
    initialises torch.distributed through DeepSpeed."""
    import deepspeed

    env = os.environ
    world = export_world(env)  # DeepSpeed initialises torch.distributed from RANK, MASTER_ADDR, ...
    rank, world_size, local_rank = world.rank, world.world_size, world.local_rank
    use_gpu = torch.cuda.is_available() and cfg.run.device in ("auto", "cuda")
    backend = cfg.dist.backend if cfg.dist.backend != "auto" else ("nccl" if use_gpu else "gloo")
    if use_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        env.setdefault("DS_ACCELERATOR", "cpu")
        device = torch.device("cpu")
    # DeepSpeed JIT-builds its CPU comm op once; keep the build in a cache folder
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cfg.dist.extensions_dir).resolve()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return DistContext(rank, world_size, local_rank, device, backend)


def compute_dtype(cfg: Config, device: torch.device) -> torch.dtype:
    precision = cfg.dist.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def deepspeed_config(cfg: Config, ctx: DistContext) -> dict:
    dtype = compute_dtype(cfg, ctx.device)
    per_rank = cfg.optim.batch_size // ctx.world_size
    return {
        "train_micro_batch_size_per_gpu": per_rank,
        "train_batch_size": per_rank * ctx.world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.dist.zero_stage},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def epoch_learning_rates(cfg: Config, epoch: int) -> tuple[float, float]:
    """(head lr, text lr) for a 1-based epoch: MMN's multi-step decay and frozen text epochs."""
    decays = sum(1 for milestone in cfg.optim.milestones if epoch > milestone)
    head = cfg.optim.lr * cfg.optim.gamma**decays
    text = 0.0 if epoch <= cfg.optim.freeze_text_epochs else head * cfg.optim.text_lr_ratio
    return head, text


class TrainingEngine:
    def __init__(self, model: nn.Module, cfg: Config, ctx: DistContext):
        import deepspeed

        if cfg.optim.batch_size % ctx.world_size:
            raise InputError(
                f"optim.batch_size {cfg.optim.batch_size} must be divisible by the world size {ctx.world_size}"
            )
        self.cfg, self.ctx = cfg, ctx
        self.dtype = compute_dtype(cfg, ctx.device)
        text_ids = {id(p) for p in model.retriever.text_encoder.parameters()}
        trained = [p for p in model.parameters() if p.requires_grad]  # frozen ones get no optimiser state
        head = [p for p in trained if id(p) not in text_ids]
        text = [p for p in trained if id(p) in text_ids]
        optimizer = torch.optim.AdamW(
            [{"params": head, "name": "head"}, {"params": text, "name": "text"}],
            lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas),
            weight_decay=cfg.optim.weight_decay,
            # On the CPU, torch's fused AdamW is one kernel over DeepSpeed's flat buffer instead of a
            # dozen passes: the tiny CLIP's 49,408 x 128 token table made AdamW most of a batch-4
            # step (README "World v6"). Elementwise, so still deterministic. GPUs keep the default.
            fused=True if ctx.device.type == "cpu" else None,
        )
        model.to(ctx.device)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(cfg, ctx), dist_init_required=False
        )
        self.freeze_text = False

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def start_epoch(self, epoch: int) -> tuple[float, float]:
        head_lr, text_lr = epoch_learning_rates(self.cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = text_lr if group.get("name") == "text" else head_lr
        self.freeze_text = epoch <= self.cfg.optim.freeze_text_epochs
        return head_lr, text_lr

    def train_step(self, batch: Batch, epoch: int, probe_gradients: bool = False) -> LossTerms:
        """One optimiser step. ``probe_gradients`` (a sampled step) also measures the norm of the
        gradient each weighted loss group sends into the text tower (``grad/text_from_*``), with
        extra backward passes that leave the parameters' gradients untouched."""
        self.engine.train()
        batch = batch.to(self.ctx.device, self.dtype if self.dtype != torch.float32 else None)
        terms = self.engine(batch, epoch=epoch, freeze_text=self.freeze_text)
        if probe_gradients and not self.freeze_text:
            terms.diagnostics |= text_gradient_norms(self.engine.module, terms)
        self.engine.backward(terms.total)
        self.engine.step()
        return terms

    def sync_buffers(self) -> None:
        """Average BatchNorm running statistics over ranks (they are buffers, not all-reduced)."""
        if self.ctx.world_size == 1:
            return
        for buffer in self.module.buffers():
            if buffer.dtype.is_floating_point and buffer.numel() > 0:
                average_(buffer, self.ctx.world_size)

    # -- checkpoint payloads ---------------------------------------------------------------
    def optimizer_state(self) -> dict:
        state = self.optimizer.state_dict()
        scaler = state.get("loss_scaler")
        if scaler is not None:
            state["loss_scaler"] = {"cur_scale": float(getattr(scaler, "cur_scale", 1.0))}
        state.pop("param_slice_mappings", None)  # rebuilt by the live engine
        return _plain(state)

    def load_optimizer_state(self, states: list[dict]) -> None:
        """``states``: every rank's saved optimizer state, in rank order."""
        live = self.optimizer.state_dict()
        restored = []
        for state in states:
            state = _restore_enums(state, live)
            if "loss_scaler" in live:
                scaler = live["loss_scaler"]
                saved = state.get("loss_scaler") or {}
                if hasattr(scaler, "cur_scale") and "cur_scale" in saved:
                    scaler.cur_scale = saved["cur_scale"]
                state["loss_scaler"] = scaler
            if "param_slice_mappings" in live:
                state["param_slice_mappings"] = live["param_slice_mappings"]
            restored.append(state)
        if type(self.optimizer).__module__.startswith("deepspeed"):
            self.optimizer.load_state_dict(restored, load_from_fp32_weights=True)
        else:
            self.optimizer.load_state_dict(restored[self.ctx.rank])


def _plain(value):
    """Tensors and plain Python values only (weights_only-loadable): enums become their values."""
    import enum

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, torch.Tensor | int | float | str | bool):
        return value
    raise TypeError(f"optimizer state holds a {type(value).__name__}, which a weights_only checkpoint cannot store")


def _restore_enums(saved, live):
    import enum

    if isinstance(live, enum.Enum):
        return type(live)(saved)
    if isinstance(saved, dict) and isinstance(live, dict):
        return {key: _restore_enums(item, live[key]) if key in live else item for key, item in saved.items()}
    return saved


__all__ = [
    "DistContext",
    "TrainingEngine",
    "compute_dtype",
    "deepspeed_config",
    "epoch_learning_rates",
    "init_distributed",
]
