"""Turn a sweep's MLflow runs into the paper's Table 3 shape (mean +- std over seeds) and plots.

    python sweeps/report.py --experiment ablation [--tracking-uri sqlite:////abs/runs/sweeps/mlflow.db]

Reads the finished child runs of the newest sweep parent run of the experiment (or of the --parent
runs, pooled),
writes ``report.md`` and PNGs (metric vs lambda^vc / lambda^sd, the ablation rows as bars, the
dynamics probe) into --out, and attaches them to each parent run so they show in the MLflow UI.
Metrics are those of each run's best epoch (``best/<split>/<metric>``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

# lambda_sweep.py lies beside this script, whose folder Python puts first on sys.path
from lambda_sweep import ABLATION_ROWS

from vdi.metric_keys import CEILING_R1_AT_05, GAIN_R1_AT_05, MIOU, R1_AT_05, R1_AT_07, MetricKey, recall_name

# every metric name and key spelling comes from vdi.metric_keys: a renamed metric cannot turn into NaN here
METRICS = [R1_AT_05, R1_AT_07, MIOU]
GROUNDING = [GAIN_R1_AT_05, CEILING_R1_AT_05]
PAIRED_THRESHOLD = 0.5
PAIRED_METRIC = recall_name(1, PAIRED_THRESHOLD)
PROBE_SPLIT = "test"  # the dynamics probe runs on data.probe_split, the IID test split of the presets


def best_key(split: str, name: str) -> str:
    """The MLflow key of a run's best-epoch metric."""
    return MetricKey(split, name, stage="best").mlflow


def _injection_key(settings: dict) -> tuple[str, str, str, str]:
    """(visual context, spatial dynamic, L^vc form, L^sd form); a form counts only where its loss is on."""
    visual = str(settings.get("injection.visual_context", "?"))
    spatial = str(settings.get("injection.spatial_dynamic", "?"))
    if float(settings.get("loss.lambda_vc", 1)) == 0:
        visual = "none"
    if float(settings.get("loss.lambda_sd", 1)) == 0:
        spatial = "none"
    vc_form = "-" if visual == "none" else str(settings.get("injection.vc_form", "paper"))
    sd_form = "-" if spatial == "none" else str(settings.get("injection.sd_form", "paper"))
    return visual, spatial, vc_form, sd_form


ROW_OF = {_injection_key(settings): row for row, settings in ABLATION_ROWS.items()}


def row_name(params: dict) -> str:
    key = _injection_key(params)
    forms = "" if key[2:] == ("paper", "paper") or "-" in key[2:] else f", forms={key[2]}/{key[3]}"
    return ROW_OF.get(key, f"vc={key[0]}, sd={key[1]}{forms}")


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_seed(run: dict) -> str:
    return str(run["params"].get("run.seed", "?"))


def per_query_of(run: dict) -> dict:
    """The run's per-query top-1 IoUs (eval.json in its run folder), or {} when not there."""
    folder = run["params"].get("run.root"), run["params"].get("run.name")
    if None in folder:
        return {}
    return _per_query_file(str(Path(folder[0]) / folder[1] / "eval.json"))


@functools.cache
def _per_query_file(path: str) -> dict:
    # cached: a reference row's files are paired with every other row on every split
    try:
        return json.loads(Path(path).read_text()).get("per_query", {})
    except (OSError, ValueError):
        return {}


def paired_difference(
    row: list[dict], reference: list[dict], split: str, threshold: float = PAIRED_THRESHOLD
) -> dict | None:
    """Mean paired difference of R1@threshold (row minus reference) over the seeds both rows ran,
    its 95% bootstrap CI (seeds and queries resampled when every pair has matching per-query
    results, seeds only otherwise), and the number of seeds the row wins."""
    import torch

    from vdi.metrics import paired_bootstrap

    key = best_key(split, recall_name(1, threshold))
    mine = {run_seed(r): r for r in row if key in r["metrics"]}
    theirs = {run_seed(r): r for r in reference if key in r["metrics"]}
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    per_seed = [mine[s]["metrics"][key] - theirs[s]["metrics"][key] for s in seeds]
    rows = []
    for seed in seeds:
        a, b = per_query_of(mine[seed]).get(split), per_query_of(theirs[seed]).get(split)
        if not a or not b or a["order"] != b["order"]:
            rows = []
            break
        hits = torch.tensor(a["top1_iou"]) >= threshold
        reference_hits = torch.tensor(b["top1_iou"]) >= threshold
        rows.append((hits.double() - reference_hits.double()) * 100)
    resampled = "seeds and queries" if rows else "seeds"
    differences = torch.stack(rows) if rows else torch.tensor(per_seed, dtype=torch.float64)[:, None]
    mean, low, high = paired_bootstrap(differences)
    return {
        "seeds": len(seeds),
        "mean": mean,
        "low": low,
        "high": high,
        "wins": sum(d > 0 for d in per_seed),
        "resampled": resampled,
    }


def build_report(runs: list[dict], splits: list[str], reference: str = "Baseline") -> tuple[str, dict]:
    finished = [r for r in runs if r["status"] == "FINISHED"]
    groups: dict[str, list[dict]] = {}
    for run in finished:
        groups.setdefault(run.get("row") or row_name(run["params"]), []).append(run)
    order = [name for name in ABLATION_ROWS if name in groups] + sorted(set(groups) - set(ABLATION_ROWS))
    splits = [split for split in splits if any(best_key(split, PAIRED_METRIC) in r["metrics"] for r in finished)]
    table: dict[str, dict[str, tuple[float, float]]] = {}
    paired: dict[str, dict[str, dict]] = {}
    lines = []
    for split in splits:
        names = METRICS + GROUNDING
        header = " | ".join(f"{name} ({split})" for name in names)
        has_reference = reference in groups
        extra = f" | Δ {PAIRED_METRIC} vs {reference} [95% CI] | seeds won" if has_reference else ""
        lines += [f"| Method | seeds | {header}{extra} |", "|---|---|" + "---|" * (len(names) + 2 * has_reference)]
        for name in order:
            cells = []
            for metric in names:
                key = best_key(split, metric)
                values = [r["metrics"][key] for r in groups[name] if key in r["metrics"]]
                mean, std = mean_std(values)
                table.setdefault(name, {})[f"{split} {metric}"] = (mean, std)
                cells.append(f"{mean:.2f} ± {std:.2f}")
            if has_reference:
                if name == reference:
                    cells += ["(reference)", "-"]
                else:
                    difference = paired_difference(groups[name], groups[reference], split)
                    paired.setdefault(name, {})[split] = difference
                    if difference is None:
                        cells += ["no paired seeds", "-"]
                    else:
                        cells += [
                            f"{difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]",
                            f"{difference['wins']}/{difference['seeds']}",
                        ]
            lines.append(f"| {name} | {len(groups[name])} | " + " | ".join(cells) + " |")
        lines.append("")
    if paired:
        how = {d["resampled"] for per_split in paired.values() for d in per_split.values() if d}
        lines += [
            f"Δ: mean over paired seeds (same seed, same data order) of the row's {PAIRED_METRIC} minus "
            f"{reference}'s; 95% CI from 2,000 bootstrap resamples of {' / '.join(sorted(how))}. "
            f"gain: {R1_AT_05} with the true sentences minus with sentences deranged within each video; "
            f"ceiling: the best {R1_AT_05} of any query-blind top-1 predictor.",
            "",
        ]
    probe = probe_cells(groups, order)
    if probe:
        lines += [
            f"Dynamics probe (paper Fig. 3): IID test {R1_AT_05} of the best checkpoint when each sentence is "
            "replaced by its static part Q^s or its dynamic part Q^d.",
            "",
            "| Method | Q | Q^s | Q^d | Q - Q^s |",
            "|---|---|---|---|---|",
        ]
        for name, cells in probe.items():
            gap = cells["Q"][0] - cells["Q^s"][0] if {"Q", "Q^s"} <= set(cells) else float("nan")
            shown = [f"{cells[v][0]:.2f} ± {cells[v][1]:.2f}" if v in cells else "-" for v in ("Q", "Q^s", "Q^d")]
            lines.append(f"| {name} | " + " | ".join(shown) + f" | {gap:+.2f} |")
        lines.append("")
    return "\n".join(lines), {"groups": groups, "order": order, "table": table, "probe": probe, "paired": paired}


def sweep_runs(
    uri: str, experiment: str, parents: list[str] | None, every_sweep: bool = False
) -> tuple[list[str], list[dict]]:
    """(parent run ids, their trial runs): the given parents' trials pooled (a sweep that added
    seeds to an earlier one with --first-seed), every ablation sweep's (every_sweep), or the newest
    sweep's."""
    from sweep_tracking import search_runs

    everything = search_runs(uri, experiment)
    tops = [r for r in everything if "mlflow.parentRunId" not in r["tags"] and r["params"].get("kind")]
    sweeps = [r["run_id"] for r in tops]
    ablations = [r["run_id"] for r in tops if r["params"]["kind"] == "ablation"]
    parents = list(dict.fromkeys(parents or (ablations if every_sweep else sweeps[:1])))  # named twice: once
    if not parents and every_sweep:
        raise LookupError(f"experiment {experiment} has no ablation sweep (lambda_sweep.py --ablation)")
    if not parents:
        raise LookupError(f"experiment {experiment} has no sweep parent run")
    unknown = [p for p in parents if p not in sweeps]
    if unknown:
        raise LookupError(f"--parent {unknown[0]} is not a sweep parent run of experiment {experiment}")
    runs = [r for r in everything if r["tags"].get("mlflow.parentRunId") in parents]
    if not any(r["status"] == "FINISHED" for r in runs):
        raise LookupError(f"no finished trial under parent run(s) {', '.join(parents)} of experiment {experiment}")
    if len(parents) > 1:
        check_poolable(runs)
    return parents, runs


# what may differ between the trials of one row pooled from several sweeps: the seed, the run's
# bookkeeping, and dist.engine (both engines give the same bits: tests/test_engine.py; runs from
# before it existed have no value for it)
PER_TRIAL_PARAMS = {
    "dist.engine",
    "run.seed",
    "run.name",
    "run.root",
    "track.parent_run_id",
    "track.run_name",
    "track.experiment",
    "track.tags.vdi.command",
}


def check_poolable(runs: list[dict]) -> None:
    """Pooled sweeps must have trained each row with one recipe and each (row, seed) once: a
    seed run twice would count twice, a changed recipe would compare two benchmarks."""
    first: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()
    for run in (r for r in runs if r["status"] == "FINISHED"):
        row = run.get("row") or row_name(run["params"])
        if (row, run_seed(run)) in seen:
            raise ValueError(f"row {row!r} seed {run_seed(run)} was run in more than one of the pooled sweeps")
        seen.add((row, run_seed(run)))
        reference = first.setdefault(row, run)
        key = first_difference(reference, run, PER_TRIAL_PARAMS)
        if key:
            raise ValueError(
                f"row {row!r}: {key} is {reference['params'].get(key)} in {reference['name']} but "
                f"{run['params'].get(key)} in {run['name']}; pool only sweeps of one recipe"
            )


def first_difference(one: dict, other: dict, ignored: set[str]) -> str | None:
    """The first param (sorted; one present in only one of the runs counts) in which two runs
    differ, leaving out the ignored ones; None if they trained the same."""
    keys = sorted((set(one["params"]) | set(other["params"])) - ignored)
    return next((key for key in keys if one["params"].get(key) != other["params"].get(key)), None)


# the params an ablation row sets (and names itself by): the only ones that may differ between the
# rows of one table
ROW_PARAMS = {key for settings in ABLATION_ROWS.values() for key in settings} | {"track.tags.ablation_row"}


def check_one_benchmark(runs: list[dict]) -> None:
    """Rows read from several experiments (--with) make one table only if every run trained the
    same recipe but for its row's injection settings, and no (row, seed) was run twice."""
    check_poolable(runs)
    first, *others = [r for r in runs if r["status"] == "FINISHED"]
    for run in others:
        key = first_difference(first, run, PER_TRIAL_PARAMS | ROW_PARAMS)
        if key:
            where = [f"{r['name']} ({r['params'].get('track.experiment', '?')})" for r in (first, run)]
            raise ValueError(
                f"{key} is {first['params'].get(key)} in {where[0]} but {run['params'].get(key)} in "
                f"{where[1]}; --with joins only sweeps of one benchmark recipe (--against compares two)"
            )


def probe_cells(groups: dict[str, list[dict]], order: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean ± std over seeds of the probe's R1@0.5 with Q, Q^s and Q^d, per row."""
    probe = {}
    for row in order:
        cells = {}
        for column, variant in (("Q", "query"), ("Q^s", "static"), ("Q^d", "dynamic")):
            key = MetricKey(PROBE_SPLIT, R1_AT_05, variant, stage="probe").mlflow
            values = [r["metrics"][key] for r in groups[row] if key in r["metrics"]]
            if values:
                cells[column] = mean_std(values)
        if cells:
            probe[row] = cells
    return probe


def curve_key(split: str) -> str:
    """The MLflow key of a split's per-epoch R1@0.5 (logged after every epoch it was evaluated)."""
    return MetricKey(split, R1_AT_05).mlflow


def curve_table(
    groups: dict[str, list[dict]], order: list[str], splits: list[str], every: int = 1
) -> tuple[str, dict[str, dict[int, tuple[float, float]]]]:
    """Learning curves of per-epoch R1@0.5, mean ± std over each row's seeds, from each run's
    ``curves`` ({epoch: {key: value}}). Only the splits a run evaluated every epoch have curves
    (eval.epoch_splits); epochs are shown every ``every`` and at the last one."""
    curves: dict[str, dict[int, tuple[float, float]]] = {}
    for row in order:
        for split in splits:
            key, seeds_at = curve_key(split), {}
            for run in groups[row]:
                for epoch, values in run.get("curves", {}).items():
                    if key in values:
                        seeds_at.setdefault(epoch, []).append(values[key])
            if seeds_at:
                curves[f"{row} {split}"] = {epoch: mean_std(seeds_at[epoch]) for epoch in sorted(seeds_at)}
    if not curves:
        return "", curves
    last = max(e for points in curves.values() for e in points)
    shown = [e for e in sorted({e for points in curves.values() for e in points}) if e % every == 0 or e == last]
    lines = [
        f"Learning curves: per-epoch {R1_AT_05} (mean ± std over seeds) of every split evaluated after each epoch.",
        "",
        "| epoch | " + " | ".join(curves) + " |",
        "|---|" + "---|" * len(curves),
    ]
    for epoch in shown:
        cells = [f"{c[epoch][0]:.2f} ± {c[epoch][1]:.2f}" if epoch in c else "-" for c in curves.values()]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""]), curves


def main(argv: list[str] | None = None) -> int:
    from sweep_tracking import epoch_histories, log_artifacts, set_description

    from vdi.cli import set_process_env
    from vdi.plots import plot_curves, plot_grouped_bars, plot_metric_vs
    from vdi.tracking import default_tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite under runs/sweeps")
    parser.add_argument(
        "--parent",
        nargs="+",
        default=None,
        help="parent run id(s); several pool their trials, e.g. a sweep that added seeds with --first-seed "
        "(default: the newest sweep parent)",
    )
    parser.add_argument(
        "--splits", nargs="+", default=["val", "test", "ood"], help="splits to tabulate (those the runs have)"
    )
    parser.add_argument("--reference", default="Baseline", help="row the paired differences are taken against")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<experiment>/report)")
    parser.add_argument(
        "--against",
        default=None,
        metavar="EXPERIMENT",
        help="also read this experiment's newest sweep and take the paired differences against its --reference "
        "row (a recipe change run as a second sweep with the same seeds)",
    )
    parser.add_argument(
        "--with",
        dest="with_experiments",
        nargs="+",
        default=[],
        metavar="EXPERIMENT",
        help="also read every sweep of these experiments as more rows of one table (Table-3 rows run as "
        "separate sweeps of one recipe, e.g. the baseline's experiment --with each method's; an experiment's "
        "sweeps pool, as with --parent); refused unless every run trained the same recipe but for its row's "
        "injection settings and no (row, seed) appears twice",
    )
    parser.add_argument(
        "--curves",
        type=int,
        default=0,
        metavar="EVERY",
        help=f"also tabulate and plot the per-epoch {R1_AT_05} curves, a table line every EVERY epochs (0: no curves)",
    )
    args = parser.parse_args(argv)
    if args.curves < 0:
        parser.error(f"--curves is {args.curves}; give an epoch interval >= 1, or 0 for no curves")
    set_process_env()
    uri = args.tracking_uri or default_tracking_uri(Path("runs/sweeps").resolve())
    try:
        # with --with every experiment's ablation sweeps pool, the main one's too (unless --parent names them)
        parents, runs = sweep_runs(uri, args.experiment, args.parent, every_sweep=bool(args.with_experiments))
        joined = []
        for experiment in args.with_experiments:
            more_parents, more = sweep_runs(uri, experiment, None, every_sweep=True)
            if set(more_parents) & set(parents):
                raise ValueError(f"--with {experiment}: its sweeps are already in the table")
            joined += more_parents
            runs = runs + more
        if args.with_experiments:
            check_one_benchmark(runs)
        own = list(runs)  # the trial count below is these sweeps', not the --against sweep's
        reference = args.reference
        if args.against:
            _, other = sweep_runs(uri, args.against, None)
            for run in other:
                run["row"] = f"{row_name(run['params'])} [{args.against}]"
            runs, reference = runs + other, f"{args.reference} [{args.against}]"
    except (ValueError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    markdown, data = build_report(runs, args.splits, reference)
    if args.curves:
        for run in (r for rows in data["groups"].values() for r in rows):
            run["curves"] = epoch_histories(uri, run["run_id"], [curve_key(split) for split in args.splits])
        curves_markdown, curves = curve_table(data["groups"], data["order"], args.splits, args.curves)
        markdown += "\n" + (curves_markdown or "No per-epoch curves: the runs logged none of these splits.\n")
    out = Path(args.out or Path("runs/sweeps") / args.experiment / "report")
    out.mkdir(parents=True, exist_ok=True)
    total = len(own)
    finished = sum(r["status"] == "FINISHED" for r in own)
    against = f" (rows marked [{args.against}] are that experiment's newest sweep)" if args.against else ""
    if args.with_experiments:
        sources = ", ".join(args.with_experiments)
        against += f"; more rows from every sweep of {sources} (parent runs {', '.join(f'`{p}`' for p in joined)})"
    text = (
        f"# Sweep report: {args.experiment}\n\nParent run(s) {', '.join(f'`{p}`' for p in parents)}; "
        f"{finished} finished of {total} trial runs{' in all' if args.with_experiments else ''}"
        f"{against}; "
        f"mean ± std over seeds of each run's best-epoch metrics ({', '.join(METRICS)}, grounding gain and "
        f"query-blind ceiling, percent), checkpoints selected on each run's eval.select_split.\n\n{markdown}"
    )
    (out / "report.md").write_text(text)
    print(text)
    artifacts = [out / "report.md"]
    main_split = args.splits[0]
    main_key = best_key(main_split, R1_AT_05)
    artifacts.append(
        plot_grouped_bars(
            {
                row: {k: v for k, v in cells.items() if k.startswith(main_split) and CEILING_R1_AT_05 not in k}
                for row, cells in data["table"].items()
            },
            out / "ablation_rows.png",
            f"rows on {main_split} (mean ± std over seeds)",
        )
    )
    # every trial is a point: a finished one at its best epoch, one ASHA stopped at its last
    # report (whether a search has two finished trials depends on the scheduler's timing)
    last_key = MetricKey(main_split, R1_AT_05).mlflow
    for parameter in ("loss.lambda_vc", "loss.lambda_sd"):
        points = [
            (float(r["params"][parameter]), r["metrics"].get(main_key, r["metrics"].get(last_key)))
            for r in runs
            if parameter in r["params"] and (main_key in r["metrics"] or last_key in r["metrics"])
        ]
        if len({p[0] for p in points}) > 1:
            name = parameter.split(".")[-1]
            label = f"{main_split} {R1_AT_05} (best epoch; last report if stopped)"
            artifacts.append(plot_metric_vs(points, out / f"r1_vs_{name}.png", parameter, label))
    probe = data["probe"]
    if probe:
        artifacts.append(plot_grouped_bars(probe, out / "dynamics_probe.png", f"dynamics probe (IID test {R1_AT_05})"))
    if args.curves and curves:
        artifacts.append(plot_curves(curves, out / "curves.png", f"{R1_AT_05} after each epoch"))
    plots = ", ".join(f"`{path.name}`" for path in artifacts[1:])
    for parent in parents:
        log_artifacts(uri, parent, artifacts)
        set_description(uri, parent, f"{text}\n\nPlots (artifacts of this run): {plots or 'none'}.\n")
    print(f"report and {len(artifacts) - 1} plot(s) in {out}, attached to MLflow run(s) {', '.join(parents)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
