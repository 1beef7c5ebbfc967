"""Turn a sweep's MLflow runs into the paper's Table 3 shape (mean +- std over seeds) and plots.

    python sweeps/report.py --experiment ablation [--tracking-uri sqlite:////abs/runs/sweeps/mlflow.db]

Reads the finished child runs of the newest sweep parent run of the experiment (or --parent),
writes ``report.md`` and PNGs (metric vs lambda^vc / lambda^sd, the ablation rows as bars, the
dynamics probe) into --out, and attaches them to the parent run so they show in the MLflow UI.
Metrics are those of each run's best epoch (``best/<split>/<metric>``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_sweep import ABLATION_ROWS

ROW_OF = {value: key for key, value in ABLATION_ROWS.items()}
METRICS = [("R1@0.5", "R1_iou0.5"), ("R1@0.7", "R1_iou0.7"), ("mIoU", "mIoU")]


def row_name(params: dict) -> str:
    key = (params.get("injection.visual_context", "?"), params.get("injection.spatial_dynamic", "?"))
    if float(params.get("loss.lambda_vc", 1)) == 0:
        key = ("none", key[1])
    if float(params.get("loss.lambda_sd", 1)) == 0:
        key = (key[0], "none")
    return ROW_OF.get(key, f"vc={key[0]}, sd={key[1]}")


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def build_report(runs: list[dict], splits: list[str]) -> tuple[str, dict]:
    finished = [r for r in runs if r["status"] == "FINISHED"]
    groups: dict[str, list[dict]] = {}
    for run in finished:
        groups.setdefault(row_name(run["params"]), []).append(run)
    order = [name for name in ABLATION_ROWS if name in groups] + sorted(set(groups) - set(ABLATION_ROWS))
    table: dict[str, dict[str, tuple[float, float]]] = {}
    lines = []
    for split in splits:
        header = " | ".join(f"{name} ({split})" for name, _ in METRICS)
        lines += [f"| Method | seeds | {header} |", "|---|---|" + "---|" * len(METRICS)]
        for name in order:
            cells = []
            for label, key in METRICS:
                values = [
                    r["metrics"][f"best/{split}/{key}"] for r in groups[name] if f"best/{split}/{key}" in r["metrics"]
                ]
                mean, std = mean_std(values)
                table.setdefault(f"{name}", {})[f"{split} {label}"] = (mean, std)
                cells.append(f"{mean:.2f} ± {std:.2f}")
            lines.append(f"| {name} | {len(groups[name])} | " + " | ".join(cells) + " |")
        lines.append("")
    probe = probe_cells(groups, order)
    if probe:
        lines += [
            "Dynamics probe (paper Fig. 3): IID test R1@0.5 of the best checkpoint when each sentence is "
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
    return "\n".join(lines), {"groups": groups, "order": order, "table": table, "probe": probe}


def probe_cells(groups: dict[str, list[dict]], order: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean ± std over seeds of the probe's IID R1@0.5 with Q, Q^s and Q^d, per row."""
    probe = {}
    for row in order:
        cells = {}
        for variant, key in (("Q", "test"), ("Q^s", "test_Qs"), ("Q^d", "test_Qd")):
            values = [
                r["metrics"][f"probe/{key}/R1_iou0.5"] for r in groups[row] if f"probe/{key}/R1_iou0.5" in r["metrics"]
            ]
            if values:
                cells[variant] = mean_std(values)
        if cells:
            probe[row] = cells
    return probe


def main(argv: list[str] | None = None) -> int:
    from vdi.plots import plot_grouped_bars, plot_metric_vs
    from vdi.tracking import default_tracking_uri, log_artifacts, search_runs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite under runs/sweeps")
    parser.add_argument("--parent", default=None, help="parent run id (default: the newest sweep parent)")
    parser.add_argument("--splits", nargs="+", default=["ood", "test"], help="splits to tabulate (OOD first)")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<experiment>/report)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri(Path("runs/sweeps").resolve())
    try:
        everything = search_runs(uri, args.experiment)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parents = [r for r in everything if "mlflow.parentRunId" not in r["tags"] and r["params"].get("kind")]
    parent = args.parent or (parents[0]["run_id"] if parents else None)
    if parent is None:
        print(f"error: experiment {args.experiment} has no sweep parent run", file=sys.stderr)
        return 2
    runs = [r for r in everything if r["tags"].get("mlflow.parentRunId") == parent]
    if not any(r["status"] == "FINISHED" for r in runs):
        print(f"error: no finished trial under parent run {parent}", file=sys.stderr)
        return 2
    markdown, data = build_report(runs, args.splits)
    out = Path(args.out or Path("runs/sweeps") / args.experiment / "report")
    out.mkdir(parents=True, exist_ok=True)
    total = len(runs)
    finished = sum(r["status"] == "FINISHED" for r in runs)
    text = (
        f"# Sweep report: {args.experiment}\n\nParent run `{parent}`; {finished} finished of {total} trial runs; "
        f"mean ± std over seeds of each run's best-epoch metrics (R@1 at IoU 0.5 / 0.7, mIoU, percent).\n\n{markdown}"
    )
    (out / "report.md").write_text(text)
    print(text)
    artifacts = [out / "report.md"]
    main_split = args.splits[0]
    artifacts.append(
        plot_grouped_bars(
            {row: {k: v for k, v in cells.items() if k.startswith(main_split)} for row, cells in data["table"].items()},
            out / "ablation_rows.png",
            f"rows on {main_split} (mean ± std over seeds)",
        )
    )
    for parameter in ("loss.lambda_vc", "loss.lambda_sd"):
        points = [
            (float(r["params"][parameter]), r["metrics"][f"best/{main_split}/R1_iou0.5"])
            for r in runs
            if r["status"] == "FINISHED" and parameter in r["params"] and f"best/{main_split}/R1_iou0.5" in r["metrics"]
        ]
        if len({p[0] for p in points}) > 1:
            name = parameter.split(".")[-1]
            artifacts.append(plot_metric_vs(points, out / f"r1_vs_{name}.png", parameter, f"{main_split} R1@0.5"))
    probe = data["probe"]
    if probe:
        artifacts.append(plot_grouped_bars(probe, out / "dynamics_probe.png", "dynamics probe (IID test R1@0.5)"))
    log_artifacts(uri, parent, artifacts)
    print(f"report and {len(artifacts) - 1} plot(s) in {out}, attached to MLflow run {parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
