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

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from vdi.cli import run_cli
from vdi.errors import InputError
from vdi.metric_keys import mlflow_spelling

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
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.buffer = self.run_dir / BUFFER_NAME
        self.tracking_uri = tracking_uri
        self.experiment, self.run_name = experiment, run_name
        self.parent_run_id = parent_run_id
        self.enabled = enabled
        self.run_id: str | None = None
        self._warned = False
        self._retry_after = 0.0
        if not enabled:
            return
        id_file = self.run_dir / RUN_ID_NAME
        self.run_id = id_file.read_text().strip() if id_file.exists() else None
        self._record({"kind": "start", "params": stringify_params(params or {})})
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
            run = client.create_run(experiment_id(client, self.experiment, self.tracking_uri), tags=tags)
            self.run_id = run.info.run_id
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

    def finish(self, status: str = "FINISHED") -> bool:
        if not self.enabled:
            return True
        self._record({"kind": "end", "status": status})
        return self.flush(force=True)


def experiment_id(client, name: str, tracking_uri: str, create: bool = True) -> str | None:
    """The id of MLflow experiment ``name`` through ``client``; a missing one is created (its
    artifacts beside a sqlite store: :func:`artifact_location`), or None with ``create=False``."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        return None
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))


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
    id_file = run_dir / RUN_ID_NAME
    tracker.run_id = id_file.read_text().strip() if id_file.exists() else None
    return tracker.flush()


def write_tracking_meta(run_dir: Path, tracking_uri: str, experiment: str, run_name: str, parent: str | None) -> None:
    (run_dir / "tracking.json").write_text(
        json.dumps(
            {"tracking_uri": tracking_uri, "experiment": experiment, "run_name": run_name, "parent_run_id": parent}
        )
    )


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
