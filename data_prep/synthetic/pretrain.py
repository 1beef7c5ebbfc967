"""Image-text pre-training of the synthetic world's tiny CLIP, on the CPU, with open_clip's loss.

The corpus is single frames of the world with *static* captions ("a small red circle and a big
blue star in the forest"): objects, colours, sizes and scenes, never an action word. Frames are
rendered on the fly (the renderer is cheap), including the appearances objects take in videos
(grown, shrunk, rotated, half-faded), so the frozen visual tower later sees nothing new.

Contrastive captions alone let both towers ignore shape (colour, size and scene already tell
the captions of a batch apart; see the stack notes), so two levers are used, measured in
``benchmarks/bench_synthetic.py``:

* an auxiliary attribute loss on the image tower: linear heads on the image embedding predict,
  for each colour, whether an object of that colour is present, where it is (x, y), its size,
  opacity and shape, and the scene (``AttributeHeads``; the per-colour binding since world v6);
* hard-negative batches: a batch is made of groups whose frames share the scene and object
  layout and differ in one attribute of one object (mostly its shape), so only that attribute's
  words can match captions to frames.

Captions also say where each object is (a 3 x 3 grid: "at the top left", "on the right"):
still-image facts, but without them the global image feature does not encode position (a
linear probe found R^2 ~ 0 for x and y) and no motion could show in the frame features.

Zero-shot accuracy is measured on held-out single-object frames with prompt ensembling.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_prep.synthetic.world import (
    COLOURS,
    FRAME_SIZE,
    POSITION_PHRASES,
    SCENES,
    SHAPE_NOUNS,
    SHAPES,
    SIZES,
    ObjectSpec,
    ObjectState,
    background,
    draw,
    position_cell,
    static_caption,
)

CLIP_NAME = "vdi-synthetic-vit"


@dataclass
class PretrainResult:
    steps: int
    seconds: float
    colour_accuracy: float
    shape_accuracy: float
    position_accuracy: float
    final_loss: float


def _random_object(rng: np.random.Generator, colour: str | None = None, shape: str | None = None) -> ObjectSpec:
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    x, y = (float(v) for v in rng.uniform(8, FRAME_SIZE - 8, 2))
    # mostly upright as in videos (no action turns an object since world v5; a few rotated frames stay for robustness)
    angle = float(rng.uniform(0, 2 * math.pi)) if rng.random() < 0.15 else 0.0
    return ObjectSpec(shape, colour, size, x, y, (0.0, 0.0), angle)


def _render(objects: list[ObjectSpec], scene: str, rng: np.random.Generator, seed: int) -> np.ndarray:
    return _render_with_states(objects, scene, rng, seed)[0]


def _render_with_states(
    objects: list[ObjectSpec], scene: str, rng: np.random.Generator, seed: int
) -> tuple[np.ndarray, list[ObjectState]]:
    states = []
    for obj in objects:
        # the appearances objects take in videos: grown / shrunk, rotated, fading
        scale = SIZES[obj.size] * float(rng.choice([1.0, 1.0, rng.uniform(0.6, 1.5)]))
        alpha = 1.0 if rng.random() < 0.9 else float(rng.uniform(0.5, 1.0))
        states.append(ObjectState(obj.x, obj.y, scale, obj.angle, alpha))
    image = draw(background(scene, seed), objects, states)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), states


def sample_group(rng: np.random.Generator, group_size: int) -> list[tuple[np.ndarray, str, list[ObjectSpec], str]]:
    """Frames sharing scene and layout that differ in one attribute of one object (mostly shape)."""
    scene = SCENES[int(rng.integers(len(SCENES)))]
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    base = [_random_object(rng) for _ in range(count)]
    varied = int(rng.integers(count))
    attribute = rng.choice(["shape", "colour", "size", "position"], p=[0.5, 0.2, 0.1, 0.2])
    seed = int(rng.integers(1 << 30))
    group = []
    choices = {"shape": SHAPES, "colour": list(COLOURS), "size": list(SIZES), "position": list(range(9))}[attribute]
    picks = rng.permutation(len(choices))
    for member in range(group_size):
        objects = [ObjectSpec(o.shape, o.colour, o.size, o.x, o.y, o.drift, o.angle) for o in base]
        value = choices[int(picks[member % len(choices)])]
        if attribute == "position":  # move the object into another cell of the 3 x 3 grid
            cell_size = FRAME_SIZE / 3
            objects[varied].x = (value % 3 + 0.5) * cell_size + float(rng.uniform(-4, 4))
            objects[varied].y = (value // 3 + 0.5) * cell_size + float(rng.uniform(-4, 4))
        else:
            setattr(objects[varied], attribute, value)
        member_rng = np.random.default_rng([seed, member])
        image, states = _render_with_states(objects, scene, member_rng, seed)
        group.append((image, static_caption(objects, scene, member_rng), objects, scene, states))
    return group


def sample_single(rng: np.random.Generator, count: int) -> list[tuple]:
    """Frames of 1-3 objects of distinct colours for the supervised warm start of the image tower."""
    items = []
    for _ in range(count):
        scene = SCENES[int(rng.integers(len(SCENES)))]
        colours = rng.permutation(list(COLOURS))
        count = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        objects = [_random_object(rng, colour=str(c)) for c in colours[:count]]
        seed = int(rng.integers(1 << 30))
        image, states = _render_with_states(objects, scene, rng, seed)
        items.append((image, "", objects, scene, states))
    return items


class AttributeHeads(nn.Module):
    """Auxiliary supervision of the image tower with still-image facts, per colour: is an object
    of that colour in the frame, where (x, y), how big and how opaque, and its shape; plus the
    scene. (World v6: "where is the red object" must be linearly readable from the global
    feature, or a tiny CLIP cannot show *which* object moved; v5's heads only said which colours
    and which cells were occupied, unbound, and a linear probe read a moment's action at 59%.)"""

    def __init__(self, dim: int):
        super().__init__()
        self.present = nn.Linear(dim, len(COLOURS))
        self.where = nn.Linear(dim, len(COLOURS) * 4)  # x, y, log size, opacity
        self.shape = nn.Linear(dim, len(COLOURS) * len(SHAPES))
        self.scene = nn.Linear(dim, len(SCENES))

    def loss(
        self,
        features: torch.Tensor,
        objects: list[list[ObjectSpec]],
        scenes: list[str],
        states: list[list[ObjectState]],
    ) -> torch.Tensor:
        colours = list(COLOURS)
        rows = len(objects)
        present = torch.zeros(rows, len(colours))
        where = torch.zeros(rows, len(colours), 4)
        shape = torch.full((rows, len(colours)), -100, dtype=torch.long)  # cross_entropy's ignore_index
        for row, (frame_objects, frame_states) in enumerate(zip(objects, states)):
            counts = {c: sum(o.colour == c for o in frame_objects) for c in colours}
            for obj, state in zip(frame_objects, frame_states):
                column = colours.index(obj.colour)
                present[row, column] = 1.0
                if counts[obj.colour] == 1:  # a colour shared by two objects has no single answer
                    where[row, column] = torch.tensor(
                        [
                            state.x / FRAME_SIZE * 2 - 1,
                            state.y / FRAME_SIZE * 2 - 1,
                            math.log(state.scale / 10.0),
                            state.alpha,
                        ]
                    )
                    shape[row, column] = SHAPES.index(obj.shape)
        features = features.float()
        known = shape >= 0
        predicted = self.where(features).view(rows, len(colours), 4)
        where_loss = (predicted - where).pow(2).sum(-1)[known].mean() if known.any() else features.sum() * 0
        shape_logits = self.shape(features).view(rows * len(colours), len(SHAPES))
        scene_target = torch.tensor([SCENES.index(s) for s in scenes])
        return (
            F.binary_cross_entropy_with_logits(self.present(features), present)
            + 4.0 * where_loss
            + F.cross_entropy(shape_logits, shape.flatten(), ignore_index=-100)
            + F.cross_entropy(self.scene(features), scene_target)
        )


def _normalise(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return (tensor - mean) / std


def zero_shot(model, tokenizer, seed: int = 12345, count: int = 600) -> tuple[float, float, float]:
    """Colour, shape and position (3 x 3 cell) accuracy on held-out single-object frames.

    Prompt ensembling: class "red" = mean embedding of "a {size} red {shape} {position}" over
    sizes, shapes and positions; likewise for shapes and positions."""
    from vdi.encoders import FrozenVisualEncoder, TextEncoder

    rng = np.random.default_rng([seed, 99])
    frames, colours, shapes, cells = [], [], [], []
    for index in range(count):
        obj = _random_object(rng)
        frames.append(_render([obj], SCENES[index % len(SCENES)], rng, seed + index))
        colours.append(list(COLOURS).index(obj.colour))
        shapes.append(SHAPES.index(obj.shape))
        cells.append(position_cell(obj.x, obj.y))
    encoder = FrozenVisualEncoder(model)
    text_encoder = TextEncoder(model)
    model.eval()
    with torch.no_grad():
        images = _normalise(np.stack(frames), encoder.mean, encoder.std)
        image_features = F.normalize(model.encode_image(images).float(), dim=-1)
        keys, prompts = [], []
        for c, colour in enumerate(COLOURS):
            for s, shape in enumerate(SHAPES):
                for p in range(9):
                    for size in SIZES:
                        keys.append((c, s, p))
                        prompts.append(f"a {size} {colour} {SHAPE_NOUNS[shape][0]} {POSITION_PHRASES[p // 3][p % 3]}")
        text = F.normalize(text_encoder(tokenizer(prompts)).float(), dim=-1)
        table = torch.zeros(len(COLOURS), len(SHAPES), 9, text.shape[1])
        for (c, s, p), feature in zip(keys, text):
            table[c, s, p] += feature / len(SIZES)
        accuracies = []
        for axis, truth in ((0, colours), (1, shapes), (2, cells)):
            other = tuple(a for a in range(3) if a != axis)
            classes = F.normalize(table.mean(dim=other), dim=-1)
            predicted = (image_features @ classes.T).argmax(dim=1)
            accuracies.append(float((predicted == torch.tensor(truth)).float().mean() * 100))
    model.train()
    return accuracies[0], accuracies[1], accuracies[2]


def pretrain(
    steps: int = 300,
    warmup_steps: int = 900,
    batch_size: int = 128,
    warmup_batch_size: int = 64,
    group_size: int = 8,
    lr: float = 1e-3,
    aux_weight: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    precision: str = "fp32",
    lock_image: bool = True,
) -> tuple[nn.Module, PretrainResult]:
    """Train the tiny CLIP from scratch; returns the model and its zero-shot figures.

    Phase 1 (``warmup_steps``): the image tower learns the attributes of frames of 1-3 objects of
    distinct colours with the per-colour heads (shape and where each object is are what
    contrastive captions alone hardly teach it).
    Phase 2 (``steps``): open_clip's contrastive loss on hard-negative caption batches plus the
    auxiliary attribute loss, which aligns the text tower with what the image tower knows.

    ``lock_image`` (default): the contrastive phase trains the text tower against the image tower
    as the attribute phase left it (locked-image tuning, LiT: Zhai et al., CVPR 2022), so the
    per-colour facts the warm start put into the image feature stay there and a contrastive step
    needs no image backward (about half the time).

    ``precision``: fp32 (default) or bf16 autocast. bf16 is emulated on CPUs without AVX-512
    BF16 / AMX: measured on an AVX2 EPYC, 4.60 s vs 0.27 s per attribute step and 12.94 s vs
    0.84 s per contrastive step (15-17x slower; ~2.2 h for the default 1,200 steps instead of
    ~8 min), and it makes the world depend on the CPU's bf16 kernels. fp32 runs the same
    arithmetic everywhere.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: use fp32 or bf16")
    import open_clip
    from open_clip.loss import ClipLoss
    from tqdm import tqdm

    from vdi.encoders import FrozenVisualEncoder, TextEncoder, create_clip

    torch.manual_seed(seed)
    model = create_clip(CLIP_NAME, None)
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    heads = AttributeHeads(model.visual.output_dim)
    # the trimmed text forward (captions are ~15 tokens of 77): same features, ~4x less work
    text_encoder = TextEncoder(model)
    encoder = FrozenVisualEncoder(model)  # only for its normalisation constants
    mean, std = encoder.mean, encoder.std
    model.visual.requires_grad_(True)
    model.train()
    parameters = list(model.parameters()) + list(heads.parameters())
    # fused: one kernel over all parameters (5 ms instead of 27 ms a step for this model on 2 cores)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.05, fused=True)
    total = warmup_steps + steps
    ramp = max(1, total // 30)

    def schedule(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = ClipLoss()
    rng = np.random.default_rng([seed, 2024])
    start = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(total), desc="pretrain tiny CLIP", disable=not progress)
    for step in bar:
        warm = step < warmup_steps
        if warm:
            items = sample_single(rng, warmup_batch_size)
        else:
            items = [item for _ in range(batch_size // group_size) for item in sample_group(rng, group_size)]
        images = _normalise(np.stack([i[0] for i in items]), mean, std)
        locked = lock_image and not warm
        if locked and step == warmup_steps:
            model.visual.requires_grad_(False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            with torch.no_grad() if locked else contextlib.nullcontext():
                image_features = model.encode_image(images)
            if locked:
                auxiliary = image_features.new_zeros(())  # the image tower no longer learns
            else:
                objects, scenes, states = [i[2] for i in items], [i[3] for i in items], [i[4] for i in items]
                auxiliary = heads.loss(image_features, objects, scenes, states)
            if warm:
                loss = auxiliary
            else:
                text_features = text_encoder(tokenizer([i[1] for i in items]))
                contrastive = loss_fn(
                    F.normalize(image_features.float(), dim=-1),
                    F.normalize(text_features.float(), dim=-1),
                    model.logit_scale.exp(),
                )
                loss = contrastive + aux_weight * auxiliary
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss.detach())
        if progress and step % 25 == 0:
            bar.set_postfix(phase="attributes" if warm else "contrastive", loss=f"{loss_value:.3f}")
    seconds = time.perf_counter() - start
    colour_accuracy, shape_accuracy, position_accuracy = zero_shot(model, tokenizer)
    model.eval()
    return model, PretrainResult(total, seconds, colour_accuracy, shape_accuracy, position_accuracy, loss_value)


__all__ = ["CLIP_NAME", "PretrainResult", "pretrain", "sample_group", "zero_shot"]
