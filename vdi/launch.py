"""python -m vdi.launch: run training here (--local) or on a SLURM cluster through submitit.

    python -m vdi.launch --local --config synthetic_demo           # the main job (make demo): synthetic world, CPU
    python -m vdi.launch --local                                   # the synthetic benchmark's 18-epoch recipe
    python -m vdi.launch --config charades_sta --nodes 4 --gpus-per-node 8 --partition gpu
    python -m vdi.launch --config tiny --nodes 2 --tasks-per-node 1 --dry-run

Only this module imports submitit (lazily, for cluster runs). The same ``vdi.train.train(cfg)``
runs in every task; rank, world size and the rendezvous come from the SLURM environment
(:func:`vdi.distributed.slurm_rendezvous`: master address = the job's first node, port derived
from the job id; slurm/train.sbatch uses the same function). A preempted or
timed-out job is requeued by submitit and resumes from its latest checkpoint, up to
``--max-requeues`` times.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdi.cli import run_cli
from vdi.config import Config, check_overrides, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def ensure_synthetic_world(cfg: Config, verbose: bool = True) -> None:
    """Build the embedded synthetic world when the config uses it and it is missing, and bring an
    existing one up to date with the generator (each stage is redone only when its inputs or
    the code version it was built with changed; a current world costs a few file reads)."""
    if cfg.data.dataset != "synthetic":
        return
    import json

    from data_prep.synthetic.build import build

    shard_root = Path(cfg.data.shard_root)
    world = shard_root.parent
    splits = [cfg.data.train_split, *cfg.data.eval_splits]
    checkpoint = Path(cfg.model.clip.pretrained or "")
    present = all((shard_root / s / "manifest.json").exists() for s in splits) and checkpoint.is_file()
    info = world / "world.json"
    settings = json.loads(info.read_text()).get("settings") if info.exists() else None
    if present and settings is not None:
        build(world, **settings, verbose=verbose)  # stage markers only, unless the generator changed
        return
    if verbose:
        reason = "not found" if not present else "built by an older vdi (no recorded settings)"
        print(f"synthetic world {reason} under {world}: building it (python -m data_prep synthetic --out {world})")
    build(world, verbose=verbose)


def run_local(cfg: Config) -> int:
    from vdi.train import train

    ensure_synthetic_world(cfg)
    result = train(cfg)
    return 0 if result["status"] == "finished" else 3


# --------------------------------------------------------------------------- SLURM


class SlurmTrain:
    """The callable every SLURM task runs: rendezvous from the job, then ``train(cfg)``.

    ``checkpoint()`` makes it requeueable by submitit (a preempted / timed-out job restarts and
    ``train`` resumes from the run's latest checkpoint). ``train`` itself checkpoints when SLURM
    signals (TERM, USR1, or submitit's USR2); after a USR signal this task hands the signal back
    to submitit, which requeues the job.
    """

    def __init__(self, config: dict):
        self.config = config

    def __call__(self) -> dict | None:
        import os
        import signal

        from vdi.cli import set_process_env
        from vdi.config import config_from_dict
        from vdi.distributed import export_world, slurm_rendezvous
        from vdi.train import train

        set_process_env()  # inherited through sbatch as a rule; a site may not pass the environment on
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # this task's place is SLURM's, not an inherited one
            os.environ.pop(name, None)
        os.environ.update(slurm_rendezvous())
        world = export_world()

        result = train(config_from_dict(self.config))
        stopped_by = result.get("signal")
        if result["status"] == "preempted" and stopped_by in (signal.SIGUSR1, signal.SIGUSR2):
            # our checkpoint is on disk: let submitit's handler requeue the job
            signal.raise_signal(signal.Signals(stopped_by))
        return {k: v for k, v in result.items() if k != "history"} if world.is_main else None

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmTrain(self.config))


def slurm_parameters(cfg: Config, args: argparse.Namespace) -> dict:
    tasks = args.gpus_per_node or args.tasks_per_node or 1
    minutes = args.time
    parameters = {
        "nodes": args.nodes,
        "tasks_per_node": tasks,
        "timeout_min": minutes,
        "name": args.job_name or f"vdi-{cfg.run.name}",
        "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"requeue": True},
    }
    if args.gpus_per_node:
        parameters["gpus_per_node"] = args.gpus_per_node
    if args.cpus_per_task:
        parameters["cpus_per_task"] = args.cpus_per_task
    for key, value in (
        ("slurm_partition", args.partition),
        ("slurm_account", args.account),
        ("slurm_qos", args.qos),
        ("slurm_mem", args.mem),
        ("slurm_constraint", args.constraint),
    ):
        if value:
            parameters[key] = value
    return parameters


def slurm_minutes(text: str) -> int:
    """A SLURM time limit in whole minutes (seconds round up). SLURM's forms: M, M:S, H:M:S,
    D-H, D-H:M, D-H:M:S."""
    try:
        days, hours, minutes, seconds = 0, 0, 0, 0
        if "-" in text:
            day_text, rest = text.split("-", 1)
            days = int(day_text)
            hours, minutes, seconds = ([int(part) for part in rest.split(":")] + [0, 0])[:3]
            if rest.count(":") > 2:
                raise ValueError
        else:
            parts = [int(part) for part in text.split(":")]
            if len(parts) == 1:
                (minutes,) = parts
            elif len(parts) == 2:
                minutes, seconds = parts
            elif len(parts) == 3:
                hours, minutes, seconds = parts
            else:
                raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--time {text!r} is not a SLURM time: use minutes, H:MM:SS or D-HH:MM:SS (e.g. 4:00:00, 2-12)"
        ) from None
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if min(days, hours, minutes, seconds) < 0 or total <= 0:
        raise argparse.ArgumentTypeError(f"--time {text!r} must be a positive duration")
    return total


def submit(cfg: Config, args: argparse.Namespace) -> int:
    import shutil

    from vdi.config import to_dict, to_yaml

    parameters = slurm_parameters(cfg, args)
    tasks = parameters["nodes"] * parameters["tasks_per_node"]
    if cfg.optim.batch_size % tasks:
        print(f"error: optim.batch_size {cfg.optim.batch_size} is not divisible by the {tasks} tasks", file=sys.stderr)
        return 2
    logs = Path(args.logs or Path(cfg.run.root) / cfg.run.name / "slurm")
    if args.dry_run:
        print(f"job: {tasks} tasks = {parameters['nodes']} node(s) x {parameters['tasks_per_node']} task(s) per node")
        for key, value in parameters.items():
            print(f"  {key}: {value}")
        print(f"  max_requeues: {args.max_requeues} (time-outs; preemptions requeue without limit)")
        print(f"  per-task batch: {cfg.optim.batch_size // tasks} videos (global {cfg.optim.batch_size})")
        print(f"  logs: {logs}")
        print("config:")
        print(to_yaml(cfg))
        return 0
    if shutil.which("sbatch") is None:
        print(
            "error: no sbatch on PATH: this machine cannot submit to SLURM; run here with "
            "`python -m vdi.launch --local` (or use slurm/train.sbatch on a login node)",
            file=sys.stderr,
        )
        return 2
    import submitit

    ensure_synthetic_world(cfg)
    executor = submitit.AutoExecutor(folder=str(logs), cluster="slurm", slurm_max_num_timeout=args.max_requeues)
    executor.update_parameters(**parameters)
    try:
        job = executor.submit(SlurmTrain(to_dict(cfg)))
    except Exception as error:  # sbatch's own message, e.g. an invalid partition
        message = str(error).strip().splitlines()
        print(f"error: sbatch refused the job: {message[-1] if message else error}", file=sys.stderr)
        return 2
    print(f"submitted job {job.job_id}: {tasks} task(s) on {parameters['nodes']} node(s)")
    print(f"  rank-0 log: {job.paths.stdout}  (errors: {job.paths.stderr})")
    print(f"  follow it:  tail -f {job.paths.stdout}")
    print(f"  run dir:    {Path(cfg.run.root) / cfg.run.name}")
    if not args.wait:
        return 0
    return wait_for(job)


def submit_array(function, count: int, parameters: dict, logs: Path, finish=None, max_requeues: int = 3):
    """Submit ``function(task)`` for every task in ``range(count)`` as one SLURM job array (each
    task its own allocation, requeued by submitit when preempted or out of time), and
    ``finish()`` as a job that starts when all of them have ended (``afterany``); returns the
    array's jobs and the finishing job (or None). The one submitit import of the project."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(logs), cluster="slurm", slurm_max_num_timeout=max_requeues)
    executor.update_parameters(**parameters, slurm_array_parallelism=count)
    jobs = executor.map_array(function, list(range(count)))
    finishing = None
    if finish is not None:
        array_id = str(jobs[0].job_id).split("_")[0]
        after = submitit.AutoExecutor(folder=str(logs), cluster="slurm")
        plain = {k: v for k, v in parameters.items() if k not in ("gpus_per_node", "slurm_additional_parameters")}
        after.update_parameters(**plain, slurm_additional_parameters={"dependency": f"afterany:{array_id}"})
        finishing = after.submit(finish)
    return jobs, finishing


def wait_for(job) -> int:
    """Tail the rank-0 log until the job ends; on failure show the failing rank's log tail."""
    import time

    position = 0
    while True:
        path = Path(job.paths.stdout)
        if path.exists():
            with open(path) as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            if chunk:
                print(chunk, end="", flush=True)
        if job.done():
            break
        time.sleep(2)
    try:
        job.results()
    except Exception as error:
        print(f"\njob {job.job_id} failed: {str(error).strip().splitlines()[-1] if str(error).strip() else error}")
        for task in range(job.num_tasks if hasattr(job, "num_tasks") else 1):
            task_job = job.task(task)
            stderr = Path(task_job.paths.stderr)
            if stderr.exists() and "Traceback" in stderr.read_text(errors="replace"):
                tail = stderr.read_text(errors="replace").splitlines()[-25:]
                print(f"--- tail of {stderr} ---")
                print("\n".join(tail))
                break
        return 1
    print(f"job {job.job_id} finished")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vdi.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic", help="preset name or YAML path (default: synthetic)")
    parser.add_argument("overrides", nargs="*", help="dotlist config overrides, e.g. optim.lr=1e-4")
    parser.add_argument("--local", action="store_true", help="run here, without SLURM")
    cluster = parser.add_argument_group("SLURM (through submitit)")
    cluster.add_argument("--nodes", type=int, default=1)
    cluster.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; one task per GPU")
    cluster.add_argument("--tasks-per-node", type=int, default=None, help="tasks per node on CPU nodes")
    cluster.add_argument("--cpus-per-task", type=int, default=None)
    cluster.add_argument("--partition", default=None)
    cluster.add_argument("--account", default=None)
    cluster.add_argument("--qos", default=None)
    cluster.add_argument(
        "--time", type=slurm_minutes, default="4:00:00", help="time limit: minutes, H:MM:SS or D-HH:MM:SS"
    )
    cluster.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    cluster.add_argument("--constraint", default=None)
    cluster.add_argument("--job-name", default=None)
    cluster.add_argument("--logs", default=None, help="folder for submitit logs (default runs/<name>/slurm)")
    cluster.add_argument("--max-requeues", type=int, default=3)
    cluster.add_argument("--dry-run", action="store_true", help="print the job and config; submit nothing")
    cluster.add_argument("--wait", action="store_true", help="follow the rank-0 log until the job ends")
    return parser


@run_cli  # user errors, e.g. missing shards or CLIP weights, are found before submission
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_overrides(args.overrides)  # a typo fails before anything is submitted
    cfg = load_config(args.config, args.overrides)
    return run_local(cfg) if args.local else submit(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
