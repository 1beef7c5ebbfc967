"""PNG plots for runs and reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vdi.metric_keys import R1_AT_05


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_loss_curve(step_log: list[dict], path: str | Path) -> Path:
    """Every logged loss term against the global step."""
    path = Path(path)
    steps = [entry["step"] for entry in step_log]
    terms = [k for k in step_log[0] if k.startswith("loss/")]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for term in terms:
        values = [entry.get(term) for entry in step_log]
        axis = axes[0] if term in ("loss/total", "loss/iou") else axes[1]
        axis.plot(steps, values, label=term.removeprefix("loss/"))
    for axis, title in zip(axes, ("total and IoU BCE", "contrastive and injection terms (unweighted)")):
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_probe(probe: dict[str, dict[str, float]], path: str | Path, metric: str = R1_AT_05) -> Path:
    """The dynamics probe (paper Fig. 3): the same moments retrieved with Q, Q^s and Q^d."""
    path = Path(path)
    names = list(probe)
    values = [probe[name].get(metric, 0.0) for name in names]
    figure, axis = plt.subplots(figsize=(6, 4))
    bars = axis.bar(range(len(names)), values, color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
    axis.set_xticks(range(len(names)), names, fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title("dynamics probe: retrieval by Q, Q^s, Q^d")
    for bar, value in zip(bars, values):
        axis.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    return _save(figure, path)


def plot_grouped_bars(table: dict[str, dict[str, tuple[float, float]]], path: str | Path, title: str) -> Path:
    """Rows -> {metric: (mean, std)} as grouped bars with error bars (ablation reports)."""
    path = Path(path)
    rows = list(table)
    metrics = list(next(iter(table.values())))
    width = 0.8 / max(1, len(metrics))
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4))
    for index, metric in enumerate(metrics):
        means = [table[row][metric][0] for row in rows]
        stds = [table[row][metric][1] for row in rows]
        axis.bar([r + index * width for r in range(len(rows))], means, width, yerr=stds, label=metric, capsize=3)
    axis.set_xticks([r + width * (len(metrics) - 1) / 2 for r in range(len(rows))], rows, rotation=20, fontsize=8)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_metric_vs(
    points: list[tuple[float, float]], path: str | Path, xlabel: str, ylabel: str, log_x: bool = True
) -> Path:
    path = Path(path)
    figure, axis = plt.subplots(figsize=(5, 4))
    xs, ys = zip(*sorted(points)) if points else ((), ())
    axis.plot(xs, ys, "o")
    if log_x:
        axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_curves(curves: dict[str, dict[int, tuple[float, float]]], path: str | Path, ylabel: str) -> Path:
    """Learning curves: label -> {epoch: (mean, std over seeds)}, a line with a std band each."""
    path = Path(path)
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        epochs = sorted(points)
        means = [points[e][0] for e in epochs]
        stds = [points[e][1] for e in epochs]
        axis.plot(epochs, means, label=label)
        axis.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.2)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _save(figure, path)


__all__ = ["plot_curves", "plot_grouped_bars", "plot_loss_curve", "plot_metric_vs", "plot_probe"]
