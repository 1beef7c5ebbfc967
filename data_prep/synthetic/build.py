"""python -m data_prep synthetic --out DIR: build the embedded synthetic world in one command.

Stages (each cached: a second run with the same settings is instant; ``--force`` redoes all):

1. ``videos``: render the train / IID val / IID test / novel-word OOD videos (H.264 via PyAV) and write
   their annotations in the Charades-STA text format plus a duration table;
2. ``clip``: copy the shipped tiny CLIP (``weights/``), or pre-train it on static captions
   (``pretrain.py``, ``--pretrain``) and report its
   zero-shot colour and shape accuracy; the checkpoint is also kept in a per-user cache
   (``VDI_CACHE_DIR``, default ``~/.cache/vdi``) keyed by the pre-training settings and the torch
   version, so another clone or a rebuilt world on the same machine copies it instead of
   pre-training again (the bytes are the same: pre-training is seeded and deterministic);
3. ``features``: decode the videos and extract features with the pre-trained visual tower
   through the normal ``data_prep`` path (the checkpoint loads as a local CLIP checkpoint);
4. ``shards``: write WebDataset shards + manifests per split through ``data_prep.shards``.

Splits follow the CG protocol: a few colours (``--ood-colours``, default purple and orange)
never occur in the VMR training (or IID test) videos and queries, but occur in the pre-training
captions; every query of the ``ood`` split names one of them. The dynamics probe (Q vs Q^s vs
Q^d, the paper's Fig. 3) runs on the IID test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

from vdi.errors import InputError

SPLITS = ("train", "val", "test", "ood")
DEFAULT_OUT = "data/synthetic"
CACHE_ENV = "VDI_CACHE_DIR"  # where built tiny CLIPs are kept across builds ("" or "none": no cache)


def default_cache_dir() -> Path | None:
    """VDI_CACHE_DIR, else $XDG_CACHE_HOME/vdi, else ~/.cache/vdi; None when VDI_CACHE_DIR is "" or "none"."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "none") else Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vdi"


def restore_cached_clip(entry: Path, checkpoint: Path, say) -> dict | None:
    """Copy a cached tiny CLIP to ``checkpoint``; its recorded stage info, or None when the entry is
    missing or its checkpoint no longer has the recorded sha256 (a damaged entry is reported and
    ignored: the stage pre-trains again and replaces it)."""
    import shutil

    from vdi.data.format import sha256_file

    info_file, cached = entry / "stage.json", entry / checkpoint.name
    if not (info_file.is_file() and cached.is_file()):
        return None
    info = json.loads(info_file.read_text())
    if sha256_file(cached) != info.get("sha256"):
        say(f"tiny CLIP: ignoring the damaged entry {entry} (checksum mismatch)")
        return None
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    temporary = checkpoint.with_suffix(".tmp")
    shutil.copyfile(cached, temporary)
    temporary.replace(checkpoint)
    return info


def store_cached_clip(entry: Path, checkpoint: Path, info: dict, say) -> None:
    """Keep a freshly pre-trained tiny CLIP in the cache (written aside, then renamed into place,
    so a reader never sees half an entry); a cache that cannot be written is reported, not fatal."""
    import shutil
    import tempfile

    from vdi.data.format import sha256_file

    staging = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=entry.parent))
        copy = Path(shutil.copyfile(checkpoint, staging / checkpoint.name))
        (staging / "stage.json").write_text(json.dumps({**info, "sha256": sha256_file(copy)}, indent=2))
        if entry.exists():
            shutil.rmtree(entry)  # a damaged entry, found above
        staging.replace(entry)
    except OSError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        say(f"tiny CLIP: not cached ({error}); set {CACHE_ENV} to a writable folder, or to none")


def stage_key(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# The frozen benchmark's tiny CLIP ships with the code (one folder laid out like a cache entry),
# so a fresh clone copies it instead of pre-training (283 s on a fast day, 1,003 s measured on a
# slow one). ``python -m data_prep synthetic --pretrain`` re-trains it and says whether the bytes
# are the shipped ones; tests/test_shipped_clip.py checks that they are.
SHIPPED_CLIPS = Path(__file__).with_name("weights")
# 4: "teal"; 5: fp32 pre-training (bf16 autocast is emulated and 15x slower on CPUs without AVX-512 BF16);
# 6: per-colour attribute heads (where / size / opacity / shape of each colour), fused AdamW;
# 7: the image tower locked in the contrastive phase (LiT)
CLIP_VERSION = 7


def clip_stage_key(pretrain_steps: int, pretrain_warmup_steps: int, seed: int) -> str:
    return stage_key(steps=pretrain_steps, warmup=pretrain_warmup_steps, seed=seed, version=CLIP_VERSION)


def shipped_clip_entry(key: str) -> Path:
    """Where the shipped tiny CLIP of these pre-training settings would be. The entry names torch's
    release without its build tag (the CPU kernels of 2.14.1+cpu and 2.14.1+cu130 are the same);
    another release may round differently, so it pre-trains instead."""
    import torch

    return SHIPPED_CLIPS / f"{key}-torch{torch.__version__.split('+')[0]}"


def prepare_clip(
    out: Path,
    checkpoint: Path,
    pretrain_steps: int,
    pretrain_warmup_steps: int,
    seed: int,
    cache_dir: str | Path | None,
    force: bool,
    pretrain_here: bool,
    verbose: bool,
    say,
) -> tuple[dict, bool]:
    """The clip stage: the stage info (``source``: shipped, cache or pretrained) and whether any work
    was done. Order: this world's finished stage, the shipped weights, the per-user cache, then
    pre-training (``force`` or ``pretrain_here`` go straight to pre-training)."""
    import torch

    from data_prep.synthetic.pretrain import pretrain
    from vdi.data.format import sha256_file

    key = clip_stage_key(pretrain_steps, pretrain_warmup_steps, seed)
    clip_info = stage_done(out, "clip", key)
    if clip_info is not None and checkpoint.exists() and not (force or pretrain_here):
        return clip_info, False
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    # the torch version is in the entry's name: another version may round differently
    entry = Path(cache_dir) / "synthetic-clip" / f"{key}-torch{torch.__version__}" if cache_dir else None
    shipped = shipped_clip_entry(key)
    if not (force or pretrain_here):
        for source, candidate in (("shipped", shipped), ("cache", entry)):
            restored = restore_cached_clip(candidate, checkpoint, say) if candidate is not None else None
            if restored is not None:
                where = "the shipped weights" if source == "shipped" else "the cache"
                say(f"tiny CLIP: copied from {where} {candidate}")
                kept = {k: v for k, v in restored.items() if k not in ("key", "sha256", "source")}
                return mark_done(out, "clip", key, **kept, source=source), True
    torch.manual_seed(seed)
    model, result = pretrain(steps=pretrain_steps, warmup_steps=pretrain_warmup_steps, seed=seed, progress=verbose)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    temporary = checkpoint.with_suffix(".tmp")
    torch.save(model.state_dict(), temporary)
    temporary.replace(checkpoint)
    digest = sha256_file(checkpoint)
    shipped_info = shipped / "stage.json"
    if shipped_info.is_file():
        same = json.loads(shipped_info.read_text()).get("sha256") == digest
        say(
            "tiny CLIP: pre-trained bytes identical to the shipped weights"
            if same
            else f"tiny CLIP: pre-trained here, sha256 {digest[:12]}..., DIFFERS from the shipped weights {shipped}: "
            "this machine's float arithmetic differs, so this world is not the frozen benchmark's"
        )
    clip_info = mark_done(
        out,
        "clip",
        key,
        steps=result.steps,
        seconds=round(result.seconds, 1),
        zero_shot_colour=round(result.colour_accuracy, 1),
        zero_shot_shape=round(result.shape_accuracy, 1),
        zero_shot_position=round(result.position_accuracy, 1),
        source="pretrained",
    )
    if entry is not None:
        store_cached_clip(entry, checkpoint, clip_info, say)
    return clip_info, True


def stage_done(out: Path, name: str, key: str) -> dict | None:
    marker = out / ".stages" / f"{name}.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        if data.get("key") == key:
            return data
    return None


def mark_done(out: Path, name: str, key: str, **info) -> dict:
    marker = out / ".stages" / f"{name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    data = {"key": key, **info}
    marker.write_text(json.dumps(data, indent=2))
    return data


VIDEOS_VERSION = 6  # 3: lossless H.264 (reproducible decoded pixels); 4: phrasings the Q^s / Q^d rule splits;
# 5: only visible actions (no spin / still), moves and size changes sampled where they fit, 3-5 events;
# 6: two actors of distinct colours, each (object, action) once per video (every query has one answer)


def _render_one(task: tuple) -> tuple[str, str, float, list]:
    from data_prep.synthetic.world import render_frames, sample_video, video_queries, write_video

    split, index, seed, colours, acting, folder = task
    spec = sample_video(seed, index, colours, prefix=split, acting_colours=acting)
    write_video(Path(folder) / f"{spec.video_id}.mp4", render_frames(spec))
    return split, spec.video_id, spec.duration, video_queries(spec)


def world_specs(counts: dict[str, int], seed: int, ood_colours: list[str]) -> dict[str, list]:
    """Every split's video specifications, as ``build_videos`` renders them (no rendering)."""
    from data_prep.synthetic.world import COLOURS, sample_video

    train_colours = [c for c in COLOURS if c not in ood_colours]
    specs: dict[str, list] = {}
    for split in SPLITS:
        ood = split == "ood"
        colours = list(COLOURS) if ood else train_colours
        specs[split] = [
            sample_video(seed, index, colours, prefix=split, acting_colours=ood_colours if ood else None)
            for index in range(counts.get(split, 0))
        ]
    return specs


def build_videos(out: Path, counts: dict[str, int], seed: int, ood_colours: list[str], workers: int) -> dict:
    from data_prep.synthetic.world import COLOURS

    train_colours = [c for c in COLOURS if c not in ood_colours]
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    tasks = []
    for split in SPLITS:
        for index in range(counts[split]):
            acting = ood_colours if split == "ood" else None
            colours = list(COLOURS) if split == "ood" else train_colours
            tasks.append((split, index, seed, colours, acting, str(videos)))
    annotations: dict[str, list[str]] = {split: [] for split in SPLITS}
    durations = {}
    with multiprocessing.get_context("fork").Pool(max(1, workers)) as pool:
        for split, video_id, duration, queries in pool.imap(_render_one, tasks, chunksize=8):
            durations[video_id] = duration
            for start, end, sentence in queries:
                annotations[split].append(f"{video_id} {start:.2f} {end:.2f}##{sentence}")
    folder = out / "annotations"
    folder.mkdir(exist_ok=True)
    for split, lines in annotations.items():
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (folder / "durations.json").write_text(json.dumps(durations, indent=1))
    return {"videos": len(durations), "queries": {s: len(v) for s, v in annotations.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument(
        "--videos",
        type=int,
        default=1000,
        help="videos of train + test + ood (70%%, 15%%, 15%%); val adds as many as test",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ood-colours", default="purple,orange")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="contrastive steps")
    parser.add_argument("--pretrain-warmup-steps", type=int, default=900, help="supervised attribute steps first")
    parser.add_argument("--fps", type=float, default=4.0, help="feature frames per second")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--force", action="store_true", help="redo every stage (and ignore the tiny-CLIP cache)")
    parser.add_argument(
        "--no-cache", action="store_true", help=f"neither read nor write the tiny-CLIP cache (see {CACHE_ENV})"
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="pre-train the tiny CLIP here instead of copying the shipped (or cached) weights, and say "
        "whether the bytes are the shipped ones",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    build(
        Path(args.out),
        args.videos,
        args.seed,
        [c for c in args.ood_colours.split(",") if c],
        args.pretrain_steps,
        args.pretrain_warmup_steps,
        args.fps,
        args.workers,
        args.force,
        not args.quiet,
        cache_dir=None if args.no_cache else "default",
        pretrain_here=args.pretrain,
    )
    return 0


def build(
    out: Path,
    total_videos: int = 1000,
    seed: int = 0,
    ood_colours: list[str] | None = None,
    pretrain_steps: int = 300,
    pretrain_warmup_steps: int = 900,
    fps: float = 4.0,
    workers: int = 2,
    force: bool = False,
    verbose: bool = True,
    cache_dir: str | Path | None = "default",
    pretrain_here: bool = False,
) -> dict:
    """Build (or reuse) every stage; returns world.json's content (incl. this call's stage times).
    ``cache_dir``: where tiny CLIPs are kept across builds ("default": ``default_cache_dir()``;
    None: no cache). ``pretrain_here``: pre-train the tiny CLIP even when the shipped weights or
    the cache hold it (and say whether the bytes match the shipped ones)."""

    from data_prep.synthetic.world import COLOURS

    ood_colours = ood_colours if ood_colours is not None else ["purple", "orange"]
    unknown = [c for c in ood_colours if c not in COLOURS]
    if unknown:
        raise InputError(f"unknown OOD colour {unknown[0]}; colours: {', '.join(COLOURS)}")
    out.mkdir(parents=True, exist_ok=True)
    if force:
        for marker in (out / ".stages").glob("*.json"):
            marker.unlink()
    test = max(1, round(total_videos * 0.15))
    # val: IID videos disjoint from train, sized like test, for checkpoint selection and early
    # stopping (test and ood are only reported); rendered from its own seed stream, so adding it
    # left the train/test/ood videos unchanged
    counts = {"train": total_videos - 2 * test, "val": test, "test": test, "ood": test}
    timings: dict[str, float] = {}
    say = print if verbose else (lambda *a, **k: None)

    # 1. videos + annotations
    key = stage_key(counts=counts, seed=seed, ood=ood_colours, version=VIDEOS_VERSION)
    started = time.perf_counter()
    info = stage_done(out, "videos", key)
    if info is None:
        info = mark_done(out, "videos", key, **build_videos(out, counts, seed, ood_colours, workers))
        timings["videos"] = time.perf_counter() - started
        say(f"videos: {info['videos']} rendered and encoded in {timings['videos']:.1f} s; queries {info['queries']}")
    else:
        say(f"videos: cached ({info['videos']} videos)")

    # 2. the tiny CLIP: shipped, cached or pre-trained here
    from data_prep.synthetic.pretrain import CLIP_NAME

    checkpoint = out / "clip" / f"{CLIP_NAME}.pt"
    started = time.perf_counter()
    clip_info, clip_work = prepare_clip(
        out, checkpoint, pretrain_steps, pretrain_warmup_steps, seed, cache_dir, force, pretrain_here, verbose, say
    )
    if clip_work:
        timings["clip"] = time.perf_counter() - started
    source = {"shipped": "the shipped weights", "cache": "the per-user cache", "pretrained": "pre-trained here"}
    say(
        f"tiny CLIP ({source.get(clip_info.get('source'), 'built earlier')}): {clip_info['steps']} steps "
        f"({clip_info['seconds']} s when pre-trained); zero-shot on held-out frames: "
        f"colour {clip_info['zero_shot_colour']}%, shape {clip_info['zero_shot_shape']}%, "
        f"position (3x3) {clip_info.get('zero_shot_position', '?')}%"
    )

    # 3. features through the normal data_prep path
    from data_prep.features import extract_features

    features = out / "features"
    video_dir = out / "videos"
    ids = sorted(json.loads((out / "annotations" / "durations.json").read_text()))
    key = stage_key(
        videos=stage_done(out, "videos", stage_key(counts=counts, seed=seed, ood=ood_colours, version=VIDEOS_VERSION))[
            "key"
        ],
        clip=clip_info["key"],
        fps=fps,
    )
    started = time.perf_counter()
    if stage_done(out, "features", key) is None:
        if features.exists():
            import shutil

            shutil.rmtree(features)
        summary = extract_features(
            [(video_id, video_dir / f"{video_id}.mp4") for video_id in ids],
            features,
            CLIP_NAME,
            str(checkpoint.resolve()),
            fps=fps,
            patches=True,
            device="cpu",
            batch_frames=1024,
            workers=workers,
            progress=verbose,
            # fp32: the README's results were measured on fp32 features (bf16 is faster, not identical)
            precision="fp32",
        )
        if summary.failed:
            raise RuntimeError(f"feature extraction failed for {sum(summary.failed.values())} synthetic videos")
        mark_done(out, "features", key, frames=summary.frames, seconds=round(summary.seconds, 1))
        timings["features"] = time.perf_counter() - started
    else:
        say("features: cached")

    # 4. shards
    from data_prep.annotations import read_charades_sta
    from data_prep.shards import build_split
    from vdi.text import QueryParser

    shard_root = out / "shards"
    key = stage_key(features=key, version=1)
    started = time.perf_counter()
    if stage_done(out, "shards", key) is None:
        parser = QueryParser()
        for split in SPLITS:
            read = read_charades_sta(out / "annotations" / f"{split}.txt", verbose=verbose)
            build_split(
                "synthetic",
                split,
                read.records,
                features,
                shard_root,
                hygiene=[read.report.line()],
                parser=parser,
                verbose=verbose,
            )
        mark_done(out, "shards", key)
        timings["shards"] = time.perf_counter() - started
    else:
        say("shards: cached")
    if timings:
        say("stage times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    (out / "world.json").write_text(
        json.dumps(
            {
                "counts": counts,
                "seed": seed,
                "ood_colours": ood_colours,
                "clip": {
                    "name": CLIP_NAME,
                    "checkpoint": str(checkpoint),
                    **{k: v for k, v in clip_info.items() if k != "key"},
                },
                "shards": str(shard_root),
                # what to rebuild it with when the generator changes (vdi.launch.ensure_synthetic_world)
                "settings": {
                    "total_videos": total_videos,
                    "seed": seed,
                    "ood_colours": ood_colours,
                    "pretrain_steps": pretrain_steps,
                    "pretrain_warmup_steps": pretrain_warmup_steps,
                    "fps": fps,
                },
                "last_stage_seconds": timings,
            },
            indent=2,
        )
    )
    say(f"synthetic world ready in {out} (shards: {shard_root})")
    return json.loads((out / "world.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
