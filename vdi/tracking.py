"""Experiment tracking: the only vdi module that imports mlflow (a sweep's parent run and its
children are sweeps/sweep_tracking.py's, on the helpers here).

One MLflow run per training job (a resumed job continues its run), on rank 0 only. Params are
the flattened resolved config; metrics are logged every N steps (each loss term, total, lr,
samples/s) and per epoch (every eval metric of every split); artifacts are the resolved config,
the eval JSON and the plots.

The default tracking URI is an absolute sqlite file under the run root, so
``mlflow ui --backend-store-uri sqlite:////abs/runs/mlflow.db`` shows everything without a
server; experiments created in such a store keep their artifacts beside it
(``<run root>/mlartifacts``), wherever the run was started.

**Review in the UI.** Every experiment is tagged as model training (``mlflow.experimentKind``)
and carries a saved view (:data:`REVIEW_VIEW`: the best-epoch R1@0.5, mIoU and grounding gain of
each evaluated split as columns; once an ablation has run in the experiment, rows grouped by the
``ablation_row`` tag a sweep puts on its trials); :func:`review_url` opens it. Each run records
where it came from (git commit and dirty flag of the code, the command line, the preset) as tags
and its shards as MLflow dataset inputs (dataset/split, a digest of the shards' sha256, counts,
encoder).

**An unreachable tracking server never stops training and never loses metrics.** Every record
is first appended to ``<run dir>/mlflow_buffer.jsonl``; records are sent from there, and the
ones MLflow refuses stay in the file (with a single warning) and are retried at the next flush
and at the end of the run. Whatever is still unsent when the run ends can be sent later with
``python -m vdi.tracking replay <run dir>``. Failing fast against a dead server (no retries, a
10 s timeout) and no telemetry are MLflow settings of the process, set where it starts
(:data:`vdi.cli.PROCESS_ENV`); a program that calls ``vdi.train.train`` itself can call
:func:`vdi.cli.set_process_env` first.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from vdi.cli import run_cli
from vdi.errors import InputError
from vdi.metric_keys import GAIN_R1_AT_05, MIOU, R1_AT_05, MetricKey, mlflow_spelling

RETRY_SECONDS = 60.0

BUFFER_NAME = "mlflow_buffer.jsonl"
RUN_ID_NAME = "mlflow_run_id"


def default_tracking_uri(run_root: str | Path) -> str:
    return f"sqlite:///{Path(run_root).resolve() / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """How to see the runs: a server's own address, or ``mlflow ui`` over a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser (the tracking server's UI)"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


# The experiment kind that makes MLflow 3's UI show an experiment's training runs (not the GenAI
# overview of traces); the value is MLflow's own (ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
REVIEW_VIEW = "vdi-review"  # the saved view's key: tag mlflow.sharedViewState.<key> on the experiment
ABLATION_ROW_TAG = "ablation_row"
REVIEW_METRICS = (R1_AT_05, MIOU, GAIN_R1_AT_05)


def review_columns(splits: list[str]) -> list[str]:
    """The runs table's columns in the saved view: the source, the data, and for every split its
    best-epoch R1@0.5, mIoU and grounding gain (MLflow's own column spellings)."""
    metrics = [MetricKey(split, name, stage="best").mlflow for split in splits for name in REVIEW_METRICS]
    return ["attributes.`Source`", "attributes.`Dataset`", *[f"metrics.`{key}`" for key in metrics]]


def review_view_state(columns: list[str], grouped: bool = False) -> str:
    """The saved view (JSON, as MLflow's UI shares it): the columns, and for an experiment with
    ablation trials the rows grouped by ablation row with the mean of each group (without such
    trials, MLflow would fold every run into one collapsed "Additional runs" group)."""
    state: dict = {"selectedColumns": columns}
    if grouped:
        state["groupBy"] = {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": ABLATION_ROW_TAG}],
        }
    return json.dumps(state)


def review_url(tracking_uri: str, experiment_id: str, ui_address: str = "http://127.0.0.1:5000") -> str:
    """The address of an experiment's training runs in the saved view: ``mlflow ui``'s default
    address for a local store, the server itself otherwise. ``workflowType`` is needed because the
    UI's own default (kept in the browser) is the GenAI view."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui_address
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={REVIEW_VIEW}&workflowType=machine_learning"


def source_tags(argv: list[str] | None = None) -> dict[str, str]:
    """Where a run came from: the program and its command line, and the git commit of vdi's code
    with a dirty flag (left out when the code is not a git checkout, e.g. an installed wheel)."""
    command = list(argv if argv is not None else getattr(sys, "orig_argv", sys.argv))
    # the UI's Source column shows what follows the last "/" of the source name: the program
    # goes there ("python -m vdi.train", "lambda_sweep.py"), the whole command in vdi.command
    if len(command) >= 3 and command[1] == "-m":
        program = f"python -m {command[2]}"
    elif len(command) >= 2 and Path(command[0]).name.startswith("python"):
        program = command[1]
    else:
        program = command[0] if command else "unknown"
    tags = {"mlflow.source.name": program, "vdi.command": shlex.join(command), "mlflow.source.type": "LOCAL"}
    code = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return tags
    tags["mlflow.source.git.commit"] = commit
    tags["vdi.git.dirty"] = str(bool(status.strip())).lower()
    return tags


def dataset_input(manifest: Any, split_dir: str | Path, split: str, num_videos: int, num_queries: int | None) -> dict:
    """An MLflow dataset input (as a buffer record) for the shards one split is read from: named
    ``<dataset>/<split>``, its digest made from the split and every shard's sha256, its profile the
    manifest's identity (counts, encoder, fps, patch tokens, shard sha256s)."""
    shards = [shard.sha256 for shard in manifest.shards]
    digest = hashlib.sha256(json.dumps([split, shards]).encode()).hexdigest()
    profile = {
        "videos": num_videos,
        "queries": num_queries,
        "shards": len(shards),
        "encoder": manifest.encoder.name,
        "weights": manifest.encoder.weights,
        "fps": manifest.fps,
        "patch_tokens": manifest.num_patches,
        "sha256": digest,
        "shard_sha256": shards,
    }
    return {
        "name": f"{manifest.dataset}/{split}",
        "digest": digest[:16],
        "source": json.dumps({"uri": str(Path(split_dir).resolve())}),
        "profile": json.dumps(profile),
        "context": split,
    }


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: next to a sqlite store (``<root>/mlartifacts``),
    not in ``./mlruns`` of whatever folder the run started in; a server or file store decides
    for itself (None)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts").resolve().as_uri()


class Tracker:
    """Buffered, failure-tolerant MLflow logging for one training job (rank 0)."""

    def __init__(
        self,
        run_dir: Path,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        enabled: bool = True,
        tags: dict[str, str] | None = None,
        datasets: list[dict] | None = None,
        review_splits: list[str] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.buffer = self.run_dir / BUFFER_NAME
        self.tracking_uri = tracking_uri
        self.experiment, self.run_name = experiment, run_name
        self.parent_run_id = parent_run_id
        self.enabled = enabled
        self.review_splits = list(review_splits or [])
        self.grouped = ABLATION_ROW_TAG in (tags or {})  # an ablation trial: the view groups by row
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._warned = False
        self._retry_after = 0.0
        if not enabled:
            return
        id_file = self.run_dir / RUN_ID_NAME
        self.run_id = id_file.read_text().strip() if id_file.exists() else None
        self._record({"kind": "start", "params": stringify_params(params or {})})
        if tags:
            self._record({"kind": "tags", "values": dict(tags)})
        if datasets:
            self._record({"kind": "inputs", "datasets": datasets})
        self.flush()

    # -- recording ---------------------------------------------------------------------------
    def _record(self, item: dict) -> None:
        with open(self.buffer, "a") as handle:
            handle.write(json.dumps(item) + "\n")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            clean = {mlflow_spelling(k): float(v) for k, v in metrics.items() if v is not None and v == v}
            self._record({"kind": "metrics", "step": int(step), "time": int(time.time() * 1000), "values": clean})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.enabled:
            self._record({"kind": "artifact", "path": str(Path(path).resolve()), "folder": folder})

    # -- sending -----------------------------------------------------------------------------
    def _client(self):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        if self.run_id is None:
            tags = {"mlflow.runName": self.run_name}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            found = experiment_id(
                client, self.experiment, self.tracking_uri, review_splits=self.review_splits, grouped=self.grouped
            )
            run = client.create_run(found, tags=tags)
            self.run_id, self.experiment_id = run.info.run_id, found
            (self.run_dir / RUN_ID_NAME).write_text(self.run_id)
        return client

    def flush(self, force: bool = False) -> bool:
        """Send what the buffer holds beyond what was sent; True when everything went out.
        After a failure, further attempts wait RETRY_SECONDS (unless forced)."""
        if not self.enabled or not self.buffer.exists():
            return True
        if not force and time.monotonic() < self._retry_after:
            return False
        lines = self.buffer.read_text().splitlines()
        sent_marker = self.run_dir / (BUFFER_NAME + ".sent")
        sent = int(sent_marker.read_text()) if sent_marker.exists() else 0
        if sent >= len(lines):
            return True
        try:
            client = self._client()
            from mlflow.entities import Metric, RunTag

            for index in range(sent, len(lines)):
                item = json.loads(lines[index])
                kind = item["kind"]
                if kind == "start":
                    existing = client.get_run(self.run_id).data.params
                    log_params(client, self.run_id, {k: v for k, v in item["params"].items() if k not in existing})
                elif kind == "metrics":
                    metrics = [Metric(k, v, item["time"], item["step"]) for k, v in item["values"].items()]
                    client.log_batch(self.run_id, metrics=metrics)
                elif kind == "artifact":
                    if Path(item["path"]).exists():
                        client.log_artifact(self.run_id, item["path"], item.get("folder"))
                elif kind == "tags":
                    client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in item["values"].items()])
                elif kind == "inputs":
                    client.log_inputs(self.run_id, datasets=[_mlflow_dataset(d) for d in item["datasets"]])
                elif kind == "end":
                    client.set_terminated(self.run_id, item["status"])
                sent = index + 1
                sent_marker.write_text(str(sent))
            return True
        except Exception as error:  # any MLflow / network failure: keep the records, warn once
            self._retry_after = time.monotonic() + RETRY_SECONDS
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"MLflow logging to {self.tracking_uri} failed ({type(error).__name__}: {str(error)[:150]}); "
                    f"training goes on, records stay in {self.buffer} and are retried "
                    f"(or later: python -m vdi.tracking replay {self.run_dir})",
                    stacklevel=2,
                )
            return False

    def review_url(self) -> str | None:
        """Where the UI shows this run's experiment in the review view (None when MLflow cannot say)."""
        if not self.enabled or self.run_id is None:
            return None
        try:
            if self.experiment_id is None:
                self.experiment_id = self._client().get_run(self.run_id).info.experiment_id
        except Exception:  # an unreachable server: the ui command alone is printed
            return None
        return review_url(self.tracking_uri, self.experiment_id)

    def finish(self, status: str = "FINISHED") -> bool:
        if not self.enabled:
            return True
        self._record({"kind": "end", "status": status})
        return self.flush(force=True)


def _mlflow_dataset(record: dict):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(record["name"], record["digest"], "local", record["source"], profile=record["profile"])
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", record["context"])])


def experiment_id(
    client,
    name: str,
    tracking_uri: str,
    create: bool = True,
    review_splits: list[str] | None = None,
    grouped: bool = False,
) -> str | None:
    """The id of MLflow experiment ``name`` through ``client``; a missing one is created (its
    artifacts beside a sqlite store: :func:`artifact_location`), or None with ``create=False``.
    Experiments are tagged for review in the UI (the training view, and a saved view whose columns
    cover ``review_splits`` as well as the splits it had, grouped by ablation row once ``grouped``
    asks for it, i.e. once an ablation has run in it)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        if not create:
            return None
        found = client.get_experiment(client.create_experiment(name, artifact_location=artifact_location(tracking_uri)))
    if create:
        _tag_for_review(client, found, review_splits or [], grouped)
    return found.experiment_id


def _tag_for_review(client, experiment, splits: list[str], grouped: bool) -> None:
    tags = experiment.tags
    if tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    view_tag = f"mlflow.sharedViewState.{REVIEW_VIEW}"
    try:
        state = json.loads(tags[view_tag]) if view_tag in tags else {}
        had, was_grouped = list(state.get("selectedColumns", [])), "groupBy" in state
    except (ValueError, TypeError, AttributeError):
        had, was_grouped = [], False  # a view edited into something else: write ours
    columns = list(dict.fromkeys([*review_columns([]), *had, *review_columns(splits)]))
    if columns != had or (grouped and not was_grouped):
        view = review_view_state(columns, grouped or was_grouped)
        client.set_experiment_tag(experiment.experiment_id, view_tag, view)


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    """Log string params in the batches MLflow takes (100 a call, values cut at 6000 characters)."""
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for first in range(0, len(items), 100):
        client.log_batch(run_id, params=items[first : first + 100])


def stringify_params(params: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: lists and dicts as JSON, anything else as ``str``."""
    return {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in params.items()}


def replay(run_dir: str | Path, tracking_uri: str | None = None) -> bool:
    """Send the unsent records of a run directory (after an outage)."""
    run_dir = Path(run_dir)
    if not (run_dir / "tracking.json").is_file():
        raise InputError(
            f"{run_dir} is not a run folder (no tracking.json): pass runs/<name> of a run that trained with tracking"
        )
    try:
        meta = json.loads((run_dir / "tracking.json").read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{run_dir / 'tracking.json'} is damaged ({error})") from None
    tracker = Tracker.__new__(Tracker)
    tracker.run_dir, tracker.buffer = run_dir, run_dir / BUFFER_NAME
    tracker.tracking_uri = tracking_uri or meta["tracking_uri"]
    tracker.experiment, tracker.run_name = meta["experiment"], meta["run_name"]
    tracker.parent_run_id, tracker.enabled, tracker._warned = meta.get("parent_run_id"), True, False
    tracker._retry_after = 0.0
    tracker.review_splits, tracker.experiment_id = list(meta.get("review_splits", [])), None
    tracker.grouped = bool(meta.get("grouped", False))
    id_file = run_dir / RUN_ID_NAME
    tracker.run_id = id_file.read_text().strip() if id_file.exists() else None
    return tracker.flush()


def write_tracking_meta(
    run_dir: Path,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    parent: str | None,
    review_splits: list[str] | None = None,
    grouped: bool = False,
) -> None:
    meta = {"tracking_uri": tracking_uri, "experiment": experiment, "run_name": run_name, "parent_run_id": parent}
    meta |= {"review_splits": list(review_splits or []), "grouped": grouped}
    (run_dir / "tracking.json").write_text(json.dumps(meta))


@run_cli
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vdi.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    replay_parser = commands.add_parser("replay", help="send a run directory's buffered records to MLflow")
    replay_parser.add_argument("run_dir")
    replay_parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    ok = replay(args.run_dir, args.tracking_uri)
    print("all records sent" if ok else "some records could not be sent; they stay in the buffer")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
