"""`fit`: set a run up from a TrainConfig, train it, evaluate it, save it."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from visionzoo import __version__
from visionzoo.data import DeviceLoader, load_dataset
from visionzoo.data.folder_loader import FolderLoader, folder_spec
from visionzoo.data.folders import FolderOptions
from visionzoo.data.loader import Preprocess
from visionzoo.engine import distributed as dist
from visionzoo.engine.config import TrainConfig, option_flag, show_value
from visionzoo.engine.optim import build_optimizer, build_scheduler
from visionzoo.engine.progress import TrainProgress
from visionzoo.engine.train import (
    TrainingDiverged,
    TrainState,
    augment_config,
    balanced_subset,
    build_model_for,
    evaluate,
    git_commit,
    load_checkpoint,
    make_autocast,
    pick_device,
    save_checkpoint,
    train_one_epoch,
)
from visionzoo.engine.transfer import count_trainable, initialise, set_body_trainable
from visionzoo.errors import UserError
from visionzoo.runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    WEIGHTS,
    RunWriter,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_config,
    save_weights,
)


def run_config(cfg: TrainConfig, spec, pre: Preprocess, model, status: str) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "model_kwargs": dict(model.model_kwargs),
        "dataset": cfg.dataset,
        "class_names": list(spec.classes),
        "num_classes": spec.num_classes,
        "preprocess": pre.to_dict(),
        "recipe": cfg.to_dict(),
        "seed": cfg.seed,
        "visionzoo_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "world_size": dist.world_size(),
        "status": status,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def fit(
    cfg: TrainConfig,
    out: str | Path,
    overwrite: bool = False,
    resume: bool = False,
    console: Console | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.dataset` into the run folder `out`; returns the final metrics.

    A new run is built beside `out` and replaces it at its first checkpoint (see RunWriter):
    a failure before then leaves `out` as it was.
    """
    cfg.validate()
    device = dist.setup(pick_device(cfg.device))
    autocast = make_autocast(cfg.precision, device)  # refuses fp16 without CUDA, before any work
    with RunWriter(Path(out), overwrite, resume, enabled=dist.is_main()) as run:
        try:
            return _train(cfg, run, device, autocast, console, quiet)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(run.interrupted()) from None
        except TrainingDiverged as err:
            message = str(err).replace("the last good checkpoint is kept", run.survivor())
            run.record_stop("diverged", message)
            raise TrainingDiverged(message) from None


def _train(cfg: TrainConfig, run: RunWriter, device, autocast, console, quiet) -> dict[str, Any]:
    wall_start = time.perf_counter()
    main = run.enabled
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    dist.barrier()
    progress = TrainProgress(console, enabled=main and not quiet, every=cfg.log_every)

    # Data: in memory, batches prepared on the device (or streamed by workers for big folders).
    torch.manual_seed(cfg.seed)
    world = dist.world_size()
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    if cfg.loader == "workers":
        folder = FolderOptions.from_config(cfg)
        spec, train_root, test_root = folder_spec(cfg.dataset.partition(":")[2], folder)
        model, pre = build_model_for(cfg, spec)
    else:
        folder = FolderOptions.from_config(cfg)
        train_data = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.download, folder)
        test_data = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.download, folder)
        if cfg.train_subset:
            train_data = balanced_subset(train_data, cfg.train_subset, cfg.seed)
        spec = train_data.spec
        model, pre = build_model_for(cfg, spec)
    head_keys: list[str] = []
    if cfg.init and not run.resume:
        head_keys = initialise(model, cfg.init, list(spec.classes))
        progress.log(f"initialised from {cfg.init}; new head: {len(head_keys)} tensors")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    shard = dict(rank=dist.rank(), world_size=world)
    if cfg.loader == "workers":
        common = dict(
            num_workers=cfg.workers, seed=cfg.seed, device=device, strict=cfg.strict, **shard
        )
        train_loader = FolderLoader(
            train_root, pre, cfg.batch_size // world, True, augment_config(cfg, spec), **common
        )
        test_loader = FolderLoader(test_root, pre, cfg.eval_batch_size, False, **common)
        n_train, n_test = len(train_loader.dataset), len(test_loader.dataset)
    else:
        train_loader = DeviceLoader(
            train_data, cfg.batch_size // world, pre, device, shuffle=True,
            augment=augment_config(cfg, spec), seed=cfg.seed, **shard,
        )  # fmt: skip
        test_loader = DeviceLoader(
            test_data, cfg.eval_batch_size, pre, device, shard_pad=False, **shard
        )
        n_train, n_test = len(train_data), len(test_data)

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        )
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    state = TrainState(model, optimizer, scheduler, ema, scaler)
    if run.resume:
        _resume(state, run.out / CHECKPOINT, cfg)
        if main:  # metrics.jsonl holds exactly the epochs the checkpoint has seen
            with run.saving():
                atomic_write_text(run.out / METRICS, "".join(_json_line(r) for r in state.history))
        progress.log(
            f"resuming {run.out} at epoch {state.epoch + 1}, batch {state.batch} "
            f"(step {state.step})"
        )
    train_model = dist.wrap(model, device)
    train_model = _maybe_compile(train_model, cfg, progress, next(test_loader.epoch(0))[0][:2])
    state.model = train_model

    running = run_config(cfg, spec, pre, model, "running")  # written with the first checkpoint

    def save_state(s: TrainState) -> None:
        def save(folder: Path) -> None:
            if not (folder / WEIGHTS).exists():  # a run with a checkpoint has weights too
                save_weights(folder / WEIGHTS, ema.module if ema is not None else model)
            save_checkpoint(folder / CHECKPOINT, s, cfg)

        run.checkpoint(save, running)

    params = sum(p.numel() for p in model.parameters())
    progress.log(
        f"training {cfg.model} ({params:,} parameters) on {spec.name}: {n_train:,} train / "
        f"{n_test:,} test images, input {pre.in_channels}x{pre.image_size}x{pre.image_size}, "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, device {device}"
        + (f", {world} processes" if world > 1 else "")
    )

    writer, tensorboard_opened = None, False  # opened once the run folder is in place
    train_seconds = sum(r.get("time_s", 0.0) for r in state.history)
    last: dict[str, Any] = state.history[-1] if state.history else {}
    with progress:
        while state.epoch < cfg.epochs:
            frozen = bool(cfg.freeze_epochs) and state.epoch < cfg.freeze_epochs
            if cfg.init:
                set_body_trainable(model, not frozen, head_keys)
            progress.start_epoch(state.epoch, cfg.epochs, len(train_loader), state.batch)
            seen0 = state.sums["seen"]
            t0 = time.perf_counter()

            def on_step(s: TrainState, loss: float, seen0: float = seen0) -> None:
                progress.step(
                    s.batch,
                    s.sums["seen"] - seen0,
                    s.sums["loss"],
                    s.sums["correct"],
                    s.sums["seen"],
                )

            train_metrics = train_one_epoch(
                state, train_loader, cfg, on_step=on_step,
                save_checkpoint=save_state, autocast=autocast,
            )  # fmt: skip
            elapsed = time.perf_counter() - t0
            train_seconds += elapsed
            test = evaluate(model, test_loader, spec.num_classes, autocast, cfg.channels_last)
            record = {
                "epoch": state.epoch + 1,
                "step": state.step,
                **train_metrics,
                "test_loss": test["loss"],
                "test_acc": test["top1"],
                "test_top5": test["top5"],
                "lr": state.optimizer.param_groups[0]["lr"],
                "images_per_s": (state.sums["seen"] - seen0) * world / max(elapsed, 1e-9),
                "time_s": elapsed,
                "train_seconds": train_seconds,
                "wall_s": time.perf_counter() - wall_start,  # since fit() began, this process
                "trainable_params": count_trainable(model),
            }
            if ema is not None:
                ema_test = evaluate(
                    ema.module, test_loader, spec.num_classes, autocast, cfg.channels_last
                )
                record.update(ema_test_loss=ema_test["loss"], ema_test_acc=ema_test["top1"])
            state.history.append(record)
            state.epoch, state.batch = state.epoch + 1, 0
            state.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
            if main:
                with run.saving():
                    append_jsonl(run.path / METRICS, record)
                    save_weights(run.path / WEIGHTS, ema.module if ema is not None else model)
            save_state(state)
            if main:
                if not tensorboard_opened:
                    writer, tensorboard_opened = _tensorboard(cfg, run.path), True
                if writer is not None:
                    for key, value in record.items():
                        if key != "epoch" and isinstance(value, (int, float)):
                            writer.add_scalar(key, value, record["epoch"])
                    writer.flush()
            last = record
            progress.log(
                f"epoch {record['epoch']:>3}/{cfg.epochs}  train loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.2%}  test loss {record['test_loss']:.4f} "
                f"acc {record['test_acc']:.2%}"
                + (f"  ema acc {record['ema_test_acc']:.2%}" if "ema_test_acc" in record else "")
                + f"  {record['images_per_s']:,.0f} img/s  {elapsed:.1f}s"
            )

    if writer is not None:
        writer.close()
    final_model = ema.module if ema is not None else model
    final = evaluate(final_model, test_loader, spec.num_classes, autocast, cfg.channels_last)
    final_metrics = {
        "test_acc": final["top1"],
        "test_top5": final["top5"],
        "test_loss": final["loss"],
        "train_acc": last.get("train_acc"),
        "train_loss": last.get("train_loss"),
        "epochs": cfg.epochs,
        "steps": state.step,
        "train_seconds": train_seconds,
        "weights": "ema" if ema is not None else "final",
    }
    if main:
        with run.saving():
            save_weights(run.path / WEIGHTS, final_model)
            if ema is not None:
                save_weights(run.path / "model_raw.safetensors", model)
            config = run_config(cfg, spec, pre, model, "done")
            config["final_metrics"] = final_metrics
            config["per_class_accuracy"] = dict(zip(spec.classes, final["per_class"]))
            atomic_write_json(run.path / CONFIG, config)
    dist.barrier()
    dist.teardown()
    return final_metrics


def _tensorboard(cfg: TrainConfig, out: Path):
    """A SummaryWriter in RUN/tb when TensorBoard is installed (or asked for)."""
    if cfg.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.tensorboard:
            raise UserError("--tensorboard needs: pip install 'visionzoo[tensorboard]'") from None
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


def _maybe_compile(model, cfg: TrainConfig, progress: TrainProgress, sample):
    """torch.compile with a trial forward; any failure falls back to eager with a message."""
    if not cfg.compile:
        return model
    try:
        compiled = torch.compile(model)
        model.eval()
        with torch.no_grad():
            compiled(sample)
        model.train()
        return compiled
    except Exception as err:  # noqa: BLE001 - any failure falls back to eager
        model.train()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        progress.log(
            f"torch.compile failed ({type(err).__name__}: {first}); training in eager mode"
        )
        return model


# What --resume may change: the run's length, and where and how fast it runs, which leave
# what it computes as it was.
RESUME_MAY_CHANGE = (
    "epochs", "device", "threads", "workers", "data_dir", "download", "eval_batch_size",
    "log_every", "checkpoint_every", "tensorboard",
)  # fmt: skip


def resume_config(run_dir: Path, given: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig saved in a run folder, for --resume, with the `given` options that
    RESUME_MAY_CHANGE; any other option that differs from the run's is refused."""
    config = read_config(run_dir)
    if "recipe" not in config:
        raise UserError(f"{run_dir / CONFIG} has no recipe: it was not written by visionzoo train")
    if not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"{run_dir} holds no {CHECKPOINT}: nothing to resume")
    try:
        cfg = TrainConfig.from_dict(config["recipe"])
    except UserError as err:
        raise UserError(f"{run_dir / CONFIG}: recipe: {err}") from None
    recipe = cfg.to_dict()
    changed = {k: v for k, v in (given or {}).items() if v != recipe[k]}
    refused = [_differs(k, v, recipe[k]) for k, v in changed.items() if k not in RESUME_MAY_CHANGE]
    if refused:
        raise UserError(
            f"--resume keeps the run's recipe; these flags differ: {', '.join(refused)}"
        )
    return dataclasses.replace(cfg, **changed)


def _differs(name: str, given: Any, run_value: Any) -> str:
    """`--lr 0.01 (run: 0.1)`, `--no-augment (run: --augment)`."""
    was = option_flag(name, run_value) if isinstance(run_value, bool) else show_value(run_value)
    return f"{option_flag(name, given)} (run: {was})"


def _resume(state: TrainState, path: Path, cfg: TrainConfig) -> None:
    """Load the checkpoint into `state`; the schedule then follows `cfg.epochs`, which --resume
    may have changed: the rest of the run takes the learning rate the new schedule gives at
    this step (a finished cosine run extended from 10 to 20 epochs continues at half the peak)."""
    try:
        load_checkpoint(path, state, cfg)
    except KeyError as err:
        raise UserError(f"{path} has no {err} entry: not a complete visionzoo checkpoint") from None
    if cfg.epochs < state.epoch + (state.batch > 0):
        raise UserError(
            f"--epochs {cfg.epochs} is fewer than the run has trained ({state.epoch} epochs"
            + (f" and {state.batch} batches)" if state.batch else ")")
        )
    scheduler = state.scheduler  # a LambdaLR whose lambdas were built for cfg.epochs
    for group, base, factor in zip(
        state.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
