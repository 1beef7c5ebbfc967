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
from vdi.data import LoaderState, ShardStream, make_loader, split_source

# train() calls the collectives by these names
from vdi.distributed import any_rank as _any_rank
from vdi.distributed import broadcast_object as _broadcast

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
    from vdi.shards import check_compatible, weights_identity

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
    check_compatible(train_stream.manifest, cfg.model.clip.name, weights, feature_dim, needs_patches, str(root))
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
                name = split if variant == "query" else f"{split} [{'Q^s' if variant == 'static' else 'Q^d'}]"
                results[name] = metrics_of(ranked[variant], cfg, grounding=variant == "query")
            results[split] |= counts
            if per_query is not None:
                per_query[split] = per_query_record(ranked["query"])
    return results


def train(cfg: Config, on_eval: EvalCallback | None = None) -> dict:
    """Train (or resume) the run ``cfg.run.root / cfg.run.name``; returns its final metrics."""
    from tqdm import tqdm

    from vdi.checkpoint import (
        TrainState,
        check_run_folder,
        fault_point,
        latest_checkpoint,
        load_checkpoint,
        move_aside,
        save_checkpoint,
        save_inference_checkpoint,
        set_rng_state,
    )
    from vdi.engine import TrainingEngine, init_distributed
    from vdi.evaluate import flat_metrics, print_table
    from vdi.injection import build_vdi_model
    from vdi.tracking import Tracker, default_tracking_uri, ui_command, write_tracking_meta

    started = time.perf_counter()
    cfg = pin_paths(cfg)  # the saved config must not depend on the folder this run started in
    ctx = init_distributed(cfg)
    seed_everything(cfg.run.seed)
    run_dir = Path(cfg.run.root) / cfg.run.name
    restart = check_run_folder(run_dir, cfg)  # every rank, before anything is written
    if ctx.is_main:
        if restart:
            print(f"run.restart: the earlier run in {run_dir} was moved to {move_aside(run_dir)}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    if ctx.world_size > 1:
        torch.distributed.barrier()  # no rank looks for checkpoints before a restart moved them
    model = build_vdi_model(cfg)
    train_stream, eval_streams = _streams(
        cfg, ctx.rank, ctx.world_size, model.needs_patches, model.retriever.feature_dim
    )
    if ctx.is_main:
        print(
            f"data: train {train_stream.num_videos} videos; "
            + ", ".join(f"{split} {stream.num_videos} videos" for split, stream in eval_streams.items())
        )
        if cfg.eval.select_split != cfg.data.val_split:
            print(
                f"warning: checkpoints are selected on '{cfg.eval.select_split}', not on a validation split: its "
                "numbers are optimistic; set data.val_fraction (and eval.select_split=val) to select on held-out videos"
            )
    engine = TrainingEngine(model, cfg, ctx)
    state = TrainState(world_size=ctx.world_size)
    checkpoint = latest_checkpoint(run_dir) if cfg.run.resume else None
    if checkpoint is not None:
        state, model_state, optimizer_state, rng = load_checkpoint(checkpoint, ctx.rank, ctx.world_size)
        engine.module.load_state_dict(model_state)
        engine.load_optimizer_state(optimizer_state)
        set_rng_state(rng)
        if ctx.is_main:
            print(f"resuming from {checkpoint} (epoch {state.epoch}, batch {state.loader.batches_done})")
    tracking_uri = cfg.track.tracking_uri or default_tracking_uri(cfg.run.root)
    tracker = Tracker(
        run_dir,
        tracking_uri,
        cfg.track.experiment,
        cfg.run.name,
        params=flatten(cfg) | {"world_size": ctx.world_size},
        parent_run_id=cfg.track.parent_run_id,
        enabled=cfg.track.enabled and ctx.is_main,
    )
    if ctx.is_main:
        write_tracking_meta(run_dir, tracking_uri, cfg.track.experiment, cfg.run.name, cfg.track.parent_run_id)
        tracker.log_artifact(run_dir / "config.yaml")
    stop = _StopFlag()
    stop.install()
    step_log: list[dict] = []
    status = "finished"
    verified = 0
    try:
        for epoch in range(state.epoch, cfg.optim.max_epochs + 1):
            if cfg.eval.patience and state.epochs_without_improvement >= cfg.eval.patience:
                if ctx.is_main:
                    print(f"early stop: {cfg.eval.patience} epochs without improvement of {cfg.eval.select_metric}")
                break
            head_lr, text_lr = engine.start_epoch(epoch)
            start_batch = state.loader.batches_done if state.loader.epoch == epoch else 0
            train_stream.set_epoch(epoch, start_batch)
            bar = tqdm(
                total=train_stream.batches_per_epoch,
                initial=start_batch,
                desc=f"epoch {epoch}/{cfg.optim.max_epochs}",
                disable=not ctx.is_main,
                leave=False,
            )
            window_start, window_videos, window_queries = time.perf_counter(), 0, 0
            batches_done = start_batch
            truncated = 0  # queries cut at the text tower's context length this epoch
            epoch_diagnostics: dict[str, list[float]] = {}  # injection diagnostics of the read steps
            for batch in make_loader(train_stream, cfg.data.num_workers):
                truncated += batch.truncated
                every = cfg.track.diagnostics_every_steps
                probe_gradients = every > 0 and (state.global_step + 1) % every == 0
                terms = engine.train_step(batch, epoch, probe_gradients=probe_gradients)
                batches_done += 1
                state.global_step += 1
                fault_point("step")
                # read (a device sync) only on logged or probed steps; the epoch mean is over those
                if ctx.is_main and (probe_gradients or state.global_step % cfg.track.log_every_steps == 0):
                    for name, value in terms.diagnostic_values().items():
                        epoch_diagnostics.setdefault(name, []).append(value)
                state.loader = LoaderState(epoch, batches_done)
                window_videos += batch.num_videos * ctx.world_size
                window_queries += batch.num_sentences * ctx.world_size
                bar.update(1)
                if cfg.dist.verify_sync_steps and state.global_step % cfg.dist.verify_sync_steps == 0:
                    verified += _verify_sync(engine.module, batch.video_ids, ctx.world_size, state.global_step)
                if ctx.is_main and state.global_step % cfg.track.log_every_steps == 0:
                    elapsed = time.perf_counter() - window_start
                    values = {f"loss/{k}": v for k, v in terms.detached().items()}
                    values |= {f"inject/{k}": v for k, v in terms.diagnostic_values().items()}
                    values |= {"lr/head": head_lr, "lr/text": text_lr}
                    values |= {
                        "speed/videos_per_s": window_videos / elapsed,
                        "speed/queries_per_s": window_queries / elapsed,
                    }
                    tracker.log_metrics(values, state.global_step)
                    tracker.flush()
                    step_log.append({"step": state.global_step, **values})
                    bar.set_postfix(loss=f"{values['loss/total']:.3f}")
                    window_start, window_videos, window_queries = time.perf_counter(), 0, 0
                if _any_rank(stop.signal is not None, ctx.world_size):
                    break
            bar.close()
            if _any_rank(stop.signal is not None, ctx.world_size):
                save_checkpoint(
                    run_dir, state, engine.module.state_dict(), engine.optimizer_state(), ctx.rank, ctx.world_size
                )
                status = "preempted"
                if ctx.is_main:
                    print(
                        f"stopped by signal at epoch {epoch}, batch {batches_done}: checkpoint saved, resume to finish"
                    )
                break
            if verified and ctx.is_main:
                print(
                    f"sync check: parameters identical and videos disjoint across {ctx.world_size} ranks "
                    f"after each of {verified} checked steps"
                )
                verified = 0
            # end of epoch: evaluate, select, checkpoint
            engine.sync_buffers()
            results = _evaluate(engine.module.retriever, eval_streams, list(cfg.data.eval_splits), cfg, ctx)
            flat = flat_metrics(results) if ctx.is_main else {}
            selected = None
            if ctx.is_main:
                key = f"{cfg.eval.select_split}/{cfg.eval.select_metric}"
                if key not in flat:
                    raise ConfigError(
                        f"eval.select_split/select_metric '{key}' is not among the metrics {sorted(flat)}"
                    )
                selected = flat[key]
            selected = _broadcast(selected, ctx.world_size)
            improved = state.best_metric is None or selected > state.best_metric
            if improved:
                state.best_metric, state.best_epoch, state.epochs_without_improvement = selected, epoch, 0
                if ctx.is_main:
                    manifest = train_stream.manifest
                    save_inference_checkpoint(
                        run_dir / "best" / "model.pt",
                        engine.module.retriever.state_dict(),
                        to_dict(cfg),
                        flat,
                        epoch,
                        {
                            "feature_fps": manifest.fps,
                            "max_train_duration": manifest.max_duration,
                            "clip_weights": manifest.encoder.weights,  # the Predictor checks its visual tower
                        },
                    )
            else:
                state.epochs_without_improvement += 1
            state.history.append({"epoch": epoch, **flat})
            state.epoch, state.loader = epoch + 1, LoaderState(epoch + 1, 0)
            save_checkpoint(
                run_dir, state, engine.module.state_dict(), engine.optimizer_state(), ctx.rank, ctx.world_size
            )
            if ctx.is_main:
                epoch_means = {f"epoch/inject/{k}": sum(v) / len(v) for k, v in epoch_diagnostics.items() if v}
                counts = {"epoch": epoch, "data/truncated_queries": truncated}
                counts["data/skipped_shards_train"] = len(train_stream.skipped)
                tracker.log_metrics(flat | epoch_means | counts, state.global_step)
                if truncated:
                    print(f"epoch {epoch}: {truncated} queries were longer than the text context and were truncated")
                tracker.flush()
                shown = ("/R1@0.5", "/R1@0.7", "/mIoU", "/gain R1@0.5")
                summary = " ".join(f"{k}={v:.2f}" for k, v in flat.items() if k.endswith(shown))
                print(f"epoch {epoch}: {summary}")
                if on_eval is not None:
                    on_eval(epoch, flat)
        final = _finish(
            cfg,
            ctx,
            engine,
            eval_streams,
            state,
            run_dir,
            tracker,
            step_log,
            status,
            started,
            stop.signal,
            train_skipped=train_stream.skipped,
        )
    except SystemExit as stop_request:
        # a caller stopping the run on purpose (e.g. Ray Tune's scheduler exits a trial's thread
        # from on_eval) is not a failure: the run is KILLED, its checkpoints stay resumable
        if ctx.is_main:
            tracker.finish("KILLED" if stop_request.code in (0, None) else "FAILED")
        raise
    except BaseException:
        if ctx.is_main:
            tracker.finish("FAILED")
        raise
    finally:
        stop.restore()
    if ctx.is_main:
        tracker.finish("FINISHED" if status == "finished" else "KILLED")
        if status == "finished":
            print_table(
                final["results"],
                title=f"best epoch {state.best_epoch} ({cfg.eval.select_split} {cfg.eval.select_metric})",
            )
            print(f"MLflow: {ui_command(tracking_uri)}")
    return final


def _verify_sync(module: torch.nn.Module, video_ids: list[str], world_size: int, step: int) -> int:
    """All ranks: raise unless every rank holds the same parameters and saw different videos."""
    with torch.no_grad():
        checksum = sum(float(p.double().sum()) + float(p.double().abs().sum()) for p in module.parameters())
    gathered: list = [None] * world_size
    if world_size > 1:
        torch.distributed.all_gather_object(gathered, (checksum, list(video_ids)))
    else:
        gathered = [(checksum, list(video_ids))]
    sums = [g[0] for g in gathered]
    if any(abs(value - sums[0]) > 1e-6 * max(1.0, abs(sums[0])) for value in sums):
        raise RuntimeError(f"step {step}: parameters differ across ranks (checksums {sums})")
    seen = [v for g in gathered for v in g[1]]
    if len(seen) != len(set(seen)):
        raise RuntimeError(f"step {step}: ranks trained on the same video in one step")
    return 1


def _finish(
    cfg,
    ctx,
    engine,
    eval_streams,
    state,
    run_dir,
    tracker,
    step_log,
    status,
    started,
    stop_signal=None,
    train_skipped=(),
) -> dict:
    """Probe with the best weights, write eval.json and plots (rank 0), return the metrics."""
    from vdi.checkpoint import load_inference_checkpoint

    result = {"status": status, "run_dir": str(run_dir), "best_epoch": state.best_epoch, "history": state.history}
    if status != "finished":
        return result | {"signal": stop_signal}
    best_path = run_dir / "best" / "model.pt"
    probe, per_query = {}, {}
    if best_path.exists():
        engine.module.retriever.load_state_dict(load_inference_checkpoint(best_path)["retriever"])
        _evaluate(engine.module.retriever, eval_streams, list(cfg.data.eval_splits), cfg, ctx, per_query=per_query)
        if cfg.data.probe_split:
            probe = _evaluate(
                engine.module.retriever, eval_streams, [cfg.data.probe_split], cfg, ctx, ("query", "static", "dynamic")
            )
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    results: dict[str, dict[str, float]] = {}
    for key, value in best.items():
        if "/" in key:
            split, metric = key.split("/", 1)
            results.setdefault(split, {})[metric] = value
    result |= {
        "best": best,
        "results": results,
        "probe": probe,
        "per_query": per_query,
        "skipped_shards": {"train": list(train_skipped)} | {s: list(v.skipped) for s, v in eval_streams.items()},
        "seconds": time.perf_counter() - started,
    }
    if ctx.is_main:
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
        tracker.log_artifact(run_dir / "eval.json")
        tracker.log_metrics(
            {f"best/{k}": v for k, v in best.items() if "/" in k} | {"best/epoch": state.best_epoch}, state.global_step
        )
        if probe:
            tracker.log_metrics({f"probe/{k}": v for k, v in _flat_probe(probe).items()}, state.global_step)
        try:
            from vdi.plots import plot_loss_curve, plot_probe

            if step_log:
                tracker.log_artifact(plot_loss_curve(step_log, run_dir / "loss_curve.png"))
            if probe:
                tracker.log_artifact(plot_probe(probe, run_dir / "dynamics_probe.png"))
        except ImportError:  # matplotlib missing: plots are optional
            pass
        if cfg.track.log_checkpoint and best_path.exists():
            tracker.log_artifact(best_path, "checkpoint")
    return result


def _flat_probe(probe: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{split}/{metric}": value for split, metrics in probe.items() for metric, value in metrics.items()}


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
