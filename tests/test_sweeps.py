"""Ray Tune sweeps (sweeps/lambda_sweep.py) and the report (sweeps/report.py) on tiny data:
a local ASHA sweep, the Table 3 ablation grid with one seed, and a sweep on the local SLURM."""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_toy_dataset

PROJECT = Path(__file__).resolve().parents[1]
SWEEP = PROJECT / "sweeps" / "lambda_sweep.py"
REPORT = PROJECT / "sweeps" / "report.py"


ROWS = ("Baseline", "L^vc w/o Q", "L^vc w/ Q", "L^vc w/ Q^s", "L^sd w/ LSTM", "L^sd w/ Trans", "L^vc + L^sd")


@pytest.fixture(scope="module")
def sweep_shards(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("sweep_shards"), 24, per_shard=12, seed=31)


def fixed(shard_root):
    return [
        f"data.shard_root={shard_root}",
        "data.eval_splits=[test]",
        "data.probe_split=test",
        "eval.select_split=test",
        "optim.max_epochs=3",
        "optim.batch_size=4",
        "track.log_every_steps=2",
    ]


def sweep(args, storage, env=None, timeout=1200):
    import tempfile

    ray_temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    command = [
        sys.executable,
        str(SWEEP),
        "--config",
        "tiny",
        "--metric",
        "test/R1@0.5",
        "--storage",
        str(storage),
        "--ray-temp",
        ray_temp,
        *args,
    ]
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=timeout)


def run_report(experiment, storage, *extra):
    command = [
        sys.executable,
        str(REPORT),
        "--experiment",
        experiment,
        "--splits",
        "test",
        "--tracking-uri",
        f"sqlite:///{storage / 'mlflow.db'}",
        "--out",
        str(storage / "report"),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, timeout=300)


def child_runs(storage, experiment):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.integration
def test_local_asha_sweep_then_report(sweep_shards, tmp_path):
    result = sweep(
        ["--name", "smoke", "--num-samples", "4", "--max-concurrent", "2", "--num-cpus", "2", *fixed(sweep_shards)],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "4 trials (0 errored)" in output
    best = tmp_path / "smoke" / "best.yaml"
    from vdi.config import load_config

    cfg = load_config(str(best))  # a preset vdi.launch accepts
    assert cfg.run.name == "smoke-best"
    parents, children = child_runs(tmp_path, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status != "RUNNING" for r in children)  # ASHA-stopped trials are closed, not left running
    assert all("loss.lambda_vc" in r.data.params for r in children)
    report = run_report("smoke", tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| Method | seeds |" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "r1_vs_lambda_vc.png").exists()


@pytest.mark.integration
def test_ablation_grid_one_seed_and_table(sweep_shards, tmp_path):
    result = sweep(
        [
            "--name",
            "ablation",
            "--ablation",
            "--seeds",
            "1",
            "--max-concurrent",
            "2",
            "--num-cpus",
            "2",
            *fixed(sweep_shards),
        ],
        tmp_path,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    parents, children = child_runs(tmp_path, "ablation")
    assert len(children) == 7 and all(r.info.status == "FINISHED" for r in children)
    # trials are named for their row and seed and tagged with the row (the UI groups by it)
    assert {r.data.tags["mlflow.runName"] for r in children} == {f"{row} / seed 0" for row in ROWS}
    assert {r.data.tags["ablation_row"] for r in children} == set(ROWS)
    assert all("lambda_sweep.py" in r.data.tags["mlflow.source.name"] for r in children)
    # the sweep made the report itself and put it on the parent (artifact and description)
    assert "| Baseline | 1 |" in (tmp_path / "ablation" / "report" / "report.md").read_text()
    (parent,) = parents
    assert "# Sweep report: ablation" in parent.data.tags["mlflow.note.content"]
    report = run_report("ablation", tmp_path, "--curves", "1")
    assert report.returncode == 0, report.stderr[-2000:]
    table = (tmp_path / "report" / "report.md").read_text()
    # learning curves read back from each trial's MLflow metric history, one line per epoch
    assert "Learning curves" in table and "| epoch | Baseline test |" in table
    assert all(f"| {epoch} | " in table for epoch in (1, 2, 3))
    assert (tmp_path / "report" / "curves.png").exists()
    for row in ROWS:
        assert f"| {row} | 1 |" in table
    assert "| Method | Q | Q^s | Q^d | Q - Q^s |" in table  # the dynamics probe of every row
    # paired differences to the baseline, resampling seeds and the queries of each run's eval.json
    assert "Δ R1@0.5 vs Baseline [95% CI]" in table and "resamples of seeds and queries" in table
    assert "| Baseline | 1 |" in table and "(reference)" in table
    assert (tmp_path / "report" / "ablation_rows.png").exists() and (
        tmp_path / "report" / "dynamics_probe.png"
    ).exists()


@pytest.mark.integration
@pytest.mark.slurm
def test_sweep_on_slurm_spreads_trials_over_two_nodes(cluster, sweep_shards, tmp_path):
    result = sweep(
        [
            "--slurm",
            "--nodes",
            "2",
            "--cpus-per-node",
            "1",
            "--wait",
            "--name",
            "onslurm",
            "--num-samples",
            "4",
            "--max-concurrent",
            "2",
            "--cpus-per-trial",
            "1",
            "--no-asha",
            *fixed(sweep_shards),
        ],
        tmp_path,
        env=cluster,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = json.loads((tmp_path / "onslurm" / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["errored"] == 0
    assert summary["nodes"] == ["n1", "n2"]
    _, children = child_runs(tmp_path, "onslurm")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)


def test_report_averages_seeds_per_row_and_tabulates_the_probe():
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from report import build_report

    def run(visual, spatial, test_r1, static_r1, dynamic_r1):
        metrics = {"best/test/R1_iou0.5": test_r1, "best/test/R1_iou0.7": 10.0, "best/test/mIoU": 20.0}
        metrics |= {"probe/test/R1_iou0.5": test_r1, "probe/test_Qs/R1_iou0.5": static_r1}
        metrics |= {"probe/test_Qd/R1_iou0.5": dynamic_r1}
        params = {"injection.visual_context": visual, "injection.spatial_dynamic": spatial}
        return {"status": "FINISHED", "params": params, "metrics": metrics}

    runs = [
        run("none", "none", 30.0, 28.0, 29.0),
        run("none", "none", 34.0, 30.0, 31.0),
        run("static", "transformer", 36.0, 29.0, 33.0),
        run("static", "transformer", 40.0, 31.0, 35.0),
        {"status": "FAILED", "params": {}, "metrics": {}},
    ]
    markdown, data = build_report(runs, ["test"])
    assert "| Baseline | 2 | 32.00 ± 2.83 | 10.00 ± 0.00 | 20.00 ± 0.00 |" in markdown
    assert "| L^vc + L^sd | 2 | 38.00 ± 2.83 |" in markdown
    assert "| Baseline | 32.00 ± 2.83 | 29.00 ± 1.41 | 30.00 ± 1.41 | +3.00 |" in markdown
    assert "| L^vc + L^sd | 38.00 ± 2.83 | 30.00 ± 1.41 | 34.00 ± 1.41 | +8.00 |" in markdown
    assert data["order"] == ["Baseline", "L^vc + L^sd"]


def test_an_ablation_trains_the_preset_recipe_not_the_search_schedule():
    """search_space.yaml shortens the schedule for ASHA (optim.max_epochs=8); an --ablation must
    train the preset as it is, plus only what its command line overrides."""
    import argparse

    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import DEFAULT_SPACE, load_space, sweep_config

    spec = load_space(DEFAULT_SPACE)
    assert "optim.max_epochs=8" in spec["overrides"]
    ablation = argparse.Namespace(ablation=True, rows=["Baseline"], seeds=2, first_seed=0, overrides=["run.seed=3"])
    _, fixed = sweep_config(ablation, spec)
    assert fixed == ["run.seed=3"]
    search = argparse.Namespace(ablation=False, rows=None, seeds=1, first_seed=0, overrides=["x=1"])
    _, fixed = sweep_config(search, spec)
    assert fixed == [*spec["overrides"], "x=1"]


def test_rows_are_told_apart_by_their_injection_forms():
    """The contrastive-form row is its own row; a run without form params (older sweeps) or with
    a switched-off loss is named as before."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import ABLATION_ROWS, row_overrides
    from report import row_name

    for row in ABLATION_ROWS:
        assert row_name(dict(o.split("=", 1) for o in row_overrides(row))) == row
    full = {"injection.visual_context": "static", "injection.spatial_dynamic": "transformer"}
    assert row_name(full) == "L^vc + L^sd"
    assert row_name({**full, "injection.vc_form": "contrastive", "injection.sd_form": "contrastive"}) == (
        "L^vc + L^sd (contrastive)"
    )
    assert row_name({**full, "injection.sd_form": "contrastive", "loss.lambda_sd": "0"}) == "L^vc w/ Q^s"
    assert "forms=paper/contrastive" in row_name({**full, "injection.sd_form": "contrastive"})


def test_report_pairs_seeds_and_gives_a_bootstrap_interval(tmp_path):
    """Paired differences use the same seeds of both rows; with per-query results in each run's
    eval.json the interval resamples seeds and queries, and a planted gain excludes zero."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from report import build_report

    generator = torch.Generator().manual_seed(0)
    runs = []
    for seed in range(4):
        base = (torch.rand(200, generator=generator) < 0.4).double()
        better = torch.maximum(base, (torch.rand(200, generator=generator) < 0.25).double())
        for visual, spatial, hits in (("none", "none", base), ("static", "transformer", better)):
            name = f"{visual}-{seed}"
            (tmp_path / name).mkdir()
            per_query = {"val": {"order": "same", "top1_iou": (hits * 0.9).tolist()}}
            (tmp_path / name / "eval.json").write_text(json.dumps({"per_query": per_query}))
            params = {
                "injection.visual_context": visual,
                "injection.spatial_dynamic": spatial,
                "run.seed": str(seed),
                "run.root": str(tmp_path),
                "run.name": name,
            }
            metrics = {"best/val/R1_iou0.5": float(hits.mean() * 100), "best/val/gain_R1_iou0.5": 12.0}
            runs.append({"status": "FINISHED", "params": params, "metrics": metrics})
    runs.append({**runs[-1], "params": {**runs[-1]["params"], "run.seed": "9"}})  # a seed the baseline lacks
    markdown, data = build_report(runs, ["val", "test"])
    difference = data["paired"]["L^vc + L^sd"]["val"]
    assert difference["seeds"] == 4 and difference["wins"] == 4
    assert difference["resampled"] == "seeds and queries"
    assert 0 < difference["low"] < difference["mean"] < difference["high"]
    assert "(test)" not in markdown  # no run has the test split
    assert "| Baseline | 4 |" in markdown and "12.00 ± 0.00" in markdown and "4/4" in markdown


def test_best_value_is_the_best_epoch_not_the_last_report():
    import pandas

    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import best_value

    class Result:  # the two attributes of ray.tune.Result that best_value reads
        metrics = {"ood/R1@0.5": 38.1}
        metrics_dataframe = pandas.DataFrame({"ood/R1@0.5": [28.0, 40.2, 38.1]})

    assert best_value(Result(), "ood/R1@0.5", "max") == 40.2
    assert best_value(Result(), "ood/R1@0.5", "min") == 28.0
    Result.metrics_dataframe = None
    assert best_value(Result(), "ood/R1@0.5", "max") == 38.1


def test_sbatch_driver_arguments_are_shell_quoted():
    """Hostile sweep arguments reach the driver unchanged and run nothing (the sbatch script)."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import shell_words

    hostile = ["--name", "it's; touch PWNED", "optim.lr=$(id)", 'a"b`c`', "--rows", "L^vc + L^sd"]
    echoed = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {shell_words(hostile)}"], capture_output=True, text=True, check=True
    )
    assert echoed.stdout.splitlines() == hostile


def test_sbatch_ray_cluster_uses_a_private_token(tmp_path):
    """The Ray head inside an allocation runs with token authentication: the script's own lines
    make a fresh 0600 token file and point Ray at it (the SLURM sweep test runs them on a cluster)."""
    import stat

    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import SBATCH_TEMPLATE

    assert "RAY_AUTH_MODE=disabled" not in SBATCH_TEMPLATE
    lines = SBATCH_TEMPLATE.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("token_file="))
    last = next(i for i, line in enumerate(lines) if line.startswith("unset RAY_AUTH_TOKEN"))
    fragment = "\n".join(lines[first : last + 1]).format(sweep_dir=tmp_path, python=sys.executable)
    shown = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{fragment}\necho $RAY_AUTH_MODE $RAY_AUTH_TOKEN_PATH; trap - EXIT"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "7", "RAY_AUTH_TOKEN": "inherited"},
    )
    mode, path = shown.stdout.split()
    token = Path(path)
    assert mode == "token" and token == tmp_path / ".ray-token-7"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) == 64 and int(token.read_text(), 16) > 0


def test_report_runs_as_a_script_from_any_folder(tmp_path):
    """report.py finds lambda_sweep.py beside it without editing sys.path."""
    shown = subprocess.run([sys.executable, str(REPORT), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "--experiment" in shown.stdout
    assert "sys.path.insert" not in REPORT.read_text()


def test_sweep_parent_and_child_runs_share_one_experiment(tmp_path):
    """The sweep's parent run and a trial's Tracker run get-or-create the same experiment (its
    artifacts beside the sqlite store); a trial left RUNNING is closed; the report reads them."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from mlflow.tracking import MlflowClient
    from sweep_tracking import close_children, end_run, search_runs, start_parent_run

    from vdi.errors import InputError
    from vdi.tracking import Tracker, experiment_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert experiment_id(MlflowClient(tracking_uri=uri), "sweep", uri, create=False) is None
    with pytest.raises(InputError, match="no MLflow experiment 'sweep'"):
        search_runs(uri, "sweep")
    parent = start_parent_run(uri, "sweep", "sweep", {"kind": "search", "space": ["a", "b"]})
    child = Tracker(tmp_path / "trial", uri, "sweep", "trial", {"loss.lambda_vc": 0.5}, parent_run_id=parent)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name("sweep")
    assert found.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert len(client.search_experiments(filter_string="name = 'sweep'")) == 1
    assert close_children(uri, parent) == 1
    end_run(uri, parent, "FINISHED")
    runs = {run["name"]: run for run in search_runs(uri, "sweep")}
    assert runs["sweep"]["status"] == "FINISHED" and runs["sweep"]["params"] == {
        "kind": "search",
        "space": '["a", "b"]',
    }
    assert runs["trial"]["status"] == "KILLED" and runs["trial"]["tags"]["mlflow.parentRunId"] == parent
    assert runs["trial"]["params"] == {"loss.lambda_vc": "0.5"} and child.run_id == runs["trial"]["run_id"]
    assert [run["name"] for run in search_runs(uri, "sweep", parent_run_id=parent)] == ["trial"]


def test_learning_curves_average_the_seeds_of_each_epoch():
    """curve_table: per-row, per-split mean ± std over seeds at each epoch; a seed missing an epoch
    (stopped early) leaves it out of that epoch only; a split not evaluated per epoch has no curve."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from report import curve_table

    def run(curve):
        return {"curves": {epoch: {"val/R1_iou0.5": value} for epoch, value in curve.items()}}

    groups = {"Baseline": [run({1: 20.0, 2: 30.0, 3: 40.0}), run({1: 22.0, 2: 34.0})], "L^vc w/ Q": [run({1: 25.0})]}
    markdown, curves = curve_table(groups, ["Baseline", "L^vc w/ Q"], ["val", "ood"], every=2)
    assert set(curves) == {"Baseline val", "L^vc w/ Q val"}
    assert curves["Baseline val"][2] == (32.0, statistics.stdev([30.0, 34.0]))
    assert curves["Baseline val"][3] == (40.0, 0.0)
    assert "| epoch | Baseline val | L^vc w/ Q val |" in markdown
    assert "| 2 | 32.00 ± 2.83 | - |" in markdown and "| 3 | 40.00 ± 0.00 | - |" in markdown
    assert "| 1 |" not in markdown  # every 2nd epoch, and the last
    assert curve_table(groups, ["Baseline"], ["ood"]) == ("", {})


def test_report_pairs_a_row_with_the_same_row_of_another_sweep():
    """--against: runs of a second sweep carry their own row name and serve as the reference."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from report import build_report

    def run(seed, r1, row=None):
        params = {"injection.visual_context": "none", "injection.spatial_dynamic": "none", "run.seed": str(seed)}
        found = {"status": "FINISHED", "params": params, "metrics": {"best/val/R1_iou0.5": r1}}
        return found | ({"row": row} if row else {})

    runs = [run(0, 35.0), run(1, 33.0), run(2, 36.0)]
    runs += [run(0, 34.0, "Baseline [old]"), run(1, 33.5, "Baseline [old]"), run(2, 34.0, "Baseline [old]")]
    markdown, data = build_report(runs, ["val"], "Baseline [old]")
    assert data["order"] == ["Baseline", "Baseline [old]"]
    difference = data["paired"]["Baseline"]["val"]
    assert difference["seeds"] == 3 and difference["wins"] == 2
    assert abs(difference["mean"] - (1.0 - 0.5 + 2.0) / 3) < 1e-9
    assert "| Baseline [old] | 3 |" in markdown and "(reference)" in markdown


def test_a_second_sweep_adds_seeds_and_the_report_pools_only_one_recipe(tmp_path):
    """--first-seed continues the seed list of an earlier sweep; report.py --parent A B pools both
    sweeps' trials, and refuses a (row, seed) run twice or a row trained with two recipes."""
    import argparse

    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import seed_list
    from report import build_report, check_poolable, sweep_runs
    from sweep_tracking import end_run, start_parent_run

    from vdi.tracking import Tracker

    assert seed_list(argparse.Namespace(seeds=2, first_seed=1)) == [1, 2]
    with pytest.raises(SystemExit, match="--first-seed -1"):
        seed_list(argparse.Namespace(seeds=2, first_seed=-1))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def sweep(seeds, epochs=54, **extra):
        parent = start_parent_run(uri, "long", f"long {seeds}", {"kind": "ablation"})
        for seed in seeds:
            params = {"injection.visual_context": "none", "injection.spatial_dynamic": "none", **extra}
            params |= {"run.seed": seed, "optim.max_epochs": epochs, "track.parent_run_id": parent}
            trial = Tracker(tmp_path / f"{parent}-{seed}", uri, "long", f"Baseline / seed {seed}", params, parent)
            trial.log_metrics({"best/val/R1_iou0.5": 40.0 + seed}, step=1)
            trial.finish()
        end_run(uri, parent, "FINISHED")
        return parent

    first, second = sweep([0]), sweep([1, 2])
    parents, runs = sweep_runs(uri, "long", [first, second])
    assert parents == [first, second] and sorted(r["params"]["run.seed"] for r in runs) == ["0", "1", "2"]
    markdown, _ = build_report(runs, ["val"])
    assert "| Baseline | 3 | 41.00 ± 1.00 |" in markdown
    assert sorted(r["params"]["run.seed"] for r in sweep_runs(uri, "long", None)[1]) == ["1", "2"]  # the newest
    with pytest.raises(ValueError, match="seed 1 was run in more than one"):
        sweep_runs(uri, "long", [second, sweep([1])])
    check_poolable(runs + sweep_runs(uri, "long", [sweep([4], **{"dist.engine": "auto"})])[1])  # same bits
    with pytest.raises(ValueError, match=r"optim.max_epochs is 54 in .* but 18 in"):
        check_poolable(runs + sweep_runs(uri, "long", [sweep([3], epochs=18)])[1])
    with pytest.raises(LookupError, match="--parent nope is not a sweep parent run"):
        sweep_runs(uri, "long", [first, "nope"])


def test_rows_run_as_separate_sweeps_make_one_table_only_on_one_recipe(tmp_path, capsys):
    """report.py --with: every ablation sweep of other experiments adds its rows to the table,
    paired with the main experiment's baseline; refused when any other key of the recipe differs."""
    sys.path.insert(0, str(PROJECT / "sweeps"))
    from lambda_sweep import ABLATION_ROWS
    from report import main
    from sweep_tracking import end_run, start_parent_run

    from vdi.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def sweep(experiment, row, val, epochs=36, first_seed=0, kind="ablation", **extra):
        parent = start_parent_run(uri, experiment, experiment, {"kind": kind})
        for seed, r1 in enumerate(val, start=first_seed):
            params = {**ABLATION_ROWS[row], "track.tags.ablation_row": row, "track.experiment": experiment}
            params |= {"run.seed": seed, "optim.max_epochs": epochs, "track.parent_run_id": parent, **extra}
            trial = Tracker(tmp_path / f"{parent}-{seed}", uri, experiment, f"{row} / seed {seed}", params, parent)
            trial.log_metrics({"best/val/R1_iou0.5": r1}, step=1)
            trial.finish()
        end_run(uri, parent, "FINISHED")

    sweep("base", "Baseline", [40.0, 50.0])
    sweep("base", "Baseline", [45.0], first_seed=2)  # seeds added later: every ablation sweep pools
    sweep("lstm", "L^sd w/ LSTM", [42.0, 49.0])
    sweep("lstm", "L^sd w/ LSTM", [48.0], first_seed=2)
    sweep("lstm", "L^sd w/ LSTM", [10.0], first_seed=3, kind="search")  # a search is not a row's seeds
    sweep("vdi", "L^vc + L^sd", [41.0, 52.0, 46.0])
    out = tmp_path / "report"
    options = ["--tracking-uri", uri, "--splits", "val", "--out", str(out)]
    assert main(["--experiment", "base", "--with", "lstm", "vdi", *options]) == 0
    table = (out / "report.md").read_text()
    assert "9 finished of 9 trial runs in all" in table and "more rows from every sweep of lstm, vdi" in table
    assert "| Baseline | 3 | 45.00 ± 5.00 |" in table
    assert "| L^sd w/ LSTM | 3 | 46.33 ± 3.79 |" in table and "+1.33 [" in table and "| 2/3 |" in table
    assert table.index("| L^sd w/ LSTM |") < table.index("| L^vc + L^sd |")  # the paper's row order
    sweep("short", "L^vc w/ Q", [40.0, 40.0, 40.0], epochs=18)
    capsys.readouterr()
    assert main(["--experiment", "base", "--with", "lstm", "short", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert re.search(
        r"optim.max_epochs is 36 in Baseline / seed \d \(base\) but 18 in L\^vc w/ Q / seed \d \(short\)",
        capsys.readouterr().err,
    )
    sweep("more", "L^vc w/ Q", [40.0], **{"data.extra_key": "1"})  # a key only some runs have
    assert main(["--experiment", "base", "--with", "more", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert "data.extra_key is None in Baseline" in capsys.readouterr().err
    assert main(["--experiment", "base", "--with", "base", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert "--with base: its sweeps are already in the table" in capsys.readouterr().err
    sweep("vdi_again", "L^vc + L^sd", [47.0])
    assert main(["--experiment", "base", "--with", "vdi", "vdi_again", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert "row 'L^vc + L^sd' seed 0 was run in more than one" in capsys.readouterr().err
