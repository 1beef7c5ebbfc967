"""Videos -> per-frame CLIP features with the frozen visual tower (CPU or one GPU, same code).

Output folder::

    features.json            encoder name + weights identity, fps, feature and patch shapes
    videos/<video id>.npz    features [F, D] float16, patches [F, P, D] float16 (optional), duration
    failures.jsonl           one line per video that could not be used, with the reason
    warnings.jsonl           one line per video extracted with a warning (decoded duration well
                             short of what its container declares: a truncated file)

**Many devices.** ``task`` / ``num_tasks`` give one process a deterministic slice of the videos
(by a hash of each video id: stable under re-runs, whatever the order or length of the list);
``run_tasks`` runs the slices as processes on one machine (``--devices``), and
``python -m data_prep features --slurm`` as a SLURM array, one task per GPU, through
``vdi.launch.submit_array``. Every task writes into the one folder (each ``.npz`` atomically,
``features.json`` once), its logs and summary to ``tasks/``; :func:`merge_tasks` joins them into
``failures.jsonl``, ``warnings.jsonl`` and the report ``extraction.json``. A killed task loses
only the videos in flight: a re-run or re-submission extracts what is missing.

Decoding runs in worker processes, which also resize and centre-crop each video's frames to the
tower's input (so videos of any size, aspect ratio and frame rate share a batch); the visual
tower runs in the main process on batches of frames that span videos (``batch_frames``), so
short videos do not leave the device idle. A re-run skips videos whose ``.npz`` exists and is
whole (each is written atomically; a damaged one is extracted again) and retries failures; the
two logs hold one line per video, for the latest attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vdi.errors import UserError
from vdi.video import VideoDecodeError, decode_video, duration_mismatch

FEATURES_MANIFEST = "features.json"
REPORT_NAME = "extraction.json"
TASKS_DIR = "tasks"


class FeatureError(UserError, RuntimeError):
    """A features folder that cannot be used for this request."""


@dataclass
class FeatureSpec:
    encoder: str
    weights: str
    fps: float
    feature_dim: int
    num_patches: int  # 0 = no patch tokens stored
    image_size: int
    # 0: patch tokens of every decoded frame; N: resampled to N pre-clips per video (MMN's
    # average rule), what L^sd consumes at model.num_pre_clips = N, at N / frames of the bytes
    patch_clips: int = 0


@dataclass
class ExtractionSummary:
    requested: int = 0
    already_done: int = 0
    extracted: int = 0
    redone_broken: int = 0  # damaged .npz files found on resume and extracted again
    failed: Counter = field(default_factory=Counter)
    truncated: int = 0  # extracted, but decoded well short of the declared duration
    frames: int = 0
    seconds: float = 0.0
    feature_bytes: int = 0
    patch_bytes: int = 0
    task: int = 0
    num_tasks: int = 1
    device: str = "cpu"
    host: str = ""
    started: float = 0.0  # wall clock (time.time) of the first and last frame of this task
    ended: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"failed": dict(self.failed), "frames_per_s": round(self.frames_per_second, 2)}

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        failed = ", ".join(f"{reason} {count}" for reason, count in sorted(self.failed.items())) or "none"
        notes = ""
        if self.redone_broken:
            notes += f", {self.redone_broken} damaged feature files extracted again"
        if self.truncated:
            notes += f", {self.truncated} shorter than their container declares (truncated? see warnings.jsonl)"
        return (
            f"features: {self.requested} videos requested, {self.already_done} already done, {self.extracted} "
            f"extracted, {sum(self.failed.values())} failed ({failed}){notes}; "
            f"{self.frames} frames in {self.seconds:.1f} s "
            f"({rate:.0f} frames/s); stored {self.feature_bytes / 2**20:.1f} MiB features + "
            f"{self.patch_bytes / 2**20:.1f} MiB patch tokens"
        )


def video_file_name(video_id: str) -> str:
    return video_id.replace("/", "_") + ".npz"


_REQUIRED_ARRAYS = ("features.npy", "duration.npy", "fps.npy")


def task_of(video_id: str, num_tasks: int) -> int:
    """The task (of ``num_tasks``) that extracts ``video_id``: a hash of the id, so a slice does
    not depend on the list's order or length, nor on what earlier runs did."""
    return int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big") % num_tasks


def task_slice(videos: list[tuple[str, Path | None]], task: int, num_tasks: int) -> list[tuple[str, Path | None]]:
    if not 0 <= task < num_tasks:
        raise FeatureError(f"task {task} is not one of the {num_tasks} tasks (0..{num_tasks - 1})")
    return [item for item in videos if task_of(item[0], num_tasks) == task]


def _task_stem(out: Path, task: int, num_tasks: int) -> Path:
    return out / TASKS_DIR / f"task-{task:04d}-of-{num_tasks:04d}"


def _write_spec_once(out: Path, spec: FeatureSpec) -> None:
    """Write features.json unless there is one (tasks race for it: the link is atomic), then
    refuse a folder whose features were made with other settings."""
    manifest = out / FEATURES_MANIFEST
    if not manifest.exists():
        temporary = out / f".{FEATURES_MANIFEST}.{os.getpid()}.{socket.gethostname()}"
        temporary.write_text(json.dumps(asdict(spec), indent=2))
        try:
            os.link(temporary, manifest)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    existing = read_spec(out)
    if existing != spec:
        old, new = asdict(existing), asdict(spec)
        differ = ", ".join(f"{key} {old[key]!r} there, {new[key]!r} here" for key in old if old[key] != new[key])
        raise FeatureError(f"{out} holds features made with other settings ({differ}): use another folder")


def is_whole(path: Path) -> bool:
    """A cheap check of a stored ``.npz`` (its zip directory lists every array), for resume:
    a file cut short loses the directory at its end."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return all(name in names for name in _REQUIRED_ARRAYS)


def load_features(folder: str | Path, video_id: str, load_patches: bool = True) -> dict | None:
    """The stored arrays of one video, or None when it has none; a damaged file raises
    :class:`FeatureError` naming it."""
    path = Path(folder) / "videos" / video_file_name(video_id)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            result = {"features": data["features"], "duration": float(data["duration"]), "fps": float(data["fps"])}
            if load_patches and "patches" in data:
                result["patches"] = data["patches"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
        raise FeatureError(
            f"feature file {path} is damaged ({type(error).__name__}: {error}); "
            "rerun python -m data_prep features to extract it again"
        ) from None
    if result["features"].ndim != 2 or not np.isfinite(result["duration"]) or result["duration"] <= 0:
        raise FeatureError(f"feature file {path} holds no usable features; rerun python -m data_prep features")
    return result


def read_spec(folder: str | Path) -> FeatureSpec:
    path = Path(folder) / FEATURES_MANIFEST
    if not path.exists():
        raise FeatureError(f"no {FEATURES_MANIFEST} in {folder}; extract features first (python -m data_prep features)")
    return FeatureSpec(**json.loads(path.read_text()))


class _DecodeDataset(Dataset):
    """(video id, tower-ready images [T, 3, S, S] or None, decoded duration, declared, error)."""

    def __init__(self, items: list[tuple[str, Path | None]], fps: float, preprocess):
        self.items, self.fps, self.preprocess = items, fps, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        video_id, path = self.items[index]
        if path is None:
            return video_id, None, 0.0, None, "missing video file"
        try:
            decoded = decode_video(path, self.fps, self.preprocess.image_size)
        except VideoDecodeError as error:
            return video_id, None, 0.0, None, str(error)
        # per video: frames of different videos differ in size until they are cropped
        images = self.preprocess(torch.from_numpy(decoded.frames))
        return video_id, images, decoded.duration, decoded.declared, None


def _reason(message: str) -> str:
    for key in ("missing", "not found", "no video stream", "zero-length", "no decodable", "cannot open", "undecodable"):
        if key in message:
            return key
    return "other"


def _rewrite_log(path: Path, drop: set[str]) -> None:
    """Keep the log's lines of videos not in ``drop`` (they are about to be tried again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("video_id") not in drop:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept))
    temporary.replace(path)


def extract_features(
    videos: list[tuple[str, Path | None]],
    out_dir: str | Path,
    clip_name: str,
    pretrained: str | None,
    clip_config_dir: str | None = None,
    fps: float = 4.0,
    patches: bool = True,
    device: str = "cpu",
    batch_frames: int = 256,
    workers: int = 2,
    progress: bool = True,
    precision: str = "auto",
    task: int = 0,
    num_tasks: int = 1,
    patch_clips: int = 0,
) -> ExtractionSummary:
    """Extract features of (video id, path or None) pairs into ``out_dir`` (resumable); with
    ``num_tasks`` > 1, only this ``task``'s slice (:func:`task_slice`).

    ``precision``: auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 (also on the CPU,
    ~3x faster there; features are stored as float16 either way). ``patch_clips`` > 0 stores
    each video's patch tokens resampled to that many pre-clips instead of per frame."""
    from tqdm import tqdm

    from vdi.batch import resample_frames
    from vdi.data.format import weights_identity
    from vdi.encoders import FrozenVisualEncoder, create_clip, patch_count

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    clip = create_clip(clip_name, pretrained, clip_config_dir)
    encoder = FrozenVisualEncoder(clip).to(device)
    spec = FeatureSpec(
        encoder=clip_name,
        weights=weights_identity(pretrained),
        fps=float(fps),
        feature_dim=encoder.output_dim,
        num_patches=patch_count(clip) if patches else 0,
        image_size=encoder.image_size,
        patch_clips=int(patch_clips) if patches else 0,
    )
    if patch_clips < 0:
        raise FeatureError(f"patch_clips is {patch_clips}; use 0 (every frame) or the model's num_pre_clips")
    _write_spec_once(out, spec)
    videos = task_slice(videos, task, num_tasks)
    summary = ExtractionSummary(
        requested=len(videos), task=task, num_tasks=num_tasks, device=device, host=socket.gethostname()
    )
    todo = []
    for video_id, path in videos:
        stored = out / "videos" / video_file_name(video_id)
        if stored.exists() and is_whole(stored):
            summary.already_done += 1
        else:
            summary.redone_broken += stored.exists()
            todo.append((video_id, path))
    if num_tasks == 1:
        failures, warnings_log = out / "failures.jsonl", out / "warnings.jsonl"
    else:  # each task its own logs; merge_tasks joins them
        stem = _task_stem(out, task, num_tasks)
        stem.parent.mkdir(exist_ok=True)
        failures, warnings_log = stem.with_suffix(".failures.jsonl"), stem.with_suffix(".warnings.jsonl")
    requested_ids = {video_id for video_id, _ in videos}
    for log in (failures, warnings_log):
        _rewrite_log(log, requested_ids)  # one line per video: this attempt's
    if precision not in ("auto", "fp32", "bf16"):
        raise FeatureError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=use_bf16)
    loader = DataLoader(
        _DecodeDataset(todo, fps, _Preprocess(encoder)),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    pending: list[tuple[str, torch.Tensor, float]] = []  # videos whose frames wait for the encoder
    pending_frames = 0
    start = time.perf_counter()
    summary.started = time.time()
    label = "features" if num_tasks == 1 else f"features [task {task}/{num_tasks}]"
    bar = tqdm(total=len(todo), unit="video", disable=not progress, desc=label)

    def flush() -> None:
        nonlocal pending, pending_frames
        if not pending:
            return
        frames = torch.cat([f for _, f, _ in pending])
        pooled_parts, patch_parts = [], []
        with torch.no_grad(), autocast:
            for chunk in frames.split(batch_frames):
                pooled, tokens = encoder(chunk.to(device))
                pooled_parts.append(pooled.float().cpu())
                if patches:
                    patch_parts.append(tokens.float().cpu())
        pooled_all = torch.cat(pooled_parts)
        patches_all = torch.cat(patch_parts) if patches else None
        offset = 0
        for video_id, video_frames, duration in pending:
            count = video_frames.shape[0]
            arrays = {
                "features": pooled_all[offset : offset + count].numpy().astype(np.float16),
                "duration": np.float64(duration),
                "fps": np.float64(fps),
            }
            if patches_all is not None:
                tokens = patches_all[offset : offset + count]
                if spec.patch_clips:
                    tokens = resample_frames(tokens, spec.patch_clips)
                arrays["patches"] = tokens.numpy().astype(np.float16)
            offset += count
            target = out / "videos" / video_file_name(video_id)
            temporary = target.with_name(target.name + ".tmp.npz")
            np.savez(temporary, **arrays)
            temporary.replace(target)
            summary.extracted += 1
            summary.frames += count
            summary.feature_bytes += arrays["features"].nbytes
            summary.patch_bytes += arrays["patches"].nbytes if "patches" in arrays else 0
            bar.update(1)
        pending, pending_frames = [], 0

    with open(failures, "a") as failure_log, open(warnings_log, "a") as warning_log:
        for video_id, frames, duration, declared, error in loader:
            if error is not None:
                summary.failed[_reason(error)] += 1
                failure_log.write(json.dumps({"video_id": video_id, "reason": error}) + "\n")
                failure_log.flush()
                bar.update(1)
                continue
            if declared is not None and duration_mismatch(declared, duration):
                summary.truncated += 1
                warning = (
                    f"decoded {duration:.2f} s of the {declared:.2f} s its container declares "
                    "(a truncated or damaged file?); its features cover the decoded part only"
                )
                warning_log.write(json.dumps({"video_id": video_id, "warning": warning}) + "\n")
                warning_log.flush()
            pending.append((video_id, frames, duration))
            pending_frames += frames.shape[0]
            if pending_frames >= batch_frames:
                flush()
                elapsed = time.perf_counter() - start
                bar.set_postfix(frames_per_s=f"{summary.frames / max(elapsed, 1e-9):.0f}")
        flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    summary.ended = time.time()
    stem = _task_stem(out, task, num_tasks)
    stem.parent.mkdir(exist_ok=True)
    temporary = stem.with_suffix(".summary.json.tmp")
    temporary.write_text(json.dumps(summary.as_dict(), indent=2))
    temporary.replace(stem.with_suffix(".summary.json"))
    if progress:
        print(summary.line())
    return summary


def merge_tasks(out_dir: str | Path, num_tasks: int) -> dict:
    """Join the tasks' logs into failures.jsonl / warnings.jsonl and their summaries into the
    report ``extraction.json`` (per task and in total: counts, frames/s); a task without a
    summary (killed, still running) is listed as missing. Returns the report."""
    out = Path(out_dir)
    tasks, missing = [], []
    for task in range(num_tasks):
        path = _task_stem(out, task, num_tasks).with_suffix(".summary.json")
        if path.exists():
            tasks.append(json.loads(path.read_text()))
        else:
            missing.append(task)
    if num_tasks > 1:
        for kind in ("failures", "warnings"):
            lines: dict[str, str] = {}
            for log in sorted((out / TASKS_DIR).glob(f"task-*-of-{num_tasks:04d}.{kind}.jsonl")):
                for line in log.read_text().splitlines():
                    try:
                        lines[json.loads(line)["video_id"]] = line
                    except (json.JSONDecodeError, KeyError):
                        continue  # a line cut by a killed task
            temporary = out / f"{kind}.jsonl.tmp"
            temporary.write_text("".join(f"{line}\n" for line in lines.values()))
            temporary.replace(out / f"{kind}.jsonl")
    failed: Counter = Counter()
    for task in tasks:
        failed.update(task["failed"])
    frames = sum(task["frames"] for task in tasks)
    wall = max((t["ended"] for t in tasks), default=0.0) - min((t["started"] for t in tasks), default=0.0)
    report = {
        "num_tasks": num_tasks,
        "missing_tasks": missing,
        "videos_stored": sum(1 for _ in (out / "videos").glob("*.npz")),
        "requested": sum(task["requested"] for task in tasks),
        "already_done": sum(task["already_done"] for task in tasks),
        "extracted": sum(task["extracted"] for task in tasks),
        "failed": dict(failed),
        "frames": frames,
        "frames_per_s_total": round(frames / wall, 2) if wall > 0 else 0.0,
        "frames_per_s_per_task": {str(task["task"]): task["frames_per_s"] for task in tasks},
        "tasks": tasks,
    }
    temporary = out / f"{REPORT_NAME}.tmp"
    temporary.write_text(json.dumps(report, indent=2))
    temporary.replace(out / REPORT_NAME)
    return report


def report_lines(report: dict) -> list[str]:
    """The merged report as printed lines: one per task, then the total."""
    lines = [
        f"  task {t['task']}: {t['extracted']} extracted, {t['already_done']} already done, "
        f"{sum(t['failed'].values())} failed; {t['frames']} frames at {t['frames_per_s']:.0f} frames/s "
        f"({t['device']} on {t['host']})"
        for t in report["tasks"]
    ]
    failed = sum(report["failed"].values())
    lines.append(
        f"features: {report['num_tasks']} task(s), {report['extracted']} extracted, {report['already_done']} already "
        f"done, {failed} failed (failures.jsonl); {report['videos_stored']} videos stored; {report['frames']} frames, "
        f"{report['frames_per_s_total']:.0f} frames/s in total"
    )
    if report["missing_tasks"]:
        lines.append(
            f"warning: task(s) {report['missing_tasks']} did not finish (killed or still running): run the same "
            "command again to extract the rest"
        )
    return lines


class FeatureTask:
    """One slice of an extraction, as a process or a SLURM task runs it (picklable). On SLURM
    ``checkpoint`` lets submitit requeue a preempted or timed-out task, which skips what is done."""

    def __init__(self, videos: list[tuple[str, Path | None]], out_dir: str, options: dict, num_tasks: int):
        self.videos, self.out_dir, self.options, self.num_tasks = videos, out_dir, options, num_tasks

    def __call__(self, task: int, device: str | None = None) -> dict:
        from vdi.cli import set_process_env

        set_process_env()
        options = dict(self.options) | ({"device": device} if device else {})
        summary = extract_features(self.videos, self.out_dir, task=task, num_tasks=self.num_tasks, **options)
        return summary.as_dict()

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class MergeTask:
    """The step after a SLURM array: merge its tasks' logs and summaries (picklable)."""

    def __init__(self, out_dir: str, num_tasks: int):
        self.out_dir, self.num_tasks = out_dir, num_tasks

    def __call__(self) -> dict:
        report = merge_tasks(self.out_dir, self.num_tasks)
        print("\n".join(report_lines(report)))
        return report


def run_tasks(task: FeatureTask, devices: list[str]) -> dict:
    """Run the ``len(devices)`` slices as processes on this machine (one per device), then merge."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA and the decoders' own processes need a clean start
    processes = [context.Process(target=task, args=(index, device)) for index, device in enumerate(devices)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [index for index, process in enumerate(processes) if process.exitcode != 0]
    report = merge_tasks(task.out_dir, len(devices))
    if failed:
        report["crashed_tasks"] = failed
    return report


class _Preprocess:
    """The tower's own resize + centre crop + normalisation, without the tower (picklable, so
    decoding workers can run it)."""

    def __init__(self, encoder) -> None:
        self.image_size = encoder.image_size
        self.mean, self.std = encoder.mean.cpu(), encoder.std.cpu()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        from vdi.encoders import preprocess_frames

        return preprocess_frames(frames, self.image_size, self.mean, self.std)


__all__ = [
    "FEATURES_MANIFEST",
    "ExtractionSummary",
    "FeatureError",
    "FeatureSpec",
    "FeatureTask",
    "extract_features",
    "is_whole",
    "load_features",
    "merge_tasks",
    "read_spec",
    "run_tasks",
    "task_of",
    "task_slice",
]
