"""The training engine: the only module that imports deepspeed.

DeepSpeed runs on the CPU (gloo, fp32) and on GPUs (nccl, bf16) with the ZeRO stage of the
config; the DeepSpeed JSON is generated from the config, never written by hand. The optimizer
is a client ``torch.optim.AdamW`` with two parameter groups (the text encoder at
``text_lr_ratio`` x the head's learning rate, as the paper) so DeepSpeed builds no fused ops.
MMN's schedule is applied per epoch: multi-step decay at the milestones, the text encoder
frozen (no gradient, learning rate 0) for the first ``freeze_text_epochs`` epochs, gradient
clipping at ``grad_clip``.

One fp32 CPU process (``dist.engine: auto``, ZeRO stage 1 or 2) steps with
:class:`SingleProcessZero` instead: DeepSpeed ZeRO-1's arithmetic at world size 1 (flat padded
fp32 groups, the fp64 per-tensor gradient norm, its clip formula, one fused AdamW call per group),
bit for bit, without the per-tensor Python loops that cost a third of a CPU step or the comm-op
JIT build; ``tests/test_engine.py`` checks the bits against DeepSpeed.

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
    initialises torch.distributed through DeepSpeed (not for :class:`SingleProcessZero`, whose
    one process needs no collective)."""
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
    ctx = DistContext(rank, world_size, local_rank, device, backend)
    if uses_single_process_zero(cfg, ctx):
        return ctx
    import deepspeed

    # DeepSpeed JIT-builds its CPU comm op once; keep the build in a cache folder
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cfg.dist.extensions_dir).resolve()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return ctx


def uses_single_process_zero(cfg: Config, ctx: DistContext) -> bool:
    """Whether this run steps with :class:`SingleProcessZero` rather than DeepSpeed."""
    return (
        cfg.dist.engine == "auto"
        and ctx.world_size == 1
        and ctx.device.type == "cpu"
        and compute_dtype(cfg, ctx.device) == torch.float32
        and cfg.dist.zero_stage in (1, 2)
    )


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


# DeepSpeed pads each flat group to a multiple of 2 x world size elements (stage_1_and_2.py,
# nccl_start_alignment_factor); the same padding gives the same flat buffers.
_ZERO_ALIGNMENT = 2


class SingleProcessZero:
    """DeepSpeed ZeRO-1/2's optimizer step at world size 1 in fp32 (deepspeed 0.19.8,
    ``stage_1_and_2.py``), bit for bit: each parameter group's weights live in one flat fp32
    buffer (the module's parameters are views of it), padded as DeepSpeed pads; a step takes
    each group's gradient norm as DeepSpeed's ``get_grad_norm_direct`` does (per-tensor fp64
    norms, summed squares in fp32), combines the groups as ``combine_grad_norm_groups``, skips
    the step on a non-finite norm, scales the flat gradient by ``unscale_and_clip_grads``'s
    factor and runs the client AdamW on one group at a time."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip_grad: float) -> None:
        self.optimizer, self.clip_grad = optimizer, float(clip_grad)
        self.params: list[list[nn.Parameter]] = []
        self.flats: list[torch.Tensor] = []
        for group in optimizer.param_groups:
            params = list(group["params"])
            numel = sum(p.numel() for p in params)
            flat = torch.zeros(numel + (-numel % _ZERO_ALIGNMENT), dtype=torch.float32)
            offset = 0
            with torch.no_grad():
                for p in params:
                    flat[offset : offset + p.numel()].copy_(p.reshape(-1))
                    p.data = flat[offset : offset + p.numel()].view_as(p)
                    offset += p.numel()
            self.params.append(params)
            self.flats.append(flat)
            group["params"] = [flat]  # the optimizer steps the flat buffer, as DeepSpeed's does
        # Buffers kept across steps: allocating (and first touching) tens of MB a step was two
        # thirds of the step's cost; the values computed are the same.
        self.flat_grads = [torch.zeros_like(flat) for flat in self.flats]  # padding stays zero
        self.fp64 = torch.empty(max((flat.numel() for flat in self.flats), default=0), dtype=torch.float64)

    def _group_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.tensor(0.0, dtype=torch.float32)
        norms, offset = [], 0
        for g in grads:  # each gradient in fp64, the same tensor DeepSpeed's g.to(float64) makes
            exact = self.fp64[offset : offset + g.numel()].view(g.shape).copy_(g)
            norms.append(torch.linalg.vector_norm(exact, ord=2.0))
            offset += g.numel()
        total = torch.stack(norms).pow(2.0).sum().float().pow(1.0 / 2.0)
        return total.masked_fill(~torch.isfinite(total), -1.0)

    @torch.no_grad()
    def step(self) -> None:
        grads = [[p.grad if p.grad is not None else torch.zeros_like(p) for p in group] for group in self.params]
        norms = torch.stack([self._group_norm(group) for group in grads])
        invalid = bool((~torch.isfinite(norms) | (norms < 0)).any())
        total_norm = torch.linalg.vector_norm(norms, ord=2.0)
        if not invalid:
            scale = None
            if self.clip_grad > 0.0:  # unscale_and_clip_grads with fp32's loss scale of 1, same operations
                clip = torch.clamp(((total_norm / 1.0) + 1e-6) / self.clip_grad, min=1.0)
                scale = 1.0 / (clip * 1.0)
            groups = self.optimizer.param_groups
            for index, (group, flat) in enumerate(zip(grads, self.flats, strict=True)):
                numel = sum(g.numel() for g in group)
                if group:
                    torch.cat([g.reshape(-1) for g in group], out=self.flat_grads[index][:numel])
                flat.grad = self.flat_grads[index]
                if scale is not None:
                    flat.grad.mul_(scale)
                self.optimizer.param_groups = [groups[index]]
                try:
                    self.optimizer.step()
                finally:
                    self.optimizer.param_groups = groups
                flat.grad = None
        for group in self.params:
            for p in group:
                p.grad = None

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        # a checkpoint DeepSpeed's ZeRO-1/2 wrote at world size 1 (runs before dist.engine existed):
        # its client-optimizer state is this optimizer's, over the same flat groups
        self.optimizer.load_state_dict(state.get("base_optimizer_state", state))


class TrainingEngine:
    def __init__(self, model: nn.Module, cfg: Config, ctx: DistContext):
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
        self.freeze_text = False
        if uses_single_process_zero(cfg, ctx):
            self.engine, self.optimizer = None, SingleProcessZero(optimizer, cfg.optim.grad_clip)
            self._module = model
            return
        import deepspeed

        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(cfg, ctx), dist_init_required=False
        )
        self._module = self.engine.module

    @property
    def module(self) -> nn.Module:
        return self._module

    @property
    def description(self) -> str:
        stage, precision = self.cfg.dist.zero_stage, str(self.dtype).removeprefix("torch.")
        if self.engine is None:
            return (
                f"one CPU process, {precision}: DeepSpeed ZeRO-{stage}'s arithmetic in vdi.engine "
                "(dist.engine=deepspeed runs DeepSpeed itself)"
            )
        return f"DeepSpeed ZeRO-{stage}, {self.ctx.world_size} process(es), {self.ctx.backend}, {precision}"

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
        run = self.engine if self.engine is not None else self._module
        run.train()
        batch = batch.to(self.ctx.device, self.dtype if self.dtype != torch.float32 else None)
        terms = run(batch, epoch=epoch, freeze_text=self.freeze_text)
        if probe_gradients and not self.freeze_text:
            terms.diagnostics |= text_gradient_norms(self._module, terms)
        if self.engine is None:
            terms.total.backward()
            self.optimizer.step()
        else:
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
    "SingleProcessZero",
    "TrainingEngine",
    "compute_dtype",
    "deepspeed_config",
    "epoch_learning_rates",
    "init_distributed",
    "uses_single_process_zero",
]
