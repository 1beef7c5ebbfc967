"""What limits learning on the synthetic world (issue: the world as a working benchmark, step 1).

    python sweeps/world_diagnosis.py probes [--checkpoint runs/<name>/best/model.pt]
    python sweeps/world_diagnosis.py oracle [key=value ...]
    python sweeps/world_diagnosis.py curve --epochs 36 [key=value ...]
    python sweeps/world_diagnosis.py visibility | identifiability

* ``probes``: linear probes (multinomial logistic regression, L2 chosen on a slice of train) on
  the frozen per-frame CLIP features of each annotated moment, fitted on train moments and scored
  on val moments, for the acting object's colour and shape and for the action. Three moment
  representations: the mean of the moment's frames (order-free), the means of its two halves and
  their difference (order-aware), and, with ``--checkpoint``, the head's proposal features at the
  moment's best grid cell (what the MMN head itself offers the sentence).
* ``oracle``: the synthetic preset's baseline (injection off) trained with a perfect sentence
  encoder: each sentence becomes the one-hot code of what it says (colour, shape, size word,
  action; from the generator's vocabulary) instead of the CLIP text tower's features. If the
  oracle grounds well and the text tower does not, the text side is what fails to learn; if the
  oracle fails too, the video side cannot represent it.
* ``curve``: the baseline at a longer schedule, printing the per-epoch validation curve.
* ``visibility``: from the renderer's object states (``world.event_change``; no features needed), how much
  each action changes its object between the moment's first and last frame and at its peak:
  displacement in pixels, size ratio, opacity change; "visible" = the end state differs from the
  start by at least half a 3 x 3 position cell (10.7 px), a size ratio of 1.25, or 0.5 opacity.
  An action that changes nothing visible cannot be grounded from any frame feature.
* ``identifiability``: from the generator's specifications (no rendering), which words a query
  needs to single out its moment among the events of its video: the action alone, the acting
  object's colour alone, neither (both needed), or not even both (another event of the same
  object does the same action: no sentence can tell the two apart). A split on which the action
  alone suffices for most queries tests action recognition, not the object words; a novel-colour
  split whose colour words are never needed cannot be harder than IID.

Every number comes from the world in ``data/synthetic`` (``python -m data_prep synthetic``);
runs go under ``runs/diagnosis``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from vdi.metric_keys import GAIN_R1_AT_05, R1_AT_05, MetricKey

PROJECT = Path(__file__).resolve().parents[1]
WORLD = PROJECT / "data" / "synthetic"


# -- the world's ground truth ---------------------------------------------------------------


def world_events(world: Path) -> dict[str, list]:
    """Per split: (video id, duration, [(start, end, colour, shape, size, action, sentence)])."""
    sys.path.insert(0, str(PROJECT))
    from data_prep.synthetic.build import world_specs
    from data_prep.synthetic.world import video_query_parts

    info_path = world / "world.json"
    if not info_path.exists():
        raise SystemExit(f"error: {info_path} not found: build the world first (python -m data_prep synthetic)")
    info = json.loads(info_path.read_text())
    specs = world_specs(info["counts"], info["seed"], info["ood_colours"])
    durations = json.loads((world / "annotations" / "durations.json").read_text())
    result: dict[str, list] = {}
    for split, items in specs.items():
        rows = []
        for spec in items:
            if abs(durations[spec.video_id] - spec.duration) > 1e-6:
                raise SystemExit(f"error: {world} was built with other settings ({spec.video_id}'s duration differs)")
            events = []
            for event, (sentence, _, _) in zip(spec.events, video_query_parts(spec)):
                target = spec.objects[event.obj]
                events.append(
                    (event.start, event.end, target.colour, target.shape, target.size, event.action, sentence)
                )
            rows.append((spec.video_id, spec.duration, events))
        result[split] = rows
    return result


def _frames(world: Path, video_id: str) -> np.ndarray:
    from data_prep.features import load_features

    stored = load_features(world / "features", video_id, load_patches=False)
    features = stored["features"].astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-6)


def moment_features(frames: np.ndarray, fps: float, start: float, end: float) -> dict[str, np.ndarray]:
    first = min(len(frames) - 1, int(np.floor(start * fps)))
    last = max(first + 1, min(len(frames), int(np.ceil(end * fps))))
    window = frames[first:last]
    half = max(1, len(window) // 2)
    early, late = window[:half].mean(0), window[half:].mean(0) if len(window) > 1 else window.mean(0)
    return {"mean": window.mean(0), "halves": np.concatenate([early, late, late - early])}


# -- linear probes -----------------------------------------------------------------------------


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Multinomial logistic regression (LBFGS); L2 from {1e-4 .. 1e-1} chosen on 20% of train."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    classes = sorted(set(train_y.tolist()) | set(test_y.tolist()))
    index = {c: i for i, c in enumerate(classes)}

    def tensors(x, y):
        return torch.tensor((x - mean) / std, dtype=torch.float64), torch.tensor([index[v] for v in y])

    def fit(x, y, l2):
        weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return lambda z: (z @ weight + bias).argmax(1)

    x, y = tensors(train_x, train_y)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(len(y) * 0.8)
    fit_rows, pick_rows = torch.tensor(order[:cut]), torch.tensor(order[cut:])
    scores = {}
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        predict = fit(x[fit_rows], y[fit_rows], l2)
        scores[l2] = float((predict(x[pick_rows]) == y[pick_rows]).double().mean())
    best = max(scores, key=scores.get)
    predict = fit(x, y, best)
    tx, ty = tensors(test_x, test_y)
    with torch.no_grad():
        accuracy = float((predict(tx) == ty).double().mean()) * 100
    majority = max(np.mean(test_y == c) for c in classes) * 100
    return {"accuracy": accuracy, "majority": majority, "classes": len(classes), "l2": best}


def _proposal_features(checkpoint: Path, world: Path, events: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """The trained head's contrastive proposal feature at each moment's best grid cell."""
    from vdi.batch import resample_frames
    from vdi.checkpoint import load_retriever
    from vdi.metrics import temporal_iou

    retriever, cfg, _ = load_retriever(checkpoint)
    retriever.eval()
    grid = retriever.candidates
    num_clips = cfg.model.num_clips
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, rows in events.items():
        features, labels = [], []
        for video_id, duration, moments in rows:
            frames = torch.tensor(_frames(world, video_id))
            clips = resample_frames(frames, cfg.model.num_pre_clips)[None]
            with torch.no_grad():
                maps = retriever.video_maps(clips)
            cells = grid.double() * duration / num_clips
            for start, end, *label in moments:
                best = int(temporal_iou(cells, torch.tensor([[start, end]]).double().expand_as(cells)).argmax())
                features.append(maps.contrastive[0, :, best].numpy())
                labels.append(label)
        out[split] = {"x": np.stack(features), "labels": labels}
    return out


def run_probes(args) -> int:
    world = Path(args.world)
    events = world_events(world)
    spec = json.loads((world / "features" / "features.json").read_text())
    fps = spec["fps"]
    data: dict[str, dict[str, list]] = {}
    for split in ("train", "val"):
        rows = {"mean": [], "halves": [], "labels": []}
        for video_id, _, moments in events[split]:
            frames = _frames(world, video_id)
            for start, end, *label in moments:
                for name, value in moment_features(frames, fps, start, end).items():
                    rows[name].append(value)
                rows["labels"].append(label)
        data[split] = rows
    representations = {
        "frame mean (order-free)": ("mean", data),
        "two halves + difference (order-aware)": ("halves", data),
    }
    if args.checkpoint:
        proposals = _proposal_features(Path(args.checkpoint), world, {s: events[s] for s in ("train", "val")})
        representations["head proposal feature at the GT cell"] = ("x", proposals)
    # label = (colour, shape, size, action, sentence); "colour x action" is the event's identity in
    # its video since world v6 (each object does each action at most once; colours are distinct)
    targets = {"action": (3,), "colour": (0,), "shape": (1,), "colour x action": (0, 3)}
    results = {}
    print(f"linear probes: fit on {len(data['train']['labels'])} train moments, scored on "
          f"{len(data['val']['labels'])} val moments (accuracy %, majority class in brackets)")  # fmt: skip
    for title, (key, source) in representations.items():
        results[title] = {}
        cells = []
        for target, columns in targets.items():
            train_y = np.array(["/".join(str(label[c]) for c in columns) for label in source["train"]["labels"]])
            val_y = np.array(["/".join(str(label[c]) for c in columns) for label in source["val"]["labels"]])
            train_x, val_x = np.stack(source["train"][key]), np.stack(source["val"][key])
            result = linear_probe(train_x, train_y, val_x, val_y)
            results[title][target] = result
            cells.append(f"{target} {result['accuracy']:.1f} ({result['majority']:.1f}, {result['classes']} classes)")
        print(f"  {title}: " + "; ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


# -- the oracle sentence encoder ----------------------------------------------------------------


class OracleTextEncoder(torch.nn.Module):
    """Token rows -> the one-hot code of what the sentence says (a perfect, frozen text side)."""

    def __init__(self, codes: dict[bytes, torch.Tensor], output_dim: int, context_length: int):
        super().__init__()
        self.codes, self._dim, self._context = codes, output_dim, context_length
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # a device to follow

    @property
    def output_dim(self) -> int:
        return self._dim

    @property
    def context_length(self) -> int:
        return self._context

    def forward(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        rows = [self.codes[row.cpu().numpy().tobytes()] for row in tokens]
        return torch.stack(rows).to(self.anchor.device)


def sentence_code(sentence: str, dim: int) -> torch.Tensor:
    """One-hot blocks: colour, shape noun, size word (or none), action phrase."""
    from data_prep.synthetic.world import ACTION_PHRASES, COLOURS, SHAPE_NOUNS, SIZES

    words = f" {sentence} "
    code = torch.zeros(dim)
    offset = 0
    for options in (
        [[c] for c in COLOURS],
        list(SHAPE_NOUNS.values()),
        [[s] for s in SIZES],
        list(ACTION_PHRASES.values()),
    ):
        for position, phrases in enumerate(options):
            if any(re.search(rf"\b{re.escape(p)}\b", words) for p in phrases):
                code[offset + position] = 1.0
                break
        offset += len(options)
    if offset > dim:
        raise SystemExit(f"error: the oracle code needs {offset} dimensions, the text features have {dim}")
    return code


def _shard_sentences(shard_root: Path) -> set[str]:
    """Every query as the shards store it (the text the tokenizer sees in a batch)."""
    import webdataset as wds

    sentences = set()
    for shard in sorted(shard_root.glob("*/shard-*.tar")):
        for sample in wds.tarfile_samples([{"url": str(shard)}]):
            sentences.update(q["sentence"] for q in json.loads(sample["meta.json"])["queries"])
    return sentences


def run_oracle(args) -> int:
    import vdi.injection
    from vdi.config import load_config
    from vdi.encoders import Tokenizer
    from vdi.train import train

    overrides = [
        "injection.visual_context=none",
        "injection.spatial_dynamic=none",
        "run.root=runs/diagnosis",
        f"run.name={args.name or 'oracle'}",
        *args.overrides,
    ]
    # no text-tower gradients to probe; ZeRO refuses a parameter group with nothing to train
    # and no Q^s / Q^d codes for the dynamics probe
    overrides[:0] = ["track.diagnostics_every_steps=0", "dist.zero_stage=0", "data.probe_split=null"]
    cfg = load_config("synthetic", overrides)
    sentences = sorted(_shard_sentences(Path(cfg.data.shard_root)))
    tokenizer = Tokenizer(cfg.model.clip.name, cfg.model.clip.config_dir)
    build = vdi.injection.build_vdi_model

    def build_with_oracle(config):
        model = build(config)
        dim = model.retriever.text_encoder.output_dim
        tokens = tokenizer(sentences).tokens
        codes = {row.numpy().tobytes(): sentence_code(text, dim) for row, text in zip(tokens, sentences)}
        model.retriever.text_encoder = OracleTextEncoder(codes, dim, model.retriever.text_encoder.context_length)
        return model

    vdi.injection.build_vdi_model = build_with_oracle  # train() builds its model through this name
    result = train(cfg)
    return 0 if result["status"] == "finished" else 1


def run_curve(args) -> int:
    from vdi.config import load_config
    from vdi.train import train

    cfg = load_config(
        "synthetic",
        [
            "injection.visual_context=none",
            "injection.spatial_dynamic=none",
            "run.root=runs/diagnosis",
            f"run.name={args.name or f'curve{args.epochs}'}",
            f"optim.max_epochs={args.epochs}",
            "eval.patience=0",
            "eval.epoch_splits=[]",  # a curve of every split
            *args.overrides,
        ],
    )
    result = train(cfg)
    print("epoch  val R1@0.5  val gain  test R1@0.5  ood R1@0.5")
    columns = tuple(
        MetricKey(split, name).flat
        for split, name in (("val", R1_AT_05), ("val", GAIN_R1_AT_05), ("test", R1_AT_05), ("ood", R1_AT_05))
    )
    for row in result.get("history", []):
        values = [row.get(column, float("nan")) for column in columns]
        print(f"{row['epoch']:5d}  {values[0]:10.2f}  {values[1]:8.2f}  {values[2]:11.2f}  {values[3]:10.2f}")
    return 0


# -- what each action changes in the pixels ----------------------------------------------------


def action_visibility(specs: list) -> dict[str, dict[str, float]]:
    """Per action: medians of the end-state change and the share of events visible at the end / at the peak."""
    from data_prep.synthetic.world import event_change

    rows: dict[str, list] = {}
    for spec in specs:
        for event in spec.events:
            change = event_change(spec, event)
            rows.setdefault(event.action, []).append(
                (change.shift, change.size_ratio, change.opacity, change.visible_at_end, change.visible_at_peak)
            )
    table = {}
    for action, values in sorted(rows.items()):
        array = np.array(values, dtype=np.float64)
        table[action] = {
            "events": len(values),
            "shift_px": float(np.median(array[:, 0])),
            "size_ratio": float(np.median(array[:, 1])),
            "opacity_change": float(np.median(array[:, 2])),
            "visible_at_end": float(array[:, 3].mean() * 100),
            "visible_at_peak": float(array[:, 4].mean() * 100),
        }
    return table


def run_visibility(args) -> int:
    sys.path.insert(0, str(PROJECT))
    from data_prep.synthetic.build import world_specs

    counts = {"train": args.videos}
    specs = world_specs(counts, args.seed, ["purple", "orange"])["train"]
    table = action_visibility(specs)
    print(f"{len(specs)} train videos of seed {args.seed}, as the generator samples them (no rendering needed)")
    print("action      events  shift px  size ratio  opacity   visible at end  visible at peak")
    for action, row in table.items():
        print(
            f"{action:10s}  {row['events']:6d}  {row['shift_px']:8.1f}  {row['size_ratio']:10.2f}  "
            f"{row['opacity_change']:7.2f}  {row['visible_at_end']:14.1f}%  {row['visible_at_peak']:14.1f}%"
        )
    total = sum(r["events"] for r in table.values())
    end = sum(r["visible_at_end"] * r["events"] for r in table.values()) / max(1, total)
    print(f"all         {total:6d}  visible at end {end:.1f}%")
    return 0


def run_identifiability(args) -> int:
    sys.path.insert(0, str(PROJECT))
    from data_prep.synthetic.build import world_specs
    from data_prep.synthetic.world import query_identifiability

    counts = {"train": args.videos, "val": args.videos * 3 // 14, "ood": args.videos * 3 // 14}
    specs = world_specs(counts, args.seed, ["purple", "orange"])
    print(f"what singles out a query's moment in its video (seed {args.seed}; percent of queries)")
    print("split  queries  action alone  colour alone  both needed  ambiguous  acting objects/video")
    for split, rows in specs.items():
        if not rows:
            continue
        share = query_identifiability(rows)
        print(
            f"{split:5s}  {share['queries']:7d}  {share['action alone']:12.1f}  {share['colour alone']:12.1f}  "
            f"{share['both needed']:11.1f}  {share['ambiguous']:9.1f}  {share['acting objects per video']:20.2f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from vdi.cli import set_process_env

    set_process_env()  # its runs train (and track) in this process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(WORLD))
    commands = parser.add_subparsers(dest="command", required=True)
    probes = commands.add_parser("probes", help="linear probes on the frozen features (and the head's)")
    probes.add_argument("--checkpoint", default=None, help="a trained run's best/model.pt for the head probe")
    probes.add_argument("--json", default=None)
    probes.set_defaults(run=run_probes)
    for name, runner in (("oracle", run_oracle), ("curve", run_curve)):
        sub = commands.add_parser(name)
        sub.add_argument("--name", default=None, help="run name under runs/diagnosis")
        sub.add_argument("overrides", nargs="*")
        if name == "curve":
            sub.add_argument("--epochs", type=int, default=36)
        sub.set_defaults(run=runner)
    visibility = commands.add_parser("visibility", help="what each action changes in the pixels")
    visibility.add_argument("--videos", type=int, default=700)
    visibility.add_argument("--seed", type=int, default=0)
    visibility.set_defaults(run=run_visibility)
    identifiability = commands.add_parser("identifiability", help="which words single out a query's moment")
    identifiability.add_argument("--videos", type=int, default=700)
    identifiability.add_argument("--seed", type=int, default=0)
    identifiability.set_defaults(run=run_identifiability)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
