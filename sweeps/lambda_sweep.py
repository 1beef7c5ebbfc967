"""Ray Tune sweeps of VDI: lambda^vc, lambda^sd, learning rates and sequence models, or the paper's
Table 3 ablation grid. Ray lives here only; each trial calls ``vdi.train.train(cfg, on_eval=...)``.

    python sweeps/lambda_sweep.py                                  # search_space.yaml, 8 trials, ASHA
    python sweeps/lambda_sweep.py --num-samples 32 --max-concurrent 4 --cpus-per-trial 4 --gpus-per-trial 1
    python sweeps/lambda_sweep.py --ablation --seeds 5             # Table 3 rows x 5 paired seeds
    python sweeps/lambda_sweep.py --ablation --seeds 2 --first-seed 5 --experiment E   # 2 more seeds for E
    python sweeps/lambda_sweep.py --resume --name my_sweep         # continue an interrupted sweep
    python sweeps/lambda_sweep.py --slurm --nodes 2 --partition gpu ...   # a Ray cluster inside one allocation

Every trial is an MLflow child run under one parent run per sweep (absolute sqlite URI by
default, so trials in other working directories share one database). The best trial's resolved
config is written as a YAML preset that ``python -m vdi.launch --config <path>`` accepts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = Path(__file__).resolve().parent / "search_space.yaml"
# Set in main() before Ray starts; its workers (and a SLURM job's Ray nodes) inherit them.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no ~/.ray/auth_token (the SLURM script turns token auth on)
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the project's working directory
}

# The paper's Table 3 rows, then the same full model with this toolkit's contrastive injection forms
# (the paper's eq. 2 / eq. 5 collapse on the synthetic world: README, "Do the injection losses
# inject?"). Each row is the injection settings it trains with; unnamed settings keep the preset's.
ABLATION_ROWS: dict[str, dict[str, str]] = {
    "Baseline": {"injection.visual_context": "none", "injection.spatial_dynamic": "none"},
    "L^vc w/o Q": {"injection.visual_context": "learned", "injection.spatial_dynamic": "none"},
    "L^vc w/ Q": {"injection.visual_context": "full", "injection.spatial_dynamic": "none"},
    "L^vc w/ Q^s": {"injection.visual_context": "static", "injection.spatial_dynamic": "none"},
    "L^sd w/ LSTM": {"injection.visual_context": "none", "injection.spatial_dynamic": "lstm"},
    "L^sd w/ Trans": {"injection.visual_context": "none", "injection.spatial_dynamic": "transformer"},
    "L^vc + L^sd": {
        "injection.visual_context": "static",
        "injection.spatial_dynamic": "transformer",
        "injection.vc_form": "paper",
        "injection.sd_form": "paper",
    },
    "L^vc + L^sd (contrastive)": {
        "injection.visual_context": "static",
        "injection.spatial_dynamic": "transformer",
        "injection.vc_form": "contrastive",
        "injection.sd_form": "contrastive",
    },
}
TABLE3_ROWS = list(ABLATION_ROWS)[:7]


def row_overrides(row: str) -> list[str]:
    """The dotlist overrides an ablation row trains with."""
    return [f"{key}={value}" for key, value in ABLATION_ROWS[row].items()]


def load_space(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: search-space file {path} not found (--space; default {DEFAULT_SPACE})")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SystemExit(f"error: search-space file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise SystemExit(f"error: search-space file {path} must be a mapping (see {DEFAULT_SPACE})")
    for key in ("base_config", "metric", "mode", "space"):
        if key not in spec:
            raise SystemExit(f"error: {path} lacks '{key}' (see {DEFAULT_SPACE})")
    if not isinstance(spec["space"], dict) or not all(isinstance(v, dict) for v in spec["space"].values()):
        raise SystemExit(f"error: {path}: 'space' must map config keys to {{type: ..., ...}} entries")
    from vdi.config import ConfigError, check_overrides

    try:
        check_overrides([f"{key}=0" for key in spec["space"] if not key.startswith("_")])
    except ConfigError as error:
        raise SystemExit(f"error: search-space file {path}: {error}") from None
    return spec


def tune_space(space: dict) -> dict:
    from ray import tune

    result = {}
    for key, item in space.items():
        kind = item.get("type")
        try:
            if kind == "loguniform":
                result[key] = tune.loguniform(float(item["low"]), float(item["high"]))
            elif kind == "uniform":
                result[key] = tune.uniform(float(item["low"]), float(item["high"]))
            elif kind == "choice":
                result[key] = tune.choice(list(item["values"]))
            elif kind == "grid":
                result[key] = tune.grid_search(list(item["values"]))
            else:
                raise SystemExit(
                    f"error: search space entry {key} has unknown type {kind!r} (loguniform, uniform, choice, grid)"
                )
        except (KeyError, TypeError, ValueError) as error:
            raise SystemExit(f"error: search space entry {key} ({kind}) is malformed: {error!r}") from None
    return result


def absolute_paths(base_config: str, overrides: list[str]) -> list[str]:
    """Trials may run elsewhere (other nodes, other folders): pin every path to an absolute one."""
    from vdi.config import load_config, pin_paths

    cfg = pin_paths(load_config(base_config, overrides))
    pinned = [f"data.shard_root={cfg.data.shard_root}", f"dist.extensions_dir={cfg.dist.extensions_dir}"]
    if cfg.model.clip.pretrained:
        pinned.append(f"model.clip.pretrained={cfg.model.clip.pretrained}")
    if cfg.model.clip.config_dir:
        pinned.append(f"model.clip.config_dir={cfg.model.clip.config_dir}")
    return pinned


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def make_trainable(
    base_config: str, fixed: list[str], run_root: Path, experiment: str, uri: str, parent: str, source: dict
):
    """A Ray trainable: one training run per trial, nested under the sweep's parent run. Ablation
    trials are named for their row and seed ("L^vc + L^sd / seed 3") and tagged with their row (the
    UI's group-by); every trial's source (``source``: tags) is the sweep's command line."""

    def trainable(config: dict) -> None:
        from ray import tune

        from vdi.cli import set_process_env
        from vdi.config import load_config
        from vdi.tracking import ABLATION_ROW_TAG
        from vdi.train import train

        set_process_env()  # a trial's worker process (a Ray cluster started elsewhere passes nothing on)
        context = tune.get_context()
        overrides = list(fixed)
        for key, value in config.items():
            if key == "_row":
                overrides += row_overrides(value)
            else:
                overrides.append(f"{key}={_value(value)}")
        name = context.get_trial_name()
        overrides += [
            f"run.root={run_root}",
            f"run.name={name}",
            f"track.experiment={experiment}",
            f"track.tracking_uri={uri}",
            f"track.parent_run_id={parent}",
            "data.num_workers=0",
        ]
        cfg = load_config(base_config, overrides)
        cfg.track.tags = dict(source)  # the sweep's command, not the Ray worker's
        if "_row" in config:
            cfg.track.run_name = f"{config['_row']} / seed {cfg.run.seed}"
            cfg.track.tags[ABLATION_ROW_TAG] = config["_row"]
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()

        def on_eval(epoch: int, metrics: dict) -> None:
            tune.report({**metrics, "epoch": epoch, "node": node})

        result = train(cfg, on_eval)
        if result["status"] != "finished":
            raise RuntimeError(f"trial {name} was interrupted ({result['status']})")

    return trainable


def seed_list(args) -> list[int]:
    """The ablation's paired seeds: --seeds of them from --first-seed (a later sweep adds seeds to
    an earlier one without repeating its trials; report.py --parent A B pools the two)."""
    first = args.first_seed
    if args.seeds < 1 or first < 0:
        raise SystemExit(f"error: --seeds {args.seeds} --first-seed {first}: give --seeds >= 1 and --first-seed >= 0")
    return list(range(first, first + args.seeds))


def sweep_config(args, spec: dict) -> tuple[dict, list[str]]:
    from ray import tune

    if args.ablation:
        # an ablation trains the preset's recipe as it is (plus the command line's overrides): the
        # search space's fixed overrides (a shorter schedule for ASHA) are for the search only
        fixed = list(args.overrides)
        rows = args.rows or TABLE3_ROWS
        unknown = [r for r in rows if r not in ABLATION_ROWS]
        if unknown:
            raise SystemExit(f"error: unknown ablation row {unknown[0]!r}; rows: {', '.join(ABLATION_ROWS)}")
        seeds = seed_list(args)
        return {"_row": tune.grid_search(rows), "run.seed": tune.grid_search(seeds)}, fixed
    fixed = list(spec.get("overrides") or []) + list(args.overrides)
    return tune_space(spec["space"]), fixed


def run_sweep(args) -> int:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from sweep_tracking import close_children, end_run, start_parent_run

    from vdi.config import check_overrides, load_config, to_yaml
    from vdi.launch import ensure_synthetic_world
    from vdi.tracking import default_tracking_uri, source_tags

    source = {k: v for k, v in source_tags().items() if k in ("mlflow.source.name", "vdi.command")}
    spec = load_space(Path(args.space))
    base_config = args.config or spec["base_config"]
    metric, mode = args.metric or spec["metric"], spec.get("mode", "max")
    space, fixed = sweep_config(args, spec)
    check_overrides(fixed)
    fixed = fixed + absolute_paths(base_config, fixed)
    base = load_config(base_config, fixed)
    ensure_synthetic_world(base)  # a no-op when built (a --slurm submission builds it before sbatch)
    name = args.name or ("ablation" if args.ablation else "lambda_sweep")
    sweep_dir = (Path(args.storage) / name).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    run_root = sweep_dir / "runs"
    uri = args.tracking_uri or default_tracking_uri(Path(args.storage).resolve())
    experiment = args.experiment or name
    parent_file = sweep_dir / "parent_run_id"
    if args.resume and parent_file.exists():
        parent = parent_file.read_text().strip()
    else:
        parent = start_parent_run(
            uri,
            experiment,
            name,
            {"kind": "ablation" if args.ablation else "search", "base_config": base_config, "metric": metric},
            description=parent_description(args, base_config, fixed, metric),
            review_splits=list(base.data.eval_splits),
            grouped=args.ablation,
        )
        parent_file.write_text(parent)
    print(f"sweep {name}: parent MLflow run {parent} in experiment '{experiment}' ({uri})")

    if args.address:
        ray.init(address=args.address, include_dashboard=False)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=str(Path(args.ray_temp).resolve()))
    trainable = tune.with_resources(
        make_trainable(base_config, fixed, run_root, experiment, uri, parent, source),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial},
    )
    scheduler = None
    if not args.ablation and not args.no_asha:
        asha = spec.get("asha", {})
        scheduler = ASHAScheduler(
            time_attr="epoch",
            # one past the last epoch: a trial that reaches it ends by itself and finishes its run
            # (probe, best metrics) instead of being stopped at its final report
            max_t=base.optim.max_epochs + 1,
            grace_period=int(asha.get("grace_period", 2)),
            reduction_factor=float(asha.get("reduction_factor", 2)),
        )
    status = "FAILED"
    try:
        if args.resume and tune.Tuner.can_restore(str(sweep_dir / "tune")):
            tuner = tune.Tuner.restore(str(sweep_dir / "tune"), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=metric,
                    mode=mode,
                    num_samples=1 if args.ablation else args.num_samples,
                    max_concurrent_trials=args.max_concurrent,
                    scheduler=scheduler,
                ),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=str(sweep_dir),
                    failure_config=tune.FailureConfig(max_failures=args.max_failures),
                    verbose=1,
                ),
            )
        results = tuner.fit()
        errors = [r for r in results if r.error is not None]
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
        best_overrides = fixed + [f"{k}={_value(v)}" for k, v in best.config.items() if k != "_row"]
        if "_row" in best.config:
            best_overrides += row_overrides(best.config["_row"])
        best_cfg = load_config(base_config, [*best_overrides, f"run.name={name}-best"])
        (sweep_dir / "best.yaml").write_text(to_yaml(best_cfg))
        summary = {
            "trials": len(results),
            "errored": len(errors),
            # best.metrics is the trial's last report; the trial was chosen by its best epoch (scope="all")
            "best_metric": best_value(best, metric, mode),
            "best_config": best.config,
            "nodes": sorted({r.metrics.get("node") for r in results if r.metrics and r.metrics.get("node")}),
        }
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print(f"{len(results)} trials ({len(errors)} errored) on nodes {summary['nodes']}")
        print(f"best {metric} = {summary['best_metric']} (its best epoch) with {best.config}")
        print(
            f"best config preset: {sweep_dir / 'best.yaml'}  (python -m vdi.launch --config {sweep_dir / 'best.yaml'})"
        )
        print(f"report: python sweeps/report.py --experiment {experiment} --tracking-uri {uri}")
        status = "FINISHED" if not errors else "FAILED"
        if args.ablation:
            attach_report(experiment, uri, parent, sweep_dir / "report", list(base.data.eval_splits))
        return 0 if not errors else 1
    finally:
        closed = close_children(uri, parent, "KILLED")
        if closed:
            print(f"{closed} stopped trial run(s) marked KILLED in MLflow")
        end_run(uri, parent, status)
        ray.shutdown()


def parent_description(args, base_config: str, fixed: list[str], metric: str) -> str:
    """The parent run's description until the report replaces it (Markdown)."""
    if args.ablation:
        rows = ", ".join(args.rows or TABLE3_ROWS)
        seeds = seed_list(args)
        what = f"Ablation of `{base_config}`: rows {rows}; seeds {seeds[0]}..{seeds[-1]} (paired: same seeds per row)."
    else:
        what = f"Search over `{args.space}` on `{base_config}` ({args.num_samples} samples), selected by `{metric}`."
    extra = f" Overrides: `{' '.join(fixed)}`." if fixed else ""
    return f"{what}{extra} The report (tables with paired differences and plots) is attached when the sweep ends."


def attach_report(experiment: str, uri: str, parent: str, out: Path, splits: list[str]) -> None:
    """Write the ablation's report and attach it to the parent run (a failure is reported, and
    the command to make it later printed: the trials' results are in MLflow either way)."""
    import report

    argv = ["--experiment", experiment, "--tracking-uri", uri, "--parent", parent, "--out", str(out)]
    try:
        code = report.main([*argv, "--splits", *splits])
    except Exception as error:  # the report must not lose the sweep's own summary
        print(f"warning: the report failed ({type(error).__name__}: {error})", file=sys.stderr)
        code = 1
    if code != 0:
        print(f"warning: no report attached; make it with: python sweeps/report.py {shlex.join(argv)}", file=sys.stderr)


def best_value(result, metric: str, mode: str) -> float | None:
    """The value over all epochs that made ``result`` the best trial (its last report otherwise)."""
    frame = result.metrics_dataframe
    if frame is None or metric not in frame or frame[metric].dropna().empty:
        return result.metrics.get(metric)
    column = frame[metric].dropna()
    return float(column.max() if mode == "max" else column.min())


# --------------------------------------------------------------------------- SLURM


SBATCH_TEMPLATE = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={log}
{extra}
# A Ray cluster inside this allocation: the head on the first node, a worker on every other node,
# all started with --block so no Ray daemon outlives the job; then the sweep driver connects.
set -euo pipefail
cd {project}
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${{nodes[0]}}
# the head's NodeAddr and a port from the job id (vdi.distributed.slurm_rendezvous, as training's);
# kept in shell variables: MASTER_ADDR / MASTER_PORT must not reach the trials
rendezvous=$({python} -m vdi.distributed slurm-rendezvous)
read -r head_ip port <<< "$rendezvous"
# Ray token authentication: a fresh secret per job, in a file only this user can read (on the
# shared file system every node of the allocation sees), so nobody else on the cluster network
# can submit work to this Ray cluster; the file is removed when the job ends.
token_file={sweep_dir}/.ray-token-$SLURM_JOB_ID
(umask 077 && {python} -c "import secrets; print(secrets.token_hex(32))" > "$token_file")
trap 'rm -f "$token_file"' EXIT
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token_file"
unset RAY_AUTH_TOKEN
srun --nodes=1 --ntasks=1 -w "$head" {python} -m ray.scripts.scripts start --head --node-ip-address="$head_ip" \\
    --port=$port --num-cpus={cpus} --num-gpus={gpus} --include-dashboard=false --temp-dir={ray_temp} --block &
sleep 8
for node in "${{nodes[@]:1}}"; do
    srun --nodes=1 --ntasks=1 -w "$node" {python} -m ray.scripts.scripts start --address="$head_ip:$port" \\
        --num-cpus={cpus} --num-gpus={gpus} --block &
done
sleep 8
{python} {script} --address "$head_ip:$port" {driver_args} && status=0 || status=$?
kill $(jobs -p) 2>/dev/null || true
wait || true
exit $status
"""


# squeue states of a job that has not ended yet
SLURM_ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "REQUEUED",
    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
}  # fmt: skip


def shell_words(arguments: list[str]) -> str:
    """Arguments as one shell-safe string for the generated sbatch script (quotes, $, ; inert)."""
    return " ".join(shlex.quote(a) for a in arguments)


def submit_slurm(args, argv: list[str]) -> int:
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        print("error: no sbatch on PATH; run the sweep here without --slurm", file=sys.stderr)
        return 2
    from vdi.config import load_config
    from vdi.launch import ensure_synthetic_world

    spec = load_space(Path(args.space))
    base_config = args.config or spec["base_config"]
    fixed = sweep_config(args, spec)[1]
    # built here, on the submitting machine, so that no allocation waits on it
    ensure_synthetic_world(load_config(base_config, fixed + absolute_paths(base_config, fixed)))
    driver_args = [a for a in argv if a not in ("--slurm", "--wait")]
    skip_next = {"--nodes", "--partition", "--account", "--time", "--cpus-per-node", "--gpus-per-node"}
    cleaned, skip = [], False
    for item in driver_args:
        if skip:
            skip = False
            continue
        if item in skip_next:
            skip = True
            continue
        cleaned.append(item)
    sweep_dir = (Path(args.storage) / (args.name or ("ablation" if args.ablation else "lambda_sweep"))).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    extra = "\n".join(
        line
        for line in (
            f"#SBATCH --partition={args.partition}" if args.partition else "",
            f"#SBATCH --account={args.account}" if args.account else "",
            f"#SBATCH --gpus-per-node={args.gpus_per_node}" if args.gpus_per_node else "",
        )
        if line
    )
    script = sweep_dir / "sweep.sbatch"
    log = sweep_dir / "slurm-%j.out"
    script.write_text(
        SBATCH_TEMPLATE.format(
            job_name=f"vdi-{sweep_dir.name}",
            nodes=args.nodes,
            cpus=args.cpus_per_node,
            gpus=args.gpus_per_node,
            time=args.time,
            log=log,
            extra=extra,
            project=shlex.quote(str(PROJECT)),
            python=shlex.quote(sys.executable),
            script=shlex.quote(str(Path(__file__).resolve())),
            ray_temp=shlex.quote(str(Path(args.ray_temp).resolve())),
            sweep_dir=shlex.quote(str(sweep_dir)),
            driver_args=shell_words(cleaned),
        )
    )
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if submitted.returncode != 0:
        print(f"error: sbatch refused the sweep: {submitted.stderr.strip()}", file=sys.stderr)
        return 2
    job_id = submitted.stdout.strip().split(";")[0]
    log_path = Path(str(log).replace("%j", job_id))
    print(f"submitted sweep job {job_id} on {args.nodes} node(s); log: {log_path}")
    if not args.wait:
        return 0
    state, unseen = "PENDING", 0
    while state in SLURM_ACTIVE_STATES:
        time.sleep(3)
        listed = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if listed.stdout.strip():
            state, unseen = listed.stdout.strip().split()[0], 0
        else:  # purged from the queue (no sacct to ask): ended in a state we cannot see
            unseen += 1
            if unseen >= 3:
                state = "UNKNOWN (left the queue)"
    print(log_path.read_text()[-4000:] if log_path.exists() else "(no log)")
    print(f"sweep job {job_id} ended: {state}")
    return 0 if state == "COMPLETED" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra fixed dotlist overrides for every trial")
    parser.add_argument("--space", default=str(DEFAULT_SPACE), help="search-space YAML")
    parser.add_argument("--config", default=None, help="base preset / YAML (default: the space file's base_config)")
    parser.add_argument("--metric", default=None, help="metric to optimise (default: the space file's)")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use here (default: all)")
    parser.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial")
    parser.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    parser.add_argument("--ablation", action="store_true", help="the paper's Table 3 rows instead of a search")
    parser.add_argument(
        "--seeds", type=int, default=5, help="paired seeds per ablation row (the same seeds for every row)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the ablation's seeds are FIRST_SEED .. FIRST_SEED+SEEDS-1"
    )
    parser.add_argument("--rows", nargs="+", default=None, help="a subset of the ablation rows (names as in Table 3)")
    parser.add_argument("--name", default=None, help="sweep name (folder and MLflow parent run)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the sweep name)")
    parser.add_argument("--storage", default="runs/sweeps", help="where sweeps keep their state")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite under --storage (absolute)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep of --name")
    parser.add_argument("--address", default=None, help="connect to a running Ray cluster")
    parser.add_argument("--ray-temp", default="/tmp/vdi-ray", help="Ray's session folder")
    slurm = parser.add_argument_group("SLURM: a Ray cluster inside one allocation")
    slurm.add_argument("--slurm", action="store_true")
    slurm.add_argument("--nodes", type=int, default=2)
    slurm.add_argument("--cpus-per-node", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=0)
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--time", default="4:00:00")
    slurm.add_argument("--wait", action="store_true", help="wait for the SLURM sweep and print its log")
    return parser


def main(argv: list[str] | None = None) -> int:
    from vdi.cli import set_process_env
    from vdi.config import ConfigError

    set_process_env(RAY_ENV)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    try:
        return submit_slurm(args, argv) if args.slurm else run_sweep(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
