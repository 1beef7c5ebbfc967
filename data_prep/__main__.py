"""python -m data_prep: annotations and videos -> verified shards.

Subcommands:
  download   fetch a benchmark's annotation files and check their sha256
  features   decode videos (PyAV) and run the frozen CLIP visual tower (resumable)
  shards     annotations + features -> WebDataset shards + manifest, per split
  build      features + shards for every split of a dataset in one go
  verify     re-hash a split's shards and count their videos and queries against its manifest
  audit      how the paper's Q^s / Q^d rule splits a dataset's queries (or the synthetic world's)
  synthetic  build the embedded synthetic world (videos, tiny CLIP, features, shards)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vdi.cli import run_cli
from vdi.errors import InputError


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    value = text.strip().lower().rstrip("b")
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise InputError(f"--shard-size {text!r} is not a size: use bytes or a unit, e.g. 1GB, 512MB") from None


def _add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    parser.add_argument("--pretrained", default="openai", help="tag, local checkpoint path, or 'none' (random)")
    parser.add_argument("--clip-config-dir", default=None, help="folder of extra open_clip JSON configs")


def _pretrained(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "random") else value


def _split_files(dataset: str, annotations: Path, splits: list[str] | None) -> dict[str, Path]:
    from data_prep.annotations import DATASET_ALIASES, DATASET_SPLITS, AnnotationError

    if annotations.is_file():
        return {splits[0] if splits else annotations.stem: annotations}
    dataset = DATASET_ALIASES.get(dataset, dataset)
    if dataset in DATASET_SPLITS:
        known = DATASET_SPLITS[dataset]
        chosen = splits or list(known)
        unknown = [s for s in chosen if s not in known]
        if unknown:
            raise AnnotationError(f"dataset {dataset} has no split {unknown[0]}; splits: {', '.join(known)}")
        return {split: annotations / known[split] for split in chosen}
    # a user's own dataset: every .jsonl file in the folder is a split
    files = {path.stem: path for path in sorted(annotations.glob("*.jsonl"))}
    if splits:
        files = {s: files[s] for s in splits if s in files}
    if not files:
        raise AnnotationError(f"no annotation files for dataset {dataset} in {annotations} (expected <split>.jsonl)")
    return files


def _read_all(dataset: str, annotations: Path, splits: list[str] | None):
    from data_prep.annotations import read_annotation_file

    return {split: read_annotation_file(path) for split, path in _split_files(dataset, annotations, splits).items()}


def _video_list(read: dict, videos_dir: Path) -> list[tuple[str, Path | None]]:
    from vdi.video import find_video

    seen: dict[str, Path | None] = {}
    for split_annotations in read.values():
        for record in split_annotations.records:
            if record.video_id not in seen:
                path = Path(record.path) if record.path else find_video(videos_dir, record.video_id)
                seen[record.video_id] = path
    return list(seen.items())


def cmd_download(args) -> int:
    from data_prep.download import download

    download(args.dataset, args.to)
    return 0


def _extract(args, read: dict) -> bool:
    """Extract here, across ``--devices`` processes, or as a SLURM array (``--slurm``); True when
    the features are complete here and now (shards may follow)."""
    from data_prep.features import FeatureTask, extract_features, report_lines, run_tasks

    videos = _video_list(read, Path(args.videos))
    options = dict(
        clip_name=args.clip,
        pretrained=_pretrained(args.pretrained),
        clip_config_dir=args.clip_config_dir,
        fps=args.fps,
        patches=not args.no_patches,
        device=args.device,
        batch_frames=args.batch_frames,
        workers=args.workers,
        precision=args.precision,
        patch_clips=args.patch_clips,
    )
    if args.slurm:
        return _extract_on_slurm(args, videos, options)
    if args.devices < 1:
        raise InputError(f"--devices is {args.devices}; use 1 or more processes")
    if args.devices == 1:
        extract_features(videos, args.features, **options)
        return True
    cuda = args.device.startswith("cuda")
    devices = [f"cuda:{index}" if cuda else args.device for index in range(args.devices)]
    report = run_tasks(FeatureTask(videos, args.features, options | {"progress": False}, len(devices)), devices)
    print("\n".join(report_lines(report)))
    if report.get("crashed_tasks"):
        raise InputError(f"task(s) {report['crashed_tasks']} crashed (their tracebacks are above); run again")
    return not report["missing_tasks"]


def _extract_on_slurm(args, videos: list, options: dict) -> bool:
    """One array task per GPU (or per --tasks-per-node on CPU nodes), then a merging job."""
    import shutil

    from data_prep.features import FeatureTask, MergeTask, report_lines, task_slice

    count = args.nodes * (args.gpus_per_node or args.tasks_per_node or 1)
    if count < 1:
        raise InputError(f"--nodes {args.nodes} gives no task; use --nodes 1 or more")
    parameters = {
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": args.cpus_per_task or args.workers + 1,
        "timeout_min": args.time,
        "name": args.job_name,
        "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"requeue": True},
    }
    if args.gpus_per_node:
        parameters["gpus_per_node"] = 1
        options = options | {"device": "cuda" if args.device == "cpu" else args.device}
    if args.partition:
        parameters["slurm_partition"] = args.partition
    logs = Path(args.logs or Path(args.features) / "slurm")
    sizes = [len(task_slice(videos, task, count)) for task in range(count)]
    device = options["device"]
    print(f"array of {count} task(s) ({args.nodes} node(s) x {count // args.nodes}), one {device} each; logs {logs}")
    print(f"  videos per task: min {min(sizes)}, max {max(sizes)} ({len(videos)} in all)")
    if args.dry_run:
        for key, value in parameters.items():
            print(f"  {key}: {value}")
        print("dry run: nothing submitted")
        return False
    if shutil.which("sbatch") is None:
        raise InputError("no sbatch on PATH: this machine cannot submit to SLURM; run without --slurm (--devices N)")
    from vdi.launch import submit_array

    Path(args.features).mkdir(parents=True, exist_ok=True)
    task = FeatureTask(videos, str(Path(args.features).resolve()), options | {"progress": False}, count)
    jobs, merging = submit_array(task, count, parameters, logs, MergeTask(task.out_dir, count), args.max_requeues)
    print(f"submitted array {str(jobs[0].job_id).split('_')[0]} ({count} tasks) and merge job {merging.job_id}")
    if not args.wait:
        print(
            f"  the report will be {Path(args.features) / 'extraction.json'}; "
            "re-run the command to finish a killed task"
        )
        return False
    for job in jobs:
        try:
            job.result()
        except Exception as error:  # a killed or failed task: the others' videos are kept
            print(f"  task {job.job_id}: {str(error).strip().splitlines()[-1] if str(error).strip() else error}")
    report = merging.result()
    print("\n".join(report_lines(report)))
    return not report["missing_tasks"]


def _shard(args, read: dict) -> None:
    from data_prep.shards import build_split
    from vdi.text import QueryParser

    parser = QueryParser(args.spacy_model)
    for split, split_annotations in read.items():
        build_split(
            args.dataset,
            split,
            split_annotations.records,
            args.features,
            args.out,
            hygiene=[split_annotations.report.line()],
            shard_bytes=_size(args.shard_size),
            include_patches=not args.no_patches,
            parser=parser,
        )


def cmd_features(args) -> int:
    complete = _extract(args, _read_all(args.dataset, Path(args.annotations), args.split))
    return 0 if complete or args.dry_run or (args.slurm and not args.wait) else 1


def cmd_shards(args) -> int:
    _shard(args, _read_all(args.dataset, Path(args.annotations), args.split))
    return 0


def cmd_build(args) -> int:
    read = _read_all(args.dataset, Path(args.annotations), args.split)
    if not _extract(args, read):
        if not args.dry_run:
            print("features are not complete yet: run build again when they are (finished videos are kept)")
        return 0 if args.dry_run or (args.slurm and not args.wait) else 1
    _shard(args, read)
    print(f"done: shards in {args.out}/<split>; train with data.shard_root={args.out}")
    return 0


def cmd_verify(args) -> int:
    from data_prep.shards import verify_split
    from vdi.data.format import read_manifest

    problems = verify_split(args.split_dir)
    for problem in problems:
        print(problem)
    manifest = read_manifest(args.split_dir)
    counted = f"{manifest.num_videos} videos, {manifest.num_queries} queries in {len(manifest.shards)} shard(s)"
    print(f"{args.split_dir}: {f'verified ({counted})' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def cmd_audit(args) -> int:
    from data_prep.audit import audit_annotations, audit_synthetic
    from vdi.text import load_spacy

    nlp = load_spacy(args.spacy_model)
    if args.synthetic:
        reports = audit_synthetic(Path(args.synthetic), nlp)
        name = "synthetic"
    elif args.dataset and args.annotations:
        reports = audit_annotations(args.dataset, _split_files(args.dataset, Path(args.annotations), args.split), nlp)
        name = args.dataset
    else:
        raise InputError("audit needs --dataset and --annotations, or --synthetic WORLD_DIR")
    print(f"Q^s / Q^d split audit of {name} (spaCy {args.spacy_model}, the paper's noun-chunk rule)")
    for report in reports:
        print("\n".join(report.lines()))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in reports], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch annotation files and verify their sha256")
    download.add_argument("dataset", choices=["charades_sta", "activitynet_captions", "charades_cg", "activitynet_cg"])
    download.add_argument("--to", required=True, help="folder; files land in <to>/<dataset>/")
    download.set_defaults(run=cmd_download)

    def dataset_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--dataset",
            required=True,
            help="charades_sta, activitynet_captions, charades_cg, "
            "activitynet_cg, or a name of your own (JSONL splits)",
        )
        sub.add_argument("--annotations", required=True, help="annotation folder (or one file)")
        sub.add_argument("--split", nargs="*", default=None, help="splits (default: all of the dataset)")

    def feature_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--videos", required=True, help="folder of video files named <video id>.<ext>")
        sub.add_argument("--features", required=True, help="features folder (resumable)")
        _add_clip_arguments(sub)
        sub.add_argument("--fps", type=float, default=4.0, help="frames per second sampled (recorded)")
        sub.add_argument("--no-patches", action="store_true", help="do not store patch tokens (L^sd needs them)")
        sub.add_argument(
            "--patch-clips",
            type=int,
            default=0,
            help="store patch tokens at N pre-clips per video (the model's num_pre_clips, what L^sd uses) "
            "instead of every frame (0, the default); training refuses another N",
        )
        sub.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
        sub.add_argument("--batch-frames", type=int, default=256, help="frames per visual-tower batch")
        sub.add_argument("--workers", type=int, default=2, help="decoding processes")
        sub.add_argument(
            "--precision",
            default="auto",
            choices=["auto", "fp32", "bf16"],
            help="visual tower precision (auto: bf16 on GPU, fp32 on CPU)",
        )
        sub.add_argument("--devices", type=int, default=1, help="processes on this machine (cuda:0..N-1 on GPUs)")
        from vdi.launch import slurm_minutes

        cluster = sub.add_argument_group("SLURM: one array task per GPU (or per --tasks-per-node), then a merge")
        cluster.add_argument("--slurm", action="store_true", help="submit the extraction as a SLURM array")
        cluster.add_argument("--nodes", type=int, default=1)
        cluster.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node: one task each")
        cluster.add_argument("--tasks-per-node", type=int, default=None, help="tasks per node on CPU nodes")
        cluster.add_argument("--cpus-per-task", type=int, default=None, help="default: --workers + 1")
        cluster.add_argument("--partition", default=None)
        cluster.add_argument("--time", type=slurm_minutes, default="4:00:00", help="time limit per task")
        cluster.add_argument("--job-name", default="vdi-features")
        cluster.add_argument("--logs", default=None, help="submitit logs (default <features>/slurm)")
        cluster.add_argument("--max-requeues", type=int, default=3)
        cluster.add_argument("--dry-run", action="store_true", help="print the array; submit nothing")
        cluster.add_argument("--wait", action="store_true", help="wait for the array and print the merged report")

    def shard_arguments(sub: argparse.ArgumentParser, with_features: bool) -> None:
        if with_features:
            sub.add_argument("--features", required=True, help="features folder from `features`")
            sub.add_argument("--no-patches", action="store_true", help="leave patch tokens out of the shards")
        sub.add_argument("--out", required=True, help="shard root: one folder per split")
        sub.add_argument("--shard-size", default="1GB", help="maximum bytes per shard (default 1GB)")
        sub.add_argument("--spacy-model", default="en_core_web_sm")

    features = commands.add_parser("features", help="videos -> CLIP features (resumable)")
    dataset_arguments(features)
    feature_arguments(features)
    features.set_defaults(run=cmd_features)

    shards = commands.add_parser("shards", help="annotations + features -> shards + manifest")
    dataset_arguments(shards)
    shard_arguments(shards, with_features=True)
    shards.set_defaults(run=cmd_shards)

    build = commands.add_parser("build", help="features + shards for every split")
    dataset_arguments(build)
    feature_arguments(build)
    shard_arguments(build, with_features=False)
    build.set_defaults(run=cmd_build)

    verify = commands.add_parser("verify", help="re-hash a split's shards against its manifest")
    verify.add_argument("split_dir")
    verify.set_defaults(run=cmd_verify)

    audit = commands.add_parser("audit", help="Q^s / Q^d split audit of a dataset's queries")
    audit.add_argument("--dataset", default=None, help="as for build (with --annotations)")
    audit.add_argument("--annotations", default=None, help="annotation folder (or one file)")
    audit.add_argument("--split", nargs="*", default=None, help="splits (default: all of the dataset)")
    audit.add_argument("--synthetic", default=None, help="a synthetic world folder (knows the intended split)")
    audit.add_argument("--spacy-model", default="en_core_web_sm")
    audit.add_argument("--json", default=None, help="also write the figures to this JSON file")
    audit.set_defaults(run=cmd_audit)

    commands.add_parser("synthetic", help="build the embedded synthetic world (see: synthetic --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synthetic"]:  # its own parser (python -m data_prep synthetic --help)
        from data_prep.synthetic.build import main as synthetic_main

        return synthetic_main(argv[1:])
    return _run_command(build_parser().parse_args(argv))


@run_cli(also=(ConnectionError,))  # a download that cannot reach its server is one line too
def _run_command(args: argparse.Namespace) -> int:
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
