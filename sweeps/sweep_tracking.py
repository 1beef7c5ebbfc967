"""A sweep's MLflow runs: one parent run per sweep with its trials nested under it as child
runs, and the reads and attachments of the report. Each trial's own run is logged by
``vdi.tracking.Tracker`` (``track.parent_run_id`` nests it); these helpers are the sweep's
only (lambda_sweep.py, report.py) and use vdi.tracking's for the experiment and the params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vdi.errors import InputError
from vdi.tracking import experiment_id, log_params, source_tags, stringify_params

DESCRIPTION_TAG = "mlflow.note.content"  # the run's description, rendered as Markdown by the UI


def start_parent_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any] | None = None,
    description: str = "",
    review_splits: list[str] | None = None,
    grouped: bool = False,
) -> str:
    """A parent run (e.g. one per sweep) that child training runs nest under, tagged with where it
    came from and described in ``description`` (Markdown); returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {"mlflow.runName": run_name, **source_tags()}
    if description:
        tags[DESCRIPTION_TAG] = description
    found = experiment_id(client, experiment, tracking_uri, review_splits=review_splits, grouped=grouped)
    run = client.create_run(found, tags=tags)
    log_params(client, run.info.run_id, stringify_params(params or {}))
    return run.info.run_id


def set_description(tracking_uri: str, run_id: str, text: str) -> None:
    """Replace a run's description (the Markdown the UI shows on the run's page)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_tag(run_id, DESCRIPTION_TAG, text)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status)


def close_children(tracking_uri: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Mark child runs still RUNNING (e.g. trials a scheduler stopped) as ``status``; returns how many."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
    )
    closed = 0
    for child in children:
        if child.info.status == "RUNNING":
            client.set_terminated(child.info.run_id, status)
            closed += 1
    return closed


def log_artifacts(tracking_uri: str, run_id: str, paths: list[str | Path]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path))


def search_runs(tracking_uri: str, experiment: str, parent_run_id: str | None = None) -> list[dict]:
    """Runs of an experiment as plain dicts {run_id, name, status, params, metrics, tags}."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = experiment_id(client, experiment, tracking_uri, create=False)
    if found is None:
        raise InputError(f"no MLflow experiment '{experiment}' at {tracking_uri}")
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
    runs = client.search_runs([found], filter_string=query, max_results=10000)
    return [
        {
            "run_id": r.info.run_id,
            "name": r.data.tags.get("mlflow.runName", ""),
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags),
        }
        for r in runs
    ]


def epoch_histories(tracking_uri: str, run_id: str, keys: list[str]) -> dict[int, dict[str, float]]:
    """A run's per-epoch values of ``keys``: {epoch: {key: value}}, joined on the logged step of
    its ``epoch`` metric (keys the run never logged are left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    epoch_at = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    curves: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            if metric.step in epoch_at:
                curves.setdefault(epoch_at[metric.step], {})[key] = metric.value
    return curves
