"""``train(cfg, on_eval=None) -> metrics``: the one training function every caller uses.

A local run, ``torchrun``, a SLURM task and a Ray Tune trial differ only in how they call it:
rank and world size come from the environment (none set = one process). This module imports
neither Ray, submitit nor MLflow (tracking goes through ``vdi.tracking``, DeepSpeed through
``vdi.engine``, both imported lazily).

Each epoch: train (checkpoint on SIGTERM / SIGUSR1 mid-epoch), average BatchNorm statistics over
ranks, evaluate every configured split, keep the best inference checkpoint, checkpoint, call
``on_eval(epoch, metrics)`` on rank 0, stop early after ``eval.patience`` epochs without
improvement. At the end: the dynamics probe on ``data.probe_split`` with the best weights,
``eval.json``, plots, and the MLflow UI command.

    python -m vdi.train --config synthetic [key=value ...]
    torchrun --standalone --nproc_per_node 2 -m vdi.train --config tiny ...
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vdi.cli import run_cli
from vdi.config import Config, ConfigError, flatten, load_config, pin_paths, to_dict, to_yaml
from vdi.data.loader import LoaderState, ShardStream, make_loader, split_source
from vdi.distributed import any_rank, barrier, broadcast_object, gather_objects
from vdi.metric_keys import (
    GAIN_R1_AT_05,
    MIOU,
    R1_AT_05,
    R1_AT_07,
    MetricKey,
    flatten_results,
    table_label,
    unflatten_results,
)

EvalCallback = Callable[[int, dict], None]


class _StopFlag:
    """Set by SIGTERM / SIGUSR1 (what SLURM sends before preemption or the time limit)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        # TERM: preemption / scontrol requeue / scancel; USR1: `sbatch --signal=USR1@...` before the
        # time limit; USR2: submitit's time-limit / preemption signal.
        for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            try:
                self.previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread (e.g. a Ray trial): the caller handles stops
                return

    def _handle(self, number, frame) -> None:
        self.signal = number

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _streams(cfg: Config, rank: int, world: int, needs_patches: bool, feature_dim: int):
    from vdi.data.format import check_compatible, weights_identity

    root = Path(cfg.data.shard_root)
    weights = weights_identity(cfg.model.clip.pretrained)
    common = dict(
        num_pre_clips=cfg.model.num_pre_clips,
        clip_name=cfg.model.clip.name,
        clip_config_dir=cfg.model.clip.config_dir,
        rank=rank,
        world_size=world,
        seed=cfg.run.seed,
        skip_corrupt=cfg.data.skip_corrupt,
        verify_content=cfg.data.verify_shards,
    )
    train_stream = ShardStream(
        **split_source(cfg.data, cfg.data.train_split),
        batch_size=cfg.optim.batch_size // world,
        training=True,
        shuffle_buffer=cfg.data.shuffle_buffer,
        load_patches=needs_patches,
        **common,
    )
    check_compatible(
        train_stream.manifest,
        cfg.model.clip.name,
        weights,
        feature_dim,
        needs_patches,
        str(root),
        cfg.model.num_pre_clips,
    )
    eval_streams = {}
    splits = list(dict.fromkeys([*cfg.data.eval_splits, *([cfg.data.probe_split] if cfg.data.probe_split else [])]))
    for split in splits:
        source = split_source(cfg.data, split)
        stream = ShardStream(**source, batch_size=cfg.eval.batch_size, training=False, load_patches=False, **common)
        check_compatible(stream.manifest, cfg.model.clip.name, weights, feature_dim, False, str(source["split_dir"]))
        eval_streams[split] = stream
    return train_stream, eval_streams


def _evaluate(
    retriever,
    streams: dict[str, ShardStream],
    splits: list[str],
    cfg: Config,
    ctx,
    variants=("query",),
    per_query: dict | None = None,
):
    """Metrics per split (rank 0); ``per_query`` (a dict) also receives each split's per-query
    top-1 IoU in evaluation order, for paired bootstraps across runs."""
    from vdi.evaluate import check_coverage, gather_ranked, metrics_of, per_query_record, rank_batches

    results: dict[str, dict[str, float]] = {}
    for split in splits:
        stream = streams[split]
        stream.set_epoch(1)
        ranked = rank_batches(retriever, make_loader(stream, 0), cfg, variants, ctx.device)
        ranked = gather_ranked(ranked, ctx.world_size)
        if ctx.is_main:
            counts = check_coverage(ranked["query"], stream, split)
            for variant in variants:
                results[table_label(split, variant)] = metrics_of(ranked[variant], cfg, grounding=variant == "query")
            results[split] |= counts
            if per_query is not None:
                per_query[split] = per_query_record(ranked["query"])
    return results


class _Throughput:
    """Videos and queries per second over the steps since the last log line (all ranks)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.reset()

    def reset(self) -> None:
        self.start, self.videos, self.queries = time.perf_counter(), 0, 0

    def add(self, batch) -> None:
        self.videos += batch.num_videos * self.world_size
        self.queries += batch.num_sentences * self.world_size

    def rates(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        return {"speed/videos_per_s": self.videos / elapsed, "speed/queries_per_s": self.queries / elapsed}


class _EpochLog:
    """What one epoch accumulates for its end-of-epoch line: truncated queries and the injection
    diagnostics read on logged or probed steps."""

    def __init__(self) -> None:
        self.truncated = 0  # queries cut at the text tower's context length this epoch
        self.diagnostics: dict[str, list[float]] = {}

    def means(self) -> dict[str, float]:
        return {f"epoch/inject/{k}": sum(v) / len(v) for k, v in self.diagnostics.items() if v}


class Trainer:
    """One training run's parts (torchtitan's Trainer, torchtune's recipe): the constructor builds
    the context, model, streams, engine and tracker and restores state; ``train()`` runs the epochs
    through ``train_epoch``, ``evaluate``, ``save_best``, ``save_checkpoint`` and ``finish``.

    Every rank builds one; rank 0 alone writes files, tracks and prints."""

    def __init__(self, cfg: Config, on_eval: EvalCallback | None = None) -> None:
        from vdi.engine import TrainingEngine, init_distributed
        from vdi.injection import build_vdi_model

        self.started = time.perf_counter()
        self.cfg = cfg = pin_paths(cfg)  # the saved config must not depend on the folder this run started in
        self.on_eval = on_eval
        self.ctx = init_distributed(cfg)
        seed_everything(cfg.run.seed)
        self.run_dir = Path(cfg.run.root) / cfg.run.name
        self._prepare_run_folder()
        self.model = build_vdi_model(cfg)
        self.train_stream, self.eval_streams = _streams(
            cfg, self.ctx.rank, self.ctx.world_size, self.model.needs_patches, self.model.retriever.feature_dim
        )
        self._print_data()
        self.engine = TrainingEngine(self.model, cfg, self.ctx)
        if self.is_main:
            print(f"engine: {self.engine.description}")
        self.state = self._restore()
        self.tracking_uri, self.tracker = self._start_tracker()
        self.stop = _StopFlag()
        self.step_log: list[dict] = []
        self.verified = 0  # sync-checked steps since the last report

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def _prepare_run_folder(self) -> None:
        from vdi.checkpoint import check_run_folder, move_aside

        restart = check_run_folder(self.run_dir, self.cfg)  # every rank, before anything is written
        if self.is_main:
            if restart:
                print(f"run.restart: the earlier run in {self.run_dir} was moved to {move_aside(self.run_dir)}")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
        barrier(self.ctx.world_size)  # no rank looks for checkpoints before a restart moved them

    def _print_data(self) -> None:
        if not self.is_main:
            return
        cfg = self.cfg
        print(
            f"data: train {self.train_stream.num_videos} videos; "
            + ", ".join(f"{split} {stream.num_videos} videos" for split, stream in self.eval_streams.items())
        )
        if cfg.eval.select_split != cfg.data.val_split:
            print(
                f"warning: checkpoints are selected on '{cfg.eval.select_split}', not on a validation split: its "
                "numbers are optimistic; set data.val_fraction (and eval.select_split=val) to select on held-out videos"
            )

    def _restore(self):
        from vdi.checkpoint import TrainState, latest_checkpoint, load_checkpoint, set_rng_state

        state = TrainState(world_size=self.ctx.world_size)
        checkpoint = latest_checkpoint(self.run_dir) if self.cfg.run.resume else None
        if checkpoint is not None:
            state, model_state, optimizer_state, rng = load_checkpoint(checkpoint, self.ctx.rank, self.ctx.world_size)
            self.engine.module.load_state_dict(model_state)
            self.engine.load_optimizer_state(optimizer_state)
            set_rng_state(rng)
            if self.is_main:
                print(f"resuming from {checkpoint} (epoch {state.epoch}, batch {state.loader.batches_done})")
        return state

    def _start_tracker(self):
        from vdi.tracking import Tracker, dataset_input, default_tracking_uri, source_tags, write_tracking_meta

        cfg = self.cfg
        tracking_uri = cfg.track.tracking_uri or default_tracking_uri(cfg.run.root)
        run_name = cfg.track.run_name or cfg.run.name
        enabled = cfg.track.enabled and self.is_main
        streams = {cfg.data.train_split: self.train_stream, **self.eval_streams}
        datasets = [
            dataset_input(stream.manifest, stream.split_dir, split, stream.num_videos, stream.num_queries)
            for split, stream in streams.items()
        ]
        tags = source_tags() | {"vdi.preset": cfg.run.preset} | dict(cfg.track.tags) if enabled else {}
        tracker = Tracker(
            self.run_dir,
            tracking_uri,
            cfg.track.experiment,
            run_name,
            params=flatten(cfg) | {"world_size": self.ctx.world_size},
            parent_run_id=cfg.track.parent_run_id,
            enabled=enabled,
            tags=tags,
            datasets=datasets,
            review_splits=list(cfg.data.eval_splits),
        )
        if self.is_main:
            write_tracking_meta(
                self.run_dir,
                tracking_uri,
                cfg.track.experiment,
                run_name,
                cfg.track.parent_run_id,
                list(cfg.data.eval_splits),
                tracker.grouped,
            )
            tracker.log_artifact(self.run_dir / "config.yaml")
        return tracking_uri, tracker

    def state_dict(self) -> dict:
        """What a training checkpoint holds besides the RNG streams: the loop's state, the model's
        and the optimiser's."""
        return {
            "state": self.state,
            "model": self.engine.module.state_dict(),
            "optimizer": self.engine.optimizer_state(),
        }

    def save_checkpoint(self) -> None:
        from vdi.checkpoint import save_checkpoint

        parts = self.state_dict()
        save_checkpoint(
            self.run_dir, parts["state"], parts["model"], parts["optimizer"], self.ctx.rank, self.ctx.world_size
        )

    def _stopping(self) -> bool:
        return any_rank(self.stop.signal is not None, self.ctx.world_size)

    def train_step(self, batch, epoch: int, epoch_log: _EpochLog) -> dict:
        """One optimiser step; returns the loss terms' values on logged steps (else {})."""
        from vdi.checkpoint import fault_point

        cfg, state = self.cfg, self.state
        epoch_log.truncated += batch.truncated
        every = cfg.track.diagnostics_every_steps
        probe_gradients = every > 0 and (state.global_step + 1) % every == 0
        terms = self.engine.train_step(batch, epoch, probe_gradients=probe_gradients)
        state.global_step += 1
        fault_point("step")
        logged = state.global_step % cfg.track.log_every_steps == 0
        # read (a device sync) only on logged or probed steps; the epoch mean is over those
        if self.is_main and (probe_gradients or logged):
            for name, value in terms.diagnostic_values().items():
                epoch_log.diagnostics.setdefault(name, []).append(value)
        if cfg.dist.verify_sync_steps and state.global_step % cfg.dist.verify_sync_steps == 0:
            self.verified += _verify_sync(self.engine.module, batch.video_ids, self.ctx.world_size, state.global_step)
        if not (self.is_main and logged):
            return {}
        values = {f"loss/{k}": v for k, v in terms.detached().items()}
        return values | {f"inject/{k}": v for k, v in terms.diagnostic_values().items()}

    def train_epoch(self, epoch: int) -> _EpochLog | None:
        """Train one epoch (or its rest, on resume); None when a stop signal ended it early, after
        the checkpoint that resumes it was saved."""
        from tqdm import tqdm

        cfg, state = self.cfg, self.state
        head_lr, text_lr = self.engine.start_epoch(epoch)
        start_batch = state.loader.batches_done if state.loader.epoch == epoch else 0
        self.train_stream.set_epoch(epoch, start_batch)
        bar = tqdm(
            total=self.train_stream.batches_per_epoch,
            initial=start_batch,
            desc=f"epoch {epoch}/{cfg.optim.max_epochs}",
            disable=not self.is_main,
            leave=False,
        )
        throughput, epoch_log, batches_done = _Throughput(self.ctx.world_size), _EpochLog(), start_batch
        for batch in make_loader(self.train_stream, cfg.data.num_workers):
            values = self.train_step(batch, epoch, epoch_log)
            batches_done += 1
            state.loader = LoaderState(epoch, batches_done)
            throughput.add(batch)
            bar.update(1)
            if values:
                values |= {"lr/head": head_lr, "lr/text": text_lr} | throughput.rates()
                self.tracker.log_metrics(values, state.global_step)
                self.tracker.flush()
                self.step_log.append({"step": state.global_step, **values})
                bar.set_postfix(loss=f"{values['loss/total']:.3f}")
                throughput.reset()
            if self._stopping():
                break
        bar.close()
        if self._stopping():
            self.save_checkpoint()
            if self.is_main:
                print(f"stopped by signal at epoch {epoch}, batch {batches_done}: checkpoint saved, resume to finish")
            return None
        if self.verified and self.is_main:
            print(
                f"sync check: parameters identical and videos disjoint across {self.ctx.world_size} ranks "
                f"after each of {self.verified} checked steps"
            )
        self.verified = 0
        return epoch_log

    def evaluate(self, epoch: int) -> tuple[dict[str, float], float]:
        """Every eval split's metrics (rank 0; {} elsewhere) and the selection metric (all ranks)."""
        cfg = self.cfg
        self.engine.sync_buffers()
        splits = list(cfg.eval.epoch_splits or cfg.data.eval_splits)
        results = _evaluate(self.engine.module.retriever, self.eval_streams, splits, cfg, self.ctx)
        flat = flatten_results(results) if self.is_main else {}
        selected = None
        if self.is_main:
            key = MetricKey(cfg.eval.select_split, cfg.eval.select_metric).flat
            if key not in flat:
                raise ConfigError(f"eval.select_split/select_metric '{key}' is not among the metrics {sorted(flat)}")
            selected = flat[key]
        return flat, broadcast_object(selected, self.ctx.world_size)

    def save_best(self, epoch: int, flat: dict[str, float]) -> None:
        """The inference checkpoint of the best epoch so far (rank 0)."""
        from vdi.checkpoint import save_inference_checkpoint

        if not self.is_main:
            return
        manifest = self.train_stream.manifest
        save_inference_checkpoint(
            self.run_dir / "best" / "model.pt",
            self.engine.module.retriever.state_dict(),
            to_dict(self.cfg),
            flat,
            epoch,
            {
                "feature_fps": manifest.fps,
                "max_train_duration": manifest.max_duration,
                "clip_weights": manifest.encoder.weights,  # the Predictor checks its visual tower
            },
        )

    def end_epoch(self, epoch: int, epoch_log: _EpochLog) -> None:
        """Evaluate, keep the best weights, checkpoint, log, call ``on_eval`` (rank 0)."""
        state = self.state
        flat, selected = self.evaluate(epoch)
        if state.best_metric is None or selected > state.best_metric:
            state.best_metric, state.best_epoch, state.epochs_without_improvement = selected, epoch, 0
            self.save_best(epoch, flat)
        else:
            state.epochs_without_improvement += 1
        state.history.append({"epoch": epoch, **flat})
        state.epoch, state.loader = epoch + 1, LoaderState(epoch + 1, 0)
        self.save_checkpoint()
        if self.is_main:
            self._log_epoch(epoch, flat, epoch_log)
            if self.on_eval is not None:
                self.on_eval(epoch, flat)

    def _log_epoch(self, epoch: int, flat: dict[str, float], epoch_log: _EpochLog) -> None:
        counts = {"epoch": epoch, "data/truncated_queries": epoch_log.truncated}
        counts["data/skipped_shards_train"] = len(self.train_stream.skipped)
        self.tracker.log_metrics(flat | epoch_log.means() | counts, self.state.global_step)
        if epoch_log.truncated:
            print(f"epoch {epoch}: {epoch_log.truncated} queries were longer than the text context and were truncated")
        self.tracker.flush()
        shown = (R1_AT_05, R1_AT_07, MIOU, GAIN_R1_AT_05)
        summary = " ".join(f"{k}={v:.2f}" for k, v in flat.items() if MetricKey.parse(k).name in shown)
        print(f"epoch {epoch}: {summary}")

    def _patience_spent(self) -> bool:
        patience = self.cfg.eval.patience
        if not (patience and self.state.epochs_without_improvement >= patience):
            return False
        if self.is_main:
            print(f"early stop: {patience} epochs without improvement of {self.cfg.eval.select_metric}")
        return True

    def _epochs(self) -> str:
        """Run the remaining epochs; "finished" or "preempted"."""
        for epoch in range(self.state.epoch, self.cfg.optim.max_epochs + 1):
            if self._patience_spent():
                break
            epoch_log = self.train_epoch(epoch)
            if epoch_log is None:
                return "preempted"
            self.end_epoch(epoch, epoch_log)
        return "finished"

    def train(self) -> dict:
        """Run (or resume) to the end, a stop signal or an error; the tracker is closed with the
        matching status either way."""
        self.stop.install()
        try:
            status = self._epochs()
            final = self.finish(status)
        except SystemExit as stop_request:
            # a caller stopping the run on purpose (e.g. Ray Tune's scheduler exits a trial's thread
            # from on_eval) is not a failure: the run is KILLED, its checkpoints stay resumable
            if self.is_main:
                self.tracker.finish("KILLED" if stop_request.code in (0, None) else "FAILED")
            raise
        except BaseException:
            if self.is_main:
                self.tracker.finish("FAILED")
            raise
        finally:
            self.stop.restore()
        if self.is_main:
            self._report(final)
        return final

    def _report(self, final: dict) -> None:
        from vdi.evaluate import print_table
        from vdi.tracking import ui_command

        self.tracker.finish("FINISHED" if final["status"] == "finished" else "KILLED")
        if final["status"] == "finished":
            cfg = self.cfg
            title = f"best epoch {self.state.best_epoch} ({cfg.eval.select_split} {cfg.eval.select_metric})"
            print_table(final["results"], title=title)
            print(f"MLflow: {ui_command(self.tracking_uri)}")
            url = self.tracker.review_url()
            if url:
                print(f"  then open {url}  (the runs with their metrics as columns)")

    def finish(self, status: str) -> dict:
        """Probe with the best weights, write eval.json and plots (rank 0), return the metrics."""
        state = self.state
        result = {"status": status, "run_dir": str(self.run_dir), "best_epoch": state.best_epoch}
        result["history"] = state.history
        if status != "finished":
            return result | {"signal": self.stop.signal}
        probe, per_query, final = self._evaluate_best()
        # every split with the best weights: the splits left out of eval.epoch_splits come from here
        best = next((h for h in state.history if h["epoch"] == state.best_epoch), {}) | final
        results = unflatten_results(best)
        skipped = {"train": list(self.train_stream.skipped)}
        result |= {
            "best": best,
            "results": results,
            "probe": probe,
            "per_query": per_query,
            "skipped_shards": skipped | {s: list(v.skipped) for s, v in self.eval_streams.items()},
            "seconds": time.perf_counter() - self.started,
        }
        if self.is_main:
            self._write_results(result, results, probe)
        return result

    def _evaluate_best(self) -> tuple[dict, dict, dict[str, float]]:
        """The dynamics probe, the per-query records and every eval split's flat metrics, with the
        best epoch's weights."""
        from vdi.checkpoint import load_inference_checkpoint

        cfg, retriever = self.cfg, self.engine.module.retriever
        best_path = self.run_dir / "best" / "model.pt"
        probe, per_query, final = {}, {}, {}
        if best_path.exists():
            retriever.load_state_dict(load_inference_checkpoint(best_path)["retriever"])
            splits = list(cfg.data.eval_splits)
            results = _evaluate(retriever, self.eval_streams, splits, cfg, self.ctx, per_query=per_query)
            final = flatten_results(results) if self.is_main else {}
            if cfg.data.probe_split:
                variants = ("query", "static", "dynamic")
                probe = _evaluate(retriever, self.eval_streams, [cfg.data.probe_split], cfg, self.ctx, variants)
        return probe, per_query, final

    def _write_results(self, result: dict, results: dict[str, dict[str, float]], probe: dict) -> None:
        run_dir, tracker, step = self.run_dir, self.tracker, self.state.global_step
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
        tracker.log_artifact(run_dir / "eval.json")
        best_metrics = flatten_results(results, "best")
        tracker.log_metrics(best_metrics | {"best/epoch": self.state.best_epoch}, step)
        if probe:
            tracker.log_metrics(flatten_results(probe, "probe"), step)
        try:
            from vdi.plots import plot_loss_curve, plot_probe

            if self.step_log:
                tracker.log_artifact(plot_loss_curve(self.step_log, run_dir / "loss_curve.png"))
            if probe:
                tracker.log_artifact(plot_probe(probe, run_dir / "dynamics_probe.png"))
        except ImportError:  # matplotlib missing: plots are optional
            pass
        best_path = run_dir / "best" / "model.pt"
        if self.cfg.track.log_checkpoint and best_path.exists():
            tracker.log_artifact(best_path, "checkpoint")


def train(cfg: Config, on_eval: EvalCallback | None = None) -> dict:
    """Train (or resume) the run ``cfg.run.root / cfg.run.name``; returns its final metrics."""
    return Trainer(cfg, on_eval).train()


def _verify_sync(module: torch.nn.Module, video_ids: list[str], world_size: int, step: int) -> int:
    """All ranks: raise unless every rank holds the same parameters and saw different videos."""
    with torch.no_grad():
        checksum = sum(float(p.double().sum()) + float(p.double().abs().sum()) for p in module.parameters())
    gathered = gather_objects((checksum, list(video_ids)), world_size)
    sums = [g[0] for g in gathered]
    if any(abs(value - sums[0]) > 1e-6 * max(1.0, abs(sums[0])) for value in sums):
        raise RuntimeError(f"step {step}: parameters differ across ranks (checksums {sums})")
    seen = [v for g in gathered for v in g[1]]
    if len(seen) != len(set(seen)):
        raise RuntimeError(f"step {step}: ranks trained on the same video in one step")
    return 1


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.train", description="Train a VDI model.")
    parser.add_argument("--config", default="synthetic", help="preset name or YAML path")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. optim.lr=1e-4")
    args = parser.parse_args(argv)
    result = train(load_config(args.config, args.overrides))
    return 0 if result["status"] == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
